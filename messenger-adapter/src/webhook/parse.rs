//! Webhook bodies to normalized events: every entry, every `messaging[]` and
//! `standby[]` item, in order. Lenient where Meta is inconsistent (ids as strings or
//! numbers, missing timestamps or senders), strict about the envelope.

use adapter_api::{
    abi_stable::std_types::{ROption, RString, RVec},
    Attachment, AttachmentKind, EventFlags, EventKind, InboundEvent,
};
use serde_json::{Map, Value};
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
    let body = item.get(key).and_then(Value::as_object);

    let mut event = InboundEvent::new(kind);
    event.flags = flags;
    event.account_id = page_id.into();
    event.sender_id = party(item.get("sender")).into();
    event.recipient_id = party(item.get("recipient")).into();
    event.timestamp_ms = timestamp_of(item.get("timestamp"));
    event.raw_json = Value::Object(item.clone()).to_string().into();

    let mut id = None;
    if let Some(body) = body {
        let text = |k: &str| str_of(body.get(k));
        match key {
            "message" => {
                id = text("mid");
                event.text = text("text").map(RString::from).into();
                if body.get("is_echo").and_then(Value::as_bool) == Some(true) {
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
            }
            "postback" => {
                id = text("mid");
                event.text = text("title").map(RString::from).into();
                event.payload = text("payload").map(RString::from).into();
            }
            "message_edit" => {
                // One message can be edited several times: each edit is its own event.
                id = text("mid").map(|mid| {
                    format!(
                        "{mid}#edit{}",
                        str_of(body.get("num_edit")).unwrap_or_default()
                    )
                });
                event.text = text("text").map(RString::from).into();
            }
            "reaction" => {
                event.text = text("emoji").map(RString::from).into();
                event.payload = text("action").map(RString::from).into();
            }
            "referral" | "optin" => {
                event.payload = text("ref")
                    .or_else(|| text("payload"))
                    .map(RString::from)
                    .into();
            }
            _ => {}
        }
    }
    event.event_id = id.unwrap_or_else(|| digest(&event, key)).into();
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
    if key.is_empty() || event.timestamp_ms == 0 {
        // Without a kind or a time, only the content tells two events apart.
        hash.update(event.raw_json.as_bytes());
    }
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
                raw_json: Value::Object(a.clone()).to_string().into(),
            }
        })
        .collect()
}
