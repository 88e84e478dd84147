//! The GET handshake of the webhook setup.

use e2e::{fake_graph, HostBuilder, VERIFY_TOKEN};

async fn get(url: &str) -> (u16, String, String) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_right_token_gets_the_challenge_back_as_text() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url).start();
    let url = format!(
        "{}?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={VERIFY_TOKEN}",
        host.webhook("messenger")
    );
    let (status, content_type, body) = get(&url).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert_eq!(body, "1158201444");

    // Not numeric, percent-encoded: echoed as decoded, unchanged otherwise.
    let url = format!(
        "{}?hub.verify_token={VERIFY_TOKEN}&hub.challenge=abc%2Fdef&hub.mode=subscribe",
        host.webhook("messenger")
    );
    assert_eq!(get(&url).await.2, "abc/def");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_token_or_mode_is_refused_with_403() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url).start();
    let base = host.webhook("messenger");
    for query in [
        "hub.mode=subscribe&hub.challenge=abc&hub.verify_token=wrong".to_owned(),
        format!("hub.mode=unsubscribe&hub.challenge=abc&hub.verify_token={VERIFY_TOKEN}"),
        format!("hub.challenge=abc&hub.verify_token={VERIFY_TOKEN}"),
        "hub.mode=subscribe&hub.challenge=abc".to_owned(),
        String::new(),
    ] {
        let (status, _, body) = get(&format!("{base}?{query}")).await;
        assert_eq!(status, 403, "{query}");
        assert!(!body.contains("abc"), "{query}: challenge leaked: {body}");
    }
    assert!(graph.calls().is_empty());
}
