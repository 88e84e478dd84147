//! The poller: hands the dispatcher the pending events of the partitions this host
//! owns, in arrival order, whichever host accepted them, each once while it is in
//! flight here. A quick look at the newest rows every `poll`, and a full look now
//! and then, for the rows of a transaction that committed late or a partition just
//! taken over.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use deadpool_postgres::Pool;
use tokio::sync::mpsc;
use tokio_postgres::Row;

use super::{writes::client, Shared, MAX_IN_FLIGHT};
use crate::store::{stored, EventKey, Pending, Progress, StoreError};

/// The columns a pending event is read from.
pub(super) const SELECT: &str = "SELECT seq, part, channel, event_id, event_ms, sent, started,
    attempts, retry_at_ms, accepted_ms, event FROM dmflow_intake";

/// How far back from the newest row seen a quick look starts: rows committed later
/// than rows after them (another host's slower transaction) are still found.
const LOOK_BACK: i64 = 20_000;

/// How often the poller looks at every pending row of its partitions.
const FULL_LOOK_EVERY: Duration = Duration::from_secs(2);

/// The pending event a row holds.
pub(super) fn pending(row: &Row) -> Result<Pending, StoreError> {
    let number = |i: usize| u32::try_from(row.get::<_, i32>(i)).unwrap_or(0);
    Ok(Pending {
        key: EventKey {
            channel: row.get(2),
            event_id: row.get(3),
            at_ms: row.get(4),
        },
        progress: Progress {
            sent: number(5),
            started: number(6),
            attempts: number(7),
            retry_at_ms: row.get(8),
        },
        accepted_ms: row.get(9),
        event: stored::from_json(row.get(10))?,
    })
}

/// Polls for good.
pub(super) async fn run(
    pool: Pool,
    shared: Arc<Shared>,
    feed: mpsc::Sender<Pending>,
    every: Duration,
) {
    let mut newest = 0_i64;
    let mut last_full = Instant::now() - FULL_LOOK_EVERY;
    let mut owned_before = Vec::new();
    loop {
        let mut owned: Vec<i32> = shared.state().epochs.keys().copied().collect();
        owned.sort_unstable();
        let full = owned != owned_before || last_full.elapsed() >= FULL_LOOK_EVERY;
        if full {
            last_full = Instant::now();
        }
        let from = if full { 0 } else { newest - LOOK_BACK };
        match look(&pool, &shared, &feed, &owned, from).await {
            Ok(seen) => newest = newest.max(seen),
            Err(err) => tracing::warn!("shared queue: poll failed: {err}"),
        }
        owned_before = owned;
        if feed.is_closed() {
            return;
        }
        tokio::time::sleep(every).await;
    }
}

/// Hands out the pending rows of `owned` after `from` not handed out yet; returns
/// the newest row's number.
async fn look(
    pool: &Pool,
    shared: &Shared,
    feed: &mpsc::Sender<Pending>,
    owned: &[i32],
    from: i64,
) -> Result<i64, StoreError> {
    if owned.is_empty() {
        return Ok(from);
    }
    let room = {
        let mut state = shared.state();
        // Events finished before this poll began: no row this poll reads shows
        // them pending any more.
        state.polls += 1;
        let this_poll = state.polls;
        let state = &mut *state;
        state.done.retain(|key, poll| {
            let keep = *poll >= this_poll;
            if !keep {
                state.dispatched.remove(key);
            }
            keep
        });
        MAX_IN_FLIGHT.saturating_sub(state.dispatched.len())
    };
    if room == 0 {
        return Ok(from);
    }
    let client = client(pool).await?;
    let rows = client
        .query(
            &format!(
                "{SELECT} WHERE state = 0 AND part = ANY($1) AND seq > $2 ORDER BY seq LIMIT $3"
            ),
            &[&owned, &from, &i64::try_from(room).unwrap_or(i64::MAX)],
        )
        .await?;
    drop(client);
    let mut newest = from;
    for row in &rows {
        newest = newest.max(row.get::<_, i64>(0));
        let part: i32 = row.get(1);
        let event = pending(row)?;
        let fresh = {
            let mut state = shared.state();
            match state.epochs.get(&part).copied() {
                Some(epoch)
                    if !state.draining.contains(&part)
                        && !state.dispatched.contains_key(&event.key) =>
                {
                    state.dispatched.insert(event.key.clone(), (part, epoch));
                    true
                }
                _ => false,
            }
        };
        if fresh && feed.send(event).await.is_err() {
            break;
        }
    }
    Ok(newest)
}
