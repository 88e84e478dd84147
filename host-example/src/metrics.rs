//! Prometheus metrics, served at `/metrics` in the text format (`prometheus-client`,
//! the Prometheus project's own Rust client).

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

/// `channel` and `outcome`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// The channel name.
    pub channel: String,
    /// What happened, e.g. `accepted`, `unauthorized`, `ok`, `permanent`.
    pub outcome: String,
}

/// `channel` and event `kind`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    /// The channel name.
    pub channel: String,
    /// The event kind, e.g. `message`.
    pub kind: String,
}

/// `channel` only.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Channel {
    /// The channel name.
    pub channel: String,
}

impl Channel {
    /// Labels for `channel`.
    pub fn of(channel: &str) -> Self {
        Self {
            channel: channel.to_owned(),
        }
    }
}

fn latency() -> Histogram {
    // 100 µs to ~6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// Every metric the host exports.
pub struct Metrics {
    registry: Registry,
    /// Webhook requests by channel and outcome.
    pub webhooks: Family<Outcome, Counter>,
    /// Events accepted by channel and kind.
    pub events: Family<Kind, Counter>,
    /// Redelivered events dropped.
    pub duplicates: Family<Channel, Counter>,
    /// Replies by channel and outcome (`ok` or the error kind).
    pub sends: Family<Outcome, Counter>,
    /// Send retries made by the plugins.
    pub retries: Family<Channel, Counter>,
    /// Plugin calls that failed by panicking or timing out.
    pub plugin_failures: Family<Channel, Counter>,
    /// Adapters replaced by a fresh one after a failure.
    pub adapter_restarts: Family<Channel, Counter>,
    /// Events accepted and not yet processed.
    pub queue_depth: Gauge,
    /// Time from a webhook's arrival to its answer.
    pub ack_seconds: Family<Channel, Histogram, fn() -> Histogram>,
    /// Time one reply took to send, retries included.
    pub send_seconds: Family<Channel, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("dmflow");
        let metrics = Self {
            webhooks: Family::default(),
            events: Family::default(),
            duplicates: Family::default(),
            sends: Family::default(),
            retries: Family::default(),
            plugin_failures: Family::default(),
            adapter_restarts: Family::default(),
            queue_depth: Gauge::default(),
            ack_seconds: Family::new_with_constructor(latency),
            send_seconds: Family::new_with_constructor(latency),
            registry: Registry::default(),
        };
        registry.register(
            "webhooks",
            "Webhook requests by channel and outcome",
            metrics.webhooks.clone(),
        );
        registry.register(
            "events",
            "Events accepted, by channel and kind",
            metrics.events.clone(),
        );
        registry.register(
            "duplicate_events",
            "Redelivered events dropped",
            metrics.duplicates.clone(),
        );
        registry.register(
            "sends",
            "Replies sent, by channel and outcome",
            metrics.sends.clone(),
        );
        registry.register(
            "send_retries",
            "Send retries made by the plugins",
            metrics.retries.clone(),
        );
        registry.register(
            "plugin_failures",
            "Plugin calls that panicked or timed out",
            metrics.plugin_failures.clone(),
        );
        registry.register(
            "adapter_restarts",
            "Adapters replaced by a fresh one after a failure",
            metrics.adapter_restarts.clone(),
        );
        registry.register(
            "queue_depth",
            "Events accepted and not yet processed",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "webhook_ack_seconds",
            "Time from a webhook's arrival to its answer",
            metrics.ack_seconds.clone(),
        );
        registry.register(
            "send_seconds",
            "Time one reply took to send, retries included",
            metrics.send_seconds.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// Counts one webhook of `channel` with `outcome`.
    pub fn webhook(&self, channel: &str, outcome: &str) {
        self.webhooks
            .get_or_create(&Outcome {
                channel: channel.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
