//! The adapter trait object and the callbacks and services around it.

use abi_stable::{
    sabi_trait,
    std_types::{RBox, RResult, RStr, RString, RVec},
    StableAbi,
};

use crate::{AdapterError, InboundEvent, OutboundMessage, Verdict, WebhookRequest};

/// Severity of a log record a plugin hands to the host.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Very detailed tracing.
    Trace = 0,
    /// Debugging detail.
    Debug = 1,
    /// Normal operation.
    Info = 2,
    /// Something unexpected that was handled.
    Warn = 3,
    /// A failure.
    Error = 4,
}

/// What the host offers a plugin. Implemented by the host.
///
/// A plugin's `tracing` subscriber and other globals are its own copy: it logs
/// through [`HostServices::log`] so its records reach the host's log.
#[sabi_trait]
pub trait HostServices: Send + Sync + 'static {
    /// Whether a record at `level` would be kept; lets plugins skip formatting.
    fn log_enabled(&self, level: LogLevel) -> bool;

    /// Writes a log record. Messages must never contain secrets.
    ///
    /// Last method of the 1.0 vtable prefix: later minor versions add methods after it.
    #[sabi(last_prefix_field)]
    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>);
}

/// Owned, type-erased [`HostServices`].
pub type HostServicesBox = HostServices_TO<RBox<()>>;

/// The result of a successful send.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq, Default)]
pub struct SendReceipt {
    /// The channel's id for the delivered message (the last one, when the message
    /// had to be sent in several parts); empty for sender actions.
    pub message_id: RString,
    /// The channel's id of the recipient.
    pub recipient_id: RString,
    /// How many channel requests the message took.
    pub parts: u32,
    /// How many tries those requests took in all (`attempts - parts` were retries).
    pub attempts: u32,
}

/// Receives the outcome of one [`ChannelAdapter::send`]. Implemented by the host.
#[sabi_trait]
pub trait SendCallback: Send + 'static {
    /// Called exactly once, from any thread, when the send finished or failed for good.
    /// A failure's `details_json` may hold `"attempts"`, the tries it took.
    #[sabi(last_prefix_field)]
    fn done(self, result: RResult<SendReceipt, AdapterError>);
}

/// Owned, type-erased [`SendCallback`].
pub type SendCallbackBox = SendCallback_TO<RBox<()>>;

/// Receives the outcome of one [`ChannelAdapter::call`]. Implemented by the host.
#[sabi_trait]
pub trait CallCallback: Send + 'static {
    /// Called exactly once, from any thread, with the operation's JSON result.
    #[sabi(last_prefix_field)]
    fn done(self, result: RResult<RString, AdapterError>);
}

/// Owned, type-erased [`CallCallback`].
pub type CallCallbackBox = CallCallback_TO<RBox<()>>;

/// One configured channel: what a plugin's constructor returns.
///
/// Every method must return rather than unwind (see [`catch_panic`](crate::catch_panic)),
/// and [`verify`](Self::verify) and [`parse`](Self::parse) must not block on the network.
#[sabi_trait]
pub trait ChannelAdapter: Send + Sync + 'static {
    /// Decides whether an incoming request is authentic, or answers it directly
    /// (a handshake, a bad signature).
    fn verify(&self, request: &WebhookRequest<'_>) -> Verdict;

    /// Turns an accepted request's body into events, in the order the channel sent them.
    ///
    /// An error of kind [`BAD_REQUEST`](crate::ErrorKind::BAD_REQUEST) means the body is
    /// not a webhook of this channel (the host answers 400).
    fn parse(&self, request: &WebhookRequest<'_>) -> RResult<RVec<InboundEvent>, AdapterError>;

    /// Sends a message. Returns at once; `done` is called exactly once later, from a
    /// thread of the plugin's own, with the outcome after retries.
    fn send(&self, message: OutboundMessage, done: SendCallbackBox);

    /// Runs a channel operation named `op` with a JSON input (for Messenger: upload an
    /// attachment, set the profile, pass thread control). Unknown operations complete
    /// with [`UNSUPPORTED`](crate::ErrorKind::UNSUPPORTED).
    fn call(&self, op: RStr<'_>, input_json: RStr<'_>, done: CallCallbackBox);

    /// Stops taking new work, waits up to `deadline_ms` for in-flight work, then fails
    /// what is left (each callback is still called once) and releases the plugin's
    /// threads. May block; hosts call it off their async threads.
    ///
    /// Last method of the 1.0 vtable prefix: later minor versions add methods after it.
    #[sabi(last_prefix_field)]
    fn shutdown(&self, deadline_ms: u64);
}

/// Owned, type-erased [`ChannelAdapter`]: what crosses the boundary.
pub type ChannelAdapterBox = ChannelAdapter_TO<RBox<()>>;
