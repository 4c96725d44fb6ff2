//! Measuring each statement of a migration as the runner executes it on the scratch copy: wall
//! time, rows changed, WAL written, tables rewritten (a new relfilenode, read on the runner's
//! connection, so inside the file's transaction) and the table locks the runner's backend held and
//! for how long.
//!
//! Locks are sampled from `pg_locks` by a second connection every [`SAMPLE_EVERY`] while the
//! migration runs, and once more on the runner's own connection after each statement (a statement
//! quicker than a sample still shows the locks it leaves held until commit). A lock is charged to
//! the statement running when it was first seen and counts as held until the first sample that no
//! longer sees it: in a transactional file that is the commit, so durations are exact to about one
//! sampling interval.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection as _, Row as _};
use tokio_util::sync::CancellationToken;

use crate::config::TableName;
use crate::migrate::run::StatementObserver;
use crate::migrate::source::Script;

/// How often the second connection reads `pg_locks`.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// The table locks (tables, partitioned tables, materialised views outside the system schemas)
/// a backend holds, but not the migration history's.
const LOCKS: &str = "SELECT l.mode, l.relation::regclass::text FROM pg_locks l \
     JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE l.pid = $1 AND l.granted AND l.locktype = 'relation' \
     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
     AND c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND NOT (n.nspname = $2 AND c.relname = $3)";

/// Every user table's storage file, to see which a statement replaced.
const FILES: &str = "SELECT c.oid::bigint, c.oid::regclass::text, c.relfilenode::bigint FROM pg_class c \
     JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'm') AND c.relfilenode <> 0 \
     AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'";

/// One lock the runner held: in `mode` on `relation`, charged to one statement.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HeldLock {
    /// PostgreSQL's name of the mode, e.g. `AccessExclusiveLock`.
    pub mode: String,
    pub relation: String,
    /// From first seen (or the statement's start) to the first sample without it.
    pub held_ms: u64,
}

/// What one statement did on the copy.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StatementMeasure {
    /// The file, as the migration directory names it.
    pub file: String,
    /// The statement's index in the file (from 0), as lint findings count them.
    pub statement: usize,
    pub line: u32,
    pub text: String,
    pub ms: f64,
    pub rows: u64,
    pub wal_bytes: u64,
    /// The tables whose storage the statement replaced (a rewrite, or a TRUNCATE).
    pub rewritten: Vec<String>,
    /// The locks first taken by this statement.
    pub locks: Vec<HeldLock>,
}

/// A lock as the samples saw it.
#[derive(Debug, Clone)]
struct Span {
    statement: usize,
    mode: String,
    relation: String,
    from: Instant,
    to: Instant,
    open: bool,
}

/// The locks seen so far in one run of one file, and the statement running now.
#[derive(Debug, Default)]
struct LockBook {
    current: usize,
    spans: Vec<Span>,
}

impl LockBook {
    /// One sample: the locks held `now`; an open span the sample lacks was released. New ones are
    /// charged to `statement`, held from `since`.
    fn sample(&mut self, held: &[(String, String)], statement: usize, since: Instant, now: Instant) {
        for span in self.spans.iter_mut().filter(|span| span.open) {
            if held.iter().any(|(mode, relation)| *mode == span.mode && *relation == span.relation) {
                span.to = now;
            } else {
                span.open = false;
                span.to = now;
            }
        }
        for (mode, relation) in held {
            let known = self.spans.iter().any(|span| span.open && span.mode == *mode && span.relation == *relation);
            if !known {
                self.spans.push(Span {
                    statement,
                    mode: mode.clone(),
                    relation: relation.clone(),
                    from: since,
                    to: now,
                    open: true,
                });
            }
        }
    }

    fn close_all(&mut self, now: Instant) {
        for span in self.spans.iter_mut().filter(|span| span.open) {
            span.open = false;
            span.to = now;
        }
    }
}

/// The observer the runner calls around each statement, with its lock sampler.
pub struct Measurer {
    book: Arc<Mutex<LockBook>>,
    history: TableName,
    pid: i32,
    began: Option<Instant>,
    lsn_before: Option<String>,
    files_before: BTreeMap<i64, (String, i64)>,
    /// The statements measured so far, their locks added by [`Measurer::finish`].
    done: Vec<StatementMeasure>,
    stop: CancellationToken,
    sampler: Option<tokio::task::JoinHandle<()>>,
}

impl Measurer {
    /// Starts sampling the locks of backend `pid` through a connection of its own.
    pub async fn start(options: &PgConnectOptions, pid: i32, history: &TableName) -> Result<Measurer, sqlx::Error> {
        let mut conn = PgConnection::connect_with(&options.clone().application_name("lifeboat rehearse locks")).await?;
        let book = Arc::new(Mutex::new(LockBook::default()));
        let stop = CancellationToken::new();
        let sampler = {
            let (book, stop, history) = (book.clone(), stop.clone(), history.clone());
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(SAMPLE_EVERY);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        _ = ticks.tick() => {}
                    }
                    let Ok(held) = locks(&mut conn, pid, &history).await else { continue };
                    let now = Instant::now();
                    let mut book = book.lock().expect("the lock book is never poisoned");
                    let current = book.current;
                    book.sample(&held, current, now, now);
                }
                let _ = conn.close().await;
            })
        };
        Ok(Measurer {
            book,
            history: history.clone(),
            pid,
            began: None,
            lsn_before: None,
            files_before: BTreeMap::new(),
            done: Vec::new(),
            stop,
            sampler: Some(sampler),
        })
    }

    /// Stops the sampler after the run (its commit has happened: every lock still open ends now)
    /// and returns each statement's measurements with the locks it took.
    pub async fn finish(mut self) -> Vec<StatementMeasure> {
        self.stop.cancel();
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.await;
        }
        let mut book = self.book.lock().expect("the lock book is never poisoned");
        book.close_all(Instant::now());
        let mut measures = std::mem::take(&mut self.done);
        for span in &book.spans {
            if let Some(measure) = measures.iter_mut().rev().find(|measure| measure.statement == span.statement) {
                measure.locks.push(HeldLock {
                    mode: span.mode.clone(),
                    relation: span.relation.clone(),
                    held_ms: span.to.saturating_duration_since(span.from).as_millis() as u64,
                });
            }
        }
        measures
    }
}

#[async_trait::async_trait]
impl StatementObserver for Measurer {
    async fn before(&mut self, conn: &mut PgConnection, _script: &Script, index: usize) {
        self.files_before = files(conn).await.unwrap_or_default();
        self.lsn_before =
            sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text").fetch_one(&mut *conn).await.ok();
        self.book.lock().expect("the lock book is never poisoned").current = index;
        self.began = Some(Instant::now());
    }

    async fn after(&mut self, conn: &mut PgConnection, script: &Script, index: usize, rows: Option<u64>) {
        let ended = Instant::now();
        let began = self.began.take().unwrap_or(ended);
        // A failed statement is reported by the runner's error; its transaction is aborted.
        let Some(rows) = rows else { return };
        let held = locks(conn, self.pid, &self.history).await.unwrap_or_default();
        {
            let mut book = self.book.lock().expect("the lock book is never poisoned");
            book.sample(&held, index, began, Instant::now());
            if !script.transaction {
                // Autocommit: the statement's locks went with it.
                book.close_all(Instant::now());
            }
        }
        let wal_bytes = match &self.lsn_before {
            Some(lsn) => {
                sqlx::query_scalar::<_, i64>("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::pg_lsn)::bigint")
                    .bind(lsn)
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap_or_default()
                    .max(0) as u64
            }
            None => 0,
        };
        let after = files(conn).await.unwrap_or_default();
        let rewritten = self
            .files_before
            .iter()
            .filter_map(|(oid, (name, file))| match after.get(oid) {
                Some((_, now)) if now != file => Some(name.clone()),
                _ => None,
            })
            .collect();
        let statement = &script.statements[index];
        self.done.push(StatementMeasure {
            file: script.path.display().to_string(),
            statement: index,
            line: statement.line,
            text: statement.text.trim().to_owned(),
            ms: crate::util::round_to(ended.duration_since(began).as_secs_f64() * 1000.0, 3),
            rows,
            wal_bytes,
            rewritten,
            locks: Vec::new(),
        });
    }
}

/// The table locks backend `pid` holds now.
async fn locks(conn: &mut PgConnection, pid: i32, history: &TableName) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query(LOCKS).bind(pid).bind(&history.schema).bind(&history.name).fetch_all(&mut *conn).await?;
    rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
}

/// Each user table's oid, name and storage file.
async fn files(conn: &mut PgConnection) -> Result<BTreeMap<i64, (String, i64)>, sqlx::Error> {
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(FILES).fetch_all(&mut *conn).await?;
    Ok(rows.into_iter().map(|(oid, name, file)| (oid, (name, file))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_charged_to_the_statement_that_took_it_and_held_until_a_sample_lacks_it() {
        let mut book = LockBook::default();
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let exclusive = vec![("AccessExclusiveLock".to_owned(), "orders".to_owned())];
        book.sample(&exclusive, 0, at(0), at(20));
        book.sample(&exclusive, 1, at(40), at(40));
        book.sample(&[], 1, at(60), at(60));
        book.sample(&exclusive, 2, at(70), at(80));
        book.close_all(at(100));
        let spans: Vec<(usize, u128)> =
            book.spans.iter().map(|span| (span.statement, (span.to - span.from).as_millis())).collect();
        assert_eq!(spans, vec![(0, 60), (2, 30)]);
    }
}
