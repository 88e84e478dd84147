//! The GET handshake and the `X-Hub-Signature-256` check.

use adapter_api::{Verdict, WebhookRequest, WebhookResponse};
use adapter_kit::webhook::single_header;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::settings::Settings;

/// Why a webhook was refused; each maps to an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A GET whose mode or verify token is wrong (403).
    BadHandshake,
    /// A POST without a signature header this adapter accepts (401).
    MissingSignature,
    /// A signature header that is not `sha256=<64 hex digits>` (401).
    MalformedSignature,
    /// A signature that does not match the body (403).
    WrongSignature,
    /// A signature header sent more than once (400): which one a proxy in front
    /// of the host checked cannot be known.
    RepeatedSignature,
    /// Neither GET nor POST (405).
    MethodNotAllowed,
}

impl Refusal {
    /// The HTTP answer for this refusal.
    pub fn response(self) -> WebhookResponse {
        let (status, text) = match self {
            Self::BadHandshake => (403, "verification failed"),
            Self::MissingSignature => (401, "missing X-Hub-Signature-256 header"),
            Self::MalformedSignature => (401, "malformed X-Hub-Signature-256 header"),
            Self::WrongSignature => (403, "signature does not match the body"),
            Self::RepeatedSignature => (400, "the signature header is sent more than once"),
            Self::MethodNotAllowed => (405, "only GET and POST are served"),
        };
        WebhookResponse::text(status, text)
    }
}

/// Decides what to do with a request: answer the handshake, refuse it, or accept it.
pub fn verify(settings: &Settings, request: &WebhookRequest<'_>) -> Verdict {
    let outcome = match request.method.as_str() {
        "GET" => handshake(settings, request.query.as_str()),
        "POST" => check_signature(settings, request).map(|()| None),
        _ => Err(Refusal::MethodNotAllowed),
    };
    match outcome {
        Ok(None) => Verdict::Accept,
        Ok(Some(challenge)) => Verdict::Respond(WebhookResponse::text(200, challenge)),
        Err(refusal) => Verdict::Respond(refusal.response()),
    }
}

/// The GET handshake: `hub.mode=subscribe` and the right `hub.verify_token` give
/// `Some(challenge)`, echoed unchanged.
pub fn handshake(settings: &Settings, query: &str) -> Result<Option<String>, Refusal> {
    let (mut mode, mut token, mut challenge) = (None, None, None);
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "hub.mode" => mode = Some(value.into_owned()),
            "hub.verify_token" => token = Some(value.into_owned()),
            "hub.challenge" => challenge = Some(value.into_owned()),
            _ => {}
        }
    }
    let token_ok = token.is_some_and(|t| {
        bool::from(
            t.as_bytes()
                .ct_eq(settings.verify_token.expose().as_bytes()),
        )
    });
    match (mode.as_deref(), token_ok, challenge) {
        (Some("subscribe"), true, Some(challenge)) => Ok(Some(challenge)),
        _ => Err(Refusal::BadHandshake),
    }
}

/// Checks `X-Hub-Signature-256` (or, when allowed and the sha256 header is absent,
/// `X-Hub-Signature`) over the raw body, in constant time. Either header sent twice
/// is refused, whatever the values.
pub fn check_signature(settings: &Settings, request: &WebhookRequest<'_>) -> Result<(), Refusal> {
    let secret = settings.app_secret.expose().as_bytes();
    let body = request.body.as_slice();
    let single = |name| single_header(request, name).map_err(|_| Refusal::RepeatedSignature);
    let sha256 = single("x-hub-signature-256")?;
    let sha1 = single("x-hub-signature")?;
    if let Some(header) = sha256 {
        let expected = decode(header, "sha256=", 32)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
        mac.update(body);
        return mac
            .verify_slice(&expected)
            .map_err(|_| Refusal::WrongSignature);
    }
    if settings.allow_sha1_signature {
        if let Some(header) = sha1 {
            let expected = decode(header, "sha1=", 20)?;
            let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes any key");
            mac.update(body);
            return mac
                .verify_slice(&expected)
                .map_err(|_| Refusal::WrongSignature);
        }
    }
    Err(Refusal::MissingSignature)
}

fn decode(header: &str, prefix: &str, len: usize) -> Result<Vec<u8>, Refusal> {
    let hex_digits = header
        .trim()
        .strip_prefix(prefix)
        .ok_or(Refusal::MalformedSignature)?;
    let bytes = hex::decode(hex_digits).map_err(|_| Refusal::MalformedSignature)?;
    if bytes.len() == len {
        Ok(bytes)
    } else {
        Err(Refusal::MalformedSignature)
    }
}

/// `sha256=<hex>` for `body` under `secret`: what Meta puts in `X-Hub-Signature-256`.
pub fn sign_sha256(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// `appsecret_proof`: lowercase hex of HMAC-SHA256(app secret, access token).
pub fn appsecret_proof(app_secret: &str, access_token: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("HMAC takes any key");
    mac.update(access_token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}
