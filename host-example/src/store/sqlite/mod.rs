//! The durable queue: SQLite in WAL mode with `synchronous = NORMAL`. A committed
//! event survives the process dying (it is in the WAL, handed to the OS); only a
//! power cut between two checkpoints can lose the last ones. One thread writes
//! ([`writer`]), another copies the WAL back ([`checkpoint`]); while the WAL starts
//! over, accepted events go to a side [`journal`] with the same promise. The file is
//! locked for the life of the queue ([`lock`]): one host per file.

mod checkpoint;
mod journal;
mod lock;
mod ops;
mod schema;
mod writer;

#[cfg(test)]
mod layout_tests;
#[cfg(test)]
mod tests;

use std::{
    collections::HashSet,
    fs::File,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use adapter_api::InboundEvent;
use rusqlite::Connection;

use self::{
    checkpoint::{
        checkpoint_loop, CheckpointWaker, Checkpointer, MAX_WAL_FRAMES, RESTART_PATIENCE,
    },
    journal::{Journal, Record},
    ops::{Op, Reply},
    schema::{has_unknown, migrate, UNKNOWN_MS},
    writer::{WriteLoop, Writer, CACHE_KIB},
};
use super::{now_ms, stored, EventKey, Outcome, Pending, Progress, Queue, StoreError, StoreFuture};

/// Most events forgotten in one transaction, and the pause between two: a prune of a
/// day-old minute's worth of events is spread out, so that accepts get in between and
/// the acknowledgements do not wait behind it.
const PRUNE_SLICE: usize = 500;
const PRUNE_PAUSE: Duration = Duration::from_millis(10);

/// The SQLite queue.
pub struct SqliteQueue {
    writer: Writer,
    /// Held (and locked) for the life of the queue; dropped after the writer.
    _lock: File,
}

impl SqliteQueue {
    /// Opens (or creates) the queue at `path`, with its writer thread. Fails with
    /// [`StoreError::Locked`] while another host holds it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_wal_limit(path, MAX_WAL_FRAMES)
    }

    /// [`SqliteQueue::open`], restarting the WAL past `max_wal_frames` frames.
    fn open_with_wal_limit(path: &Path, max_wal_frames: i64) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        }
        // Before anything is read or written: a second host stops here.
        let lock = lock::take(path)?;
        let mut connection = Connection::open(path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.pragma_update(None, "wal_autocheckpoint", 0)?;
        connection.pragma_update(None, "cache_size", -CACHE_KIB)?;
        connection.busy_timeout(Duration::from_secs(5))?;
        migrate(&mut connection)?;
        let journal = recover(&mut connection, path)?;
        let legacy = has_unknown(&connection)?;
        let checkpoints = Connection::open(path)?;
        // NORMAL as the writer: the default, FULL, would also sync the WAL at the
        // commit that starts a new WAL, on top of its header's sync.
        checkpoints.pragma_update(None, "synchronous", "NORMAL")?;
        // A RESTART waits for readers to leave the WAL. The writer's reads while it
        // diverts take microseconds; a reader that stays (another process) makes the
        // restart fail soon and be tried again later, rather than hold the divert.
        checkpoints.busy_timeout(RESTART_PATIENCE)?;
        let (ops, receiver) = std::sync::mpsc::channel();
        let (checkpoint_signals, signals) = std::sync::mpsc::channel();
        let idle = Arc::new(AtomicBool::new(false));
        let diverted = Arc::new(AtomicU64::new(0));
        let write_loop = WriteLoop {
            connection,
            checkpoints: CheckpointWaker {
                signals: checkpoint_signals.clone(),
                idle: Arc::clone(&idle),
            },
            journal,
            journaled: Vec::new(),
            journaled_ids: HashSet::new(),
            diverting: false,
            deferred: Vec::new(),
            diverted: Arc::clone(&diverted),
            legacy,
        };
        let thread = spawn("event-store", move || write_loop.run(receiver))?;
        let writer = ops.clone();
        let checkpointer = spawn("event-store-checkpoints", move || {
            checkpoint_loop(
                Checkpointer::new(checkpoints, max_wal_frames, writer, idle),
                signals,
            );
        })?;
        Ok(Self {
            writer: Writer {
                ops: Some(ops),
                diverted,
                thread: Some(thread),
                checkpoint_signals,
                checkpointer: Some(checkpointer),
            },
            _lock: lock,
        })
    }

    /// Asks the writer for something and waits for the committed answer.
    async fn ask<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.writer.send(op(reply))?;
        answer
            .await
            .map_err(|_| StoreError::Closed("the writer stopped"))?
    }
}

/// Starts a background thread: the store's threads write and copy while the runtime
/// threads answer requests, without preempting them at every wake-up.
fn spawn(
    name: &str,
    work: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            if let Err(err) = crate::os::run_as_background_thread() {
                tracing::debug!("event store thread stays a normal one: {err}");
            }
            work();
        })
        .map_err(|e| StoreError::io(Path::new(name), e))
}

/// Opens the journal beside the database at `path` and moves the events a host that
/// stopped while diverting left in it into the database.
fn recover(connection: &mut Connection, path: &Path) -> Result<Journal, StoreError> {
    let (mut journal, mut records) = Journal::open(Journal::path_for(path))?;
    let now = now_ms();
    for r in &mut records {
        // A line from a host that did not write the time: the event holds it.
        if r.at_ms == UNKNOWN_MS {
            r.at_ms = stored::stored_time(&r.event).unwrap_or(UNKNOWN_MS);
        }
        if r.accepted_ms == 0 {
            r.accepted_ms = now;
        }
    }
    if !records.is_empty() {
        let tx = connection.transaction()?;
        let legacy = has_unknown(&tx)?;
        let mut moved = 0;
        for r in &records {
            moved += usize::from(r.key().insert_new(&tx, legacy, &r.event, r.accepted_ms)?);
        }
        tx.commit()?;
        tracing::info!(
            events = moved,
            "event store: accepted events moved from the journal into the database"
        );
    }
    journal.clear()?;
    Ok(journal)
}

impl Queue for SqliteQueue {
    fn accept<'a>(
        &'a self,
        channel: &'a str,
        events: &'a [InboundEvent],
    ) -> StoreFuture<'a, Vec<bool>> {
        Box::pin(async move {
            let accepted_ms = now_ms();
            let records = events
                .iter()
                .map(|event| {
                    let key = EventKey::new(channel, event);
                    Ok(Record {
                        channel: key.channel,
                        event_id: key.event_id,
                        at_ms: key.at_ms,
                        event: stored::to_json(event)?,
                        accepted_ms,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            self.ask(|reply| Op::Accept { records, reply }).await
        })
    }

    fn start_send<'a>(&'a self, key: &'a EventKey, index: u32) -> StoreFuture<'a, ()> {
        Box::pin(self.ask(move |reply| Op::StartSend {
            event: key.clone(),
            index,
            reply,
        }))
    }

    fn progress(&self, key: &EventKey, sent: u32) -> Result<(), StoreError> {
        self.writer.send(Op::Progress {
            event: key.clone(),
            sent,
        })
    }

    fn reschedule<'a>(&'a self, key: &'a EventKey, progress: Progress) -> StoreFuture<'a, ()> {
        Box::pin(self.ask(move |reply| Op::Reschedule {
            event: key.clone(),
            progress,
            reply,
        }))
    }

    fn finish(&self, key: &EventKey, outcome: Outcome) -> Result<(), StoreError> {
        self.writer.send(Op::Finish {
            event: key.clone(),
            outcome,
        })
    }

    fn pending(&self) -> StoreFuture<'_, Vec<Pending>> {
        Box::pin(self.ask(|reply| Op::Pending { reply }))
    }

    fn prune(&self, cutoff_ms: i64) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            // A slice at a time, paced: accepts get in between, and the core stays
            // theirs.
            let mut removed = 0;
            loop {
                let slice = self
                    .ask(|reply| Op::Prune {
                        cutoff: cutoff_ms,
                        limit: PRUNE_SLICE,
                        reply,
                    })
                    .await?;
                removed += slice;
                if slice < PRUNE_SLICE {
                    return Ok(removed);
                }
                tokio::time::sleep(PRUNE_PAUSE).await;
            }
        })
    }

    fn contains<'a>(&'a self, key: &'a EventKey) -> StoreFuture<'a, bool> {
        Box::pin(self.ask(move |reply| Op::Contains {
            event: key.clone(),
            reply,
        }))
    }

    fn diverted(&self) -> u64 {
        self.writer.diverted.load(Ordering::Relaxed)
    }

    fn status(&self) -> serde_json::Value {
        serde_json::json!({ "backend": "sqlite" })
    }
}
