//! Run with `./target/release/takeover --hosts 2 --lease-ms 10000 --trials 3` (after
//! `cargo build --release -p bench -p messenger-adapter -p host-example`): how long
//! the events of a host killed with `kill -9` wait for another host of the group.
//!
//! Each trial starts a fresh database in a throw-away PostgreSQL cluster (`fsync` on),
//! `--hosts` hosts on it, waits until they share the partitions, then offers
//! `--rate` webhooks per second (open loop, each its own conversation) to the hosts in
//! turn. After `--kill-after-secs` it stops sending to the first host and kills it
//! (SIGKILL); the load goes on to the others for `--load-after-kill-secs`. A fake Graph
//! API notes when each conversation got its reply. From the killed host's partitions
//! (its `/healthz` just before the kill) and each event's partition (from the
//! database), it prints, from the kill: the first reply of an event of those
//! partitions, and when all the events of those partitions that were waiting at the
//! kill, then all that were accepted, had their reply.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::{routing::post, Json, Router};
use bench::{
    event_time, now_ms, owned_partitions, pg::Postgres, shared_queue, sign, start_host,
    wait_balanced, webhook_with, Host, Mids,
};
use clap::Parser;

/// Takeover time of the shared queue after a host is killed.
#[derive(Parser)]
struct Args {
    /// Hosts on the one queue (the first is killed).
    #[arg(long, default_value_t = 2)]
    hosts: usize,
    /// The hosts' `[queue] lease_ms`.
    #[arg(long, default_value_t = 10_000)]
    lease_ms: u64,
    /// Trials, each on a fresh database with fresh hosts.
    #[arg(long, default_value_t = 3)]
    trials: usize,
    /// Webhooks per second offered, in all.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Seconds of load before the kill.
    #[arg(long, default_value_t = 3.0)]
    kill_after_secs: f64,
    /// Seconds of load after the kill (default: twice the lease, and 3 s).
    #[arg(long)]
    load_after_kill_secs: Option<f64>,
    /// CPU the hosts are pinned to; none when absent.
    #[arg(long)]
    host_cpu: Option<usize>,
    /// CPU the PostgreSQL server is pinned to; none when absent.
    #[arg(long)]
    db_cpu: Option<usize>,
    /// Folder holding host-example and libmessenger_adapter.so. Default: this program's.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// The conversation (sender id) of webhook `seq`, as [`webhook_with`] makes it: unique
/// for `seq` under 100,000.
fn sender(seq: u64) -> u64 {
    7_000_000_000_000_000 + seq % 100_000
}

/// When each conversation got its first reply, and how many replies came in all.
#[derive(Default)]
struct Replies {
    first: HashMap<u64, Instant>,
    total: u64,
}

/// A fake Graph API for plain Send API calls (the hosts run with `batch_size = 1`)
/// that notes each reply's recipient and when it came. Its url.
async fn recording_graph(replies: Arc<Mutex<Replies>>) -> anyhow::Result<String> {
    let app = Router::new().route(
        "/{version}/me/messages",
        post(move |Json(call): Json<serde_json::Value>| {
            let replies = Arc::clone(&replies);
            async move {
                let recipient = call["recipient"]["id"]
                    .as_str()
                    .and_then(|id| id.parse().ok());
                if let Some(recipient) = recipient {
                    let mut replies = replies.lock().unwrap_or_else(|p| p.into_inner());
                    replies.total += 1;
                    replies.first.entry(recipient).or_insert_with(Instant::now);
                }
                Json(serde_json::json!({ "recipient_id": "1", "message_id": "m" }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    Ok(url)
}

/// One trial's numbers, in ms from the kill.
struct Trial {
    owned: usize,
    lease_left_ms: f64,
    pending_at_kill: usize,
    accepted_after_kill: usize,
    first_reply: Option<f64>,
    pending_answered: Option<f64>,
    all_answered: Option<f64>,
    unanswered: usize,
    duplicates: u64,
    others_max_wait: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.hosts >= 2, "--hosts: at least 2 (one is killed)");
    let bin_dir = bench::bin_dir(args.bin_dir.as_deref())?;
    let cluster = Postgres::start(args.db_cpu)?;
    println!(
        "# {} hosts, lease {} ms, {} webhooks/s, kill -9 of one after {} s, host cpu {:?}, database cpu {:?}",
        args.hosts, args.lease_ms, args.rate, args.kill_after_secs, args.host_cpu, args.db_cpu
    );
    println!("| trial | its partitions | lease left at kill ms | waiting at kill | accepted after kill | first reply ms | waiting at kill answered ms | all answered ms | unanswered | duplicate replies | other partitions' longest wait ms |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for trial in 1..=args.trials {
        let t = run_trial(&args, &bin_dir, &cluster, trial).await?;
        let ms = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.0}"));
        println!(
            "| {trial} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
            t.owned,
            t.lease_left_ms,
            t.pending_at_kill,
            t.accepted_after_kill,
            ms(t.first_reply),
            ms(t.pending_answered),
            ms(t.all_answered),
            t.unanswered,
            t.duplicates,
            t.others_max_wait,
        );
    }
    Ok(())
}

async fn run_trial(
    args: &Args,
    bin_dir: &std::path::Path,
    cluster: &Postgres,
    trial: usize,
) -> anyhow::Result<Trial> {
    let replies = Arc::new(Mutex::new(Replies::default()));
    let graph = recording_graph(Arc::clone(&replies)).await?;
    let db = format!("takeover_{trial}_{}", now_ms());
    let queue = shared_queue(&cluster.database(&db)?, Some(args.lease_ms));
    let mut hosts: Vec<Host> = (0..args.hosts)
        .map(|_| start_host(bin_dir, args.host_cpu, &graph, "", &queue, "batch_size = 1"))
        .collect::<anyhow::Result<_>>()?;
    let urls: Vec<String> = hosts.iter().map(|h| h.url.clone()).collect();
    wait_balanced(&urls, Duration::from_secs(4 * args.lease_ms / 1000 + 30)).await?;

    let after_kill = args
        .load_after_kill_secs
        .unwrap_or(2.0 * args.lease_ms as f64 / 1000.0 + 3.0);
    let total = ((args.kill_after_secs + after_kill) * args.rate as f64) as u64;
    anyhow::ensure!(
        total < 100_000,
        "more than 100,000 webhooks: conversations repeat"
    );
    let start_ms = now_ms();
    let up: Arc<Vec<AtomicBool>> = Arc::new(urls.iter().map(|_| AtomicBool::new(true)).collect());
    // When each webhook was acknowledged (200).
    let acks: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; total as usize]));
    let client = reqwest::Client::new();
    let started = Instant::now();
    let kill_at = started + Duration::from_secs_f64(args.kill_after_secs);
    let mut killed = None;
    let mut victim_owned = HashSet::new();
    let mut lease_left_ms = f64::NAN;
    let mut sends = Vec::new();
    let period = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    for seq in 0..total {
        tokio::time::sleep_until((started + period * seq as u32).into()).await;
        if killed.is_none() && Instant::now() >= kill_at {
            // The victim's partitions and how long its lease has left, then the kill;
            // no webhook goes to it from here (a load balancer's health check).
            let (owned, _) = owned_partitions(&client, &urls[..1]).await?;
            victim_owned = owned[0].iter().copied().collect();
            lease_left_ms = lease_left(cluster, &db, &client, &urls[0]).await?;
            up[0].store(false, Ordering::Relaxed);
            hosts[0].child.kill()?;
            killed = Some(Instant::now());
        }
        let body = webhook_with(
            seq,
            1,
            0,
            Mids::Random,
            event_time(start_ms, seq, args.rate),
        );
        // The next host in turn that is up.
        let target = (0..urls.len())
            .map(|k| (seq as usize + k) % urls.len())
            .find(|&h| up[h].load(Ordering::Relaxed))
            .unwrap_or(0);
        let (client, url, acks) = (
            client.clone(),
            format!("{}/webhooks/messenger", urls[target]),
            Arc::clone(&acks),
        );
        sends.push(tokio::spawn(async move {
            let signature = sign(&body);
            let ok = client
                .post(url)
                .header("x-hub-signature-256", signature)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ok {
                acks.lock().unwrap_or_else(|p| p.into_inner())[seq as usize] = Some(Instant::now());
            }
        }));
    }
    for send in sends {
        send.await?;
    }
    let killed = killed.context("the load ended before the kill")?;
    let acks = acks.lock().unwrap_or_else(|p| p.into_inner()).clone();

    // Every accepted event's partition, by message id.
    let parts: HashMap<String, i64> = cluster
        .sql(&db, "SELECT event_id, part FROM dmflow_intake")?
        .lines()
        .filter_map(|line| {
            let (mid, part) = line.split_once(' ')?;
            Some((mid.to_owned(), part.parse().ok()?))
        })
        .collect();
    let victims: Vec<u64> = (0..total)
        .filter(|&seq| {
            parts
                .get(&Mids::Random.mid(seq, 0, 0))
                .is_some_and(|part| victim_owned.contains(part))
        })
        .collect();
    // Wait for the replies of every acknowledged event (those whose send was in flight
    // at the kill never come: their outcome is unknown and they are not sent again).
    let deadline =
        Instant::now() + Duration::from_millis(2 * args.lease_ms) + Duration::from_secs(10);
    let answered = |seq: u64| {
        replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first
            .contains_key(&sender(seq))
    };
    while Instant::now() < deadline
        && !(0..total).all(|seq| acks[seq as usize].is_none() || answered(seq))
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let replies = replies.lock().unwrap_or_else(|p| p.into_inner());
    let reply_of = |seq: u64| replies.first.get(&sender(seq)).copied();
    let from_kill = |at: Instant| at.saturating_duration_since(killed).as_secs_f64() * 1000.0;
    let waiting_at_kill: Vec<u64> = victims
        .iter()
        .copied()
        .filter(|&seq| acks[seq as usize].is_some_and(|a| a < killed))
        .filter(|&seq| reply_of(seq).is_none_or(|r| r >= killed))
        .collect();
    let after: Vec<u64> = victims
        .iter()
        .copied()
        .filter(|&seq| acks[seq as usize].is_some_and(|a| a >= killed))
        .collect();
    let latest = |seqs: &[u64]| -> Option<f64> {
        seqs.iter()
            .map(|&seq| reply_of(seq).map(from_kill))
            .collect::<Option<Vec<f64>>>()
            .map(|all| all.into_iter().fold(0.0, f64::max))
    };
    let both: Vec<u64> = waiting_at_kill.iter().chain(&after).copied().collect();
    let victim_set: HashSet<u64> = victims.iter().copied().collect();
    let others_max_wait = (0..total)
        .filter(|seq| !victim_set.contains(seq))
        .filter_map(|seq| {
            let ack = acks[seq as usize]?;
            let reply = reply_of(seq)?;
            Some(reply.saturating_duration_since(ack).as_secs_f64() * 1000.0)
        })
        .fold(0.0, f64::max);
    let trial = Trial {
        owned: victim_owned.len(),
        lease_left_ms,
        pending_at_kill: waiting_at_kill.len(),
        accepted_after_kill: after.len(),
        first_reply: both
            .iter()
            .filter_map(|&seq| reply_of(seq))
            .filter(|&r| r >= killed)
            .map(from_kill)
            .reduce(f64::min),
        pending_answered: latest(&waiting_at_kill),
        all_answered: latest(&both),
        unanswered: both.iter().filter(|&&seq| reply_of(seq).is_none()).count(),
        duplicates: replies.total - replies.first.len() as u64,
        others_max_wait,
    };
    drop(hosts);
    Ok(trial)
}

/// How long, in ms, the lease of the host at `url` has left by the database's clock.
async fn lease_left(
    cluster: &Postgres,
    db: &str,
    client: &reqwest::Client,
    url: &str,
) -> anyhow::Result<f64> {
    let health: serde_json::Value = client
        .get(format!("{url}/healthz"))
        .send()
        .await?
        .json()
        .await?;
    let name = health["queue"]["host"]
        .as_str()
        .context("no host name in /healthz")?;
    let left = cluster.sql(
        db,
        &format!(
            "SELECT EXTRACT(EPOCH FROM min(lease_until) - now()) * 1000 FROM dmflow_lease WHERE owner = '{name}'"
        ),
    )?;
    Ok(left.trim().parse()?)
}
