//! A second channel: the LINE plugin, loaded by the same host binary.

use e2e::{fake_graph, fixture, fixture_of, library, HostBuilder};
use serde_json::json;

use crate::{calls_once_processed, post_signed};

const LINE_SECRET: &str = "test-line-channel-secret";

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_line_message_is_answered_with_its_reply_token() {
    let graph = fake_graph().await;
    let line_api = fake_graph().await;
    let host = HostBuilder::new(&graph.url)
        .plugin_file(library("line_adapter"))
        .channels(&format!(
            "\n[[channels]]\nname = \"line\"\nplugin = \"line\"\n[channels.settings]\n\
             channel_secret = \"{LINE_SECRET}\"\nchannel_access_token = \"line-token\"\napi_base = \"{}\"\n",
            line_api.url
        ))
        .start();

    let body = fixture_of("line", "message_text");
    let signature = line_adapter::webhook::sign(LINE_SECRET, &body);
    let client = reqwest::Client::new();
    let send = |signature: &str| {
        client
            .post(host.webhook("line"))
            .header("x-line-signature", signature.to_owned())
            .body(body.clone())
            .send()
    };
    assert_eq!(send("d3Jvbmc=").await.unwrap().status(), 403);
    assert_eq!(send(&signature).await.unwrap().status(), 200);

    let calls = calls_once_processed(&host, &line_api, 1).await;
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0].path, "/v2/bot/message/reply");
    assert_eq!(calls[0].headers["authorization"], "Bearer line-token");
    assert_eq!(
        calls[0].body,
        json!({ "replyToken": "nHuyWiB7yP5Zw52FIkcQobQuGDXCTA6T", "messages": [{ "type": "text", "text": "Hello, LINE!" }] })
    );

    // Follow and unfollow get no reply; the console's empty verification body is a 200.
    for name in ["follow_unfollow", "verification"] {
        let body = fixture_of("line", name);
        let status = client
            .post(host.webhook("line"))
            .header(
                "x-line-signature",
                line_adapter::webhook::sign(LINE_SECRET, &body),
            )
            .body(body)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{name}");
    }
    assert_eq!(calls_once_processed(&host, &line_api, 1).await.len(), 1);

    // The Messenger channel of the same host is unaffected.
    post_signed(&host, &fixture("message_text")).await;
    assert_eq!(calls_once_processed(&host, &graph, 1).await.len(), 1);
}
