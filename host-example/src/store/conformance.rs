//! What every [`Queue`] backend promises, checked the same way on each: the
//! `conformance!` macro at the end runs every check against a backend made by a
//! function of the test's choosing (a new, empty queue each time).

use std::sync::Arc;

use adapter_api::{abi_stable::std_types::ROption, EventKind, InboundEvent};

use super::{now_ms, EventKey, Outcome, Progress, Queue};

pub(super) fn event(id: &str) -> InboundEvent {
    let mut e = InboundEvent::new(EventKind::MESSAGE);
    e.event_id = id.into();
    e.timestamp_ms = 1_700_000_000_000;
    e.account_id = "page".into();
    e.sender_id = "user".into();
    e.text = ROption::RSome(format!("text of {id}").into());
    e
}

fn key(id: &str) -> EventKey {
    EventKey::new("m", &event(id))
}

async fn pending_ids(queue: &dyn Queue) -> Vec<String> {
    queue
        .pending()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.event.event_id.to_string())
        .collect()
}

/// Waits until the writes made so far are applied (a question is answered after them).
async fn settle(queue: &dyn Queue) {
    queue.contains(&key("settle")).await.unwrap();
}

pub(super) async fn an_event_is_new_once_per_channel_and_redeliveries_are_not(queue: &dyn Queue) {
    assert_eq!(
        queue.accept("m", &[event("a"), event("b")]).await.unwrap(),
        [true, true]
    );
    assert_eq!(
        queue.accept("m", &[event("b"), event("c")]).await.unwrap(),
        [false, true],
        "b is a redelivery"
    );
    assert_eq!(
        queue.accept("other", &[event("a")]).await.unwrap(),
        [true],
        "the same id on another channel is another event"
    );
    let mut later = event("a");
    later.timestamp_ms += 1;
    assert_eq!(
        queue.accept("m", &[later]).await.unwrap(),
        [true],
        "the same id at another time is another event"
    );
}

pub(super) async fn pending_events_come_back_in_arrival_order_with_their_content(
    queue: &dyn Queue,
) {
    queue.accept("m", &[event("c"), event("a")]).await.unwrap();
    queue.accept("m", &[event("b")]).await.unwrap();
    let pending = queue.pending().await.unwrap();
    let ids: Vec<_> = pending.iter().map(|p| p.event.event_id.as_str()).collect();
    assert_eq!(ids, ["c", "a", "b"]);
    assert_eq!(
        pending[1].event,
        event("a"),
        "the event survives the round trip"
    );
    assert_eq!(pending[1].key, key("a"));
    assert_eq!(pending[1].progress, Progress::default());
    let now = now_ms();
    assert!(
        (now - 60_000..=now).contains(&pending[0].accepted_ms),
        "accepted just now: {}",
        pending[0].accepted_ms
    );
}

pub(super) async fn a_finished_event_leaves_the_pending_ones_and_is_remembered(queue: &dyn Queue) {
    queue.accept("m", &[event("a"), event("b")]).await.unwrap();
    queue.finish(&key("a"), Outcome::Done).unwrap();
    queue.finish(&key("b"), Outcome::Failed).unwrap();
    assert!(pending_ids(queue).await.is_empty());
    assert!(queue.contains(&key("a")).await.unwrap());
    assert!(queue.contains(&key("b")).await.unwrap());
    assert_eq!(
        queue.accept("m", &[event("a"), event("b")]).await.unwrap(),
        [false, false],
        "finished events are still redeliveries"
    );
}

pub(super) async fn a_started_send_is_recorded_before_it_is_answered(queue: &dyn Queue) {
    queue.accept("m", &[event("a")]).await.unwrap();
    queue.start_send(&key("a"), 0).await.unwrap();
    let p = &queue.pending().await.unwrap()[0].progress;
    assert_eq!(
        (p.sent, p.started),
        (0, 1),
        "reply 0 under way: its outcome is unknown"
    );
    queue.progress(&key("a"), 1).unwrap();
    queue.start_send(&key("a"), 1).await.unwrap();
    let p = &queue.pending().await.unwrap()[0].progress;
    assert_eq!((p.sent, p.started), (1, 2));
    queue.progress(&key("a"), 2).unwrap();
    settle(queue).await;
    let p = &queue.pending().await.unwrap()[0].progress;
    assert_eq!((p.sent, p.started), (2, 2), "nothing under way");
}

pub(super) async fn a_rescheduled_reply_keeps_its_attempts_and_time_and_is_not_under_way(
    queue: &dyn Queue,
) {
    queue.accept("m", &[event("a"), event("b")]).await.unwrap();
    queue.start_send(&key("a"), 1).await.unwrap();
    let retry = Progress {
        sent: 1,
        started: 1,
        attempts: 3,
        retry_at_ms: now_ms() + 5_000,
    };
    queue.reschedule(&key("a"), retry).await.unwrap();
    let pending = queue.pending().await.unwrap();
    assert_eq!(pending[0].progress, retry);
    assert_eq!(
        pending[1].progress,
        Progress::default(),
        "only a's row changed"
    );
}

pub(super) async fn writes_about_an_unknown_event_change_nothing(queue: &dyn Queue) {
    queue.accept("m", &[event("a")]).await.unwrap();
    queue.start_send(&key("zz"), 0).await.unwrap();
    queue.progress(&key("zz"), 3).unwrap();
    queue.finish(&key("zz"), Outcome::Done).unwrap();
    settle(queue).await;
    assert!(!queue.contains(&key("zz")).await.unwrap());
    let pending = queue.pending().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].progress, Progress::default());
}

pub(super) async fn pruning_forgets_only_events_finished_before_the_cutoff(queue: &dyn Queue) {
    queue
        .accept("m", &[event("old"), event("pending")])
        .await
        .unwrap();
    queue.finish(&key("old"), Outcome::Done).unwrap();
    settle(queue).await;
    assert_eq!(
        queue.prune(now_ms() - 60_000).await.unwrap(),
        0,
        "finished just now: kept"
    );
    assert!(queue.contains(&key("old")).await.unwrap());
    assert_eq!(queue.prune(now_ms() + 1).await.unwrap(), 1);
    assert!(!queue.contains(&key("old")).await.unwrap());
    assert!(
        queue.contains(&key("pending")).await.unwrap(),
        "pending events are never pruned"
    );
    assert_eq!(
        queue.accept("m", &[event("old")]).await.unwrap(),
        [true],
        "forgotten: new again"
    );
}

pub(super) async fn concurrent_accepts_are_all_answered_and_each_id_is_new_once(
    queue: Arc<dyn Queue>,
) {
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move {
                queue
                    .accept("m", &[event(&format!("e{}", i % 150))])
                    .await
                    .unwrap()[0]
            })
        })
        .collect();
    let mut fresh = 0;
    for task in tasks {
        fresh += usize::from(task.await.unwrap());
    }
    assert_eq!(fresh, 150, "each id is new exactly once");
    assert_eq!(queue.pending().await.unwrap().len(), 150);
}

/// Runs every check against the queues `$make` makes (an expression giving a fresh
/// `Arc<dyn Queue>`, with whatever it must keep alive as the tuple's second item).
macro_rules! conformance {
    ($make:expr) => {
        use crate::store::conformance as c;

        macro_rules! check {
            ($name:ident) => {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (queue, _keep) = $make;
                    c::$name(&*queue).await;
                }
            };
        }

        check!(an_event_is_new_once_per_channel_and_redeliveries_are_not);
        check!(pending_events_come_back_in_arrival_order_with_their_content);
        check!(a_finished_event_leaves_the_pending_ones_and_is_remembered);
        check!(a_started_send_is_recorded_before_it_is_answered);
        check!(a_rescheduled_reply_keeps_its_attempts_and_time_and_is_not_under_way);
        check!(writes_about_an_unknown_event_change_nothing);
        check!(pruning_forgets_only_events_finished_before_the_cutoff);

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_accepts_are_all_answered_and_each_id_is_new_once() {
            let (queue, _keep) = $make;
            c::concurrent_accepts_are_all_answered_and_each_id_is_new_once(queue).await;
        }
    };
}

mod memory {
    use std::sync::Arc;

    use crate::store::{MemoryQueue, Queue};

    conformance!((Arc::new(MemoryQueue::new(1_000)) as Arc<dyn Queue>, ()));
}

mod sqlite {
    use std::sync::Arc;

    use crate::store::{Queue, SqliteQueue};

    fn open() -> (Arc<dyn Queue>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let queue = SqliteQueue::open(&dir.path().join("queue.sqlite3")).unwrap();
        (Arc::new(queue), dir)
    }

    conformance!(open());
}

/// The shared queue passes the same checks, each on a new database of one cluster.
mod postgres {
    use std::{sync::Arc, time::Duration};

    use crate::{
        pg_cluster::{Durability, PgCluster},
        store::{conformance as c, PostgresQueue, PostgresSettings, Queue},
    };

    async fn open(cluster: &PgCluster, name: &str) -> Arc<dyn Queue> {
        let url = cluster.database(name).unwrap();
        let settings = PostgresSettings {
            url,
            partitions: 16,
            lease: Duration::from_secs(10),
            poll: Duration::from_millis(20),
        };
        Arc::new(PostgresQueue::open(settings).await.unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_shared_queue_keeps_every_promise_of_a_queue() {
        let cluster = PgCluster::start(Durability::None).unwrap();
        macro_rules! check {
            ($($name:ident),* $(,)?) => {$(
                c::$name(&*open(&cluster, stringify!($name)).await).await;
            )*};
        }
        check!(
            an_event_is_new_once_per_channel_and_redeliveries_are_not,
            pending_events_come_back_in_arrival_order_with_their_content,
            a_finished_event_leaves_the_pending_ones_and_is_remembered,
            a_started_send_is_recorded_before_it_is_answered,
            a_rescheduled_reply_keeps_its_attempts_and_time_and_is_not_under_way,
            writes_about_an_unknown_event_change_nothing,
            pruning_forgets_only_events_finished_before_the_cutoff,
        );
        c::concurrent_accepts_are_all_answered_and_each_id_is_new_once(
            open(&cluster, "concurrent").await,
        )
        .await;
    }
}
