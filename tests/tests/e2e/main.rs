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
mod recovery;
mod reload;
mod replies;
mod signature;
mod start_up;
mod versions;

use std::sync::atomic::{AtomicUsize, Ordering};

use e2e::{fixture, sign, FakeGraph, GraphCall, Host, APP_SECRET};
use serde_json::Value;

use crate::delivery::until;

/// Waits until `host` has processed every event it accepted: `dmflow_queue_depth`
/// back at 0. An event leaves the queue once its replies are sent or given up on,
/// so no reply to an event accepted before this call can come after it.
pub async fn processed(host: &Host) {
    // Never lower than 0, and present from the start: a missing sample is a failure.
    until("every accepted event processed", || async {
        e2e::sample(&host.metrics().await, "dmflow_queue_depth") == Some(0.0)
    })
    .await;
}

/// Waits until `api` received at least `n` calls, then until `host` processed every
/// event it accepted ([`processed`]); returns every call. A reply that should not
/// be there has had its chance to show.
pub async fn calls_once_processed(host: &Host, api: &FakeGraph, n: usize) -> Vec<GraphCall> {
    until("the expected calls", || async { api.calls().len() >= n }).await;
    processed(host).await;
    api.calls()
}

/// A positive control for "nothing more is sent": posts a text message from `user`
/// to `page` (a Messenger conversation), waits for its reply, then for the host to
/// have processed everything it accepted. One conversation's events are handled in
/// order, so every earlier event of that conversation was answered (or given up
/// on) before the control's. Returns every call but the control's reply.
pub async fn control_in(host: &Host, graph: &FakeGraph, page: &str, user: &str) -> Vec<GraphCall> {
    static CONTROLS: AtomicUsize = AtomicUsize::new(0);
    let text = format!("control-{}", CONTROLS.fetch_add(1, Ordering::SeqCst));
    let mut body: Value = serde_json::from_slice(&fixture("message_text")).unwrap();
    body["entry"][0]["id"] = page.into();
    let item = &mut body["entry"][0]["messaging"][0];
    item["sender"]["id"] = user.into();
    item["recipient"]["id"] = page.into();
    item["message"]["mid"] = format!("mid-{text}").into();
    item["message"]["text"] = text.as_str().into();
    post_signed(host, &serde_json::to_vec(&body).unwrap()).await;
    until("the control's reply", || async {
        graph.calls().iter().any(|c| c.text() == Some(&text))
    })
    .await;
    processed(host).await;
    graph
        .calls()
        .into_iter()
        .filter(|c| c.text() != Some(&text))
        .collect()
}

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
