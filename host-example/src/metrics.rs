//! Prometheus metrics, served at `/metrics` in the text format (`prometheus-client`,
//! the Prometheus project's own Rust client).

use std::sync::RwLock;

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

/// `listener` (`public` or `admin`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Listener {
    /// Which listener.
    pub listener: String,
}

/// A reload's `outcome`: `applied` or `refused`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reload {
    /// `applied` or `refused`.
    pub outcome: String,
}

/// `listener` and why a connection was closed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Closed {
    /// Which listener.
    pub listener: String,
    /// `header_timeout`, `idle_timeout` or `shutdown`.
    pub reason: String,
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
    /// Plugin calls that failed by panicking or timing out, and adapters that could
    /// not be created.
    pub plugin_failures: Family<Channel, Counter>,
    /// Adapters replaced by a fresh one after a failure.
    pub adapter_restarts: Family<Channel, Counter>,
    /// Events accepted and not yet processed.
    pub queue_depth: Gauge,
    /// Time from a webhook's arrival to its answer.
    pub ack_seconds: Family<Channel, Histogram, fn() -> Histogram>,
    /// Time one reply took to send, retries included.
    pub send_seconds: Family<Channel, Histogram, fn() -> Histogram>,
    /// Connections open, by listener.
    pub connections_open: Family<Listener, Gauge>,
    /// Connections the host closed, by listener and reason.
    pub connections_closed: Family<Closed, Counter>,
    /// Body bytes being read at once, across all requests (reserved when a body
    /// starts, by its declared length).
    pub inflight_body_bytes: Gauge,
    /// Config reloads, by outcome.
    pub reloads: Family<Reload, Counter>,
    /// The generation of the config being served: 1 at start-up, one more per
    /// reload applied.
    pub config_generation: Gauge,
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
            connections_open: Family::default(),
            connections_closed: Family::default(),
            inflight_body_bytes: Gauge::default(),
            reloads: Family::default(),
            config_generation: Gauge::default(),
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
            "Plugin calls that panicked or timed out, and adapters that could not be created",
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
        registry.register(
            "connections_open",
            "Connections open, by listener",
            metrics.connections_open.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections the host closed: a request head not complete in time, idle \
             too long, or still open at shutdown",
            metrics.connections_closed.clone(),
        );
        registry.register(
            "inflight_body_bytes",
            "Request body bytes being read at once, across all requests",
            metrics.inflight_body_bytes.clone(),
        );
        registry.register(
            "config_reloads",
            "Config reloads (SIGHUP or POST /reload), by outcome: applied or refused",
            metrics.reloads.clone(),
        );
        registry.register(
            "config_generation",
            "Generation of the config being served: 1 at start-up, one more per reload \
             applied",
            metrics.config_generation.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// The metrics of channel `name`, with their label sets built once.
    pub fn channel(&self, name: &str) -> ChannelMetrics {
        let labels = Channel::of(name);
        let channel = name.to_owned();
        let outcome = move |outcome: &str| Outcome {
            channel: channel.clone(),
            outcome: outcome.to_owned(),
        };
        let channel = name.to_owned();
        let kind = move |kind: &str| Kind {
            channel: channel.clone(),
            kind: kind.to_owned(),
        };
        ChannelMetrics {
            ack_seconds: self.ack_seconds.get_or_create(&labels).clone(),
            send_seconds: self.send_seconds.get_or_create(&labels).clone(),
            duplicates: self.duplicates.get_or_create(&labels).clone(),
            retries: self.retries.get_or_create(&labels).clone(),
            plugin_failures: self.plugin_failures.get_or_create(&labels).clone(),
            adapter_restarts: self.adapter_restarts.get_or_create(&labels).clone(),
            webhooks: ByLabel::new(&self.webhooks, outcome.clone()),
            events: ByLabel::new(&self.events, kind),
            sends: ByLabel::new(&self.sends, outcome),
        }
    }

    /// The connection metrics of `listener`.
    pub fn connections(&self, listener: &str) -> ConnectionMetrics {
        let closed = |reason: &str| {
            self.connections_closed
                .get_or_create(&Closed {
                    listener: listener.to_owned(),
                    reason: reason.to_owned(),
                })
                .clone()
        };
        ConnectionMetrics {
            open: self
                .connections_open
                .get_or_create(&Listener {
                    listener: listener.to_owned(),
                })
                .clone(),
            header_timeout: closed("header_timeout"),
            idle_timeout: closed("idle_timeout"),
            shutdown: closed("shutdown"),
        }
    }

    /// Counts a reload with `outcome` (`applied` or `refused`).
    pub fn reload(&self, outcome: &str) {
        self.reloads
            .get_or_create(&Reload {
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

/// One channel's metrics. The label sets are built once, when the channel opens, so
/// counting a webhook, an event or a reply allocates nothing.
pub struct ChannelMetrics {
    /// Time from a webhook's arrival to its answer.
    pub ack_seconds: Histogram,
    /// Time one reply took to send, retries included.
    pub send_seconds: Histogram,
    /// Redelivered events dropped.
    pub duplicates: Counter,
    /// Send retries made by the plugin.
    pub retries: Counter,
    /// Plugin calls that failed by panicking or timing out, and adapters that could
    /// not be created.
    pub plugin_failures: Counter,
    /// Adapters replaced by a fresh one after a failure.
    pub adapter_restarts: Counter,
    webhooks: ByLabel,
    events: ByLabel,
    sends: ByLabel,
}

impl ChannelMetrics {
    /// Counts one webhook with `outcome` (`accepted`, `unauthorized`, ...).
    pub fn webhook(&self, outcome: &'static str) {
        self.webhooks.inc(outcome);
    }

    /// Counts one accepted event of `kind`.
    pub fn event(&self, kind: &'static str) {
        self.events.inc(kind);
    }

    /// Counts one reply with `outcome` (`ok` or the error kind).
    pub fn send(&self, outcome: &'static str) {
        self.sends.inc(outcome);
    }
}

/// One listener's connection metrics, with their label sets built once.
#[derive(Clone)]
pub struct ConnectionMetrics {
    /// Connections open.
    pub open: Gauge,
    /// Closed because the request head was not complete in time.
    pub header_timeout: Counter,
    /// Closed after staying idle between requests too long.
    pub idle_timeout: Counter,
    /// Closed at shutdown while still open after the grace period.
    pub shutdown: Counter,
}

/// The counters of one family for one channel, told apart by a second label whose
/// values are a small, fixed set: created on first use, then found without building
/// a label set.
struct ByLabel {
    make: Box<dyn Fn(&str) -> Counter + Send + Sync>,
    known: RwLock<Vec<(&'static str, Counter)>>,
}

impl ByLabel {
    /// The counters of `family` whose label set `labels` builds from the second label.
    fn new<L>(
        family: &Family<L, Counter>,
        labels: impl Fn(&str) -> L + Send + Sync + 'static,
    ) -> Self
    where
        L: Clone + std::hash::Hash + Eq + Send + Sync + 'static,
    {
        let family = family.clone();
        Self {
            make: Box::new(move |label| family.get_or_create(&labels(label)).clone()),
            known: RwLock::default(),
        }
    }

    fn inc(&self, label: &'static str) {
        let find = |known: &[(&'static str, Counter)]| {
            known
                .iter()
                .find(|(l, _)| *l == label)
                .map(|(_, c)| c.clone())
        };
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        if let Some(counter) = find(&known) {
            counter.inc();
            return;
        }
        drop(known);
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        let counter = find(&known).unwrap_or_else(|| {
            let counter = (self.make)(label);
            known.push((label, counter.clone()));
            counter
        });
        counter.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_metrics_count_into_the_shared_families() {
        let metrics = Metrics::default();
        let a = metrics.channel("a");
        let again = metrics.channel("a");
        a.webhook("accepted");
        a.webhook("accepted");
        again.webhook("accepted");
        a.webhook("unauthorized");
        a.event("message");
        a.send("ok");
        a.ack_seconds.observe(0.001);
        again.duplicates.inc();
        let text = metrics.render();
        for line in [
            "dmflow_webhooks_total{channel=\"a\",outcome=\"accepted\"} 3",
            "dmflow_webhooks_total{channel=\"a\",outcome=\"unauthorized\"} 1",
            "dmflow_events_total{channel=\"a\",kind=\"message\"} 1",
            "dmflow_sends_total{channel=\"a\",outcome=\"ok\"} 1",
            "dmflow_webhook_ack_seconds_count{channel=\"a\"} 1",
            "dmflow_duplicate_events_total{channel=\"a\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
