//! The partitions' leases: every host renews its own well before they lapse, takes
//! its fair share of the free or lapsed ones, and hands back its surplus once the
//! events it handed out for them are finished.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use deadpool_postgres::Pool;

use super::{writes::client, Shared};
use crate::store::StoreError;

/// Runs a lease round every second (a quarter of the lease if that is shorter),
/// for good: the heartbeat that tells the others this host lives, the renewal well
/// before the lease lapses, and the rebalancing as hosts come and go.
pub(super) async fn run(pool: Pool, shared: Arc<Shared>) {
    let every = (shared.lease / 4).min(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        if let Err(err) = round(&pool, &shared).await {
            tracing::warn!("shared queue: lease round failed: {err}");
        }
    }
}

/// Hands every partition of `host` back and leaves the group.
pub(super) async fn leave(pool: &Pool, host: &str) -> Result<(), StoreError> {
    let client = client(pool).await?;
    client
        .execute(
            "UPDATE dmflow_lease SET owner = NULL, lease_until = '-infinity' WHERE owner = $1",
            &[&host],
        )
        .await?;
    client
        .execute("DELETE FROM dmflow_hosts WHERE host = $1", &[&host])
        .await?;
    Ok(())
}

/// How long before a lease lapses (by the database's clock) this host stops starting
/// sends for it (by its own): room for the clocks' drift and a send's start.
fn margin(lease: Duration) -> Duration {
    lease / 5
}

/// One round: heartbeat, renew, then take or hand back partitions to reach the fair
/// share.
pub(super) async fn round(pool: &Pool, shared: &Shared) -> Result<(), StoreError> {
    let client = client(pool).await?;
    let lease_ms = i64::try_from(shared.lease.as_millis()).unwrap_or(i64::MAX);
    let host = shared.host.as_str();
    client
        .execute(
            "INSERT INTO dmflow_hosts (host, seen) VALUES ($1, now())
             ON CONFLICT (host) DO UPDATE SET seen = now()",
            &[&host],
        )
        .await?;
    // Hosts gone for an hour are forgotten (each run of a host is a new name).
    client
        .execute(
            "DELETE FROM dmflow_hosts WHERE seen < now() - interval '1 hour'",
            &[],
        )
        .await?;
    let alive: i64 = client
        .query_one(
            "SELECT count(*) FROM dmflow_hosts
             WHERE seen > now() - $1::bigint * interval '1 millisecond'",
            &[&lease_ms],
        )
        .await?
        .get(0);
    // Measured from before the request: the lease surely lasts until then.
    let asked = Instant::now();
    let renewed = client
        .query(
            "UPDATE dmflow_lease SET lease_until = now() + $2::bigint * interval '1 millisecond'
             WHERE owner = $1 AND lease_until > now() RETURNING part, epoch",
            &[&host, &lease_ms],
        )
        .await?;
    let alive = alive.max(1);
    let fair = (i64::from(shared.partitions) + alive - 1) / alive;
    let owned = i64::try_from(renewed.len()).unwrap_or(i64::MAX);
    let taken = if owned < fair {
        client
            .query(
                "UPDATE dmflow_lease SET owner = $1, epoch = epoch + 1,
                     lease_until = now() + $2::bigint * interval '1 millisecond'
                 WHERE part IN (SELECT part FROM dmflow_lease
                                WHERE lease_until <= now() ORDER BY part
                                LIMIT $3 FOR UPDATE SKIP LOCKED)
                 RETURNING part, epoch",
                &[&host, &lease_ms, &(fair - owned)],
            )
            .await?
    } else {
        Vec::new()
    };
    let surplus = usize::try_from(owned - fair).unwrap_or(0);
    let handed_back = {
        let mut state = shared.state();
        let before = state.epochs.len();
        state.epochs = renewed
            .iter()
            .chain(&taken)
            .map(|row| (row.get::<_, i32>(0), row.get::<_, i64>(1)))
            .collect();
        if state.epochs.len() < before + taken.len() {
            tracing::warn!(
                lost = before + taken.len() - state.epochs.len(),
                "shared queue: partitions lost (their lease lapsed)"
            );
        }
        state.valid_until = Some(asked + shared.lease.saturating_sub(margin(shared.lease)));
        state.hosts_seen = alive;
        // The surplus: the highest partitions first; those with nothing in flight go
        // back now, the others when their events are done.
        let mut owned: Vec<i32> = state.epochs.keys().copied().collect();
        owned.sort_unstable_by(|a, b| b.cmp(a));
        let busy: std::collections::HashSet<i32> =
            state.dispatched.values().map(|(part, _)| *part).collect();
        state.draining = owned.iter().take(surplus).copied().collect();
        let free: Vec<i32> = state
            .draining
            .iter()
            .filter(|part| !busy.contains(part))
            .copied()
            .collect();
        for part in &free {
            state.epochs.remove(part);
            state.draining.remove(part);
        }
        free
    };
    if !handed_back.is_empty() {
        client
            .execute(
                "UPDATE dmflow_lease SET owner = NULL, lease_until = '-infinity'
                 WHERE owner = $1 AND part = ANY($2)",
                &[&host, &handed_back],
            )
            .await?;
    }
    if !taken.is_empty() || !handed_back.is_empty() {
        tracing::info!(
            taken = taken.len(),
            handed_back = handed_back.len(),
            owned = shared.state().epochs.len(),
            hosts = alive,
            "shared queue: partitions rebalanced"
        );
    }
    Ok(())
}
