//! The WAL record scanner (`lifeboat::wal::records`) on a real cluster's archived WAL: every
//! transaction the test runs is found with its xid and exact commit time, the rolled-back ones as
//! aborts, the restore point where `pg_create_restore_point` says it ends, through records that
//! cross pages and segments, full-page images (plain and compressed), `pg_switch_wal`, and a scan
//! that starts in the middle.
//!
//! `autovacuum` is off and every statement that takes an xid runs in a transaction whose xid the
//! test records, so after the test's first LSN the commits in the WAL are exactly the test's own.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use lifeboat::catalog::lsn::Lsn;
use lifeboat::catalog::wal::{SegmentSize, WalFile, WalSegment};
use lifeboat::postgres::binaries::PgBinaries;
use lifeboat::postgres::cluster::{LocalCluster, LocalClusterOptions, format_setting};
use lifeboat::wal::records::{ScanProblem, WalEvent, WalScanner};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

const SEGMENT: u64 = 16 * 1024 * 1024;
const PAGE: u64 = 8192;

fn binaries() -> PgBinaries {
    PgBinaries::find(None).expect("PostgreSQL binaries (scripts/test installs them)")
}

async fn execute(conn: &mut PgConnection, sql: &str) {
    sqlx::query(AssertSqlSafe(sql.to_owned()))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
}

async fn text(conn: &mut PgConnection, sql: &str) -> String {
    sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
}

async fn lsn(conn: &mut PgConnection, sql: &str) -> Lsn {
    text(conn, sql).await.parse().unwrap()
}

/// The server's clock, in microseconds since the Unix epoch.
async fn now_micros(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint")
        .fetch_one(&mut *conn)
        .await
        .unwrap()
}

/// The commit time `track_commit_timestamp` recorded for `xid`, in microseconds since the Unix epoch.
async fn commit_micros(conn: &mut PgConnection, xid: u32) -> i64 {
    sqlx::query_scalar("SELECT (extract(epoch FROM pg_xact_commit_timestamp($1::text::xid)) * 1000000)::bigint")
        .bind(xid.to_string())
        .fetch_one(&mut *conn)
        .await
        .unwrap()
}

/// Opens a transaction and assigns it an xid, which is returned (the low 32 bits, as in WAL).
async fn begin(conn: &mut PgConnection) -> u32 {
    execute(conn, "BEGIN").await;
    let xid: i64 = sqlx::query_scalar("SELECT txid_current()::text::bigint").fetch_one(&mut *conn).await.unwrap();
    xid as u32
}

/// Runs `statements` in one transaction and commits it; returns its xid.
async fn committed(conn: &mut PgConnection, statements: &[&str]) -> u32 {
    let xid = begin(conn).await;
    for statement in statements {
        execute(conn, statement).await;
    }
    execute(conn, "COMMIT").await;
    xid
}

/// Writes non-transactional WAL (no xid) until the insert position is 2.5 to 7 KB before the end
/// of a segment, so that a commit record of 12 KB or more written next crosses into the next one.
async fn fill_to_near_segment_end(conn: &mut PgConnection) {
    for _ in 0..200 {
        let at = lsn(conn, "SELECT pg_current_wal_insert_lsn()::text").await.as_u64();
        let left = SEGMENT - at % SEGMENT;
        if (2_500..7_000).contains(&left) {
            return;
        }
        let target = if left >= 7_000 { left - 4_500 } else { left + SEGMENT - 4_500 };
        // A logical message costs about 60 bytes besides its content, and every page 24 more.
        let content = ((target.saturating_sub(60)) * (PAGE - 24) / PAGE).saturating_sub(64).clamp(1, 4 * 1024 * 1024);
        sqlx::query("SELECT pg_logical_emit_message(false, 'filler', repeat('x', $1))::text")
            .bind(content as i32)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    }
    panic!("the WAL insert position never came near a segment end");
}

/// The archived segments in `dir`, in order, with their bytes.
fn archived_segments(dir: &Path) -> Vec<(WalSegment, Vec<u8>)> {
    let mut segments: Vec<WalSegment> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            match WalFile::parse(&name, SegmentSize::DEFAULT) {
                Ok(WalFile::Segment(segment)) => Some(segment),
                _ => None,
            }
        })
        .collect();
    segments.sort();
    for pair in segments.windows(2) {
        assert_eq!(pair[1], pair[0].next(), "the archive has a gap");
    }
    segments
        .into_iter()
        .map(|segment| (segment, std::fs::read(dir.join(segment.name(SegmentSize::DEFAULT))).unwrap()))
        .collect()
}

fn scan(segments: &[(WalSegment, Vec<u8>)]) -> Vec<WalEvent> {
    let mut scanner = WalScanner::new(SegmentSize::DEFAULT);
    let mut events = Vec::new();
    for (segment, bytes) in segments {
        let found =
            scanner.feed(*segment, bytes).unwrap_or_else(|error| panic!("real WAL must scan without error: {error}"));
        events.extend(found);
    }
    events
}

/// An event as `pg_waldump` describes it: kind, xid or restore point name, LSN, and the time
/// as it prints it (commits and aborts only).
type Described = (&'static str, String, Lsn, Option<String>);

fn describe(event: &WalEvent) -> Described {
    let time = |event: &WalEvent| Some(event.time().format("%Y-%m-%d %H:%M:%S%.6f UTC").to_string());
    match event {
        WalEvent::Commit { xid, lsn, .. } => ("COMMIT", xid.to_string(), *lsn, time(event)),
        WalEvent::Abort { xid, lsn, .. } => ("ABORT", xid.to_string(), *lsn, time(event)),
        WalEvent::RestorePoint { name, lsn, .. } => ("RESTORE_POINT", name.clone(), *lsn, None),
    }
}

/// What PostgreSQL's own reader, `pg_waldump`, finds in the same segments.
fn waldump(segments: &[(WalSegment, Vec<u8>)], archive: &Path) -> Vec<Described> {
    let name = |index: usize| segments[index].0.name(SegmentSize::DEFAULT);
    let output = std::process::Command::new(binaries().require("pg_waldump").unwrap())
        .env("TZ", "UTC")
        .arg("--path")
        .arg(archive)
        .arg(name(0))
        .arg(name(segments.len() - 1))
        .output()
        .unwrap();
    assert!(output.status.success(), "pg_waldump: {}", String::from_utf8_lossy(&output.stderr));
    let mut described = Vec::new();
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let field = |label: &str| {
            let start = line.find(label).unwrap_or_else(|| panic!("no {label} in {line}")) + label.len();
            line[start..].split(',').next().unwrap().trim().to_owned()
        };
        let rmgr = line.strip_prefix("rmgr: ").unwrap_or_default().split_whitespace().next().unwrap_or_default();
        if rmgr != "Transaction" && rmgr != "XLOG" {
            continue;
        }
        let lsn: Lsn = field("lsn: ").parse().unwrap();
        let desc = &line[line.find("desc: ").unwrap() + 6..];
        let (op, rest) = desc.split_once(' ').unwrap_or((desc, ""));
        // The time runs to the first `;`; a prepared transaction's xid comes before it.
        let xact = |rest: &str, prepared: bool| {
            let (xid, time) = if prepared { rest.split_once(": ").unwrap() } else { ("", rest) };
            let xid = if prepared { xid.to_owned() } else { field("tx: ") };
            (xid, Some(time.split(';').next().unwrap().to_owned()))
        };
        let entry = match (rmgr, op) {
            ("Transaction", "COMMIT") => ("COMMIT", xact(rest, false)),
            ("Transaction", "COMMIT_PREPARED") => ("COMMIT", xact(rest, true)),
            ("Transaction", "ABORT") => ("ABORT", xact(rest, false)),
            ("Transaction", "ABORT_PREPARED") => ("ABORT", xact(rest, true)),
            ("XLOG", "RESTORE_POINT") => ("RESTORE_POINT", (rest.to_owned(), None)),
            _ => continue,
        };
        described.push((entry.0, entry.1.0, lsn, entry.1.1));
    }
    described
}

fn micros(event: &WalEvent) -> i64 {
    event.time().timestamp_micros()
}

#[tokio::test(flavor = "multi_thread")]
async fn archived_wal_shows_every_commit_abort_and_restore_point_where_postgres_put_them() {
    let options = LocalClusterOptions::default()
        .setting("wal_level", "replica")
        .setting("archive_mode", "on")
        .setting("track_commit_timestamp", "on")
        .setting("max_prepared_transactions", "4")
        .setting("autovacuum", "off");
    let mut cluster = LocalCluster::init(&binaries(), options).await.expect("init a cluster");
    let archive = cluster.root_dir().join("archive");
    std::fs::create_dir(&archive).unwrap();
    cluster.give_to_server_user(&archive).unwrap();
    let command = format!("test ! -f {0}/%f && cp %p {0}/%f", archive.display());
    let mut conf = std::fs::OpenOptions::new().append(true).open(cluster.data_dir().join("postgresql.conf")).unwrap();
    writeln!(conf, "{}", format_setting("archive_command", &command).unwrap()).unwrap();
    drop(conf);
    cluster.start().await.expect("start the cluster");
    let mut conn = PgConnection::connect_with(&cluster.connect_options()).await.unwrap();
    let mut other = PgConnection::connect_with(&cluster.connect_options()).await.unwrap();

    let start = lsn(&mut conn, "SELECT pg_current_wal_insert_lsn()::text").await;
    // Transactions in the order they commit; the restore point comes after the first four.
    let mut commits: Vec<u32> = Vec::new();
    commits.push(
        committed(
            &mut conn,
            &[
                "CREATE TABLE fruit (id int PRIMARY KEY, name text NOT NULL)",
                "CREATE TABLE doomed (id int)",
                "CREATE TABLE doomed_in_prepared (id int)",
                "CREATE TABLE big (id int PRIMARY KEY, filler text NOT NULL)",
            ],
        )
        .await,
    );
    for name in ["apple", "pear", "quince"] {
        let statement = format!("INSERT INTO fruit SELECT coalesce(max(id), 0) + 1, '{name}' FROM fruit");
        commits.push(committed(&mut conn, &[&statement]).await);
    }

    let before_rollback = now_micros(&mut conn).await;
    let rolled_back = begin(&mut conn).await;
    execute(&mut conn, "INSERT INTO fruit VALUES (100, 'never')").await;
    execute(&mut conn, "ROLLBACK").await;
    let after_rollback = now_micros(&mut conn).await;

    let before_point = now_micros(&mut conn).await;
    let point_end = lsn(&mut conn, "SELECT pg_create_restore_point('before_drop')::text").await;
    let after_point = now_micros(&mut conn).await;
    let commits_before_point = commits.len();

    // Two-phase: the WAL names these by the prepared transaction's xid, not the session's, and
    // the DDL puts dropped relations, dropped statistics and invalidations before that xid.
    let prepared_commit = begin(&mut conn).await;
    execute(&mut conn, "INSERT INTO fruit VALUES (200, 'prepared')").await;
    execute(&mut conn, "DROP TABLE doomed_in_prepared").await;
    execute(&mut conn, "CREATE TABLE created_in_prepared (id int)").await;
    execute(&mut conn, "PREPARE TRANSACTION 'lifeboat_commit'").await;
    execute(&mut conn, "COMMIT PREPARED 'lifeboat_commit'").await;
    commits.push(prepared_commit);
    let before_prepared_rollback = now_micros(&mut conn).await;
    let prepared_rollback = begin(&mut conn).await;
    execute(&mut conn, "INSERT INTO fruit VALUES (300, 'unprepared')").await;
    execute(&mut conn, "CREATE TABLE never_created (id int)").await;
    execute(&mut conn, "PREPARE TRANSACTION 'lifeboat_abort'").await;
    execute(&mut conn, "ROLLBACK PREPARED 'lifeboat_abort'").await;
    let after_prepared_rollback = now_micros(&mut conn).await;

    // A commit that drops a relation: relations, dropped statistics and invalidations in its record.
    commits.push(committed(&mut conn, &["DROP TABLE doomed"]).await);
    execute(&mut conn, "SELECT pg_switch_wal()").await;

    // Many rows over several segments, then full-page images: plain, then pglz-compressed.
    commits.push(
        committed(&mut conn, &["INSERT INTO big SELECT g, repeat('x', 400) FROM generate_series(1, 60000) g"]).await,
    );
    execute(&mut conn, "CHECKPOINT").await;
    commits.push(committed(&mut conn, &["UPDATE big SET filler = repeat('y', 400) WHERE id % 40 = 0"]).await);
    execute(&mut conn, "CHECKPOINT").await;
    execute(&mut conn, "SET wal_compression = 'pglz'").await;
    commits.push(committed(&mut conn, &["UPDATE big SET filler = repeat('z', 400) WHERE id % 40 = 1"]).await);

    // A transaction with 3000 subtransactions: its commit record lists them, 12 KB, and is made
    // to start just before a segment boundary.
    let straddling = begin(&mut conn).await;
    execute(
        &mut conn,
        "DO $$ BEGIN FOR i IN 1..3000 LOOP BEGIN INSERT INTO fruit VALUES (1000 + i, 'sub'); \
         EXCEPTION WHEN others THEN NULL; END; END LOOP; END $$",
    )
    .await;
    fill_to_near_segment_end(&mut other).await;
    execute(&mut conn, "COMMIT").await;
    commits.push(straddling);
    let last = committed(&mut conn, &["INSERT INTO fruit VALUES (5000, 'last')"]).await;
    commits.push(last);

    // Everything into the archive.
    let final_segment = text(&mut conn, "SELECT pg_walfile_name(pg_switch_wal())").await;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let archived = text(&mut conn, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver").await;
        if archived >= final_segment {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{final_segment} was not archived: {}",
            std::fs::read_to_string(cluster.log_file()).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut commit_times = BTreeMap::new();
    for &xid in &commits {
        commit_times.insert(xid, commit_micros(&mut conn, xid).await);
    }
    conn.close().await.unwrap();
    other.close().await.unwrap();

    let segments = archived_segments(&archive);
    assert!(segments.len() >= 5, "the test should have written several segments, not {}", segments.len());
    let events = scan(&segments);

    // Every commit, abort and restore point in the archive (initdb's too) is where PostgreSQL's
    // own reader finds it, with the same xid and the same time to the microsecond.
    let described: Vec<Described> = events.iter().map(describe).collect();
    let oracle = waldump(&segments, &archive);
    assert!(oracle.len() > 100, "pg_waldump found only {} events", oracle.len());
    assert_eq!(described.len(), oracle.len());
    for (ours, theirs) in described.iter().zip(&oracle) {
        assert_eq!(ours, theirs);
    }

    // WAL order: each event's record ends before the next one starts.
    for pair in events.windows(2) {
        assert!(pair[0].lsn() < pair[0].end() && pair[0].end() <= pair[1].lsn(), "{pair:?}");
    }
    let ours: Vec<&WalEvent> = events.iter().filter(|event| event.lsn() >= start).collect();

    // Exactly the test's commits, once each, in the order they were made, at the time PostgreSQL
    // recorded for them.
    let found_commits: Vec<&WalEvent> = ours.iter().copied().filter(|e| matches!(e, WalEvent::Commit { .. })).collect();
    assert_eq!(found_commits.iter().map(|e| e.xid().unwrap()).collect::<Vec<_>>(), commits);
    for event in &found_commits {
        let xid = event.xid().unwrap();
        assert_eq!(micros(event), commit_times[&xid], "commit time of {xid}");
    }

    // Exactly the two rollbacks, at times between the clock readings around them.
    let aborts: Vec<&WalEvent> = ours.iter().copied().filter(|e| matches!(e, WalEvent::Abort { .. })).collect();
    assert_eq!(aborts.iter().map(|e| e.xid().unwrap()).collect::<Vec<_>>(), [rolled_back, prepared_rollback]);
    assert!((before_rollback..=after_rollback).contains(&micros(aborts[0])), "{:?}", aborts[0]);
    assert!((before_prepared_rollback..=after_prepared_rollback).contains(&micros(aborts[1])), "{:?}", aborts[1]);

    // The restore point: pg_create_restore_point returns the end of its record.
    let points: Vec<&WalEvent> = ours.iter().copied().filter(|e| matches!(e, WalEvent::RestorePoint { .. })).collect();
    assert_eq!(points.len(), 1, "{points:?}");
    let WalEvent::RestorePoint { name, lsn: point_lsn, end, .. } = points[0] else { unreachable!() };
    assert_eq!(name, "before_drop");
    assert_eq!(*end, point_end);
    // 24 + 2 + 72 bytes rounded up to 104, plus a page header if it crosses a page.
    let crosses_page = point_lsn.as_u64() / PAGE != (end.as_u64() - 1) / PAGE;
    assert_eq!(end.as_u64() - point_lsn.as_u64(), if crosses_page { 128 } else { 104 });
    assert!((before_point..=after_point).contains(&micros(points[0])), "{:?}", points[0]);
    assert!(found_commits[commits_before_point - 1].end() <= *point_lsn);
    assert!(found_commits[commits_before_point].lsn() >= *end);
    assert!(aborts[0].end() <= *point_lsn, "the rollback came before the restore point");

    // The 3000-subtransaction commit spans pages and crosses a segment boundary.
    let big_commit = found_commits.iter().find(|e| e.xid() == Some(straddling)).unwrap();
    let (big_start, big_end) = (big_commit.lsn().as_u64(), big_commit.end().as_u64());
    assert!(big_end - big_start > 12_000, "{big_commit:?}");
    assert_ne!(big_start / SEGMENT, (big_end - 1) / SEGMENT, "the commit record should cross a segment boundary");

    // The last transaction in the archive, as restore finds it for a time target.
    let latest = events.iter().filter(|e| e.xid().is_some()).map(micros).max().unwrap();
    assert_eq!(latest, commit_times[&last]);

    // Starting in the middle: from the second segment, and from the segment the straddling commit
    // ends in, the scan finds exactly the events whose records start there or later.
    let straddle_end = segments.iter().position(|(s, _)| s.number == (big_end - 1) / SEGMENT).unwrap();
    for from in [1, straddle_end] {
        let first = segments[from].0.start_lsn(SegmentSize::DEFAULT);
        let expected: Vec<WalEvent> = events.iter().filter(|e| e.lsn() >= first).cloned().collect();
        assert!(!expected.is_empty());
        assert_eq!(
            scan(&segments[from..]),
            expected,
            "scan from segment {}",
            segments[from].0.name(SegmentSize::DEFAULT)
        );
    }
    let from_straddle_end = scan(&segments[straddle_end..]);
    assert!(from_straddle_end.iter().all(|e| e.xid() != Some(straddling)));
    assert_eq!(from_straddle_end.iter().find(|e| e.xid().is_some()).unwrap().xid(), Some(last));

    // A damaged byte in the restore point's name is caught by the record's CRC, and the error
    // names the segment and the record.
    let index = segments.iter().position(|(s, _)| s.number == point_lsn.as_u64() / SEGMENT).unwrap();
    let (segment, bytes) = &segments[index];
    assert_eq!(point_lsn.as_u64() / SEGMENT, (end.as_u64() - 1) / SEGMENT);
    // The name's first byte: after the record header, the data header and the time, and after
    // a page header if the record crosses a page before it.
    let record_offset = point_lsn.as_u64() % SEGMENT;
    let mut name_offset = record_offset + 24 + 2 + 8;
    if name_offset >= (record_offset / PAGE + 1) * PAGE {
        name_offset += 24;
    }
    let mut damaged = bytes.clone();
    damaged[name_offset as usize] ^= 0x01;
    let error = WalScanner::new(SegmentSize::DEFAULT).feed(*segment, &damaged).unwrap_err();
    assert!(matches!(error.problem, ScanProblem::Checksum { .. }), "{error}");
    assert_eq!(error.lsn, *point_lsn);
    assert!(error.to_string().contains(&segment.name(SegmentSize::DEFAULT)), "{error}");

    let distinct: BTreeSet<u32> = commits.iter().copied().collect();
    assert_eq!(distinct.len(), commits.len());
    cluster.stop().await.unwrap();
}
