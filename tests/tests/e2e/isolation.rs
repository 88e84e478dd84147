//! Fault isolation at the plugin boundary, with the `faulty` test plugin: panics,
//! hangs and failing constructors cost one channel at most, never the host.

use std::time::Duration;

use e2e::{fake_graph, fixture, library, Host, HostBuilder};
use serde_json::{json, Value};

use crate::post_signed;

fn faulty_channel(name: &str, settings: &str) -> String {
    format!(
        "\n[[channels]]\nname = \"{name}\"\nplugin = \"faulty\"\n[channels.settings]\n{settings}\n"
    )
}

async fn post_to(host: &Host, channel: &str, id: &str) -> u16 {
    let body = json!({ "user": "u1", "text": "hello", "id": id }).to_string();
    reqwest::Client::new()
        .post(host.webhook(channel))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn health(host: &Host) -> Value {
    reqwest::get(format!("{}/healthz", host.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn channel_status<'a>(health: &'a Value, name: &str) -> &'a Value {
    health["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_constructor_that_fails_or_panics_costs_only_its_channel() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url)
        .plugin_file(library("faulty_plugin"))
        .channels(&faulty_channel("refuses", "new = \"fail\""))
        .channels(&faulty_channel("explodes", "new = \"panic\""))
        .start();
    let log = host.log();
    assert!(log.contains("channel disabled: channels[1]: the faulty plugin could not create the adapter: invalid_settings: faulty: told to fail"), "{log}");
    assert!(
        log.contains("channel disabled: channels[2]") && log.contains("panicked"),
        "{log}"
    );

    assert_eq!(post_to(&host, "refuses", "e1").await, 503);
    assert_eq!(post_to(&host, "explodes", "e2").await, 503);
    let health = health(&host).await;
    assert_eq!(health["status"], "degraded");
    assert_eq!(channel_status(&health, "refuses")["status"], "failed");
    assert_eq!(channel_status(&health, "messenger")["status"], "up");

    post_signed(&host, &fixture("message_text")).await;
    assert_eq!(
        graph.wait_for(1, crate::SETTLE).await.len(),
        1,
        "the other channel is up"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_adapter_is_replaced_then_its_channel_failed() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url)
        .plugin_file(library("faulty_plugin"))
        .channels(&faulty_channel("brittle", "parse = \"panic\""))
        .start();
    for i in 0..4 {
        assert_eq!(
            post_to(&host, "brittle", &format!("p{i}")).await,
            500,
            "try {i}"
        );
    }
    assert_eq!(
        host.metric("dmflow_plugin_failures_total{channel=\"brittle\"}")
            .await,
        4.0
    );
    assert_eq!(
        host.metric("dmflow_adapter_restarts_total{channel=\"brittle\"}")
            .await,
        3.0
    );
    // Replaced three times, then given up on: the channel answers 503.
    assert_eq!(post_to(&host, "brittle", "p5").await, 503);
    let health = health(&host).await;
    assert_eq!(channel_status(&health, "brittle")["status"], "failed");
    assert!(host.log().contains("replaced by a fresh one"));

    post_signed(&host, &fixture("message_text")).await;
    assert_eq!(
        graph.wait_for(1, crate::SETTLE).await.len(),
        1,
        "the host keeps serving"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_that_panics_or_never_calls_back_is_an_error_not_a_crash() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url)
        .server("send_timeout_ms = 300")
        .plugin_file(library("faulty_plugin"))
        .channels(&faulty_channel("panics", "send = \"panic\""))
        .channels(&faulty_channel("hangs", "send = \"hang\""))
        .start();
    assert_eq!(post_to(&host, "panics", "s1").await, 200);
    assert_eq!(post_to(&host, "hangs", "s2").await, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while host
        .metric("dmflow_sends_total{channel=\"hangs\",outcome=\"timeout\"}")
        .await
        < 1.0
    {
        assert!(std::time::Instant::now() < deadline, "{}", host.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        host.metric("dmflow_sends_total{channel=\"panics\",outcome=\"panicked\"}")
            .await,
        1.0
    );
    assert_eq!(
        host.metric("dmflow_adapter_restarts_total{channel=\"panics\"}")
            .await,
        1.0
    );
    assert_eq!(
        host.metric("dmflow_plugin_failures_total{channel=\"hangs\"}")
            .await,
        1.0
    );
    let log = host.log();
    assert!(
        log.contains("faulty: send"),
        "the panic's message reaches the log:\n{log}"
    );
    // Both channels still take webhooks.
    assert_eq!(post_to(&host, "panics", "s3").await, 200);
    assert_eq!(post_to(&host, "hangs", "s4").await, 200);
}
