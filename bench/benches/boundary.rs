//! Run with `cargo bench -p bench`: verify + parse of webhook bodies through the loaded
//! `libmessenger_adapter.so` (across the ABI) and through the same code linked
//! statically, and the send path against a no-op local server. First, the same
//! comparison in alternating rounds, which a drifting machine cannot skew.

use std::{path::PathBuf, process::Command, time::Duration};

use adapter_api::{
    abi_stable::std_types::RSlice, load_plugin, Adapter, Header, OutboundMessage, Verdict,
    WebhookRequest,
};
use bench::{sign, webhook, CountingGraph, APP_SECRET, PAGES};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use messenger_adapter::{channel::MessengerChannel, Log};

fn settings(graph: &str) -> String {
    let pages: Vec<_> = PAGES
        .iter()
        .map(|p| format!(r#"{{"id":"{p}","access_token":"t"}}"#))
        .collect();
    format!(
        r#"{{"app_secret":"{APP_SECRET}","verify_token":"v","graph_api_base":"{graph}","send_rate_per_second":0,"pages":[{}]}}"#,
        pages.join(",")
    )
}

/// The release plugin library, built if needed.
fn plugin() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--release", "--quiet", "-p", "messenger-adapter"])
        .status()
        .unwrap();
    assert!(status.success());
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    target.join("release").join(format!(
        "{}messenger_adapter{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ))
}

fn request<'a>(body: &'a [u8], headers: &'a [Header<'a>]) -> WebhookRequest<'a> {
    WebhookRequest {
        method: "POST".into(),
        path: "/webhooks/messenger".into(),
        query: "".into(),
        headers: RSlice::from_slice(headers),
        body: RSlice::from_slice(body),
    }
}

/// The plugin through its loaded `.so`, sending to `graph`.
fn loaded(graph: &str) -> Adapter {
    let library = load_plugin(&plugin()).expect("the plugin loads");
    Adapter::new(library.new_adapter(&settings(graph), noop_host()).unwrap())
}

/// The same code linked into this binary.
fn linked() -> MessengerChannel {
    MessengerChannel::from_json(&settings("http://127.0.0.1:9"), Log::default()).unwrap()
}

/// The bodies compared, by name.
fn bodies() -> [(&'static str, Vec<u8>); 3] {
    [
        ("1 event", webhook(1, 1, 0)),
        ("10 events, 2 Pages", webhook(2, 10, 0)),
        ("500 KB", webhook(3, 1, 500_000)),
    ]
}

fn signature_header(signature: &str) -> [Header<'_>; 1] {
    [Header {
        name: "x-hub-signature-256".into(),
        value: signature.into(),
    }]
}

fn verify_parse(c: &mut Criterion) {
    let (loaded, linked) = (loaded("http://127.0.0.1:9"), linked());
    let mut group = c.benchmark_group("verify+parse");
    for (name, body) in &bodies() {
        let signature = sign(body);
        let headers = signature_header(&signature);
        let request = request(body, &headers);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("loaded .so", name),
            &request,
            |b, request| {
                b.iter(|| {
                    assert_eq!(loaded.verify(request), Verdict::Accept);
                    loaded.parse(request).unwrap()
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("linked statically", name),
            &request,
            |b, request| {
                b.iter(|| {
                    assert_eq!(linked.verify_request(request), Verdict::Accept);
                    linked.parse_request(request).unwrap()
                })
            },
        );
    }
    group.finish();
}

/// Seconds `call` takes `iterations` times.
fn time(iterations: u32, mut call: impl FnMut()) -> f64 {
    let started = std::time::Instant::now();
    for _ in 0..iterations {
        call();
    }
    started.elapsed().as_secs_f64()
}

/// Criterion times the loaded and the linked code one after the other, seconds apart;
/// on a shared machine its speed drifts by more than the 5 % looked for (the same
/// binary can differ by several percent between two runs). This times them in alternating
/// rounds, each round starting with the other side, and prints the median of the
/// per-round ratios: drift slower than a round cancels out.
fn interleaved(_: &mut Criterion) {
    const ROUNDS: usize = 41;
    let (loaded, linked) = (loaded("http://127.0.0.1:9"), linked());
    println!("verify+parse, loaded .so / linked statically, {ROUNDS} alternating rounds:");
    for ((name, body), iterations) in bodies().into_iter().zip([20_000, 2_500, 60]) {
        let signature = sign(&body);
        let headers = signature_header(&signature);
        let request = request(&body, &headers);
        let through_so = || {
            time(iterations, || {
                assert_eq!(loaded.verify(&request), Verdict::Accept);
                std::hint::black_box(loaded.parse(&request).unwrap());
            })
        };
        let in_binary = || {
            time(iterations, || {
                assert_eq!(linked.verify_request(&request), Verdict::Accept);
                std::hint::black_box(linked.parse_request(&request).unwrap());
            })
        };
        let (mut ratios, mut so_times) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let (so, st) = if round % 2 == 0 {
                let so = through_so();
                (so, in_binary())
            } else {
                let st = in_binary();
                (through_so(), st)
            };
            ratios.push(so / st);
            so_times.push(so);
        }
        ratios.sort_by(f64::total_cmp);
        so_times.sort_by(f64::total_cmp);
        let pct = |r: f64| (r - 1.0) * 100.0;
        println!(
            "  {name:<20} overhead median {:+.1} % (quartiles {:+.1} % .. {:+.1} %), median .so {:.2} µs/call",
            pct(ratios[ROUNDS / 2]),
            pct(ratios[ROUNDS / 4]),
            pct(ratios[ROUNDS * 3 / 4]),
            so_times[ROUNDS / 2] / f64::from(iterations) * 1e6,
        );
    }
}

fn send(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let graph = runtime
        .block_on(CountingGraph::start(Duration::ZERO))
        .unwrap();
    let loaded = loaded(&graph.url);
    let mut group = c.benchmark_group("send");
    group.bench_function("text through the .so to a no-op server", |b| {
        b.iter(|| {
            runtime
                .block_on(loaded.send(
                    OutboundMessage::text(PAGES[0], "42", "hello"),
                    Duration::from_secs(5),
                ))
                .unwrap()
        })
    });
    group.finish();
}

fn noop_host() -> adapter_api::HostServicesBox {
    use adapter_api::{
        abi_stable::{sabi_trait::TD_Opaque, std_types::RStr},
        HostServices, HostServices_TO, LogLevel,
    };
    struct Quiet;
    impl HostServices for Quiet {
        fn log_enabled(&self, _: LogLevel) -> bool {
            false
        }
        fn log(&self, _: LogLevel, _: RStr<'_>, _: RStr<'_>) {}
    }
    HostServices_TO::from_value(Quiet, TD_Opaque)
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = interleaved, verify_parse, send
}
criterion_main!(benches);
