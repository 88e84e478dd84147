//! The host as a product: durable intake across a crash, no duplicate replies,
//! per-conversation order under load, back-pressure, metrics.

use std::time::Duration;

use e2e::{fake_graph, fixture, sample, sign, HostBuilder, APP_SECRET};
use serde_json::Value;

use crate::{
    calls_once_processed,
    delivery::{delivered, until},
    post, post_signed,
};

/// A one-message body from `user` with a unique `mid` and `text`.
fn message_from(user: &str, mid: &str, text: &str) -> Vec<u8> {
    let mut body: Value = serde_json::from_slice(&fixture("message_text")).unwrap();
    let item = &mut body["entry"][0]["messaging"][0];
    item["sender"]["id"] = user.into();
    item["message"]["mid"] = mid.into();
    item["message"]["text"] = text.into();
    serde_json::to_vec(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_body_is_answered_once() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url).start();
    let body = fixture("batched_multi_entry");
    for _ in 0..3 {
        post_signed(&host, &body).await;
    }
    assert_eq!(
        calls_once_processed(&host, &graph, 2).await.len(),
        2,
        "one reply per event, not per delivery"
    );
    let metrics = host.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "dmflow_duplicate_events_total{channel=\"messenger\"}"
        ),
        Some(4.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_conversation_stays_in_order_while_many_run_at_once() {
    let graph = fake_graph().await;
    graph.set_delay(Duration::from_millis(15));
    let host = std::sync::Arc::new(HostBuilder::new(&graph.url).start());
    let users: Vec<String> = (0..8).map(|u| format!("90000{u}")).collect();
    let mut tasks = Vec::new();
    for user in users.clone() {
        let host = std::sync::Arc::clone(&host);
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let body = message_from(&user, &format!("m_{user}_{i}"), &format!("{user}:{i}"));
                let (status, _) = post(&host, &body, Some(&sign(APP_SECRET, &body))).await;
                assert_eq!(status, 200);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let calls = calls_once_processed(&host, &graph, 80).await;
    assert_eq!(calls.len(), 80);
    for user in &users {
        let texts: Vec<_> = calls
            .iter()
            .filter(|c| c.recipient() == user)
            .map(|c| c.text().unwrap().to_owned())
            .collect();
        let expected: Vec<_> = (0..10).map(|i| format!("{user}:{i}")).collect();
        assert_eq!(texts, expected, "replies to {user} out of order");
    }
    let metrics = host.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "dmflow_sends_total{channel=\"messenger\",outcome=\"ok\"}"
        ),
        Some(80.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn at_most_workers_conversations_run_at_once() {
    let graph = fake_graph().await;
    // Every answer waits until released: the sends pile up at the Graph API.
    graph.hold();
    let host = std::sync::Arc::new(HostBuilder::new(&graph.url).server("workers = 2").start());
    let mut tasks = Vec::new();
    for user in 0..8 {
        let host = std::sync::Arc::clone(&host);
        tasks.push(tokio::spawn(async move {
            let user = format!("91000{user}");
            let body = message_from(&user, &format!("m_w_{user}"), "hello");
            post(&host, &body, Some(&sign(APP_SECRET, &body))).await.0
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    // Eight conversations ready at once, two workers: two sends in flight together
    // (not one: the pool runs them in parallel) ...
    until("two sends in flight at once", || async {
        graph.in_flight() >= 2
    })
    .await;
    graph.release();
    until("every reply", || async { delivered(&graph, "hello") >= 8 }).await;
    // ... and never more: the pool is bounded.
    assert_eq!(graph.most_in_flight(), 2, "{}", host.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_answers_503_and_the_host_keeps_serving() {
    let graph = fake_graph().await;
    // The replies wait at the Graph API until released: the queue stays full.
    graph.hold();
    let host = HostBuilder::new(&graph.url)
        .server("queue_capacity = 3")
        .start();
    let mut statuses = Vec::new();
    for i in 0..5 {
        let body = message_from("777", &format!("m_full_{i}"), "hello");
        statuses.push(post(&host, &body, Some(&sign(APP_SECRET, &body))).await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 503, 503]);
    // Answered while the replies still wait on the Graph API.
    assert_eq!(sample(&host.metrics().await, "dmflow_sends_total"), None);
    let health = reqwest::get(format!("{}/healthz", host.url)).await.unwrap();
    assert_eq!(health.status(), 200);
    let metrics = host.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "dmflow_webhooks_total{channel=\"messenger\",outcome=\"unavailable\"}"
        ),
        Some(2.0)
    );
    assert_eq!(sample(&metrics, "dmflow_queue_depth"), Some(3.0));
    // Once the Graph API answers, the queue drains and takes webhooks again.
    graph.release();
    until("the queue to drain", || async {
        sample(&host.metrics().await, "dmflow_queue_depth") == Some(0.0)
    })
    .await;
    let body = message_from("778", "m_full_after", "after");
    assert_eq!(
        post(&host, &body, Some(&sign(APP_SECRET, &body))).await.0,
        200
    );
    until("the reply after the drain", || async {
        delivered(&graph, "after") == 1
    })
    .await;
    assert_eq!(delivered(&graph, "hello"), 3, "{}", host.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_webhooks_events_and_sends() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url).start();
    post_signed(&host, &fixture("message_text")).await;
    post_signed(&host, &fixture("read")).await;
    let (status, _) = post(&host, &fixture("read"), Some("sha256=00")).await;
    assert_eq!(status, 401);
    calls_once_processed(&host, &graph, 1).await;
    let metrics = host.metrics().await;
    for (series, value) in [
        (
            "dmflow_webhooks_total{channel=\"messenger\",outcome=\"accepted\"}",
            2.0,
        ),
        (
            "dmflow_webhooks_total{channel=\"messenger\",outcome=\"unauthorized\"}",
            1.0,
        ),
        (
            "dmflow_events_total{channel=\"messenger\",kind=\"message\"}",
            1.0,
        ),
        (
            "dmflow_events_total{channel=\"messenger\",kind=\"read\"}",
            1.0,
        ),
        (
            "dmflow_sends_total{channel=\"messenger\",outcome=\"ok\"}",
            1.0,
        ),
        (
            "dmflow_webhook_ack_seconds_count{channel=\"messenger\"}",
            3.0,
        ),
        ("dmflow_send_seconds_count{channel=\"messenger\"}", 1.0),
        ("dmflow_queue_depth", 0.0),
    ] {
        assert_eq!(
            sample(&metrics, series),
            Some(value),
            "{series} in\n{metrics}"
        );
    }
}
