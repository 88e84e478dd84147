//! Several hosts on one PostgreSQL queue, with the real host and plugin: every reply
//! once and in order with conversations spread over the hosts, a redelivery to
//! another host, a host killed mid-stream, a host paused past its lease.

use std::time::Duration;

use e2e::{fake_graph, FakeGraph, Host, HostBuilder, Scripted};
use host_example::pg_cluster::{Durability, PgCluster};
use serde_json::Value;

use crate::{
    delivery::{delivered, message_from, until},
    post_signed,
};

/// Partitions of the test groups: few, so that three hosts rebalance quickly.
const PARTITIONS: u32 = 12;

/// A host of the group on `url`, with short leases.
fn member(graph: &FakeGraph, url: &str) -> HostBuilder {
    HostBuilder::new(&graph.url).channels(&format!(
        "\n[queue]\nurl = \"{url}\"\npartitions = {PARTITIONS}\nlease_ms = 2000\npoll_ms = 20\n"
    ))
}

async fn queue_status(host: &Host) -> Value {
    let health: Value = reqwest::get(format!("{}/healthz", host.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    health["queue"].clone()
}

async fn owned(host: &Host) -> u64 {
    queue_status(host).await["owned"].as_u64().unwrap_or(0)
}

/// Waits until every host owns a share and all partitions are owned.
async fn balanced(hosts: &[&Host]) {
    until("the partitions shared among the hosts", || async {
        let mut total = 0;
        for host in hosts {
            let mine = owned(host).await;
            if mine == 0 {
                return false;
            }
            total += mine;
        }
        total == u64::from(PARTITIONS)
    })
    .await;
}

/// The texts delivered to `user`, in order.
fn delivered_to(graph: &FakeGraph, user: &str) -> Vec<String> {
    graph
        .delivered()
        .iter()
        .filter(|c| c.recipient() == user)
        .filter_map(|c| c.text().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hosts_answer_every_conversation_once_and_in_order() {
    let cluster = PgCluster::start(Durability::None).unwrap();
    let url = cluster.database("group").unwrap();
    let graph = fake_graph().await;
    let hosts: Vec<Host> = (0..3).map(|_| member(&graph, &url).start()).collect();
    balanced(&hosts.iter().collect::<Vec<_>>()).await;

    let users: Vec<String> = (0..6).map(|u| format!("8100{u}")).collect();
    for i in 0..5 {
        for (u, user) in users.iter().enumerate() {
            // Each message of a conversation to the next host.
            let host = &hosts[(u + i) % hosts.len()];
            post_signed(host, &message_from(user, &format!("{user}:{i}"))).await;
        }
    }
    until("every reply", || async { graph.delivered().len() >= 30 }).await;
    for user in &users {
        let expected: Vec<String> = (0..5).map(|i| format!("{user}:{i}")).collect();
        assert_eq!(delivered_to(&graph, user), expected, "{user}");
    }
    // A redelivery to each of the other hosts, then a control message.
    let first = message_from(&users[0], &format!("{}:0", users[0]));
    post_signed(&hosts[1], &first).await;
    post_signed(&hosts[2], &first).await;
    post_signed(&hosts[1], &message_from(&users[0], "control")).await;
    until("the control reply", || async {
        delivered(&graph, "control") == 1
    })
    .await;
    assert_eq!(delivered(&graph, &format!("{}:0", users[0])), 1);
    assert_eq!(graph.delivered().len(), 31);
}

fn outage() -> Scripted {
    Scripted::graph_error(500, 1200, 0, "Temporary send message failure")
}

async fn unknown(host: &Host) -> f64 {
    host.sends("messenger", "unknown").await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_hosts_events_are_answered_by_the_others() {
    let cluster = PgCluster::start(Durability::None).unwrap();
    let url = cluster.database("group").unwrap();
    let graph = fake_graph().await;
    graph.set_outage(Some(outage()));
    let mut hosts: Vec<Host> = (0..3).map(|_| member(&graph, &url).start()).collect();
    balanced(&hosts.iter().collect::<Vec<_>>()).await;
    let texts: Vec<String> = (0..12).map(|i| format!("takeover-{i}")).collect();
    for (i, text) in texts.iter().enumerate() {
        post_signed(&hosts[i % 3], &message_from(&format!("8200{i}"), text)).await;
    }
    // The first host is trying the replies of its partitions when it dies.
    until("the first host to try its replies", || async {
        hosts[0].sends("messenger", "transient").await >= 1.0
    })
    .await;
    let mut dead = hosts.remove(0);
    tokio::task::block_in_place(|| dead.kill());
    graph.set_outage(None);
    balanced(&hosts.iter().collect::<Vec<_>>()).await;
    until("every reply but the unknown ones", || async {
        let unknowns = unknown(&hosts[0]).await + unknown(&hosts[1]).await;
        let answered = texts.iter().filter(|t| delivered(&graph, t) > 0).count();
        answered as f64 + unknowns >= texts.len() as f64
    })
    .await;
    post_signed(&hosts[0], &message_from("82000", "control")).await;
    until("the control reply", || async {
        delivered(&graph, "control") == 1
    })
    .await;
    for text in &texts {
        assert!(delivered(&graph, text) <= 1, "{text} doubled");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_paused_past_its_lease_sends_nothing_for_the_partitions_it_lost() {
    let cluster = PgCluster::start(Durability::None).unwrap();
    let url = cluster.database("group").unwrap();
    let graph = fake_graph().await;
    graph.set_outage(Some(outage()));
    let paused = member(&graph, &url).start();
    let other = member(&graph, &url).start();
    balanced(&[&paused, &other]).await;
    let texts: Vec<String> = (0..8).map(|i| format!("paused-{i}")).collect();
    for (i, text) in texts.iter().enumerate() {
        post_signed(&paused, &message_from(&format!("8300{i}"), text)).await;
    }
    until("the paused host to try its replies", || async {
        paused.sends("messenger", "transient").await >= 1.0
    })
    .await;
    signal(&paused, "STOP");
    until("the other host to own every partition", || async {
        owned(&other).await == u64::from(PARTITIONS)
    })
    .await;
    graph.set_outage(None);
    until(
        "every reply but the unknown ones, from the other host",
        || async {
            let answered = texts.iter().filter(|t| delivered(&graph, t) > 0).count();
            answered as f64 + unknown(&other).await >= texts.len() as f64
        },
    )
    .await;
    signal(&paused, "CONT");
    // The paused host's waiting replies come due at once: each is refused by the
    // fence and given back.
    until("the paused host to give its replies back", || async {
        paused
            .log()
            .contains("left to the host that owns its conversation now")
    })
    .await;
    post_signed(&other, &message_from("83000", "control")).await;
    until("the control reply", || async {
        delivered(&graph, "control") == 1
    })
    .await;
    for text in &texts {
        assert!(
            delivered(&graph, text) <= 1,
            "{text} doubled\n{}",
            paused.log()
        );
    }
}

fn signal(host: &Host, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &host.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_stopped_gracefully_hands_its_partitions_over_without_waiting_for_its_lease() {
    let cluster = PgCluster::start(Durability::None).unwrap();
    let url = cluster.database("group").unwrap();
    let graph = fake_graph().await;
    // Leases of ten minutes: a takeover by lapse would outlast the test.
    let long = |graph: &FakeGraph| {
        HostBuilder::new(&graph.url).channels(&format!(
            "\n[queue]\nurl = \"{url}\"\npartitions = {PARTITIONS}\nlease_ms = 600000\n"
        ))
    };
    let mut leaving = long(&graph).start();
    let staying = long(&graph).start();
    // The second host took what was free; the first keeps the rest until it leaves.
    until("the second host to own a share", || async {
        owned(&staying).await > 0
    })
    .await;
    assert!(owned(&leaving).await > 0);
    let status = tokio::task::block_in_place(|| leaving.terminate(Duration::from_secs(30)));
    assert!(status.is_some_and(|s| s.success()), "{}", leaving.log());
    assert!(
        leaving.log().contains("left the shared queue"),
        "{}",
        leaving.log()
    );
    until("the staying host to own every partition", || async {
        owned(&staying).await == u64::from(PARTITIONS)
    })
    .await;
    post_signed(&staying, &message_from("84000", "after")).await;
    until("a reply", || async { delivered(&graph, "after") == 1 }).await;
}
