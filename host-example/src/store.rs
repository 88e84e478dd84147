//! Durable intake: accepted events are written down before the webhook is answered
//! and kept until their replies are sent or have failed for good, so a crash (even
//! `kill -9`) after the 200 loses nothing. The same records drop redelivered events.
//!
//! SQLite in WAL mode with `synchronous = NORMAL`: a committed event survives the
//! process dying (it is in the WAL, handed to the OS); only a power cut between two
//! checkpoints can lose the last ones. `":memory:"` keeps everything in memory.

use std::{
    collections::{HashMap, VecDeque},
    path::Path,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use adapter_api::{
    abi_stable::std_types::{ROption, RString},
    Attachment, AttachmentKind, EventFlags, EventKind, InboundEvent,
};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every reply was sent.
    Done,
    /// A reply failed for good.
    Failed,
}

/// An event waiting for its replies, as read back at start-up.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The channel it came from.
    pub channel: String,
    /// The event.
    pub event: InboundEvent,
    /// How many of its replies were already sent.
    pub sent: u32,
}

/// A store error.
#[derive(Debug, thiserror::Error)]
#[error("event store: {0}")]
pub struct StoreError(String);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self(e.to_string())
    }
}

/// The event store.
pub struct Store {
    backend: Mutex<Backend>,
    remember: Duration,
}

enum Backend {
    Sqlite(Connection),
    Memory(Memory),
}

#[derive(Default)]
struct Memory {
    /// (channel, event id) → finished at (ms), `None` while pending.
    seen: HashMap<(String, String), Option<i64>>,
    /// Finished ids, oldest first, for forgetting.
    finished: VecDeque<((String, String), i64)>,
    max: usize,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY,
    channel     TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    state       INTEGER NOT NULL,   -- 0 pending, 1 done, 2 failed
    sent        INTEGER NOT NULL DEFAULT 0,
    received_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    event       TEXT NOT NULL,
    UNIQUE (channel, event_id)
);
CREATE INDEX IF NOT EXISTS events_by_state ON events (state, finished_ms);
";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Store {
    /// Opens (or creates) the SQLite store at `path`.
    pub fn open(path: &Path, remember: Duration) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError(format!("{}: {e}", dir.display())))?;
        }
        let connection =
            Connection::open(path).map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.busy_timeout(Duration::from_secs(5))?;
        connection.execute_batch(SCHEMA)?;
        Ok(Self {
            backend: Mutex::new(Backend::Sqlite(connection)),
            remember,
        })
    }

    /// A store in memory: no durability, at most `max` finished ids remembered.
    pub fn in_memory(remember: Duration, max: usize) -> Self {
        Self {
            backend: Mutex::new(Backend::Memory(Memory {
                max,
                ..Memory::default()
            })),
            remember,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Backend> {
        self.backend.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `events` as pending, in one transaction. Returns, in order, whether each
    /// one is new (`false`: a redelivery of an event already seen).
    pub fn accept(&self, channel: &str, events: &[InboundEvent]) -> Result<Vec<bool>, StoreError> {
        let now = now_ms();
        match &mut *self.lock() {
            Backend::Sqlite(connection) => {
                let tx = connection.transaction()?;
                let mut fresh = Vec::with_capacity(events.len());
                {
                    let mut insert = tx.prepare_cached(
                        "INSERT OR IGNORE INTO events (channel, event_id, state, received_ms, event)
                         VALUES (?1, ?2, 0, ?3, ?4)",
                    )?;
                    for event in events {
                        let json = serde_json::to_string(&Stored::from(event))
                            .map_err(|e| StoreError(e.to_string()))?;
                        let inserted =
                            insert.execute(params![channel, event.event_id.as_str(), now, json])?;
                        fresh.push(inserted == 1);
                    }
                }
                tx.commit()?;
                Ok(fresh)
            }
            Backend::Memory(memory) => Ok(events
                .iter()
                .map(|event| {
                    let key = (channel.to_owned(), event.event_id.to_string());
                    memory.seen.insert(key, None).is_none()
                })
                .collect()),
        }
    }

    /// Notes that the first `sent` replies of an event went out.
    pub fn progress(&self, channel: &str, event_id: &str, sent: u32) -> Result<(), StoreError> {
        if let Backend::Sqlite(connection) = &*self.lock() {
            connection
                .prepare_cached("UPDATE events SET sent = ?3 WHERE channel = ?1 AND event_id = ?2")?
                .execute(params![channel, event_id, sent])?;
        }
        Ok(())
    }

    /// Marks an event finished; its id is remembered for deduplication.
    pub fn finish(
        &self,
        channel: &str,
        event_id: &str,
        outcome: Outcome,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        match &mut *self.lock() {
            Backend::Sqlite(connection) => {
                let state = match outcome {
                    Outcome::Done => 1,
                    Outcome::Failed => 2,
                };
                connection
                    .prepare_cached(
                        "UPDATE events SET state = ?3, finished_ms = ?4, event = ''
                         WHERE channel = ?1 AND event_id = ?2",
                    )?
                    .execute(params![channel, event_id, state, now])?;
            }
            Backend::Memory(memory) => {
                let key = (channel.to_owned(), event_id.to_owned());
                if let Some(slot) = memory.seen.get_mut(&key) {
                    *slot = Some(now);
                    memory.finished.push_back((key, now));
                }
                while memory.finished.len() > memory.max {
                    if let Some((key, _)) = memory.finished.pop_front() {
                        memory.seen.remove(&key);
                    }
                }
            }
        }
        Ok(())
    }

    /// Forgets finished ids older than the remember window. Returns how many.
    pub fn prune(&self) -> Result<usize, StoreError> {
        let cutoff =
            now_ms().saturating_sub(i64::try_from(self.remember.as_millis()).unwrap_or(i64::MAX));
        match &mut *self.lock() {
            Backend::Sqlite(connection) => Ok(connection
                .prepare_cached("DELETE FROM events WHERE state != 0 AND finished_ms < ?1")?
                .execute(params![cutoff])?),
            Backend::Memory(memory) => {
                let mut removed = 0;
                while memory.finished.front().is_some_and(|(_, at)| *at < cutoff) {
                    if let Some((key, _)) = memory.finished.pop_front() {
                        memory.seen.remove(&key);
                        removed += 1;
                    }
                }
                Ok(removed)
            }
        }
    }

    /// The events still waiting for replies, in the order they arrived.
    pub fn pending(&self) -> Result<Vec<Pending>, StoreError> {
        let Backend::Sqlite(connection) = &*self.lock() else {
            return Ok(Vec::new());
        };
        let mut query = connection
            .prepare("SELECT channel, sent, event FROM events WHERE state = 0 ORDER BY id")?;
        let rows = query.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, u32>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        let mut pending = Vec::new();
        for row in rows {
            let (channel, sent, json) = row?;
            let stored: Stored = serde_json::from_str(&json)
                .map_err(|e| StoreError(format!("a stored event is unreadable: {e}")))?;
            pending.push(Pending {
                channel,
                event: stored.into(),
                sent,
            });
        }
        Ok(pending)
    }

    /// Whether an event id is known (pending or remembered).
    pub fn contains(&self, channel: &str, event_id: &str) -> Result<bool, StoreError> {
        match &*self.lock() {
            Backend::Sqlite(connection) => Ok(connection
                .prepare_cached("SELECT 1 FROM events WHERE channel = ?1 AND event_id = ?2")?
                .query_row(params![channel, event_id], |_| Ok(()))
                .optional()?
                .is_some()),
            Backend::Memory(memory) => Ok(memory
                .seen
                .contains_key(&(channel.to_owned(), event_id.to_owned()))),
        }
    }
}

/// An [`InboundEvent`] as JSON in the store.
#[derive(Serialize, Deserialize)]
struct Stored {
    kind: u8,
    flags: u32,
    account_id: String,
    sender_id: String,
    recipient_id: String,
    timestamp_ms: u64,
    event_id: String,
    text: Option<String>,
    payload: Option<String>,
    attachments: Vec<StoredAttachment>,
    reply_token: Option<String>,
    details_json: String,
    raw_json: String,
}

#[derive(Serialize, Deserialize)]
struct StoredAttachment {
    kind: u8,
    url: Option<String>,
    type_name: String,
    raw_json: String,
}

fn to_opt(value: &ROption<RString>) -> Option<String> {
    value.as_ref().into_option().map(|s| s.to_string())
}

fn from_opt(value: Option<String>) -> ROption<RString> {
    value.map(RString::from).into()
}

impl From<&InboundEvent> for Stored {
    fn from(e: &InboundEvent) -> Self {
        Self {
            kind: e.kind.0,
            flags: e.flags.0,
            account_id: e.account_id.to_string(),
            sender_id: e.sender_id.to_string(),
            recipient_id: e.recipient_id.to_string(),
            timestamp_ms: e.timestamp_ms,
            event_id: e.event_id.to_string(),
            text: to_opt(&e.text),
            payload: to_opt(&e.payload),
            attachments: e
                .attachments
                .iter()
                .map(|a| StoredAttachment {
                    kind: a.kind.0,
                    url: to_opt(&a.url),
                    type_name: a.type_name.to_string(),
                    raw_json: a.raw_json.to_string(),
                })
                .collect(),
            reply_token: to_opt(&e.reply_token),
            details_json: e.details_json.to_string(),
            raw_json: e.raw_json.to_string(),
        }
    }
}

impl From<Stored> for InboundEvent {
    fn from(s: Stored) -> Self {
        let mut e = InboundEvent::new(EventKind(s.kind));
        e.flags = EventFlags(s.flags);
        e.account_id = s.account_id.into();
        e.sender_id = s.sender_id.into();
        e.recipient_id = s.recipient_id.into();
        e.timestamp_ms = s.timestamp_ms;
        e.event_id = s.event_id.into();
        e.text = from_opt(s.text);
        e.payload = from_opt(s.payload);
        e.attachments = s
            .attachments
            .into_iter()
            .map(|a| Attachment {
                kind: AttachmentKind(a.kind),
                url: from_opt(a.url),
                type_name: a.type_name.into(),
                raw_json: a.raw_json.into(),
            })
            .collect();
        e.reply_token = from_opt(s.reply_token);
        e.details_json = s.details_json.into();
        e.raw_json = s.raw_json.into();
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> InboundEvent {
        let mut e = InboundEvent::new(EventKind::MESSAGE);
        e.event_id = id.into();
        e.account_id = "page".into();
        e.sender_id = "user".into();
        e.text = ROption::RSome("hi".into());
        e.attachments.push(Attachment {
            kind: AttachmentKind::IMAGE,
            url: ROption::RSome("https://x/y.png".into()),
            type_name: "image".into(),
            raw_json: "{}".into(),
        });
        e
    }

    #[test]
    fn sqlite_keeps_pending_events_across_reopen_and_drops_redeliveries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sqlite3");
        {
            let store = Store::open(&path, Duration::from_secs(60)).unwrap();
            assert_eq!(
                store.accept("m", &[event("a"), event("b")]).unwrap(),
                [true, true]
            );
            assert_eq!(
                store.accept("m", &[event("b"), event("c")]).unwrap(),
                [false, true]
            );
            store.progress("m", "c", 1).unwrap();
            store.finish("m", "a", Outcome::Done).unwrap();
        }
        let store = Store::open(&path, Duration::from_secs(60)).unwrap();
        let pending = store.pending().unwrap();
        let ids: Vec<_> = pending.iter().map(|p| p.event.event_id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(pending[1].sent, 1);
        assert_eq!(
            pending[0].event,
            event("b"),
            "the event survives the round trip"
        );
        assert_eq!(
            store.accept("m", &[event("a")]).unwrap(),
            [false],
            "finished ids are remembered"
        );
        assert_eq!(
            store.accept("other", &[event("a")]).unwrap(),
            [true],
            "per channel"
        );
    }

    #[test]
    fn finished_ids_are_forgotten_after_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("q.sqlite3"), Duration::ZERO).unwrap();
        store.accept("m", &[event("a"), event("b")]).unwrap();
        store.finish("m", "a", Outcome::Failed).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.prune().unwrap(), 1);
        assert!(!store.contains("m", "a").unwrap());
        assert!(
            store.contains("m", "b").unwrap(),
            "pending events are never pruned"
        );
    }

    #[test]
    fn memory_mode_is_bounded() {
        let store = Store::in_memory(Duration::from_secs(60), 3);
        for i in 0..10 {
            let id = format!("e{i}");
            assert_eq!(store.accept("m", &[event(&id)]).unwrap(), [true]);
            store.finish("m", &id, Outcome::Done).unwrap();
        }
        assert!(!store.contains("m", "e0").unwrap());
        assert!(store.contains("m", "e9").unwrap());
        assert_eq!(store.accept("m", &[event("e9")]).unwrap(), [false]);
        assert!(store.pending().unwrap().is_empty());
    }
}
