//! Shared by the benchmarks: signed webhook bodies, a counting fake Graph API, hosts
//! on one queue, a throw-away PostgreSQL cluster.

pub mod pg;
pub mod proc;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{bail, Context};
use axum::{http::StatusCode, routing::post, Json, Router};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The app secret the benchmark hosts are configured with.
pub const APP_SECRET: &str = "bench-app-secret";
/// The benchmark Pages.
pub const PAGES: [&str; 2] = ["100000000000001", "100000000000002"];

/// `sha256=<hex>` of `body`.
pub fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(APP_SECRET.as_bytes()).expect("any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// How the benchmark bodies' message ids look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mids {
    /// Random-looking, as Messenger's are today (`m_1fTq8oLumEyIp3Q2MR-aY7I…`): every
    /// new id lands on a random page of the store's id index.
    Random,
    /// `m_<seq>_…`, in order: new ids land at the end of the index (cheaper for the
    /// store, and unlike Messenger's; kept to compare with older measurements).
    Sequential,
}

impl Mids {
    /// The id of message `i` of Page `p` in webhook `seq`: unique for each triple.
    pub fn mid(self, seq: u64, p: usize, i: usize) -> String {
        match self {
            // splitmix64 is a bijection: distinct `seq`s give distinct ids.
            Mids::Random => format!(
                "m_{:016x}{:016x}_{p}_{i}",
                splitmix64(seq),
                splitmix64(!seq)
            ),
            Mids::Sequential => format!("m_{seq}_{p}_{i}"),
        }
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A webhook body with `items` text messages spread over the Pages, each with a unique
/// random-looking `mid` from `seq`, padded with `padding` bytes of escaped text per
/// message.
pub fn webhook(seq: u64, items: usize, padding: usize) -> Vec<u8> {
    webhook_with(seq, items, padding, Mids::Random, 1_700_000_000_000 + seq)
}

/// When the events of webhook `seq` happened, in a stream of `per_second` webhooks
/// from `start_ms` (Unix milliseconds): on time, less up to 2 s, as events reach a
/// webhook somewhat late and out of order.
pub fn event_time(start_ms: u64, seq: u64, per_second: u64) -> u64 {
    (start_ms + seq * 1000 / per_second.max(1)).saturating_sub(splitmix64(seq) % 2000)
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// [`webhook`] with the message ids shaped by `mids`, the events timed `at_ms`.
pub fn webhook_with(seq: u64, items: usize, padding: usize, mids: Mids, at_ms: u64) -> Vec<u8> {
    let pad = "\\u00e4".repeat(padding / 6);
    let entries: Vec<_> = PAGES
        .iter()
        .enumerate()
        .filter(|(p, _)| items > 1 || *p == 0)
        .map(|(p, page)| {
            let count = if items > 1 { items / PAGES.len() + usize::from(p < items % PAGES.len()) } else { 1 };
            let messaging: Vec<_> = (0..count)
                .map(|i| {
                    format!(
                        r#"{{"sender":{{"id":"{}"}},"recipient":{{"id":"{page}"}},"timestamp":{at_ms},"message":{{"mid":"{}","text":"hello {seq}{pad}"}}}}"#,
                        7_000_000_000_000_000u64 + seq % 100_000,
                        mids.mid(seq, p, i)
                    )
                })
                .collect();
            format!(r#"{{"id":"{page}","time":1700000000000,"messaging":[{}]}}"#, messaging.join(","))
        })
        .collect();
    format!(r#"{{"object":"page","entry":[{}]}}"#, entries.join(",")).into_bytes()
}

/// A webhook with one read receipt (`seq` as its watermark): an event the example bot
/// does not answer, for measuring the intake path alone.
pub fn read_receipt(seq: u64) -> Vec<u8> {
    format!(
        r#"{{"object":"page","entry":[{{"id":"{page}","time":1700000000000,"messaging":[{{"sender":{{"id":"{}"}},"recipient":{{"id":"{page}"}},"timestamp":{},"read":{{"watermark":{seq}}}}}]}}]}}"#,
        7_000_000_000_000_000u64 + seq % 100_000,
        1_700_000_000_000u64 + seq,
        page = PAGES[0]
    )
    .into_bytes()
}

/// A fake Graph API that only counts Send API calls, answering after `latency`, and
/// failing `fault_per_mille` of them: half with a transient 1200 (retried), half with a
/// permanent 551. Batch requests (`POST /v25.0/` with a `batch` list) count and fail
/// call by call, as the Graph API answers them.
pub struct CountingGraph {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    calls: AtomicU64,
    delivered: AtomicU64,
    faults: AtomicU64,
    requests: AtomicU64,
}

impl Counts {
    /// The next call's answer: (HTTP status, body).
    fn answer(&self, fault_per_mille: u64) -> (StatusCode, serde_json::Value) {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        if fault_per_mille > 0 && n % 1000 < fault_per_mille {
            let code = if n.is_multiple_of(2) { 1200 } else { 551 };
            self.faults.fetch_add(1, Ordering::Relaxed);
            let error = serde_json::json!({ "error": { "code": code, "message": "injected", "fbtrace_id": "soak" } });
            return (StatusCode::BAD_REQUEST, error);
        }
        self.delivered.fetch_add(1, Ordering::Relaxed);
        (
            StatusCode::OK,
            serde_json::json!({ "recipient_id": "1", "message_id": "m" }),
        )
    }
}

impl CountingGraph {
    /// Starts on a free loopback port on the current runtime, without faults.
    pub async fn start(latency: Duration) -> anyhow::Result<Self> {
        Self::with_faults(latency, 0).await
    }

    /// Starts on a thread of its own with its own runtime, without faults. A load
    /// generator's client then never waits behind the fake Graph API's work (a
    /// 50-call batch to parse and answer), so its latencies are the host's alone.
    pub fn start_on_own_thread(latency: Duration) -> anyhow::Result<Self> {
        let (started_tx, started) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("fake-graph".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let runtime = match runtime {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = started_tx.send(Err(err.into()));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let graph = Self::with_faults(latency, 0).await;
                    let serving = graph.is_ok();
                    let _ = started_tx.send(graph);
                    if serving {
                        // Serve until the process exits.
                        std::future::pending::<()>().await;
                    }
                });
            })?;
        started.recv()?
    }

    /// Starts with `fault_per_mille` failed answers.
    pub async fn with_faults(latency: Duration, fault_per_mille: u64) -> anyhow::Result<Self> {
        let counts = Arc::new(Counts::default());
        let wait = move || async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
        };
        let (single, batch) = (Arc::clone(&counts), Arc::clone(&counts));
        let app = Router::new()
            .route(
                "/{version}/me/messages",
                post(move || {
                    let counts = Arc::clone(&single);
                    async move {
                        wait().await;
                        counts.requests.fetch_add(1, Ordering::Relaxed);
                        let (status, body) = counts.answer(fault_per_mille);
                        (status, Json(body))
                    }
                }),
            )
            .route(
                "/{version}/",
                post(move |Json(request): Json<serde_json::Value>| {
                    let counts = Arc::clone(&batch);
                    async move {
                        wait().await;
                        counts.requests.fetch_add(1, Ordering::Relaxed);
                        let items = request["batch"].as_array().map_or(0, Vec::len);
                        let answers: Vec<_> = (0..items)
                            .map(|_| {
                                let (status, body) = counts.answer(fault_per_mille);
                                serde_json::json!({ "code": status.as_u16(), "body": body.to_string() })
                            })
                            .collect();
                        Json(answers)
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        Ok(Self { url, counts })
    }

    /// Successful Send API calls so far.
    pub fn count(&self) -> u64 {
        self.counts.delivered.load(Ordering::Relaxed)
    }

    /// Failed (injected) answers so far.
    pub fn faults(&self) -> u64 {
        self.counts.faults.load(Ordering::Relaxed)
    }

    /// HTTP requests so far (a batch request is one).
    pub fn requests(&self) -> u64 {
        self.counts.requests.load(Ordering::Relaxed)
    }
}

/// A running `host-example` with the Messenger plugin, killed when dropped.
pub struct Host {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The process.
    pub child: Child,
    _dir: tempfile::TempDir,
}

impl Host {
    /// Its config file.
    pub fn config(&self) -> PathBuf {
        self._dir.path().join("host.toml")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `host-example` from `bin_dir` (with `libmessenger_adapter.so` beside it),
/// pinned to `cpu` when given, talking to `graph`. `server` and `settings` are extra
/// lines for `[server]` and the channel's settings; `queue` is the `[queue]` section's
/// lines (its `path` at least).
pub fn start_host(
    bin_dir: &Path,
    cpu: Option<usize>,
    graph: &str,
    server: &str,
    queue: &str,
    settings: &str,
) -> anyhow::Result<Host> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("plugins"))?;
    let plugin = format!(
        "{}messenger_adapter{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    std::fs::copy(
        bin_dir.join(&plugin),
        dir.path().join("plugins").join(&plugin),
    )
    .with_context(|| format!("{plugin} not found: build it with --release"))?;
    let pages: Vec<_> = PAGES
        .iter()
        .map(|p| format!("{{ id = \"{p}\", access_token = \"token-{p}\" }}"))
        .collect();
    std::fs::write(
        dir.path().join("host.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n\n[queue]\n{queue}\n\n\
             [[channels]]\nname = \"messenger\"\nplugin = \"messenger\"\n\n\
             [channels.settings]\napp_secret = \"{APP_SECRET}\"\nverify_token = \"v\"\ngraph_api_base = \"{graph}\"\n\
             send_rate_per_second = 0\nmedia_rate_per_second = 0\n{settings}\npages = [{}]\n",
            pages.join(", ")
        ),
    )?;
    let host_bin = bin_dir.join(format!("host-example{}", std::env::consts::EXE_SUFFIX));
    let mut command = match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string()]).arg(&host_bin);
            c
        }
        None => Command::new(&host_bin),
    };
    let mut child = command
        .args(["serve", "--config"])
        .arg(dir.path().join("host.toml"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
    let Some(url) = line.trim().strip_prefix("listening on ") else {
        bail!("the host did not start: {line}");
    };
    Ok(Host {
        url: url.to_owned(),
        child,
        _dir: dir,
    })
}

/// The `[queue]` lines of a host on the shared queue at `url`, with a lease of
/// `lease_ms` when given (else the host's default, 10 s).
pub fn shared_queue(url: &str, lease_ms: Option<u64>) -> String {
    match lease_ms {
        Some(ms) => format!("url = \"{url}\"\nlease_ms = {ms}"),
        None => format!("url = \"{url}\""),
    }
}

/// The partitions each of the hosts at `urls` (on one shared queue) owns now, from
/// their `/healthz`, and how many there are in all.
pub async fn owned_partitions(
    client: &reqwest::Client,
    urls: &[String],
) -> anyhow::Result<(Vec<Vec<i64>>, u64)> {
    let mut owned = Vec::new();
    let mut partitions = 0;
    for url in urls {
        let health: serde_json::Value = client
            .get(format!("{url}/healthz"))
            .send()
            .await?
            .json()
            .await?;
        let queue = &health["queue"];
        partitions = queue["partitions"]
            .as_u64()
            .context("no shared queue in /healthz")?;
        owned.push(
            queue["lease_epochs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|pair| pair[0].as_i64())
                .collect(),
        );
    }
    Ok((owned, partitions))
}

/// Waits until the hosts at `urls` (on one shared queue) own every partition between
/// them, none more than its fair share: hosts that joined one after another take a
/// few lease rounds (a quarter of the lease each) to get there. The partitions each
/// owns then.
pub async fn wait_balanced(urls: &[String], timeout: Duration) -> anyhow::Result<Vec<Vec<i64>>> {
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let (owned, partitions) = owned_partitions(&client, urls).await?;
        let fair = partitions.div_ceil(urls.len().max(1) as u64);
        let total: u64 = owned.iter().map(|o| o.len() as u64).sum();
        if total == partitions && owned.iter().all(|o| o.len() as u64 <= fair) {
            return Ok(owned);
        }
        if std::time::Instant::now() > deadline {
            let counts: Vec<_> = owned.iter().map(Vec::len).collect();
            bail!("the hosts did not share the {partitions} partitions in {timeout:?}: {counts:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The folder holding `host-example` and the plugin: `given`, or this program's own.
pub fn bin_dir(given: Option<&Path>) -> anyhow::Result<std::path::PathBuf> {
    match given {
        Some(dir) => Ok(dir.to_path_buf()),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("no exe folder")?
            .to_path_buf()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mids_are_unique_and_random_ones_are_out_of_order() {
        let random: Vec<_> = (0..10_000).map(|seq| Mids::Random.mid(seq, 0, 0)).collect();
        let unique: std::collections::HashSet<_> = random.iter().collect();
        assert_eq!(unique.len(), random.len());
        let in_order = random.windows(2).filter(|w| w[0] < w[1]).count();
        assert!(
            (4_000..6_000).contains(&in_order),
            "{in_order} of 9,999 neighbours in order: not random-looking"
        );
        assert_eq!(Mids::Sequential.mid(7, 1, 2), "m_7_1_2");
        let body = String::from_utf8(webhook(5, 1, 0)).unwrap();
        assert!(body.contains(&Mids::Random.mid(5, 0, 0)), "{body}");
    }

    #[test]
    fn event_times_follow_the_stream_at_most_two_seconds_late() {
        let start = 1_800_000_000_000;
        let times: Vec<_> = (0..20_000)
            .map(|seq| event_time(start, seq, 1000))
            .collect();
        for (seq, &at) in times.iter().enumerate() {
            let due = start + seq as u64;
            assert!(at <= due && due - at < 2000, "{seq}: {at}");
        }
        let late = times
            .iter()
            .enumerate()
            .filter(|&(seq, &at)| at + 1000 < start + seq as u64)
            .count();
        assert!(
            (8_000..12_000).contains(&late),
            "{late} of 20,000 over 1 s late"
        );
        let body = String::from_utf8(webhook_with(1, 1, 0, Mids::Random, times[7])).unwrap();
        assert!(
            body.contains(&format!("\"timestamp\":{}", times[7])),
            "{body}"
        );
    }
}
