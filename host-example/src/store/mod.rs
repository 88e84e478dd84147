//! The event queue: accepted events are written down before the webhook is answered
//! and kept until their replies are sent or have failed for good, so a crash (even
//! `kill -9`) after the 200 loses nothing. The same records drop redelivered events,
//! and say, for each event, how far its replies got: which were sent, which one's
//! send had started, and when a failed one is tried again.
//!
//! [`Queue`] is what the dispatcher needs of a backend; [`conformance`] checks that
//! a backend keeps its promises. Backends: [`sqlite`] (durable, one host per file)
//! and [`memory`] (nothing survives the process).

pub mod memory;
pub mod postgres;
pub mod sqlite;
mod stored;

#[cfg(test)]
mod conformance;

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use adapter_api::InboundEvent;

pub use memory::MemoryQueue;
pub use postgres::{PostgresQueue, PostgresSettings};
pub use sqlite::SqliteQueue;

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every reply was dealt with: sent, or (outcome unknown) left alone.
    Done,
    /// A reply failed for good.
    Failed,
}

/// Which event: its channel, its id and its own time. Two deliveries of one event
/// (Meta resends a webhook byte for byte) have the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventKey {
    /// The channel it came from.
    pub channel: String,
    /// The channel's id for it.
    pub event_id: String,
    /// Its own time, in ms since the epoch (0 when the channel gives none).
    pub at_ms: i64,
}

impl EventKey {
    /// The key of `event` from `channel`.
    pub fn new(channel: &str, event: &InboundEvent) -> Self {
        Self {
            channel: channel.to_owned(),
            event_id: event.event_id.to_string(),
            at_ms: i64::try_from(event.timestamp_ms).unwrap_or(i64::MAX),
        }
    }
}

/// How far an event's replies got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Replies dealt with (sent, or left alone as unknown).
    pub sent: u32,
    /// Replies whose send had started. More than `sent` when a send was under way
    /// when the host stopped: its outcome is unknown.
    pub started: u32,
    /// Failed tries of reply `sent` so far.
    pub attempts: u32,
    /// Not before this time (ms since the epoch) is reply `sent` tried again; 0: now.
    pub retry_at_ms: i64,
}

/// An event waiting for its replies, as read back at start-up.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Which event.
    pub key: EventKey,
    /// The event.
    pub event: InboundEvent,
    /// How far its replies got.
    pub progress: Progress,
    /// When it was accepted (ms since the epoch).
    pub accepted_ms: i64,
}

/// A queue error. Never holds an event's content.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database refused an operation.
    #[error("event store: {0}")]
    Sqlite(Arc<rusqlite::Error>),
    /// A file could not be created, read or written.
    #[error("event store: {path}: {source}", path = .path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What the OS said.
        source: Arc<std::io::Error>,
    },
    /// Another host holds the queue.
    #[error(
        "{path}: the queue is in use by another host (it holds {lock}); one host per queue file",
        path = .path.display(), lock = .lock.display()
    )]
    Locked {
        /// The queue's database.
        path: std::path::PathBuf,
        /// The lock file.
        lock: std::path::PathBuf,
    },
    /// The queue was written by a newer host.
    #[error("event store: written by a newer host (layout {found}, this one knows {known})")]
    NewerLayout {
        /// The layout found.
        found: i64,
        /// The newest this host knows.
        known: i64,
    },
    /// A stored event could not be read back.
    #[error("event store: a stored event is unreadable: {0}")]
    Unreadable(Arc<serde_json::Error>),
    /// The queue is closing or its thread stopped.
    #[error("event store: {0}")]
    Closed(&'static str),
    /// The WAL could not start over (another connection reads it).
    #[error("event store: the WAL cannot start over while another connection reads it")]
    WalBusy,
    /// The database server refused or lost a request.
    #[error("event store: {0}")]
    Postgres(Arc<tokio_postgres::Error>),
    /// No database connection could be had.
    #[error("event store: no database connection: {0}")]
    Connect(String),
    /// The database was set up by other hosts with other settings.
    #[error("event store: {0}")]
    Mismatch(String),
    /// This host no longer holds the lease of the event's partition: another host
    /// processes it now.
    #[error("event store: this host no longer owns the event's partition")]
    Fenced,
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Postgres(Arc::new(e))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(Arc::new(e))
    }
}

impl StoreError {
    /// An I/O error on `path`.
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source: Arc::new(source),
        }
    }
}

/// A queue operation's answer, to await.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What the dispatcher needs of an event queue. Every write concerns one event, by
/// its [`EventKey`]; a write about an event the queue does not hold does nothing.
pub trait Queue: Send + Sync {
    /// Records `events` of `channel` as pending; answers once they are durable.
    /// Returns, in order, whether each one is new (`false`: a redelivery of an event
    /// already held, pending or finished).
    fn accept<'a>(
        &'a self,
        channel: &'a str,
        events: &'a [InboundEvent],
    ) -> StoreFuture<'a, Vec<bool>>;

    /// Reply `index` of the event is about to be sent (the ones before it are dealt
    /// with): answers once that is durable, so that after a crash its outcome is
    /// known to be unknown rather than taken for unsent.
    fn start_send<'a>(&'a self, key: &'a EventKey, index: u32) -> StoreFuture<'a, ()>;

    /// The first `sent` replies are dealt with. Written with the next batch, not
    /// waited for: losing it only makes the reply under way look unknown.
    fn progress(&self, key: &EventKey, sent: u32) -> Result<(), StoreError>;

    /// Reply `progress.sent` failed, was not delivered, and is tried again at
    /// `progress.retry_at_ms`; answers once that is durable.
    fn reschedule<'a>(&'a self, key: &'a EventKey, progress: Progress) -> StoreFuture<'a, ()>;

    /// The event is finished; it is remembered (for deduplication) until pruned.
    /// Written with the next batch.
    fn finish(&self, key: &EventKey, outcome: Outcome) -> Result<(), StoreError>;

    /// The events still pending, in the order they were accepted.
    fn pending(&self) -> StoreFuture<'_, Vec<Pending>>;

    /// Forgets events finished before `cutoff_ms`; returns how many.
    fn prune(&self, cutoff_ms: i64) -> StoreFuture<'_, usize>;

    /// Whether the queue holds the event (pending or remembered), after the writes
    /// made before this call.
    fn contains<'a>(&'a self, key: &'a EventKey) -> StoreFuture<'a, bool>;

    /// Events accepted through a side journal so far (SQLite while its WAL starts
    /// over); 0 for backends without one.
    fn diverted(&self) -> u64 {
        0
    }

    /// Whether the events [`Queue::accept`] finds new are processed by this host
    /// at once (one host per queue). A queue shared by several hosts says no: it
    /// hands each host the events of the conversations it owns through
    /// [`Queue::feed`], in order, whichever host accepted them.
    fn dispatches_on_accept(&self) -> bool {
        true
    }

    /// The pending events this host is to process, as they become its own (a shared
    /// queue's partitions taken over, events accepted by other hosts). `None` for a
    /// queue of one host, whose pending events are read once at start-up. Taken once.
    fn feed(&self) -> Option<tokio::sync::mpsc::Receiver<Pending>> {
        None
    }

    /// The dispatcher gives back an event it was fed and will not finish (its
    /// writes were [`StoreError::Fenced`]): it may be fed again if this host owns
    /// its partition again.
    fn release(&self, _key: &EventKey) {}

    /// What `/healthz` shows of the queue (the group of hosts, for a shared queue).
    fn status(&self) -> serde_json::Value;

    /// The host is stopping: a shared queue hands its partitions back at once, so
    /// that the other hosts need not wait for the leases to lapse.
    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
