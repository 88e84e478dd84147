//! Writes about one event, each checked against the lease of its partition (fencing),
//! and pruning.

use deadpool_postgres::{Client, Pool};
use tokio_postgres::types::ToSql;

use crate::store::{EventKey, Outcome, Progress, StoreError};

/// A connection from the pool.
pub(super) async fn client(pool: &Pool) -> Result<Client, StoreError> {
    pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => StoreError::from(e),
        other => StoreError::Connect(other.to_string()),
    })
}

/// What a write is checked against.
pub(super) enum Fence {
    /// The event was handed out under this partition's lease at this epoch.
    Held { part: i32, epoch: i64 },
    /// Whatever this host owns now: the epoch of each partition (-1: not owned).
    Owned { epochs: Vec<i64> },
}

/// What a write does to the event's row.
#[derive(Debug, Clone, Copy)]
pub(super) enum Change {
    StartSend(u32),
    Progress(u32),
    Reschedule(Progress),
    Finish(Outcome),
}

impl Change {
    /// The `SET` clause (`$5` and on are the values).
    fn set(self) -> (&'static str, Vec<i64>) {
        match self {
            Self::StartSend(index) => (
                "sent = $5::bigint::int, started = $5::bigint::int + 1",
                vec![i64::from(index)],
            ),
            Self::Progress(sent) => ("sent = $5::bigint::int", vec![i64::from(sent)]),
            Self::Reschedule(p) => (
                "sent = $5::bigint::int, started = $5::bigint::int, attempts = $6::bigint::int, retry_at_ms = $7::bigint",
                vec![i64::from(p.sent), i64::from(p.attempts), p.retry_at_ms],
            ),
            Self::Finish(outcome) => (
                "state = $5::bigint::smallint, finished_ms = $6::bigint, event = ''",
                vec![
                    match outcome {
                        Outcome::Done => 1,
                        Outcome::Failed => 2,
                    },
                    crate::store::now_ms(),
                ],
            ),
        }
    }
}

/// Applies `change` to the pending event `key` if this host holds its partition's
/// lease as `fence` says: [`StoreError::Fenced`] if it does not; nothing if the
/// event is not pending (unknown, or finished).
pub(super) async fn apply(
    pool: &Pool,
    host: &str,
    key: &EventKey,
    fence: &Fence,
    change: Change,
) -> Result<(), StoreError> {
    let (set, values) = change.set();
    let (lease_check, fence_value): (&str, Box<dyn ToSql + Sync + Send>) = match fence {
        Fence::Held { part, epoch } => (
            "l.part = t.part AND t.part = ($4::bigint[])[1] AND l.epoch = ($4::bigint[])[2]",
            Box::new(vec![i64::from(*part), *epoch]),
        ),
        Fence::Owned { epochs } => (
            "l.part = t.part AND l.epoch = ($4::bigint[])[t.part + 1]",
            Box::new(epochs.clone()),
        ),
    };
    let sql = format!(
        "WITH target AS (
             SELECT seq, part FROM dmflow_intake
             WHERE channel = $1 AND event_ms = $2 AND event_id = $3 AND state = 0
         ), changed AS (
             UPDATE dmflow_intake i SET {set}
             FROM target t
             WHERE i.seq = t.seq AND EXISTS (
                 SELECT 1 FROM dmflow_lease l
                 WHERE {lease_check} AND l.owner = $host AND l.lease_until > now())
             RETURNING 1
         )
         SELECT (SELECT count(*) FROM target), (SELECT count(*) FROM changed)"
    )
    .replace("$host", &format!("${}", 5 + values.len()));
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        &key.channel,
        &key.at_ms,
        &key.event_id,
        fence_value.as_ref(),
    ];
    for value in &values {
        params.push(value);
    }
    let host = host.to_owned();
    params.push(&host);
    let client = client(pool).await?;
    let row = client.query_one(&sql, &params).await?;
    let (found, changed): (i64, i64) = (row.get(0), row.get(1));
    if found > 0 && changed == 0 {
        return Err(StoreError::Fenced);
    }
    Ok(())
}

/// Most events forgotten in one statement.
const PRUNE_SLICE: i64 = 500;

/// Forgets events finished before `cutoff_ms`, a slice at a time; how many.
pub(super) async fn prune(pool: &Pool, cutoff_ms: i64) -> Result<usize, StoreError> {
    let client = client(pool).await?;
    let mut removed = 0;
    loop {
        let slice = client
            .execute(
                "DELETE FROM dmflow_intake WHERE seq IN (
                     SELECT seq FROM dmflow_intake WHERE state <> 0 AND finished_ms < $1
                     ORDER BY finished_ms LIMIT $2 FOR UPDATE SKIP LOCKED)",
                &[&cutoff_ms, &PRUNE_SLICE],
            )
            .await?;
        removed += usize::try_from(slice).unwrap_or(usize::MAX);
        if i64::try_from(slice).unwrap_or(i64::MAX) < PRUNE_SLICE {
            return Ok(removed);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
