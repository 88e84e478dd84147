//! Logging through the host's log sink: this library's statics (and any `tracing`
//! subscriber it might install) are its own copy, invisible to the host.

use std::sync::Arc;

use adapter_api::{abi_stable::std_types::RStr, HostServicesBox, LogLevel};

const TARGET: &str = "messenger_adapter";

/// A cheap, cloneable handle to the host's log sink (or to nothing, in unit tests).
#[derive(Clone, Default)]
pub struct Log(Option<Arc<HostServicesBox>>);

impl Log {
    /// Logs to the host.
    pub fn to_host(host: HostServicesBox) -> Self {
        Self(Some(Arc::new(host)))
    }

    /// Writes `message()` at `level`, formatting it only when the host keeps it.
    pub fn at(&self, level: LogLevel, message: impl FnOnce() -> String) {
        if let Some(host) = &self.0 {
            if host.log_enabled(level) {
                host.log(level, RStr::from(TARGET), RStr::from(message().as_str()));
            }
        }
    }

    /// Debug-level record.
    pub fn debug(&self, message: impl FnOnce() -> String) {
        self.at(LogLevel::Debug, message);
    }

    /// Info-level record.
    pub fn info(&self, message: impl FnOnce() -> String) {
        self.at(LogLevel::Info, message);
    }

    /// Warn-level record.
    pub fn warn(&self, message: impl FnOnce() -> String) {
        self.at(LogLevel::Warn, message);
    }

    /// Error-level record.
    pub fn error(&self, message: impl FnOnce() -> String) {
        self.at(LogLevel::Error, message);
    }
}
