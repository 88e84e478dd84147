//! The bad-input matrix: each case gets its documented answer (see the table in
//! `docs/bad-input.md`), and after each the host still serves.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use e2e::{fake_graph, fixture, sign, Host, HostBuilder, APP_SECRET};

/// Sends raw HTTP, the body in `pieces` with `pause` between them; returns the status.
fn raw(host: &Host, head: &str, body: &[u8], pieces: usize, pause: Duration) -> u16 {
    let addr = host.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    for chunk in body.chunks(body.len().div_ceil(pieces.max(1)).max(1)) {
        if stream.write_all(chunk).is_err() {
            break; // the host answered early and closed
        }
        std::thread::sleep(pause);
    }
    let mut answer = Vec::new();
    let mut buf = [0; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let status_line = String::from_utf8_lossy(&answer);
    status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn post_head(path: &str, len: usize, extra: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n{extra}\r\n")
}

fn signed(host: &Host, body: &[u8]) -> u16 {
    let head = post_head(
        "/webhooks/messenger",
        body.len(),
        &format!("x-hub-signature-256: {}\r\n", sign(APP_SECRET, body)),
    );
    raw(host, &head, body, 1, Duration::ZERO)
}

fn with_signature(host: &Host, body: &[u8], header: &str) -> u16 {
    raw(
        host,
        &post_head("/webhooks/messenger", body.len(), header),
        body,
        1,
        Duration::ZERO,
    )
}

fn method(host: &Host, method: &str, path: &str) -> u16 {
    raw(
        host,
        &format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\n\r\n"),
        b"",
        1,
        Duration::ZERO,
    )
}

/// Sends `head` and the first half of `body`, then nothing more, keeping the
/// connection open: only the host's body timeout can end the wait. Returns the status.
fn stalled(host: &Host, head: &str, body: &[u8]) -> u16 {
    let addr = host.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..body.len() / 2]).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A case's name, how to send it (returning the status), and the documented answer.
type Case<'a> = (&'static str, Box<dyn Fn() -> u16 + 'a>, u16);

#[test]
fn every_bad_input_gets_its_documented_answer_and_the_host_keeps_serving() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let graph = runtime.block_on(fake_graph());
    // The default body timeout (10 s): the pieces of case 22 take milliseconds.
    let host = HostBuilder::new(&graph.url).start();
    // Case 23 on a host of its own, with a short body timeout.
    let impatient = HostBuilder::new(&graph.url)
        .server("body_timeout_ms = 300")
        .start();

    let good = fixture("message_text");
    let good_signature = sign(APP_SECRET, &good);
    let hex = &good_signature["sha256=".len()..];
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes();
    let mut invalid_utf8 = br#"{"object":"page","entry":[{"id":"1","messaging":[{"sender":{"id":"2"},"message":{"mid":"m","text":"#.to_vec();
    invalid_utf8.extend_from_slice(b"\"\xff\xfe\"}}]}]}");
    let reads: Vec<String> = (0..10_000)
        .map(|i| format!(r#"{{"sender":{{"id":"{i}"}},"recipient":{{"id":"1"}},"timestamp":{i},"read":{{"watermark":1}}}}"#))
        .collect();
    let ten_thousand = format!(
        r#"{{"object":"page","entry":[{{"id":"1","time":1,"messaging":[{}]}}]}}"#,
        reads.join(",")
    )
    .into_bytes();
    let numbers = br#"{"object":"page","entry":[{"id":1,"time":1,"messaging":[{"sender":{"id":2},"recipient":{"id":1},"timestamp":3,"message":{"mid":"m_numbers","text":"numbers"}}]}]}"#;
    let unknown = br#"{"object":"page","entry":[{"id":"1","time":1,"messaging":[{"sender":{"id":"2"},"recipient":{"id":"1"},"timestamp":3,"brand_new":{"a":1}}]}]}"#;
    let long_name = format!("/webhooks/{}", "a".repeat(8_000));

    let cases: Vec<Case<'_>> = vec![
        (
            "missing signature",
            Box::new(|| with_signature(&host, &good, "")),
            401,
        ),
        (
            "garbled signature",
            Box::new(|| with_signature(&host, &good, "x-hub-signature-256: sha256=not-hex!!\r\n")),
            401,
        ),
        (
            "upper-case hex digits",
            Box::new(|| {
                with_signature(
                    &host,
                    &good,
                    &format!("x-hub-signature-256: sha256={}\r\n", hex.to_uppercase()),
                )
            }),
            200,
        ),
        (
            "upper-case prefix",
            Box::new(|| {
                with_signature(
                    &host,
                    &good,
                    &format!("x-hub-signature-256: SHA256={hex}\r\n"),
                )
            }),
            401,
        ),
        (
            "short signature",
            Box::new(|| {
                with_signature(
                    &host,
                    &good,
                    &format!("x-hub-signature-256: sha256={}\r\n", &hex[..20]),
                )
            }),
            401,
        ),
        (
            "wrong prefix",
            Box::new(|| {
                with_signature(
                    &host,
                    &good,
                    &format!("x-hub-signature-256: sha512={hex}\r\n"),
                )
            }),
            401,
        ),
        (
            "signature of another body",
            Box::new(|| {
                with_signature(
                    &host,
                    &good,
                    &format!("x-hub-signature-256: {}\r\n", sign(APP_SECRET, b"{}")),
                )
            }),
            403,
        ),
        (
            "sha1 only, not allowed",
            Box::new(|| {
                with_signature(
                    &host,
                    &good,
                    "x-hub-signature: sha1=0d814d436b45c33ef664a317ff4b8dc2d3d8fe2a\r\n",
                )
            }),
            401,
        ),
        (
            "empty body, unsigned",
            Box::new(|| with_signature(&host, b"", "")),
            401,
        ),
        ("empty body, signed", Box::new(|| signed(&host, b"")), 400),
        ("not JSON", Box::new(|| signed(&host, b"hello there")), 400),
        ("a JSON array", Box::new(|| signed(&host, b"[1,2,3]")), 400),
        (
            "10,000 levels of nesting",
            Box::new(|| signed(&host, &nested)),
            400,
        ),
        (
            "body over the limit",
            Box::new(|| {
                with_signature(
                    &host,
                    &vec![b' '; 2 * 1024 * 1024],
                    "x-hub-signature-256: sha256=00\r\n",
                )
            }),
            413,
        ),
        (
            "invalid UTF-8",
            Box::new(|| signed(&host, &invalid_utf8)),
            400,
        ),
        (
            "wrong object",
            Box::new(|| signed(&host, br#"{"object":"user","entry":[]}"#)),
            400,
        ),
        (
            "entry missing",
            Box::new(|| signed(&host, br#"{"object":"page"}"#)),
            400,
        ),
        (
            "entry not an array",
            Box::new(|| signed(&host, br#"{"object":"page","entry":{"id":"1"}}"#)),
            400,
        ),
        (
            "numbers where strings belong",
            Box::new(|| signed(&host, numbers)),
            200,
        ),
        (
            "10,000 messaging items",
            Box::new(|| signed(&host, &ten_thousand)),
            200,
        ),
        ("unknown events", Box::new(|| signed(&host, unknown)), 200),
        (
            "a body sent slowly in pieces",
            Box::new(|| {
                raw(
                    &host,
                    &post_head(
                        "/webhooks/messenger",
                        good.len(),
                        &format!("x-hub-signature-256: {good_signature}\r\n"),
                    ),
                    &good,
                    10,
                    Duration::from_millis(5),
                )
            }),
            200,
        ),
        (
            "a body that stops halfway, past body_timeout_ms",
            Box::new(|| {
                stalled(
                    &impatient,
                    &post_head(
                        "/webhooks/messenger",
                        good.len(),
                        &format!("x-hub-signature-256: {good_signature}\r\n"),
                    ),
                    &good,
                )
            }),
            408,
        ),
        (
            "wrong content type",
            Box::new(|| {
                let head = format!(
                    "POST /webhooks/messenger HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-hub-signature-256: {good_signature}\r\n\r\n",
                    good.len()
                );
                raw(&host, &head, &good, 1, Duration::ZERO)
            }),
            200,
        ),
        (
            "PUT",
            Box::new(|| method(&host, "PUT", "/webhooks/messenger")),
            405,
        ),
        (
            "DELETE",
            Box::new(|| method(&host, "DELETE", "/webhooks/messenger")),
            405,
        ),
        (
            "PATCH",
            Box::new(|| method(&host, "PATCH", "/webhooks/messenger")),
            405,
        ),
        (
            "OPTIONS",
            Box::new(|| method(&host, "OPTIONS", "/webhooks/messenger")),
            405,
        ),
        (
            "GET without a handshake",
            Box::new(|| method(&host, "GET", "/webhooks/messenger")),
            403,
        ),
        (
            "channel ..",
            Box::new(|| method(&host, "POST", "/webhooks/..")),
            404,
        ),
        (
            "encoded slash in the channel",
            Box::new(|| method(&host, "POST", "/webhooks/mess%2Fenger")),
            404,
        ),
        (
            "a very long channel name",
            Box::new(|| method(&host, "POST", &long_name)),
            404,
        ),
        (
            "not a route",
            Box::new(|| method(&host, "POST", "/webhooks")),
            404,
        ),
    ];
    assert!(cases.len() >= 30);
    let mut wrong = Vec::new();
    for (name, case, expected) in &cases {
        let status = case();
        if status != *expected {
            wrong.push(format!("{name}: expected {expected}, got {status}"));
        }
        assert_eq!(
            method(&host, "GET", "/healthz"),
            200,
            "the host stopped serving after {name:?}"
        );
    }
    assert!(wrong.is_empty(), "{}\n{}", wrong.join("\n"), host.log());
    assert_eq!(
        method(&impatient, "GET", "/healthz"),
        200,
        "the host with the short body timeout stopped serving"
    );
}
