//! The plugin guide's example, `examples/echo-adapter`, as a third channel: built
//! with the workspace, loaded by the real host, answering through its send URL.

use e2e::{fake_graph, library, HostBuilder};
use serde_json::json;

use crate::{calls_once_processed, processed};

const SECRET: &str = "test-echo-secret";

#[tokio::test(flavor = "multi_thread")]
async fn an_echo_webhook_is_answered_at_the_send_url() {
    let graph = fake_graph().await;
    let endpoint = fake_graph().await;
    let host = HostBuilder::new(&graph.url)
        .plugin_file(library("echo_adapter"))
        .channels(&format!(
            "\n[[channels]]\nname = \"echo\"\nplugin = \"echo\"\n[channels.settings]\n\
             secret = \"{SECRET}\"\nsend_url = \"{}/send\"\n",
            endpoint.url
        ))
        .start();
    let client = reqwest::Client::new();
    let body = json!({ "id": "e-1", "from": "alice", "to": "echo-bot", "text": "hello, echo", "time_ms": 1_700_000_000_000u64 })
        .to_string();
    let post = |secret: &str| {
        client
            .post(host.webhook("echo"))
            .header("x-echo-secret", secret.to_owned())
            .body(body.clone())
            .send()
    };
    assert_eq!(post("wrong").await.unwrap().status(), 403);
    processed(&host).await;
    assert!(endpoint.calls().is_empty());
    assert_eq!(post(SECRET).await.unwrap().status(), 200);
    // Sent again, byte for byte: a duplicate, answered 200 and not replied to.
    assert_eq!(post(SECRET).await.unwrap().status(), 200);

    let calls = calls_once_processed(&host, &endpoint, 1).await;
    assert_eq!(calls.len(), 1, "{calls:#?}\n{}", host.log());
    assert_eq!(calls[0].method, "POST");
    assert_eq!(calls[0].path, "/send");
    assert_eq!(
        calls[0].body,
        json!({ "from": "echo-bot", "to": "alice", "text": "hello, echo" })
    );
    assert!(!calls[0].headers["idempotency-key"].is_empty());
    assert!(graph.calls().is_empty(), "the Messenger channel was used");

    let log = host.log();
    assert!(
        log.contains("webhook refused (403): X-Echo-Secret does not match"),
        "{log}"
    );
    assert!(!log.contains(SECRET), "the secret is in the log:\n{log}");
}
