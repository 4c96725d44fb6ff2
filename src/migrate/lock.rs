//! One runner per database (guarantee G6): a session-level advisory lock, taken by *polling*
//! `pg_try_advisory_lock` rather than blocking in `pg_advisory_lock`.
//!
//! A runner blocked in `pg_advisory_lock` sits in an open transaction for as long as it waits,
//! and `CREATE INDEX CONCURRENTLY` run by the lock's holder waits for every such transaction to
//! end: the two wait for each other forever. Each poll here is a short statement of its own, so
//! the index build never waits on a waiting runner.

use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;

use crate::config::TableName;

/// How often a waiting runner asks again.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another lifeboat migrate holds the migration lock of this database (PostgreSQL backend pid {holder}) and \
         did not release it within {waited} (lock_wait); wait for it to finish, or look at it in pg_stat_activity"
    )]
    Timeout { holder: String, waited: String },
    #[error("cannot take the migration lock: {0}")]
    Postgres(#[from] sqlx::Error),
}

/// The lock's key: one per history table, so two applications with separate history tables in
/// one database do not wait for each other.
pub fn key(table: &TableName) -> i64 {
    let digest = blake3::hash(format!("lifeboat-migrate:{table}").as_bytes());
    i64::from_le_bytes(digest.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Takes the lock on `conn`'s session, polling for at most `wait`. `waiting` is called once, with
/// the holder's backend pid, when the lock is busy at the first try. The lock is released by
/// [`release`] or when the connection closes.
pub async fn acquire(
    conn: &mut PgConnection,
    table: &TableName,
    wait: Duration,
    mut waiting: impl FnMut(&str),
) -> Result<Duration, LockError> {
    let key = key(table);
    let began = Instant::now();
    let mut told = false;
    loop {
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&mut *conn).await?;
        if taken {
            return Ok(began.elapsed());
        }
        let holder = holder(conn, key).await?;
        if !told {
            waiting(&holder);
            told = true;
        }
        if began.elapsed() >= wait {
            return Err(LockError::Timeout { holder, waited: crate::config::format_duration(wait) });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

pub async fn release(conn: &mut PgConnection, table: &TableName) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_unlock($1)").bind(key(table)).execute(&mut *conn).await?;
    Ok(())
}

/// The backend pid that holds the lock, for the messages (`?` when it let go meanwhile).
async fn holder(conn: &mut PgConnection, key: i64) -> Result<String, sqlx::Error> {
    let pid: Option<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND ((classid::bigint << 32) | objid::bigint) = $1 LIMIT 1",
    )
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(pid.map_or_else(|| "?".to_owned(), |pid| pid.to_string()))
}
