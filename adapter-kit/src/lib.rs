//! The plugin side of the DmFlow adapter contract, done once: implement [`Channel`]
//! with ordinary Rust (async sends, `Result`s), and [`export`] turns it into the
//! FFI-safe [`ChannelAdapterBox`](adapter_api::ChannelAdapterBox) a plugin's
//! constructor returns.
//!
//! What it takes care of, by the rules of `adapter-api`:
//! - every call from the host runs under `catch_unwind`: a panic becomes a
//!   `PANICKED` error (or a 500 verdict), never an abort of the host;
//! - sends and calls run on a small tokio runtime the plugin owns (the host's runtime
//!   is another copy of tokio and cannot be used), and each callback is called exactly
//!   once: with the result, a panic, or `SHUT_DOWN`;
//! - `shutdown` stops new work, waits for in-flight work up to the deadline, then
//!   stops the runtime; dropping the adapter never blocks or panics;
//! - a request `verify` refuses (a 4xx answer) is logged at info with the first line
//!   of the answer's text, the reason the caller was told;
//! - [`Log`] sends records to the host's log; [`Secret`] keeps tokens out of `Debug`;
//!   [`settings::from_json`] reports a bad setting by key and expected type, never
//!   its value;
//! - [`webhook::single_header`] refuses a signature header sent twice;
//! - [`export_plugin!`] declares the root module;
//! - the runtime's threads run as background work (`SCHED_BATCH` on Linux): their
//!   wake-ups do not preempt the host's threads.

#![warn(missing_docs)]

mod background;
mod completion;
mod executor;
mod export;
mod hosted;
mod log;
mod secret;
pub mod settings;
pub mod webhook;

pub use crate::{
    completion::Completion,
    executor::Executor,
    hosted::{export, new_adapter, Channel},
    log::Log,
    secret::Secret,
};

/// An error and its sources on one line: `outer: inner: innermost`.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Some errors repeat their source in their own message.
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
