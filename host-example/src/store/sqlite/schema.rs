//! The SQLite queue's layout, how older layouts are brought to it, and how an event's
//! row is found.

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::{now_ms, stored::stored_time, StoreError};

/// The layout, version 5. Rows are appended in arrival order (`seq` is the rowid), so a
/// batch of accepts and the finishes of recent events touch a few pages at the end of
/// the table.
///
/// A row is found by its key: the event's own time, then a 64-bit digest of (channel,
/// event id) (`intake_key`). A redelivery carries the same id and time (the contract
/// asks it of channels: Messenger's are byte-identical), so it finds its row; and as
/// events arrive about in the order they happened, new keys land at the end of the
/// index, like the rows, and the rows pruned (the longest finished) are near its
/// start. An index of the id alone would put each new (random-looking) id on a random
/// leaf of an index that grows all day, and the checkpoints copying those leaves back
/// would slow the acknowledgements more the longer the host ran.
///
/// Uniqueness is the writer's: it is the only one, and it looks before it inserts
/// ([`Key::insert_new`]); two events sharing a key are told apart by the row. Finished
/// rows moved from older layouts have no time ([`UNKNOWN_MS`]: their event, which held
/// it, was dropped); until they are pruned, a lookup that misses also looks among them.
///
/// `sent`, `started`, `attempts` and `retry_at_ms` are the event's
/// [`Progress`](crate::store::Progress).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS intake (
    seq         INTEGER PRIMARY KEY,    -- arrival order: SQLite numbers new rows
    channel     TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    state       INTEGER NOT NULL,       -- 0 pending, 1 done, 2 failed
    sent        INTEGER NOT NULL DEFAULT 0,
    finished_ms INTEGER,
    event       TEXT NOT NULL,
    id_digest   INTEGER NOT NULL DEFAULT 0,  -- id_digest(channel, event_id)
    event_ms    INTEGER NOT NULL DEFAULT -1, -- the event's own time; -1: UNKNOWN_MS
    started     INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    retry_at_ms INTEGER NOT NULL DEFAULT 0,
    accepted_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS intake_key ON intake (event_ms, id_digest);
CREATE INDEX IF NOT EXISTS intake_finished ON intake (finished_ms) WHERE state != 0;
";

/// The layout version, in `PRAGMA user_version`.
pub(super) const SCHEMA_VERSION: i64 = 5;

/// The time of rows moved from layouts that did not keep it (and of journal lines
/// from hosts that did not): no event's own time is negative.
pub(crate) const UNKNOWN_MS: i64 = -1;

/// The first 8 bytes of SHA-256(channel, 0, event id): stable across releases, as the
/// layout needs.
pub(super) fn id_digest(channel: &str, event_id: &str) -> i64 {
    use sha2::Digest;
    let hash = sha2::Sha256::new()
        .chain_update(channel)
        .chain_update([0])
        .chain_update(event_id)
        .finalize();
    let mut first = [0; 8];
    first.copy_from_slice(&hash[..8]);
    i64::from_le_bytes(first)
}

/// Creates the tables, or brings an older store to version 5 with its rows, pending
/// ones included, in one transaction: version 1 (table `events`) is copied into
/// `intake`; version 2 gets the digest column, filled; the old id indexes give way to
/// `intake_key`, with the moved rows' time unknown; version 4 gets the progress
/// columns, its pending events taken as accepted now.
pub(super) fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerLayout {
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    let tx = connection.transaction()?;
    let has_intake: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'intake')",
        [],
        |row| row.get(0),
    )?;
    if has_intake && version < 3 {
        tx.execute_batch("ALTER TABLE intake ADD COLUMN id_digest INTEGER NOT NULL DEFAULT 0")?;
    }
    if has_intake && version < 4 {
        tx.execute_batch("ALTER TABLE intake ADD COLUMN event_ms INTEGER NOT NULL DEFAULT -1")?;
    }
    if has_intake && version < 5 {
        tx.execute_batch(
            "ALTER TABLE intake ADD COLUMN started INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE intake ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE intake ADD COLUMN retry_at_ms INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE intake ADD COLUMN accepted_ms INTEGER NOT NULL DEFAULT 0;",
        )?;
    }
    tx.execute_batch(SCHEMA)?;
    let old: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events')",
        [],
        |row| row.get(0),
    )?;
    if old {
        let moved = tx.execute(
            "INSERT INTO intake (seq, channel, event_id, state, sent, finished_ms, event)
             SELECT seq, channel, event_id, state, sent, finished_ms, event FROM events ORDER BY seq",
            [],
        )?;
        tx.execute_batch("DROP TABLE events")?;
        tracing::info!(
            events = moved,
            "event store moved to layout {SCHEMA_VERSION}"
        );
    }
    if version < 3 {
        fill(
            &tx,
            "SELECT seq, channel, event_id FROM intake",
            "UPDATE intake SET id_digest = ?2 WHERE seq = ?1",
            |row| {
                Ok(Some(id_digest(
                    &row.get::<_, String>(1)?,
                    &row.get::<_, String>(2)?,
                )))
            },
        )?;
    }
    if version < 4 {
        // Pending rows still hold their event, and so its time; finished ones keep
        // UNKNOWN_MS until they are pruned.
        fill(
            &tx,
            "SELECT seq, event FROM intake WHERE state = 0",
            "UPDATE intake SET event_ms = ?2 WHERE seq = ?1",
            |row| Ok(stored_time(&row.get::<_, String>(1)?)),
        )?;
        tx.execute_batch("DROP INDEX IF EXISTS intake_id; DROP INDEX IF EXISTS intake_digest")?;
    }
    if version < 5 {
        // Their retry window starts now: when they came in was not kept.
        tx.execute(
            "UPDATE intake SET accepted_ms = ?1, started = sent WHERE state = 0",
            [now_ms()],
        )?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Sets a column of the rows `select` gives (`seq` first) to what `value` makes of
/// each, through `update` (`?1` the seq, `?2` the value); a row it makes nothing of
/// keeps its default.
fn fill(
    tx: &rusqlite::Transaction<'_>,
    select: &str,
    update: &str,
    value: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<Option<i64>>,
) -> rusqlite::Result<()> {
    let values = tx
        .prepare(select)?
        .query_map([], |row| Ok((row.get::<_, i64>(0)?, value(row)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut set = tx.prepare(update)?;
    for (seq, value) in values {
        if let Some(value) = value {
            set.execute(params![seq, value])?;
        }
    }
    Ok(())
}

/// Whether rows without a time (moved from an older layout) are left.
pub(super) fn has_unknown(connection: &Connection) -> rusqlite::Result<bool> {
    connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM intake WHERE event_ms = ?1)",
        [UNKNOWN_MS],
        |row| row.get(0),
    )
}

/// What identifies an event's row: its channel, its id and its own time.
#[derive(Clone, Copy)]
pub(super) struct Key<'a> {
    pub(super) channel: &'a str,
    pub(super) event_id: &'a str,
    pub(super) at_ms: i64,
}

impl<'a> From<&'a crate::store::EventKey> for Key<'a> {
    fn from(key: &'a crate::store::EventKey) -> Self {
        Self {
            channel: &key.channel,
            event_id: &key.event_id,
            at_ms: key.at_ms,
        }
    }
}

impl Key<'_> {
    /// The event's row (its `seq`), if it has one. With `legacy`, also looks among the
    /// rows without a time.
    pub(super) fn find(
        self,
        connection: &Connection,
        legacy: bool,
    ) -> rusqlite::Result<Option<i64>> {
        self.find_by(connection, legacy, id_digest(self.channel, self.event_id))
    }

    /// [`Key::find`], with the id's digest already made.
    fn find_by(
        self,
        connection: &Connection,
        legacy: bool,
        digest: i64,
    ) -> rusqlite::Result<Option<i64>> {
        let mut find = connection.prepare_cached(
            "SELECT seq FROM intake
             WHERE event_ms = ?1 AND id_digest = ?2 AND channel = ?3 AND event_id = ?4",
        )?;
        let mut at = |at_ms: i64| {
            find.query_row(params![at_ms, digest, self.channel, self.event_id], |row| {
                row.get(0)
            })
            .optional()
        };
        match at(self.at_ms)? {
            None if legacy && self.at_ms != UNKNOWN_MS => at(UNKNOWN_MS),
            found => Ok(found),
        }
    }

    /// Inserts a pending event, accepted at `accepted_ms`, unless it has a row;
    /// whether it did.
    pub(super) fn insert_new(
        self,
        connection: &Connection,
        legacy: bool,
        event: &str,
        accepted_ms: i64,
    ) -> rusqlite::Result<bool> {
        // One digest for the look and the insert: this runs for every accepted event.
        let digest = id_digest(self.channel, self.event_id);
        if self.find_by(connection, legacy, digest)?.is_some() {
            return Ok(false);
        }
        connection
            .prepare_cached(
                "INSERT INTO intake
                     (channel, event_id, state, event, id_digest, event_ms, accepted_ms)
                 VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                self.channel,
                self.event_id,
                event,
                digest,
                self.at_ms,
                accepted_ms
            ])?;
        Ok(true)
    }
}
