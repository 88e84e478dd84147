//! Reading a webhook's headers the way every proxy in front of the host will.

use adapter_api::{WebhookRequest, WebhookResponse};

/// A header that must appear once was sent more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepeatedHeader;

/// The one header named `name` (compared ignoring ASCII case): `Ok(None)` when
/// absent, `Err` when it appears more than once. A signature header must be single:
/// with two, a proxy that keeps the last and a host that checks the first would
/// disagree about what was verified.
pub fn single_header<'a>(
    request: &WebhookRequest<'a>,
    name: &str,
) -> Result<Option<&'a str>, RepeatedHeader> {
    let headers = request.headers.as_slice();
    let mut found = headers
        .iter()
        .filter(|h| h.name.as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str());
    let first = found.next();
    match found.next() {
        None => Ok(first),
        Some(_) => Err(RepeatedHeader),
    }
}

/// The answer to a request that repeats header `name`: 400.
pub fn repeated_header_response(name: &str) -> WebhookResponse {
    WebhookResponse::text(400, format!("the {name} header is sent more than once"))
}

#[cfg(test)]
mod tests {
    use adapter_api::{
        abi_stable::std_types::{RSlice, RStr},
        Header,
    };

    use super::*;

    fn with_headers<T>(
        headers: &[(&str, &str)],
        check: impl FnOnce(&WebhookRequest<'_>) -> T,
    ) -> T {
        let headers: Vec<Header<'_>> = headers
            .iter()
            .map(|(name, value)| Header {
                name: RStr::from(*name),
                value: RStr::from(*value),
            })
            .collect();
        let request = WebhookRequest {
            method: "POST".into(),
            path: "/".into(),
            query: "".into(),
            headers: RSlice::from_slice(&headers),
            body: RSlice::from_slice(b""),
        };
        check(&request)
    }

    #[test]
    fn one_header_is_found_and_two_are_refused_whatever_their_case() {
        let one = with_headers(&[("x-sig", "a"), ("other", "b")], |r| {
            single_header(r, "X-Sig").map(|v| v.map(str::to_owned))
        });
        assert_eq!(one, Ok(Some("a".to_owned())));
        let none = with_headers(&[("other", "b")], |r| {
            single_header(r, "x-sig").map(|v| v.map(str::to_owned))
        });
        assert_eq!(none, Ok(None));
        let two = with_headers(&[("x-sig", "a"), ("X-SIG", "a")], |r| {
            single_header(r, "x-sig").map(|v| v.map(str::to_owned))
        });
        assert_eq!(two, Err(RepeatedHeader));
    }
}
