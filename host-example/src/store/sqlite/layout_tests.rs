//! The SQLite backend's layouts: each older one is brought to the current one with
//! its events, pending ones included.

use rusqlite::Connection;

use super::{
    schema::{id_digest, SCHEMA_VERSION, UNKNOWN_MS},
    tests::{at_ms, event, pending_ids, times},
    SqliteQueue,
};
use crate::store::{now_ms, stored, EventKey, Outcome, Queue};

/// A store written by an older host: `layout` (SQL), then `rows` (SQL, with the
/// pending event "b" as `?1`), opened by this one. Checks what every move must
/// keep: "a" finished, "b" pending with one reply sent, both still known.
async fn moved_store(layout: &str, rows: &str) -> (tempfile::TempDir, SqliteQueue) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sqlite3");
    let pending = stored::to_json(&event("b")).unwrap();
    let old = Connection::open(&path).unwrap();
    old.execute_batch(layout).unwrap();
    old.execute(rows, [&pending]).unwrap();
    drop(old);
    let store = SqliteQueue::open(&path).unwrap();
    let waiting = store.pending().await.unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].event, event("b"));
    assert_eq!(waiting[0].progress.sent, 1, "progress is kept");
    assert_eq!(
        waiting[0].progress.started, 1,
        "no send is taken for under way"
    );
    assert!(
        now_ms() - waiting[0].accepted_ms < 60_000,
        "its retry window starts at the move"
    );
    assert_eq!(
        store
            .accept("m", &[event("a"), event("b"), event("c")])
            .await
            .unwrap(),
        [false, false, true],
        "ids seen before the move are still known"
    );
    (dir, store)
}

/// `PRAGMA user_version` and the names of the tables and indexes, after `store`.
fn layout_after(dir: &tempfile::TempDir, store: SqliteQueue) -> (i64, Vec<String>) {
    drop(store);
    let check = Connection::open(dir.path().join("q.sqlite3")).unwrap();
    let version = check
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    let names = check
        .prepare("SELECT name FROM sqlite_master ORDER BY name")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    (version, names)
}

#[tokio::test]
async fn a_version_1_store_is_moved_to_the_current_layout_with_its_events() {
    // The layout the first host release wrote.
    let (dir, store) = moved_store(
        "CREATE TABLE events (channel TEXT NOT NULL, event_id TEXT NOT NULL,
             seq INTEGER NOT NULL, state INTEGER NOT NULL, sent INTEGER NOT NULL DEFAULT 0,
             finished_ms INTEGER, event TEXT NOT NULL, PRIMARY KEY (channel, event_id))
             WITHOUT ROWID;
         CREATE INDEX events_finished ON events (finished_ms) WHERE state != 0;",
        "INSERT INTO events VALUES ('m', 'a', 1, 1, 1, 1, ''), ('m', 'b', 2, 0, 1, NULL, ?1)",
    )
    .await;
    let (version, names) = layout_after(&dir, store);
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(names, ["intake", "intake_finished", "intake_key"]);
}

#[tokio::test]
async fn a_version_2_store_gets_id_digests_and_keeps_its_events() {
    // The layout of the second host release.
    let (dir, store) = moved_store(
        "CREATE TABLE intake (seq INTEGER PRIMARY KEY, channel TEXT NOT NULL,
             event_id TEXT NOT NULL, state INTEGER NOT NULL,
             sent INTEGER NOT NULL DEFAULT 0, finished_ms INTEGER, event TEXT NOT NULL);
         CREATE UNIQUE INDEX intake_id ON intake (channel, event_id);
         CREATE INDEX intake_finished ON intake (finished_ms) WHERE state != 0;
         PRAGMA user_version = 2;",
        "INSERT INTO intake (channel, event_id, state, sent, finished_ms, event)
         VALUES ('m', 'a', 1, 1, 1, ''), ('m', 'b', 0, 1, NULL, ?1)",
    )
    .await;
    store
        .finish(&EventKey::new("m", &event("b")), Outcome::Done)
        .unwrap();
    let left = pending_ids(&store).await;
    assert_eq!(left, ["c"], "b is found by its digest to be finished");
    let (version, names) = layout_after(&dir, store);
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(
        names,
        ["intake", "intake_finished", "intake_key"],
        "the string index is gone"
    );
}

#[tokio::test]
async fn a_version_3_store_keys_its_rows_by_time_and_keeps_its_events() {
    // The layout of the third host release: the digest alone.
    let digest = |id| id_digest("m", id);
    let (dir, store) = moved_store(
        &format!(
            "CREATE TABLE intake (seq INTEGER PRIMARY KEY, channel TEXT NOT NULL,
                 event_id TEXT NOT NULL, state INTEGER NOT NULL,
                 sent INTEGER NOT NULL DEFAULT 0, finished_ms INTEGER, event TEXT NOT NULL,
                 id_digest INTEGER NOT NULL DEFAULT 0);
             CREATE INDEX intake_digest ON intake (id_digest);
             CREATE INDEX intake_finished ON intake (finished_ms) WHERE state != 0;
             PRAGMA user_version = 3;
             INSERT INTO intake (channel, event_id, state, sent, finished_ms, event, id_digest)
             VALUES ('m', 'a', 1, 1, 1, '', {});",
            digest("a")
        ),
        &format!(
            "INSERT INTO intake (channel, event_id, state, sent, event, id_digest)
             VALUES ('m', 'b', 0, 1, ?1, {})",
            digest("b")
        ),
    )
    .await;
    // "a" has no time in the store (its event was dropped when it finished) and is
    // still found, above; "b" got its time from its event.
    store
        .finish(&EventKey::new("m", &event("b")), Outcome::Done)
        .unwrap();
    assert!(store
        .contains(&EventKey::new("m", &event("b")))
        .await
        .unwrap());
    let left = pending_ids(&store).await;
    assert_eq!(left, ["c"]);
    let (version, names) = layout_after(&dir, store);
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(names, ["intake", "intake_finished", "intake_key"]);
    assert_eq!(
        times(&dir),
        [
            ("a".to_owned(), UNKNOWN_MS),
            ("b".to_owned(), at_ms(&event("b"))),
            ("c".to_owned(), at_ms(&event("c")))
        ]
    );
}

#[tokio::test]
async fn a_version_4_store_gets_the_progress_columns_and_keeps_its_events() {
    // The layout of the fourth host release: keyed by time, no send marks.
    let at = at_ms(&event("a"));
    let (dir, store) = moved_store(
        &format!(
            "CREATE TABLE intake (seq INTEGER PRIMARY KEY, channel TEXT NOT NULL,
                 event_id TEXT NOT NULL, state INTEGER NOT NULL,
                 sent INTEGER NOT NULL DEFAULT 0, finished_ms INTEGER, event TEXT NOT NULL,
                 id_digest INTEGER NOT NULL DEFAULT 0, event_ms INTEGER NOT NULL DEFAULT -1);
             CREATE INDEX intake_key ON intake (event_ms, id_digest);
             CREATE INDEX intake_finished ON intake (finished_ms) WHERE state != 0;
             PRAGMA user_version = 4;
             INSERT INTO intake (channel, event_id, state, sent, finished_ms, event, id_digest,
                                 event_ms)
             VALUES ('m', 'a', 1, 1, 1, '', {}, {at});",
            id_digest("m", "a")
        ),
        &format!(
            "INSERT INTO intake (channel, event_id, state, sent, event, id_digest, event_ms)
             VALUES ('m', 'b', 0, 1, ?1, {}, {at})",
            id_digest("m", "b")
        ),
    )
    .await;
    let key = EventKey::new("m", &event("b"));
    store.start_send(&key, 1).await.unwrap();
    let progress = store.pending().await.unwrap()[0].progress;
    assert_eq!((progress.sent, progress.started), (1, 2));
    let (version, names) = layout_after(&dir, store);
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(names, ["intake", "intake_finished", "intake_key"]);
}

#[tokio::test]
async fn two_ids_with_the_same_key_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sqlite3");
    drop(SqliteQueue::open(&path).unwrap());
    // A row for "x" filed under the key of "y", as a collision would be.
    Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO intake (channel, event_id, state, event, id_digest, event_ms)
             VALUES ('m', 'x', 0, '{}', ?1, ?2)",
            [id_digest("m", "y"), at_ms(&event("y"))],
        )
        .unwrap();
    let store = SqliteQueue::open(&path).unwrap();
    assert_eq!(
        store.accept("m", &[event("y")]).await.unwrap(),
        [true],
        "the same digest alone is not the same id"
    );
    assert_eq!(store.accept("m", &[event("y")]).await.unwrap(), [false]);
    assert_ne!(id_digest("m", "y"), id_digest("n", "y"));
    assert_ne!(id_digest("m", "y"), id_digest("my", ""));
}

#[test]
fn a_store_from_a_newer_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sqlite3");
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let err = SqliteQueue::open(&path).err().expect("refused");
    assert!(err.to_string().contains("newer host"), "{err}");
}
