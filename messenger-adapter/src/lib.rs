//! DmFlow channel plugin for Facebook Messenger.
//!
//! Built as a `cdylib`, this is `libmessenger_adapter.so`: drop it into the host's
//! plugins folder. Built as an `rlib`, the same code is tested in-process.
//!
//! - [`webhook::verify`]: the GET handshake and `X-Hub-Signature-256`
//! - [`webhook::parse`]: every entry and every `messaging`/`standby` item as events
//! - [`send`]: Send API bodies and the Graph client with retries and pacing
//! - [`ops`]: channel operations (uploads, profile, handover, personas)
//! - [`channel`]: the channel `adapter-kit` exports through the ABI

pub mod channel;
pub mod error;
pub mod ops;
pub mod send;
pub mod settings;
pub mod webhook;

pub use adapter_kit::Log;

use adapter_api::AdapterError;

/// The plugin id host configs name: `plugin = "messenger"`.
pub const PLUGIN_ID: &str = "messenger";

adapter_kit::export_plugin! {
    id: PLUGIN_ID,
    name: "Facebook Messenger",
    log_target: "messenger_adapter",
    new: |json: &str, log| channel::MessengerChannel::from_json(json, log).map_err(AdapterError::from),
}
