//! The channel-neutral [`OutboundMessage`] as Send API request bodies.

use adapter_api::{
    ButtonKind, MediaKind, MessagingType, OutboundMessage, QuickReplyKind, SenderAction,
};
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// Message tags Meta still accepts; the others were retired and answer error 100.
const LIVE_TAGS: &[&str] = &["HUMAN_AGENT", "CUSTOMER_FEEDBACK"];

/// The Send API request bodies for `message`, in the order they must be sent.
///
/// A Messenger message holds text *or* one attachment, so text with media or cards is
/// sent as two requests; quick replies go on the last one.
pub fn requests(message: &OutboundMessage) -> Result<Vec<Value>> {
    let bad = |why: String| Err(Error::InvalidMessage(why));
    if message.recipient_id.is_empty() {
        return bad("recipient_id is empty".to_owned());
    }
    let recipient = json!({ "id": message.recipient_id.as_str() });
    let options = options(message)?;

    if let Some(action) = sender_action(message.sender_action) {
        let mut request = json!({ "recipient": recipient, "sender_action": action });
        match message.sender_action {
            SenderAction::REACT | SenderAction::UNREACT => {
                let Some(mid) = message.reply_to.as_ref().into_option() else {
                    return bad(format!(
                        "sender_action {action} needs reply_to (the message id)"
                    ));
                };
                let mut payload = json!({ "message_id": mid.as_str() });
                if message.sender_action == SenderAction::REACT {
                    payload["reaction"] = json!(message
                        .text
                        .as_ref()
                        .into_option()
                        .map_or("", |t| t.as_str()));
                }
                request["payload"] = payload;
            }
            _ => {}
        }
        if let Some(persona) = options.get("persona_id") {
            request["persona_id"] = persona.clone();
        }
        return Ok(vec![request]);
    }

    let mut envelope = Map::new();
    envelope.insert("recipient".to_owned(), recipient);
    envelope.insert("messaging_type".to_owned(), json!(messaging_type(message)?));
    if let Some(tag) = message.tag.as_ref().into_option() {
        envelope.insert("tag".to_owned(), json!(tag.as_str()));
    }
    for key in ["notification_type", "persona_id"] {
        if let Some(value) = options.get(key) {
            envelope.insert(key.to_owned(), value.clone());
        }
    }
    if let Some(mid) = message.reply_to.as_ref().into_option() {
        envelope.insert("reply_to".to_owned(), json!({ "mid": mid.as_str() }));
    }

    let mut bodies = messages(message)?;
    if bodies.is_empty() {
        return bad("the message has no text, media, buttons, cards or raw_json".to_owned());
    }
    if !message.quick_replies.is_empty() {
        let last = bodies.last_mut().expect("checked non-empty");
        last["quick_replies"] = quick_replies(message);
    }
    if let Some(metadata) = options.get("metadata") {
        for body in &mut bodies {
            body["metadata"] = metadata.clone();
        }
    }
    Ok(bodies
        .into_iter()
        .map(|body| {
            let mut request = envelope.clone();
            request.insert("message".to_owned(), body);
            Value::Object(request)
        })
        .collect())
}

fn options(message: &OutboundMessage) -> Result<Map<String, Value>> {
    if message.options_json.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str(&message.options_json) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Error::InvalidMessage(
            "options_json must be a JSON object".to_owned(),
        )),
    }
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

fn messaging_type(message: &OutboundMessage) -> Result<&'static str> {
    match message.messaging_type {
        MessagingType::RESPONSE => Ok("RESPONSE"),
        MessagingType::UPDATE => Ok("UPDATE"),
        MessagingType::MESSAGE_TAG => {
            match message.tag.as_ref().into_option().map(|t| t.as_str()) {
                Some(tag) if LIVE_TAGS.contains(&tag) => Ok("MESSAGE_TAG"),
                Some(tag) => Err(Error::InvalidMessage(format!(
                    "tag {tag:?} is retired or unknown; Messenger accepts {LIVE_TAGS:?}"
                ))),
                None => Err(Error::InvalidMessage(
                    "messaging_type MESSAGE_TAG needs a tag".to_owned(),
                )),
            }
        }
        MessagingType(other) => Err(Error::InvalidMessage(format!(
            "unknown messaging_type {other}"
        ))),
    }
}

/// The `message` objects, before quick replies and metadata are added.
fn messages(message: &OutboundMessage) -> Result<Vec<Value>> {
    if !message.raw_json.trim().is_empty() {
        return match serde_json::from_str(&message.raw_json) {
            Ok(value @ Value::Object(_)) => Ok(vec![value]),
            _ => Err(Error::InvalidMessage(
                "raw_json must be a Messenger message object".to_owned(),
            )),
        };
    }
    let text = message.text.as_ref().into_option().map(|t| t.as_str());
    let mut bodies = Vec::new();
    if !message.buttons.is_empty() {
        let Some(text) = text else {
            return Err(Error::InvalidMessage("buttons need text".to_owned()));
        };
        bodies.push(template(json!({
            "template_type": "button",
            "text": text,
            "buttons": message.buttons.iter().map(button).collect::<Result<Vec<_>>>()?,
        })));
    } else if let Some(text) = text {
        bodies.push(json!({ "text": text }));
    }
    if !message.cards.is_empty() {
        let elements = message
            .cards
            .iter()
            .map(|card| {
                let mut element = json!({ "title": card.title.as_str() });
                if let Some(subtitle) = card.subtitle.as_ref().into_option() {
                    element["subtitle"] = json!(subtitle.as_str());
                }
                if let Some(image) = card.image_url.as_ref().into_option() {
                    element["image_url"] = json!(image.as_str());
                }
                if let Some(url) = card.default_url.as_ref().into_option() {
                    element["default_action"] = json!({ "type": "web_url", "url": url.as_str() });
                }
                if !card.buttons.is_empty() {
                    element["buttons"] =
                        Value::Array(card.buttons.iter().map(button).collect::<Result<_>>()?);
                }
                Ok(element)
            })
            .collect::<Result<Vec<_>>>()?;
        bodies.push(template(
            json!({ "template_type": "generic", "elements": elements }),
        ));
    }
    if let Some(media) = message.media.as_ref().into_option() {
        let kind = match media.kind {
            MediaKind::IMAGE => "image",
            MediaKind::AUDIO => "audio",
            MediaKind::VIDEO => "video",
            MediaKind::FILE => "file",
            MediaKind(other) => {
                return Err(Error::InvalidMessage(format!("unknown media kind {other}")))
            }
        };
        let payload = match (
            media.url.as_ref().into_option(),
            media.attachment_id.as_ref().into_option(),
        ) {
            (Some(url), None) => json!({ "url": url.as_str(), "is_reusable": true }),
            (None, Some(id)) => json!({ "attachment_id": id.as_str() }),
            _ => {
                return Err(Error::InvalidMessage(
                    "media needs exactly one of url and attachment_id".to_owned(),
                ))
            }
        };
        bodies.push(json!({ "attachment": { "type": kind, "payload": payload } }));
    }
    Ok(bodies)
}

fn template(payload: Value) -> Value {
    json!({ "attachment": { "type": "template", "payload": payload } })
}

fn button(button: &adapter_api::Button) -> Result<Value> {
    let (kind, key) = match button.kind {
        ButtonKind::URL => ("web_url", "url"),
        ButtonKind::POSTBACK => ("postback", "payload"),
        ButtonKind::PHONE_NUMBER => ("phone_number", "payload"),
        ButtonKind(other) => {
            return Err(Error::InvalidMessage(format!(
                "unknown button kind {other}"
            )))
        }
    };
    Ok(json!({ "type": kind, "title": button.title.as_str(), key: button.value.as_str() }))
}

fn quick_replies(message: &OutboundMessage) -> Value {
    message
        .quick_replies
        .iter()
        .map(|q| match q.kind {
            QuickReplyKind::USER_PHONE_NUMBER => json!({ "content_type": "user_phone_number" }),
            QuickReplyKind::USER_EMAIL => json!({ "content_type": "user_email" }),
            _ => {
                let mut reply = json!({
                    "content_type": "text",
                    "title": q.title.as_str(),
                    "payload": q.payload.as_str(),
                });
                if let Some(image) = q.image_url.as_ref().into_option() {
                    reply["image_url"] = json!(image.as_str());
                }
                reply
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use adapter_api::{abi_stable::std_types::ROption, Media, QuickReply};

    use super::*;

    #[test]
    fn text_is_a_response() {
        let requests = requests(&OutboundMessage::text("1", "42", "hi")).unwrap();
        assert_eq!(
            requests,
            vec![json!({
                "recipient": { "id": "42" },
                "messaging_type": "RESPONSE",
                "message": { "text": "hi" },
            })]
        );
    }

    #[test]
    fn text_with_media_is_two_requests_and_quick_replies_go_last() {
        let mut message = OutboundMessage::text("1", "42", "look");
        message.media = ROption::RSome(Media {
            kind: MediaKind::IMAGE,
            url: ROption::RSome("https://example.com/a.png".into()),
            attachment_id: ROption::RNone,
        });
        message.quick_replies.push(QuickReply::text("Yes", "YES"));
        let requests = requests(&message).unwrap();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0]["message"], json!({ "text": "look" }));
        assert_eq!(
            requests[1]["message"]["attachment"],
            json!({ "type": "image", "payload": { "url": "https://example.com/a.png", "is_reusable": true } })
        );
        assert_eq!(
            requests[1]["message"]["quick_replies"],
            json!([{ "content_type": "text", "title": "Yes", "payload": "YES" }])
        );
    }

    #[test]
    fn retired_tags_are_refused() {
        let mut message = OutboundMessage::text("1", "42", "update");
        message.messaging_type = MessagingType::MESSAGE_TAG;
        message.tag = ROption::RSome("ACCOUNT_UPDATE".into());
        let err = requests(&message).unwrap_err().to_string();
        assert!(
            err.contains("ACCOUNT_UPDATE") && err.contains("retired"),
            "{err}"
        );
        message.tag = ROption::RSome("HUMAN_AGENT".into());
        assert_eq!(requests(&message).unwrap()[0]["tag"], "HUMAN_AGENT");
    }

    #[test]
    fn sender_actions_are_sent_alone() {
        let mut message = OutboundMessage::text("1", "42", "ignored");
        message.sender_action = SenderAction::TYPING_ON;
        assert_eq!(
            requests(&message).unwrap(),
            vec![json!({ "recipient": { "id": "42" }, "sender_action": "typing_on" })]
        );
    }

    #[test]
    fn empty_message_is_an_error() {
        let err = requests(&OutboundMessage::new("1", "42")).unwrap_err();
        assert!(matches!(err, Error::InvalidMessage(_)));
    }
}
