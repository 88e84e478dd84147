//! DmFlow channel plugin for Facebook Messenger.
//!
//! Built as a `cdylib`, this is `libmessenger_adapter.so`: drop it into the host's
//! plugins folder. Built as an `rlib`, the same code is tested in-process.
//!
//! - [`webhook::verify`]: the GET handshake and `X-Hub-Signature-256`
//! - [`webhook::parse`]: every entry and every `messaging`/`standby` item as events
//! - [`send`]: Send API bodies and the Graph client with retries and pacing
//! - [`ops`]: channel operations (uploads, profile, handover, personas)
//! - [`adapter`]: the channel `adapter-kit` exports through the ABI

pub mod adapter;
pub mod error;
pub mod ops;
pub mod send;
pub mod settings;
pub mod webhook;

pub use adapter_kit::Log;

use adapter_api::{
    abi_stable::{
        export_root_module,
        prefix_type::PrefixTypeTrait,
        std_types::{RResult, RStr},
    },
    AdapterError, AdapterPlugin, AdapterPluginRef, ChannelAdapterBox, HostServicesBox, PluginInfo,
    API_VERSION,
};

/// The plugin id host configs name: `plugin = "messenger"`.
pub const PLUGIN_ID: &str = "messenger";

/// The root module: what the host finds when it loads this library.
#[export_root_module]
pub fn root_module() -> AdapterPluginRef {
    AdapterPlugin { info, new_adapter }.leak_into_prefix()
}

/// What this plugin says about itself.
pub extern "C" fn info() -> PluginInfo {
    PluginInfo {
        id: PLUGIN_ID.into(),
        name: "Facebook Messenger".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: API_VERSION.into(),
    }
}

/// Creates a Messenger adapter from its settings JSON.
pub extern "C" fn new_adapter(
    settings_json: RStr<'_>,
    host: HostServicesBox,
) -> RResult<ChannelAdapterBox, AdapterError> {
    adapter_kit::new_adapter(settings_json, host, "messenger_adapter", |json, log| {
        adapter::MessengerAdapter::from_json(json, log).map_err(AdapterError::from)
    })
}
