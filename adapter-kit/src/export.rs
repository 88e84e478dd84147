//! [`export_plugin!`](crate::export_plugin): a plugin's root module in one line.

/// Declares the plugin's root module: its `info` and its `new_adapter`, which builds the
/// [`Channel`](crate::Channel) from the settings JSON under `catch_unwind`.
///
/// The crate must depend on `abi_stable` directly: the export attribute names it.
///
/// ```text
/// adapter_kit::export_plugin! {
///     id: "acme",
///     name: "ACME Chat",
///     log_target: "acme_adapter",
///     new: |settings_json, log| Acme::from_json(settings_json, log),
/// }
/// ```
#[macro_export]
macro_rules! export_plugin {
    (id: $id:expr, name: $name:expr, log_target: $target:expr, new: $build:expr $(,)?) => {
        /// The root module: what the host finds when it loads this library.
        #[::adapter_api::abi_stable::export_root_module]
        pub fn root_module() -> ::adapter_api::AdapterPluginRef {
            use ::adapter_api::abi_stable::prefix_type::PrefixTypeTrait;
            ::adapter_api::AdapterPlugin {
                info: __plugin_info,
                new_adapter: __plugin_new_adapter,
            }
            .leak_into_prefix()
        }

        extern "C" fn __plugin_info() -> ::adapter_api::PluginInfo {
            ::adapter_api::PluginInfo {
                id: ($id).into(),
                name: ($name).into(),
                version: env!("CARGO_PKG_VERSION").into(),
                api_version: ::adapter_api::API_VERSION.into(),
            }
        }

        extern "C" fn __plugin_new_adapter(
            settings_json: ::adapter_api::abi_stable::std_types::RStr<'_>,
            host: ::adapter_api::HostServicesBox,
        ) -> ::adapter_api::abi_stable::std_types::RResult<
            ::adapter_api::ChannelAdapterBox,
            ::adapter_api::AdapterError,
        > {
            $crate::new_adapter(settings_json, host, $target, $build)
        }
    };
}
