//! The host as a process: routes, limits, config errors, plugin loading, shutdown.

use std::{process::Command, time::Duration};

use e2e::{fake_graph, fixture, host_bin, messenger_plugin, plugins_listing, HostBuilder};
use serde_json::Value;

use crate::{calls_once_processed, delivery::until, post, post_signed};

#[tokio::test(flavor = "multi_thread")]
async fn healthz_lists_plugins_and_channels() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url).start();
    let health: Value = reqwest::get(format!("{}/healthz", host.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["plugins"][0]["id"], "messenger");
    assert_eq!(health["plugins"][0]["api_version"], "1.0.0");
    assert_eq!(health["channels"][0]["name"], "messenger");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_and_disabled_channels_are_404() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url)
        .channels(
            "\n[[channels]]\nname = \"other\"\nplugin = \"nothing-loads-this\"\nenabled = false\n",
        )
        .start();
    let client = reqwest::Client::new();
    for channel in ["other", "nope"] {
        let status = client
            .post(format!("{}/webhooks/{channel}", host.url))
            .body("{}")
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404, "{channel}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_limit_is_413_and_the_host_keeps_serving() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url)
        .server("max_body_bytes = 2048")
        .start();
    let big = vec![b' '; 4096];
    let (status, _) = post(&host, &big, Some("sha256=00")).await;
    assert_eq!(status, 413);
    post_signed(&host, &fixture("message_text")).await;
    assert_eq!(calls_once_processed(&host, &graph, 1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_secret_stops_start_up_with_the_key_named() {
    let graph = fake_graph().await;
    let log = HostBuilder::new(&graph.url)
        .without_env("TEST_FB_APP_SECRET")
        .try_start()
        .err()
        .expect("the host started without its app secret");
    assert!(
        log.contains("channels[0].settings.app_secret")
            && log.contains("TEST_FB_APP_SECRET is not set"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_library_in_the_plugins_folder_is_reported_and_skipped() {
    let graph = fake_graph().await;
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("libjunk.so");
    std::fs::write(&junk, "not a shared object").unwrap();
    let host = HostBuilder::new(&graph.url).plugin_file(junk).start();
    assert!(
        host.log().contains("libjunk.so: not a loadable library"),
        "{}",
        host.log()
    );
    post_signed(&host, &fixture("message_text")).await;
    assert_eq!(calls_once_processed(&host, &graph, 1).await.len(), 1);
}

#[test]
fn plugins_command_describes_each_library() {
    let dir = tempfile::tempdir().unwrap();
    e2e::install(
        &messenger_plugin(),
        &dir.path().join("libmessenger_adapter.so"),
    );
    let truncated = dir.path().join("truncated.so");
    std::fs::write(&truncated, b"\x7fELF\x02\x01").unwrap();
    e2e::owner_writable(&truncated);
    let (code, stdout) = plugins_listing(dir.path());
    assert_eq!(code, Some(1), "{stdout}");
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("ok ") && lines[0].contains("id=messenger"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("FAIL ") && lines[1].contains("truncated.so"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_in_flight_replies_finish_then_exits_0() {
    stopping_lets_in_flight_replies_finish_then_exits_0("TERM").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_lets_in_flight_replies_finish_then_exits_0() {
    stopping_lets_in_flight_replies_finish_then_exits_0("INT").await;
}

/// Signal `signal` while a reply is held at the Graph API: the host stops taking
/// connections, waits for the reply, and exits 0.
async fn stopping_lets_in_flight_replies_finish_then_exits_0(signal: &str) {
    let graph = fake_graph().await;
    graph.hold();
    let mut host = HostBuilder::new(&graph.url).start();
    post_signed(&host, &fixture("message_text")).await;
    until("the reply in flight", || async { graph.in_flight() == 1 }).await;
    host.signal(signal);
    until("the host draining", || async {
        host.log()
            .contains("shutting down: draining accepted events")
    })
    .await;
    assert!(
        reqwest::get(format!("{}/healthz", host.url)).await.is_err(),
        "a stopping host takes no more connections"
    );
    assert!(host.is_running(), "the host waits for the reply in flight");
    graph.release();
    let status = tokio::task::block_in_place(|| host.wait_exit(Duration::from_secs(30)));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", host.log());
    let log = host.log();
    assert!(
        log.contains("reply sent"),
        "the in-flight reply did not finish:\n{log}"
    );
    assert_eq!(graph.delivered().len(), 1);
}

#[test]
fn demo_plays_a_conversation_and_exits_0() {
    let output = Command::new(host_bin()).arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    for expected in [
        "GET handshake with the verify token -> 200 \"demo-challenge\"",
        "text \"Hello, DmFlow!\"",
        "text \"COLOR_BLUE\"",
        "text \"GET_STARTED\"",
        "image https://example.com/cat.jpg",
        "forged webhook, wrong signature",
        "Every check passed.",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

/// Collects the demo's transcript and, on the line giving the webhook URL, asks the
/// host for `/healthz` there and then.
#[derive(Default)]
struct DemoWatcher {
    pending: Vec<u8>,
    lines: Vec<String>,
    /// The status line `/healthz` answered while the transcript was being written.
    health_while_writing: Option<String>,
}

impl DemoWatcher {
    fn line(&mut self, line: String) {
        if let Some(url) = line.trim().strip_prefix("webhook  http://") {
            let addr = url.split('/').next().unwrap_or_default();
            self.health_while_writing = Some(get_status_line(addr, "/healthz"));
        }
        self.lines.push(line);
    }
}

impl std::io::Write for DemoWatcher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.line(String::from_utf8_lossy(&line).trim_end().to_owned());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The status line of a blocking HTTP/1.0 GET of `path` at `addr`, or the error.
fn get_status_line(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let answer = (|| {
        let mut stream = std::net::TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        std::io::Result::Ok(answer)
    })();
    match answer {
        Ok(answer) => answer.lines().next().unwrap_or_default().to_owned(),
        Err(err) => format!("no answer: {err}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_writes_each_line_while_the_conversation_is_running() {
    let mut watcher = DemoWatcher::default();
    // The writer runs on this thread; the demo's host serves from the runtime's workers.
    host_example::demo::run(e2e::built(), &mut watcher)
        .await
        .unwrap();
    let health = watcher
        .health_while_writing
        .expect("the transcript names the webhook URL");
    assert!(
        health.contains(" 200"),
        "the host did not answer while the transcript was written: {health}"
    );
    let last = watcher.lines.last().cloned().unwrap_or_default();
    assert!(last.contains("Every check passed."), "{:#?}", watcher.lines);
}

#[test]
fn keys_prints_a_fresh_random_token_each_time() {
    let token = || {
        let output = Command::new(host_bin()).arg("keys").output().unwrap();
        assert!(output.status.success());
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    let (a, b) = (token(), token());
    assert_eq!(a.len(), 48);
    assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, b);
}

#[test]
fn every_command_has_help() {
    for command in [
        &["--help"][..],
        &["serve", "--help"],
        &["plugins", "--help"],
        &["keys", "--help"],
        &["demo", "--help"],
        &["sandbox", "--help"],
        &["messenger", "--help"],
    ] {
        let output = Command::new(host_bin()).args(command).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{command:?}");
        assert!(
            stdout.contains("Usage: host-example"),
            "{command:?}: {stdout}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_command_prints_every_call_it_receives() {
    use std::io::{BufRead, BufReader};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(host_bin())
        .args(["sandbox", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = tokio::task::block_in_place(|| lines.next())
        .unwrap()
        .unwrap();
    assert!(
        banner.contains(&format!("http://127.0.0.1:{port}")),
        "{banner}"
    );
    let answer: Value = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v25.0/me/messages"))
        .json(&serde_json::json!({ "recipient": { "id": "7" }, "message": { "text": "hi" } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["recipient_id"], "7");
    let printed = tokio::task::block_in_place(|| lines.next())
        .unwrap()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        printed,
        r#"POST /v25.0/me/messages {"message":{"text":"hi"},"recipient":{"id":"7"}}"#
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn log_json_writes_one_json_object_per_line() {
    let graph = fake_graph().await;
    let host = HostBuilder::new(&graph.url).arg("--log-json").start();
    post_signed(&host, &fixture("message_text")).await;
    calls_once_processed(&host, &graph, 1).await;
    let log = host.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "serving webhooks"),
        "{log}"
    );
    assert!(lines.iter().all(|l| l["level"].is_string()));
}
