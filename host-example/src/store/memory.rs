//! A queue in memory: the same bookkeeping as the durable backends, kept only for the
//! life of the process (`[queue] path = ":memory:"`). At most `max` finished events
//! are remembered for deduplication; the oldest go first.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Mutex,
};

use adapter_api::InboundEvent;

use super::{now_ms, EventKey, Outcome, Pending, Progress, Queue, StoreError, StoreFuture};

/// The in-memory queue.
pub struct MemoryQueue {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Every event held, by key: its arrival number.
    seen: HashMap<EventKey, u64>,
    /// Pending events by arrival number.
    pending: BTreeMap<u64, Pending>,
    /// Finished events, oldest first: (key, finished at).
    finished: VecDeque<(EventKey, i64)>,
    next: u64,
    max: usize,
}

impl MemoryQueue {
    /// A queue remembering at most `max` finished events.
    pub fn new(max: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                max,
                ..Inner::default()
            }),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `change` to the pending event `key`, if there is one.
    fn update(&self, key: &EventKey, change: impl FnOnce(&mut Progress)) {
        let mut inner = self.inner();
        if let Some(seq) = inner.seen.get(key).copied() {
            if let Some(pending) = inner.pending.get_mut(&seq) {
                change(&mut pending.progress);
            }
        }
    }
}

impl Queue for MemoryQueue {
    fn accept<'a>(
        &'a self,
        channel: &'a str,
        events: &'a [InboundEvent],
    ) -> StoreFuture<'a, Vec<bool>> {
        let mut inner = self.inner();
        let accepted_ms = now_ms();
        let fresh = events
            .iter()
            .map(|event| {
                let key = EventKey::new(channel, event);
                if inner.seen.contains_key(&key) {
                    return false;
                }
                let seq = inner.next;
                inner.next += 1;
                inner.seen.insert(key.clone(), seq);
                inner.pending.insert(
                    seq,
                    Pending {
                        key,
                        event: event.clone(),
                        progress: Progress::default(),
                        accepted_ms,
                    },
                );
                true
            })
            .collect();
        Box::pin(std::future::ready(Ok(fresh)))
    }

    fn start_send<'a>(&'a self, key: &'a EventKey, index: u32) -> StoreFuture<'a, ()> {
        self.update(key, |p| {
            p.sent = index;
            p.started = index + 1;
        });
        Box::pin(std::future::ready(Ok(())))
    }

    fn progress(&self, key: &EventKey, sent: u32) -> Result<(), StoreError> {
        self.update(key, |p| p.sent = sent);
        Ok(())
    }

    fn reschedule<'a>(&'a self, key: &'a EventKey, progress: Progress) -> StoreFuture<'a, ()> {
        self.update(key, |p| {
            *p = Progress {
                started: progress.sent,
                ..progress
            }
        });
        Box::pin(std::future::ready(Ok(())))
    }

    fn finish(&self, key: &EventKey, _outcome: Outcome) -> Result<(), StoreError> {
        let now = now_ms();
        let mut inner = self.inner();
        let Some(seq) = inner.seen.get(key).copied() else {
            return Ok(());
        };
        if inner.pending.remove(&seq).is_some() {
            inner.finished.push_back((key.clone(), now));
        }
        while inner.finished.len() > inner.max {
            if let Some((key, _)) = inner.finished.pop_front() {
                inner.seen.remove(&key);
            }
        }
        Ok(())
    }

    fn pending(&self) -> StoreFuture<'_, Vec<Pending>> {
        let pending = self.inner().pending.values().cloned().collect();
        Box::pin(std::future::ready(Ok(pending)))
    }

    fn prune(&self, cutoff_ms: i64) -> StoreFuture<'_, usize> {
        let mut inner = self.inner();
        let mut removed = 0;
        while inner
            .finished
            .front()
            .is_some_and(|(_, at)| *at < cutoff_ms)
        {
            if let Some((key, _)) = inner.finished.pop_front() {
                inner.seen.remove(&key);
                removed += 1;
            }
        }
        Box::pin(std::future::ready(Ok(removed)))
    }

    fn contains<'a>(&'a self, key: &'a EventKey) -> StoreFuture<'a, bool> {
        let found = self.inner().seen.contains_key(key);
        Box::pin(std::future::ready(Ok(found)))
    }

    fn status(&self) -> serde_json::Value {
        serde_json::json!({ "backend": "memory" })
    }
}

#[cfg(test)]
mod tests {
    use adapter_api::EventKind;

    use super::*;

    fn event(id: &str) -> InboundEvent {
        let mut e = InboundEvent::new(EventKind::MESSAGE);
        e.event_id = id.into();
        e.timestamp_ms = 1_700_000_000_000;
        e
    }

    #[tokio::test]
    async fn memory_mode_is_bounded() {
        let store = MemoryQueue::new(3);
        for i in 0..10 {
            let id = format!("e{i}");
            assert_eq!(store.accept("m", &[event(&id)]).await.unwrap(), [true]);
            store
                .finish(&EventKey::new("m", &event(&id)), Outcome::Done)
                .unwrap();
        }
        assert!(!store
            .contains(&EventKey::new("m", &event("e0")))
            .await
            .unwrap());
        assert!(store
            .contains(&EventKey::new("m", &event("e9")))
            .await
            .unwrap());
        assert_eq!(store.accept("m", &[event("e9")]).await.unwrap(), [false]);
        assert!(store.pending().await.unwrap().is_empty());
    }
}
