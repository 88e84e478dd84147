//! Run with `taskset -c 1 ./target/release/loadgen` (after `cargo build --release -p bench
//! -p messenger-adapter -p host-example`): drives the real host, pinned to another core,
//! with signed webhooks and prints throughput, acknowledgement latency, replies at a
//! fake Graph API, CPU and memory.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bench::{
    event_time, now_ms, pg::Postgres, proc, read_receipt, shared_queue, sign, start_host,
    wait_balanced, webhook_with, CountingGraph, Mids,
};
use clap::Parser;

/// Load harness for host-example.
#[derive(Parser)]
struct Args {
    /// Concurrency levels (requests in flight).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Seconds of load per level.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Latency of the fake Graph API, in milliseconds.
    #[arg(long, default_value_t = 0)]
    graph_latency_ms: u64,
    /// CPU the host is pinned to (`taskset -c`); none when absent.
    #[arg(long)]
    host_cpu: Option<usize>,
    /// Keep the event queue in memory instead of SQLite.
    #[arg(long)]
    memory_queue: bool,
    /// Keep the event queue in PostgreSQL instead of SQLite (the shared queue,
    /// `[queue] url`): a throw-away cluster on this machine, `fsync` on, a new
    /// database for each level.
    #[arg(long, conflicts_with_all = ["memory_queue", "queue_from"])]
    postgres: bool,
    /// Hosts on the one PostgreSQL queue (with --postgres); the webhooks go to them in
    /// turn. All are pinned to --host-cpu when it is given.
    #[arg(long, default_value_t = 1, requires = "postgres")]
    hosts: usize,
    /// CPU the PostgreSQL server is pinned to (with --postgres); none when absent.
    #[arg(long, requires = "postgres")]
    db_cpu: Option<usize>,
    /// Send read receipts, which the bot does not answer: measures the intake path
    /// (HTTP, signature, parse, durable queue) without the replies.
    #[arg(long)]
    no_replies: bool,
    /// Offer this many webhooks per second in all (open loop), instead of sending the
    /// next one as soon as an answer comes (closed loop, the host's top speed). Each
    /// connection keeps its own schedule; a webhook that waits for its connection
    /// because the answer before it came late is timed from when it was due, so the
    /// host's stalls are counted in full (no coordinated omission).
    #[arg(long)]
    rate: Option<u64>,
    /// Message ids in order (`m_<seq>_…`) instead of random-looking ones: cheaper for
    /// the store's id index, and unlike Messenger's.
    #[arg(long)]
    sequential_mids: bool,
    /// Give every event the same time instead of about when it is sent: the store then
    /// finds no order in its keys but the ids'.
    #[arg(long)]
    one_event_time: bool,
    /// The host's `[queue] remember_secs` (default a day): with a few seconds, the
    /// host's once-a-minute prune forgets most of what the run accepted.
    #[arg(long)]
    remember_secs: Option<u64>,
    /// Copy this store file (one an older host wrote, say) to be the host's queue,
    /// instead of starting with none.
    #[arg(long)]
    queue_from: Option<PathBuf>,
    /// Also print more acknowledgement percentiles (p75 to max) under each row.
    #[arg(long)]
    detail: bool,
    /// Also write every acknowledgement to this file, one line each: when it was sent
    /// (microseconds from the level's start) and how long it took (microseconds). Shows
    /// whether slow answers come alone or in stalls. With several levels, the last one.
    #[arg(long)]
    latency_log: Option<PathBuf>,
    /// Every this many milliseconds during the load, rotate the Page tokens in each
    /// host's config and send it SIGHUP: each reload replaces the channel's adapter
    /// while webhooks and replies are under way.
    #[arg(long)]
    reload_every_ms: Option<u64>,
    /// Folder holding host-example and libmessenger_adapter.so. Default: this program's.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = bench::bin_dir(args.bin_dir.as_deref())?;
    let cluster = if args.postgres {
        Some(Postgres::start(args.db_cpu)?)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    println!(
        "# {}, {}, {} mids, events {}, graph latency {} ms, queue {}, host cpu {:?}, {} s per level",
        args.rate
            .map_or("closed loop".to_owned(), |r| format!("open loop at {r}/s")),
        if args.no_replies {
            "read receipts (no replies)"
        } else {
            "text messages (one reply each)"
        },
        if args.sequential_mids {
            "sequential"
        } else {
            "random"
        },
        if args.one_event_time {
            "all at one time"
        } else {
            "timed as sent"
        },
        args.graph_latency_ms,
        if args.memory_queue {
            "memory".to_owned()
        } else if args.postgres {
            format!(
                "postgres ({} host(s), database cpu {:?})",
                args.hosts, args.db_cpu
            )
        } else {
            "sqlite".to_owned()
        },
        args.host_cpu,
        args.seconds
    );
    println!("| concurrency | webhooks/s | ack p50 ms | ack p99 ms | replies/s | non-200 | host CPU % | RSS idle MiB | RSS peak MiB |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &concurrency in &args.concurrency {
        runtime.block_on(level(&args, &bin_dir, concurrency, cluster.as_ref()))?;
    }
    Ok(())
}

/// The window of `--detail`'s p99 over time: shows a tail that grows with the run.
const WINDOW: Duration = Duration::from_secs(10);

/// The p99 of each whole `window` of a run of `run_for`, from (sent at µs, latency
/// µs) pairs; `None` for a run shorter than two windows.
fn p99_by_window(timeline: &[(u64, u32)], run_for: Duration, window: Duration) -> Option<String> {
    let width = window.as_micros() as u64;
    let count = (run_for.as_micros() / window.as_micros()) as usize;
    if count < 2 {
        return None;
    }
    let mut windows = vec![Vec::new(); count];
    for &(at, latency) in timeline {
        // A partial window at the end is left out.
        if let Some(w) = windows.get_mut((at / width) as usize) {
            w.push(latency);
        }
    }
    let p99s: Vec<String> = windows
        .into_iter()
        .map(|mut w| {
            w.sort_unstable();
            let p99 = w.get(w.len() * 99 / 100).copied().unwrap_or(0);
            format!("{:.2}", f64::from(p99) / 1000.0)
        })
        .collect();
    Some(p99s.join(" · "))
}

async fn level(
    args: &Args,
    bin_dir: &std::path::Path,
    concurrency: usize,
    cluster: Option<&Postgres>,
) -> anyhow::Result<()> {
    let graph = CountingGraph::start_on_own_thread(Duration::from_millis(args.graph_latency_ms))?;
    // Declared before the host, so dropped after it.
    let copy_dir = tempfile::tempdir()?;
    let mut queue = match (&args.queue_from, cluster) {
        (_, Some(cluster)) => {
            let url = cluster.database(&format!("bench_c{concurrency}_{}", now_ms()))?;
            shared_queue(&url, None)
        }
        (Some(from), None) => {
            let copy = copy_dir.path().join("queue.sqlite3");
            std::fs::copy(from, &copy)?;
            format!("path = \"{}\"", copy.display())
        }
        (None, None) if args.memory_queue => "path = \":memory:\"".to_owned(),
        (None, None) => "path = \"queue.sqlite3\"".to_owned(),
    };
    if let Some(secs) = args.remember_secs {
        queue += &format!("\nremember_secs = {secs}");
    }
    let hosts = (0..args.hosts)
        .map(|_| {
            start_host(
                bin_dir,
                args.host_cpu,
                &graph.url,
                "queue_capacity = 1000000\nworkers = 1024",
                &queue,
                "",
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let host_urls: Vec<String> = hosts.iter().map(|h| h.url.clone()).collect();
    if cluster.is_some() {
        wait_balanced(&host_urls, Duration::from_secs(60)).await?;
    }
    let pids: Vec<u32> = hosts.iter().map(|h| h.child.id()).collect();
    // Of each host, in MiB.
    let rss = |key: &str| -> Vec<f64> {
        pids.iter()
            .map(|&pid| proc::field(pid, "status", key) as f64 / 1024.0)
            .collect()
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = rss("VmRSS:");

    // Bodies are made and signed before the clock starts, so the load generator
    // spends its core on sending: enough for 40,000 webhooks/s, or the offered rate.
    // Shared buffers and a parsed URL: each request costs this core a reference count,
    // not a copy and a parse.
    let per_second = args.rate.map_or(40_000, |rate| rate + rate / 10 + 100);
    let start_ms = now_ms();
    let bodies: Arc<Vec<(bytes::Bytes, reqwest::header::HeaderValue)>> = Arc::new(
        (0..args.seconds.max(1) * per_second)
            .map(|seq| {
                let body = if args.no_replies {
                    read_receipt(seq)
                } else {
                    webhook_with(
                        seq,
                        1,
                        0,
                        if args.sequential_mids {
                            Mids::Sequential
                        } else {
                            Mids::Random
                        },
                        if args.one_event_time {
                            1_700_000_000_000
                        } else {
                            event_time(start_ms, seq, args.rate.unwrap_or(per_second))
                        },
                    )
                };
                let signature = reqwest::header::HeaderValue::from_str(&sign(&body))
                    .expect("hex is a valid header value");
                (bytes::Bytes::from(body), signature)
            })
            .collect(),
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    // The hosts in turn, one webhook each.
    let urls: Arc<Vec<reqwest::Url>> = Arc::new(
        host_urls
            .iter()
            .map(|host| reqwest::Url::parse(&format!("{host}/webhooks/messenger")))
            .collect::<Result<_, _>>()?,
    );
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let run_for = Duration::from_secs(args.seconds);
    // When each webhook was sent, for the log and the p99 by window.
    let log = args.latency_log.is_some() || args.detail;
    let host_ticks = proc::ticks_now(&pids);
    let db_ticks = cluster.map(|c| proc::ticks_now(&c.pids()));
    let started = Instant::now();
    let reloading = args
        .reload_every_ms
        .map(|every| reload_during(&hosts, Duration::from_millis(every), run_for));
    // Open loop: connection `c` sends at `started + (c + k * concurrency) / rate`.
    let period = args
        .rate
        .map(|rate| Duration::from_secs_f64(concurrency as f64 / rate.max(1) as f64));
    let mut tasks = Vec::new();
    for connection in 0..concurrency {
        let (client, urls, bodies, next, failures) = (
            client.clone(),
            Arc::clone(&urls),
            Arc::clone(&bodies),
            Arc::clone(&next),
            Arc::clone(&failures),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            let mut sent_at = Vec::with_capacity(if log { 100_000 } else { 0 });
            let mut due =
                started + period.unwrap_or_default() * connection as u32 / concurrency as u32;
            let mut previous_done = started;
            while started.elapsed() < run_for {
                if period.is_some() && Instant::now() < due {
                    tokio::time::sleep_until(due.into()).await;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((body, signature)) = bodies.get(i) else {
                    break;
                };
                // Timed from when it was due if the connection was still busy then (the
                // host's delay), else from now (a timer's lateness is the client's).
                let sent = match period {
                    Some(_) if previous_done > due => due,
                    _ => Instant::now(),
                };
                due += period.unwrap_or_default();
                let ok = client
                    .post(urls[i % urls.len()].clone())
                    .header("x-hub-signature-256", signature.clone())
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                previous_done = Instant::now();
                latencies.push((previous_done - sent).as_micros() as u32);
                if log {
                    sent_at.push((sent - started).as_micros() as u64);
                }
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            (latencies, sent_at)
        }));
    }
    let mut latencies = Vec::new();
    let mut timeline: Vec<(u64, u32)> = Vec::new();
    for task in tasks {
        let (task_latencies, sent_at) = task.await?;
        timeline.extend(sent_at.iter().copied().zip(task_latencies.iter().copied()));
        latencies.extend(task_latencies);
    }
    if let Some(path) = &args.latency_log {
        let lines: String = timeline
            .iter()
            .map(|(at, latency)| format!("{at} {latency}\n"))
            .collect();
        std::fs::write(path, lines)?;
    }
    let elapsed = started.elapsed();
    if elapsed < run_for {
        println!(
            "(!) the {} prepared bodies ran out after {:.1} s",
            bodies.len(),
            elapsed.as_secs_f64()
        );
    }
    if let Some(reloading) = reloading {
        let reloads = reloading.join().expect("the reloading thread panicked")?;
        let mut generations = Vec::new();
        for url in &host_urls {
            let metrics = client
                .get(format!("{url}/metrics"))
                .send()
                .await?
                .text()
                .await?;
            let generation = metrics
                .lines()
                .find_map(|l| l.strip_prefix("dmflow_config_generation "))
                .unwrap_or("?")
                .to_owned();
            generations.push(generation);
        }
        println!(
            "|   | {reloads} reloads asked during the load, each replacing the adapter; config generation now {} |",
            generations.join(" / ")
        );
    }
    let sent = latencies.len() as u64;
    let accepted = sent - failures.load(Ordering::Relaxed);
    // Replies still in flight at the end count, until every accepted webhook is answered.
    let deadline = Instant::now() + Duration::from_secs(60);
    let expected = if args.no_replies { 0 } else { accepted };
    while graph.count() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let replies_elapsed = started.elapsed();
    // Percent of one core over the run, from clock ticks (100 a second).
    let percent = |ticks: u64| ticks as f64 / replies_elapsed.as_secs_f64();
    let cpu = percent(proc::ticks_since(&host_ticks, &pids));
    let db_cpu = cluster
        .zip(db_ticks)
        .map(|(c, before)| percent(proc::ticks_since(&before, &c.pids())));
    let rss_peak = rss("VmHWM:");
    let io = |key: &str| -> u64 { pids.iter().map(|&pid| proc::field(pid, "io", key)).sum() };
    let (wchar, written) = (io("wchar:"), io("write_bytes:"));
    let largest = |mib: &[f64]| mib.iter().copied().fold(0.0, f64::max);
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "| {concurrency} | {:.0} | {:.2} | {:.2} | {:.0} | {} | {cpu:.0} | {:.1} | {:.1} |",
        sent as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        graph.count() as f64 / replies_elapsed.as_secs_f64(),
        sent - accepted,
        largest(&rss_idle),
        largest(&rss_peak),
    );
    if let Some(db_cpu) = db_cpu {
        let list = |mib: &[f64]| {
            mib.iter()
                .map(|m| format!("{m:.1}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        println!(
            "|   | {} host(s) on PostgreSQL (host CPU summed, RSS of the largest): database CPU {db_cpu:.0} %; RSS idle {} · peak {} MiB |",
            hosts.len(),
            list(&rss_idle),
            list(&rss_peak)
        );
    }
    if args.detail {
        println!("|   | host wrote {:.1} KiB per webhook through write(), {:.1} KiB per webhook to storage; {} Graph requests for {} replies |", wchar as f64 / 1024.0 / sent.max(1) as f64, written as f64 / 1024.0 / sent.max(1) as f64, graph.requests(), graph.count());
        println!(
            "|   | ack p75 {:.2} · p90 {:.2} · p95 {:.2} · p98 {:.2} · p99.9 {:.2} · max {:.2} ms |",
            pct(0.75),
            pct(0.90),
            pct(0.95),
            pct(0.98),
            pct(0.999),
            pct(1.0)
        );
        if let Some(windows) = p99_by_window(&timeline, run_for, WINDOW) {
            println!(
                "|   | ack p99 by {} s window: {windows} ms |",
                WINDOW.as_secs()
            );
        }
    }
    if args.detail {
        tokio::time::sleep(Duration::from_secs(4)).await;
        println!(
            "|   | RSS 4 s after the load: {:.1} MiB |",
            largest(&rss("VmRSS:"))
        );
    }
    if graph.count() != expected {
        println!(
            "(!) {} replies expected, {} received",
            expected,
            graph.count()
        );
    }
    Ok(())
}

/// Rotates the Page tokens in each host's config and sends it SIGHUP every `every`,
/// for `run_for`; returns how many reloads it asked each host for.
fn reload_during(
    hosts: &[bench::Host],
    every: Duration,
    run_for: Duration,
) -> std::thread::JoinHandle<anyhow::Result<u64>> {
    let hosts: Vec<(PathBuf, u32)> = hosts.iter().map(|h| (h.config(), h.child.id())).collect();
    std::thread::spawn(move || {
        let end = Instant::now() + run_for;
        let mut reloads = 0;
        while Instant::now() + every < end {
            std::thread::sleep(every);
            reloads += 1;
            for (config, pid) in &hosts {
                let text = std::fs::read_to_string(config)?;
                let rotated = if reloads % 2 == 1 {
                    text.replace("\"token-", "\"rotated-token-")
                } else {
                    text.replace("\"rotated-token-", "\"token-")
                };
                std::fs::write(config, rotated)?;
                let status = std::process::Command::new("kill")
                    .args(["-HUP", &pid.to_string()])
                    .status()?;
                anyhow::ensure!(status.success(), "kill -HUP {pid} failed");
            }
        }
        Ok(reloads)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_by_window_takes_each_whole_window_on_its_own() {
        // 25 s: two whole 10 s windows, then a partial one that is left out.
        let timeline: Vec<(u64, u32)> = (0..25_000u64)
            .map(|ms| {
                let latency = match ms / 10_000 {
                    0 => 1_000,
                    1 => 5_000,
                    _ => 99_000,
                };
                (ms * 1_000, latency)
            })
            .collect();
        let run_for = Duration::from_secs(25);
        assert_eq!(
            p99_by_window(&timeline, run_for, WINDOW).as_deref(),
            Some("1.00 · 5.00")
        );
        assert_eq!(
            p99_by_window(&timeline, Duration::from_secs(8), WINDOW),
            None
        );
    }
}
