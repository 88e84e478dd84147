//! The LINE plugin in-process: signatures, every fixture in `tests/fixtures/line/`,
//! and replies and pushes against a fake LINE API on 127.0.0.1.

use std::time::Duration;

use adapter_api::{
    abi_stable::std_types::{ROption, RSlice},
    Adapter, AttachmentKind, Button, ButtonKind, EventFlags, EventKind, Header, InboundEvent,
    OutboundMessage, QuickReply, Verdict, WebhookRequest,
};
use host_example::sandbox::{SandboxGraph, Scripted};
use line_adapter::webhook::{parse, sign, verify};
use serde_json::{json, Value};

const SECRET: &str = "line-channel-secret";
const TOKEN: &str = "line-access-token";

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../tests/fixtures/line/{name}.json"));
    std::fs::read(path).unwrap()
}

fn verdict(body: &[u8], signature: Option<&str>, method: &str) -> Verdict {
    let headers: Vec<Header<'_>> = signature
        .map(|s| Header {
            name: "x-line-signature".into(),
            value: s.into(),
        })
        .into_iter()
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

async fn setup() -> (SandboxGraph, Adapter) {
    let api = SandboxGraph::start().await.unwrap();
    let settings = json!({
        "channel_secret": SECRET, "channel_access_token": TOKEN, "api_base": api.url, "backoff_base_ms": 5,
    });
    let log = adapter_kit::Log::default();
    let channel =
        line_adapter::channel::LineChannel::from_json(&settings.to_string(), log.clone()).unwrap();
    let adapter = Adapter::new(adapter_kit::export(channel, "line-test", 1, log).unwrap());
    (api, adapter)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_token_is_used_once_then_pushes_follow() {
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
