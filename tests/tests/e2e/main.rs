//! End-to-end: the real `host-example` binary loading the real Messenger plugin
//! library at run time, signed webhooks over HTTP, a fake Graph API on 127.0.0.1.

mod abuse;
mod bad_input;
mod compat;
mod delivery;
mod deploy;
mod durability;
mod echo;
mod examples;
mod faults;
mod guarantees;
mod guide;
mod handshake;
mod host;
mod hosts;
mod isolation;
mod layout;
mod line;
mod logs;
mod operations;
mod reload;
mod replies;
mod signature;
mod start_up;
mod versions;

use std::time::Duration;

use e2e::{sign, Host, APP_SECRET};

/// How long to keep watching for calls that should not happen.
pub const SETTLE: Duration = Duration::from_millis(300);

/// POSTs `body` to the Messenger webhook with the given `X-Hub-Signature-256`.
pub async fn post(host: &Host, body: &[u8], signature: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(host.webhook("messenger"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("x-hub-signature-256", signature);
    }
    let response = request.send().await.expect("host unreachable");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// POSTs `body` signed with the configured app secret and expects 200.
pub async fn post_signed(host: &Host, body: &[u8]) {
    let (status, text) = post(host, body, Some(&sign(APP_SECRET, body))).await;
    assert_eq!(status, 200, "{text}\n{}", host.log());
}
