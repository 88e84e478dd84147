//! Signed webhooks answered through the Send API of the fake Graph server.

use e2e::{appsecret_proof, fake_graph, fixture, page_token, GraphCall, HostBuilder};
use serde_json::json;

use crate::{calls_once_processed, control_in, post_signed};

fn assert_sent_as(call: &GraphCall, page: &str) {
    assert_eq!(call.method, "POST");
    assert_eq!(call.path, "/v25.0/me/messages");
    let token = page_token(page);
    assert_eq!(call.query.get("access_token"), Some(&token), "{call:?}");
    assert_eq!(
        call.query.get("appsecret_proof"),
        Some(&appsecret_proof(&token)),
        "{call:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_text_message_gets_exactly_one_reply() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url).start();
    post_signed(&host, &fixture("message_text")).await;

    // The control, later in the same conversation, is answered after any second
    // reply to the first message would have been.
    let calls = control_in(&host, &graph, "1", "2").await;
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_sent_as(&calls[0], "1");
    assert_eq!(
        calls[0].body,
        json!({
            "recipient": { "id": "2" },
            "messaging_type": "RESPONSE",
            "message": { "text": "Hello, bot!" },
        })
    );
    let log = host.log();
    assert!(
        !log.contains(&page_token("1")),
        "the access token appeared in the log"
    );
    assert!(
        !log.contains(e2e::APP_SECRET),
        "the app secret appeared in the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quick_replies_and_postbacks_are_answered_with_their_payloads() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url).start();
    post_signed(&host, &fixture("message_quick_reply")).await;
    let calls = calls_once_processed(&host, &graph, 1).await;
    assert_eq!(calls.len(), 1);
    assert_sent_as(&calls[0], "682498302938465");
    assert_eq!(calls[0].recipient(), "1254459154682919");
    assert_eq!(calls[0].text(), Some("DEVELOPER_DEFINED_PAYLOAD"));

    post_signed(&host, &fixture("postback")).await;
    let calls = calls_once_processed(&host, &graph, 2).await;
    assert_eq!(calls.len(), 2);
    assert_sent_as(&calls[1], "0");
    assert_eq!(calls[1].text(), Some("USER_DEFINED_PAYLOAD"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_is_sent_back_by_url() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url).start();
    post_signed(&host, &fixture("message_image")).await;
    let calls = calls_once_processed(&host, &graph, 1).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].body["message"]["attachment"],
        json!({
            "type": "image",
            "payload": {
                "url": "https://scontent.xx.fbcdn.net/v/example/attachment.jpg",
                "is_reusable": true,
            },
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_entry_and_every_item_is_answered_with_its_pages_token() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url).start();

    post_signed(&host, &fixture("batched_multi_entry")).await;
    let mut calls = calls_once_processed(&host, &graph, 2).await;
    assert_eq!(calls.len(), 2, "{calls:#?}");
    calls.sort_by(|a, b| a.text().cmp(&b.text()));
    assert_eq!(calls[0].text(), Some("test 1"));
    assert_sent_as(&calls[0], "1895382890692545");
    assert_eq!(calls[1].text(), Some("test 2"));
    assert_sent_as(&calls[1], "189538289069256");

    post_signed(&host, &fixture("multi_entry_multi_item")).await;
    let calls = calls_once_processed(&host, &graph, 6).await;
    assert_eq!(calls.len(), 6, "{calls:#?}");
    let texts = |page: &str| -> Vec<String> {
        calls[2..]
            .iter()
            .filter(|c| c.query.get("access_token") == Some(&page_token(page)))
            .map(|c| c.text().unwrap_or_default().to_owned())
            .collect()
    };
    // One conversation's replies keep their order.
    assert_eq!(texts("682498302938465"), ["first", "second"]);
    assert_eq!(texts("1895382890692545"), ["third", "FOURTH"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn echoes_reads_deliveries_and_standby_get_no_reply() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url).start();
    for name in [
        "echo",
        "read",
        "delivery",
        "reaction",
        "message_edit",
        "standby",
    ] {
        post_signed(&host, &fixture(name)).await;
    }
    assert!(
        calls_once_processed(&host, &graph, 0).await.is_empty(),
        "{:#?}",
        graph.calls()
    );
    // The control: a message after them is answered, and only it.
    assert_eq!(control_in(&host, &graph, "1", "2").await.len(), 0);
    assert_eq!(graph.calls().len(), 1);
}
