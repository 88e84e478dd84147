//! Accepts, batched: the accepts that arrive while one is being written go into the
//! next statement together, one `INSERT … ON CONFLICT DO NOTHING` (a transaction)
//! for all of them, each answered after its commit.

use std::collections::HashSet;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use super::writes::client;
use crate::store::{EventKey, StoreError};

/// Most rows in one statement.
const MAX_ROWS: usize = 1024;

/// An accepted event to insert.
pub(super) struct Row {
    pub(super) part: i32,
    pub(super) key: EventKey,
    pub(super) accepted_ms: i64,
    pub(super) event: String,
}

/// One accept: its rows, and where to say which were new.
pub(super) struct Request {
    pub(super) rows: Vec<Row>,
    pub(super) reply: oneshot::Sender<Result<Vec<bool>, StoreError>>,
}

/// The writer task: one statement per burst of accepts.
pub(super) async fn run(pool: Pool, mut requests: mpsc::Receiver<Request>) {
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        let mut rows = batch[0].rows.len();
        while rows < MAX_ROWS {
            match requests.try_recv() {
                Ok(request) => {
                    rows += request.rows.len();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        match insert(&pool, &batch).await {
            Ok(inserted) => answer(batch, &inserted),
            Err(err) => {
                for request in batch {
                    let _ = request.reply.send(Err(err.clone()));
                }
            }
        }
    }
}

/// Inserts every row of `batch` that is not there yet; the keys of those inserted.
async fn insert(pool: &Pool, batch: &[Request]) -> Result<HashSet<EventKey>, StoreError> {
    let rows = batch.iter().flat_map(|r| &r.rows);
    let mut parts = Vec::new();
    let mut channels = Vec::new();
    let mut ids = Vec::new();
    let mut times = Vec::new();
    let mut accepted = Vec::new();
    let mut events = Vec::new();
    for row in rows {
        parts.push(row.part);
        channels.push(row.key.channel.as_str());
        ids.push(row.key.event_id.as_str());
        times.push(row.key.at_ms);
        accepted.push(row.accepted_ms);
        events.push(row.event.as_str());
    }
    let client = client(pool).await?;
    let statement = client
        .prepare_cached(
            "INSERT INTO dmflow_intake (part, channel, event_id, event_ms, accepted_ms, event)
             SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::bigint[],
                                  $5::bigint[], $6::text[])
             ON CONFLICT (channel, event_ms, event_id) DO NOTHING
             RETURNING channel, event_ms, event_id",
        )
        .await?;
    let inserted = client
        .query(
            &statement,
            &[&parts, &channels, &ids, &times, &accepted, &events],
        )
        .await?;
    Ok(inserted
        .iter()
        .map(|row| EventKey {
            channel: row.get(0),
            at_ms: row.get(1),
            event_id: row.get(2),
        })
        .collect())
}

/// Tells each accept which of its events were new: the first of each key the
/// statement inserted.
fn answer(batch: Vec<Request>, inserted: &HashSet<EventKey>) {
    let mut told = HashSet::new();
    for request in batch {
        let fresh = request
            .rows
            .iter()
            .map(|row| inserted.contains(&row.key) && told.insert(row.key.clone()))
            .collect();
        let _ = request.reply.send(Ok(fresh));
    }
}
