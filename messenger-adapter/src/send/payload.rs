//! The channel-neutral [`OutboundMessage`] as Send API request bodies, with Messenger's
//! limits checked before anything is sent (REFERENCE §e).

use adapter_api::{
    abi_stable::std_types::{ROption, RString},
    Button, ButtonKind, MediaKind, MessagingType, OutboundMessage, QuickReplyKind, SenderAction,
};
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// Message tags Meta still accepts; the others were retired and answer error 100.
const LIVE_TAGS: &[&str] = &["HUMAN_AGENT", "CUSTOMER_FEEDBACK"];
/// Longest text of one message; longer texts are split.
pub const MAX_TEXT: usize = 2000;
const MAX_QUICK_REPLIES: usize = 13;
const MAX_QUICK_REPLY_TITLE: usize = 20;
const MAX_PAYLOAD: usize = 1000;
const MAX_BUTTONS: usize = 3;
const MAX_BUTTON_TITLE: usize = 20;
const MAX_BUTTON_TEXT: usize = 640;
const MAX_CARDS: usize = 10;
const MAX_CARD_TEXT: usize = 80;
const MAX_METADATA: usize = 999;

/// One Send API request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The JSON body.
    pub body: Value,
    /// Audio or video: paced under the lower media limit.
    pub media: bool,
}

fn invalid<T>(field: &str, why: impl std::fmt::Display) -> Result<T> {
    Err(Error::InvalidMessage(format!("{field}: {why}")))
}

fn max_chars(field: &str, value: &str, max: usize) -> Result<()> {
    let len = value.chars().count();
    if len > max {
        return invalid(field, format!("at most {max} characters (got {len})"));
    }
    Ok(())
}

fn required(field: &str, value: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() {
        return invalid(field, "must not be empty");
    }
    max_chars(field, value, max)
}

fn opt(value: &ROption<RString>) -> Option<&str> {
    value.as_ref().into_option().map(RString::as_str)
}

/// The Send API requests for `message`, in the order they must be sent.
///
/// A Messenger message holds text *or* one attachment, and text above
/// [`MAX_TEXT`] characters is split, so one message may take several requests; quick
/// replies go on the last one.
pub fn requests(message: &OutboundMessage) -> Result<Vec<Request>> {
    if message.recipient_id.is_empty() {
        return invalid("recipient_id", "must not be empty");
    }
    let recipient = json!({ "id": message.recipient_id.as_str() });
    let options = options(message)?;

    if let Some(action) = sender_action(message.sender_action) {
        return Ok(vec![Request {
            body: sender_action_body(message, action, recipient, &options)?,
            media: false,
        }]);
    }

    let mut envelope = Map::new();
    envelope.insert("recipient".to_owned(), recipient);
    envelope.insert("messaging_type".to_owned(), json!(messaging_type(message)?));
    if let Some(tag) = opt(&message.tag) {
        envelope.insert("tag".to_owned(), json!(tag));
    }
    for key in ["notification_type", "persona_id"] {
        if let Some(value) = options.get(key) {
            envelope.insert(key.to_owned(), value.clone());
        }
    }
    if let Some(mid) = opt(&message.reply_to) {
        envelope.insert("reply_to".to_owned(), json!({ "mid": mid }));
    }

    let mut bodies = messages(message)?;
    let Some(last) = bodies.last_mut() else {
        return invalid("message", "has no text, media, buttons, cards or raw_json");
    };
    if !message.quick_replies.is_empty() {
        last.0["quick_replies"] = quick_replies(message)?;
    }
    if let Some(metadata) = options.get("metadata") {
        for (body, _) in &mut bodies {
            body["metadata"] = metadata.clone();
        }
    }
    Ok(bodies
        .into_iter()
        .map(|(body, media)| {
            let mut request = envelope.clone();
            request.insert("message".to_owned(), body);
            Request {
                body: Value::Object(request),
                media,
            }
        })
        .collect())
}

/// `options_json`: `notification_type`, `persona_id`, `metadata`, and the host's
/// `idempotency_key`, accepted and not sent (the Send API has no idempotency key).
fn options(message: &OutboundMessage) -> Result<Map<String, Value>> {
    if message.options_json.trim().is_empty() {
        return Ok(Map::new());
    }
    let Ok(Value::Object(map)) = serde_json::from_str(&message.options_json) else {
        return invalid("options_json", "must be a JSON object");
    };
    for (key, value) in &map {
        match (key.as_str(), value) {
            ("notification_type", Value::String(v))
                if matches!(v.as_str(), "REGULAR" | "SILENT_PUSH" | "NO_PUSH") => {}
            ("notification_type", _) => {
                return invalid(
                    "options_json.notification_type",
                    "must be REGULAR, SILENT_PUSH or NO_PUSH",
                )
            }
            ("persona_id", Value::String(v)) if !v.is_empty() => {}
            ("persona_id", _) => return invalid("options_json.persona_id", "must be an id string"),
            ("metadata", Value::String(v)) => max_chars("options_json.metadata", v, MAX_METADATA)?,
            ("metadata", _) => return invalid("options_json.metadata", "must be a string"),
            ("idempotency_key", Value::String(v)) if !v.is_empty() => {}
            ("idempotency_key", _) => {
                return invalid("options_json.idempotency_key", "must be a non-empty string")
            }
            (other, _) => {
                return invalid(
                    &format!("options_json.{other}"),
                    "unknown option (known: notification_type, persona_id, metadata, \
                     idempotency_key)",
                )
            }
        }
    }
    Ok(map)
}

fn sender_action(action: SenderAction) -> Option<&'static str> {
    Some(match action {
        SenderAction::TYPING_ON => "typing_on",
        SenderAction::TYPING_OFF => "typing_off",
        SenderAction::MARK_SEEN => "mark_seen",
        SenderAction::REACT => "react",
        SenderAction::UNREACT => "unreact",
        _ => return None,
    })
}

/// A sender action goes alone: only `recipient`, `sender_action` (and its payload).
fn sender_action_body(
    message: &OutboundMessage,
    action: &str,
    recipient: Value,
    options: &Map<String, Value>,
) -> Result<Value> {
    let mut body = json!({ "recipient": recipient, "sender_action": action });
    if matches!(
        message.sender_action,
        SenderAction::REACT | SenderAction::UNREACT
    ) {
        let Some(mid) = opt(&message.reply_to) else {
            return invalid(
                "reply_to",
                format!("sender_action {action} needs the message id"),
            );
        };
        let mut payload = json!({ "message_id": mid });
        if message.sender_action == SenderAction::REACT {
            let Some(emoji) = opt(&message.text).filter(|t| !t.is_empty()) else {
                return invalid("text", "sender_action react needs the emoji in text");
            };
            payload["reaction"] = json!(emoji);
        }
        body["payload"] = payload;
    }
    if let Some(persona) = options.get("persona_id") {
        body["persona_id"] = persona.clone();
    }
    Ok(body)
}

fn messaging_type(message: &OutboundMessage) -> Result<&'static str> {
    match message.messaging_type {
        MessagingType::RESPONSE => Ok("RESPONSE"),
        MessagingType::UPDATE => Ok("UPDATE"),
        MessagingType::MESSAGE_TAG => match opt(&message.tag) {
            Some(tag) if LIVE_TAGS.contains(&tag) => Ok("MESSAGE_TAG"),
            Some(tag) => invalid(
                "tag",
                format!("{tag:?} is retired or unknown; Messenger accepts {LIVE_TAGS:?}"),
            ),
            None => invalid("tag", "messaging_type MESSAGE_TAG needs a tag"),
        },
        MessagingType(other) => invalid("messaging_type", format!("unknown value {other}")),
    }
}

/// The `message` objects with whether each is audio/video, before quick replies
/// and metadata are added.
fn messages(message: &OutboundMessage) -> Result<Vec<(Value, bool)>> {
    if !message.raw_json.trim().is_empty() {
        return match serde_json::from_str(&message.raw_json) {
            Ok(value @ Value::Object(_)) => {
                let kind = value["attachment"]["type"].as_str();
                let media = matches!(kind, Some("audio" | "video"));
                Ok(vec![(value, media)])
            }
            _ => invalid("raw_json", "must be a Messenger message object"),
        };
    }
    let text = opt(&message.text);
    let mut bodies = Vec::new();
    if !message.buttons.is_empty() {
        let Some(text) = text else {
            return invalid("text", "buttons need a text");
        };
        required("text", text, MAX_BUTTON_TEXT)?;
        bodies.push((
            template(json!({
                "template_type": "button",
                "text": text,
                "buttons": buttons("buttons", &message.buttons, 1)?,
            })),
            false,
        ));
    } else if let Some(text) = text {
        if text.is_empty() {
            return invalid("text", "must not be empty");
        }
        bodies.extend(
            split_text(text, MAX_TEXT)
                .into_iter()
                .map(|part| (json!({ "text": part }), false)),
        );
    }
    if !message.cards.is_empty() {
        bodies.push((cards(message)?, false));
    }
    if let Some(media) = message.media.as_ref().into_option() {
        let kind = match media.kind {
            MediaKind::IMAGE => "image",
            MediaKind::AUDIO => "audio",
            MediaKind::VIDEO => "video",
            MediaKind::FILE => "file",
            MediaKind(other) => return invalid("media.kind", format!("unknown value {other}")),
        };
        let payload = match (opt(&media.url), opt(&media.attachment_id)) {
            (Some(url), None) => {
                if !is_http_url(url) {
                    return invalid("media.url", "must be an http(s) URL");
                }
                json!({ "url": url, "is_reusable": true })
            }
            (None, Some(id)) if !id.is_empty() => json!({ "attachment_id": id }),
            _ => return invalid("media", "needs exactly one of url and attachment_id"),
        };
        let is_av = matches!(media.kind, MediaKind::AUDIO | MediaKind::VIDEO);
        bodies.push((
            json!({ "attachment": { "type": kind, "payload": payload } }),
            is_av,
        ));
    }
    Ok(bodies)
}

fn is_http_url(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

fn template(payload: Value) -> Value {
    json!({ "attachment": { "type": "template", "payload": payload } })
}

fn cards(message: &OutboundMessage) -> Result<Value> {
    if message.cards.len() > MAX_CARDS {
        return invalid(
            "cards",
            format!("at most {MAX_CARDS} (got {})", message.cards.len()),
        );
    }
    let mut elements = Vec::new();
    for (i, card) in message.cards.iter().enumerate() {
        let field = |k: &str| format!("cards[{i}].{k}");
        required(&field("title"), &card.title, MAX_CARD_TEXT)?;
        let mut element = json!({ "title": card.title.as_str() });
        if let Some(subtitle) = opt(&card.subtitle) {
            max_chars(&field("subtitle"), subtitle, MAX_CARD_TEXT)?;
            element["subtitle"] = json!(subtitle);
        }
        if let Some(image) = opt(&card.image_url) {
            if !is_http_url(image) {
                return invalid(&field("image_url"), "must be an http(s) URL");
            }
            element["image_url"] = json!(image);
        }
        if let Some(url) = opt(&card.default_url) {
            if !is_http_url(url) {
                return invalid(&field("default_url"), "must be an http(s) URL");
            }
            element["default_action"] = json!({ "type": "web_url", "url": url });
        }
        if !card.buttons.is_empty() {
            element["buttons"] = buttons(&field("buttons"), &card.buttons, 1)?;
        }
        elements.push(element);
    }
    Ok(template(
        json!({ "template_type": "generic", "elements": elements }),
    ))
}

fn buttons(field: &str, buttons: &[Button], min: usize) -> Result<Value> {
    if buttons.len() < min || buttons.len() > MAX_BUTTONS {
        return invalid(
            field,
            format!("{min} to {MAX_BUTTONS} buttons (got {})", buttons.len()),
        );
    }
    let mut out = Vec::new();
    for (i, button) in buttons.iter().enumerate() {
        let title_field = format!("{field}[{i}].title");
        let value_field = format!("{field}[{i}].value");
        required(&title_field, &button.title, MAX_BUTTON_TITLE)?;
        let value = button.value.as_str();
        let (kind, key) = match button.kind {
            ButtonKind::URL => {
                if !is_http_url(value) {
                    return invalid(&value_field, "must be an http(s) URL");
                }
                ("web_url", "url")
            }
            ButtonKind::POSTBACK => {
                required(&value_field, value, MAX_PAYLOAD)?;
                ("postback", "payload")
            }
            ButtonKind::PHONE_NUMBER => {
                let digits = value.strip_prefix('+').unwrap_or("");
                if digits.len() < 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return invalid(&value_field, "must be a phone number like +15105551234");
                }
                ("phone_number", "payload")
            }
            ButtonKind(other) => {
                return invalid(
                    &format!("{field}[{i}].kind"),
                    format!("unknown value {other}"),
                )
            }
        };
        out.push(json!({ "type": kind, "title": button.title.as_str(), key: value }));
    }
    Ok(Value::Array(out))
}

fn quick_replies(message: &OutboundMessage) -> Result<Value> {
    let count = message.quick_replies.len();
    if count > MAX_QUICK_REPLIES {
        return invalid(
            "quick_replies",
            format!("at most {MAX_QUICK_REPLIES} (got {count})"),
        );
    }
    let mut out = Vec::new();
    for (i, q) in message.quick_replies.iter().enumerate() {
        let reply = match q.kind {
            QuickReplyKind::USER_PHONE_NUMBER => json!({ "content_type": "user_phone_number" }),
            QuickReplyKind::USER_EMAIL => json!({ "content_type": "user_email" }),
            QuickReplyKind::TEXT => {
                required(
                    &format!("quick_replies[{i}].title"),
                    &q.title,
                    MAX_QUICK_REPLY_TITLE,
                )?;
                required(
                    &format!("quick_replies[{i}].payload"),
                    &q.payload,
                    MAX_PAYLOAD,
                )?;
                let mut reply = json!({
                    "content_type": "text",
                    "title": q.title.as_str(),
                    "payload": q.payload.as_str(),
                });
                if let Some(image) = opt(&q.image_url) {
                    if !is_http_url(image) {
                        return invalid(
                            &format!("quick_replies[{i}].image_url"),
                            "must be an http(s) URL",
                        );
                    }
                    reply["image_url"] = json!(image);
                }
                reply
            }
            QuickReplyKind(other) => {
                return invalid(
                    &format!("quick_replies[{i}].kind"),
                    format!("unknown value {other}"),
                )
            }
        };
        out.push(reply);
    }
    Ok(Value::Array(out))
}

/// Splits `text` into parts of at most `max` characters, preferring a paragraph break,
/// then the end of a sentence, then a space; a part with none is cut at `max`.
pub fn split_text(text: &str, max: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.chars().count() > max {
        // Byte offset just after the `max`-th character.
        let limit = rest
            .char_indices()
            .nth(max)
            .map_or(rest.len(), |(at, _)| at);
        let window = &rest[..limit];
        let cut = last_break(window, &["\n\n"])
            .or_else(|| last_break(window, &[". ", "! ", "? ", ".\n", "!\n", "?\n", "\n"]))
            .or_else(|| last_break(window, &[" ", "\t"]))
            .unwrap_or(limit);
        let (part, tail) = rest.split_at(cut);
        let part = part.trim_end();
        if !part.is_empty() {
            parts.push(part.to_owned());
        }
        rest = tail.trim_start();
    }
    if !rest.is_empty() || parts.is_empty() {
        parts.push(rest.to_owned());
    }
    parts
}

/// The byte offset after the last of `separators` in `window` (keeping sentence
/// punctuation in the part before), if it leaves a non-empty part.
fn last_break(window: &str, separators: &[&str]) -> Option<usize> {
    separators
        .iter()
        .filter_map(|sep| {
            // Keep a sentence's punctuation with it; the whitespace is dropped.
            window.rfind(sep).map(|at| at + sep.trim_end().len())
        })
        .filter(|&at| at > 0)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_prefers_paragraphs_then_sentences_then_words() {
        let para = format!("{}\n\n{}", "a".repeat(30), "b".repeat(30));
        assert_eq!(split_text(&para, 40), ["a".repeat(30), "b".repeat(30)]);

        let sentences = "One two three. Four five six. Seven eight nine.";
        assert_eq!(
            split_text(sentences, 32),
            ["One two three. Four five six.", "Seven eight nine."]
        );

        let words = "alpha beta gamma delta epsilon";
        assert_eq!(
            split_text(words, 12),
            ["alpha beta", "gamma delta", "epsilon"]
        );

        let long_word = "x".repeat(25);
        assert_eq!(
            split_text(&long_word, 10),
            ["x".repeat(10), "x".repeat(10), "x".repeat(5)]
        );
    }

    #[test]
    fn split_counts_characters_not_bytes() {
        let text = "ä".repeat(MAX_TEXT);
        assert_eq!(split_text(&text, MAX_TEXT).len(), 1);
        let parts = split_text(&"ä".repeat(MAX_TEXT + 1), MAX_TEXT);
        assert_eq!(
            parts.iter().map(|p| p.chars().count()).collect::<Vec<_>>(),
            [MAX_TEXT, 1]
        );
    }

    #[test]
    fn split_loses_nothing_but_break_whitespace() {
        let text = "Lorem ipsum dolor sit amet. ".repeat(300);
        let parts = split_text(&text, MAX_TEXT);
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.chars().count() <= MAX_TEXT));
        let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(squash(&parts.join(" ")), squash(&text));
    }
}
