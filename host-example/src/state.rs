//! What every request handler shares, and the cap on body bytes read at once.

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::{dispatch::Dispatcher, metrics::Metrics, roster::Roster};

/// What every request handler shares.
pub struct AppState {
    /// The channels served now (swapped by a reload), and the plugins loaded.
    pub roster: Roster,
    /// Where accepted events go.
    pub dispatcher: Dispatcher,
    /// Events waiting, in all, before webhooks get 503 (for `/readyz`).
    pub queue_capacity: usize,
    /// The event queue, for `/healthz`.
    pub queue: Arc<dyn crate::store::Queue>,
    /// Largest body accepted.
    pub max_body_bytes: usize,
    /// Body bytes being read at once, across all requests.
    pub bodies: BodyBudget,
    /// The host's metrics.
    pub metrics: Arc<Metrics>,
    /// How long a webhook's body may take to arrive.
    pub body_timeout: std::time::Duration,
}

/// A cap on the body bytes being read at once across all requests, so that many
/// clients sending large bodies together cannot exhaust memory: each body reserves
/// its declared length (`max_body_bytes` when it declares none) before it is read,
/// and keeps it until its request is answered.
pub struct BodyBudget {
    bytes: Semaphore,
    gauge: Gauge,
}

/// Bytes reserved for one body; given back when dropped.
pub struct Reserved<'a> {
    _permit: SemaphorePermit<'a>,
    bytes: u32,
    gauge: &'a Gauge,
}

impl BodyBudget {
    /// A budget of `max` bytes, reported in `gauge`.
    pub fn new(max: usize, gauge: Gauge) -> Self {
        Self {
            bytes: Semaphore::new(max.min(Semaphore::MAX_PERMITS)),
            gauge,
        }
    }

    /// Reserves `bytes` now, or `None` when they are not free.
    pub fn try_reserve(&self, bytes: usize) -> Option<Reserved<'_>> {
        let bytes = u32::try_from(bytes).ok()?;
        let permit = self.bytes.try_acquire_many(bytes).ok()?;
        self.gauge.inc_by(i64::from(bytes));
        Some(Reserved {
            _permit: permit,
            bytes,
            gauge: &self.gauge,
        })
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.gauge.dec_by(i64::from(self.bytes));
    }
}
