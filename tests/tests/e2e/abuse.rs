//! The host facing the internet, tried as an attacker would: connections that never
//! finish their request, idle ones, more connections than allowed, stalled ones at
//! shutdown, too many bodies at once, secrets in broken settings, repeated
//! signature headers, the admin routes, a plugins folder others may write, and the
//! queue files' modes. Tests wait for what can be observed (a connection closed by
//! the host, a metric reaching a value); a generous timeout only bounds a stuck one.

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use e2e::{
    fake_graph, fixture, fixture_of, library, sign, FakeGraph, Host, HostBuilder, APP_SECRET,
};

use crate::post_signed;

#[cfg(unix)]
mod files;

/// Bounds a read that should end because the host closes the connection.
const STUCK: Duration = Duration::from_secs(30);

const ADMIN: &str = "\n[admin]\nlisten = \"127.0.0.1:0\"\n";

fn connect(url: &str) -> TcpStream {
    let stream = TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    stream.set_read_timeout(Some(STUCK)).unwrap();
    stream
}

/// Reads until the host closes the connection (end of stream, or a reset when
/// bytes were still unread on its side); `false` if it is still open after
/// [`STUCK`].
fn closed_by_host(stream: &mut TcpStream) -> bool {
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                return true
            }
            Err(_) => return false,
        }
    }
}

/// Reads one response (head and `content-length` body); returns its status and
/// body.
fn response(stream: &mut TcpStream) -> (u16, String) {
    let mut data = Vec::new();
    let mut buf = [0; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]).into_owned();
                return (status, body);
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return (0, String::from_utf8_lossy(&data).into_owned()),
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
}

fn get(url: &str, path: &str) -> (u16, String) {
    let mut stream = connect(url);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    response(&mut stream)
}

/// A fake Graph API, and a runtime to drive it and the async helpers from a test
/// that blocks on its sockets.
struct World {
    runtime: tokio::runtime::Runtime,
    graph: FakeGraph,
}

impl World {
    fn new() -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let graph = runtime.block_on(fake_graph());
        Self { runtime, graph }
    }

    fn host(&self) -> HostBuilder {
        HostBuilder::new(&self.graph.url)
    }

    fn metric(&self, host: &Host, series: &str) -> f64 {
        self.runtime.block_on(host.metric(series))
    }

    /// Waits until `host`'s metric `series` satisfies `done`; returns its value.
    fn metric_until(&self, host: &Host, series: &str, done: impl Fn(f64) -> bool) -> f64 {
        let bound = Instant::now() + STUCK;
        loop {
            let value = self.metric(host, series);
            if done(value) {
                return value;
            }
            assert!(
                Instant::now() < bound,
                "{series} stuck at {value}:\n{}",
                self.runtime.block_on(host.metrics())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn post_signed(&self, host: &Host, body: &[u8]) {
        self.runtime.block_on(post_signed(host, body));
    }

    /// How many calls the fake Graph API received once there were `count` and
    /// `host` processed every event it accepted (see [`crate::calls_once_processed`]).
    fn graph_calls(&self, host: &Host, count: usize) -> usize {
        self.runtime
            .block_on(crate::calls_once_processed(host, &self.graph, count))
            .len()
    }
}

const OPEN: &str = "dmflow_connections_open{listener=\"public\"}";
const HEADER_TIMEOUTS: &str =
    "dmflow_connections_closed_total{listener=\"public\",reason=\"header_timeout\"}";

/// Sends a request head cut short: it never ends.
fn start_a_head(stream: &mut TcpStream) {
    stream
        .write_all(b"POST /webhooks/messenger HTTP/1.1\r\nhost: localhost\r\n")
        .unwrap();
}

#[test]
fn slowloris_connections_are_closed_once_the_header_timeout_passes() {
    let world = World::new();
    let host = world.host().server("header_timeout_ms = 500").start();
    let mut silent: Vec<_> = (0..10).map(|_| connect(&host.url)).collect();
    let mut trickling = Vec::new();
    for _ in 0..10 {
        let mut stream = connect(&host.url);
        start_a_head(&mut stream);
        // One more header line every 100 ms: the head never completes.
        let mut writer = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            while writer.write_all(b"x-slow: 1\r\n").is_ok() {
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        trickling.push(stream);
    }
    for stream in silent.iter_mut().chain(&mut trickling) {
        assert!(closed_by_host(stream), "a slow head was kept open");
    }
    assert!(world.metric(&host, HEADER_TIMEOUTS) >= 20.0);
    world.post_signed(&host, &fixture("message_text"));
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let world = World::new();
    let host = world.host().server("idle_timeout_ms = 500").start();
    let mut stream = connect(&host.url);
    for _ in 0..2 {
        // Kept alive: the second request on the same connection is answered too.
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .unwrap();
        assert_eq!(response(&mut stream).0, 200);
    }
    assert!(
        closed_by_host(&mut stream),
        "an idle connection was kept open"
    );
    let idle = "dmflow_connections_closed_total{listener=\"public\",reason=\"idle_timeout\"}";
    assert_eq!(world.metric(&host, idle), 1.0);
}

#[test]
fn a_request_head_over_32_kib_is_refused_with_431() {
    let world = World::new();
    let host = world.host().start();
    let mut stream = connect(&host.url);
    // Just over the limit: the host reads it all before it answers, so its answer
    // is not lost to a reset. The write may still fail once the host has answered
    // and closed: what counts is the answer.
    let padding = "a".repeat(33 * 1024);
    let _ = write!(
        stream,
        "GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-pad: {padding}\r\n\r\n"
    );
    assert_eq!(response(&mut stream).0, 431);
}

#[test]
fn past_max_connections_a_signed_webhook_is_answered_once_stalled_ones_time_out() {
    let world = World::new();
    let host = world
        .host()
        .server("max_connections = 10\nheader_timeout_ms = 2000")
        .channels(ADMIN)
        .start();
    let mut stalled: Vec<_> = (0..15).map(|_| connect(&host.url)).collect();
    // Ten are taken in; the other five wait in the listen backlog.
    world.metric_until(&host, OPEN, |open| open >= 10.0);
    assert_eq!(
        world.metric(&host, OPEN),
        10.0,
        "more connections than allowed"
    );

    // Answered once the stalled ones have timed out and freed their slots.
    world.post_signed(&host, &fixture("message_text"));
    for stream in &mut stalled {
        assert!(closed_by_host(stream));
    }
    assert_eq!(world.graph_calls(&host, 1), 1);
}

#[test]
fn sigterm_with_stalled_connections_exits_within_the_grace() {
    let world = World::new();
    let mut host = world
        .host()
        .server("header_timeout_ms = 600000\nidle_timeout_ms = 600000\nbody_timeout_ms = 600000")
        .server("shutdown_grace_ms = 1000")
        .channels(ADMIN)
        .start();
    let mut open = Vec::new();
    for _ in 0..5 {
        let mut head = connect(&host.url);
        start_a_head(&mut head);
        open.push(head);
        let mut idle = connect(&host.url);
        idle.write_all(b"GET /nope HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .unwrap();
        assert_eq!(response(&mut idle).0, 404);
        open.push(idle);
    }
    // A request whose body never ends: in progress until the grace runs out.
    let mut body = connect(&host.url);
    body.write_all(
        b"POST /webhooks/messenger HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1000\r\n\r\n{",
    )
    .unwrap();
    open.push(body);
    world.metric_until(&host, OPEN, |n| n >= 11.0);

    let status = host.terminate(STUCK).expect("the host did not exit");
    assert!(status.success(), "{status:?}\n{}", host.log());
    for stream in &mut open {
        assert!(closed_by_host(stream));
    }
    assert!(
        host.log()
            .contains("connections still handling a request after the grace period are closed"),
        "{}",
        host.log()
    );
}

#[test]
fn bodies_past_the_in_flight_cap_get_503_at_once() {
    const BODY: usize = 64 * 1024;
    let world = World::new();
    let host = world
        .host()
        .server(&format!(
            "max_body_bytes = {BODY}\nmax_inflight_body_bytes = {}\nbody_timeout_ms = 600000",
            4 * BODY
        ))
        .channels(ADMIN)
        .start();
    let junk_head = |extra: &str| {
        format!(
            "POST /webhooks/messenger HTTP/1.1\r\nhost: localhost\r\n\
             x-hub-signature-256: sha256=00\r\n{extra}\r\n"
        )
    };
    let inflight = "dmflow_inflight_body_bytes";
    let mut reading = Vec::new();
    for i in 1..=4 {
        let mut stream = connect(&host.url);
        write!(
            stream,
            "{}",
            junk_head(&format!("content-length: {BODY}\r\n"))
        )
        .unwrap();
        stream.write_all(&[b' '; 100]).unwrap();
        reading.push(stream);
        world.metric_until(&host, inflight, |n| n >= (i * BODY) as f64);
    }

    // The cap is reached: a fifth body, declared or chunked, is refused at once.
    for extra in [
        format!("content-length: {BODY}\r\n"),
        "transfer-encoding: chunked\r\n".to_owned(),
    ] {
        let mut stream = connect(&host.url);
        write!(stream, "{}", junk_head(&extra)).unwrap();
        let (status, body) = response(&mut stream);
        assert_eq!(status, 503, "{extra}: {body}");
    }
    // A request without a body is still served.
    let query = "hub.mode=subscribe&hub.verify_token=test-verify-token&hub.challenge=c";
    assert_eq!(
        get(&host.url, &format!("/webhooks/messenger?{query}")).0,
        200
    );

    // A client that goes away gives its bytes back.
    drop(reading.pop());
    world.metric_until(&host, inflight, |n| n <= (3 * BODY) as f64);
    world.post_signed(&host, &fixture("message_text"));
    let overloaded = "dmflow_webhooks_total{channel=\"messenger\",outcome=\"overloaded\"}";
    assert_eq!(world.metric(&host, overloaded), 2.0);
}

/// A LINE channel whose settings hold `secret` in the wrong type.
fn line_with_mistyped_secret(graph: &str, secret: &str) -> HostBuilder {
    HostBuilder::new(graph)
        .plugin_file(library("line_adapter"))
        .channels(&format!(
            "\n[[channels]]\nname = \"line\"\nplugin = \"line\"\n[channels.settings]\n\
             channel_secret = {secret}\nchannel_access_token = \"line-token\"\n"
        ))
}

#[test]
fn a_secret_in_a_mistyped_setting_appears_nowhere() {
    let world = World::new();
    // A setting the plugin refuses stops start-up, naming the channel and the key.
    let secret = "987654321";
    let log = line_with_mistyped_secret(&world.graph.url, secret)
        .try_start()
        .err()
        .expect("started with a setting its plugin refuses");
    assert!(
        log.contains("host.toml: channels[1] (line): ")
            && log.contains("channel_secret: expected a string"),
        "{log}"
    );
    assert!(!log.contains(secret), "the secret is in the log:\n{log}");

    // A TOML syntax error and a host setting of the wrong type stop start-up; their
    // errors point at the line and the key, not at the text.
    let secret = "hunter2-secret";
    let broken = [
        line_with_mistyped_secret(&world.graph.url, &format!("\"{secret}\" {secret}")),
        line_with_mistyped_secret(&world.graph.url, &format!("\"{secret}")),
        world.host().server(&format!("workers = \"{secret}\"")),
    ];
    for builder in broken {
        let log = builder
            .try_start()
            .err()
            .expect("started with a broken config");
        assert!(log.contains("host.toml: line "), "{log}");
        assert!(!log.contains(secret), "the secret is in the log:\n{log}");
    }
}

#[test]
fn a_signature_header_sent_twice_is_refused_whatever_the_order() {
    const LINE_SECRET: &str = "line-secret";
    let world = World::new();
    let host = world
        .host()
        .plugin_file(library("line_adapter"))
        .channels(&format!(
            "\n[[channels]]\nname = \"line\"\nplugin = \"line\"\n[channels.settings]\n\
             channel_secret = \"{LINE_SECRET}\"\nchannel_access_token = \"t\"\napi_base = \"{}\"\n",
            world.graph.url
        ))
        .start();
    let messenger = fixture("message_text");
    let line = fixture_of("line", "message_text");
    let cases = [
        (
            "messenger",
            "x-hub-signature-256",
            &messenger,
            sign(APP_SECRET, &messenger),
            sign("other", &messenger),
        ),
        (
            "line",
            "x-line-signature",
            &line,
            line_adapter::webhook::sign(LINE_SECRET, &line),
            line_adapter::webhook::sign("other", &line),
        ),
    ];
    for (channel, header, body, good, wrong) in &cases {
        for (first, second) in [(good, wrong), (wrong, good), (good, good)] {
            let mut stream = connect(&host.url);
            write!(
                stream,
                "POST /webhooks/{channel} HTTP/1.1\r\nhost: localhost\r\n\
                 content-length: {}\r\n{header}: {first}\r\n{header}: {second}\r\n\r\n",
                body.len()
            )
            .unwrap();
            stream.write_all(body).unwrap();
            let (status, text) = response(&mut stream);
            assert_eq!(status, 400, "{channel}, {first} then {second}: {text}");
        }
    }
    assert_eq!(
        world.graph_calls(&host, 0),
        0,
        "a refused webhook was answered"
    );
}

#[test]
fn admin_routes_are_served_only_on_the_admin_listener() {
    let world = World::new();
    let host = world.host().channels(ADMIN).start();
    let admin = host.admin_url.clone().expect("no admin address printed");
    assert_ne!(admin, host.url);
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(get(&host.url, path).0, 404, "{path} on the public listener");
        assert_eq!(get(&admin, path).0, 200, "{path} on the admin listener");
    }
    assert_eq!(get(&admin, "/webhooks/messenger").0, 404);
    let (_, ready) = get(&admin, "/readyz");
    assert!(ready.contains("\"ready\""), "{ready}");
    world.post_signed(&host, &fixture("message_text"));

    // Without [admin], the public listener serves them.
    let host = world.host().start();
    assert!(host.admin_url.is_none());
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(get(&host.url, path).0, 200, "{path}");
    }
}
