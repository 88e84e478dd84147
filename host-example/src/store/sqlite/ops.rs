//! What the writer thread is asked to do, and how one operation is applied inside the
//! open transaction.

use rusqlite::{params, Transaction};

use super::{journal::Record, schema::Key};
use crate::store::{now_ms, stored, EventKey, Outcome, Pending, Progress, StoreError};

/// Where an operation's answer goes.
pub(super) type Reply<T> = tokio::sync::oneshot::Sender<Result<T, StoreError>>;

/// An operation's answer, sent once its transaction is committed (with the commit's
/// error instead of its result if the commit failed).
pub(super) type Answer = Box<dyn FnOnce(Option<StoreError>)>;

/// What the writer thread is asked to do; it applies a burst of these in one
/// transaction (group commit) and answers after the commit.
pub(super) enum Op {
    Accept {
        records: Vec<Record>,
        reply: Reply<Vec<bool>>,
    },
    /// Reply `index` is about to be sent.
    StartSend {
        event: EventKey,
        index: u32,
        reply: Reply<()>,
    },
    Progress {
        event: EventKey,
        sent: u32,
    },
    Reschedule {
        event: EventKey,
        progress: Progress,
        reply: Reply<()>,
    },
    Finish {
        event: EventKey,
        outcome: Outcome,
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
        event: EventKey,
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

/// Forgets at most `?2` events finished before `?1`, the oldest first (walking the
/// `intake_finished` index: no sort).
pub(super) const PRUNE: &str = "DELETE FROM intake WHERE seq IN (
                         SELECT seq FROM intake WHERE state != 0 AND finished_ms < ?1
                         ORDER BY finished_ms, seq LIMIT ?2)";

/// Queues `result` as the answer to `reply`, for after the commit.
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

/// Queues the failure of the transaction as the answer to `reply`.
pub(super) fn fail<T: Send + 'static>(answers: &mut Vec<Answer>, reply: Reply<T>) {
    answers.push(Box::new(move |failure| {
        let err = failure.unwrap_or(StoreError::Closed("the operation was not applied"));
        let _ = reply.send(Err(err));
    }));
}

/// Applies one operation inside the open transaction; queues its answer for after the
/// commit (an answer gets the commit's error, if any, instead of its result).
pub(super) fn apply(tx: &Transaction<'_>, legacy: bool, op: Op, answers: &mut Vec<Answer>) {
    match op {
        Op::Accept { records, reply } => {
            let result = records
                .iter()
                .map(|r| r.key().insert_new(tx, legacy, &r.event, r.accepted_ms))
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(StoreError::from);
            answer(answers, reply, result);
        }
        Op::StartSend {
            event,
            index,
            reply,
        } => {
            let result = update(
                tx,
                legacy,
                &event,
                "UPDATE intake SET sent = ?2, started = ?3 WHERE seq = ?1",
                params![index, index + 1],
            );
            answer(answers, reply, result.map_err(StoreError::from));
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
        Op::Reschedule {
            event,
            progress,
            reply,
        } => {
            let result = update(
                tx,
                legacy,
                &event,
                "UPDATE intake SET sent = ?2, started = ?2, attempts = ?3, retry_at_ms = ?4
                 WHERE seq = ?1",
                params![progress.sent, progress.attempts, progress.retry_at_ms],
            );
            answer(answers, reply, result.map_err(StoreError::from));
        }
        Op::Finish { event, outcome } => {
            let state = match outcome {
                Outcome::Done => 1,
                Outcome::Failed => 2,
            };
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
            // Never reached: the write loop takes it before `apply`.
            let _ = reply.send(Ok(()));
        }
        Op::Resume => {}
        Op::Contains { event, reply } => {
            let result = Key::from(&event)
                .find(tx, legacy)
                .map(|found| found.is_some())
                .map_err(StoreError::from);
            answer(answers, reply, result);
        }
    }
}

/// Runs `sql` on `event`'s row, if it has one: `?1` is its `seq`, `values` the rest.
fn update(
    tx: &Transaction<'_>,
    legacy: bool,
    event: &EventKey,
    sql: &str,
    values: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<()> {
    let Some(seq) = Key::from(event).find(tx, legacy)? else {
        return Ok(());
    };
    let mut all: Vec<&dyn rusqlite::ToSql> = vec![&seq];
    all.extend_from_slice(values);
    tx.prepare_cached(sql)?.execute(all.as_slice())?;
    Ok(())
}

/// The pending events, in arrival order.
fn read_pending(tx: &Transaction<'_>) -> Result<Vec<Pending>, StoreError> {
    let mut query = tx.prepare(
        "SELECT channel, event_id, event_ms, sent, started, attempts, retry_at_ms,
                accepted_ms, event
         FROM intake WHERE state = 0 ORDER BY seq",
    )?;
    let rows = query.query_map([], |row| {
        Ok((
            EventKey {
                channel: row.get(0)?,
                event_id: row.get(1)?,
                at_ms: row.get(2)?,
            },
            Progress {
                sent: row.get(3)?,
                started: row.get(4)?,
                attempts: row.get(5)?,
                retry_at_ms: row.get(6)?,
            },
            row.get::<_, i64>(7)?,
            row.get::<_, String>(8)?,
        ))
    })?;
    let mut pending = Vec::new();
    for row in rows {
        let (key, progress, accepted_ms, json) = row?;
        pending.push(Pending {
            key,
            event: stored::from_json(&json)?,
            progress,
            accepted_ms,
        });
    }
    Ok(pending)
}
