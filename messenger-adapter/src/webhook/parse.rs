//! Webhook bodies to normalized events: every entry, every `messaging[]` and
//! `standby[]` item, in order. Lenient where Meta is inconsistent (ids as strings or
//! numbers, missing timestamps or senders), strict about the envelope.

use adapter_api::{
    abi_stable::std_types::{ROption, RString, RVec},
    Attachment, AttachmentKind, EventFlags, EventKind, InboundEvent,
};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Parses a webhook body (`{"object": "page" | "instagram", "entry": [...]}`).
pub fn parse(body: &[u8]) -> Result<Vec<InboundEvent>> {
    let root: Value = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("body is not valid JSON: {e}")))?;
    let root = root
        .as_object()
        .ok_or_else(|| Error::BadRequest("body is not a JSON object".to_owned()))?;
    let object = root
        .get("object")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::BadRequest("missing \"object\" field".to_owned()))?;
    let base_flags = match object {
        "page" => EventFlags::NONE,
        "instagram" => EventFlags::INSTAGRAM,
        other => {
            return Err(Error::BadRequest(format!(
                "object {other:?} is not served by the Messenger channel (expected \"page\" or \"instagram\")"
            )))
        }
    };
    let entries = root
        .get("entry")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::BadRequest("missing \"entry\" array".to_owned()))?;

    let mut events = Vec::new();
    for entry in entries {
        let Some(entry) = entry.as_object() else {
            continue;
        };
        let page_id = id_of(entry.get("id"));
        for (key, flags) in [
            ("messaging", base_flags),
            ("standby", base_flags.with(EventFlags::STANDBY)),
        ] {
            for item in entry
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(item) = item.as_object() {
                    events.push(event(&page_id, item, flags));
                }
            }
        }
        // Non-messaging fields (and the dashboard's "Test" button) arrive as
        // `changes[]`: kept as `other` events, never answered.
        for change in entry
            .get("changes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            events.push(change_event(&page_id, change, base_flags));
        }
    }
    Ok(events)
}

/// An id that Meta sends as a string or a number; empty when absent.
fn id_of(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn str_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn timestamp_of(value: Option<&Value>) -> u64 {
    match value {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

/// The party of `sender`/`recipient`: `{id}` or, from plugins, `{user_ref}`.
fn party(value: Option<&Value>) -> String {
    let Some(obj) = value.and_then(Value::as_object) else {
        return String::new();
    };
    let id = id_of(obj.get("id"));
    if id.is_empty() {
        id_of(obj.get("user_ref"))
    } else {
        id
    }
}

/// The event keys we know, in the order they are looked for, with their kind.
const KINDS: &[(&str, EventKind)] = &[
    ("message", EventKind::MESSAGE),
    ("postback", EventKind::POSTBACK),
    ("message_edit", EventKind::MESSAGE_EDIT),
    ("reaction", EventKind::REACTION),
    ("read", EventKind::READ),
    ("delivery", EventKind::DELIVERY),
    ("referral", EventKind::REFERRAL),
    ("optin", EventKind::OPTIN),
    ("pass_thread_control", EventKind::HANDOVER),
    ("take_thread_control", EventKind::HANDOVER),
    ("request_thread_control", EventKind::HANDOVER),
    ("app_roles", EventKind::HANDOVER),
    ("account_linking", EventKind::ACCOUNT_LINKING),
    ("policy_enforcement", EventKind::POLICY_ENFORCEMENT),
    ("policy-enforcement", EventKind::POLICY_ENFORCEMENT),
    ("game_play", EventKind::GAME_PLAY),
    ("messaging_feedback", EventKind::FEEDBACK),
    ("response_feedback", EventKind::FEEDBACK),
];

fn event(page_id: &str, item: &Map<String, Value>, flags: EventFlags) -> InboundEvent {
    let (key, kind) = KINDS
        .iter()
        .find(|(key, _)| item.contains_key(*key))
        .copied()
        .unwrap_or(("", EventKind::OTHER));

    let mut event = InboundEvent::new(kind);
    event.flags = flags;
    event.account_id = page_id.into();
    event.sender_id = party(item.get("sender")).into();
    event.recipient_id = party(item.get("recipient")).into();
    event.timestamp_ms = timestamp_of(item.get("timestamp"));
    event.raw_json = serde_json::to_string(item).unwrap_or_default().into();

    let empty = Map::new();
    let body = item.get(key).and_then(Value::as_object).unwrap_or(&empty);
    let mut details = Map::new();
    let id = describe(key, body, &mut event, &mut details);
    if !details.is_empty() {
        event.details_json = Value::Object(details).to_string().into();
    }
    event.event_id = id.unwrap_or_else(|| digest(&event, key)).into();
    event
}

/// Fills in what the event of `key` says; returns its own id (a `mid`) if it has one.
fn describe(
    key: &str,
    body: &Map<String, Value>,
    event: &mut InboundEvent,
    details: &mut Map<String, Value>,
) -> Option<String> {
    let text = |k: &str| str_of(body.get(k));
    let mut copy = |keys: &[&str]| {
        for k in keys {
            if let Some(v) = body.get(*k).filter(|v| !v.is_null()) {
                details.insert((*k).to_owned(), v.clone());
            }
        }
    };
    let set = |field: &mut ROption<RString>, value: Option<String>| {
        *field = value.map(RString::from).into();
    };
    match key {
        "message" => {
            copy(&[
                "reply_to",
                "commands",
                "referral",
                "metadata",
                "app_id",
                "sticker_id",
                "tags",
            ]);
            set(&mut event.text, text("text"));
            if body.get("is_echo").and_then(Value::as_bool) == Some(true) {
                // Never user input: the Page's own message, sender and recipient swapped.
                event.kind = EventKind::ECHO;
                event.flags = event.flags.with(EventFlags::ECHO);
            } else if let Some(payload) = body
                .get("quick_reply")
                .and_then(|q| str_of(q.get("payload")))
            {
                event.kind = EventKind::QUICK_REPLY;
                event.payload = ROption::RSome(payload.into());
            }
            event.attachments = attachments(body.get("attachments"));
            text("mid")
        }
        "postback" => {
            copy(&["referral"]);
            set(&mut event.text, text("title"));
            set(&mut event.payload, text("payload"));
            text("mid")
        }
        "message_edit" => {
            copy(&["mid", "num_edit"]);
            set(&mut event.text, text("text"));
            // One message can be edited several times: each edit is its own event.
            text("mid").map(|mid| format!("{mid}#edit{}", text("num_edit").unwrap_or_default()))
        }
        "reaction" => {
            copy(&["reaction", "action", "mid"]);
            set(&mut event.text, text("emoji"));
            set(&mut event.payload, text("reaction"));
            None
        }
        "read" | "delivery" => {
            copy(&["watermark", "mids"]);
            None
        }
        "referral" => {
            copy(&[
                "source",
                "type",
                "ad_id",
                "referer_uri",
                "ads_context_data",
                "is_guest_user",
                "product",
            ]);
            set(&mut event.payload, text("ref"));
            None
        }
        "optin" => {
            copy(&[
                "type",
                "ref",
                "user_ref",
                "notification_messages_token",
                "notification_messages_timezone",
                "notification_messages_status",
                "token_expiry_timestamp",
                "user_token_status",
                "title",
                "message_request",
            ]);
            set(&mut event.payload, text("ref").or_else(|| text("payload")));
            if event.sender_id.is_empty() {
                // The checkbox plugin identifies the user only inside the opt-in.
                event.sender_id = text("user_ref").unwrap_or_default().into();
            }
            None
        }
        "pass_thread_control" | "take_thread_control" | "request_thread_control" | "app_roles" => {
            details.insert("handover".to_owned(), Value::from(key));
            for k in [
                "new_owner_app_id",
                "previous_owner_app_id",
                "requested_owner_app_id",
            ] {
                if let Some(id) = str_of(body.get(k)) {
                    details.insert(k.to_owned(), Value::from(id));
                }
            }
            if key == "app_roles" {
                details.insert("app_roles".to_owned(), Value::Object(body.clone()));
            }
            set(&mut event.payload, text("metadata"));
            None
        }
        "account_linking" => {
            copy(&["status", "authorization_code"]);
            set(&mut event.payload, text("status"));
            None
        }
        "policy_enforcement" | "policy-enforcement" => {
            copy(&["action", "reason"]);
            set(&mut event.payload, text("action"));
            set(&mut event.text, text("reason"));
            None
        }
        "game_play" => {
            copy(&[
                "game_id",
                "player_id",
                "locale",
                "context_type",
                "context_id",
                "score",
            ]);
            set(&mut event.payload, text("payload"));
            None
        }
        "messaging_feedback" => {
            copy(&["feedback_screens"]);
            None
        }
        "response_feedback" => {
            copy(&["mid"]);
            set(&mut event.payload, text("feedback"));
            None
        }
        _ => None,
    }
}

fn change_event(page_id: &str, change: &Value, flags: EventFlags) -> InboundEvent {
    let mut event = InboundEvent::new(EventKind::OTHER);
    event.flags = flags;
    event.account_id = page_id.into();
    event.raw_json = change.to_string().into();
    if let Some(field) = change.get("field").and_then(Value::as_str) {
        event.details_json = json!({ "change": field }).to_string().into();
    }
    event.event_id = digest(&event, "changes").into();
    event
}

/// A stable id for events without a `mid`.
fn digest(event: &InboundEvent, key: &str) -> String {
    let mut hash = Sha256::new();
    for part in [
        event.account_id.as_str(),
        event.sender_id.as_str(),
        &event.timestamp_ms.to_string(),
        key,
    ] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    // Two events of one kind in the same millisecond (a react and an unreact, two
    // standby items without timestamps) differ only in content. A redelivery is
    // byte-identical, so including it keeps the id stable.
    hash.update(event.raw_json.as_bytes());
    format!(
        "{}:{}",
        key_or_other(key),
        hex::encode(&hash.finalize()[..16])
    )
}

fn key_or_other(key: &str) -> &str {
    if key.is_empty() {
        "other"
    } else {
        key
    }
}

fn attachments(value: Option<&Value>) -> RVec<Attachment> {
    let Some(list) = value.and_then(Value::as_array) else {
        return RVec::new();
    };
    list.iter()
        .filter_map(Value::as_object)
        .map(|a| {
            let type_name = str_of(a.get("type")).unwrap_or_default();
            let kind = match type_name.as_str() {
                "image" => AttachmentKind::IMAGE,
                "audio" => AttachmentKind::AUDIO,
                "video" => AttachmentKind::VIDEO,
                "file" => AttachmentKind::FILE,
                "sticker" => AttachmentKind::STICKER,
                "location" => AttachmentKind::LOCATION,
                "fallback" => AttachmentKind::FALLBACK,
                "template" => AttachmentKind::TEMPLATE,
                _ => AttachmentKind::OTHER,
            };
            let url = a
                .get("payload")
                .and_then(|p| str_of(p.get("url")))
                .or_else(|| str_of(a.get("url")))
                .or_else(|| str_of(a.get("URL")));
            Attachment {
                kind,
                url: url.map(RString::from).into(),
                type_name: type_name.into(),
                raw_json: serde_json::to_string(a).unwrap_or_default().into(),
            }
        })
        .collect()
}
