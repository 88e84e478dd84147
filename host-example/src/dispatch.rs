//! After the 200: accepted events are processed by conversation. One conversation's
//! (channel, account, sender) events run strictly one after another, in arrival order;
//! different conversations run in parallel, at most `workers` at a time: a pool of
//! worker tasks, started as needed and then kept, takes conversations in the order
//! they became ready (no task is spawned per event). The number of
//! events waiting is bounded: past it, webhooks are refused (503) instead of memory
//! growing. Every accepted event is in the [`Store`] until its replies are sent.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use adapter_api::{abi_stable::std_types::RVec, ErrorKind, InboundEvent};
use tokio::sync::{Notify, Semaphore};

use crate::{
    bot,
    channels::Channel,
    config::BotConfig,
    metrics::Metrics,
    store::{Outcome, Store, StoreError},
};

/// Why events were not accepted.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// Too many events are waiting: answer 503 so Meta retries later.
    #[error("event queues are full")]
    Full,
    /// The host is shutting down.
    #[error("the host is shutting down")]
    Closed,
    /// The events could not be written down.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How many events of a webhook were new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// Queued for processing.
    pub new: usize,
    /// Dropped as redeliveries.
    pub duplicates: usize,
}

struct Job {
    channel: Arc<Channel>,
    event: InboundEvent,
    /// Replies already sent before a restart.
    skip: u32,
}

/// A conversation: the hash of its (channel, account, sender). Two conversations
/// whose hashes collide (about 1 in 2^64) share one queue: their events still run
/// in arrival order, only not in parallel. Hashing instead of keeping the three
/// strings saves three allocations per event.
type Key = u64;

#[derive(Default)]
struct Queues {
    /// Conversations being processed or ready, with the events waiting behind the
    /// current one.
    running: HashMap<Key, VecDeque<Job>>,
    /// Conversations waiting for a worker, with their first event. One permit of
    /// `Inner::ready` per entry.
    ready: VecDeque<(Key, Job)>,
    /// Worker tasks started.
    workers: usize,
    /// Workers waiting for a conversation.
    idle_workers: usize,
    /// Events accepted and not finished.
    pending: usize,
    /// Events being written to the store, counted against the capacity.
    reserved: usize,
    closed: bool,
}

struct Inner {
    queues: Mutex<Queues>,
    store: Arc<Store>,
    /// Counts the conversations in `Queues::ready`.
    ready: Semaphore,
    /// Most worker tasks.
    max_workers: usize,
    runtime: tokio::runtime::Handle,
    /// Randomly keyed, so nobody can make conversations share a queue on purpose.
    keys: RandomState,
    capacity: usize,
    idle: Notify,
    bot: BotConfig,
    send_timeout: Duration,
    metrics: Arc<Metrics>,
}

/// The event dispatcher. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

/// How the dispatcher runs.
pub struct Settings {
    /// Conversations processed at once.
    pub workers: usize,
    /// Events waiting, in all, before [`EnqueueError::Full`].
    pub capacity: usize,
    /// The example bot's settings.
    pub bot: BotConfig,
    /// How long one reply may take.
    pub send_timeout: Duration,
}

impl Dispatcher {
    /// A dispatcher writing to `store`. Must be called within a Tokio runtime: its
    /// workers run there.
    pub fn new(settings: Settings, store: Arc<Store>, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::new(Inner {
                queues: Mutex::default(),
                store,
                ready: Semaphore::new(0),
                max_workers: settings.workers.max(1),
                runtime: tokio::runtime::Handle::current(),
                keys: RandomState::new(),
                capacity: settings.capacity,
                idle: Notify::new(),
                bot: settings.bot,
                send_timeout: settings.send_timeout,
                metrics,
            }),
        }
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.inner.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `events` down and queues the new ones, all or none; redeliveries are
    /// dropped. Answers once the events are committed to the store.
    pub async fn enqueue(
        &self,
        channel: &Arc<Channel>,
        events: RVec<InboundEvent>,
    ) -> Result<Accepted, EnqueueError> {
        let count = events.len();
        {
            let mut queues = self.queues();
            if queues.closed {
                return Err(EnqueueError::Closed);
            }
            if queues.pending + queues.reserved + count > self.inner.capacity {
                return Err(EnqueueError::Full);
            }
            queues.reserved += count;
        }
        // In a task of its own: if the webhook's client goes away mid-write, the
        // events are still queued once they are stored.
        let (this, channel) = (self.clone(), Arc::clone(channel));
        tokio::spawn(async move {
            let fresh = this.inner.store.accept(&channel.name, &events).await;
            let mut queues = this.queues();
            queues.reserved -= count;
            let fresh = fresh?;
            let mut accepted = Accepted { new: 0, duplicates: 0 };
            for (event, fresh) in events.into_iter().zip(fresh) {
                if fresh {
                    accepted.new += 1;
                    channel.metrics.event(event.kind.name());
                    this.schedule(
                        &mut queues,
                        Job {
                            channel: Arc::clone(&channel),
                            event,
                            skip: 0,
                        },
                    );
                } else {
                    accepted.duplicates += 1;
                    channel.metrics.duplicates.inc();
                    tracing::debug!(channel = channel.name, event_id = %event.event_id, "redelivered event dropped");
                }
            }
            Ok(accepted)
        })
        .await
        .map_err(|_| EnqueueError::Store(StoreError::new("the store task failed")))?
    }

    /// Queues events read back from the store after a restart.
    pub fn resume(&self, channel: &Arc<Channel>, event: InboundEvent, sent: u32) {
        let mut queues = self.queues();
        self.schedule(
            &mut queues,
            Job {
                channel: Arc::clone(channel),
                event,
                skip: sent,
            },
        );
    }

    fn schedule(&self, queues: &mut Queues, job: Job) {
        queues.pending += 1;
        self.inner.metrics.queue_depth.set(queues.pending as i64);
        let key = self.inner.keys.hash_one((
            job.channel.name.as_str(),
            job.event.account_id.as_str(),
            job.event.sender_id.as_str(),
        ));
        if let Some(waiting) = queues.running.get_mut(&key) {
            waiting.push_back(job);
            return;
        }
        queues.running.insert(key, VecDeque::new());
        queues.ready.push_back((key, job));
        self.inner.ready.add_permits(1);
        // Each idle worker takes one ready conversation; start one for the rest.
        if queues.ready.len() > queues.idle_workers && queues.workers < self.inner.max_workers {
            queues.workers += 1;
            let this = self.clone();
            self.inner.runtime.spawn(async move { this.work().await });
        }
    }

    /// A worker: takes ready conversations one at a time, for good.
    async fn work(self) {
        loop {
            self.queues().idle_workers += 1;
            // Never closed: the dispatcher holds the semaphore.
            if let Ok(permit) = self.inner.ready.acquire().await {
                permit.forget();
            }
            let next = {
                let mut queues = self.queues();
                queues.idle_workers -= 1;
                queues.ready.pop_front()
            };
            if let Some((key, job)) = next {
                self.run_conversation(key, job).await;
            }
        }
    }

    /// Processes a conversation's events until none is waiting.
    async fn run_conversation(&self, key: Key, mut job: Job) {
        loop {
            self.process(&job).await;
            let mut queues = self.queues();
            queues.pending -= 1;
            self.inner.metrics.queue_depth.set(queues.pending as i64);
            if queues.pending == 0 {
                self.inner.idle.notify_waiters();
            }
            let next = queues.running.get_mut(&key).and_then(VecDeque::pop_front);
            match next {
                Some(next) => job = next,
                None => {
                    queues.running.remove(&key);
                    return;
                }
            }
        }
    }

    async fn process(&self, job: &Job) {
        let (channel, event) = (&job.channel, &job.event);
        let replies = bot::replies(event, &self.inner.bot);
        if replies.len() > job.skip as usize && channel.adapter().is_none() {
            // A failed channel: the event stays pending for the next start.
            tracing::warn!(channel = channel.name, event_id = %event.event_id, "channel failed; event left queued");
            return;
        }
        let total = replies.len();
        let mut outcome = Outcome::Done;
        for (i, reply) in replies.into_iter().enumerate().skip(job.skip as usize) {
            let Some(adapter) = channel.adapter() else {
                tracing::warn!(channel = channel.name, event_id = %event.event_id, "channel failed; event left queued");
                return;
            };
            let started = Instant::now();
            let result = adapter.send(reply, self.inner.send_timeout).await;
            let metrics = &channel.metrics;
            metrics
                .send_seconds
                .observe(started.elapsed().as_secs_f64());
            let (result_name, attempts) = match &result {
                Ok(receipt) => (
                    "ok",
                    u64::from(receipt.attempts.saturating_sub(receipt.parts)),
                ),
                Err(err) => (err.kind.name(), attempts_of(err).saturating_sub(1)),
            };
            metrics.retries.inc_by(attempts);
            metrics.send(result_name);
            match result {
                Ok(receipt) => {
                    tracing::debug!(
                        channel = channel.name,
                        event_id = %event.event_id,
                        message_id = %receipt.message_id,
                        "reply sent"
                    );
                    if i + 1 < total {
                        self.note(
                            self.inner
                                .store
                                .progress(&channel.name, event, (i + 1) as u32),
                        );
                    }
                }
                Err(err) if err.kind == ErrorKind::SHUT_DOWN => {
                    // Still pending in the store: it is sent after the restart.
                    tracing::info!(channel = channel.name, event_id = %event.event_id, "reply left for after the restart");
                    return;
                }
                Err(err) => {
                    match err.kind {
                        ErrorKind::PANICKED => channel.plugin_failed(&adapter, "send panicked"),
                        ErrorKind::TIMEOUT => {
                            metrics.plugin_failures.inc();
                        }
                        _ => {}
                    }
                    tracing::warn!(
                        channel = channel.name,
                        event_id = %event.event_id,
                        kind = %err.kind,
                        details = %err.details_json,
                        "reply failed for good: {}",
                        err.message
                    );
                    // The rest of this event's replies would arrive out of context.
                    outcome = Outcome::Failed;
                    break;
                }
            }
        }
        self.note(self.inner.store.finish(&channel.name, event, outcome));
    }

    fn note(&self, result: Result<(), StoreError>) {
        if let Err(err) = result {
            tracing::error!("{err}");
        }
    }

    /// Events accepted and not yet processed.
    pub fn depth(&self) -> usize {
        self.queues().pending
    }

    /// Stops taking events and waits up to `grace` for the accepted ones to be
    /// processed. Returns whether everything was processed in time.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.queues().closed = true;
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let idle = self.inner.idle.notified();
            if self.depth() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.depth() == 0;
            }
        }
    }
}

fn attempts_of(err: &adapter_api::AdapterError) -> u64 {
    serde_json::from_str::<serde_json::Value>(&err.details_json)
        .ok()
        .and_then(|d| d["attempts"].as_u64())
        .unwrap_or(1)
}
