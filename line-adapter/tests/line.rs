//! The LINE plugin in-process: signatures, every fixture in `tests/fixtures/line/`,
//! and replies and pushes against a fake LINE API on 127.0.0.1.

use std::time::Duration;

use adapter_api::{
    abi_stable::std_types::{ROption, RSlice},
    Adapter, AdapterError, AttachmentKind, Button, ButtonKind, ErrorKind, EventFlags, EventKind,
    Header, InboundEvent, OutboundMessage, QuickReply, SendReceipt, Verdict, WebhookRequest,
};
use line_adapter::{
    send::retry_key,
    webhook::{parse, sign, verify},
};
use sandbox::{SandboxGraph, Scripted};
use serde_json::{json, Value};

const SECRET: &str = "line-channel-secret";
const TOKEN: &str = "line-access-token";

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../tests/fixtures/line/{name}.json"));
    std::fs::read(path).unwrap()
}

fn verdict(body: &[u8], signature: Option<&str>, method: &str) -> Verdict {
    verdict_with(body, signature.as_slice(), method)
}

fn verdict_with(body: &[u8], signatures: &[&str], method: &str) -> Verdict {
    let headers: Vec<Header<'_>> = signatures
        .iter()
        .map(|s| Header {
            name: "x-line-signature".into(),
            value: (*s).into(),
        })
        .collect();
    verify(
        SECRET,
        &WebhookRequest {
            method: method.into(),
            path: "/webhooks/line".into(),
            query: "".into(),
            headers: RSlice::from_slice(&headers),
            body: RSlice::from_slice(body),
        },
    )
}

fn status(v: Verdict) -> u16 {
    match v {
        Verdict::Accept => 0,
        Verdict::Respond(r) => r.status,
    }
}

fn opt(value: &ROption<adapter_api::abi_stable::std_types::RString>) -> Option<&str> {
    value.as_ref().into_option().map(|s| s.as_str())
}

#[test]
fn signatures() {
    let body = fixture("message_text");
    let good = sign(SECRET, &body);
    assert_eq!(verdict(&body, Some(&good), "POST"), Verdict::Accept);
    assert_eq!(status(verdict(&body, None, "POST")), 401);
    assert_eq!(status(verdict(&body, Some("not base64!"), "POST")), 401);
    assert_eq!(
        status(verdict(&body, Some(&sign("other", &body)), "POST")),
        403
    );
    assert_eq!(status(verdict(b"{}", Some(&good), "POST")), 403);
    assert_eq!(status(verdict(&body, Some(&good), "GET")), 405);
}

#[test]
fn a_signature_header_sent_twice_is_a_400_whatever_the_order() {
    let body = fixture("message_text");
    let good = sign(SECRET, &body);
    let wrong = sign("other", &body);
    for pair in [[&good, &wrong], [&wrong, &good], [&good, &good]] {
        let pair = [pair[0].as_str(), pair[1].as_str()];
        assert_eq!(status(verdict_with(&body, &pair, "POST")), 400, "{pair:?}");
    }
}

#[test]
fn a_secret_of_the_wrong_type_is_named_but_never_shown() {
    let settings = r#"{"channel_secret": 987654321, "channel_access_token": "t"}"#;
    let err = line_adapter::settings::Settings::from_json(settings)
        .unwrap_err()
        .to_string();
    assert!(err.contains("channel_secret: expected a string"), "{err}");
    assert!(!err.contains("987654321"), "{err}");
}

fn events(name: &str) -> Vec<InboundEvent> {
    parse(&fixture(name)).unwrap()
}

#[test]
fn message_text() {
    let e = &events("message_text")[0];
    assert_eq!(e.kind, EventKind::MESSAGE);
    assert_eq!(e.account_id.as_str(), "Udeadbeefdeadbeefdeadbeefdeadbeef");
    assert_eq!(e.sender_id.as_str(), "U4af4980629a1b2c3d4e5f6a7b8c9d0e1");
    assert_eq!(e.event_id.as_str(), "01H810YECXQQZ37VAXPF6H9E6T");
    assert_eq!(opt(&e.text), Some("Hello, LINE!"));
    assert!(opt(&e.reply_token).unwrap().starts_with("nHuyWiB7"));
    let details: Value = serde_json::from_str(&e.details_json).unwrap();
    assert_eq!(details["quote_token"], "q3Plxr4AgKd");
    assert_eq!(details["message_id"], "468789577898262530");
}

#[test]
fn postback_follow_unfollow() {
    let e = &events("postback")[0];
    assert_eq!(e.kind, EventKind::POSTBACK);
    assert_eq!(opt(&e.payload), Some("action=buy&itemid=111"));
    let details: Value = serde_json::from_str(&e.details_json).unwrap();
    assert_eq!(details["params"]["datetime"], "2017-12-25T01:00");

    let both = events("follow_unfollow");
    assert_eq!(both[0].kind, EventKind::FOLLOW);
    assert!(opt(&both[0].reply_token).is_some());
    assert_eq!(both[1].kind, EventKind::UNFOLLOW);
    assert!(opt(&both[1].reply_token).is_none());
}

#[test]
fn media_groups_standby_and_unknown_events() {
    let e = events("media_and_more");
    assert_eq!(e.len(), 7);
    let attachments: Vec<_> = e[..4]
        .iter()
        .map(|e| (e.attachments[0].kind, opt(&e.attachments[0].url)))
        .collect();
    assert_eq!(
        attachments,
        [
            (AttachmentKind::IMAGE, None),
            (
                AttachmentKind::IMAGE,
                Some("https://example.com/original.jpg")
            ),
            (AttachmentKind::STICKER, None),
            (AttachmentKind::LOCATION, None),
        ]
    );
    assert_eq!(
        e[4].sender_id.as_str(),
        "U4af4980629a1b2c3d4e5f6a7b8c9d0e1",
        "the user, not the group"
    );
    assert!(e[5].flags.contains(EventFlags::STANDBY));
    assert_eq!(e[6].kind, EventKind::OTHER);
    assert_eq!(e[6].sender_id.as_str(), "Ca56f94637c1f0e0c3d3a4c5e6f7a8b9c");
}

#[test]
fn the_console_verification_body_has_no_events_and_bad_bodies_are_errors() {
    assert!(events("verification").is_empty());
    for body in [
        &b"[]"[..],
        b"{\"events\":[]}",
        b"{\"destination\":\"U1\"}",
        b"nope",
    ] {
        assert!(parse(body)
            .unwrap_err()
            .to_string()
            .starts_with("bad webhook body"));
    }
}

/// An adapter calling the LINE API at `api_base`, with `extra` settings.
fn adapter_at(api_base: &str, extra: Value) -> Adapter {
    let mut settings = json!({
        "channel_secret": SECRET, "channel_access_token": TOKEN, "api_base": api_base, "backoff_base_ms": 5,
    });
    for (key, value) in extra.as_object().unwrap() {
        settings[key] = value.clone();
    }
    let log = adapter_kit::Log::default();
    let channel =
        line_adapter::channel::LineChannel::from_json(&settings.to_string(), log.clone()).unwrap();
    Adapter::new(adapter_kit::export(channel, "line-test", 1, log).unwrap())
}

async fn setup_with(extra: Value) -> (SandboxGraph, Adapter) {
    let api = SandboxGraph::start().await.unwrap();
    let adapter = adapter_at(&api.url, extra);
    (api, adapter)
}

async fn setup() -> (SandboxGraph, Adapter) {
    setup_with(json!({})).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_with_a_reply_token_is_a_reply_and_one_without_is_a_push_with_one_retry_key_across_tries(
) {
    let (api, adapter) = setup().await;
    let mut message = OutboundMessage::text("Udest", "Uuser", "Pick one");
    message.reply_token = ROption::RSome("reply-token-1".into());
    message
        .quick_replies
        .push(QuickReply::text("Red", "COLOR_RED"));
    let receipt = adapter
        .send(message, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(receipt.parts, 1);
    let calls = api.calls();
    assert_eq!(calls[0].path, "/v2/bot/message/reply");
    assert_eq!(calls[0].headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(
        calls[0].body,
        json!({ "replyToken": "reply-token-1", "messages": [{
            "type": "text", "text": "Pick one",
            "quickReply": { "items": [{ "type": "action", "action": {
                "type": "postback", "label": "Red", "data": "COLOR_RED", "displayText": "Red" } }] },
        }]})
    );

    // No token: a push, with a retry key that stays the same across retries.
    api.script([Scripted {
        status: 500,
        body: json!({ "message": "oops" }),
        headers: vec![],
    }]);
    let mut push = OutboundMessage::text("Udest", "Uuser", "Later");
    push.buttons.push(Button {
        kind: ButtonKind::URL,
        title: "Open".into(),
        value: "https://example.com".into(),
    });
    adapter.send(push, Duration::from_secs(10)).await.unwrap();
    let calls = api.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[1].path, "/v2/bot/message/push");
    assert_eq!(calls[1].body["to"], "Uuser");
    assert_eq!(calls[1].body["messages"][0]["template"]["type"], "buttons");
    assert_eq!(
        calls[1].headers["x-line-retry-key"],
        calls[2].headers["x-line-retry-key"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_token_is_used_for_the_first_part_only_and_the_later_parts_are_pushed() {
    let (api, adapter) = setup().await;
    let mut message = reply("");
    let texts: Vec<Value> = (0..7)
        .map(|i| json!({ "type": "text", "text": format!("line {i}") }))
        .collect();
    message.raw_json = Value::Array(texts).to_string().into();
    let receipt = send(&adapter, message).await.unwrap();
    assert_eq!(receipt.parts, 2);
    let calls = api.calls();
    let paths: Vec<_> = calls.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/v2/bot/message/reply", "/v2/bot/message/push"]);
    assert_eq!(calls[0].body["replyToken"], "reply-token");
    assert_eq!(calls[0].body["messages"].as_array().unwrap().len(), 5);
    assert_eq!(calls[1].body.get("replyToken"), None, "{:?}", calls[1].body);
    assert_eq!(calls[1].body["to"], "Uuser");
    assert_eq!(calls[1].body["messages"][0]["text"], "line 5");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_reply_token_falls_back_to_a_push_and_errors_are_classified() {
    let (api, adapter) = setup().await;
    api.script([Scripted {
        status: 400,
        body: json!({ "message": "Invalid reply token" }),
        headers: vec![],
    }]);
    let mut message = OutboundMessage::text("Udest", "Uuser", "hi");
    message.reply_token = ROption::RSome("expired".into());
    adapter
        .send(message, Duration::from_secs(10))
        .await
        .unwrap();
    let paths: Vec<_> = api.calls().iter().map(|c| c.path.clone()).collect();
    assert_eq!(paths, ["/v2/bot/message/reply", "/v2/bot/message/push"]);

    api.script([Scripted {
        status: 401,
        body: json!({ "message": "Authentication failed" }),
        headers: vec![],
    }]);
    let err = adapter
        .send(
            OutboundMessage::text("Udest", "Uuser", "x"),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, adapter_api::ErrorKind::PERMANENT);
    assert!(
        err.message.contains("Authentication failed") && !err.message.contains(TOKEN),
        "{err}"
    );
    assert_eq!(api.calls().len(), 3, "a permanent error is not retried");

    let mut too_many = OutboundMessage::text("Udest", "Uuser", "x");
    for i in 0..14 {
        too_many
            .quick_replies
            .push(QuickReply::text("t", format!("p{i}")));
    }
    let err = adapter
        .send(too_many, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert_eq!(err.kind, adapter_api::ErrorKind::INVALID_MESSAGE);
    assert_eq!(api.calls().len(), 3);
}

async fn send(adapter: &Adapter, message: OutboundMessage) -> Result<SendReceipt, AdapterError> {
    adapter.send(message, Duration::from_secs(20)).await
}

/// A push (no reply token) of `text`, with the host's `idempotency_key` if given.
fn push(text: &str, idempotency_key: Option<&str>) -> OutboundMessage {
    let mut message = OutboundMessage::text("Udest", "Uuser", text);
    if let Some(key) = idempotency_key {
        message.options_json = json!({ "idempotency_key": key }).to_string().into();
    }
    message
}

fn reply(text: &str) -> OutboundMessage {
    let mut message = OutboundMessage::text("Udest", "Uuser", text);
    message.reply_token = ROption::RSome("reply-token".into());
    message
}

fn answer(status: u16) -> Scripted {
    Scripted {
        status,
        body: json!({ "message": format!("scripted {status}") }),
        headers: vec![],
    }
}

fn retry_keys(api: &SandboxGraph) -> Vec<String> {
    api.calls()
        .iter()
        .map(|c| c.headers["x-line-retry-key"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_try_of_the_same_reply_carries_the_retry_key_derived_from_its_idempotency_key() {
    let (api, adapter) = setup().await;
    // The host sends the same reply twice (a retry after a restart, say), then another.
    send(&adapter, push("hi", Some("reply-1"))).await.unwrap();
    api.script([answer(409)]);
    let again = send(&adapter, push("hi", Some("reply-1"))).await.unwrap();
    assert_eq!(again.parts, 1, "409 means LINE has it already: done");
    send(&adapter, push("hi", Some("reply-2"))).await.unwrap();

    let keys = retry_keys(&api);
    assert_eq!(keys[0], retry_key(Some("reply-1"), 0));
    assert_eq!(keys[1], keys[0]);
    assert_ne!(keys[2], keys[0]);
    assert_eq!(keys[2], retry_key(Some("reply-2"), 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_idempotency_key_each_send_gets_a_random_retry_key() {
    let (api, adapter) = setup().await;
    send(&adapter, push("hi", None)).await.unwrap();
    send(&adapter, push("hi", None)).await.unwrap();
    let keys = retry_keys(&api);
    assert_ne!(keys[0], keys[1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_push_of_a_long_message_has_its_own_retry_key() {
    let (api, adapter) = setup().await;
    let mut message = push("", Some("reply-9"));
    let texts: Vec<Value> = (0..7)
        .map(|i| json!({ "type": "text", "text": format!("line {i}") }))
        .collect();
    message.raw_json = Value::Array(texts).to_string().into();
    let receipt = send(&adapter, message).await.unwrap();
    assert_eq!(receipt.parts, 2);
    let keys = retry_keys(&api);
    assert_ne!(
        keys[0], keys[1],
        "LINE would take the second push for a repeat"
    );
    assert_eq!(
        keys,
        [retry_key(Some("reply-9"), 0), retry_key(Some("reply-9"), 1)]
    );
    assert_eq!(api.calls()[1].body["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_idempotency_key_is_refused_before_any_request() {
    let (api, adapter) = setup().await;
    let mut message = push("hi", None);
    message.options_json = r#"{"idempotency_key":42}"#.into();
    let err = send(&adapter, message).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::INVALID_MESSAGE);
    assert!(
        err.message.contains("options_json.idempotency_key"),
        "{err}"
    );
    assert!(api.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_connection_is_transient_for_a_push_and_for_a_reply() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let adapter = adapter_at(&closed, json!({ "max_attempts": 2 }));
    for message in [push("hi", Some("reply-1")), reply("hi")] {
        let err = send(&adapter, message).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::TRANSIENT, "{err}");
        assert!(!err.message.contains(TOKEN), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_5xx_answer_is_transient_after_the_pushes_retries() {
    let (api, adapter) = setup_with(json!({ "max_attempts": 3 })).await;
    api.script((0..3).map(|_| answer(503)));
    let err = send(&adapter, push("hi", Some("reply-1")))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::TRANSIENT, "{err}");
    assert_eq!(api.calls().len(), 3);

    api.script([answer(500)]);
    let err = send(&adapter, reply("hi")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::TRANSIENT, "{err}");
    assert_eq!(api.calls().len(), 4, "a reply is tried once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_is_rate_limited_with_the_wait_from_retry_after() {
    let (api, adapter) = setup_with(json!({ "max_attempts": 1 })).await;
    let limited = || answer(429).header("retry-after", "7");
    api.script([limited(), limited()]);
    for message in [push("hi", Some("reply-1")), reply("hi")] {
        let err = send(&adapter, message).await.unwrap_err();
        assert_eq!(
            (err.kind, err.retry_after_ms),
            (ErrorKind::RATE_LIMITED, 7000),
            "{err}"
        );
    }
    assert_eq!(api.calls().len(), 2);
}

/// A server that reads each request and hangs up without answering.
async fn hang_up_server() -> String {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = vec![0; 65536];
            let _ = socket.read(&mut buf).await;
            drop(socket);
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_or_a_hang_up_after_sending_is_an_unknown_outcome() {
    let (api, adapter) = setup_with(json!({ "request_timeout_ms": 100 })).await;
    api.script([Scripted::hang()]);
    let err = send(&adapter, reply("slow")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::TIMEOUT, "{err}");
    assert_eq!(
        api.calls().len(),
        1,
        "a reply that may have arrived is not resent"
    );

    let adapter = adapter_at(&hang_up_server().await, json!({ "max_attempts": 2 }));
    for message in [push("hi", Some("reply-1")), reply("hi")] {
        let err = send(&adapter, message).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::TIMEOUT, "{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_5xx_after_a_push_that_timed_out_is_an_unknown_outcome() {
    let (api, adapter) = setup_with(json!({ "request_timeout_ms": 300, "max_attempts": 2 })).await;
    api.script([Scripted::hang(), answer(500)]);
    let err = send(&adapter, push("hi", None)).await.unwrap_err();
    assert_eq!(api.calls().len(), 2);
    assert_eq!(err.kind, ErrorKind::TIMEOUT, "{err}");
    assert!(err.message.contains("HTTP 500"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_later_push_failing_after_the_first_was_delivered_is_an_unknown_outcome() {
    let (api, adapter) = setup_with(json!({ "max_attempts": 1 })).await;
    let mut message = push("", Some("reply-3"));
    let texts: Vec<Value> = (0..6)
        .map(|i| json!({ "type": "text", "text": format!("line {i}") }))
        .collect();
    message.raw_json = Value::Array(texts).to_string().into();
    api.script([answer(200), answer(500)]);
    let err = send(&adapter, message.clone()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::TIMEOUT, "{err}");
    assert!(err.message.contains("part 2 of 2"), "{err}");

    // The first push failing is still a clean "not delivered".
    api.script([answer(500)]);
    let err = send(&adapter, message).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::TRANSIENT, "{err}");
}
