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

use adapter_api::{
    abi_stable::{
        export_root_module,
        prefix_type::PrefixTypeTrait,
        std_types::{RResult, RStr},
    },
    AdapterError, AdapterPlugin, AdapterPluginRef, ChannelAdapterBox, HostServicesBox, PluginInfo,
    API_VERSION,
};

/// The plugin id host configs name: `plugin = "line"`.
pub const PLUGIN_ID: &str = "line";

/// The root module.
#[export_root_module]
pub fn root_module() -> AdapterPluginRef {
    AdapterPlugin { info, new_adapter }.leak_into_prefix()
}

/// What this plugin says about itself.
pub extern "C" fn info() -> PluginInfo {
    PluginInfo {
        id: PLUGIN_ID.into(),
        name: "LINE Messaging API".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: API_VERSION.into(),
    }
}

/// Creates a LINE adapter from its settings JSON.
pub extern "C" fn new_adapter(
    settings_json: RStr<'_>,
    host: HostServicesBox,
) -> RResult<ChannelAdapterBox, AdapterError> {
    adapter_kit::new_adapter(settings_json, host, "line_adapter", |json, log| {
        channel::LineChannel::from_json(json, log).map_err(AdapterError::from)
    })
}
