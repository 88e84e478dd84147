//! How an [`InboundEvent`] is kept in a queue: as JSON, written borrowing the event's
//! strings, read back owning them.

use adapter_api::{
    abi_stable::std_types::{ROption, RString},
    Attachment, AttachmentKind, EventFlags, EventKind, InboundEvent,
};
use serde::{Deserialize, Serialize};

use super::StoreError;

/// `event` as the JSON a queue keeps.
pub(crate) fn to_json(event: &InboundEvent) -> Result<String, StoreError> {
    serde_json::to_string(&Stored::from(event))
        .map_err(|e| StoreError::Unreadable(std::sync::Arc::new(e)))
}

/// The event kept as `json`.
pub(crate) fn from_json(json: &str) -> Result<InboundEvent, StoreError> {
    serde_json::from_str::<Stored>(json)
        .map(InboundEvent::from)
        .map_err(|e| StoreError::Unreadable(std::sync::Arc::new(e)))
}

/// The event's own time, read from its stored JSON.
pub(crate) fn stored_time(json: &str) -> Option<i64> {
    #[derive(Deserialize)]
    struct Time {
        timestamp_ms: u64,
    }
    serde_json::from_str::<Time>(json)
        .ok()
        .map(|t| i64::try_from(t.timestamp_ms).unwrap_or(i64::MAX))
}

/// An [`InboundEvent`] as JSON in the store: written borrowing the event's strings
/// (`Stored<&str>`, no copies), read back owning them (`Stored<String>`).
#[derive(Serialize, Deserialize)]
struct Stored<S = String> {
    kind: u8,
    flags: u32,
    account_id: S,
    sender_id: S,
    recipient_id: S,
    timestamp_ms: u64,
    event_id: S,
    text: Option<S>,
    payload: Option<S>,
    attachments: Vec<StoredAttachment<S>>,
    reply_token: Option<S>,
    details_json: S,
    raw_json: S,
}

#[derive(Serialize, Deserialize)]
struct StoredAttachment<S = String> {
    kind: u8,
    url: Option<S>,
    type_name: S,
    raw_json: S,
}

fn to_opt(value: &ROption<RString>) -> Option<&str> {
    value.as_ref().into_option().map(RString::as_str)
}

fn from_opt(value: Option<String>) -> ROption<RString> {
    value.map(RString::from).into()
}

impl<'a> From<&'a InboundEvent> for Stored<&'a str> {
    fn from(e: &'a InboundEvent) -> Self {
        Self {
            kind: e.kind.0,
            flags: e.flags.0,
            account_id: &e.account_id,
            sender_id: &e.sender_id,
            recipient_id: &e.recipient_id,
            timestamp_ms: e.timestamp_ms,
            event_id: &e.event_id,
            text: to_opt(&e.text),
            payload: to_opt(&e.payload),
            attachments: e
                .attachments
                .iter()
                .map(|a| StoredAttachment {
                    kind: a.kind.0,
                    url: to_opt(&a.url),
                    type_name: &a.type_name,
                    raw_json: &a.raw_json,
                })
                .collect(),
            reply_token: to_opt(&e.reply_token),
            details_json: &e.details_json,
            raw_json: &e.raw_json,
        }
    }
}

impl From<Stored> for InboundEvent {
    fn from(s: Stored) -> Self {
        let mut e = InboundEvent::new(EventKind(s.kind));
        e.flags = EventFlags(s.flags);
        e.account_id = s.account_id.into();
        e.sender_id = s.sender_id.into();
        e.recipient_id = s.recipient_id.into();
        e.timestamp_ms = s.timestamp_ms;
        e.event_id = s.event_id.into();
        e.text = from_opt(s.text);
        e.payload = from_opt(s.payload);
        e.attachments = s
            .attachments
            .into_iter()
            .map(|a| Attachment {
                kind: AttachmentKind(a.kind),
                url: from_opt(a.url),
                type_name: a.type_name.into(),
                raw_json: a.raw_json.into(),
            })
            .collect();
        e.reply_token = from_opt(s.reply_token);
        e.details_json = s.details_json.into();
        e.raw_json = s.raw_json.into();
        e
    }
}
