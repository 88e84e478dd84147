//! The shared queue: several hosts on one PostgreSQL database (`[queue] url`).
//!
//! - **Dedupe across hosts**: the intake table's unique key is the redelivery key, so
//!   a redelivery reaching any host finds the row; accepts are batched into one
//!   `INSERT … ON CONFLICT DO NOTHING` per group commit ([`accept`]), answered after
//!   the commit.
//! - **Order across hosts**: a conversation belongs to one of a fixed number of
//!   partitions (a keyed hash of channel, account and user, the same on every host).
//!   Each host leases a fair share of the partitions ([`lease`]) and processes the
//!   pending events of the partitions it owns, in arrival order, whichever host
//!   accepted them ([`poll`]): events reach the dispatcher through [`Queue::feed`].
//! - **Fencing**: each lease has an epoch; every write about an event checks that
//!   this host still holds its partition's lease at the epoch the event was handed
//!   out under, and a host stops starting sends before its lease can lapse by its
//!   own clock. A host paused past its lease records and sends nothing for the
//!   partitions it lost ([`StoreError::Fenced`]).
//! - **Failover**: a dead host's partitions are taken over when their leases lapse;
//!   the new owner resumes their pending events with the single host's rule for a
//!   send that had started (its outcome is unknown).

mod accept;
mod lease;
mod poll;
mod schema;
mod writes;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use adapter_api::InboundEvent;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::json;
use tokio::sync::mpsc;

use super::{now_ms, stored, EventKey, Outcome, Pending, Progress, Queue, StoreError, StoreFuture};

/// How the shared queue is set up.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// `postgres://USER@HOST:PORT/DB` (may hold a password: never logged).
    pub url: String,
    /// Partitions of the conversations; the same on every host of the group.
    pub partitions: u32,
    /// How long a partition's lease lasts unless renewed.
    pub lease: Duration,
    /// How often the pending events of the partitions owned here are looked for.
    pub poll: Duration,
}

/// Most events handed to this host's dispatcher and not yet finished: past it, the
/// poller waits.
const MAX_IN_FLIGHT: usize = 20_000;

/// What the host's tasks share.
struct Shared {
    /// This host's name in the group: unique per run.
    host: String,
    partitions: u32,
    salt: Vec<u8>,
    lease: Duration,
    state: Mutex<Ownership>,
}

/// The partitions this host owns and the events it handed out.
#[derive(Default)]
struct Ownership {
    /// Owned partitions and their lease epochs.
    epochs: HashMap<i32, i64>,
    /// Surplus partitions being handed back: nothing new is handed out for them.
    draining: HashSet<i32>,
    /// Until when (by this host's clock) the leases are surely still held.
    valid_until: Option<Instant>,
    /// Events handed to the dispatcher: their partition and its epoch then.
    dispatched: HashMap<EventKey, (i32, i64)>,
    /// Handed-out events whose finish is written, with the poll under way then:
    /// a poll that began before the finish's commit may still read the row as
    /// pending, so each stays handed out until the next poll begins.
    done: HashMap<EventKey, u64>,
    /// Polls begun so far.
    polls: u64,
    /// Hosts seen alive at the last lease round.
    hosts_seen: i64,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, Ownership> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The partition of a conversation: a keyed hash of (channel, account, user).
    fn partition(&self, channel: &str, event: &InboundEvent) -> i32 {
        use sha2::Digest;
        let hash = sha2::Sha256::new()
            .chain_update(&self.salt)
            .chain_update(channel)
            .chain_update([0])
            .chain_update(event.account_id.as_str())
            .chain_update([0])
            .chain_update(event.sender_id.as_str())
            .finalize();
        let mut first = [0; 8];
        first.copy_from_slice(&hash[..8]);
        let part = u64::from_le_bytes(first) % u64::from(self.partitions.max(1));
        i32::try_from(part).unwrap_or(0)
    }
}

/// The PostgreSQL queue. Its tasks stop when it is dropped.
pub struct PostgresQueue {
    pool: Pool,
    /// For the writes nobody waits for (`synchronous_commit = off`).
    lazy_pool: Pool,
    shared: Arc<Shared>,
    accepts: mpsc::Sender<accept::Request>,
    feed: Mutex<Option<mpsc::Receiver<Pending>>>,
    /// Held (shared) by each write not waited for while it runs; a read takes it
    /// whole first, so that it sees the writes made before it was asked.
    writes: Arc<tokio::sync::RwLock<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for PostgresQueue {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl PostgresQueue {
    /// Connects, creates or checks the tables, joins the group and takes this host's
    /// first share of the partitions. Must be called within a Tokio runtime.
    pub async fn open(settings: PostgresSettings) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config = settings
            .url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Connect(format!("queue.url: {e}")))?;
        // Three pools, so that no kind of work waits behind another's connections:
        // accepts (the 200 waits for them), the writes an answer waits for (send
        // started, reschedule, reads, leases), and the writes nobody waits for
        // (progress, finish), whose commits need not wait for the disk: losing one
        // to a database crash only makes a reply look under way (unknown).
        let pool = pool_of(config.clone(), 16)?;
        let accept_pool = pool_of(config.clone(), 4)?;
        let mut lazy = config;
        lazy.options("-c synchronous_commit=off");
        let lazy_pool = pool_of(lazy, 8)?;
        let mut client = writes::client(&pool).await?;
        let group = schema::prepare(&mut client, settings.partitions).await?;
        drop(client);
        let shared = Arc::new(Shared {
            host: host_name(),
            partitions: settings.partitions,
            salt: group.salt,
            lease: settings.lease,
            state: Mutex::default(),
        });
        lease::round(&pool, &shared).await?;
        let (accepts, requests) = mpsc::channel(1024);
        let (feed_tx, feed) = mpsc::channel(1024);
        let tasks = vec![
            tokio::spawn(accept::run(accept_pool, requests)),
            tokio::spawn(lease::run(pool.clone(), Arc::clone(&shared))),
            tokio::spawn(poll::run(
                pool.clone(),
                Arc::clone(&shared),
                feed_tx,
                settings.poll,
            )),
        ];
        tracing::info!(
            host = shared.host,
            partitions = settings.partitions,
            owned = shared.state().epochs.len(),
            "joined the shared queue"
        );
        Ok(Self {
            pool,
            lazy_pool,
            shared,
            accepts,
            feed: Mutex::new(Some(feed)),
            writes: Arc::default(),
            tasks,
        })
    }

    /// The partition and epoch to check a write about `key` against: the ones it
    /// was handed out under, or (an event this host did not hand out) whichever this
    /// host owns now. Fails at once when the leases may have lapsed.
    fn fence(&self, key: &EventKey) -> Result<writes::Fence, StoreError> {
        let state = self.shared.state();
        if state
            .valid_until
            .is_none_or(|until| Instant::now() >= until)
        {
            return Err(StoreError::Fenced);
        }
        Ok(match state.dispatched.get(key) {
            Some(&(part, epoch)) => {
                if state.epochs.get(&part) != Some(&epoch) {
                    return Err(StoreError::Fenced);
                }
                writes::Fence::Held { part, epoch }
            }
            None => {
                let mut epochs = vec![-1_i64; self.shared.partitions as usize];
                for (&part, &epoch) in &state.epochs {
                    if let Some(slot) = epochs.get_mut(part as usize) {
                        *slot = epoch;
                    }
                }
                writes::Fence::Owned { epochs }
            }
        })
    }

    /// A write not waited for: logged if it fails.
    fn spawn_write(&self, key: &EventKey, change: writes::Change) -> Result<(), StoreError> {
        let fence = match self.fence(key) {
            Ok(fence) => fence,
            Err(err) => {
                tracing::info!(event_id = key.event_id, "not recorded: {err}");
                if let writes::Change::Finish(_) = change {
                    self.shared.state().dispatched.remove(key);
                }
                return Ok(());
            }
        };
        let (pool, key) = (self.lazy_pool.clone(), key.clone());
        let shared = Arc::clone(&self.shared);
        // Taken now, so that a read asked after this call waits for the write.
        let running = Arc::clone(&self.writes).try_read_owned().ok();
        tokio::spawn(async move {
            let written = writes::apply(&pool, &shared.host, &key, &fence, change).await;
            match written {
                Ok(()) | Err(StoreError::Fenced) => {
                    if let writes::Change::Finish(_) = change {
                        // Not before the row says finished, and not while a poll
                        // that began before that may still read it as pending.
                        let mut state = shared.state();
                        let poll = state.polls;
                        state.done.insert(key.clone(), poll);
                    }
                }
                // Kept as handed out: the event is not handed out again by this
                // host, and another host finds its send under way (unknown).
                Err(_) => {}
            }
            if let Err(err) = written {
                tracing::info!(event_id = key.event_id, "not recorded: {err}");
            }
            drop(running);
        });
        Ok(())
    }

    /// Waits for the writes not waited for that were made before.
    async fn settle(&self) {
        drop(self.writes.write().await);
    }
}

/// A pool of at most `size` connections made with `config`.
fn pool_of(config: tokio_postgres::Config, size: usize) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .build()
        .map_err(|e| StoreError::Connect(e.to_string()))
}

/// This run's name in the group: the machine's name, the process id and a random
/// part, so that a restarted host is a new member and never mistakes an old lease
/// for its own.
fn host_name() -> String {
    let machine = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    format!("{machine}-{}-{:04x}", std::process::id(), fastrand::u16(..))
}

impl Queue for PostgresQueue {
    fn accept<'a>(
        &'a self,
        channel: &'a str,
        events: &'a [InboundEvent],
    ) -> StoreFuture<'a, Vec<bool>> {
        Box::pin(async move {
            let accepted_ms = now_ms();
            let rows = events
                .iter()
                .map(|event| {
                    Ok(accept::Row {
                        part: self.shared.partition(channel, event),
                        key: EventKey::new(channel, event),
                        accepted_ms,
                        event: stored::to_json(event)?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let (reply, answer) = tokio::sync::oneshot::channel();
            self.accepts
                .send(accept::Request { rows, reply })
                .await
                .map_err(|_| StoreError::Closed("the queue's writer stopped"))?;
            answer
                .await
                .map_err(|_| StoreError::Closed("the queue's writer stopped"))?
        })
    }

    fn start_send<'a>(&'a self, key: &'a EventKey, index: u32) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let fence = self.fence(key)?;
            writes::apply(
                &self.pool,
                &self.shared.host,
                key,
                &fence,
                writes::Change::StartSend(index),
            )
            .await
        })
    }

    fn progress(&self, key: &EventKey, sent: u32) -> Result<(), StoreError> {
        self.spawn_write(key, writes::Change::Progress(sent))
    }

    fn reschedule<'a>(&'a self, key: &'a EventKey, progress: Progress) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let fence = self.fence(key)?;
            writes::apply(
                &self.pool,
                &self.shared.host,
                key,
                &fence,
                writes::Change::Reschedule(progress),
            )
            .await
        })
    }

    fn finish(&self, key: &EventKey, outcome: Outcome) -> Result<(), StoreError> {
        self.spawn_write(key, writes::Change::Finish(outcome))
    }

    fn pending(&self) -> StoreFuture<'_, Vec<Pending>> {
        Box::pin(async move {
            self.settle().await;
            let client = writes::client(&self.pool).await?;
            let rows = client
                .query(
                    &format!("{} WHERE state = 0 ORDER BY seq", poll::SELECT),
                    &[],
                )
                .await?;
            rows.iter().map(poll::pending).collect()
        })
    }

    fn prune(&self, cutoff_ms: i64) -> StoreFuture<'_, usize> {
        Box::pin(writes::prune(&self.pool, cutoff_ms))
    }

    fn contains<'a>(&'a self, key: &'a EventKey) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            self.settle().await;
            let client = writes::client(&self.pool).await?;
            let row = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM dmflow_intake
                     WHERE channel = $1 AND event_ms = $2 AND event_id = $3)",
                    &[&key.channel, &key.at_ms, &key.event_id],
                )
                .await?;
            Ok(row.get(0))
        })
    }

    fn dispatches_on_accept(&self) -> bool {
        false
    }

    fn feed(&self) -> Option<mpsc::Receiver<Pending>> {
        self.feed.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn release(&self, key: &EventKey) {
        self.shared.state().dispatched.remove(key);
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        for task in &self.tasks {
            task.abort();
        }
        Box::pin(async move {
            self.settle().await;
            let handed_back = {
                let mut state = self.shared.state();
                state.valid_until = None;
                state.epochs.drain().count()
            };
            lease::leave(&self.pool, &self.shared.host).await?;
            tracing::info!(partitions = handed_back, "left the shared queue");
            Ok(())
        })
    }

    fn status(&self) -> serde_json::Value {
        let state = self.shared.state();
        let mut owned: Vec<_> = state.epochs.iter().map(|(p, e)| [*p as i64, *e]).collect();
        owned.sort_unstable();
        json!({
            "backend": "postgres",
            "host": self.shared.host,
            "hosts_seen": state.hosts_seen,
            "partitions": self.shared.partitions,
            "owned": owned.len(),
            "lease_epochs": owned,
            "in_flight": state.dispatched.len(),
        })
    }
}
