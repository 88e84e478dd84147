//! What the host offers plugins: a log sink that feeds the host's `tracing` log.

use adapter_api::{
    abi_stable::{sabi_trait::TD_Opaque, std_types::RStr},
    HostServices, HostServicesBox, HostServices_TO, LogLevel,
};
use tracing::Level;

/// Plugin log records become `tracing` events with target `plugin` and the channel name.
struct TracingSink {
    channel: String,
}

impl HostServices for TracingSink {
    fn log_enabled(&self, level: LogLevel) -> bool {
        match level {
            LogLevel::Trace => tracing::enabled!(target: "plugin", Level::TRACE),
            LogLevel::Debug => tracing::enabled!(target: "plugin", Level::DEBUG),
            LogLevel::Info => tracing::enabled!(target: "plugin", Level::INFO),
            LogLevel::Warn => tracing::enabled!(target: "plugin", Level::WARN),
            LogLevel::Error => tracing::enabled!(target: "plugin", Level::ERROR),
        }
    }

    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>) {
        let (channel, source, message) = (&self.channel, target.as_str(), message.as_str());
        match level {
            LogLevel::Trace => tracing::trace!(target: "plugin", channel, source, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "plugin", channel, source, "{message}"),
            LogLevel::Info => tracing::info!(target: "plugin", channel, source, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "plugin", channel, source, "{message}"),
            LogLevel::Error => tracing::error!(target: "plugin", channel, source, "{message}"),
        }
    }
}

/// Host services for the adapter of `channel`.
pub fn for_channel(channel: &str) -> HostServicesBox {
    HostServices_TO::from_value(
        TracingSink {
            channel: channel.to_owned(),
        },
        TD_Opaque,
    )
}
