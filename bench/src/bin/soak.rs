//! Run with `taskset -c 1 ./target/release/soak --host-cpu 0` (after `cargo build
//! --release -p bench -p messenger-adapter -p host-example`): a steady rate of signed
//! webhooks for ten minutes against a fake Graph API that fails 1 % of Send API calls
//! (half transient, half permanent). Checks that every accepted webhook was answered or
//! recorded as failed for good, and prints the host's memory over time.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use bench::{now_ms, sign, start_host, webhook_with, CountingGraph, Mids};
use clap::Parser;

/// Soak test for host-example.
#[derive(Parser)]
struct Args {
    /// Webhooks per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Minutes of load.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Failed Send API answers, per mille.
    #[arg(long, default_value_t = 10)]
    fault_per_mille: u64,
    /// CPU the host is pinned to.
    #[arg(long)]
    host_cpu: Option<usize>,
    /// Folder holding host-example and libmessenger_adapter.so. Default: this program's.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn sample(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = bench::bin_dir(args.bin_dir.as_deref())?;
    let graph = CountingGraph::with_faults(Duration::ZERO, args.fault_per_mille).await?;
    let mut host = start_host(
        &bin_dir,
        args.host_cpu,
        &graph.url,
        "",
        "path = \"queue.sqlite3\"",
        "backoff_base_ms = 50",
    )?;
    let base = host.url.clone();
    let pid = host.child.id();
    let url = format!("{base}/webhooks/messenger");
    let client = reqwest::Client::new();
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let run_for = Duration::from_secs(args.minutes * 60);
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / args.rate.max(1)));
    let mut next_report = Duration::ZERO;
    println!("| minute | sent | accepted | refused | replies ok | injected faults | RSS MiB |");
    println!("|---|---|---|---|---|---|---|");
    let mut seq = 0u64;
    while started.elapsed() < run_for {
        tick.tick().await;
        let body = webhook_with(seq, 1, 0, Mids::Random, now_ms());
        seq += 1;
        let signature = sign(&body);
        let (client, url, ok_count, refused_count) = (
            client.clone(),
            url.clone(),
            Arc::clone(&accepted),
            Arc::clone(&refused),
        );
        tokio::spawn(async move {
            let ok = client
                .post(&url)
                .header("x-hub-signature-256", signature)
                .body(body)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ok { &ok_count } else { &refused_count }.fetch_add(1, Ordering::Relaxed);
        });
        if started.elapsed() >= next_report {
            println!(
                "| {:.1} | {seq} | {} | {} | {} | {} | {:.1} |",
                started.elapsed().as_secs_f64() / 60.0,
                accepted.load(Ordering::Relaxed),
                refused.load(Ordering::Relaxed),
                graph.count(),
                graph.faults(),
                rss_mib(pid)
            );
            next_report += Duration::from_secs(30);
        }
    }
    // Let the last replies, and their retries, finish.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let ok = sample(
        &metrics,
        "dmflow_sends_total{channel=\"messenger\",outcome=\"ok\"}",
    );
    let permanent = sample(
        &metrics,
        "dmflow_sends_total{channel=\"messenger\",outcome=\"permanent\"}",
    );
    let retries = sample(&metrics, "dmflow_send_retries_total{channel=\"messenger\"}");
    let depth = sample(&metrics, "dmflow_queue_depth");
    let accepted = accepted.load(Ordering::Relaxed);
    println!(
        "\nsent {seq}, accepted {accepted}, refused {}, answered {ok}, failed for good {permanent}, \
         retries {retries}, still queued {depth}, replies received by the fake Graph API {}, RSS {:.1} MiB",
        refused.load(Ordering::Relaxed),
        graph.count(),
        rss_mib(pid)
    );
    let _ = host.child.kill();
    if ok + permanent != accepted || depth != 0 {
        bail!(
            "{} accepted webhooks were neither answered nor failed for good",
            accepted as i64 - (ok + permanent) as i64
        );
    }
    println!("every accepted webhook was answered or recorded as failed for good");
    Ok(())
}
