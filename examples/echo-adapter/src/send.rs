//! A reply as one HTTP request: `POST send_url` with
//! `{"from": "echo-bot", "to": "alice", "text": "hi"}` and an `Idempotency-Key`
//! header. The platform answers 2xx when it took the message, optionally with
//! `{"message_id": "..."}`.

use std::{future::Future, time::Duration};

use adapter_api::{AdapterError, ErrorKind, OutboundMessage, SendReceipt, SenderAction};
use serde_json::{json, Value};

use crate::settings::Settings;

/// The HTTP client and where it sends; one per channel, shared by every send.
pub struct Sender {
    client: reqwest::Client,
    send_url: String,
}

impl Sender {
    /// A client with the settings' timeout.
    pub fn new(settings: &Settings) -> Result<Self, AdapterError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.request_timeout_ms))
            .build()
            .map_err(|e| AdapterError::new(ErrorKind::INVALID_SETTINGS, e.to_string()))?;
        Ok(Self {
            client,
            send_url: settings.send_url.clone(),
        })
    }

    /// Sends `message`. What it cannot send fails at once, before any request, as
    /// `INVALID_MESSAGE`; the future owns everything it needs (`'static`).
    pub fn send(
        &self,
        message: &OutboundMessage,
    ) -> impl Future<Output = Result<SendReceipt, AdapterError>> + Send + 'static {
        let prepared = request_body(message).map(|(body, key)| {
            let mut request = self.client.post(&self.send_url).json(&body);
            if let Some(key) = key {
                request = request.header("idempotency-key", key);
            }
            request
        });
        let recipient = message.recipient_id.clone();
        async move {
            let response = prepared?.send().await.map_err(transport_error)?;
            let status = response.status().as_u16();
            if !(200..300).contains(&status) {
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                return Err(status_error(status, retry_after));
            }
            // The message was taken; an answer without a message id is still a success.
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            Ok(SendReceipt {
                message_id: answer["message_id"].as_str().unwrap_or("").into(),
                recipient_id: recipient,
                parts: 1,
                attempts: 1,
            })
        }
    }
}

/// The JSON body of `message` and its idempotency key, or why it cannot be sent:
/// the echo platform takes text only.
pub fn request_body(message: &OutboundMessage) -> Result<(Value, Option<String>), AdapterError> {
    let invalid = |why: &str| AdapterError::new(ErrorKind::INVALID_MESSAGE, why);
    if message.sender_action != SenderAction::NONE {
        return Err(invalid("the echo channel has no sender actions"));
    }
    let text = message.text.as_ref().into_option().map(|t| t.as_str());
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Err(invalid(
            "the echo channel sends text only, and the text is empty",
        ));
    };
    if message.media.is_some() || !message.buttons.is_empty() || !message.cards.is_empty() {
        return Err(invalid("the echo channel sends text only"));
    }
    // The host sets "idempotency_key" in options_json, the same on every try of a
    // reply; other options mean nothing here.
    let options: Value = match message.options_json.as_str() {
        "" => Value::Null,
        json => {
            serde_json::from_str(json).map_err(|_| invalid("options_json is not a JSON object"))?
        }
    };
    let key = options["idempotency_key"].as_str().map(str::to_owned);
    let body = json!({
        "from": message.account_id.as_str(),
        "to": message.recipient_id.as_str(),
        "text": text,
    });
    Ok((body, key))
}

/// A failure before an answer. A connection that could not be made is `TRANSIENT`:
/// nothing was sent, so the host may send the reply again later. Any other (a
/// timeout, a connection lost after the request was written) is `TIMEOUT`: the
/// platform may have taken the message, and the host does not send it twice by
/// default. The URL is left out of the message: it may carry a token.
fn transport_error(err: reqwest::Error) -> AdapterError {
    let kind = if err.is_connect() {
        ErrorKind::TRANSIENT
    } else {
        ErrorKind::TIMEOUT
    };
    AdapterError::new(kind, format!("send: {}", err.without_url()))
}

/// The error for an answer with `status` other than 2xx: 429 and 5xx say the
/// message was not taken (`RATE_LIMITED`, with the wait when given, and
/// `TRANSIENT`); any other refusal is `PERMANENT`, as sending again cannot help.
pub fn status_error(status: u16, retry_after_secs: Option<u64>) -> AdapterError {
    let message = format!("the echo platform answered {status}");
    match status {
        429 => AdapterError::new(ErrorKind::RATE_LIMITED, message)
            .with_retry_after_ms(retry_after_secs.unwrap_or(0).saturating_mul(1000)),
        500..=599 => AdapterError::new(ErrorKind::TRANSIENT, message),
        _ => AdapterError::new(ErrorKind::PERMANENT, message),
    }
}

#[cfg(test)]
mod tests {
    use adapter_api::{abi_stable::std_types::ROption, Media, MediaKind};

    use super::*;

    #[test]
    fn a_text_becomes_a_body_with_the_hosts_idempotency_key() {
        let mut message = OutboundMessage::text("bot", "alice", "hi");
        message.options_json = r#"{"idempotency_key": "k-1"}"#.into();
        let (body, key) = request_body(&message).unwrap();
        assert_eq!(body, json!({ "from": "bot", "to": "alice", "text": "hi" }));
        assert_eq!(key.as_deref(), Some("k-1"));
        let (_, key) = request_body(&OutboundMessage::text("bot", "alice", "hi")).unwrap();
        assert_eq!(key, None);
    }

    #[test]
    fn what_the_channel_cannot_send_is_an_invalid_message() {
        let mut typing = OutboundMessage::new("bot", "alice");
        typing.sender_action = SenderAction::TYPING_ON;
        let mut media = OutboundMessage::text("bot", "alice", "look");
        media.media = ROption::RSome(Media {
            kind: MediaKind::IMAGE,
            url: ROption::RSome("https://example.com/a.png".into()),
            attachment_id: ROption::RNone,
        });
        let mut bad_options = OutboundMessage::text("bot", "alice", "hi");
        bad_options.options_json = "not json".into();
        for message in [
            OutboundMessage::new("bot", "alice"),
            typing,
            media,
            bad_options,
        ] {
            let err = request_body(&message).unwrap_err();
            assert_eq!(err.kind, ErrorKind::INVALID_MESSAGE, "{err}");
        }
    }

    #[test]
    fn an_answer_says_whether_the_reply_may_be_sent_again() {
        let rate_limited = status_error(429, Some(3));
        assert_eq!(rate_limited.kind, ErrorKind::RATE_LIMITED);
        assert_eq!(rate_limited.retry_after_ms, 3000);
        assert_eq!(status_error(503, None).kind, ErrorKind::TRANSIENT);
        assert_eq!(status_error(400, None).kind, ErrorKind::PERMANENT);
        assert_eq!(status_error(404, None).kind, ErrorKind::PERMANENT);
    }
}
