//! The echo platform's webhook: a POST with the shared secret in `X-Echo-Secret`
//! and one message as JSON,
//! `{"id": "m1", "from": "alice", "to": "echo-bot", "text": "hi", "time_ms": 1700000000000}`.

use adapter_api::{
    abi_stable::std_types::ROption, AdapterError, ErrorKind, EventKind, InboundEvent, Verdict,
    WebhookRequest, WebhookResponse,
};
use adapter_kit::{
    webhook::{repeated_header_response, single_header},
    Secret,
};
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// The header that carries the shared secret (header names arrive lower-case).
pub const SECRET_HEADER: &str = "x-echo-secret";

/// Accepts a POST whose `X-Echo-Secret` is the configured secret; answers anything
/// else. The body of a refusal is logged by the host: it names the problem, never a
/// value.
pub fn verify(secret: &Secret, request: &WebhookRequest<'_>) -> Verdict {
    let refuse = |status, reason: &str| Verdict::Respond(WebhookResponse::text(status, reason));
    if request.method.as_str() != "POST" {
        return refuse(405, "echo webhooks are POSTs");
    }
    let given = match single_header(request, SECRET_HEADER) {
        Ok(Some(given)) => given,
        Ok(None) => return refuse(401, "missing X-Echo-Secret header"),
        Err(_) => return Verdict::Respond(repeated_header_response("X-Echo-Secret")),
    };
    // Constant time: how much of a guess matched must not show in how long it took.
    if bool::from(given.as_bytes().ct_eq(secret.expose().as_bytes())) {
        Verdict::Accept
    } else {
        refuse(403, "X-Echo-Secret does not match")
    }
}

/// The body the echo platform sends.
#[derive(Deserialize)]
struct Incoming {
    id: String,
    from: String,
    to: String,
    text: String,
    time_ms: u64,
}

/// Turns an accepted body into its one message event. A body that is not an echo
/// message is `BAD_REQUEST`: the host answers 400.
pub fn parse(body: &[u8]) -> Result<Vec<InboundEvent>, AdapterError> {
    let bad_request = |message: String| AdapterError::new(ErrorKind::BAD_REQUEST, message);
    let incoming: Incoming = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("not an echo message: {e}")))?;
    if incoming.id.is_empty() || incoming.from.is_empty() {
        return Err(bad_request("id and from must not be empty".to_owned()));
    }
    let mut event = InboundEvent::new(EventKind::MESSAGE);
    // The platform's own id and time: a redelivery carries the same two, and the
    // host drops it as a duplicate.
    event.event_id = incoming.id.into();
    event.timestamp_ms = incoming.time_ms;
    event.account_id = incoming.to.clone().into();
    event.recipient_id = incoming.to.into();
    event.sender_id = incoming.from.into();
    event.text = ROption::RSome(incoming.text.into());
    event.raw_json = String::from_utf8_lossy(body).into_owned().into();
    Ok(vec![event])
}

#[cfg(test)]
mod tests {
    use adapter_api::{
        abi_stable::std_types::{RSlice, RStr},
        Header,
    };

    use super::*;

    fn status(method: &str, secrets: &[&str]) -> u16 {
        let headers: Vec<Header<'_>> = secrets
            .iter()
            .map(|value| Header {
                name: RStr::from(SECRET_HEADER),
                value: RStr::from(*value),
            })
            .collect();
        let request = WebhookRequest {
            method: method.into(),
            path: "/webhooks/echo".into(),
            query: "".into(),
            headers: RSlice::from_slice(&headers),
            body: RSlice::from_slice(b"{}"),
        };
        match verify(&Secret::new("right"), &request) {
            Verdict::Accept => 200,
            Verdict::Respond(response) => response.status,
        }
    }

    #[test]
    fn only_a_post_with_the_secret_once_is_accepted() {
        assert_eq!(status("POST", &["right"]), 200);
        assert_eq!(status("POST", &[]), 401);
        assert_eq!(status("POST", &["wrong"]), 403);
        assert_eq!(status("POST", &["righ"]), 403);
        assert_eq!(status("POST", &["right", "right"]), 400);
        assert_eq!(status("GET", &["right"]), 405);
    }

    #[test]
    fn a_message_becomes_one_event_with_the_platforms_id_and_time() {
        let body = br#"{"id": "m1", "from": "alice", "to": "bot", "text": "hi", "time_ms": 17}"#;
        let events = parse(body).unwrap();
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert_eq!(event.kind, EventKind::MESSAGE);
        assert_eq!(event.event_id.as_str(), "m1");
        assert_eq!(event.timestamp_ms, 17);
        assert_eq!(event.conversation_key(), ("bot", "alice"));
        assert_eq!(
            event.text.as_ref().map(|t| t.as_str()),
            ROption::RSome("hi")
        );
    }

    #[test]
    fn a_body_that_is_not_an_echo_message_is_a_bad_request() {
        for body in [
            &b"not json"[..],
            br#"{"id": "m1"}"#,
            br#"{"id": "", "from": "a", "to": "b", "text": "", "time_ms": 0}"#,
        ] {
            let err = parse(body).unwrap_err();
            assert_eq!(err.kind, ErrorKind::BAD_REQUEST, "{err}");
        }
    }
}
