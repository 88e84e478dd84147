//! Delivery under faults, with the real host and plugin: a Graph outage, a host killed
//! with sends in flight, a host stopped while a reply waits for its retry, a second
//! host on the same queue, a permanent error. Each "no second reply" check ends with
//! a positive control: a later message whose reply proves the host moved on.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use e2e::{fake_graph, fixture, FakeGraph, Host, HostBuilder, Scripted};
use serde_json::Value;

use crate::post_signed;

/// A one-message body from `user` with a unique `mid` and `text`.
pub(crate) fn message_from(user: &str, text: &str) -> Vec<u8> {
    let mut body: Value = serde_json::from_slice(&fixture("message_text")).unwrap();
    let item = &mut body["entry"][0]["messaging"][0];
    item["sender"]["id"] = user.into();
    item["message"]["mid"] = format!("mid-{text}").into();
    item["message"]["text"] = text.into();
    serde_json::to_vec(&body).unwrap()
}

/// Waits until `condition` holds, checking every 20 ms; panics with `what` after a
/// minute and a half (a bound for a stuck test, not a duration under test).
pub(crate) async fn until<F: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !condition().await {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many replies with `text` the Graph API delivered.
pub(crate) fn delivered(graph: &FakeGraph, text: &str) -> usize {
    graph
        .delivered()
        .iter()
        .filter(|c| c.text() == Some(text))
        .count()
}

/// Posts a control message and waits for its reply: everything queued before it in
/// its conversation, and every retry due before it, has had its chance.
async fn control(host: &Host, graph: &FakeGraph, user: &str) {
    post_signed(host, &message_from(user, "control")).await;
    until("the control reply", || async {
        delivered(graph, "control") >= 1
    })
    .await;
}

/// A Graph outage: every call answered `500` with code 1200 (temporary).
fn outage() -> Scripted {
    Scripted::graph_error(500, 1200, 0, "Temporary send message failure")
}

async fn transient_failures(host: &Host) -> f64 {
    host.sends("messenger", "transient").await
}

#[tokio::test(flavor = "multi_thread")]
async fn replies_outlast_a_graph_outage_and_each_arrives_once() {
    let graph = fake_graph().await;
    graph.set_outage(Some(outage()));
    let host = HostBuilder::new(&graph.url).start();
    let texts: Vec<String> = (0..5).map(|i| format!("outage-{i}")).collect();
    for (i, text) in texts.iter().enumerate() {
        post_signed(&host, &message_from(&format!("7100{i}"), text)).await;
    }
    // Each reply failed through the plugin's own tries and was rescheduled by the
    // host, twice over.
    until("every reply to fail twice", || async {
        transient_failures(&host).await >= 10.0
    })
    .await;
    assert!(graph.delivered().is_empty());
    graph.set_outage(None);
    until("every reply after the outage", || async {
        texts.iter().all(|t| delivered(&graph, t) >= 1)
    })
    .await;
    for (i, _) in texts.iter().enumerate() {
        control_for(&host, &graph, &format!("7100{i}"), i).await;
    }
    for text in &texts {
        assert_eq!(delivered(&graph, text), 1, "{text}\n{}", host.log());
    }
}

/// [`control`] for one of several conversations: its own control text.
async fn control_for(host: &Host, graph: &FakeGraph, user: &str, i: usize) {
    let text = format!("control-{i}");
    post_signed(host, &message_from(user, &text)).await;
    until("the control reply", || async {
        delivered(graph, &text) >= 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_failing_when_the_host_is_killed_is_sent_once_after_the_restart() {
    let graph = fake_graph().await;
    graph.set_outage(Some(outage()));
    let builder = HostBuilder::new(&graph.url);
    let mut host = builder.start();
    post_signed(&host, &message_from("7200", "waiting")).await;
    until("the reply to be rescheduled", || async {
        transient_failures(&host).await >= 1.0
    })
    .await;
    tokio::task::block_in_place(|| host.kill());
    graph.set_outage(None);

    let restarted = builder.start();
    until("the reply after the restart", || async {
        delivered(&graph, "waiting") >= 1
    })
    .await;
    assert!(restarted
        .log()
        .contains("resuming events accepted before the last stop"));
    // Redelivered after the restart: remembered, not answered again.
    post_signed(&restarted, &message_from("7200", "waiting")).await;
    control(&restarted, &graph, "7200").await;
    assert_eq!(delivered(&graph, "waiting"), 1, "{}", restarted.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_waiting_for_its_retry_does_not_hold_up_shutdown_and_is_sent_after_it() {
    let graph = fake_graph().await;
    graph.set_outage(Some(outage()));
    let builder = HostBuilder::new(&graph.url).server("shutdown_grace_ms = 60000");
    let mut host = builder.start();
    post_signed(&host, &message_from("7300", "parked")).await;
    until("the reply to be rescheduled", || async {
        transient_failures(&host).await >= 1.0
    })
    .await;
    let status = tokio::task::block_in_place(|| host.terminate(Duration::from_secs(50)));
    assert!(
        status.is_some_and(|s| s.success()),
        "the host exits 0 without waiting out the grace: {status:?}\n{}",
        host.log()
    );
    assert!(
        host.log().contains("left queued for the next start"),
        "{}",
        host.log()
    );
    graph.set_outage(None);

    let restarted = builder.start();
    until("the reply after the restart", || async {
        delivered(&graph, "parked") >= 1
    })
    .await;
    control(&restarted, &graph, "7300").await;
    assert_eq!(delivered(&graph, "parked"), 1);
}

/// Starts a host whose sends hang in the Graph API, posts `texts` (one conversation
/// each), waits until every send is in flight, and kills the host.
async fn kill_with_sends_in_flight(builder: &HostBuilder, graph: &FakeGraph, texts: &[String]) {
    graph.set_delay(Duration::from_secs(30));
    let mut host = builder.start();
    for (i, text) in texts.iter().enumerate() {
        post_signed(&host, &message_from(&format!("7400{i}"), text)).await;
    }
    until("every send in flight", || async {
        graph.calls().len() >= texts.len()
    })
    .await;
    tokio::task::block_in_place(|| host.kill());
    graph.set_delay(Duration::ZERO);
}

fn calls_with(graph: &FakeGraph, text: &str) -> usize {
    graph
        .calls()
        .iter()
        .filter(|c| c.text() == Some(text))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_killed_with_sends_in_flight_does_not_send_them_again() {
    let graph = fake_graph().await;
    let builder = HostBuilder::new(&graph.url);
    let texts: Vec<String> = (0..4).map(|i| format!("inflight-{i}")).collect();
    kill_with_sends_in_flight(&builder, &graph, &texts).await;

    let restarted = builder.start();
    control(&restarted, &graph, "7500").await;
    for text in &texts {
        assert_eq!(calls_with(&graph, text), 1, "{text} sent again");
    }
    let unknown = restarted.sends("messenger", "unknown").await;
    assert_eq!(unknown, 4.0, "{}", restarted.log());
    assert!(restarted
        .log()
        .contains("its outcome is unknown and it is not sent again"));
}

#[tokio::test(flavor = "multi_thread")]
async fn with_resend_unknown_a_host_killed_with_sends_in_flight_loses_none() {
    let graph = fake_graph().await;
    let builder = HostBuilder::new(&graph.url).channels("\n[queue]\nresend_unknown = true\n");
    let texts: Vec<String> = (0..4).map(|i| format!("resent-{i}")).collect();
    kill_with_sends_in_flight(&builder, &graph, &texts).await;

    let restarted = builder.start();
    // The first tries reached the Graph API before the kill; each is sent again.
    until("every reply sent again after the restart", || async {
        texts.iter().all(|t| calls_with(&graph, t) >= 2)
    })
    .await;
    control(&restarted, &graph, "7500").await;
    for text in &texts {
        assert_eq!(calls_with(&graph, text), 2, "{text}");
    }
    let unknown = restarted.sends("messenger", "unknown").await;
    assert_eq!(unknown, 4.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_host_on_the_same_queue_is_refused_before_it_sends_anything() {
    let graph = fake_graph().await;
    graph.set_outage(Some(outage()));
    let builder = HostBuilder::new(&graph.url);
    let first = builder.start();
    post_signed(&first, &message_from("7600", "pending")).await;
    until("a pending reply", || async {
        transient_failures(&first).await >= 1.0
    })
    .await;

    let other_graph = fake_graph().await;
    let Err(log) = builder.with_graph(&other_graph.url).try_start() else {
        panic!("a second host started on the same queue");
    };
    assert!(
        log.contains("queue.sqlite3") && log.contains("in use by another host"),
        "{log}"
    );
    assert!(
        other_graph.calls().is_empty(),
        "the second host sent: {:?}",
        other_graph.calls()
    );
    assert!(!log.contains("resuming events"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_error_is_tried_once() {
    let graph = fake_graph().await;
    graph.script([Scripted::graph_error(
        400,
        551,
        1_545_041,
        "This person isn't available right now.",
    )]);
    let host = HostBuilder::new(&graph.url).start();
    post_signed(&host, &message_from("7700", "refused")).await;
    control(&host, &graph, "7700").await;
    assert_eq!(calls_with(&graph, "refused"), 1, "{:#?}", graph.calls());
    assert_eq!(host.sends("messenger", "permanent").await, 1.0);
}
