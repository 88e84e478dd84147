//! `X-Line-Signature` and webhook bodies (`{"destination", "events": [...]}`).

use adapter_api::{
    abi_stable::std_types::RString, Attachment, AttachmentKind, EventFlags, EventKind,
    InboundEvent, Verdict, WebhookRequest, WebhookResponse,
};
use adapter_kit::webhook::{repeated_header_response, single_header};
use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::error::{Error, Result};

/// Accepts a POST whose `X-Line-Signature` is the base64 HMAC-SHA256 of the raw body
/// under the channel secret (compared in constant time); refuses anything else, a
/// signature header sent twice included (400).
pub fn verify(channel_secret: &str, request: &WebhookRequest<'_>) -> Verdict {
    if request.method.as_str() != "POST" {
        return Verdict::Respond(WebhookResponse::text(405, "LINE webhooks are POSTs"));
    }
    let Ok(header) = single_header(request, "x-line-signature") else {
        return Verdict::Respond(repeated_header_response("X-Line-Signature"));
    };
    let Some(header) = header else {
        return Verdict::Respond(WebhookResponse::text(
            401,
            "missing X-Line-Signature header",
        ));
    };
    let Ok(expected) = STANDARD.decode(header.trim()) else {
        return Verdict::Respond(WebhookResponse::text(
            401,
            "malformed X-Line-Signature header",
        ));
    };
    let mut mac =
        Hmac::<Sha256>::new_from_slice(channel_secret.as_bytes()).expect("HMAC takes any key");
    mac.update(request.body.as_slice());
    match mac.verify_slice(&expected) {
        Ok(()) => Verdict::Accept,
        Err(_) => Verdict::Respond(WebhookResponse::text(
            403,
            "signature does not match the body",
        )),
    }
}

/// The `X-Line-Signature` of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parses a webhook body into events, in order.
pub fn parse(body: &[u8]) -> Result<Vec<InboundEvent>> {
    let root: Value = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("body is not valid JSON: {e}")))?;
    let destination = root
        .get("destination")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::BadRequest("missing \"destination\"".to_owned()))?;
    let events = root
        .get("events")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::BadRequest("missing \"events\" array".to_owned()))?;
    Ok(events
        .iter()
        .filter_map(Value::as_object)
        .map(|e| event(destination, e))
        .collect())
}

fn event(destination: &str, item: &Map<String, Value>) -> InboundEvent {
    let kind_name = item.get("type").and_then(Value::as_str).unwrap_or("");
    let kind = match kind_name {
        "message" => EventKind::MESSAGE,
        "postback" => EventKind::POSTBACK,
        "follow" => EventKind::FOLLOW,
        "unfollow" => EventKind::UNFOLLOW,
        _ => EventKind::OTHER,
    };
    let mut event = InboundEvent::new(kind);
    event.account_id = destination.into();
    event.recipient_id = destination.into();
    let source = item.get("source");
    let field = |k: &str| text(source.and_then(|s| s.get(k)));
    event.sender_id = field("userId")
        .or_else(|| field("groupId"))
        .or_else(|| field("roomId"))
        .unwrap_or_default()
        .into();
    event.timestamp_ms = item.get("timestamp").and_then(Value::as_u64).unwrap_or(0);
    if item.get("mode").and_then(Value::as_str) == Some("standby") {
        event.flags = EventFlags::STANDBY;
    }
    event.reply_token = text(item.get("replyToken")).map(RString::from).into();
    event.raw_json = serde_json::to_string(item).unwrap_or_default().into();

    let mut details = json!({ "type": kind_name });
    if let Some(source) = source {
        details["source"] = source.clone();
    }
    if let Some(redelivery) = item
        .get("deliveryContext")
        .and_then(|d| d.get("isRedelivery"))
    {
        details["is_redelivery"] = redelivery.clone();
    }
    match kind {
        EventKind::MESSAGE => {
            let message = item.get("message");
            let get = |k: &str| text(message.and_then(|m| m.get(k)));
            event.text = get("text").map(RString::from).into();
            details["message_id"] = get("id").into();
            if let Some(quote) = get("quoteToken") {
                details["quote_token"] = quote.into();
            }
            let attachment_kind = match get("type").as_deref() {
                Some("image") => Some(AttachmentKind::IMAGE),
                Some("video") => Some(AttachmentKind::VIDEO),
                Some("audio") => Some(AttachmentKind::AUDIO),
                Some("file") => Some(AttachmentKind::FILE),
                Some("sticker") => Some(AttachmentKind::STICKER),
                Some("location") => Some(AttachmentKind::LOCATION),
                Some("text") | None => None,
                Some(_) => Some(AttachmentKind::OTHER),
            };
            if let (Some(kind), Some(message)) = (attachment_kind, message) {
                // Content sent by the user lives behind the content API (it needs the
                // token); only externally hosted content has a public URL.
                let url = message
                    .get("contentProvider")
                    .filter(|p| p.get("type").and_then(Value::as_str) == Some("external"))
                    .and_then(|p| text(p.get("originalContentUrl")));
                event.attachments.push(Attachment {
                    kind,
                    url: url.map(RString::from).into(),
                    type_name: get("type").unwrap_or_default().into(),
                    raw_json: message.to_string().into(),
                });
            }
        }
        EventKind::POSTBACK => {
            let postback = item.get("postback");
            event.payload = text(postback.and_then(|p| p.get("data")))
                .map(RString::from)
                .into();
            if let Some(params) = postback.and_then(|p| p.get("params")) {
                details["params"] = params.clone();
            }
        }
        _ => {}
    }
    event.details_json = details.to_string().into();
    // LINE gives every event a stable id; redeliveries keep it.
    event.event_id = text(item.get("webhookEventId"))
        .unwrap_or_else(|| {
            let message_id = details["message_id"].as_str().unwrap_or("");
            format!(
                "{kind_name}:{}:{}:{message_id}",
                event.sender_id, event.timestamp_ms
            )
        })
        .into();
    event
}
