//! Durable intake: accepted events are written down before the webhook is answered
//! and kept until their replies are sent or have failed for good, so a crash (even
//! `kill -9`) after the 200 loses nothing. The same records drop redelivered events.
//!
//! SQLite in WAL mode with `synchronous = NORMAL`: a committed event survives the
//! process dying (it is in the WAL, handed to the OS); only a power cut between two
//! checkpoints can lose the last ones. While the WAL starts over, accepted events go
//! to a side journal (`<path>-intake`) with the same promise. `":memory:"` keeps everything
//! in memory.

mod journal;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use adapter_api::{
    abi_stable::std_types::{ROption, RString},
    Attachment, AttachmentKind, EventFlags, EventKind, InboundEvent,
};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use journal::{Journal, Record};

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every reply was sent.
    Done,
    /// A reply failed for good.
    Failed,
}

/// An event waiting for its replies, as read back at start-up.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The channel it came from.
    pub channel: String,
    /// The event.
    pub event: InboundEvent,
    /// How many of its replies were already sent.
    pub sent: u32,
}

/// A store error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("event store: {0}")]
pub struct StoreError(String);

impl StoreError {
    pub(crate) fn new(message: &str) -> Self {
        Self(message.to_owned())
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self(e.to_string())
    }
}

/// The event store.
pub struct Store {
    backend: Backend,
    remember: Duration,
}

enum Backend {
    Sqlite(Writer),
    Memory(Mutex<Memory>),
}

#[derive(Default)]
struct Memory {
    /// Event → finished at (ms), `None` while pending.
    seen: HashMap<EventRef, Option<i64>>,
    /// Finished events, oldest first, for forgetting.
    finished: VecDeque<(EventRef, i64)>,
    max: usize,
}

/// The layout, version 4. Rows are appended in arrival order (`seq` is the rowid), so a
/// batch of accepts and the finishes of recent events touch a few pages at the end of
/// the table. (Version 1 kept the rows in id order, WITHOUT ROWID: every accept and
/// every finish rewrote a random page.)
///
/// A row is found by its key: the event's own time, then a 64-bit digest of (channel,
/// event id) (`intake_key`). A redelivery carries the same id and time (the contract
/// asks it of channels: Messenger's are byte-identical), so it finds its row; and as
/// events arrive about in the order they happened, new keys land at the end of the
/// index, like the rows, and the rows pruned (the longest finished) are near its
/// start. Versions 2 and 3 indexed
/// the id alone (the two strings, then the digest). Messenger's ids look random, so
/// each new one dirtied a random leaf of an index that grows all day, and the
/// checkpoints copying those leaves back slowed the acknowledgements more the longer
/// the host ran.
///
/// Uniqueness is the writer's: it is the only one, and it looks before it inserts
/// ([`Key::insert_new`]); two events sharing a key are told apart by the row. Finished
/// rows moved from older layouts have no time ([`UNKNOWN_MS`]: their event, which held
/// it, was dropped); until they are pruned, a lookup that misses also looks among them.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS intake (
    seq         INTEGER PRIMARY KEY,    -- arrival order: SQLite numbers new rows
    channel     TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    state       INTEGER NOT NULL,       -- 0 pending, 1 done, 2 failed
    sent        INTEGER NOT NULL DEFAULT 0,
    finished_ms INTEGER,
    event       TEXT NOT NULL,
    id_digest   INTEGER NOT NULL DEFAULT 0,  -- id_digest(channel, event_id)
    event_ms    INTEGER NOT NULL DEFAULT -1  -- the event's own time; -1: UNKNOWN_MS
);
CREATE INDEX IF NOT EXISTS intake_key ON intake (event_ms, id_digest);
CREATE INDEX IF NOT EXISTS intake_finished ON intake (finished_ms) WHERE state != 0;
";

/// The layout version, in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 4;

/// The time of rows moved from layouts that did not keep it (and of journal lines
/// from hosts that did not): no event's own time is negative.
pub(crate) const UNKNOWN_MS: i64 = -1;

/// An event's own time as its key holds it.
fn event_ms(event: &InboundEvent) -> i64 {
    key_time(event.timestamp_ms)
}

fn key_time(timestamp_ms: u64) -> i64 {
    i64::try_from(timestamp_ms).unwrap_or(i64::MAX)
}

/// The event's own time, read from its stored JSON.
fn stored_time(json: &str) -> Option<i64> {
    #[derive(Deserialize)]
    struct Time {
        timestamp_ms: u64,
    }
    serde_json::from_str::<Time>(json)
        .ok()
        .map(|t| key_time(t.timestamp_ms))
}

/// The first 8 bytes of SHA-256(channel, 0, event id): stable across releases, as the
/// layout needs.
fn id_digest(channel: &str, event_id: &str) -> i64 {
    use sha2::Digest;
    let hash = sha2::Sha256::new()
        .chain_update(channel)
        .chain_update([0])
        .chain_update(event_id)
        .finalize();
    let mut first = [0; 8];
    first.copy_from_slice(&hash[..8]);
    i64::from_le_bytes(first)
}

/// Creates the tables, or brings an older store to version 4 with its rows, pending
/// ones included, in one transaction: version 1 (table `events`) is copied into
/// `intake`; version 2 gets the digest column, filled; the old id indexes give way to
/// `intake_key`, with the moved rows' time unknown.
fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError(format!(
            "the store was written by a newer host (layout {version}, this one knows {SCHEMA_VERSION})"
        )));
    }
    let tx = connection.transaction()?;
    let has_intake: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'intake')",
        [],
        |row| row.get(0),
    )?;
    if has_intake && version < 3 {
        tx.execute_batch("ALTER TABLE intake ADD COLUMN id_digest INTEGER NOT NULL DEFAULT 0")?;
    }
    if has_intake && version < 4 {
        tx.execute_batch("ALTER TABLE intake ADD COLUMN event_ms INTEGER NOT NULL DEFAULT -1")?;
    }
    tx.execute_batch(SCHEMA)?;
    let old: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events')",
        [],
        |row| row.get(0),
    )?;
    if old {
        let moved = tx.execute(
            "INSERT INTO intake (seq, channel, event_id, state, sent, finished_ms, event)
             SELECT seq, channel, event_id, state, sent, finished_ms, event FROM events ORDER BY seq",
            [],
        )?;
        tx.execute_batch("DROP TABLE events")?;
        tracing::info!(
            events = moved,
            "event store moved to layout {SCHEMA_VERSION}"
        );
    }
    if version < 3 {
        fill(
            &tx,
            "SELECT seq, channel, event_id FROM intake",
            "UPDATE intake SET id_digest = ?2 WHERE seq = ?1",
            |row| {
                Ok(Some(id_digest(
                    &row.get::<_, String>(1)?,
                    &row.get::<_, String>(2)?,
                )))
            },
        )?;
    }
    if version < 4 {
        // Pending rows still hold their event, and so its time; finished ones keep
        // UNKNOWN_MS until they are pruned.
        fill(
            &tx,
            "SELECT seq, event FROM intake WHERE state = 0",
            "UPDATE intake SET event_ms = ?2 WHERE seq = ?1",
            |row| Ok(stored_time(&row.get::<_, String>(1)?)),
        )?;
        tx.execute_batch("DROP INDEX IF EXISTS intake_id; DROP INDEX IF EXISTS intake_digest")?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Sets a column of the rows `select` gives (`seq` first) to what `value` makes of
/// each, through `update` (`?1` the seq, `?2` the value); a row it makes nothing of
/// keeps its default.
fn fill(
    tx: &rusqlite::Transaction<'_>,
    select: &str,
    update: &str,
    value: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<Option<i64>>,
) -> rusqlite::Result<()> {
    let values = tx
        .prepare(select)?
        .query_map([], |row| Ok((row.get::<_, i64>(0)?, value(row)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut set = tx.prepare(update)?;
    for (seq, value) in values {
        if let Some(value) = value {
            set.execute(params![seq, value])?;
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

type Reply<T> = tokio::sync::oneshot::Sender<Result<T, StoreError>>;

/// What the writer thread is asked to do; it applies a burst of these in one
/// transaction (group commit) and answers after the commit.
enum Op {
    Accept {
        records: Vec<Record>,
        reply: Reply<Vec<bool>>,
    },
    Progress {
        event: EventRef,
        sent: u32,
    },
    Finish {
        event: EventRef,
        state: i64,
    },
    /// Forgets at most `limit` events finished before `cutoff`, the oldest first.
    Prune {
        cutoff: i64,
        limit: usize,
        reply: Reply<usize>,
    },
    Pending {
        reply: Reply<Vec<Pending>>,
    },
    Contains {
        event: EventRef,
        reply: Reply<bool>,
    },
    /// The checkpointer is about to restart the WAL: commit what came before, then
    /// answer accepts from the journal and keep everything else until [`Op::Resume`].
    /// Answered once no transaction is open.
    Divert {
        reply: Reply<()>,
    },
    /// The WAL has started over: move the journal into the database and go on.
    Resume,
}

/// What tells two events apart: their channel, their id and their own time, as the
/// SQLite store keys them.
#[derive(Clone, PartialEq, Eq, Hash)]
struct EventRef {
    channel: String,
    event_id: String,
    at_ms: i64,
}

impl EventRef {
    fn new(channel: &str, event: &InboundEvent) -> Self {
        Self {
            channel: channel.to_owned(),
            event_id: event.event_id.to_string(),
            at_ms: event_ms(event),
        }
    }

    fn key(&self) -> Key<'_> {
        Key {
            channel: &self.channel,
            event_id: &self.event_id,
            at_ms: self.at_ms,
        }
    }
}

/// What the checkpointer thread is told.
enum Signal {
    /// Stop.
    Stop,
    /// The writer wrote after a quiet spell: look now.
    Wake,
}

/// The writer's side of the checkpointer: wakes it on the first commit after a quiet
/// spell, so that a burst is not left to grow for a whole idle interval.
struct CheckpointWaker {
    signals: std::sync::mpsc::Sender<Signal>,
    /// Set by the checkpointer while it looks only every [`CHECKPOINT_IDLE`].
    idle: Arc<AtomicBool>,
}

impl CheckpointWaker {
    fn wrote(&self) {
        if self.idle.load(Ordering::Relaxed) && self.idle.swap(false, Ordering::AcqRel) {
            let _ = self.signals.send(Signal::Wake);
        }
    }
}

/// The SQLite connection, owned by one thread that batches writes.
struct Writer {
    ops: Option<std::sync::mpsc::Sender<Op>>,
    /// Events accepted through the journal so far.
    diverted: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
    checkpoint_signals: std::sync::mpsc::Sender<Signal>,
    checkpointer: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn send(&self, op: Op) -> Result<(), StoreError> {
        self.ops
            .as_ref()
            .and_then(|ops| ops.send(op).ok())
            .ok_or_else(|| StoreError("the store is closed".to_owned()))
    }
}

impl Drop for Writer {
    /// Stops the checkpointer (which may be waiting for the writer), then lets the
    /// writer commit what it was given and stops it.
    fn drop(&mut self) {
        let _ = self.checkpoint_signals.send(Signal::Stop);
        if let Some(thread) = self.checkpointer.take() {
            let _ = thread.join();
        }
        self.ops.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// WAL frames (database pages) past which the WAL is made to start over: 16,384
/// pages of 4 KiB, 64 MiB.
const MAX_WAL_FRAMES: i64 = 16_384;

/// Frames left for the restart checkpoint at most, once the checkpointer has caught
/// up: accepts go to the journal while they are copied and the database synced.
const RESTART_LEFTOVER: i64 = 512;

/// How often the checkpointer copies the WAL back into the database while the WAL
/// grows. Each copy takes the one core for as long as it runs: every 20 ms rather
/// than every 100 ms, the copies are shorter and the acknowledgements waiting behind
/// them wait less (c=64 with replies: p99 7.5-8.0 -> 6.9-7.0 ms, p99.9 12-13 -> 9-10 ms).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(20);

/// How long a restart waits for readers to leave the WAL, and how long after a
/// failed one the next is tried.
const RESTART_PATIENCE: Duration = Duration::from_millis(100);
const RESTART_RETRY: Duration = Duration::from_secs(1);

/// How often it looks while nothing is written.
const CHECKPOINT_IDLE: Duration = Duration::from_millis(250);

/// Checkpoints the WAL from a connection of its own. SQLite would otherwise run them
/// inside the writer's commits, and with `synchronous = NORMAL` a checkpoint waits for
/// an fsync: every accept queued behind it would wait too. PASSIVE never blocks the
/// writer.
///
/// A writer that never pauses keeps the WAL from starting over (it appends while the
/// copy runs), so past `max_wal_frames` the WAL must be restarted, and no commit can
/// happen while it is: the last frames are copied, the WAL and the database synced,
/// and the new WAL's header synced by its first commit, 8 to 16 ms of waiting for
/// the disk. The checkpointer catches up with quick PASSIVE rounds, then has the
/// writer divert accepts to the [journal](journal) while it runs the RESTART and that
/// first commit itself. No acknowledgement waits for the disk; the other operations
/// (finishes, `pending`, `contains`, `prune`) wait for the restart.
fn checkpoint_loop(mut checkpointer: Checkpointer, signals: std::sync::mpsc::Receiver<Signal>) {
    loop {
        match signals.recv_timeout(checkpointer.every) {
            Ok(Signal::Wake) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Err(err) = checkpointer.round() {
                    tracing::warn!("event store checkpoint: {err}");
                }
            }
            Ok(Signal::Stop) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The checkpointer thread's connection and what it remembers between rounds.
struct Checkpointer {
    connection: Connection,
    max_wal_frames: i64,
    writer: std::sync::mpsc::Sender<Op>,
    /// Shared with the writer's [`CheckpointWaker`].
    idle: Arc<AtomicBool>,
    /// The wait before the next round.
    every: Duration,
    /// The WAL's frame count at the last round.
    last: i64,
    /// No restart before this, after one failed.
    next_restart: std::time::Instant,
}

impl Checkpointer {
    fn new(
        connection: Connection,
        max_wal_frames: i64,
        writer: std::sync::mpsc::Sender<Op>,
        idle: Arc<AtomicBool>,
    ) -> Self {
        Self {
            connection,
            max_wal_frames,
            writer,
            idle,
            every: CHECKPOINT_EVERY,
            last: -1,
            next_restart: std::time::Instant::now(),
        }
    }

    /// A PASSIVE checkpoint; the frames in the WAL.
    fn passive(&self) -> Result<i64, StoreError> {
        // (busy, frames in the WAL, frames copied back)
        let frames = self
            .connection
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))?;
        Ok(frames)
    }

    /// Copies the WAL back; past the limit, restarts it.
    fn round(&mut self) -> Result<(), StoreError> {
        let mut frames = self.passive()?;
        self.pace(frames);
        if frames <= self.max_wal_frames || std::time::Instant::now() < self.next_restart {
            return Ok(());
        }
        // Each round copies what the writer added during the last one.
        for _ in 0..4 {
            let before = frames;
            frames = self.passive()?;
            if frames - before <= RESTART_LEFTOVER {
                break;
            }
        }
        self.restart()
    }

    /// Restarts the WAL while the writer answers accepts from the journal.
    fn restart(&mut self) -> Result<(), StoreError> {
        let (reply, diverted) = tokio::sync::oneshot::channel();
        if self.writer.send(Op::Divert { reply }).is_err() {
            return Ok(()); // the store is closing
        }
        diverted
            .blocking_recv()
            .unwrap_or_else(|_| Err(StoreError::new("the writer stopped")))?;
        let restarted = self.start_over();
        let _ = self.writer.send(Op::Resume);
        if restarted.is_err() {
            self.next_restart = std::time::Instant::now() + RESTART_RETRY;
        }
        restarted
    }

    /// Copies the rest of the WAL back and starts it over, then makes the new WAL's
    /// first commit (SQLite syncs a new WAL's header, even with `synchronous = NORMAL`),
    /// so that the writer's next commit only appends. The price: a commit from another
    /// connection makes the writer drop its page cache at its next read, once a
    /// restart (about every 1.5 s under load); refilling it reads from the OS's page
    /// cache, not from the disk.
    fn start_over(&self) -> Result<(), StoreError> {
        // (busy, frames in the WAL, frames copied back)
        let busy: i64 = self
            .connection
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| row.get(0))?;
        if busy != 0 {
            return Err(StoreError::new(
                "the WAL cannot start over while another connection reads it",
            ));
        }
        self.connection
            .pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(())
    }

    /// Sets the wait before the next round from the WAL's frame count, `frames`.
    fn pace(&mut self, frames: i64) {
        // Any change in the count (a restarted WAL counts from 0) means the writer wrote.
        if frames == self.last {
            // Quiet since the last round. The first quiet round arms the writer's
            // wake-up; the next one, still quiet (no commit disarmed it), goes idle. A
            // commit in between has woken us, so none is left waiting for the idle wait.
            if self.idle.swap(true, Ordering::AcqRel) {
                self.every = CHECKPOINT_IDLE;
            }
        } else {
            // Busy: the writer must not wake us. (Armed at every round, its wake-ups
            // had the checkpointer run back to back: 370 fsyncs a second at c=64.)
            self.idle.store(false, Ordering::Release);
            self.every = CHECKPOINT_EVERY;
        }
        self.last = frames;
    }
}

/// The writer's SQLite page cache, in KiB. Each new event id (Messenger's look
/// random) lands on a random page of the id index; with SQLite's default 2 MiB most
/// of those pages had to be read back from the file (c=64: 19.8k-21.0k webhooks/s,
/// p99 10.9-11.4 ms; with 16 MiB, 22.3k-22.7k/s, 5.6-6.0 ms). Given back when idle.
const CACHE_KIB: i64 = 16 * 1024;

/// Idle time after which the writer gives its page cache's memory back.
const SHRINK_AFTER: Duration = Duration::from_secs(2);

/// Most events forgotten in one transaction, and the pause between two. A prune
/// forgets a minute's worth of events (740,000 at 13,500 webhooks/s), which took the
/// writer for 0.65 s in one piece, every acknowledgement waiting: p99 624-637 ms in
/// that 10 s, 1.2-2.5 ms in the others. In slices back to back, 50 ms: they still took
/// the core for as long. Paced, at most 50,000 a second (over three times that
/// intake), the work is spread over some 15 s: 2.6-3.2 ms.
const PRUNE_SLICE: usize = 500;
/// Forgets at most `?2` events finished before `?1`, the oldest first (walking the
/// `intake_finished` index: no sort).
const PRUNE: &str = "DELETE FROM intake WHERE seq IN (
                         SELECT seq FROM intake WHERE state != 0 AND finished_ms < ?1
                         ORDER BY finished_ms, seq LIMIT ?2)";
const PRUNE_PAUSE: Duration = Duration::from_millis(10);

/// Most operations applied in one transaction.
const MAX_BATCH: usize = 1024;

/// An operation's answer, sent once its transaction is committed (with the commit's
/// error instead of its result if the commit failed).
type Answer = Box<dyn FnOnce(Option<StoreError>)>;

/// The writer thread: applies the operations it is sent, a burst at a time in one
/// transaction, except while the checkpointer restarts the WAL.
struct WriteLoop {
    connection: Connection,
    checkpoints: CheckpointWaker,
    journal: Journal,
    /// Accepted events in the journal and not yet committed in the database.
    journaled: Vec<Record>,
    /// Their identities, for deduplication.
    journaled_ids: HashSet<EventRef>,
    /// Between [`Op::Divert`] and [`Op::Resume`].
    diverting: bool,
    /// What was asked while diverting, other than accepts: applied in order, after the
    /// journal's events, by the first commit after.
    deferred: Vec<Op>,
    /// Events accepted through the journal so far.
    diverted: Arc<AtomicU64>,
    /// Rows without a time ([`UNKNOWN_MS`]) are left: lookups look among them too.
    legacy: bool,
}

impl WriteLoop {
    fn run(mut self, ops: std::sync::mpsc::Receiver<Op>) {
        let mut cached = false;
        loop {
            let first = match ops.recv_timeout(SHRINK_AFTER) {
                Ok(op) => op,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if std::mem::take(&mut cached) {
                        self.shrink();
                    }
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            };
            cached = true;
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match ops.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let mut batch = batch.into_iter();
            // A divert or a resume in the batch switches between the two.
            loop {
                let more = if self.diverting {
                    self.divert(&mut batch)
                } else {
                    self.commit(&mut batch)
                };
                if !more {
                    break;
                }
            }
        }
        // The store is closing (the checkpointer has stopped, and resumed us if it
        // had to): nothing should be left, but if it is, the database takes it.
        if !self.journaled.is_empty() || !self.deferred.is_empty() {
            self.commit(&mut std::iter::empty());
        }
    }

    /// Gives back the page cache's memory once the writer has been idle a while.
    fn shrink(&self) {
        if let Err(err) = self.connection.execute_batch("PRAGMA shrink_memory") {
            tracing::debug!("event store: {err}");
        }
        adapter_kit::memory::release_free_memory();
    }

    /// Applies operations in one transaction until they run out or one asks to
    /// divert, then answers them. Events still in the journal go in first. Returns
    /// whether operations are left.
    fn commit(&mut self, ops: &mut impl Iterator<Item = Op>) -> bool {
        let mut divert = None;
        let mut batch: Vec<Op> = self.deferred.drain(..).collect();
        for op in ops.by_ref() {
            if let Op::Divert { reply } = op {
                divert = Some(reply);
                break;
            }
            batch.push(op);
        }
        let mut answers: Vec<Answer> = Vec::with_capacity(batch.len());
        let prunes = batch.iter().any(|op| matches!(op, Op::Prune { .. }));
        let mut batch = batch.into_iter();
        let legacy = self.legacy;
        let committed = (|| -> Result<(), StoreError> {
            let tx = self.connection.transaction()?;
            for r in &self.journaled {
                r.key().insert_new(&tx, legacy, &r.event)?;
            }
            for op in batch.by_ref() {
                apply(&tx, legacy, op, &mut answers);
            }
            tx.commit()?;
            Ok(())
        })();
        let failure = committed.err();
        match &failure {
            None => {
                if prunes && self.legacy {
                    // Pruning may have taken the last rows without a time.
                    self.legacy = has_unknown(&self.connection).unwrap_or(true);
                }
                self.journaled.clear();
                self.journaled_ids.clear();
                // Also retries a clear that failed after an earlier commit.
                if let Err(err) = self.journal.clear() {
                    tracing::error!("{err}");
                }
            }
            Some(err) => {
                if !self.journaled.is_empty() {
                    tracing::error!(
                        events = self.journaled.len(),
                        "{err}; the journal keeps its events for the next commit"
                    );
                }
                // What the failure left unapplied: answered with it, or kept.
                for op in batch {
                    self.not_applied(op, &mut answers);
                }
            }
        }
        for answer in answers {
            answer(failure.clone());
        }
        self.checkpoints.wrote();
        match divert {
            Some(reply) => {
                self.diverting = true;
                let _ = reply.send(Ok(()));
                true
            }
            None => false,
        }
    }

    /// An operation a failed transaction never reached: a question gets the failure
    /// as its answer; a record of progress is kept for the next commit.
    fn not_applied(&mut self, op: Op, answers: &mut Vec<Answer>) {
        fn fail<T: Send + 'static>(answers: &mut Vec<Answer>, reply: Reply<T>) {
            answers.push(Box::new(move |failure| {
                let err = failure.unwrap_or_else(|| StoreError::new("not applied"));
                let _ = reply.send(Err(err));
            }));
        }
        match op {
            Op::Accept { reply, .. } => fail(answers, reply),
            Op::Prune { reply, .. } => fail(answers, reply),
            Op::Pending { reply } => fail(answers, reply),
            Op::Contains { reply, .. } => fail(answers, reply),
            Op::Divert { reply } => fail(answers, reply),
            op @ (Op::Progress { .. } | Op::Finish { .. }) => self.deferred.push(op),
            Op::Resume => {}
        }
    }

    /// While the WAL restarts: answers accepts once they are in the journal, keeps
    /// everything else for later. Returns whether operations are left (after a
    /// [`Op::Resume`]).
    fn divert(&mut self, ops: &mut impl Iterator<Item = Op>) -> bool {
        let mut fresh: Vec<Record> = Vec::new();
        let mut accepts = Vec::new();
        let mut resumed = false;
        for op in ops.by_ref() {
            match op {
                Op::Accept { records, reply } => {
                    let first = fresh.len();
                    let answer = self.accept_aside(records, &mut fresh);
                    if answer.is_err() {
                        self.forget(fresh.drain(first..));
                    }
                    accepts.push((reply, answer));
                }
                Op::Resume => {
                    resumed = true;
                    break;
                }
                Op::Divert { reply } => {
                    let _ = reply.send(Ok(()));
                }
                other => self.deferred.push(other),
            }
        }
        let written = if fresh.is_empty() {
            Ok(())
        } else {
            self.journal.append(&fresh)
        };
        match &written {
            Ok(()) => {
                self.diverted
                    .fetch_add(fresh.len() as u64, Ordering::Relaxed);
                self.journaled.append(&mut fresh);
            }
            Err(_) => self.forget(fresh.drain(..)),
        }
        for (reply, answer) in accepts {
            let _ = reply.send(match &written {
                Ok(()) => answer,
                Err(err) => Err(err.clone()),
            });
        }
        if resumed {
            self.diverting = false;
        }
        resumed
    }

    /// Which of `records` are new (in neither the database nor the journal); the new
    /// ones are added to `fresh`.
    fn accept_aside(
        &mut self,
        records: Vec<Record>,
        fresh: &mut Vec<Record>,
    ) -> Result<Vec<bool>, StoreError> {
        let mut answer = Vec::with_capacity(records.len());
        for record in records {
            let id = record.id();
            let new = !self.journaled_ids.contains(&id)
                && record.key().find(&self.connection, self.legacy)?.is_none();
            if new {
                self.journaled_ids.insert(id);
                fresh.push(record);
            }
            answer.push(new);
        }
        Ok(answer)
    }

    /// Drops records that did not make it into the journal from the ids it holds.
    fn forget(&mut self, records: impl Iterator<Item = Record>) {
        for r in records {
            self.journaled_ids.remove(&r.id());
        }
    }
}

/// What identifies an event's row: its channel, its id and its own time.
#[derive(Clone, Copy)]
struct Key<'a> {
    channel: &'a str,
    event_id: &'a str,
    at_ms: i64,
}

impl Key<'_> {
    /// The event's row (its `seq`), if it has one. With `legacy`, also looks among the
    /// rows without a time.
    fn find(self, connection: &Connection, legacy: bool) -> rusqlite::Result<Option<i64>> {
        self.find_by(connection, legacy, id_digest(self.channel, self.event_id))
    }

    /// [`Key::find`], with the id's digest already made.
    fn find_by(
        self,
        connection: &Connection,
        legacy: bool,
        digest: i64,
    ) -> rusqlite::Result<Option<i64>> {
        let mut find = connection.prepare_cached(
            "SELECT seq FROM intake
             WHERE event_ms = ?1 AND id_digest = ?2 AND channel = ?3 AND event_id = ?4",
        )?;
        let mut at = |at_ms: i64| {
            find.query_row(params![at_ms, digest, self.channel, self.event_id], |row| {
                row.get(0)
            })
            .optional()
        };
        match at(self.at_ms)? {
            None if legacy && self.at_ms != UNKNOWN_MS => at(UNKNOWN_MS),
            found => Ok(found),
        }
    }

    /// Inserts a pending event unless it has a row; whether it did.
    fn insert_new(
        self,
        connection: &Connection,
        legacy: bool,
        event: &str,
    ) -> rusqlite::Result<bool> {
        // One digest for the look and the insert: this runs for every accepted event.
        let digest = id_digest(self.channel, self.event_id);
        if self.find_by(connection, legacy, digest)?.is_some() {
            return Ok(false);
        }
        connection
            .prepare_cached(
                "INSERT INTO intake (channel, event_id, state, event, id_digest, event_ms)
                 VALUES (?1, ?2, 0, ?3, ?4, ?5)",
            )?
            .execute(params![
                self.channel,
                self.event_id,
                event,
                digest,
                self.at_ms
            ])?;
        Ok(true)
    }
}

impl Record {
    fn id(&self) -> EventRef {
        EventRef {
            channel: self.channel.clone(),
            event_id: self.event_id.clone(),
            at_ms: self.at_ms,
        }
    }

    fn key(&self) -> Key<'_> {
        Key {
            channel: &self.channel,
            event_id: &self.event_id,
            at_ms: self.at_ms,
        }
    }
}

/// Whether rows without a time (moved from an older layout) are left.
fn has_unknown(connection: &Connection) -> rusqlite::Result<bool> {
    connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM intake WHERE event_ms = ?1)",
        [UNKNOWN_MS],
        |row| row.get(0),
    )
}

/// Applies one operation inside the open transaction; queues its answer for after the
/// commit (an answer gets the commit's error, if any, instead of its result).
fn apply(tx: &rusqlite::Transaction<'_>, legacy: bool, op: Op, answers: &mut Vec<Answer>) {
    fn answer<T: Send + 'static>(
        answers: &mut Vec<Answer>,
        reply: Reply<T>,
        result: Result<T, StoreError>,
    ) {
        answers.push(Box::new(move |failure| {
            let _ = reply.send(match failure {
                Some(err) => Err(err),
                None => result,
            });
        }));
    }
    match op {
        Op::Accept { records, reply } => {
            let result = records
                .iter()
                .map(|r| r.key().insert_new(tx, legacy, &r.event))
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(StoreError::from);
            answer(answers, reply, result);
        }
        Op::Progress { event, sent } => {
            let result = update(
                tx,
                legacy,
                &event,
                "UPDATE intake SET sent = ?2 WHERE seq = ?1",
                params![sent],
            );
            if let Err(err) = result {
                tracing::error!("event store: {err}");
            }
        }
        Op::Finish { event, state } => {
            let result = update(
                tx,
                legacy,
                &event,
                "UPDATE intake SET state = ?2, finished_ms = ?3, event = '' WHERE seq = ?1",
                params![state, now_ms()],
            );
            if let Err(err) = result {
                tracing::error!("event store: {err}");
            }
        }
        Op::Prune {
            cutoff,
            limit,
            reply,
        } => {
            let result = tx
                .prepare_cached(PRUNE)
                .and_then(|mut s| {
                    s.execute(params![cutoff, i64::try_from(limit).unwrap_or(i64::MAX)])
                })
                .map_err(StoreError::from);
            answer(answers, reply, result);
        }
        Op::Pending { reply } => answer(answers, reply, read_pending(tx)),
        Op::Divert { reply } => {
            // Never reached: `commit` and `divert` take it before `apply`.
            let _ = reply.send(Ok(()));
        }
        Op::Resume => {}
        Op::Contains { event, reply } => {
            let result = event
                .key()
                .find(tx, legacy)
                .map(|found| found.is_some())
                .map_err(StoreError::from);
            answer(answers, reply, result);
        }
    }
}

/// Runs `sql` on `event`'s row, if it has one: `?1` is its `seq`, `values` the rest.
fn update(
    tx: &rusqlite::Transaction<'_>,
    legacy: bool,
    event: &EventRef,
    sql: &str,
    values: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<()> {
    let Some(seq) = event.key().find(tx, legacy)? else {
        return Ok(());
    };
    let mut all: Vec<&dyn rusqlite::ToSql> = vec![&seq];
    all.extend_from_slice(values);
    tx.prepare_cached(sql)?.execute(all.as_slice())?;
    Ok(())
}

fn read_pending(tx: &rusqlite::Transaction<'_>) -> Result<Vec<Pending>, StoreError> {
    let mut query =
        tx.prepare("SELECT channel, sent, event FROM intake WHERE state = 0 ORDER BY seq")?;
    let rows = query.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, u32>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    let mut pending = Vec::new();
    for row in rows {
        let (channel, sent, json) = row?;
        let stored: Stored = serde_json::from_str(&json)
            .map_err(|e| StoreError(format!("a stored event is unreadable: {e}")))?;
        pending.push(Pending {
            channel,
            event: stored.into(),
            sent,
        });
    }
    Ok(pending)
}

/// Opens the journal beside the database at `path` and moves the events a host that
/// stopped while diverting left in it into the database.
fn recover(connection: &mut Connection, path: &Path) -> Result<Journal, StoreError> {
    let (mut journal, mut records) = Journal::open(Journal::path_for(path))?;
    for r in &mut records {
        // A line from a host that did not write the time: the event holds it.
        if r.at_ms == UNKNOWN_MS {
            r.at_ms = stored_time(&r.event).unwrap_or(UNKNOWN_MS);
        }
    }
    if !records.is_empty() {
        let tx = connection.transaction()?;
        let legacy = has_unknown(&tx)?;
        let mut moved = 0;
        for r in &records {
            moved += usize::from(r.key().insert_new(&tx, legacy, &r.event)?);
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

impl Store {
    /// Opens (or creates) the SQLite store at `path`, with its writer thread.
    pub fn open(path: &Path, remember: Duration) -> Result<Self, StoreError> {
        Self::open_with_wal_limit(path, remember, MAX_WAL_FRAMES)
    }

    /// [`Store::open`], restarting the WAL past `max_wal_frames` frames.
    fn open_with_wal_limit(
        path: &Path,
        remember: Duration,
        max_wal_frames: i64,
    ) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError(format!("{}: {e}", dir.display())))?;
        }
        let mut connection =
            Connection::open(path).map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
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
        // Both threads are background work: they write and copy while the runtime
        // thread answers requests, without preempting it at every wake-up.
        let spawn = |name: &str, work: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    if let Err(err) = adapter_kit::background::run_as_background_thread() {
                        tracing::debug!("event store thread stays a normal one: {err}");
                    }
                    work();
                })
                .map_err(|e| StoreError(format!("cannot start the {name} thread: {e}")))
        };
        let (ops, receiver) = std::sync::mpsc::channel();
        let (checkpoint_signals, signals) = std::sync::mpsc::channel();
        let idle = Arc::new(AtomicBool::new(false));
        let waker = CheckpointWaker {
            signals: checkpoint_signals.clone(),
            idle: Arc::clone(&idle),
        };
        let diverted = Arc::new(AtomicU64::new(0));
        let write_loop = WriteLoop {
            connection,
            checkpoints: waker,
            journal,
            journaled: Vec::new(),
            journaled_ids: HashSet::new(),
            diverting: false,
            deferred: Vec::new(),
            diverted: Arc::clone(&diverted),
            legacy,
        };
        let thread = spawn("event-store", Box::new(move || write_loop.run(receiver)))?;
        let writer = ops.clone();
        let checkpointer = spawn(
            "event-store-checkpoints",
            Box::new(move || {
                checkpoint_loop(
                    Checkpointer::new(checkpoints, max_wal_frames, writer, idle),
                    signals,
                )
            }),
        )?;
        Ok(Self {
            backend: Backend::Sqlite(Writer {
                ops: Some(ops),
                diverted,
                thread: Some(thread),
                checkpoint_signals,
                checkpointer: Some(checkpointer),
            }),
            remember,
        })
    }

    /// A store in memory: no durability, at most `max` finished ids remembered.
    pub fn in_memory(remember: Duration, max: usize) -> Self {
        Self {
            backend: Backend::Memory(Mutex::new(Memory {
                max,
                ..Memory::default()
            })),
            remember,
        }
    }

    /// Asks the writer for something and waits for the committed answer.
    async fn ask<T>(writer: &Writer, op: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        writer.send(op(reply))?;
        answer
            .await
            .map_err(|_| StoreError("the writer stopped".to_owned()))?
    }

    /// Records `events` as pending; answers once they are committed. Returns, in
    /// order, whether each one is new (`false`: a redelivery of an event already seen).
    pub async fn accept(
        &self,
        channel: &str,
        events: &[InboundEvent],
    ) -> Result<Vec<bool>, StoreError> {
        match &self.backend {
            Backend::Sqlite(writer) => {
                let records = events
                    .iter()
                    .map(|event| {
                        serde_json::to_string(&Stored::from(event))
                            .map(|json| Record {
                                channel: channel.to_owned(),
                                event_id: event.event_id.to_string(),
                                at_ms: event_ms(event),
                                event: json,
                            })
                            .map_err(|e| StoreError(e.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Self::ask(writer, |reply| Op::Accept { records, reply }).await
            }
            Backend::Memory(memory) => {
                let mut memory = memory.lock().unwrap_or_else(|p| p.into_inner());
                Ok(events
                    .iter()
                    .map(|event| {
                        memory
                            .seen
                            .insert(EventRef::new(channel, event), None)
                            .is_none()
                    })
                    .collect())
            }
        }
    }

    /// Notes that the first `sent` replies of an event went out (written with the
    /// next batch).
    pub fn progress(
        &self,
        channel: &str,
        event: &InboundEvent,
        sent: u32,
    ) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(writer) => writer.send(Op::Progress {
                event: EventRef::new(channel, event),
                sent,
            }),
            Backend::Memory(_) => Ok(()),
        }
    }

    /// Marks an event finished (written with the next batch); it is remembered for
    /// deduplication.
    pub fn finish(
        &self,
        channel: &str,
        event: &InboundEvent,
        outcome: Outcome,
    ) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(writer) => writer.send(Op::Finish {
                event: EventRef::new(channel, event),
                state: match outcome {
                    Outcome::Done => 1,
                    Outcome::Failed => 2,
                },
            }),
            Backend::Memory(memory) => {
                let now = now_ms();
                let mut memory = memory.lock().unwrap_or_else(|p| p.into_inner());
                let key = EventRef::new(channel, event);
                if let Some(slot) = memory.seen.get_mut(&key) {
                    *slot = Some(now);
                    memory.finished.push_back((key, now));
                }
                while memory.finished.len() > memory.max {
                    if let Some((key, _)) = memory.finished.pop_front() {
                        memory.seen.remove(&key);
                    }
                }
                Ok(())
            }
        }
    }

    /// Forgets finished ids older than the remember window. Returns how many.
    pub async fn prune(&self) -> Result<usize, StoreError> {
        let cutoff =
            now_ms().saturating_sub(i64::try_from(self.remember.as_millis()).unwrap_or(i64::MAX));
        match &self.backend {
            Backend::Sqlite(writer) => {
                // A slice at a time, paced: accepts get in between, and the core
                // stays theirs.
                let mut removed = 0;
                loop {
                    let slice = Self::ask(writer, |reply| Op::Prune {
                        cutoff,
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
            }
            Backend::Memory(memory) => {
                let mut memory = memory.lock().unwrap_or_else(|p| p.into_inner());
                let mut removed = 0;
                while memory.finished.front().is_some_and(|(_, at)| *at < cutoff) {
                    if let Some((key, _)) = memory.finished.pop_front() {
                        memory.seen.remove(&key);
                        removed += 1;
                    }
                }
                Ok(removed)
            }
        }
    }

    /// The events still waiting for replies, in the order they arrived.
    pub async fn pending(&self) -> Result<Vec<Pending>, StoreError> {
        match &self.backend {
            Backend::Sqlite(writer) => Self::ask(writer, |reply| Op::Pending { reply }).await,
            Backend::Memory(_) => Ok(Vec::new()),
        }
    }

    /// Events accepted through the journal (while the WAL started over) so far.
    pub fn diverted(&self) -> u64 {
        match &self.backend {
            Backend::Sqlite(writer) => writer.diverted.load(Ordering::Relaxed),
            Backend::Memory(_) => 0,
        }
    }

    /// Whether an event is known (pending or remembered), after earlier writes.
    pub async fn contains(&self, channel: &str, event: &InboundEvent) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Sqlite(writer) => {
                let event = EventRef::new(channel, event);
                Self::ask(writer, |reply| Op::Contains { event, reply }).await
            }
            Backend::Memory(memory) => Ok(memory
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .seen
                .contains_key(&EventRef::new(channel, event))),
        }
    }
}

/// An [`InboundEvent`] as JSON in the store: written borrowing the event's strings
/// (`Stored<&str>`, no copies), read back owning them (`Stored<String>`).
#[derive(Serialize, Deserialize)]
struct Stored<S = String> {
    kind: u8,
    flags: u32,
    account_id: S,
    sender_id: S,
    recipient_id: S,
    timestamp_ms: u64,
    event_id: S,
    text: Option<S>,
    payload: Option<S>,
    attachments: Vec<StoredAttachment<S>>,
    reply_token: Option<S>,
    details_json: S,
    raw_json: S,
}

#[derive(Serialize, Deserialize)]
struct StoredAttachment<S = String> {
    kind: u8,
    url: Option<S>,
    type_name: S,
    raw_json: S,
}

fn to_opt(value: &ROption<RString>) -> Option<&str> {
    value.as_ref().into_option().map(RString::as_str)
}

fn from_opt(value: Option<String>) -> ROption<RString> {
    value.map(RString::from).into()
}

impl<'a> From<&'a InboundEvent> for Stored<&'a str> {
    fn from(e: &'a InboundEvent) -> Self {
        Self {
            kind: e.kind.0,
            flags: e.flags.0,
            account_id: &e.account_id,
            sender_id: &e.sender_id,
            recipient_id: &e.recipient_id,
            timestamp_ms: e.timestamp_ms,
            event_id: &e.event_id,
            text: to_opt(&e.text),
            payload: to_opt(&e.payload),
            attachments: e
                .attachments
                .iter()
                .map(|a| StoredAttachment {
                    kind: a.kind.0,
                    url: to_opt(&a.url),
                    type_name: &a.type_name,
                    raw_json: &a.raw_json,
                })
                .collect(),
            reply_token: to_opt(&e.reply_token),
            details_json: &e.details_json,
            raw_json: &e.raw_json,
        }
    }
}

impl From<Stored> for InboundEvent {
    fn from(s: Stored) -> Self {
        let mut e = InboundEvent::new(EventKind(s.kind));
        e.flags = EventFlags(s.flags);
        e.account_id = s.account_id.into();
        e.sender_id = s.sender_id.into();
        e.recipient_id = s.recipient_id.into();
        e.timestamp_ms = s.timestamp_ms;
        e.event_id = s.event_id.into();
        e.text = from_opt(s.text);
        e.payload = from_opt(s.payload);
        e.attachments = s
            .attachments
            .into_iter()
            .map(|a| Attachment {
                kind: AttachmentKind(a.kind),
                url: from_opt(a.url),
                type_name: a.type_name.into(),
                raw_json: a.raw_json.into(),
            })
            .collect();
        e.reply_token = from_opt(s.reply_token);
        e.details_json = s.details_json.into();
        e.raw_json = s.raw_json.into();
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_checkpointer_is_never_woken_and_a_quiet_one_goes_idle() {
        let (writer, _ops) = std::sync::mpsc::channel();
        let (signals_tx, signals) = std::sync::mpsc::channel();
        let idle = Arc::new(AtomicBool::new(false));
        let waker = CheckpointWaker {
            signals: signals_tx,
            idle: Arc::clone(&idle),
        };
        let connection = Connection::open_in_memory().unwrap();
        let mut checkpointer = Checkpointer::new(connection, 1000, writer, idle);
        let woken = || std::iter::from_fn(|| signals.try_recv().ok()).count();

        // Busy: the WAL grew at every round, and the writer's commits wake nobody
        // (they used to start the next round at once, back to back).
        for frames in [10, 20, 30] {
            checkpointer.pace(frames);
            waker.wrote();
            assert_eq!(checkpointer.every, CHECKPOINT_EVERY);
        }
        assert_eq!(woken(), 0, "a busy checkpointer was woken");

        // One quiet round arms the wake-up; a commit then wakes it once and the next
        // round is busy again.
        checkpointer.pace(30);
        assert_eq!(checkpointer.every, CHECKPOINT_EVERY);
        waker.wrote();
        waker.wrote();
        assert_eq!(woken(), 1);
        checkpointer.pace(35);
        assert_eq!(checkpointer.every, CHECKPOINT_EVERY);

        // Two quiet rounds: idle, until a commit wakes it.
        checkpointer.pace(35);
        checkpointer.pace(35);
        assert_eq!(checkpointer.every, CHECKPOINT_IDLE);
        assert_eq!(woken(), 0);
        waker.wrote();
        assert_eq!(woken(), 1);
        // A restarted WAL counts from 0: a change like any other.
        checkpointer.pace(0);
        assert_eq!(checkpointer.every, CHECKPOINT_EVERY);
    }

    fn event(id: &str) -> InboundEvent {
        let mut e = InboundEvent::new(EventKind::MESSAGE);
        e.event_id = id.into();
        e.timestamp_ms = 1_700_000_000_000;
        e.account_id = "page".into();
        e.sender_id = "user".into();
        e.text = ROption::RSome("hi".into());
        e.attachments.push(Attachment {
            kind: AttachmentKind::IMAGE,
            url: ROption::RSome("https://x/y.png".into()),
            type_name: "image".into(),
            raw_json: "{}".into(),
        });
        e
    }

    #[tokio::test]
    async fn sqlite_keeps_pending_events_across_reopen_and_drops_redeliveries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sqlite3");
        {
            let store = Store::open(&path, Duration::from_secs(60)).unwrap();
            assert_eq!(
                store.accept("m", &[event("a"), event("b")]).await.unwrap(),
                [true, true]
            );
            assert_eq!(
                store.accept("m", &[event("b"), event("c")]).await.unwrap(),
                [false, true]
            );
            store.progress("m", &event("c"), 1).unwrap();
            store.finish("m", &event("a"), Outcome::Done).unwrap();
        } // dropping the store commits what it was given
        let store = Store::open(&path, Duration::from_secs(60)).unwrap();
        let pending = store.pending().await.unwrap();
        let ids: Vec<_> = pending.iter().map(|p| p.event.event_id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(pending[1].sent, 1);
        assert_eq!(
            pending[0].event,
            event("b"),
            "the event survives the round trip"
        );
        assert_eq!(
            store.accept("m", &[event("a")]).await.unwrap(),
            [false],
            "finished ids are remembered"
        );
        assert_eq!(
            store.accept("other", &[event("a")]).await.unwrap(),
            [true],
            "per channel"
        );
        assert_eq!(store.accept("m", &[event("d")]).await.unwrap(), [true]);
        let order = pending_ids(&store).await;
        assert_eq!(
            order,
            ["b", "c", "a", "d"],
            "arrival order survives a reopen"
        );
    }

    #[tokio::test]
    async fn concurrent_accepts_are_committed_in_batches_and_all_answered() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(
            Store::open(&dir.path().join("q.sqlite3"), Duration::from_secs(60)).unwrap(),
        );
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = std::sync::Arc::clone(&store);
                tokio::spawn(async move {
                    store
                        .accept("m", &[event(&format!("e{}", i % 150))])
                        .await
                        .unwrap()[0]
                })
            })
            .collect();
        let mut fresh = 0;
        for task in tasks {
            fresh += usize::from(task.await.unwrap());
        }
        assert_eq!(fresh, 150, "each id is new exactly once");
        assert_eq!(store.pending().await.unwrap().len(), 150);
    }

    /// A writer that never pauses keeps PASSIVE checkpoints from letting the WAL start
    /// over; past its limit the checkpointer restarts it (accepts going to the journal
    /// meanwhile), and the file stops growing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_wal_starts_over_under_writes_that_never_pause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sqlite3");
        // 256 frames of 4 KiB: 1 MiB.
        let store = std::sync::Arc::new(
            Store::open_with_wal_limit(&path, Duration::from_secs(60), 256).unwrap(),
        );
        let writers: Vec<_> = (0..32)
            .map(|w| {
                let store = std::sync::Arc::clone(&store);
                tokio::spawn(async move {
                    for i in 0..300 {
                        let mut e = event(&format!("{w}-{i}"));
                        e.text = ROption::RSome("x".repeat(6_000).into());
                        store.accept("m", &[e]).await.unwrap();
                        store
                            .finish("m", &event(&format!("{w}-{i}")), Outcome::Done)
                            .unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        // 9,600 events of 6 KB: some 120 MiB through the WAL.
        let wal = std::fs::metadata(dir.path().join("q.sqlite3-wal"))
            .unwrap()
            .len();
        // Without restarts it ends above 150 MiB; with them, near 6 MiB here.
        assert!(wal < 24 << 20, "the WAL grew to {} MiB", wal >> 20);
        assert!(
            store.diverted() > 0,
            "accepts went to the journal while the WAL started over"
        );
        assert!(
            store.pending().await.unwrap().is_empty(),
            "the journal's events were moved in and then finished"
        );
        let journal = std::fs::metadata(Journal::path_for(&path)).unwrap().len();
        assert_eq!(journal, 0, "the journal is emptied after each restart");
    }

    /// Sends `op` straight to the writer, as the checkpointer does.
    fn send(store: &Store, op: Op) {
        let Backend::Sqlite(writer) = &store.backend else {
            panic!("not a SQLite store");
        };
        writer.send(op).unwrap();
    }

    #[tokio::test]
    async fn while_the_wal_restarts_accepts_go_to_the_journal_and_the_rest_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sqlite3");
        let journal = Journal::path_for(&path);
        let store = std::sync::Arc::new(Store::open(&path, Duration::from_secs(60)).unwrap());
        assert_eq!(store.accept("m", &[event("a")]).await.unwrap(), [true]);

        let (reply, diverted) = tokio::sync::oneshot::channel();
        send(&store, Op::Divert { reply });
        diverted.await.unwrap().unwrap();
        assert_eq!(
            store
                .accept("m", &[event("a"), event("b"), event("b")])
                .await
                .unwrap(),
            [false, true, false],
            "deduplicated against the database and the journal"
        );
        assert_eq!(store.accept("m", &[event("c")]).await.unwrap(), [true]);
        assert_eq!(store.diverted(), 2);
        assert!(std::fs::metadata(&journal).unwrap().len() > 0);
        store.finish("m", &event("b"), Outcome::Done).unwrap();
        // Anything but an accept waits for the WAL.
        let pending = tokio::spawn({
            let store = std::sync::Arc::clone(&store);
            async move { store.pending().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!pending.is_finished(), "answered while diverting");

        // What the checkpointer sends once the WAL has started over.
        send(&store, Op::Resume);
        let ids: Vec<_> = pending
            .await
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|p| p.event.event_id.to_string())
            .collect();
        assert_eq!(ids, ["a", "c"], "b was finished after it was moved in");
        assert_eq!(std::fs::metadata(&journal).unwrap().len(), 0);
        assert!(store.contains("m", &event("b")).await.unwrap());
        assert_eq!(store.accept("m", &[event("c")]).await.unwrap(), [false]);
    }

    #[tokio::test]
    async fn events_left_in_the_journal_are_moved_in_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sqlite3");
        {
            let store = Store::open(&path, Duration::from_secs(60)).unwrap();
            store.accept("m", &[event("a")]).await.unwrap();
            store.finish("m", &event("a"), Outcome::Done).unwrap();
        }
        // What a host killed while diverting leaves behind: "a" again (already in the
        // database), then two new ones.
        let record = |id: &str| Record {
            channel: "m".into(),
            event_id: id.into(),
            at_ms: event_ms(&event(id)),
            event: serde_json::to_string(&Stored::from(&event(id))).unwrap(),
        };
        // "d" as a host from before layout 4 wrote it, without the time.
        let old = Record {
            at_ms: UNKNOWN_MS,
            ..record("d")
        };
        let (mut journal, _) = Journal::open(Journal::path_for(&path)).unwrap();
        journal
            .append(&[record("a"), record("b"), record("c"), old])
            .unwrap();
        drop(journal);

        let store = Store::open(&path, Duration::from_secs(60)).unwrap();
        let pending = store.pending().await.unwrap();
        let ids: Vec<_> = pending.iter().map(|p| p.event.event_id.as_str()).collect();
        assert_eq!(ids, ["b", "c", "d"], "a was already there, and finished");
        assert_eq!(pending[0].event, event("b"));
        assert_eq!(
            std::fs::metadata(Journal::path_for(&path)).unwrap().len(),
            0,
            "the journal is emptied once its events are in"
        );
        drop(store);
        let at = event_ms(&event("d"));
        assert_eq!(
            times(&dir)[1..],
            [
                ("b".to_owned(), at),
                ("c".to_owned(), at),
                ("d".to_owned(), at)
            ],
            "the old line's time was read from its event"
        );
    }

    #[tokio::test]
    async fn pruning_goes_a_slice_at_a_time_the_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("q.sqlite3"), Duration::ZERO).unwrap();
        let events: Vec<_> = (0..2 * PRUNE_SLICE + 10)
            .map(|i| event(&format!("e{i}")))
            .collect();
        store.accept("m", &events).await.unwrap();
        // All but the first ten finish, then those ten, later.
        for e in events[10..].iter().chain(&events[..10]) {
            store.finish("m", e, Outcome::Done).unwrap();
            if e.event_id.as_str() == "e9" || e.event_id == events.last().unwrap().event_id {
                // Answered after the finishes before it are committed.
                store.contains("m", e).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        store.accept("m", &[event("pending")]).await.unwrap();
        let (reply, answer) = tokio::sync::oneshot::channel();
        send(
            &store,
            Op::Prune {
                cutoff: now_ms(),
                limit: 10,
                reply,
            },
        );
        assert_eq!(answer.await.unwrap().unwrap(), 10, "one slice");
        assert!(!store.contains("m", &events[10]).await.unwrap());
        assert!(!store.contains("m", &events[19]).await.unwrap());
        assert!(
            store.contains("m", &events[20]).await.unwrap(),
            "in the order they finished"
        );
        assert!(
            store.contains("m", &events[0]).await.unwrap(),
            "the last to finish go last"
        );
        assert_eq!(
            store.prune().await.unwrap(),
            2 * PRUNE_SLICE,
            "the rest, over several slices"
        );
        assert!(!store.contains("m", &events[0]).await.unwrap());
        assert!(store.contains("m", &event("pending")).await.unwrap());
    }

    #[test]
    fn a_prune_slice_walks_the_finished_index_without_sorting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sqlite3");
        drop(Store::open(&path, Duration::from_secs(60)).unwrap());
        let plan: Vec<String> = Connection::open(&path)
            .unwrap()
            .prepare(&format!("EXPLAIN QUERY PLAN {PRUNE}"))
            .unwrap()
            .query_map(params![0, 500], |row| row.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|step| step.contains("intake_finished")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.contains("TEMP B-TREE")),
            "each slice would sort every expired row: {plan:?}"
        );
    }

    #[tokio::test]
    async fn finished_ids_are_forgotten_after_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("q.sqlite3"), Duration::ZERO).unwrap();
        store.accept("m", &[event("a"), event("b")]).await.unwrap();
        store.finish("m", &event("a"), Outcome::Failed).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(store.prune().await.unwrap(), 1);
        assert!(!store.contains("m", &event("a")).await.unwrap());
        assert!(
            store.contains("m", &event("b")).await.unwrap(),
            "pending events are never pruned"
        );
    }

    /// A store written by an older host: `layout` (SQL), then `rows` (SQL, with the
    /// pending event "b" as `?1`), opened by this one. Checks what every move must
    /// keep: "a" finished, "b" pending with one reply sent, both still known.
    async fn moved_store(layout: &str, rows: &str) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sqlite3");
        let pending = serde_json::to_string(&Stored::from(&event("b"))).unwrap();
        let old = Connection::open(&path).unwrap();
        old.execute_batch(layout).unwrap();
        old.execute(rows, [&pending]).unwrap();
        drop(old);
        let store = Store::open(&path, Duration::from_secs(60)).unwrap();
        let waiting = store.pending().await.unwrap();
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].event, event("b"));
        assert_eq!(waiting[0].sent, 1, "progress is kept");
        assert_eq!(
            store
                .accept("m", &[event("a"), event("b"), event("c")])
                .await
                .unwrap(),
            [false, false, true],
            "ids seen before the move are still known"
        );
        (dir, store)
    }

    /// `PRAGMA user_version` and the names of the tables and indexes, after `store`.
    fn layout_after(dir: &tempfile::TempDir, store: Store) -> (i64, Vec<String>) {
        drop(store);
        let check = Connection::open(dir.path().join("q.sqlite3")).unwrap();
        let version = check
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        let names = check
            .prepare("SELECT name FROM sqlite_master ORDER BY name")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        (version, names)
    }

    #[tokio::test]
    async fn a_version_1_store_is_moved_to_the_current_layout_with_its_events() {
        // The layout the first host release wrote.
        let (dir, store) = moved_store(
            "CREATE TABLE events (channel TEXT NOT NULL, event_id TEXT NOT NULL,
                 seq INTEGER NOT NULL, state INTEGER NOT NULL, sent INTEGER NOT NULL DEFAULT 0,
                 finished_ms INTEGER, event TEXT NOT NULL, PRIMARY KEY (channel, event_id))
                 WITHOUT ROWID;
             CREATE INDEX events_finished ON events (finished_ms) WHERE state != 0;",
            "INSERT INTO events VALUES ('m', 'a', 1, 1, 1, 1, ''), ('m', 'b', 2, 0, 1, NULL, ?1)",
        )
        .await;
        let (version, names) = layout_after(&dir, store);
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(names, ["intake", "intake_finished", "intake_key"]);
    }

    #[tokio::test]
    async fn a_version_2_store_gets_id_digests_and_keeps_its_events() {
        // The layout of the second host release.
        let (dir, store) = moved_store(
            "CREATE TABLE intake (seq INTEGER PRIMARY KEY, channel TEXT NOT NULL,
                 event_id TEXT NOT NULL, state INTEGER NOT NULL,
                 sent INTEGER NOT NULL DEFAULT 0, finished_ms INTEGER, event TEXT NOT NULL);
             CREATE UNIQUE INDEX intake_id ON intake (channel, event_id);
             CREATE INDEX intake_finished ON intake (finished_ms) WHERE state != 0;
             PRAGMA user_version = 2;",
            "INSERT INTO intake (channel, event_id, state, sent, finished_ms, event)
             VALUES ('m', 'a', 1, 1, 1, ''), ('m', 'b', 0, 1, NULL, ?1)",
        )
        .await;
        store.finish("m", &event("b"), Outcome::Done).unwrap();
        let left = pending_ids(&store).await;
        assert_eq!(left, ["c"], "b is found by its digest to be finished");
        let (version, names) = layout_after(&dir, store);
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(
            names,
            ["intake", "intake_finished", "intake_key"],
            "the string index is gone"
        );
    }

    #[tokio::test]
    async fn a_version_3_store_keys_its_rows_by_time_and_keeps_its_events() {
        // The layout of the third host release: the digest alone.
        let digest = |id| id_digest("m", id);
        let (dir, store) = moved_store(
            &format!(
                "CREATE TABLE intake (seq INTEGER PRIMARY KEY, channel TEXT NOT NULL,
                     event_id TEXT NOT NULL, state INTEGER NOT NULL,
                     sent INTEGER NOT NULL DEFAULT 0, finished_ms INTEGER, event TEXT NOT NULL,
                     id_digest INTEGER NOT NULL DEFAULT 0);
                 CREATE INDEX intake_digest ON intake (id_digest);
                 CREATE INDEX intake_finished ON intake (finished_ms) WHERE state != 0;
                 PRAGMA user_version = 3;
                 INSERT INTO intake (channel, event_id, state, sent, finished_ms, event, id_digest)
                 VALUES ('m', 'a', 1, 1, 1, '', {});",
                digest("a")
            ),
            &format!(
                "INSERT INTO intake (channel, event_id, state, sent, event, id_digest)
                 VALUES ('m', 'b', 0, 1, ?1, {})",
                digest("b")
            ),
        )
        .await;
        // "a" has no time in the store (its event was dropped when it finished) and is
        // still found, above; "b" got its time from its event.
        store.finish("m", &event("b"), Outcome::Done).unwrap();
        assert!(store.contains("m", &event("b")).await.unwrap());
        let left = pending_ids(&store).await;
        assert_eq!(left, ["c"]);
        let (version, names) = layout_after(&dir, store);
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(names, ["intake", "intake_finished", "intake_key"]);
        assert_eq!(
            times(&dir),
            [
                ("a".to_owned(), UNKNOWN_MS),
                ("b".to_owned(), event_ms(&event("b"))),
                ("c".to_owned(), event_ms(&event("c")))
            ]
        );
    }

    /// The ids of the events still pending, in arrival order.
    async fn pending_ids(store: &Store) -> Vec<String> {
        let pending = store.pending().await.unwrap();
        pending
            .into_iter()
            .map(|p| p.event.event_id.into())
            .collect()
    }

    /// Each row's event id and time, in arrival order.
    fn times(dir: &tempfile::TempDir) -> Vec<(String, i64)> {
        Connection::open(dir.path().join("q.sqlite3"))
            .unwrap()
            .prepare("SELECT event_id, event_ms FROM intake ORDER BY seq")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[tokio::test]
    async fn an_event_is_found_by_its_id_and_its_own_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("q.sqlite3"), Duration::from_secs(60)).unwrap();
        let at = |ms: u64| {
            let mut e = event("a");
            e.timestamp_ms = ms;
            e
        };
        let memory = Store::in_memory(Duration::from_secs(60), 10);
        for store in [&store, &memory] {
            assert_eq!(store.accept("m", &[at(5)]).await.unwrap(), [true]);
            assert_eq!(
                store.accept("m", &[at(5)]).await.unwrap(),
                [false],
                "a redelivery carries the same time"
            );
            assert_eq!(
                store.accept("m", &[at(6)]).await.unwrap(),
                [true],
                "the key holds the time: at another one it is another event"
            );
        }
        store.finish("m", &at(5), Outcome::Done).unwrap();
        let left: Vec<_> = store
            .pending()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.event.timestamp_ms)
            .collect();
        assert_eq!(left, [6], "the finish found the row by id and time");
        assert!(!store.contains("m", &at(7)).await.unwrap());
    }

    #[tokio::test]
    async fn two_ids_with_the_same_key_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sqlite3");
        drop(Store::open(&path, Duration::from_secs(60)).unwrap());
        // A row for "x" filed under the key of "y", as a collision would be.
        Connection::open(&path)
            .unwrap()
            .execute(
                "INSERT INTO intake (channel, event_id, state, event, id_digest, event_ms)
                 VALUES ('m', 'x', 0, '{}', ?1, ?2)",
                [id_digest("m", "y"), event_ms(&event("y"))],
            )
            .unwrap();
        let store = Store::open(&path, Duration::from_secs(60)).unwrap();
        assert_eq!(
            store.accept("m", &[event("y")]).await.unwrap(),
            [true],
            "the same digest alone is not the same id"
        );
        assert_eq!(store.accept("m", &[event("y")]).await.unwrap(), [false]);
        assert_ne!(id_digest("m", "y"), id_digest("n", "y"));
        assert_ne!(id_digest("m", "y"), id_digest("my", ""));
    }

    #[test]
    fn a_store_from_a_newer_host_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sqlite3");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = Store::open(&path, Duration::from_secs(60))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("newer host"), "{err}");
    }

    #[tokio::test]
    async fn memory_mode_is_bounded() {
        let store = Store::in_memory(Duration::from_secs(60), 3);
        for i in 0..10 {
            let id = format!("e{i}");
            assert_eq!(store.accept("m", &[event(&id)]).await.unwrap(), [true]);
            store.finish("m", &event(&id), Outcome::Done).unwrap();
        }
        assert!(!store.contains("m", &event("e0")).await.unwrap());
        assert!(store.contains("m", &event("e9")).await.unwrap());
        assert_eq!(store.accept("m", &[event("e9")]).await.unwrap(), [false]);
        assert!(store.pending().await.unwrap().is_empty());
    }
}
