//! After the 200: events wait in bounded queues and are processed by workers. One
//! conversation (channel, account, sender) always lands on the same worker, so its
//! events are handled in order; different conversations run in parallel.

use std::{hash::BuildHasher, sync::Arc, time::Duration};

use adapter_api::InboundEvent;
use tokio::{sync::mpsc, task::JoinSet};

use crate::{bot, channels::Channel, config::BotConfig};

struct Job {
    channel: Arc<Channel>,
    event: InboundEvent,
}

/// The queues are full: the webhook should be answered 503 so Meta retries later.
#[derive(Debug, thiserror::Error)]
#[error("event queues are full")]
pub struct QueueFull;

/// The worker pool.
pub struct Dispatcher {
    queues: Vec<mpsc::Sender<Job>>,
    workers: JoinSet<()>,
    hasher: std::collections::hash_map::RandomState,
}

impl Dispatcher {
    /// Starts `workers` workers, each with a queue of `capacity` events.
    pub fn start(workers: usize, capacity: usize, bot: BotConfig, send_timeout: Duration) -> Self {
        let bot = Arc::new(bot);
        let mut set = JoinSet::new();
        let queues = (0..workers)
            .map(|_| {
                let (tx, rx) = mpsc::channel(capacity);
                set.spawn(work(rx, Arc::clone(&bot), send_timeout));
                tx
            })
            .collect();
        Self {
            queues,
            workers: set,
            hasher: Default::default(),
        }
    }

    /// Queues all of `events` or none of them.
    pub fn enqueue(
        &self,
        channel: &Arc<Channel>,
        events: Vec<InboundEvent>,
    ) -> Result<(), QueueFull> {
        let mut permits = Vec::with_capacity(events.len());
        for event in &events {
            let queue = &self.queues[self.queue_of(channel, event)];
            permits.push(queue.try_reserve().map_err(|_| QueueFull)?);
        }
        for (permit, event) in permits.into_iter().zip(events) {
            permit.send(Job {
                channel: Arc::clone(channel),
                event,
            });
        }
        Ok(())
    }

    fn queue_of(&self, channel: &Channel, event: &InboundEvent) -> usize {
        let hash = self
            .hasher
            .hash_one((channel.name.as_str(), event.conversation_key()));
        (hash % self.queues.len() as u64) as usize
    }

    /// Events waiting in the queues.
    pub fn depth(&self) -> usize {
        self.queues
            .iter()
            .map(|q| q.max_capacity() - q.capacity())
            .sum()
    }

    /// Stops taking events and waits up to `grace` for the queued ones to be processed.
    /// Returns whether everything was processed in time.
    pub async fn drain(self, grace: Duration) -> bool {
        let Self {
            queues,
            mut workers,
            ..
        } = self;
        drop(queues);
        let all = async { while workers.join_next().await.is_some() {} };
        tokio::time::timeout(grace, all).await.is_ok()
    }
}

async fn work(mut queue: mpsc::Receiver<Job>, bot: Arc<BotConfig>, send_timeout: Duration) {
    while let Some(Job { channel, event }) = queue.recv().await {
        process(&channel, &event, &bot, send_timeout).await;
    }
}

async fn process(channel: &Channel, event: &InboundEvent, bot: &BotConfig, send_timeout: Duration) {
    tracing::debug!(
        channel = channel.name,
        kind = event.kind.name(),
        event_id = %event.event_id,
        "processing event"
    );
    for reply in bot::replies(event, bot) {
        match channel.adapter.send(reply, send_timeout).await {
            Ok(receipt) => tracing::debug!(
                channel = channel.name,
                event_id = %event.event_id,
                message_id = %receipt.message_id,
                "reply sent"
            ),
            Err(err) => {
                tracing::warn!(
                    channel = channel.name,
                    event_id = %event.event_id,
                    kind = %err.kind,
                    details = %err.details_json,
                    "reply failed: {}",
                    err.message
                );
                // The rest of this event's replies would arrive out of context.
                break;
            }
        }
    }
}
