//! The writer thread: the one connection that writes, applying the operations it is
//! sent a burst at a time in one transaction (group commit), and answering accepts
//! from the side journal while the checkpointer restarts the WAL.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, Sender},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use rusqlite::Connection;

use super::{
    checkpoint::{CheckpointWaker, Signal},
    journal::{Journal, Record},
    ops::{apply, fail, Answer, Op},
    schema::has_unknown,
};
use crate::store::{EventKey, StoreError};

/// The SQLite connection, owned by one thread that batches writes.
pub(super) struct Writer {
    pub(super) ops: Option<Sender<Op>>,
    /// Events accepted through the journal so far.
    pub(super) diverted: Arc<AtomicU64>,
    pub(super) thread: Option<JoinHandle<()>>,
    pub(super) checkpoint_signals: Sender<Signal>,
    pub(super) checkpointer: Option<JoinHandle<()>>,
}

impl Writer {
    pub(super) fn send(&self, op: Op) -> Result<(), StoreError> {
        self.ops
            .as_ref()
            .and_then(|ops| ops.send(op).ok())
            .ok_or(StoreError::Closed("the store is closed"))
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

/// The writer's SQLite page cache, in KiB: the pages of the index's end and the
/// table's end stay in memory under load. Given back when idle.
pub(super) const CACHE_KIB: i64 = 16 * 1024;

/// Idle time after which the writer gives its page cache's memory back.
const SHRINK_AFTER: Duration = Duration::from_secs(2);

/// Most operations applied in one transaction.
const MAX_BATCH: usize = 1024;

/// The writer thread: applies the operations it is sent, a burst at a time in one
/// transaction, except while the checkpointer restarts the WAL.
pub(super) struct WriteLoop {
    pub(super) connection: Connection,
    pub(super) checkpoints: CheckpointWaker,
    pub(super) journal: Journal,
    /// Accepted events in the journal and not yet committed in the database.
    pub(super) journaled: Vec<Record>,
    /// Their identities, for deduplication.
    pub(super) journaled_ids: HashSet<EventKey>,
    /// Between [`Op::Divert`] and [`Op::Resume`].
    pub(super) diverting: bool,
    /// What was asked while diverting, other than accepts: applied in order, after the
    /// journal's events, by the first commit after.
    pub(super) deferred: Vec<Op>,
    /// Events accepted through the journal so far.
    pub(super) diverted: Arc<AtomicU64>,
    /// Rows without a time ([`UNKNOWN_MS`]) are left: lookups look among them too.
    pub(super) legacy: bool,
}

impl WriteLoop {
    pub(super) fn run(mut self, ops: Receiver<Op>) {
        let mut cached = false;
        loop {
            let first = match ops.recv_timeout(SHRINK_AFTER) {
                Ok(op) => op,
                Err(RecvTimeoutError::Timeout) => {
                    if std::mem::take(&mut cached) {
                        self.shrink();
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
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
        crate::os::release_free_memory();
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
                r.key().insert_new(&tx, legacy, &r.event, r.accepted_ms)?;
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
        match op {
            Op::Accept { reply, .. } => fail(answers, reply),
            Op::Prune { reply, .. } => fail(answers, reply),
            Op::Pending { reply } => fail(answers, reply),
            Op::Contains { reply, .. } => fail(answers, reply),
            Op::Divert { reply } => fail(answers, reply),
            Op::StartSend { reply, .. } | Op::Reschedule { reply, .. } => fail(answers, reply),
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
