//! The smallest valid plugin: built against `adapter-api` alone, with no helper
//! crate. The compatibility tests build it against other versions of the api.
#![allow(unsafe_code)] // the export macro expands to unsafe code

use adapter_api::{
    abi_stable::{
        export_root_module,
        prefix_type::PrefixTypeTrait,
        sabi_trait::TD_Opaque,
        std_types::{RResult, RStr, RVec},
    },
    catch_panic, AdapterError, AdapterPlugin, AdapterPluginRef, CallCallbackBox, ChannelAdapter,
    ChannelAdapterBox, ChannelAdapter_TO, ErrorKind, HostServicesBox, InboundEvent,
    OutboundMessage, PluginInfo, SendCallbackBox, SendReceipt, Verdict, WebhookRequest,
    API_VERSION,
};

#[export_root_module]
pub fn root_module() -> AdapterPluginRef {
    AdapterPlugin { info, new_adapter }.leak_into_prefix()
}

extern "C" fn info() -> PluginInfo {
    PluginInfo {
        id: "minimal".into(),
        name: "Minimal test plugin".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: API_VERSION.into(),
    }
}

extern "C" fn new_adapter(
    _: RStr<'_>,
    _: HostServicesBox,
) -> RResult<ChannelAdapterBox, AdapterError> {
    catch_panic(|| RResult::ROk(ChannelAdapter_TO::from_value(Minimal, TD_Opaque)))
}

struct Minimal;

impl ChannelAdapter for Minimal {
    fn verify(&self, _: &WebhookRequest<'_>) -> Verdict {
        Verdict::Accept
    }

    fn parse(&self, _: &WebhookRequest<'_>) -> RResult<RVec<InboundEvent>, AdapterError> {
        RResult::ROk(RVec::new())
    }

    fn send(&self, _: OutboundMessage, done: SendCallbackBox) {
        done.done(RResult::ROk(SendReceipt::default()));
    }

    fn call(&self, _: RStr<'_>, _: RStr<'_>, done: CallCallbackBox) {
        done.done(RResult::RErr(AdapterError::new(
            ErrorKind::UNSUPPORTED,
            "no operations",
        )));
    }

    fn shutdown(&self, _: u64) {}
}
