//! After the 200: accepted events are processed by conversation. One conversation's
//! (channel, account, sender) events run strictly one after another, in arrival order;
//! different conversations run in parallel, at most `workers` at a time: a pool of
//! worker tasks, started as needed and then kept, takes conversations in the order
//! they became ready (no task is spawned per event). A conversation whose reply must
//! wait (a retry later, its channel down) is parked without holding a worker, its
//! later events waiting behind it. The number of events waiting is bounded: past it,
//! webhooks are refused (503) instead of memory growing. Every accepted event is in
//! the [`Queue`] until its replies are dealt with; [`delivery`] sends them.

mod delivery;

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex},
    time::Duration,
};

use adapter_api::{abi_stable::std_types::RVec, InboundEvent, OutboundMessage};
use tokio::{
    sync::{Notify, Semaphore},
    time::Instant,
};

use crate::{
    channels::Channel,
    metrics::Metrics,
    store::{now_ms, EventKey, Pending, Progress, Queue, StoreError},
};

/// What the dispatcher asks for each event: the replies to send, in order (the bot).
pub trait ReplyHandler: Send + Sync + 'static {
    /// The replies to `event`; empty when it needs none. Must give the same replies
    /// for the same event every time: after a restart, the ones already dealt with
    /// are skipped by their position.
    fn replies(&self, event: &InboundEvent) -> Vec<OutboundMessage>;
}

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

/// One accepted event and how far its replies got.
struct Job {
    channel: Arc<Channel>,
    key: EventKey,
    event: InboundEvent,
    progress: Progress,
    accepted_ms: i64,
}

/// A conversation: the hash of its (channel, account, sender). Two conversations
/// whose hashes collide (about 1 in 2^64) share one queue: their events still run
/// in arrival order, only not in parallel. Hashing instead of keeping the three
/// strings saves three allocations per event.
type Conversation = u64;

#[derive(Default)]
struct Queues {
    /// Conversations being processed, ready or parked, with the events waiting
    /// behind the current one.
    running: HashMap<Conversation, VecDeque<Job>>,
    /// Conversations waiting for a worker, with their first event. One permit of
    /// `Inner::ready` per entry.
    ready: VecDeque<(Conversation, Job)>,
    /// Conversations parked until a time.
    parked: usize,
    /// Worker tasks started.
    workers: usize,
    /// Workers waiting for a conversation.
    idle_workers: usize,
    /// Events accepted and not finished.
    pending: usize,
    /// Events being written to the queue, counted against the capacity.
    reserved: usize,
    closed: bool,
}

struct Inner {
    queues: Mutex<Queues>,
    store: Arc<dyn Queue>,
    handler: Arc<dyn ReplyHandler>,
    /// Counts the conversations in `Queues::ready`.
    ready: Semaphore,
    /// Most worker tasks.
    max_workers: usize,
    runtime: tokio::runtime::Handle,
    /// Randomly keyed, so nobody can make conversations share a queue on purpose.
    keys: RandomState,
    capacity: usize,
    /// Notified when no conversation is being processed or ready.
    idle: Notify,
    send_timeout: Duration,
    retry_for: Duration,
    resend_unknown: bool,
    /// Set when the shutdown's grace is over: no send starts after it, so that the
    /// events not begun stay in the queue untouched for the next start.
    stopped: std::sync::atomic::AtomicBool,
    /// Sends between their start mark and the record of their outcome.
    sending: std::sync::atomic::AtomicUsize,
    /// Notified when `sending` drops to 0.
    sends_done: Notify,
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
    /// How long one reply may take.
    pub send_timeout: Duration,
    /// How long a reply that failed with a retryable error is tried again, counted
    /// from when its event was accepted.
    pub retry_for: Duration,
    /// Whether a reply whose outcome is unknown is sent again.
    pub resend_unknown: bool,
}

impl Dispatcher {
    /// A dispatcher writing to `store` and answering with `handler`. Must be called
    /// within a Tokio runtime: its workers run there.
    pub fn new(
        settings: Settings,
        store: Arc<dyn Queue>,
        handler: Arc<dyn ReplyHandler>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                queues: Mutex::default(),
                store,
                handler,
                ready: Semaphore::new(0),
                max_workers: settings.workers.max(1),
                runtime: tokio::runtime::Handle::current(),
                keys: RandomState::new(),
                capacity: settings.capacity,
                idle: Notify::new(),
                send_timeout: settings.send_timeout,
                retry_for: settings.retry_for,
                resend_unknown: settings.resend_unknown,
                stopped: std::sync::atomic::AtomicBool::new(false),
                sending: std::sync::atomic::AtomicUsize::new(0),
                sends_done: Notify::new(),
                metrics,
            }),
        }
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.inner.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `events` down and queues the new ones, all or none; redeliveries are
    /// dropped. Answers once the events are durable in the queue.
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
            let accepted_ms = now_ms();
            let mut queues = this.queues();
            queues.reserved -= count;
            let fresh = fresh?;
            let mut accepted = Accepted { new: 0, duplicates: 0 };
            // A shared queue hands each event to the host that owns its conversation.
            let here = this.inner.store.dispatches_on_accept();
            for (event, fresh) in events.into_iter().zip(fresh) {
                if fresh {
                    accepted.new += 1;
                    channel.metrics.event(event.kind.name());
                    if !here {
                        continue;
                    }
                    let job = Job {
                        key: EventKey::new(&channel.name, &event),
                        channel: Arc::clone(&channel),
                        event,
                        progress: Progress::default(),
                        accepted_ms,
                    };
                    this.schedule(&mut queues, job);
                } else {
                    accepted.duplicates += 1;
                    channel.metrics.duplicates.inc();
                    tracing::debug!(channel = channel.name, event_id = %event.event_id, "redelivered event dropped");
                }
            }
            Ok(accepted)
        })
        .await
        .map_err(|_| EnqueueError::Store(StoreError::Closed("the queue task failed")))?
    }

    /// Queues an event read back from the queue after a restart, with how far its
    /// replies got.
    pub fn resume(&self, channel: &Arc<Channel>, pending: Pending) {
        let mut queues = self.queues();
        let job = Job {
            channel: Arc::clone(channel),
            key: pending.key,
            event: pending.event,
            progress: pending.progress,
            accepted_ms: pending.accepted_ms,
        };
        self.schedule(&mut queues, job);
    }

    fn schedule(&self, queues: &mut Queues, job: Job) {
        queues.pending += 1;
        self.inner.metrics.queue_depth.set(queues.pending as i64);
        let conversation = self.inner.keys.hash_one((
            job.channel.name.as_str(),
            job.event.account_id.as_str(),
            job.event.sender_id.as_str(),
        ));
        if let Some(waiting) = queues.running.get_mut(&conversation) {
            waiting.push_back(job);
            return;
        }
        queues.running.insert(conversation, VecDeque::new());
        self.make_ready(queues, conversation, job);
    }

    /// Hands a conversation to a worker; starts one if none is idle.
    fn make_ready(&self, queues: &mut Queues, conversation: Conversation, job: Job) {
        queues.ready.push_back((conversation, job));
        self.inner.ready.add_permits(1);
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
            if let Some((conversation, job)) = next {
                self.run_conversation(conversation, job).await;
            }
        }
    }

    /// Processes a conversation's events until none is waiting or one must wait.
    async fn run_conversation(&self, conversation: Conversation, mut job: Job) {
        loop {
            match delivery::deliver(&self.inner, &mut job).await {
                delivery::Step::Finished => {}
                delivery::Step::Wait(until) => {
                    self.park(conversation, job, until);
                    return;
                }
                delivery::Step::Lost => self.inner.store.release(&job.key),
                // Left as it is in the queue; the process is ending.
                delivery::Step::Stopped => return,
            }
            let mut queues = self.queues();
            queues.pending -= 1;
            self.inner.metrics.queue_depth.set(queues.pending as i64);
            let next = queues
                .running
                .get_mut(&conversation)
                .and_then(VecDeque::pop_front);
            match next {
                Some(next) => job = next,
                None => {
                    queues.running.remove(&conversation);
                    self.notify_if_idle(&queues);
                    return;
                }
            }
        }
    }

    /// Sets a conversation aside until `until`, its later events still behind `job`.
    fn park(&self, conversation: Conversation, job: Job, until: Instant) {
        {
            let mut queues = self.queues();
            queues.parked += 1;
            self.notify_if_idle(&queues);
        }
        let this = self.clone();
        self.inner.runtime.spawn(async move {
            tokio::time::sleep_until(until).await;
            let mut queues = this.queues();
            queues.parked -= 1;
            this.make_ready(&mut queues, conversation, job);
        });
    }

    fn notify_if_idle(&self, queues: &Queues) {
        if queues.running.len() == queues.parked {
            self.inner.idle.notify_waiters();
        }
    }

    /// Events accepted and not yet processed (parked ones included).
    pub fn depth(&self) -> usize {
        self.queues().pending
    }

    /// Whether every conversation left is parked (or none is left).
    fn settled(&self) -> bool {
        let queues = self.queues();
        queues.running.len() == queues.parked
    }

    /// Stops taking events and waits up to `grace` for the accepted ones to be
    /// processed. Parked events (a retry later) are not waited for: they stay in the
    /// queue for the next start. Returns whether everything was processed in time.
    ///
    /// Once it returns, no send starts any more: a send already under way finishes
    /// (or is cut off when its adapter shuts down), and the events after it stay in
    /// the queue as they are.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.queues().closed = true;
        let deadline = Instant::now() + grace;
        loop {
            let idle = self.inner.idle.notified();
            if self.settled() || tokio::time::timeout_at(deadline, idle).await.is_err() {
                self.inner
                    .stopped
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                return self.depth() == 0;
            }
        }
    }

    /// After [`Dispatcher::drain`]: waits (at most `within`) until every send that
    /// had started has its outcome written to the queue; says whether all did.
    pub async fn sends_recorded(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let done = self.inner.sends_done.notified();
            if self.inner.sending.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                return false;
            }
        }
    }
}

/// One send between its start mark and the record of its outcome, counted in
/// [`Inner::sending`] while it lives.
struct Sending<'a>(&'a Inner);

impl<'a> Sending<'a> {
    /// Counts a send about to start, unless the host is stopping (`None`). Counted
    /// before the check, so that a stopping host either sees it or it sees the stop.
    fn start(inner: &'a Inner) -> Option<Self> {
        use std::sync::atomic::Ordering::SeqCst;
        inner.sending.fetch_add(1, SeqCst);
        let sending = Self(inner);
        (!inner.stopped.load(SeqCst)).then_some(sending)
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        if self
            .0
            .sending
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.0.sends_done.notify_waiters();
        }
    }
}
