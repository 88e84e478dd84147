//! The Send API and channel operations against a fake Graph API on 127.0.0.1: the
//! exact JSON of every message kind, the limits, and failures handled by class.

use std::time::Duration;

use adapter_api::{
    abi_stable::std_types::ROption, Adapter, AdapterError, Button, ButtonKind, Card, ErrorKind,
    Media, MediaKind, MessagingType, OutboundMessage, QuickReply, QuickReplyKind, SendReceipt,
    SenderAction,
};
use messenger_adapter::{channel, Log};
use sandbox::{SandboxGraph, Scripted};
use serde_json::{json, Value};

const PAGE: &str = "111";
const TOKEN: &str = "page-token";
const USER: &str = "42";

fn adapter(graph: &str, extra: &str) -> Adapter {
    let settings = format!(
        r#"{{"app_secret":"s","verify_token":"v","graph_api_base":"{graph}",
            "pages":[{{"id":"{PAGE}","access_token":"{TOKEN}"}}],
            "backoff_base_ms":5,"backoff_max_ms":50{extra}}}"#
    );
    Adapter::new(channel::adapter(&settings, Log::default()).unwrap())
}

/// Host services that keep every log record the plugin writes.
#[derive(Clone, Default)]
struct Records(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl adapter_api::HostServices for Records {
    fn log_enabled(&self, _: adapter_api::LogLevel) -> bool {
        true
    }

    fn log(
        &self,
        _: adapter_api::LogLevel,
        _: adapter_api::abi_stable::std_types::RStr<'_>,
        message: adapter_api::abi_stable::std_types::RStr<'_>,
    ) {
        self.0.lock().unwrap().push(message.to_string());
    }
}

impl Records {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// [`adapter`], logging into the returned records.
fn logging_adapter(graph: &str, extra: &str) -> (Adapter, Records) {
    let settings = format!(
        r#"{{"app_secret":"s","verify_token":"v","graph_api_base":"{graph}",
            "pages":[{{"id":"{PAGE}","access_token":"{TOKEN}"}}],
            "backoff_base_ms":5,"backoff_max_ms":50{extra}}}"#
    );
    let records = Records::default();
    let host = adapter_api::HostServices_TO::from_value(
        records.clone(),
        adapter_api::abi_stable::sabi_trait::TD_Opaque,
    );
    let log = Log::to_host(host, "messenger_adapter");
    let adapter = Adapter::new(channel::adapter(&settings, log).unwrap());
    (adapter, records)
}

async fn setup(extra: &str) -> (SandboxGraph, Adapter) {
    let graph = SandboxGraph::start().await.unwrap();
    let adapter = adapter(&graph.url, extra);
    (graph, adapter)
}

async fn send(adapter: &Adapter, message: OutboundMessage) -> Result<SendReceipt, AdapterError> {
    adapter.send(message, Duration::from_secs(20)).await
}

fn text(t: &str) -> OutboundMessage {
    OutboundMessage::text(PAGE, USER, t)
}

/// Sends `message` and returns the bodies the Send API received.
async fn bodies(message: OutboundMessage) -> Vec<Value> {
    let (graph, adapter) = setup("").await;
    let receipt = send(&adapter, message).await.unwrap();
    let calls = graph.calls();
    assert_eq!(receipt.parts as usize, calls.len());
    for call in &calls {
        assert_eq!(call.path, "/v25.0/me/messages");
        assert_eq!(call.query["access_token"], TOKEN);
        assert_eq!(call.query["appsecret_proof"].len(), 64);
    }
    calls.into_iter().map(|c| c.body).collect()
}

fn some(s: &str) -> ROption<adapter_api::abi_stable::std_types::RString> {
    ROption::RSome(s.into())
}

#[tokio::test(flavor = "multi_thread")]
async fn text_and_its_receipt() {
    let (graph, adapter) = setup("").await;
    let receipt = send(&adapter, text("hi")).await.unwrap();
    assert_eq!(receipt.parts, 1);
    assert_eq!(receipt.recipient_id.as_str(), USER);
    assert!(receipt.message_id.starts_with("m_sandbox_"));
    assert_eq!(
        graph.calls()[0].body,
        json!({ "recipient": { "id": USER }, "messaging_type": "RESPONSE", "message": { "text": "hi" } })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn long_text_is_split_and_sent_in_order() {
    let paragraph = "Sentence number one is here. ".repeat(40); // ~1,160 characters
    let long = format!("{paragraph}\n\n{paragraph}\n\n{paragraph}");
    let mut message = text(&long);
    message.quick_replies.push(QuickReply::text("More", "MORE"));
    let bodies = bodies(message).await;
    assert_eq!(bodies.len(), 3);
    for body in &bodies {
        let part = body["message"]["text"].as_str().unwrap();
        assert_eq!(part.trim_end(), paragraph.trim_end());
    }
    assert!(bodies[0]["message"].get("quick_replies").is_none());
    assert_eq!(bodies[2]["message"]["quick_replies"][0]["payload"], "MORE");
}

#[tokio::test(flavor = "multi_thread")]
async fn quick_replies_of_every_kind() {
    let mut message = text("Pick one");
    message
        .quick_replies
        .push(QuickReply::text("Red", "COLOR_RED"));
    let mut with_image = QuickReply::text("Blue", "COLOR_BLUE");
    with_image.image_url = some("https://example.com/blue.png");
    message.quick_replies.push(with_image);
    for kind in [
        QuickReplyKind::USER_PHONE_NUMBER,
        QuickReplyKind::USER_EMAIL,
    ] {
        let mut q = QuickReply::text("", "");
        q.kind = kind;
        message.quick_replies.push(q);
    }
    assert_eq!(
        bodies(message).await[0]["message"],
        json!({
            "text": "Pick one",
            "quick_replies": [
                { "content_type": "text", "title": "Red", "payload": "COLOR_RED" },
                { "content_type": "text", "title": "Blue", "payload": "COLOR_BLUE", "image_url": "https://example.com/blue.png" },
                { "content_type": "user_phone_number" },
                { "content_type": "user_email" },
            ],
        })
    );
}

fn button(kind: ButtonKind, title: &str, value: &str) -> Button {
    Button {
        kind,
        title: title.into(),
        value: value.into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn buttons_become_a_button_template() {
    let mut message = text("What next?");
    message
        .buttons
        .push(button(ButtonKind::URL, "Open", "https://example.com"));
    message
        .buttons
        .push(button(ButtonKind::POSTBACK, "Start", "START"));
    message
        .buttons
        .push(button(ButtonKind::PHONE_NUMBER, "Call", "+15105551234"));
    assert_eq!(
        bodies(message).await[0]["message"],
        json!({ "attachment": { "type": "template", "payload": {
            "template_type": "button",
            "text": "What next?",
            "buttons": [
                { "type": "web_url", "title": "Open", "url": "https://example.com" },
                { "type": "postback", "title": "Start", "payload": "START" },
                { "type": "phone_number", "title": "Call", "payload": "+15105551234" },
            ],
        }}})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cards_become_a_generic_template_after_the_text() {
    let mut message = text("Our picks");
    message.cards.push(Card {
        title: "Shoe".into(),
        subtitle: some("Comfortable"),
        image_url: some("https://example.com/shoe.png"),
        default_url: some("https://example.com/shoe"),
        buttons: vec![button(ButtonKind::POSTBACK, "Buy", "BUY_SHOE")].into(),
    });
    message.cards.push(Card {
        title: "Hat".into(),
        subtitle: ROption::RNone,
        image_url: ROption::RNone,
        default_url: ROption::RNone,
        buttons: Vec::new().into(),
    });
    let bodies = bodies(message).await;
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0]["message"], json!({ "text": "Our picks" }));
    assert_eq!(
        bodies[1]["message"],
        json!({ "attachment": { "type": "template", "payload": {
            "template_type": "generic",
            "elements": [
                {
                    "title": "Shoe",
                    "subtitle": "Comfortable",
                    "image_url": "https://example.com/shoe.png",
                    "default_action": { "type": "web_url", "url": "https://example.com/shoe" },
                    "buttons": [{ "type": "postback", "title": "Buy", "payload": "BUY_SHOE" }],
                },
                { "title": "Hat" },
            ],
        }}})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn media_by_url_and_by_attachment_id() {
    let mut by_url = OutboundMessage::new(PAGE, USER);
    by_url.media = ROption::RSome(Media {
        kind: MediaKind::VIDEO,
        url: some("https://example.com/v.mp4"),
        attachment_id: ROption::RNone,
    });
    assert_eq!(
        bodies(by_url).await[0]["message"],
        json!({ "attachment": { "type": "video", "payload": { "url": "https://example.com/v.mp4", "is_reusable": true } } })
    );
    let mut by_id = OutboundMessage::new(PAGE, USER);
    by_id.media = ROption::RSome(Media {
        kind: MediaKind::FILE,
        url: ROption::RNone,
        attachment_id: some("1857777774821032"),
    });
    assert_eq!(
        bodies(by_id).await[0]["message"],
        json!({ "attachment": { "type": "file", "payload": { "attachment_id": "1857777774821032" } } })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sender_actions_go_alone() {
    for (action, name) in [
        (SenderAction::TYPING_ON, "typing_on"),
        (SenderAction::TYPING_OFF, "typing_off"),
        (SenderAction::MARK_SEEN, "mark_seen"),
    ] {
        let mut message = text("ignored");
        message.sender_action = action;
        assert_eq!(
            bodies(message).await,
            [json!({ "recipient": { "id": USER }, "sender_action": name })]
        );
    }
    let mut react = text("\u{2764}");
    react.sender_action = SenderAction::REACT;
    react.reply_to = some("m_abc");
    assert_eq!(
        bodies(react).await[0],
        json!({ "recipient": { "id": USER }, "sender_action": "react",
                "payload": { "message_id": "m_abc", "reaction": "\u{2764}" } })
    );
    let mut unreact = OutboundMessage::new(PAGE, USER);
    unreact.sender_action = SenderAction::UNREACT;
    unreact.reply_to = some("m_abc");
    assert_eq!(
        bodies(unreact).await[0],
        json!({ "recipient": { "id": USER }, "sender_action": "unreact", "payload": { "message_id": "m_abc" } })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn messaging_types_tags_and_options() {
    let mut tagged = text("A human here");
    tagged.messaging_type = MessagingType::MESSAGE_TAG;
    tagged.tag = some("HUMAN_AGENT");
    tagged.reply_to = some("m_question");
    tagged.options_json =
        r#"{"notification_type":"SILENT_PUSH","persona_id":"123456","metadata":"ticket-9"}"#.into();
    assert_eq!(
        bodies(tagged).await[0],
        json!({
            "recipient": { "id": USER },
            "messaging_type": "MESSAGE_TAG",
            "tag": "HUMAN_AGENT",
            "notification_type": "SILENT_PUSH",
            "persona_id": "123456",
            "reply_to": { "mid": "m_question" },
            "message": { "text": "A human here", "metadata": "ticket-9" },
        })
    );
    let mut update = text("News");
    update.messaging_type = MessagingType::UPDATE;
    assert_eq!(bodies(update).await[0]["messaging_type"], "UPDATE");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hosts_idempotency_key_is_accepted_and_not_sent_to_the_send_api() {
    let mut message = text("once");
    message.options_json = r#"{"idempotency_key":"reply-7f3a","metadata":"m"}"#.into();
    assert_eq!(
        bodies(message).await[0],
        json!({
            "recipient": { "id": USER },
            "messaging_type": "RESPONSE",
            "message": { "text": "once", "metadata": "m" },
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_raw_message_object_passes_through_untouched() {
    let raw = json!({ "attachment": { "type": "template", "payload": {
        "template_type": "media",
        "elements": [{ "media_type": "image", "attachment_id": "99", "buttons": [] }],
    }}});
    let mut message = OutboundMessage::new(PAGE, USER);
    message.raw_json = raw.to_string().into();
    assert_eq!(bodies(message).await[0]["message"], raw);
}

/// Each case: the message, and the field its error must name. Nothing is sent.
#[tokio::test(flavor = "multi_thread")]
async fn limits_are_checked_before_any_request() {
    let mut cases: Vec<(OutboundMessage, &str)> = Vec::new();
    let with = |f: &dyn Fn(&mut OutboundMessage)| {
        let mut m = text("hello");
        f(&mut m);
        m
    };
    cases.push((
        with(&|m| m.quick_replies.push(QuickReply::text("x".repeat(21), "P"))),
        "quick_replies[0].title",
    ));
    cases.push((
        with(&|m| {
            m.quick_replies
                .push(QuickReply::text("T", "p".repeat(1001)))
        }),
        "quick_replies[0].payload",
    ));
    cases.push((
        with(&|m| {
            (0..14).for_each(|i| m.quick_replies.push(QuickReply::text("T", format!("P{i}"))))
        }),
        "quick_replies",
    ));
    let card = |title: String, subtitle: Option<String>| Card {
        title: title.into(),
        subtitle: subtitle.map(Into::into).into(),
        image_url: ROption::RNone,
        default_url: ROption::RNone,
        buttons: Vec::new().into(),
    };
    cases.push((
        with(&|m| m.cards.push(card("t".repeat(81), None))),
        "cards[0].title",
    ));
    cases.push((
        with(&|m| m.cards.push(card("t".into(), Some("s".repeat(81))))),
        "cards[0].subtitle",
    ));
    cases.push((
        with(&|m| (0..11).for_each(|_| m.cards.push(card("t".into(), None)))),
        "cards",
    ));
    cases.push((
        {
            let mut m = text(&"b".repeat(641));
            m.buttons.push(button(ButtonKind::POSTBACK, "Go", "GO"));
            m
        },
        "text",
    ));
    cases.push((
        with(&|m| (0..4).for_each(|_| m.buttons.push(button(ButtonKind::POSTBACK, "Go", "GO")))),
        "buttons",
    ));
    cases.push((
        with(&|m| {
            m.buttons
                .push(button(ButtonKind::URL, "Go", "javascript:x"))
        }),
        "buttons[0].value",
    ));
    cases.push((
        with(&|m| {
            m.buttons
                .push(button(ButtonKind::PHONE_NUMBER, "Call", "555"))
        }),
        "buttons[0].value",
    ));
    cases.push((
        with(&|m| m.options_json = format!(r#"{{"metadata":"{}"}}"#, "m".repeat(1000)).into()),
        "options_json.metadata",
    ));
    cases.push((
        with(&|m| m.options_json = r#"{"colour":"red"}"#.into()),
        "options_json.colour",
    ));
    cases.push((
        with(&|m| m.options_json = r#"{"idempotency_key":7}"#.into()),
        "options_json.idempotency_key",
    ));
    cases.push((
        with(&|m| {
            m.messaging_type = MessagingType::MESSAGE_TAG;
            m.tag = some("ACCOUNT_UPDATE");
        }),
        "tag",
    ));
    cases.push((OutboundMessage::new(PAGE, USER), "message"));
    cases.push((OutboundMessage::text(PAGE, "", "hi"), "recipient_id"));

    let (graph, adapter) = setup("").await;
    for (message, field) in cases {
        let err = send(&adapter, message).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::INVALID_MESSAGE, "{err}");
        assert!(
            err.message.contains(&format!("{field}: ")),
            "expected {field:?} in {err}"
        );
    }
    let err = send(&adapter, OutboundMessage::text("999", USER, "hi"))
        .await
        .unwrap_err();
    assert!(
        err.message
            .contains("no access token is configured for page \"999\""),
        "{err}"
    );
    assert!(
        graph.calls().is_empty(),
        "a refused message reached the Graph API"
    );
}

fn graph_error(code: i64, subcode: i64) -> Scripted {
    Scripted::graph_error(400, code, subcode, "scripted failure")
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_errors_are_retried_then_succeed() {
    let (graph, adapter) = setup("").await;
    graph.script([
        Scripted::graph_error(500, 0, 0, "server error"),
        graph_error(1200, 0),
        graph_error(2, 0),
    ]);
    let receipt = send(&adapter, text("persistent")).await.unwrap();
    assert!(!receipt.message_id.is_empty());
    let calls = graph.calls();
    assert_eq!(calls.len(), 4);
    assert!(calls.iter().all(|c| c.text() == Some("persistent")));
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_errors_give_up_after_max_attempts() {
    let (graph, adapter) = setup(r#","max_attempts":3"#).await;
    graph.script((0..5).map(|_| graph_error(1200, 0)));
    let err = send(&adapter, text("x")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::TRANSIENT);
    assert_eq!(graph.calls().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_wait_as_the_usage_headers_say() {
    let (graph, adapter) = setup("").await;
    let usage = r#"{"111":[{"type":"pages","call_count":100,"total_cputime":20,"total_time":20,"estimated_time_to_regain_access":0}]}"#;
    graph.script([graph_error(613, 0).header("x-business-use-case-usage", usage)]);
    send(&adapter, text("after the limit")).await.unwrap();
    assert_eq!(graph.calls().len(), 2);

    // A limit that clears in minutes is reported, not waited out, with the wait.
    let usage =
        r#"{"111":[{"type":"pages","call_count":100,"estimated_time_to_regain_access":5}]}"#;
    graph.script([graph_error(4, 0).header("x-business-use-case-usage", usage)]);
    let err = send(&adapter, text("later")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::RATE_LIMITED);
    assert_eq!(err.retry_after_ms, 300_000);
    assert_eq!(graph.calls().len(), 3);

    graph.script([Scripted {
        status: 429,
        body: json!({}),
        headers: vec![],
    }]);
    send(&adapter, text("429 then ok")).await.unwrap();
    assert_eq!(graph.calls().len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn graph_codes_17_32_230_2022_and_2_2018344_get_their_documented_handling() {
    // (code, subcode, kind, tries with max_attempts 2)
    for (code, subcode, kind, tries) in [
        (17, 0, ErrorKind::RATE_LIMITED, 2),
        (32, 0, ErrorKind::RATE_LIMITED, 2),
        (230, 0, ErrorKind::PERMANENT, 1),
        (2022, 0, ErrorKind::PERMANENT, 1),
        (2, 2_018_344, ErrorKind::PERMANENT, 1),
        (2, 0, ErrorKind::TRANSIENT, 2),
    ] {
        let (graph, adapter) = setup(r#","max_attempts":2"#).await;
        graph.script([graph_error(code, subcode), graph_error(code, subcode)]);
        let err = send(&adapter, text("x")).await.unwrap_err();
        assert_eq!(err.kind, kind, "({code}, {subcode}): {err}");
        assert_eq!(graph.calls().len(), tries, "({code}, {subcode}) tries");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_wait_of_a_rate_limit_is_read_from_x_app_usage_x_page_usage_and_retry_after() {
    let app = r#"{"call_count":100,"total_time":20,"total_cputime":20,"estimated_time_to_regain_access":2}"#;
    let page = r#"{"call_count":100,"estimated_time_to_regain_access":3}"#;
    for (header, value, wait_ms) in [
        ("x-app-usage", app, 120_000),
        ("x-page-usage", page, 180_000),
        ("retry-after", "7", 7_000),
    ] {
        let (graph, adapter) = setup("").await;
        graph.script([graph_error(4, 0).header(header, value)]);
        let err = send(&adapter, text("x")).await.unwrap_err();
        assert_eq!(
            (err.kind, err.retry_after_ms),
            (ErrorKind::RATE_LIMITED, wait_ms),
            "{header}: {err}"
        );
        assert_eq!(
            graph.calls().len(),
            1,
            "{header}: a wait of seconds is reported"
        );
    }
    // Both: the longer wait wins.
    let (graph, adapter) = setup("").await;
    graph.script([graph_error(4, 0)
        .header("x-page-usage", page)
        .header("retry-after", "7")]);
    let err = send(&adapter, text("x")).await.unwrap_err();
    assert_eq!(err.retry_after_ms, 180_000, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn permanent_errors_are_not_retried_and_come_back_with_code_and_trace() {
    for (code, subcode) in [
        (190, 0),
        (551, 0),
        (10, 2_018_278),
        (100, 2_018_001),
        (200, 1_545_041),
        (368, 0),
    ] {
        let (graph, adapter) = setup("").await;
        graph.script([graph_error(code, subcode)]);
        let err = send(&adapter, text("x")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::PERMANENT, "{code}: {err}");
        assert_eq!(graph.calls().len(), 1, "{code} was retried");
        let details: Value = serde_json::from_str(&err.details_json).unwrap();
        assert_eq!(details["code"], code);
        assert_eq!(details["error_subcode"], subcode);
        assert_eq!(details["fbtrace_id"], "SandboxTrace");
        assert!(!err.message.contains(TOKEN), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unanswered_request_is_not_resent_unless_allowed() {
    let (graph, adapter) = setup(r#","request_timeout_ms":150"#).await;
    graph.script([Scripted::hang()]);
    let err = send(&adapter, text("maybe delivered")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::TIMEOUT, "{err}");
    assert_eq!(
        graph.calls().len(),
        1,
        "a request that may have been processed was resent"
    );
    assert!(
        !err.message.contains(TOKEN) && !err.message.contains("access_token"),
        "{err}"
    );

    let (graph, adapter) =
        setup(r#","request_timeout_ms":150,"retry_after_timeout":true,"max_attempts":3"#).await;
    graph.script([Scripted::hang(), Scripted::hang(), Scripted::hang()]);
    let err = send(&adapter, text("resend me")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::TIMEOUT);
    assert_eq!(graph.calls().len(), 3);
}

/// A server that reads each request and hangs up without answering.
async fn hang_up_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::{atomic::AtomicUsize, Arc};
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = vec![0; 65536];
            let _ = socket.read(&mut buf).await;
            drop(socket);
        }
    });
    (url, accepted)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hang_up_after_sending_is_not_resent_and_a_refused_connection_is_retried() {
    // Hung up after the request was sent: it may have been processed; not resent,
    // and reported as an unknown outcome.
    let (url, accepted) = hang_up_server().await;
    let err = send(&adapter(&url, ""), text("x")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::TIMEOUT, "{err}");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Nothing listening: the request never left, so it is retried.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let (adapter, log) = logging_adapter(&closed, r#","max_attempts":3"#);
    let err = send(&adapter, text("x")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::TRANSIENT, "{err}");
    assert!(err.message.contains("Graph API request failed"), "{err}");
    let retries: Vec<_> = log
        .lines()
        .into_iter()
        .filter(|l| l.contains("of 3), retrying in"))
        .collect();
    assert_eq!(retries.len(), 2, "tried three times: {retries:?}");
    assert!(retries[0].contains("(try 1 of 3)"), "{retries:?}");
    assert!(retries[1].contains("(try 2 of 3)"), "{retries:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_after_a_resent_timeout_is_reported_as_an_unknown_outcome() {
    // The first try is never answered (it may have been delivered), the resend gets
    // a 5xx: the message may be on the user's screen, so it is not reported as
    // undelivered.
    let (graph, adapter) =
        setup(r#","request_timeout_ms":300,"retry_after_timeout":true,"max_attempts":2"#).await;
    graph.script([
        Scripted::hang(),
        Scripted::graph_error(500, 0, 0, "server error"),
    ]);
    let err = send(&adapter, text("maybe twice")).await.unwrap_err();
    assert_eq!(graph.calls().len(), 2);
    assert_eq!(err.kind, ErrorKind::TIMEOUT, "{err}");
    assert!(err.message.contains("HTTP 500"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_split_text_failing_after_its_first_part_is_not_reported_as_undelivered() {
    let (graph, adapter) = setup(r#","max_attempts":1"#).await;
    graph.script([
        Scripted {
            status: 200,
            body: json!({ "recipient_id": USER, "message_id": "m1" }),
            headers: vec![],
        },
        graph_error(1200, 0),
    ]);
    let long = "word ".repeat(500);
    let err = send(&adapter, text(&long)).await.unwrap_err();
    assert_eq!(graph.calls().len(), 2);
    assert_eq!(err.kind, ErrorKind::TIMEOUT, "{err}");
    assert!(err.message.contains("part 2 of 2"), "{err}");

    // The first part failing is still a clean "not delivered".
    graph.script([graph_error(1200, 0)]);
    let err = send(&adapter, text(&long)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::TRANSIENT, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_conversations_messages_keep_their_order_through_failures() {
    let (graph, adapter) = setup("").await;
    // Every third request fails once with a transient error.
    graph.script((0..30).map(|i| {
        if i % 3 == 1 {
            graph_error(1200, 0)
        } else {
            Scripted {
                status: 200,
                body: json!({ "recipient_id": USER, "message_id": format!("m{i}") }),
                headers: vec![],
            }
        }
    }));
    for i in 0..20 {
        send(&adapter, text(&format!("message {i}"))).await.unwrap();
    }
    let mut delivered: Vec<String> = Vec::new();
    for call in graph.calls() {
        let t = call.text().unwrap().to_owned();
        if delivered.last() != Some(&t) {
            delivered.push(t);
        }
    }
    let expected: Vec<_> = (0..20).map(|i| format!("message {i}")).collect();
    assert_eq!(delivered, expected);
}

async fn call(adapter: &Adapter, op: &str, input: Value) -> Result<Value, AdapterError> {
    let out = adapter
        .call(op, &input.to_string(), Duration::from_secs(10))
        .await?;
    Ok(serde_json::from_str(&out).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn channel_operations() {
    let (graph, adapter) = setup("").await;

    let profile = json!({
        "get_started": { "payload": "GET_STARTED" },
        "greeting": [{ "locale": "default", "text": "Hello {{user_first_name}}!" }],
        "ice_breakers": [{ "question": "What's new?", "payload": "NEWS" }],
        "whitelisted_domains": ["https://example.com"],
    });
    assert_eq!(
        call(&adapter, "profile.set", profile.clone())
            .await
            .unwrap(),
        json!({ "result": "success" })
    );
    call(
        &adapter,
        "profile.get",
        json!({ "fields": ["greeting", "get_started"] }),
    )
    .await
    .unwrap();
    call(
        &adapter,
        "profile.delete",
        json!({ "fields": ["greeting"] }),
    )
    .await
    .unwrap();
    call(&adapter, "handover.pass", json!({ "recipient_id": USER, "target_app_id": 263902037430900u64, "metadata": "to inbox" })).await.unwrap();
    call(&adapter, "handover.take", json!({ "recipient_id": USER }))
        .await
        .unwrap();
    call(
        &adapter,
        "handover.request",
        json!({ "recipient_id": USER, "metadata": "please" }),
    )
    .await
    .unwrap();
    let persona = call(
        &adapter,
        "personas.create",
        json!({ "name": "Ana", "profile_picture_url": "https://example.com/ana.png" }),
    )
    .await
    .unwrap();
    let persona_id = persona["id"].as_str().unwrap().to_owned();
    call(&adapter, "personas.list", json!({})).await.unwrap();
    call(
        &adapter,
        "personas.delete",
        json!({ "persona_id": persona_id }),
    )
    .await
    .unwrap();
    let uploaded = call(
        &adapter,
        "attachment.upload",
        json!({ "type": "image", "url": "https://example.com/cat.png" }),
    )
    .await
    .unwrap();
    assert!(uploaded["attachment_id"].is_string());

    let calls = graph.calls();
    let summary: Vec<_> = calls
        .iter()
        .map(|c| (c.method.as_str(), c.path.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("POST", "/v25.0/me/messenger_profile"),
            ("GET", "/v25.0/me/messenger_profile"),
            ("DELETE", "/v25.0/me/messenger_profile"),
            ("POST", "/v25.0/me/pass_thread_control"),
            ("POST", "/v25.0/me/take_thread_control"),
            ("POST", "/v25.0/me/request_thread_control"),
            ("POST", "/v25.0/me/personas"),
            ("GET", "/v25.0/me/personas"),
            ("DELETE", &*format!("/v25.0/{persona_id}")),
            ("POST", "/v25.0/me/message_attachments"),
        ]
    );
    assert_eq!(calls[0].body, profile);
    assert_eq!(calls[1].query["fields"], "greeting,get_started");
    assert_eq!(calls[2].body, json!({ "fields": ["greeting"] }));
    assert_eq!(
        calls[3].body,
        json!({ "recipient": { "id": USER }, "target_app_id": "263902037430900", "metadata": "to inbox" })
    );
    assert_eq!(calls[4].body, json!({ "recipient": { "id": USER } }));
    assert_eq!(
        calls[6].body,
        json!({ "name": "Ana", "profile_picture_url": "https://example.com/ana.png" })
    );
    assert_eq!(
        calls[9].body,
        json!({ "message": { "attachment": { "type": "image", "payload": { "url": "https://example.com/cat.png", "is_reusable": true } } } })
    );
    assert!(calls.iter().all(|c| c.query["access_token"] == TOKEN));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_upload_is_multipart() {
    let (graph, adapter) = setup("").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("note.txt");
    std::fs::write(&file, "file-content-123").unwrap();
    let out = call(
        &adapter,
        "attachment.upload",
        json!({ "type": "file", "file": file }),
    )
    .await
    .unwrap();
    assert!(out["attachment_id"].is_string());
    let upload = &graph.calls()[0];
    assert!(
        upload.content_type.starts_with("multipart/form-data"),
        "{}",
        upload.content_type
    );
    assert!(upload
        .raw_body
        .contains("name=\"filedata\"; filename=\"note.txt\""));
    assert!(upload.raw_body.contains("file-content-123"));
    assert!(
        upload
            .raw_body
            .contains(r#"{"attachment":{"payload":{"is_reusable":true},"type":"file"}}"#),
        "{}",
        upload.raw_body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_operation_input_is_refused_before_any_request() {
    let (graph, adapter) = setup("").await;
    let cases = [
        ("nope", json!({}), ErrorKind::UNSUPPORTED),
        (
            "profile.set",
            json!({ "colour": "red" }),
            ErrorKind::INVALID_MESSAGE,
        ),
        (
            "profile.set",
            json!({ "greeting": [{ "locale": "en_US", "text": "Hi" }] }),
            ErrorKind::INVALID_MESSAGE,
        ),
        ("profile.delete", json!({}), ErrorKind::INVALID_MESSAGE),
        (
            "handover.pass",
            json!({ "recipient_id": USER }),
            ErrorKind::INVALID_MESSAGE,
        ),
        (
            "attachment.upload",
            json!({ "type": "gif", "url": "https://x" }),
            ErrorKind::INVALID_MESSAGE,
        ),
        (
            "attachment.upload",
            json!({ "type": "file", "file": "/no/such/file" }),
            ErrorKind::INVALID_MESSAGE,
        ),
        (
            "personas.delete",
            json!({ "persona_id": "../me" }),
            ErrorKind::INVALID_MESSAGE,
        ),
        (
            "profile.get",
            json!({ "page_id": "999" }),
            ErrorKind::INVALID_MESSAGE,
        ),
    ];
    for (op, input, kind) in cases {
        let err = call(&adapter, op, input.clone()).await.unwrap_err();
        assert_eq!(err.kind, kind, "{op} {input}: {err}");
    }
    let ops = call(&adapter, "ops", json!({})).await.unwrap();
    assert!(ops["profile.set"].is_string());
    assert!(graph.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_fails_new_work_and_completes_in_flight_callbacks() {
    let (graph, adapter) = setup("").await;
    graph.script([Scripted::hang()]);
    let adapter = std::sync::Arc::new(adapter);
    let in_flight = {
        let adapter = std::sync::Arc::clone(&adapter);
        tokio::spawn(async move { send(&adapter, text("slow")).await })
    };
    graph.wait_for(1, Duration::ZERO).await;
    let closing = std::sync::Arc::clone(&adapter);
    tokio::task::spawn_blocking(move || closing.shutdown(Duration::from_millis(100)))
        .await
        .unwrap();
    // The request had reached the Graph API: perhaps delivered.
    let err = in_flight.await.unwrap().unwrap_err();
    assert_eq!(err.kind, ErrorKind::TIMEOUT, "{err}");
    let err = send(&adapter, text("after")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::SHUT_DOWN);
}
