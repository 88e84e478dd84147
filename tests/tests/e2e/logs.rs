//! The host's log as an operator reads it: why a webhook was refused, and plain text
//! when it goes to a file.

use e2e::{fake_graph, fixture, sign, HostBuilder, APP_SECRET, VERIFY_TOKEN};

use crate::post;

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_verify_token_and_a_wrong_signature_log_different_reasons_at_info() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url).start();
    let wrong_token = "not-the-verify-token-5551";
    let url = format!(
        "{}?hub.mode=subscribe&hub.challenge=123&hub.verify_token={wrong_token}",
        host.webhook("messenger")
    );
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 403);
    let body = fixture("message_text");
    let (status, _) = post(&host, &body, Some(&sign("not-the-app-secret", &body))).await;
    assert_eq!(status, 403);

    let log = host.log();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" INFO ") && l.contains("webhook refused (403): "))
        .collect();
    assert_eq!(refusals.len(), 2, "{log}");
    let reason = |line: &str| {
        line.split("webhook refused (403): ")
            .nth(1)
            .map(str::to_owned)
    };
    assert_ne!(reason(refusals[0]), reason(refusals[1]), "{log}");
    assert!(refusals[0].contains("verify token"), "{log}");
    assert!(refusals[1].contains("signature"), "{log}");
    for secret in [wrong_token, VERIFY_TOKEN, APP_SECRET] {
        assert!(!log.contains(secret), "{secret} is in the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_written_to_a_file_has_no_colour_codes() {
    let graph = fake_graph().await;
    // The host's stderr is a file here, and NO_COLOR is not set.
    let host = HostBuilder::new(&graph.url).start();
    let log = host.log();
    assert!(log.contains("channel enabled"), "{log}");
    assert!(!log.contains('\u{1b}'), "escape codes in the log:\n{log:?}");
}
