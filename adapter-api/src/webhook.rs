//! The incoming HTTP request a host hands to an adapter, and the adapter's verdict.

use abi_stable::{
    std_types::{RSlice, RStr, RString, RVec},
    StableAbi,
};

/// One HTTP header of a [`WebhookRequest`]. Names are lower-case.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// Lower-case header name, e.g. `x-hub-signature-256`.
    pub name: RStr<'a>,
    /// The header value. Headers whose value is not valid UTF-8 are not passed.
    pub value: RStr<'a>,
}

/// An incoming webhook request, borrowed from the host for the duration of one call.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct WebhookRequest<'a> {
    /// `GET`, `POST`, ...
    pub method: RStr<'a>,
    /// The request path, e.g. `/webhooks/messenger`.
    pub path: RStr<'a>,
    /// The raw query string without the `?`, still percent-encoded.
    pub query: RStr<'a>,
    /// The request headers.
    pub headers: RSlice<'a, Header<'a>>,
    /// The raw body bytes, exactly as received (signatures are computed over them).
    pub body: RSlice<'a, u8>,
}

impl<'a> WebhookRequest<'a> {
    /// The first header named `name` (compared ignoring ASCII case).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        let headers: &'a [Header<'a>] = self.headers.as_slice();
        headers
            .iter()
            .find(|h| h.name.as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }
}

/// An HTTP answer an adapter asks the host to send as is.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct WebhookResponse {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type` of the body.
    pub content_type: RString,
    /// The body.
    pub body: RVec<u8>,
}

impl WebhookResponse {
    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: RString::from("text/plain; charset=utf-8"),
            body: RVec::from(body.into().into_bytes()),
        }
    }
}

/// What the host should do with a request after [`verify`](crate::ChannelAdapter::verify).
#[repr(u8)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The request is authentic: go on and [`parse`](crate::ChannelAdapter::parse) it.
    Accept,
    /// Answer the request with this response and do nothing else: a handshake's
    /// challenge, a 403 for a wrong token, a 401 for a bad signature.
    Respond(WebhookResponse),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup_ignores_case() {
        let headers = [Header {
            name: RStr::from("x-hub-signature-256"),
            value: RStr::from("sha256=00"),
        }];
        let request = WebhookRequest {
            method: "POST".into(),
            path: "/webhooks/messenger".into(),
            query: "".into(),
            headers: RSlice::from_slice(&headers),
            body: RSlice::from_slice(b"{}"),
        };
        assert_eq!(request.header("X-Hub-Signature-256"), Some("sha256=00"));
        assert_eq!(request.header("x-hub-signature"), None);
    }
}
