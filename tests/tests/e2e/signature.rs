//! `X-Hub-Signature-256`: a body that is not signed with the app secret never reaches
//! the bot.

use e2e::{fake_graph, fixture, sign, HostBuilder, APP_SECRET};

use crate::{calls_once_processed, control_in, post, post_signed};

#[tokio::test(flavor = "multi_thread")]
async fn wrong_missing_or_malformed_signatures_are_refused_and_nothing_is_sent() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url).start();
    let body = fixture("message_text");
    let good = sign(APP_SECRET, &body);

    let other_body = sign(APP_SECRET, b"{}");
    let other_secret = sign("not-the-secret", &body);
    let truncated = &good[..good.len() - 2];
    let sha1_prefix = good.replacen("sha256=", "sha1=", 1);
    let cases: Vec<(Option<&str>, u16)> = vec![
        (None, 401),
        (Some(""), 401),
        (Some("sha256!!!"), 401),
        (Some(truncated), 401),
        (Some(&sha1_prefix), 401),
        (Some("sha256=zz"), 401),
        (Some(&other_body), 403),
        (Some(&other_secret), 403),
    ];
    for (signature, expected) in cases {
        let (status, text) = post(&host, &body, signature).await;
        assert_eq!(status, expected, "{signature:?}: {text}");
    }
    // The control, in the same conversation: had a refused body been queued, its
    // reply would have come before the control's.
    assert!(
        control_in(&host, &graph, "1", "2").await.is_empty(),
        "a refused webhook was answered"
    );

    // The same body correctly signed is answered once.
    post_signed(&host, &body).await;
    let calls = control_in(&host, &graph, "1", "2").await;
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.text() == Some("Hello, bot!"))
            .count(),
        1,
        "{calls:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_signature_covers_the_raw_escaped_bytes() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url).start();
    // Meta escapes non-ASCII as \uXXXX and signs those bytes.
    let body = String::from_utf8(fixture("message_text"))
        .unwrap()
        .replace("Hello, bot!", "\\u00e4\\u00f6\\u00e5")
        .into_bytes();
    post_signed(&host, &body).await;
    let calls = calls_once_processed(&host, &graph, 1).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].text(), Some("äöå"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_body_that_is_not_a_webhook_is_a_400() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url).start();
    for body in [
        &b"{not json"[..],
        b"[]",
        b"{\"object\":\"page\"}",
        b"{\"object\":\"user\",\"entry\":[]}",
    ] {
        let (status, text) = post(&host, body, Some(&sign(APP_SECRET, body))).await;
        assert_eq!(status, 400, "{}: {text}", String::from_utf8_lossy(body));
        assert!(!text.is_empty());
    }
    assert!(
        control_in(&host, &graph, "1", "2").await.is_empty(),
        "a refused body was answered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_just_under_the_default_limit_verifies_and_is_answered() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url).start();
    let text = "\\u00e4\\u00f6\\u00e5 ".repeat(54_000);
    let body = String::from_utf8(fixture("message_text"))
        .unwrap()
        .replace("Hello, bot!", &text)
        .into_bytes();
    assert!(
        body.len() > 1_000_000 && body.len() < 1024 * 1024,
        "{}",
        body.len()
    );
    post_signed(&host, &body).await;
    // The echo may be split into several Send API messages; the first one shows the
    // body was verified and decoded.
    let calls = calls_once_processed(&host, &graph, 1).await;
    assert!(!calls.is_empty());
    assert!(calls[0].text().unwrap().starts_with("äöå äöå"));
}
