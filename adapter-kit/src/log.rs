//! Logging through the host's log sink: a plugin's statics (and any `tracing`
//! subscriber it might install) are its own copy, invisible to the host.

use std::sync::Arc;

use adapter_api::{abi_stable::std_types::RStr, HostServicesBox, LogLevel};

/// A cheap, cloneable handle to the host's log sink (or to nothing, in unit tests).
#[derive(Clone, Default)]
pub struct Log {
    host: Option<Arc<HostServicesBox>>,
    target: &'static str,
}

impl Log {
    /// Logs to the host under `target` (e.g. `"messenger_adapter"`).
    pub fn to_host(host: HostServicesBox, target: &'static str) -> Self {
        Self {
            host: Some(Arc::new(host)),
            target,
        }
    }

    /// Writes `message()` at `level`, formatting it only when the host keeps it.
    /// Messages must never contain secrets.
    pub fn at(&self, level: LogLevel, message: impl FnOnce() -> String) {
        if let Some(host) = &self.host {
            if host.log_enabled(level) {
                host.log(
                    level,
                    RStr::from(self.target),
                    RStr::from(message().as_str()),
                );
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
