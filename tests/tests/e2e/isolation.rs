//! Fault isolation at the plugin boundary, with the `faulty` test plugin: panics,
//! hangs and failing constructors cost one channel for a while at most, never the
//! host, and a channel whose adapter failed comes back once a fresh one works.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use e2e::{fake_graph, fixture, library, Host, HostBuilder};
use serde_json::{json, Value};

use crate::post_signed;

/// How long a test waits for the host to reach a state before it gives up. The
/// breaker's delays (1 s, 2 s, 4 s, 8 s ...) fit in it many times over.
const PATIENCE: Duration = Duration::from_secs(120);

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

fn channel_status<'a>(health: &'a Value, name: &str) -> &'a Value {
    health["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

/// Waits until `check` holds, polling; fails the test (with the host's log) when
/// it does not within [`PATIENCE`].
async fn eventually<F, Fut>(host: &Host, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}\n{}", host.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Posts fresh events to `channel` until one is answered 200; returns every
/// status it got, the 200 last.
async fn post_until_accepted(host: &Host, channel: &str) -> Vec<u16> {
    let deadline = Instant::now() + PATIENCE;
    let mut statuses = Vec::new();
    loop {
        let status = post_to(host, channel, &format!("{channel}-{}", statuses.len())).await;
        statuses.push(status);
        if status == 200 {
            return statuses;
        }
        assert!(
            Instant::now() < deadline,
            "{channel} never accepted a webhook: {statuses:?}\n{}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// How many times the host logged taking `channel` down after its adapter failed
/// with `what` (e.g. "verify failed").
fn taken_down(host: &Host, channel: &str, what: &str) -> usize {
    let phrase = format!("adapter failed ({what}); channel down");
    host.log()
        .lines()
        .filter(|l| l.contains(&phrase) && l.contains(channel))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_channel_whose_adapter_cannot_be_created_is_down_and_tried_again() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url)
        .plugin_file(library("faulty_plugin"))
        .channels(&faulty_channel("refuses", "new = \"error\""))
        .channels(&faulty_channel("explodes", "new = \"panic\""))
        .start();
    let log = host.log();
    assert!(
        log.contains(
            "the faulty plugin could not create the adapter: transient: faulty: told to fail"
        ),
        "{log}"
    );
    assert!(
        log.contains("down until its adapter can be created: channels[2]")
            && log.contains("panicked"),
        "{log}"
    );

    assert_eq!(post_to(&host, "refuses", "e1").await, 503);
    assert_eq!(post_to(&host, "explodes", "e2").await, 503);
    let health = host.health().await;
    assert_eq!(health["status"], "degraded");
    let refuses = channel_status(&health, "refuses");
    assert_eq!(refuses["status"], "down");
    assert_eq!(
        refuses["reason"],
        "the faulty plugin could not create the adapter (transient)"
    );
    assert!(refuses["retry_in_ms"].is_u64(), "{health}");
    let explodes = channel_status(&health, "explodes");
    assert_eq!(
        explodes["reason"],
        "the faulty plugin could not create the adapter (panicked)"
    );
    assert!(
        !health.to_string().contains("told to"),
        "the plugin's own words stay in the log: {health}"
    );
    assert_eq!(channel_status(&health, "messenger")["status"], "up");
    let ready = reqwest::get(format!("{}/readyz", host.url)).await.unwrap();
    assert_eq!(ready.status(), 503);
    let why = ready.text().await.unwrap();
    assert!(why.contains("channel refuses is down"), "{why}");
    assert!(!why.contains("told to"), "{why}");

    eventually(&host, "the refused adapter is tried again", || async {
        host.metric("dmflow_plugin_failures_total{channel=\"refuses\"}")
            .await
            >= 2.0
    })
    .await;
    assert_eq!(post_to(&host, "refuses", "e3").await, 503);
}

#[tokio::test(flavor = "multi_thread")]
async fn while_one_channel_is_down_the_others_on_the_host_keep_answering() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url)
        .plugin_file(library("faulty_plugin"))
        .channels(&faulty_channel("stuck", "new = \"panic\""))
        .channels(&faulty_channel("steady", "new = \"ok\""))
        .start();
    assert_eq!(post_to(&host, "stuck", "s1").await, 503);

    assert_eq!(post_to(&host, "steady", "s2").await, 200);
    eventually(&host, "the steady channel's reply is sent", || async {
        host.sends("steady", "ok").await >= 1.0
    })
    .await;
    post_signed(&host, &fixture("message_text")).await;
    assert_eq!(
        crate::calls_once_processed(&host, &graph, 1).await.len(),
        1,
        "the Messenger channel answers"
    );

    let health = host.health().await;
    assert_eq!(health["status"], "degraded");
    assert_eq!(channel_status(&health, "stuck")["status"], "down");
    assert_eq!(channel_status(&health, "steady")["status"], "up");
    assert_eq!(channel_status(&health, "messenger")["status"], "up");
    assert_eq!(post_to(&host, "stuck", "s3").await, 503);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_adapter_whose_verify_panicked_is_rebuilt_and_then_answers() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url)
        .plugin_file(library("faulty_plugin"))
        .channels(&faulty_channel("flaky", "verify = \"panic-first:2\""))
        .start();
    let deadline = Instant::now() + PATIENCE;
    let mut statuses = Vec::new();
    let mut seen_down = Vec::new();
    while statuses.last() != Some(&200) {
        assert!(Instant::now() < deadline, "{statuses:?}\n{}", host.log());
        let status = post_to(&host, "flaky", &format!("v{}", statuses.len())).await;
        statuses.push(status);
        if status != 200 {
            let health = host.health().await;
            if channel_status(&health, "flaky")["status"] == "down" {
                seen_down.push(health);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(count(&statuses, 500), 2, "{statuses:?}");
    assert_eq!(
        taken_down(&host, "flaky", "verify failed"),
        2,
        "{statuses:?}\n{}",
        host.log()
    );
    // Whichever /healthz answers came while it was down: the reason, no panic text.
    for health in &seen_down {
        assert_eq!(health["status"], "degraded");
        let flaky = channel_status(health, "flaky");
        assert_eq!(flaky["reason"], "the adapter failed: verify failed");
        assert!(flaky["retry_in_ms"].is_u64(), "{health}");
        assert!(
            !health.to_string().contains("faulty: verify"),
            "no panic text on /healthz: {health}"
        );
    }
    assert!(
        host.log().contains("faulty: verify"),
        "the panic's message reaches the log"
    );

    eventually(&host, "the reply is sent", || async {
        host.sends("flaky", "ok").await >= 1.0
    })
    .await;
    assert_eq!(
        host.metric("dmflow_plugin_failures_total{channel=\"flaky\"}")
            .await,
        2.0
    );
    assert_eq!(
        host.metric("dmflow_adapter_restarts_total{channel=\"flaky\"}")
            .await,
        2.0
    );
    let health = host.health().await;
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(channel_status(&health, "flaky")["status"], "up");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_adapter_that_keeps_panicking_is_never_given_up_on() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url)
        .plugin_file(library("faulty_plugin"))
        .channels(&faulty_channel("brittle", "parse = \"panic-first:4\""))
        .start();
    let statuses = post_until_accepted(&host, "brittle").await;
    assert_eq!(count(&statuses, 500), 4, "{statuses:?}");
    assert_eq!(
        taken_down(&host, "brittle", "parse panicked"),
        4,
        "down after each panic: {statuses:?}\n{}",
        host.log()
    );
    assert_eq!(
        host.metric("dmflow_adapter_restarts_total{channel=\"brittle\"}")
            .await,
        4.0
    );
    eventually(&host, "the reply is sent", || async {
        host.sends("brittle", "ok").await >= 1.0
    })
    .await;
    assert_eq!(
        channel_status(&host.health().await, "brittle")["status"],
        "up"
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
    eventually(&host, "the hanging send is cut off", || async {
        host.sends("hangs", "timeout").await >= 1.0
    })
    .await;
    eventually(&host, "the panicked adapter is rebuilt", || async {
        host.metric("dmflow_adapter_restarts_total{channel=\"panics\"}")
            .await
            >= 1.0
    })
    .await;
    assert_eq!(host.sends("panics", "panicked").await, 1.0);
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

#[tokio::test(flavor = "multi_thread")]
async fn a_down_channels_accepted_events_wait_in_the_queue_and_are_each_sent_once_it_is_back() {
    let graph = fake_graph().await;
    let channel = |settings: &str| faulty_channel("wobbly", settings);
    let builder = HostBuilder::new(&graph.url)
        .server("send_timeout_ms = 1000")
        .plugin_file(library("faulty_plugin"));
    let host = builder
        .clone()
        .channels(&channel("send = \"hang\""))
        .start();
    // The first event's send hangs; two more wait behind it in its conversation.
    for id in ["w1", "w2", "w3"] {
        assert_eq!(post_to(&host, "wobbly", id).await, 200);
    }
    // Meanwhile the channel's adapter can no longer be built.
    builder
        .clone()
        .channels(&channel("new = \"error\""))
        .write(builder.dir());
    host.hangup();
    eventually(&host, "the channel to go down", || async {
        channel_status(&host.health().await, "wobbly")["status"] == "down"
    })
    .await;
    eventually(&host, "the hanging send to be cut off", || async {
        host.sends("wobbly", "timeout").await >= 1.0
    })
    .await;
    assert_eq!(host.sends("wobbly", "ok").await, 0.0);
    assert_eq!(
        host.metric("dmflow_queue_depth").await,
        2.0,
        "{}",
        host.log()
    );

    // A working adapter again: the two waiting events go out, once each.
    builder.clone().channels(&channel("")).write(builder.dir());
    host.hangup();
    eventually(&host, "the waiting replies", || async {
        host.sends("wobbly", "ok").await >= 2.0
    })
    .await;
    crate::processed(&host).await;
    assert_eq!(post_to(&host, "wobbly", "w4").await, 200);
    eventually(&host, "the control reply", || async {
        host.sends("wobbly", "ok").await >= 3.0
    })
    .await;
    assert_eq!(host.sends("wobbly", "ok").await, 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn replies_wait_while_a_fresh_adapter_is_being_built_then_go_out_on_it() {
    let graph = fake_graph().await;
    let barrier_dir = tempfile::tempdir().unwrap();
    let barrier = barrier_dir.path().join("go");
    let builder = HostBuilder::new(&graph.url).plugin_file(library("faulty_plugin"));
    // A first host accepts two events of one conversation: the first one's send
    // hangs, the second waits behind it; then the host is killed.
    let mut first = builder
        .clone()
        .channels(&faulty_channel("gate", "send = \"hang\""))
        .start();
    for id in ["g1", "g2"] {
        assert_eq!(post_to(&first, "gate", id).await, 200);
    }
    eventually(&first, "both events accepted", || async {
        first.metric("dmflow_queue_depth").await == 2.0
    })
    .await;
    tokio::task::block_in_place(|| first.kill());

    // The next host cannot build the adapter at first; its breaker's next build
    // waits on a barrier: the channel is down, its retry time past, a build under way.
    let host = builder
        .clone()
        .channels(&faulty_channel(
            "gate",
            &format!("new = \"error-then-wait:{}\"", barrier.display()),
        ))
        .start();
    eventually(
        &host,
        "the fresh adapter's build to be under way",
        || async {
            let health = host.health().await;
            let gate = channel_status(&health, "gate");
            gate["status"] == "down" && gate["retry_in_ms"] == 0
        },
    )
    .await;
    assert_eq!(host.sends("gate", "ok").await, 0.0);
    assert_eq!(
        host.metric("dmflow_queue_depth").await,
        1.0,
        "{}",
        host.log()
    );

    std::fs::write(&barrier, "").unwrap();
    eventually(&host, "the waiting reply on the fresh adapter", || async {
        host.sends("gate", "ok").await >= 1.0
    })
    .await;
    crate::processed(&host).await;
    assert_eq!(host.sends("gate", "ok").await, 1.0);
    assert_eq!(
        host.metric("dmflow_adapter_restarts_total{channel=\"gate\"}")
            .await,
        1.0
    );
}
