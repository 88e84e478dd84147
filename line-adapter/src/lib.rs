//! DmFlow channel plugin for the LINE Messaging API, built against `adapter-api` alone
//! (through `adapter-kit`): the host loads it like any other plugin.
//!
//! - [`webhook`]: `X-Line-Signature` (base64 HMAC-SHA256 of the raw body) and events
//!   (message, postback, follow, unfollow; the rest as `other`)
//! - [`send`]: replies with the event's reply token, pushes otherwise
//! - [`channel`]: the channel `adapter-kit` exports through the ABI

pub mod channel;
pub mod error;
pub mod send;
pub mod settings;
pub mod webhook;

use adapter_api::AdapterError;

/// The plugin id host configs name: `plugin = "line"`.
pub const PLUGIN_ID: &str = "line";

adapter_kit::export_plugin! {
    id: PLUGIN_ID,
    name: "LINE Messaging API",
    log_target: "line_adapter",
    new: |json: &str, log| channel::LineChannel::from_json(json, log).map_err(AdapterError::from),
}
