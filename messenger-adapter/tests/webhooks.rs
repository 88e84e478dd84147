//! Every fixture in `tests/fixtures/messenger/`, signed with a test secret, verified and
//! parsed by the adapter in-process; signature and handshake vectors; robustness.

use adapter_api::{
    abi_stable::std_types::{ROption, RSlice},
    AttachmentKind, EventFlags, EventKind, Header, InboundEvent, Verdict, WebhookRequest,
};
use messenger_adapter::{channel::MessengerChannel, webhook::verify::sign_sha256, Log};
use proptest::prelude::*;
use serde_json::{json, Value};

const SECRET: &str = "fixture-secret";

fn adapter_with(extra: &str) -> MessengerChannel {
    let settings = format!(
        r#"{{"app_secret":"{SECRET}","verify_token":"tok","pages":[{{"id":"1","access_token":"t"}}]{extra}}}"#
    );
    MessengerChannel::from_json(&settings, Log::default()).unwrap()
}

fn fixtures_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/messenger")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(format!("{name}.json"))).unwrap()
}

fn verify(adapter: &MessengerChannel, body: &[u8], headers: &[(&str, &str)]) -> Verdict {
    let headers: Vec<Header<'_>> = headers
        .iter()
        .map(|(n, v)| Header {
            name: (*n).into(),
            value: (*v).into(),
        })
        .collect();
    let request = WebhookRequest {
        method: "POST".into(),
        path: "/webhooks/messenger".into(),
        query: "".into(),
        headers: RSlice::from_slice(&headers),
        body: RSlice::from_slice(body),
    };
    adapter.verify_request(&request)
}

fn parse(adapter: &MessengerChannel, body: &[u8]) -> Result<Vec<InboundEvent>, String> {
    let request = WebhookRequest {
        method: "POST".into(),
        path: "/webhooks/messenger".into(),
        query: "".into(),
        headers: RSlice::from_slice(&[]),
        body: RSlice::from_slice(body),
    };
    adapter.parse_request(&request).map_err(|e| e.to_string())
}

/// Signs, verifies (must be accepted) and parses a fixture.
fn events(name: &str) -> Vec<InboundEvent> {
    let adapter = adapter_with("");
    let body = fixture(name);
    let signature = sign_sha256(SECRET.as_bytes(), &body);
    assert_eq!(
        verify(&adapter, &body, &[("x-hub-signature-256", &signature)]),
        Verdict::Accept
    );
    parse(&adapter, &body).unwrap()
}

fn one(name: &str) -> InboundEvent {
    let mut events = events(name);
    assert_eq!(events.len(), 1, "{name}: {events:#?}");
    events.remove(0)
}

fn opt(value: &ROption<adapter_api::abi_stable::std_types::RString>) -> Option<&str> {
    value.as_ref().into_option().map(|s| s.as_str())
}

fn details(event: &InboundEvent) -> Value {
    serde_json::from_str(&event.details_json).unwrap_or(Value::Null)
}

fn assert_parties(event: &InboundEvent, page: &str, sender: &str, recipient: &str) {
    assert_eq!(event.account_id.as_str(), page);
    assert_eq!(event.sender_id.as_str(), sender);
    assert_eq!(event.recipient_id.as_str(), recipient);
}

const PAGE: &str = "682498302938465";
const PSID: &str = "1254459154682919";
const MID: &str = "m_1457764197618:41d102a3e1ae206a38";

#[test]
fn message_text() {
    let e = one("message_text");
    assert_eq!(e.kind, EventKind::MESSAGE);
    assert_parties(&e, "1", "2", "3");
    assert_eq!(e.timestamp_ms, 1457764197627);
    assert_eq!(e.event_id.as_str(), "mid.1457764197618:41d102a3e1ae206a38");
    assert_eq!(opt(&e.text), Some("Hello, bot!"));
    assert!(e.attachments.is_empty());
    let raw: Value = serde_json::from_str(&e.raw_json).unwrap();
    assert_eq!(raw["message"]["seq"], 73);
}

#[test]
fn message_quick_reply() {
    let e = one("message_quick_reply");
    assert_eq!(e.kind, EventKind::QUICK_REPLY);
    assert_parties(&e, PAGE, PSID, PAGE);
    assert_eq!(opt(&e.text), Some("hello, world!"));
    assert_eq!(opt(&e.payload), Some("DEVELOPER_DEFINED_PAYLOAD"));
    assert_eq!(e.event_id.as_str(), "mid.1457764197618:41d102a3e1ae206a38");
}

#[test]
fn message_reply_to() {
    let e = one("message_reply_to");
    assert_eq!(e.kind, EventKind::MESSAGE);
    assert_eq!(e.event_id.as_str(), MID);
    assert_eq!(
        details(&e)["reply_to"],
        json!({ "mid": "m_1fTq8oLumEyIp3Q2MR-aY7IfLZDamVrALniheU", "is_self_reply": false })
    );
}

#[test]
fn message_image() {
    let e = one("message_image");
    assert_eq!(e.kind, EventKind::MESSAGE);
    assert_eq!(opt(&e.text), None);
    assert_eq!(e.event_id.as_str(), "mid.$cAAJdkrCd2ORnva8ErFhjGm0X_Q_c");
    assert_eq!(e.attachments.len(), 1);
    let a = &e.attachments[0];
    assert_eq!(a.kind, AttachmentKind::IMAGE);
    assert_eq!(
        opt(&a.url),
        Some("https://scontent.xx.fbcdn.net/v/example/attachment.jpg")
    );
}

#[test]
fn message_fallback_legacy() {
    let e = one("message_fallback_legacy");
    let a = &e.attachments[0];
    assert_eq!(a.kind, AttachmentKind::FALLBACK);
    assert_eq!(opt(&a.url), Some("URL_OF_THE_ATTACHMENT"));
    let raw: Value = serde_json::from_str(&a.raw_json).unwrap();
    assert_eq!(raw["title"], "TITLE_OF_THE_URL_ATTACHMENT");
}

#[test]
fn echo_is_flagged_and_keeps_its_direction() {
    let e = one("echo");
    assert_eq!(e.kind, EventKind::ECHO);
    assert!(e.flags.contains(EventFlags::ECHO));
    assert_parties(&e, PAGE, PAGE, PSID);
    assert_eq!(opt(&e.text), Some("hello, world!"));
    assert_eq!(details(&e)["metadata"], "DEVELOPER_DEFINED_METADATA_STRING");
    assert_eq!(details(&e)["app_id"], 1517776481860111u64);
}

#[test]
fn message_edit_gets_an_id_per_edit() {
    let e = one("message_edit");
    assert_eq!(e.kind, EventKind::MESSAGE_EDIT);
    assert_eq!(opt(&e.text), Some("hello, world! (edited)"));
    assert_eq!(e.event_id.as_str(), format!("{MID}#edit1"));
    assert_eq!(details(&e)["num_edit"], 1);
}

#[test]
fn reaction() {
    let e = one("reaction");
    assert_eq!(e.kind, EventKind::REACTION);
    assert_parties(&e, PAGE, PSID, PAGE);
    assert_eq!(opt(&e.text), Some("\u{2764}\u{fe0f}"));
    assert_eq!(opt(&e.payload), Some("love"));
    assert_eq!(details(&e)["action"], "react");
    assert_eq!(details(&e)["mid"], MID);
    assert!(e.event_id.starts_with("reaction:"), "{}", e.event_id);
}

#[test]
fn read() {
    let e = one("read");
    assert_eq!(e.kind, EventKind::READ);
    assert_eq!(details(&e)["watermark"], 1458668856253u64);
    assert!(e.event_id.starts_with("read:"));
}

#[test]
fn delivery_without_timestamp() {
    let e = one("delivery");
    assert_eq!(e.kind, EventKind::DELIVERY);
    assert_eq!(e.timestamp_ms, 0);
    assert_eq!(
        details(&e)["mids"],
        json!(["mid.1458668856218:ed81099e15d3f4f233"])
    );
    assert_eq!(
        e.event_id,
        events("delivery")[0].event_id,
        "ids must be stable"
    );
}

#[test]
fn postback_with_referral() {
    let e = one("postback");
    assert_eq!(e.kind, EventKind::POSTBACK);
    assert_parties(&e, "0", "0", "0");
    assert_eq!(opt(&e.text), Some("title"));
    assert_eq!(opt(&e.payload), Some("USER_DEFINED_PAYLOAD"));
    assert_eq!(e.event_id.as_str(), "m_1457764197618:41d102a3e1ae206a38");
    assert_eq!(
        details(&e)["referral"]["ref"],
        "USER_DEFINED_REFERRAL_PARAM"
    );
}

#[test]
fn referral_shortlink() {
    let e = one("referral");
    assert_eq!(e.kind, EventKind::REFERRAL);
    assert_eq!(opt(&e.payload), Some("USER_DEFINED_REFERRAL_PARAM"));
    assert_eq!(details(&e)["source"], "SHORTLINK");
    assert_eq!(details(&e)["type"], "OPEN_THREAD");
}

#[test]
fn referral_ads() {
    let e = one("referral_ads");
    assert_eq!(e.kind, EventKind::REFERRAL);
    assert_eq!(opt(&e.payload), Some("REF_DATA_IF_SPECIFIED_IN_THE_AD"));
    assert_eq!(details(&e)["source"], "ADS");
    assert_eq!(details(&e)["ad_id"], "6045246247433");
    assert_eq!(
        details(&e)["ads_context_data"]["ad_title"],
        "TITLE_OF_THE_AD"
    );
}

#[test]
fn optin_plugin() {
    let e = one("optin");
    assert_eq!(e.kind, EventKind::OPTIN);
    assert_eq!(opt(&e.payload), Some("PASS_THROUGH_PARAM"));
    assert_eq!(details(&e)["user_ref"], "REF_FROM_CHECKBOX_PLUGIN");
    assert_eq!(e.sender_id.as_str(), PSID);
}

#[test]
fn handover_pass_with_a_numeric_app_id() {
    let e = one("handover_pass");
    assert_eq!(e.kind, EventKind::HANDOVER);
    assert_eq!(details(&e)["handover"], "pass_thread_control");
    assert_eq!(details(&e)["new_owner_app_id"], "1234567890");
    assert_eq!(opt(&e.payload), Some("Pass thread control"));
}

#[test]
fn handover_request_with_null_metadata() {
    let e = one("handover_request");
    assert_eq!(e.kind, EventKind::HANDOVER);
    assert_eq!(details(&e)["handover"], "request_thread_control");
    assert_eq!(details(&e)["requested_owner_app_id"], "1234567890");
    assert_eq!(opt(&e.payload), None);
}

#[test]
fn account_linking() {
    let e = one("account_linking_linked");
    assert_eq!(e.kind, EventKind::ACCOUNT_LINKING);
    assert_eq!(opt(&e.payload), Some("linked"));
    assert_eq!(
        details(&e)["authorization_code"],
        "PASS_THROUGH_AUTHORIZATION_CODE"
    );
}

#[test]
fn policy_enforcement_without_sender() {
    let e = one("policy_enforcement");
    assert_eq!(e.kind, EventKind::POLICY_ENFORCEMENT);
    assert_parties(&e, PAGE, "", PAGE);
    assert_eq!(opt(&e.payload), Some("block"));
    assert!(opt(&e.text).unwrap().starts_with("The bot violated"));
}

#[test]
fn game_play() {
    let e = one("game_play");
    assert_eq!(e.kind, EventKind::GAME_PLAY);
    assert_eq!(opt(&e.payload), Some("{\"some_key\":\"SOME_VALUE\"}"));
    assert_eq!(details(&e)["score"], 99);
    assert_eq!(details(&e)["context_type"], "THREAD");
}

#[test]
fn response_feedback() {
    let e = one("response_feedback");
    assert_eq!(e.kind, EventKind::FEEDBACK);
    assert_eq!(opt(&e.payload), Some("Good response"));
    assert_eq!(details(&e)["mid"], MID);
}

#[test]
fn standby_items_are_flagged_and_messaging_items_are_not() {
    let events = events("standby");
    assert_eq!(events.len(), 3, "{events:#?}");
    assert_eq!(events[0].kind, EventKind::MESSAGE);
    assert!(!events[0].flags.contains(EventFlags::STANDBY));
    for (e, user) in events[1..].iter().zip(["user1", "user2"]) {
        assert!(e.flags.contains(EventFlags::STANDBY));
        assert_eq!(e.kind, EventKind::OTHER, "no content");
        assert_eq!(e.sender_id.as_str(), user);
        assert_eq!(e.account_id.as_str(), "page1");
    }
    assert_ne!(events[1].event_id, events[2].event_id);
}

#[test]
fn batched_entries_for_two_pages() {
    let events = events("batched_multi_entry");
    let got: Vec<_> = events
        .iter()
        .map(|e| (e.account_id.as_str(), opt(&e.text).unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("1895382890692545", "test 1"),
            ("189538289069256", "test 2")
        ]
    );
}

#[test]
fn instagram_bodies_are_marked() {
    let e = one("instagram_message_quick_reply");
    assert!(e.flags.contains(EventFlags::INSTAGRAM));
    assert_eq!(e.kind, EventKind::QUICK_REPLY);
    assert_eq!(opt(&e.payload), Some("PAYLOAD"));
    assert_eq!(e.sender_id.as_str(), "6543210987654321");
}

#[test]
fn every_fixture_in_the_folder_is_named_by_a_test_of_this_file() {
    // A new fixture needs its own test: each must be named, in quotes, somewhere in
    // this file outside this test.
    let source = include_str!("webhooks.rs");
    let start = source
        .find("fn every_fixture_in_the_folder_is_named")
        .unwrap();
    let end = start + source[start..].find("\n}\n").unwrap();
    let others = format!("{}{}", &source[..start], &source[end..]);
    let mut found = 0;
    for entry in std::fs::read_dir(fixtures_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(stem) = name.strip_suffix(".json") {
            found += 1;
            assert!(
                others.contains(&format!("\"{stem}\"")),
                "fixture {name} has no test"
            );
        }
    }
    assert!(found >= 20, "only {found} fixtures in {:?}", fixtures_dir());
}

#[test]
fn more_events_every_other_shape() {
    let events = events("more_events");
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::MESSAGE,
            EventKind::MESSAGE,
            EventKind::REACTION,
            EventKind::HANDOVER,
            EventKind::HANDOVER,
            EventKind::ACCOUNT_LINKING,
            EventKind::OPTIN,
            EventKind::FEEDBACK,
            EventKind::REFERRAL,
            EventKind::POLICY_ENFORCEMENT,
        ]
    );
    assert_eq!(details(&events[0])["commands"], json!([{ "name": "help" }]));

    let attachments: Vec<_> = events[1]
        .attachments
        .iter()
        .map(|a| (a.kind, a.type_name.as_str(), opt(&a.url)))
        .collect();
    assert_eq!(
        attachments,
        [
            (
                AttachmentKind::STICKER,
                "sticker",
                Some("https://example.com/sticker.png")
            ),
            (AttachmentKind::LOCATION, "location", None),
            (AttachmentKind::TEMPLATE, "template", None),
            (
                AttachmentKind::OTHER,
                "ig_reel",
                Some("https://example.com/reel.mp4")
            ),
            (AttachmentKind::OTHER, "product", None),
            (
                AttachmentKind::FALLBACK,
                "fallback",
                Some("https://example.com/shared")
            ),
            (
                AttachmentKind::AUDIO,
                "audio",
                Some("https://example.com/a.mp3")
            ),
            (
                AttachmentKind::VIDEO,
                "video",
                Some("https://example.com/v.mp4")
            ),
            (
                AttachmentKind::FILE,
                "file",
                Some("https://example.com/f.pdf")
            ),
            (AttachmentKind::OTHER, "something_new", None),
        ]
    );
    let location: Value = serde_json::from_str(&events[1].attachments[1].raw_json).unwrap();
    assert_eq!(location["payload"]["coordinates"]["lat"], 52.52);

    assert_eq!(details(&events[2])["action"], "unreact");
    assert_eq!(details(&events[3])["handover"], "take_thread_control");
    assert_eq!(details(&events[3])["previous_owner_app_id"], "123");
    assert_eq!(opt(&events[3].payload), Some("back to bot"));
    assert_eq!(
        details(&events[4])["app_roles"]["123456789"],
        json!(["primary_receiver"])
    );
    assert_eq!(events[4].sender_id.as_str(), "");
    assert_eq!(opt(&events[5].payload), Some("unlinked"));
    assert_eq!(opt(&events[6].payload), Some("NEWS"));
    assert_eq!(
        details(&events[6])["notification_messages_token"],
        "TOKEN_X"
    );
    assert_eq!(
        details(&events[7])["feedback_screens"][0]["questions"]["q1"]["payload"],
        "4"
    );
    assert_eq!(events[8].sender_id.as_str(), "USER_REF_123");
    assert_eq!(details(&events[8])["source"], "CUSTOMER_CHAT_PLUGIN");
    assert_eq!(opt(&events[9].payload), Some("warning"));

    let mut ids: Vec<_> = events.iter().map(|e| e.event_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "event ids must be distinct");
}

/// Three Pages, messaging and standby items in one body: every event, in order.
#[test]
fn a_mixed_body_yields_every_event_in_order() {
    let entries = |name: &str| -> Vec<Value> {
        let body: Value = serde_json::from_slice(&fixture(name)).unwrap();
        body["entry"].as_array().unwrap().clone()
    };
    let mut all = entries("multi_entry_multi_item");
    all.extend(entries("standby"));
    all.extend(entries("message_quick_reply"));
    let body = serde_json::to_vec(&json!({ "object": "page", "entry": all })).unwrap();
    let events = parse(&adapter_with(""), &body).unwrap();
    let got: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.account_id.as_str(),
                e.kind,
                e.flags.contains(EventFlags::STANDBY),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (PAGE, EventKind::MESSAGE, false),
            (PAGE, EventKind::MESSAGE, false),
            ("1895382890692545", EventKind::MESSAGE, false),
            ("1895382890692545", EventKind::POSTBACK, false),
            ("page1", EventKind::MESSAGE, false),
            ("page1", EventKind::OTHER, true),
            ("page1", EventKind::OTHER, true),
            (PAGE, EventKind::QUICK_REPLY, false),
        ]
    );
}

#[test]
fn changes_entries_and_unknown_events_are_kept_as_other() {
    let body = br#"{"object":"page","entry":[
        {"id":"1","time":1,"changes":[{"field":"messages","value":{"text":"test button"}}]},
        {"id":"1","time":1,"messaging":[{"sender":{"id":2},"recipient":{"id":1},"timestamp":"5","brand_new_event":{"x":1}}]}
    ]}"#;
    let events = parse(&adapter_with(""), body).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].kind, EventKind::OTHER);
    assert_eq!(details(&events[0])["change"], "messages");
    assert_eq!(events[1].kind, EventKind::OTHER);
    assert_eq!(
        events[1].sender_id.as_str(),
        "2",
        "numeric ids become strings"
    );
    assert_eq!(events[1].timestamp_ms, 5, "string timestamps are read");
    let raw: Value = serde_json::from_str(&events[1].raw_json).unwrap();
    assert_eq!(raw["brand_new_event"]["x"], 1);
}

#[test]
fn bodies_that_are_not_webhooks_are_clear_errors() {
    let adapter = adapter_with("");
    for (body, says) in [
        (&b""[..], "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"[1]", "not a JSON object"),
        (b"{\"entry\":[]}", "missing \"object\""),
        (b"{\"object\":\"page\"}", "missing \"entry\""),
        (b"{\"object\":\"page\",\"entry\":{}}", "missing \"entry\""),
        (
            b"{\"object\":\"whatsapp_business_account\",\"entry\":[]}",
            "not served",
        ),
    ] {
        let err = parse(&adapter, body).unwrap_err();
        assert!(
            err.contains(says),
            "{}: {err}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn signature_vectors() {
    let vectors: Value = serde_json::from_slice(&fixture("signature_vectors")).unwrap();
    let sha1_ok = adapter_with(",\"allow_sha1_signature\":true");
    for v in vectors["vectors"].as_array().unwrap() {
        let secret = v["app_secret"].as_str().unwrap();
        let adapter = MessengerChannel::from_json(
            &format!(r#"{{"app_secret":"{secret}","verify_token":"t","pages":[{{"id":"1","access_token":"a"}}],"allow_sha1_signature":true}}"#),
            Log::default(),
        )
        .unwrap();
        let body = v["body"].as_str().unwrap().as_bytes();
        let sha256 = v["x_hub_signature_256"].as_str().unwrap();
        assert_eq!(sign_sha256(secret.as_bytes(), body), sha256);
        assert_eq!(
            verify(&adapter, body, &[("x-hub-signature-256", sha256)]),
            Verdict::Accept
        );
        let upper = format!("sha256={}", sha256[7..].to_uppercase());
        assert_eq!(
            verify(&adapter, body, &[("x-hub-signature-256", &upper)]),
            Verdict::Accept
        );
        let sha1 = v["x_hub_signature"].as_str().unwrap();
        assert_eq!(
            verify(&adapter, body, &[("x-hub-signature", sha1)]),
            Verdict::Accept
        );
    }
    for v in vectors["negative"].as_array().unwrap() {
        let body = v["body"].as_str().unwrap().as_bytes();
        let header = v["x_hub_signature"].as_str().unwrap();
        assert_ne!(
            verify(&sha1_ok, body, &[("x-hub-signature", header)]),
            Verdict::Accept
        );
    }
}

fn status(verdict: Verdict) -> u16 {
    match verdict {
        Verdict::Accept => 0,
        Verdict::Respond(r) => r.status,
    }
}

#[test]
fn a_signature_header_sent_twice_is_a_400_whatever_the_order() {
    let adapter = adapter_with(",\"allow_sha1_signature\":true");
    let body = fixture("message_text");
    let good = sign_sha256(SECRET.as_bytes(), &body);
    let wrong = sign_sha256(b"other", &body);
    for name in ["x-hub-signature-256", "X-Hub-Signature-256"] {
        for pair in [[&good, &wrong], [&wrong, &good], [&good, &good]] {
            let headers = [
                (name, pair[0].as_str()),
                ("x-hub-signature-256", pair[1].as_str()),
            ];
            assert_eq!(
                status(verify(&adapter, &body, &headers)),
                400,
                "{headers:?}"
            );
        }
    }
    let sha1_twice = [
        ("x-hub-signature", "sha1=00"),
        ("x-hub-signature", "sha1=01"),
    ];
    assert_eq!(status(verify(&adapter, &body, &sha1_twice)), 400);
}

#[test]
fn sha1_is_refused_unless_allowed_and_never_when_sha256_is_present() {
    let body = fixture("message_text");
    let sha1 = {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(&body);
        format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
    };
    assert_eq!(
        status(verify(
            &adapter_with(""),
            &body,
            &[("x-hub-signature", &sha1)]
        )),
        401
    );
    let allowed = adapter_with(",\"allow_sha1_signature\":true");
    assert_eq!(
        verify(&allowed, &body, &[("x-hub-signature", &sha1)]),
        Verdict::Accept
    );
    // A wrong sha256 is not rescued by a right sha1.
    let wrong = sign_sha256(b"other", &body);
    assert_eq!(
        status(verify(
            &allowed,
            &body,
            &[("x-hub-signature-256", &wrong), ("x-hub-signature", &sha1)]
        )),
        403
    );
}

#[test]
fn a_large_body_full_of_escapes_verifies() {
    // ~900 KB of \uXXXX escapes, as Meta sends non-ASCII text.
    let text = "\\u00e4\\u00f6\\u00e5 ".repeat(50_000);
    let body = String::from_utf8(fixture("message_text"))
        .unwrap()
        .replace("Hello, bot!", &text)
        .into_bytes();
    assert!(body.len() > 900_000);
    let adapter = adapter_with("");
    let signature = sign_sha256(SECRET.as_bytes(), &body);
    assert_eq!(
        verify(&adapter, &body, &[("x-hub-signature-256", &signature)]),
        Verdict::Accept
    );
    let events = parse(&adapter, &body).unwrap();
    assert!(opt(&events[0].text).unwrap().starts_with("äöå "));
}

fn mutate(mut body: Vec<u8>, edits: &[(usize, u8)]) -> Vec<u8> {
    for &(at, byte) in edits {
        if !body.is_empty() {
            let i = at % body.len();
            body[i] = byte;
        }
    }
    body
}

fn all_fixtures() -> Vec<Vec<u8>> {
    let mut names: Vec<_> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&adapter_with(""), &body);
    }

    #[test]
    fn truncated_and_mutated_fixtures_give_events_or_a_clear_error(
        which in 0usize..64,
        cut in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
    ) {
        let fixtures = all_fixtures();
        let body = &fixtures[which % fixtures.len()];
        let truncated = body[..cut.index(body.len() + 1)].to_vec();
        for candidate in [truncated, mutate(body.clone(), &edits)] {
            match parse(&adapter_with(""), &candidate) {
                Ok(events) => prop_assert!(events.iter().all(|e| !e.event_id.is_empty())),
                Err(message) => prop_assert!(message.starts_with("bad webhook body: ")),
            }
        }
    }

    #[test]
    fn verify_never_panics_on_odd_headers(value in ".{0,100}", body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let adapter = adapter_with(",\"allow_sha1_signature\":true");
        let v = verify(&adapter, &body, &[("x-hub-signature-256", &value), ("x-hub-signature", &value)]);
        prop_assert!(matches!(v, Verdict::Respond(ref r) if r.status == 401 || r.status == 403));
    }
}
