//! Work a stop or a store failure interrupted, taken up again by the real host:
//! events left when the shutdown grace ran out, an event whose first reply was sent
//! before a crash, and a webhook the queue could not write down.

use std::time::Duration;

use e2e::{fake_graph, FakeGraph, HostBuilder, Scripted};

use crate::{
    delivery::{delivered, message_from, until},
    post, post_signed,
};

/// How many typing indicators the Graph API answered.
fn typing_indicators(graph: &FakeGraph) -> usize {
    graph
        .delivered()
        .iter()
        .filter(|c| c.body["sender_action"] == "typing_on")
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn events_left_when_the_shutdown_grace_runs_out_are_taken_up_by_the_next_start() {
    let graph = fake_graph().await;
    let builder = HostBuilder::new(&graph.url).server("shutdown_grace_ms = 500");
    let mut host = builder.start();
    // The first reply is held at the Graph API past the grace; the second waits
    // behind it in the same conversation.
    graph.hold();
    post_signed(&host, &message_from("7800", "held-at-stop")).await;
    until("the first reply in flight", || async {
        graph.in_flight() == 1
    })
    .await;
    post_signed(&host, &message_from("7800", "queued-at-stop")).await;
    host.signal("TERM");
    let status = tokio::task::block_in_place(|| host.wait_exit(Duration::from_secs(60)));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", host.log());
    assert!(
        host.log().contains("events left queued for the next start"),
        "{}",
        host.log()
    );
    assert_eq!(delivered(&graph, "queued-at-stop"), 0);
    graph.release();

    let restarted = builder.start();
    until("the queued reply after the restart", || async {
        delivered(&graph, "queued-at-stop") >= 1
    })
    .await;
    post_signed(&restarted, &message_from("7800", "control-after-stop")).await;
    until("the control reply", || async {
        delivered(&graph, "control-after-stop") >= 1
    })
    .await;
    // The held reply had reached the Graph API when the stop cut it off: its
    // outcome is unknown, and it is not sent again.
    assert_eq!(delivered(&graph, "held-at-stop"), 1);
    assert_eq!(delivered(&graph, "queued-at-stop"), 1);
    let logs = format!("{}\n{}", host.log(), restarted.log());
    assert!(logs.contains("unknown"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_sent_before_a_crash_is_not_sent_again_when_its_event_resumes() {
    let graph = fake_graph().await;
    // Each text gets two replies: a typing indicator, then the text.
    let builder = HostBuilder::new(&graph.url).channels("\n[bot]\ntyping_indicator = true\n");
    let mut host = builder.start();
    graph.hold();
    post_signed(&host, &message_from("7810", "second-reply")).await;
    until("the typing indicator in flight", || async {
        graph.in_flight() == 1
    })
    .await;
    // The indicator's answer (success) was chosen when it arrived; the text that
    // follows meets an outage and waits for its retry.
    graph.set_outage(Some(Scripted::graph_error(
        500,
        1200,
        0,
        "Temporary send message failure",
    )));
    graph.release();
    until("the text to be rescheduled", || async {
        host.sends("messenger", "transient").await >= 1.0
    })
    .await;
    assert_eq!(host.sends("messenger", "ok").await, 1.0);
    tokio::task::block_in_place(|| host.kill());
    graph.set_outage(None);

    let restarted = builder.start();
    until("the text after the restart", || async {
        delivered(&graph, "second-reply") >= 1
    })
    .await;
    post_signed(&restarted, &message_from("7810", "control-after-crash")).await;
    until("the control reply", || async {
        delivered(&graph, "control-after-crash") >= 1
    })
    .await;
    assert_eq!(delivered(&graph, "second-reply"), 1);
    // One indicator for the first event, one for the control: the first event's was
    // not sent again.
    assert_eq!(typing_indicators(&graph), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_the_queue_cannot_write_gets_503_and_its_redelivery_is_answered_once() {
    let graph = fake_graph().await;
    let builder = HostBuilder::new(&graph.url);
    let host = builder.start();
    // Another connection takes SQLite's write lock: the host's transaction waits its
    // busy timeout, then fails.
    let blocker = rusqlite::Connection::open(builder.dir().join("queue.sqlite3")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let body = message_from("7820", "written-later");
    let signature = e2e::sign(e2e::APP_SECRET, &body);
    let (status, text) = post(&host, &body, Some(&signature)).await;
    assert_eq!(status, 503, "{text}");
    assert_eq!(text, "cannot store events, retry later");
    let store_errors = host
        .metric("dmflow_webhooks_total{channel=\"messenger\",outcome=\"store_error\"}")
        .await;
    assert_eq!(store_errors, 1.0);
    assert!(host.log().contains("webhook not stored"), "{}", host.log());

    blocker.execute_batch("ROLLBACK").unwrap();
    // Meta sends the same body again.
    let (status, text) = post(&host, &body, Some(&signature)).await;
    assert_eq!(status, 200, "{text}");
    until("the reply", || async {
        delivered(&graph, "written-later") >= 1
    })
    .await;
    post_signed(&host, &message_from("7820", "control-after-failure")).await;
    until("the control reply", || async {
        delivered(&graph, "control-after-failure") >= 1
    })
    .await;
    assert_eq!(delivered(&graph, "written-later"), 1);
}
