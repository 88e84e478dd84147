#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
// abi_stable's derive macros generate code that trips these lints.
#![allow(
    clippy::needless_lifetimes,
    clippy::too_many_arguments,
    clippy::unnecessary_cast
)]

// `#[sabi_trait]` and `#[derive(StableAbi)]` expand to unsafe code; this crate itself
// writes none.
#[allow(unsafe_code)]
mod adapter;
mod error;
mod event;
#[allow(unsafe_code)]
mod module;
mod outbound;
pub mod settings;
mod webhook;

#[cfg(feature = "host")]
#[allow(unsafe_code)]
mod client;
#[cfg(feature = "host")]
mod loader;

pub use crate::{
    adapter::{
        CallCallback, CallCallbackBox, CallCallback_TO, ChannelAdapter, ChannelAdapterBox,
        ChannelAdapter_TO, HostServices, HostServicesBox, HostServices_TO, LogLevel, SendCallback,
        SendCallbackBox, SendCallback_TO, SendReceipt,
    },
    error::{catch_panic, AdapterError, ErrorKind},
    event::{Attachment, AttachmentKind, EventFlags, EventKind, InboundEvent},
    module::{AdapterPlugin, AdapterPluginRef, PluginInfo, API_VERSION},
    outbound::{
        Button, ButtonKind, Card, Media, MediaKind, MessagingType, OutboundMessage, QuickReply,
        QuickReplyKind, SenderAction,
    },
    webhook::{Header, Verdict, WebhookRequest, WebhookResponse},
};

#[cfg(feature = "host")]
pub use crate::{
    client::Adapter,
    loader::{load_plugin, load_plugins, LoadError, LoadedPlugin, PluginSet},
};

/// Re-exported so plugins use the exact `abi_stable` this contract was built with.
pub use abi_stable;
