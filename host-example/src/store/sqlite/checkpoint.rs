//! The checkpointer: copies the WAL back into the database from a connection of its
//! own, and has it start over when it grows past a limit.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError, Sender},
        Arc,
    },
    time::{Duration, Instant},
};

use rusqlite::Connection;

use super::{ops::Op, schema::SCHEMA_VERSION};
use crate::store::StoreError;

/// What the checkpointer thread is told.
pub(super) enum Signal {
    /// Stop.
    Stop,
    /// The writer wrote after a quiet spell: look now.
    Wake,
}

/// The writer's side of the checkpointer: wakes it on the first commit after a quiet
/// spell, so that a burst is not left to grow for a whole idle interval.
pub(super) struct CheckpointWaker {
    pub(super) signals: Sender<Signal>,
    /// Set by the checkpointer while it looks only every [`CHECKPOINT_IDLE`].
    pub(super) idle: Arc<AtomicBool>,
}

impl CheckpointWaker {
    pub(super) fn wrote(&self) {
        if self.idle.load(Ordering::Relaxed) && self.idle.swap(false, Ordering::AcqRel) {
            let _ = self.signals.send(Signal::Wake);
        }
    }
}

/// WAL frames (database pages) past which the WAL is made to start over: 16,384
/// pages of 4 KiB, 64 MiB.
pub(super) const MAX_WAL_FRAMES: i64 = 16_384;

/// Frames left for the restart checkpoint at most, once the checkpointer has caught
/// up: accepts go to the journal while they are copied and the database synced.
const RESTART_LEFTOVER: i64 = 512;

/// How often the checkpointer copies the WAL back into the database while the WAL
/// grows. Each copy takes a core for as long as it runs: frequent copies are short,
/// and the acknowledgements waiting behind them wait less.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(20);

/// How long a restart waits for readers to leave the WAL, and how long after a
/// failed one the next is tried.
pub(super) const RESTART_PATIENCE: Duration = Duration::from_millis(100);
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
/// and the new WAL's header synced by its first commit: milliseconds of waiting for
/// the disk. The checkpointer catches up with quick PASSIVE rounds, then has the
/// writer divert accepts to the [journal](journal) while it runs the RESTART and that
/// first commit itself. No acknowledgement waits for the disk; the other operations
/// (finishes, `pending`, `contains`, `prune`) wait for the restart.
pub(super) fn checkpoint_loop(mut checkpointer: Checkpointer, signals: Receiver<Signal>) {
    loop {
        match signals.recv_timeout(checkpointer.every) {
            Ok(Signal::Wake) | Err(RecvTimeoutError::Timeout) => {
                if let Err(err) = checkpointer.round() {
                    tracing::warn!("event store checkpoint: {err}");
                }
            }
            Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The checkpointer thread's connection and what it remembers between rounds.
pub(super) struct Checkpointer {
    connection: Connection,
    max_wal_frames: i64,
    writer: Sender<Op>,
    /// Shared with the writer's [`CheckpointWaker`].
    idle: Arc<AtomicBool>,
    /// The wait before the next round.
    every: Duration,
    /// The WAL's frame count at the last round.
    last: i64,
    /// No restart before this, after one failed.
    next_restart: Instant,
}

impl Checkpointer {
    pub(super) fn new(
        connection: Connection,
        max_wal_frames: i64,
        writer: Sender<Op>,
        idle: Arc<AtomicBool>,
    ) -> Self {
        Self {
            connection,
            max_wal_frames,
            writer,
            idle,
            every: CHECKPOINT_EVERY,
            last: -1,
            next_restart: Instant::now(),
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
        if frames <= self.max_wal_frames || Instant::now() < self.next_restart {
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
            .unwrap_or_else(|_| Err(StoreError::Closed("the writer stopped")))?;
        let restarted = self.start_over();
        let _ = self.writer.send(Op::Resume);
        if restarted.is_err() {
            self.next_restart = Instant::now() + RESTART_RETRY;
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
            return Err(StoreError::WalBusy);
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
            // would have the checkpointer run back to back, an fsync each time.)
            self.idle.store(false, Ordering::Release);
            self.every = CHECKPOINT_EVERY;
        }
        self.last = frames;
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
}
