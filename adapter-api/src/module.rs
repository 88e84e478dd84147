//! The root module every plugin library exports.

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings,
    sabi_types::VersionStrings,
    std_types::{RResult, RStr, RString},
    StableAbi,
};

use crate::{AdapterError, ChannelAdapterBox, HostServicesBox};

/// The version of this contract (`adapter-api`'s crate version) that a plugin or a
/// host was built against.
///
/// A host accepts a plugin built against the same major version and the same or a
/// newer minor version; anything else is refused at load time with a clear error.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a plugin says about itself.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Stable identifier that host configs name in `plugin = "..."`, e.g. `"messenger"`.
    pub id: RString,
    /// Human-readable name, e.g. `"Facebook Messenger"`.
    pub name: RString,
    /// The plugin's own version.
    pub version: RString,
    /// The [`API_VERSION`] the plugin was built against.
    pub api_version: RString,
}

/// The root module: the one value a plugin library exports.
///
/// This is a prefix type: fields may only be added after the last one, in a new minor
/// version of `adapter-api`, and the field marked `last_prefix_field` never moves.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = AdapterPluginRef)))]
#[sabi(missing_field(panic))]
pub struct AdapterPlugin {
    /// Describes the plugin. Must not fail.
    pub info: extern "C" fn() -> PluginInfo,

    /// Creates one adapter from its settings (a JSON object, as written in the host's
    /// config) and the services the host offers it.
    ///
    /// Returns [`ErrorKind::INVALID_SETTINGS`](crate::ErrorKind::INVALID_SETTINGS) for
    /// settings it cannot use. Must not unwind: wrap the body in
    /// [`catch_panic`](crate::catch_panic).
    ///
    /// This is the last field of the 1.0 prefix: fields added by later minor versions
    /// go after it.
    #[sabi(last_prefix_field)]
    pub new_adapter: extern "C" fn(
        settings_json: RStr<'_>,
        host: HostServicesBox,
    ) -> RResult<ChannelAdapterBox, AdapterError>,
}

impl RootModule for AdapterPluginRef {
    declare_root_module_statics! {AdapterPluginRef}
    const BASE_NAME: &'static str = "dmflow_adapter";
    const NAME: &'static str = "dmflow_adapter";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
