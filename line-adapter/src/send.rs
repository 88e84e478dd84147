//! The channel-neutral message as LINE message objects, and the Messaging API client:
//! the reply API when the event left a reply token, the push API (with an
//! `X-Line-Retry-Key`, so retries cannot deliver twice) otherwise. The retry key comes
//! from the host's `idempotency_key` when the message has one, so the host's own
//! retries of a reply cannot deliver it twice either.

use std::time::Duration;

use adapter_api::{
    abi_stable::std_types::{ROption, RString},
    ButtonKind, MediaKind, OutboundMessage, QuickReplyKind, SenderAction,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{
    error::{Error, Result},
    settings::Settings,
};

/// Messages per reply or push request.
pub const MAX_MESSAGES: usize = 5;
const MAX_TEXT: usize = 5000;
const MAX_LABEL: usize = 20;
const MAX_QUICK_REPLIES: usize = 13;

fn opt(value: &ROption<RString>) -> Option<&str> {
    value.as_ref().into_option().map(RString::as_str)
}

fn invalid<T>(field: &str, why: impl std::fmt::Display) -> Result<T> {
    Err(Error::InvalidMessage(format!("{field}: {why}")))
}

fn label(field: &str, value: &str) -> Result<String> {
    if value.is_empty() || value.chars().count() > MAX_LABEL {
        return invalid(field, format!("1 to {MAX_LABEL} characters"));
    }
    Ok(value.to_owned())
}

fn https(field: &str, url: &str) -> Result<String> {
    if !url::Url::parse(url).is_ok_and(|u| u.scheme() == "https") {
        return invalid(field, "LINE needs an https URL");
    }
    Ok(url.to_owned())
}

fn action(field: &str, kind: ButtonKind, title: &str, value: &str) -> Result<Value> {
    let title = label(&format!("{field}.title"), title)?;
    Ok(match kind {
        ButtonKind::URL => {
            json!({ "type": "uri", "label": title, "uri": https(&format!("{field}.value"), value)? })
        }
        ButtonKind::POSTBACK => {
            json!({ "type": "postback", "label": title, "data": value, "displayText": title })
        }
        ButtonKind::PHONE_NUMBER => {
            json!({ "type": "uri", "label": title, "uri": format!("tel:{value}") })
        }
        ButtonKind(other) => return invalid(field, format!("unknown button kind {other}")),
    })
}

/// The LINE message objects for `message`, in order. Empty for sender actions LINE
/// has no equivalent for.
pub fn messages(message: &OutboundMessage) -> Result<Vec<Value>> {
    if !message.raw_json.trim().is_empty() {
        return match serde_json::from_str(&message.raw_json) {
            Ok(value @ Value::Object(_)) => Ok(vec![value]),
            Ok(Value::Array(values)) => Ok(values),
            _ => invalid(
                "raw_json",
                "must be a LINE message object or a list of them",
            ),
        };
    }
    if message.sender_action != SenderAction::NONE {
        return Ok(Vec::new());
    }
    let text = opt(&message.text);
    let mut out = Vec::new();
    if !message.buttons.is_empty() {
        let Some(text) = text else {
            return invalid("text", "buttons need a text");
        };
        let actions = message
            .buttons
            .iter()
            .enumerate()
            .map(|(i, b)| action(&format!("buttons[{i}]"), b.kind, &b.title, &b.value))
            .collect::<Result<Vec<_>>>()?;
        if actions.len() > 4 {
            return invalid("buttons", "at most 4 on LINE");
        }
        out.push(json!({ "type": "template", "altText": text, "template": { "type": "buttons", "text": text, "actions": actions } }));
    } else if let Some(text) = text {
        if text.chars().count() > MAX_TEXT {
            return invalid("text", format!("at most {MAX_TEXT} characters on LINE"));
        }
        out.push(json!({ "type": "text", "text": text }));
    }
    if !message.cards.is_empty() {
        let mut columns = Vec::new();
        for (i, card) in message.cards.iter().enumerate() {
            let mut column =
                json!({ "title": card.title.as_str(), "text": opt(&card.subtitle).unwrap_or(" ") });
            if let Some(image) = opt(&card.image_url) {
                column["thumbnailImageUrl"] =
                    https(&format!("cards[{i}].image_url"), image)?.into();
            }
            let actions = card
                .buttons
                .iter()
                .enumerate()
                .map(|(j, b)| {
                    action(
                        &format!("cards[{i}].buttons[{j}]"),
                        b.kind,
                        &b.title,
                        &b.value,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            if actions.is_empty() {
                return invalid(
                    &format!("cards[{i}].buttons"),
                    "LINE carousels need at least one button",
                );
            }
            column["actions"] = actions.into();
            columns.push(column);
        }
        let alt = text.unwrap_or("cards");
        out.push(json!({ "type": "template", "altText": alt, "template": { "type": "carousel", "columns": columns } }));
    }
    if let Some(media) = message.media.as_ref().into_option() {
        let Some(url) = opt(&media.url) else {
            return invalid("media", "LINE sends media by https URL only");
        };
        let url = https("media.url", url)?;
        out.push(match media.kind {
            MediaKind::IMAGE => {
                json!({ "type": "image", "originalContentUrl": url, "previewImageUrl": url })
            }
            MediaKind::VIDEO => {
                json!({ "type": "video", "originalContentUrl": url, "previewImageUrl": url })
            }
            MediaKind::AUDIO => {
                json!({ "type": "audio", "originalContentUrl": url, "duration": 60000 })
            }
            _ => return invalid("media.kind", "LINE sends images, video and audio"),
        });
    }
    if !message.quick_replies.is_empty() {
        if message.quick_replies.len() > MAX_QUICK_REPLIES {
            return invalid("quick_replies", format!("at most {MAX_QUICK_REPLIES}"));
        }
        let items = message
            .quick_replies
            .iter()
            .enumerate()
            .map(|(i, q)| match q.kind {
                QuickReplyKind::TEXT => Ok(json!({ "type": "action", "action": {
                    "type": "postback", "label": label(&format!("quick_replies[{i}].title"), &q.title)?,
                    "data": q.payload.as_str(), "displayText": q.title.as_str(),
                }})),
                _ => invalid(&format!("quick_replies[{i}]"), "LINE has no phone or e-mail quick replies"),
            })
            .collect::<Result<Vec<_>>>()?;
        let Some(last) = out.last_mut() else {
            return invalid("quick_replies", "need a message to attach to");
        };
        last["quickReply"] = json!({ "items": items });
    }
    if out.is_empty() {
        return invalid("message", "has no text, media, buttons, cards or raw_json");
    }
    Ok(out)
}

/// The host's `idempotency_key` from `options_json`, if it set one. LINE has no other
/// option: other keys are ignored.
pub fn idempotency_key(message: &OutboundMessage) -> Result<Option<String>> {
    if message.options_json.trim().is_empty() {
        return Ok(None);
    }
    let Ok(Value::Object(options)) = serde_json::from_str(&message.options_json) else {
        return invalid("options_json", "must be a JSON object");
    };
    match options.get("idempotency_key") {
        None => Ok(None),
        Some(Value::String(key)) if !key.is_empty() => Ok(Some(key.clone())),
        Some(_) => invalid("options_json.idempotency_key", "must be a non-empty string"),
    }
}

/// The Messaging API client.
pub struct Api {
    client: reqwest::Client,
    settings: Settings,
}

impl Api {
    /// A client with its own connection pool.
    pub fn new(settings: Settings) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.request_timeout_ms))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("dmflow-line-adapter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Settings(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { client, settings })
    }

    /// `POST /v2/bot/message/reply`: one try (a reply token is single-use, and a
    /// timed-out reply may have been delivered).
    pub async fn reply(&self, token: &str, messages: &[Value]) -> Result<Value> {
        let body = json!({ "replyToken": token, "messages": messages });
        self.request(Method::POST, "/v2/bot/message/reply", Some(&body), None)
            .await
    }

    /// `POST /v2/bot/message/push` with the retry key `key` ([`retry_key`]): retried
    /// on transient failures, timeouts included, since LINE accepts one request per
    /// key (409 for the rest). When a try that may have reached LINE was tried again,
    /// the error is an unknown outcome whatever the last try's error says.
    pub async fn push(&self, to: &str, messages: &[Value], key: &str) -> Result<(Value, u32)> {
        let body = json!({ "to": to, "messages": messages });
        let mut attempt = 1;
        let mut may_have_arrived = false;
        loop {
            match self
                .request(Method::POST, "/v2/bot/message/push", Some(&body), Some(key))
                .await
            {
                Ok(answer) => return Ok((answer, attempt)),
                Err(Error::Api { status: 409, .. }) => return Ok((Value::Null, attempt)),
                Err(err) if attempt < self.settings.max_attempts && retryable(&err) => {
                    may_have_arrived |= err.may_have_arrived();
                    tokio::time::sleep(pause(&err, attempt, self.settings.backoff_base_ms)).await;
                    attempt += 1;
                }
                Err(err) if may_have_arrived => return Err(err.after_unknown_try()),
                Err(err) => return Err(err),
            }
        }
    }

    /// Any call, authorized with the channel access token.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        retry_key: Option<&str>,
    ) -> Result<Value> {
        let url = format!("{}{path}", self.settings.api_base.trim_end_matches('/'));
        let mut request = self
            .client
            .request(method, url)
            .bearer_auth(self.settings.channel_access_token.expose());
        if let Some(key) = retry_key {
            request = request.header("X-Line-Retry-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(Error::transport)?;
        let status = response.status();
        let retry_after_ms = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |s| s * 1000);
        let bytes = response.bytes().await.map_err(Error::transport)?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let message = value["message"]
            .as_str()
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error"))
            .to_owned();
        let details = value
            .get("details")
            .map(|d| format!(" {d}"))
            .unwrap_or_default();
        Err(Error::Api {
            status: status.as_u16(),
            message: format!("{message}{details}"),
            retryable: status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error(),
            retry_after_ms,
        })
    }
}

/// How long a push waits after failed try number `attempt`: at least the
/// `Retry-After` LINE gave (plus up to a tenth more, so that pushes told the same wait
/// do not all come back at once); otherwise a backoff from `base_ms` that doubles per
/// try, with jitter in its upper half.
fn pause(err: &Error, attempt: u32, base_ms: u64) -> Duration {
    match err {
        Error::Api { retry_after_ms, .. } if *retry_after_ms > 0 => Duration::from_millis(
            retry_after_ms.saturating_add(fastrand::u64(0..=retry_after_ms / 10)),
        ),
        _ => {
            let wait = base_ms << attempt.saturating_sub(1).min(10);
            Duration::from_millis(wait / 2 + fastrand::u64(0..=wait / 2))
        }
    }
}

fn retryable(err: &Error) -> bool {
    match err {
        Error::Api { retryable, .. } => *retryable,
        Error::Transport { .. } => true,
        _ => false,
    }
}

/// The `X-Line-Retry-Key` (a version-4 UUID) of the push request carrying part
/// `part` (from 0) of a message.
///
/// With the host's `idempotency_key`, it is the first 16 bytes of the SHA-256 of the
/// key (followed by `#part` for parts after the first), so every try of the same
/// reply, even after a host restart, carries the same key and LINE delivers it once;
/// each part has its own, so that one part is not taken for a repeat of another.
/// Without one, it is random.
pub fn retry_key(idempotency_key: Option<&str>, part: usize) -> String {
    let bytes = match idempotency_key {
        Some(key) => {
            let mut hash = Sha256::new();
            hash.update(key.as_bytes());
            if part > 0 {
                hash.update(format!("#{part}").as_bytes());
            }
            let digest = hash.finalize();
            std::array::from_fn(|i| digest[i])
        }
        None => std::array::from_fn(|_| fastrand::u8(..)),
    };
    uuid_v4(bytes)
}

/// `bytes` as a version-4 UUID, `8-4-4-4-12`, with the version and variant bits set.
fn uuid_v4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_push_waits_at_least_the_retry_after_line_gave_else_a_doubling_backoff() {
        for _ in 0..200 {
            let limited = super::Error::Api {
                status: 429,
                message: String::new(),
                retryable: true,
                retry_after_ms: 7000,
            };
            let wait = super::pause(&limited, 1, 100).as_millis();
            assert!((7000..=7700).contains(&wait), "{wait}");
            let failed = super::Error::Api {
                status: 500,
                message: String::new(),
                retryable: true,
                retry_after_ms: 0,
            };
            let wait = super::pause(&failed, 3, 100).as_millis();
            assert!((200..=400).contains(&wait), "{wait}");
        }
    }

    use super::*;

    fn assert_v4_uuid(key: &str) {
        assert_eq!(key.len(), 36, "{key}");
        let dashes: Vec<_> = key.match_indices('-').map(|(i, _)| i).collect();
        assert_eq!(dashes, [8, 13, 18, 23], "{key}");
        assert_eq!(&key[14..15], "4", "{key}");
        assert!(matches!(&key[19..20], "8" | "9" | "a" | "b"), "{key}");
    }

    #[test]
    fn random_retry_keys_are_v4_uuids_and_differ() {
        let key = retry_key(None, 0);
        assert_v4_uuid(&key);
        assert_ne!(key, retry_key(None, 0));
    }

    #[test]
    fn a_retry_key_is_the_same_for_the_same_idempotency_key_and_part() {
        let key = retry_key(Some("reply-1"), 0);
        assert_v4_uuid(&key);
        assert_eq!(key, retry_key(Some("reply-1"), 0));
        // The first 16 bytes of SHA-256("reply-1"), version and variant bits set.
        let digest = Sha256::digest(b"reply-1");
        let mut bytes: [u8; 16] = std::array::from_fn(|i| digest[i]);
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        assert_eq!(key.replace('-', ""), hex::encode(bytes));
    }

    #[test]
    fn retry_keys_differ_for_different_idempotency_keys_and_parts() {
        let first = retry_key(Some("reply-1"), 0);
        assert_ne!(first, retry_key(Some("reply-2"), 0));
        let second_part = retry_key(Some("reply-1"), 1);
        assert_v4_uuid(&second_part);
        assert_ne!(first, second_part);
    }

    fn with_options(options: &str) -> OutboundMessage {
        let mut message = OutboundMessage::text("Udest", "Uuser", "hi");
        message.options_json = options.into();
        message
    }

    #[test]
    fn the_idempotency_key_is_read_from_the_options_and_other_options_are_ignored() {
        let key = idempotency_key(&with_options(r#"{"idempotency_key":"k1","x":1}"#));
        assert_eq!(key.unwrap().as_deref(), Some("k1"));
        assert_eq!(idempotency_key(&with_options("")).unwrap(), None);
        assert_eq!(idempotency_key(&with_options(r#"{"x":1}"#)).unwrap(), None);
    }

    #[test]
    fn a_malformed_idempotency_key_is_an_invalid_message_naming_the_field() {
        for (options, field) in [
            (r#"{"idempotency_key":7}"#, "options_json.idempotency_key: "),
            (
                r#"{"idempotency_key":""}"#,
                "options_json.idempotency_key: ",
            ),
            ("[1]", "options_json: "),
        ] {
            let err = idempotency_key(&with_options(options)).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidMessage(m) if m.starts_with(field)),
                "{options}: {err}"
            );
        }
    }
}
