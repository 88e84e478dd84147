//! The SQLite backend's own tests: its layout moves, its journal, its WAL restarts
//! and its pruning. What every backend promises is in the conformance suite.

use std::time::Duration;

use adapter_api::{
    abi_stable::std_types::ROption, Attachment, AttachmentKind, EventKind, InboundEvent,
};
use rusqlite::{params, Connection};

use super::{
    journal::{Journal, Record},
    ops::{Op, PRUNE},
    schema::UNKNOWN_MS,
    SqliteQueue, PRUNE_SLICE,
};
use crate::store::{now_ms, stored, EventKey, Outcome, Queue};

/// An event's own time as its key holds it.
pub(super) fn at_ms(event: &InboundEvent) -> i64 {
    EventKey::new("m", event).at_ms
}

pub(super) fn event(id: &str) -> InboundEvent {
    let mut e = InboundEvent::new(EventKind::MESSAGE);
    e.event_id = id.into();
    e.timestamp_ms = 1_700_000_000_000;
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

#[tokio::test]
async fn sqlite_keeps_pending_events_across_reopen_and_drops_redeliveries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sqlite3");
    {
        let store = SqliteQueue::open(&path).unwrap();
        assert_eq!(
            store.accept("m", &[event("a"), event("b")]).await.unwrap(),
            [true, true]
        );
        assert_eq!(
            store.accept("m", &[event("b"), event("c")]).await.unwrap(),
            [false, true]
        );
        store.progress(&EventKey::new("m", &event("c")), 1).unwrap();
        store
            .finish(&EventKey::new("m", &event("a")), Outcome::Done)
            .unwrap();
    } // dropping the store commits what it was given
    let store = SqliteQueue::open(&path).unwrap();
    let pending = store.pending().await.unwrap();
    let ids: Vec<_> = pending.iter().map(|p| p.event.event_id.as_str()).collect();
    assert_eq!(ids, ["b", "c"]);
    assert_eq!(pending[1].progress.sent, 1);
    assert_eq!(
        pending[0].event,
        event("b"),
        "the event survives the round trip"
    );
    assert_eq!(
        store.accept("m", &[event("a")]).await.unwrap(),
        [false],
        "finished ids are remembered"
    );
    assert_eq!(
        store.accept("other", &[event("a")]).await.unwrap(),
        [true],
        "per channel"
    );
    assert_eq!(store.accept("m", &[event("d")]).await.unwrap(), [true]);
    let order = pending_ids(&store).await;
    assert_eq!(
        order,
        ["b", "c", "a", "d"],
        "arrival order survives a reopen"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_wal_starts_over_under_writes_that_never_pause() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sqlite3");
    // 256 frames of 4 KiB: 1 MiB.
    let store = std::sync::Arc::new(SqliteQueue::open_with_wal_limit(&path, 256).unwrap());
    let writers: Vec<_> = (0..32)
        .map(|w| {
            let store = std::sync::Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..300 {
                    let mut e = event(&format!("{w}-{i}"));
                    e.text = ROption::RSome("x".repeat(6_000).into());
                    store.accept("m", &[e]).await.unwrap();
                    store
                        .finish(
                            &EventKey::new("m", &event(&format!("{w}-{i}"))),
                            Outcome::Done,
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    // 9,600 events of 6 KB: some 120 MiB through the WAL.
    let wal = std::fs::metadata(dir.path().join("q.sqlite3-wal"))
        .unwrap()
        .len();
    // Without restarts the WAL would hold nearly all of it; with them, a few MiB.
    assert!(wal < 24 << 20, "the WAL grew to {} MiB", wal >> 20);
    assert!(
        store.diverted() > 0,
        "accepts went to the journal while the WAL started over"
    );
    assert!(
        store.pending().await.unwrap().is_empty(),
        "the journal's events were moved in and then finished"
    );
    let journal = std::fs::metadata(Journal::path_for(&path)).unwrap().len();
    assert_eq!(journal, 0, "the journal is emptied after each restart");
}

/// Sends `op` straight to the writer, as the checkpointer does.
fn send(store: &SqliteQueue, op: Op) {
    store.writer.send(op).unwrap();
}

#[tokio::test]
async fn while_the_wal_restarts_accepts_go_to_the_journal_and_the_rest_waits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sqlite3");
    let journal = Journal::path_for(&path);
    let store = std::sync::Arc::new(SqliteQueue::open(&path).unwrap());
    assert_eq!(store.accept("m", &[event("a")]).await.unwrap(), [true]);

    let (reply, diverted) = tokio::sync::oneshot::channel();
    send(&store, Op::Divert { reply });
    diverted.await.unwrap().unwrap();
    assert_eq!(
        store
            .accept("m", &[event("a"), event("b"), event("b")])
            .await
            .unwrap(),
        [false, true, false],
        "deduplicated against the database and the journal"
    );
    assert_eq!(store.accept("m", &[event("c")]).await.unwrap(), [true]);
    assert_eq!(store.diverted(), 2);
    assert!(std::fs::metadata(&journal).unwrap().len() > 0);
    store
        .finish(&EventKey::new("m", &event("b")), Outcome::Done)
        .unwrap();
    // Anything but an accept waits for the WAL. An accept sent after the question is
    // answered while diverting: by then the writer has seen the question, and kept it.
    let (reply, mut pending) = tokio::sync::oneshot::channel();
    send(&store, Op::Pending { reply });
    assert_eq!(store.accept("m", &[event("d")]).await.unwrap(), [true]);
    assert!(pending.try_recv().is_err(), "answered while diverting");

    // What the checkpointer sends once the WAL has started over.
    send(&store, Op::Resume);
    let ids: Vec<_> = pending
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|p| p.event.event_id.to_string())
        .collect();
    assert_eq!(ids, ["a", "c", "d"], "b was finished after it was moved in");
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), 0);
    assert!(store
        .contains(&EventKey::new("m", &event("b")))
        .await
        .unwrap());
    assert_eq!(store.accept("m", &[event("c")]).await.unwrap(), [false]);
}

#[tokio::test]
async fn events_left_in_the_journal_are_moved_in_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sqlite3");
    {
        let store = SqliteQueue::open(&path).unwrap();
        store.accept("m", &[event("a")]).await.unwrap();
        store
            .finish(&EventKey::new("m", &event("a")), Outcome::Done)
            .unwrap();
    }
    // What a host killed while diverting leaves behind: "a" again (already in the
    // database), then two new ones.
    let record = |id: &str| Record {
        channel: "m".into(),
        event_id: id.into(),
        at_ms: at_ms(&event(id)),
        event: stored::to_json(&event(id)).unwrap(),
        accepted_ms: 1_700_000_000_000,
    };
    // "d" as a host from before layout 4 wrote it, without the time.
    let old = Record {
        at_ms: UNKNOWN_MS,
        ..record("d")
    };
    let (mut journal, _) = Journal::open(Journal::path_for(&path)).unwrap();
    journal
        .append(&[record("a"), record("b"), record("c"), old])
        .unwrap();
    drop(journal);

    let store = SqliteQueue::open(&path).unwrap();
    let pending = store.pending().await.unwrap();
    let ids: Vec<_> = pending.iter().map(|p| p.event.event_id.as_str()).collect();
    assert_eq!(ids, ["b", "c", "d"], "a was already there, and finished");
    assert_eq!(pending[0].event, event("b"));
    assert_eq!(
        std::fs::metadata(Journal::path_for(&path)).unwrap().len(),
        0,
        "the journal is emptied once its events are in"
    );
    drop(store);
    let at = at_ms(&event("d"));
    assert_eq!(
        times(&dir)[1..],
        [
            ("b".to_owned(), at),
            ("c".to_owned(), at),
            ("d".to_owned(), at)
        ],
        "the old line's time was read from its event"
    );
}

#[tokio::test]
async fn pruning_goes_a_slice_at_a_time_the_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteQueue::open(&dir.path().join("q.sqlite3")).unwrap();
    let events: Vec<_> = (0..2 * PRUNE_SLICE + 10)
        .map(|i| event(&format!("e{i}")))
        .collect();
    store.accept("m", &events).await.unwrap();
    // All but the first ten finish, then those ten, later.
    for e in events[10..].iter().chain(&events[..10]) {
        store.finish(&EventKey::new("m", e), Outcome::Done).unwrap();
        if e.event_id.as_str() == "e9" || e.event_id == events.last().unwrap().event_id {
            // Answered after the finishes before it are committed.
            store.contains(&EventKey::new("m", e)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    store.accept("m", &[event("pending")]).await.unwrap();
    let (reply, answer) = tokio::sync::oneshot::channel();
    send(
        &store,
        Op::Prune {
            cutoff: now_ms(),
            limit: 10,
            reply,
        },
    );
    assert_eq!(answer.await.unwrap().unwrap(), 10, "one slice");
    assert!(!store
        .contains(&EventKey::new("m", &events[10]))
        .await
        .unwrap());
    assert!(!store
        .contains(&EventKey::new("m", &events[19]))
        .await
        .unwrap());
    assert!(
        store
            .contains(&EventKey::new("m", &events[20]))
            .await
            .unwrap(),
        "in the order they finished"
    );
    assert!(
        store
            .contains(&EventKey::new("m", &events[0]))
            .await
            .unwrap(),
        "the last to finish go last"
    );
    assert_eq!(
        store.prune(now_ms()).await.unwrap(),
        2 * PRUNE_SLICE,
        "the rest, over several slices"
    );
    assert!(!store
        .contains(&EventKey::new("m", &events[0]))
        .await
        .unwrap());
    assert!(store
        .contains(&EventKey::new("m", &event("pending")))
        .await
        .unwrap());
}

#[test]
fn a_prune_slice_walks_the_finished_index_without_sorting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sqlite3");
    drop(SqliteQueue::open(&path).unwrap());
    let plan: Vec<String> = Connection::open(&path)
        .unwrap()
        .prepare(&format!("EXPLAIN QUERY PLAN {PRUNE}"))
        .unwrap()
        .query_map(params![0, 500], |row| row.get(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        plan.iter().any(|step| step.contains("intake_finished")),
        "{plan:?}"
    );
    assert!(
        !plan.iter().any(|step| step.contains("TEMP B-TREE")),
        "each slice would sort every expired row: {plan:?}"
    );
}

#[tokio::test]
async fn finished_ids_are_forgotten_after_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteQueue::open(&dir.path().join("q.sqlite3")).unwrap();
    store.accept("m", &[event("a"), event("b")]).await.unwrap();
    store
        .finish(&EventKey::new("m", &event("a")), Outcome::Failed)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.prune(now_ms()).await.unwrap(), 1);
    assert!(!store
        .contains(&EventKey::new("m", &event("a")))
        .await
        .unwrap());
    assert!(
        store
            .contains(&EventKey::new("m", &event("b")))
            .await
            .unwrap(),
        "pending events are never pruned"
    );
}

#[tokio::test]
async fn an_event_is_found_by_its_id_and_its_own_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteQueue::open(&dir.path().join("q.sqlite3")).unwrap();
    let at = |ms: u64| {
        let mut e = event("a");
        e.timestamp_ms = ms;
        e
    };
    {
        assert_eq!(store.accept("m", &[at(5)]).await.unwrap(), [true]);
        assert_eq!(
            store.accept("m", &[at(5)]).await.unwrap(),
            [false],
            "a redelivery carries the same time"
        );
        assert_eq!(
            store.accept("m", &[at(6)]).await.unwrap(),
            [true],
            "the key holds the time: at another one it is another event"
        );
    }
    store
        .finish(&EventKey::new("m", &at(5)), Outcome::Done)
        .unwrap();
    let left: Vec<_> = store
        .pending()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.event.timestamp_ms)
        .collect();
    assert_eq!(left, [6], "the finish found the row by id and time");
    assert!(!store.contains(&EventKey::new("m", &at(7))).await.unwrap());
}

/// The ids of the events still pending, in arrival order.
pub(super) async fn pending_ids(store: &SqliteQueue) -> Vec<String> {
    let pending = store.pending().await.unwrap();
    pending
        .into_iter()
        .map(|p| p.event.event_id.into())
        .collect()
}

/// Each row's event id and time, in arrival order.
pub(super) fn times(dir: &tempfile::TempDir) -> Vec<(String, i64)> {
    Connection::open(dir.path().join("q.sqlite3"))
        .unwrap()
        .prepare("SELECT event_id, event_ms FROM intake ORDER BY seq")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}
