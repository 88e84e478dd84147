//! The shared queue's tables, created by the first host, and the settings every host
//! of a group must agree on (the number of partitions), checked at start.

use deadpool_postgres::Client;

use crate::store::StoreError;

/// The layout version, in `dmflow_meta`.
const SCHEMA_VERSION: i64 = 1;

/// One row per accepted event, as in the SQLite queue, plus its partition. The
/// unique key is the redelivery key (channel, event time, event id): a redelivery
/// reaching any host of the group finds the row. Pending rows are read by partition
/// in arrival order (`dmflow_intake_pending`); finished ones are pruned by age.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dmflow_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS dmflow_intake (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    part        int NOT NULL,
    channel     text NOT NULL,
    event_id    text NOT NULL,
    event_ms    bigint NOT NULL,
    state       smallint NOT NULL DEFAULT 0,   -- 0 pending, 1 done, 2 failed
    sent        int NOT NULL DEFAULT 0,
    started     int NOT NULL DEFAULT 0,
    attempts    int NOT NULL DEFAULT 0,
    retry_at_ms bigint NOT NULL DEFAULT 0,
    accepted_ms bigint NOT NULL,
    finished_ms bigint,
    event       text NOT NULL,
    UNIQUE (channel, event_ms, event_id)
);
CREATE INDEX IF NOT EXISTS dmflow_intake_pending ON dmflow_intake (part, seq) WHERE state = 0;
CREATE INDEX IF NOT EXISTS dmflow_intake_finished ON dmflow_intake (finished_ms) WHERE state <> 0;
CREATE TABLE IF NOT EXISTS dmflow_lease (
    part        int PRIMARY KEY,
    owner       text,
    epoch       bigint NOT NULL DEFAULT 0,
    lease_until timestamptz NOT NULL DEFAULT '-infinity'
);
CREATE TABLE IF NOT EXISTS dmflow_hosts (
    host text PRIMARY KEY,
    seen timestamptz NOT NULL
);
";

/// What the group agreed on when the database was set up.
pub(super) struct Group {
    /// The key of the partition hash, random per database: nobody outside can aim
    /// conversations at one partition.
    pub(super) salt: Vec<u8>,
}

/// Creates the tables and the partitions' leases, or checks that the database's
/// partitions are `partitions`. Serialised between hosts starting at once by an
/// advisory lock.
pub(super) async fn prepare(client: &mut Client, partitions: u32) -> Result<Group, StoreError> {
    let tx = client.transaction().await?;
    // Any constant: the id of this schema's lock.
    tx.execute("SELECT pg_advisory_xact_lock(7140021)", &[])
        .await?;
    tx.batch_execute(SCHEMA).await?;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| StoreError::Connect(format!("no randomness: {e}")))?;
    tx.execute(
        "INSERT INTO dmflow_meta (key, value) VALUES
             ('version', $1), ('partitions', $2), ('salt', $3)
         ON CONFLICT (key) DO NOTHING",
        &[
            &SCHEMA_VERSION.to_string(),
            &partitions.to_string(),
            &hex::encode(salt),
        ],
    )
    .await?;
    let meta = |key: &'static str| {
        let tx = &tx;
        async move {
            let row = tx
                .query_one("SELECT value FROM dmflow_meta WHERE key = $1", &[&key])
                .await?;
            Ok::<String, StoreError>(row.get(0))
        }
    };
    let version: i64 = meta("version").await?.parse().unwrap_or(i64::MAX);
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerLayout {
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    let stored = meta("partitions").await?;
    if stored != partitions.to_string() {
        return Err(StoreError::Mismatch(format!(
            "queue.partitions is {partitions} here but {stored} in the database; every host \
             of a group must use the database's value"
        )));
    }
    let salt = hex::decode(meta("salt").await?)
        .map_err(|_| StoreError::Mismatch("dmflow_meta.salt is not hex".to_owned()))?;
    let count = i32::try_from(partitions).unwrap_or(i32::MAX);
    tx.execute(
        "INSERT INTO dmflow_lease (part) SELECT generate_series(0, $1 - 1)
         ON CONFLICT (part) DO NOTHING",
        &[&count],
    )
    .await?;
    tx.commit().await?;
    Ok(Group { salt })
}
