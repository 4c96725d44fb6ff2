//! Changed-block discovery for incremental backups against real PostgreSQL clusters: what
//! `lifeboat::backup::changes::from_wal` reads from `pg_wal` and the archive between two
//! checkpoints' redo points (what two backups' start LSNs are), compared with what the SQL in
//! between did, and the page-LSN fallback on the same files. The block and file-creation
//! scenarios run on every major from 13 to 18 (`pg13_...`; unprefixed is the default, 15), since
//! the record layouts they read differ (`RelFileLocator` from 16, the database-creation records
//! from 15).

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use lifeboat::backup::changes::{
    ChangedBlocks, FileChanges, IncompleteWal, RelationFile, SegmentOrigin, WalSource, changed_by_page_lsn, from_wal,
    parse_relation_path,
};
use lifeboat::catalog::lsn::{Lsn, Timeline};
use lifeboat::catalog::wal::{SegmentSize, WalSegment};
use sqlx::PgConnection;
use support::archiving::{Options, Setup, archive_current_segment, execute, layout, scalar};

/// RELSEG_SIZE of a default build: 1 GiB of 8 KiB blocks.
const BLOCKS_PER_SEGMENT: u32 = 131_072;

/// A checkpoint's redo point: where a backup started right after it would start.
async fn checkpoint(conn: &mut PgConnection) -> Lsn {
    execute(conn, "CHECKPOINT").await;
    scalar(conn, "SELECT redo_lsn::text FROM pg_control_checkpoint()").await.parse().unwrap()
}

async fn relation_file(conn: &mut PgConnection, relation: &str) -> RelationFile {
    let path = scalar(conn, &format!("SELECT pg_relation_filepath('{relation}')")).await;
    parse_relation_path(&path).unwrap_or_else(|| panic!("{path} is a relation file"))
}

async fn changes_between(setup: &Setup, from: Lsn, to: Lsn) -> Result<ChangedBlocks, IncompleteWal> {
    let repository = setup.repository().await;
    let layout = layout();
    let pg_wal = setup.cluster.data_dir().join("pg_wal");
    let source = WalSource {
        pg_wal: &pg_wal,
        repository: &repository,
        layout: &layout,
        timeline: Timeline::FIRST,
        segment_size: SegmentSize::DEFAULT,
    };
    from_wal(&source, from, to).await
}

fn blocks_of(changes: &ChangedBlocks, file: &RelationFile) -> (BTreeSet<u32>, Option<u32>) {
    match changes.for_file(file, BLOCKS_PER_SEGMENT) {
        FileChanges::Blocks { blocks, from } => (blocks.into_iter().collect(), from),
        FileChanges::Whole => panic!("{file:?} is reported whole"),
    }
}

/// A table of 2000 rows at fillfactor 50 (so updates stay on their page), frozen and hinted so
/// that reading it later writes no WAL, with autovacuum off so nothing else touches it.
async fn frozen_table(conn: &mut PgConnection, name: &str) {
    execute(
        conn,
        &format!("CREATE TABLE {name} (id int PRIMARY KEY, pad text) WITH (fillfactor = 50, autovacuum_enabled = off)"),
    )
    .await;
    execute(conn, &format!("INSERT INTO {name} SELECT i, repeat('x', 200) FROM generate_series(1, 2000) i")).await;
    execute(conn, &format!("VACUUM (FREEZE, ANALYZE) {name}")).await;
}

/// Updates one row in each of `blocks` (by ctid); the number of blocks the table has.
async fn update_rows_in_blocks(conn: &mut PgConnection, table: &str, blocks: &[u32]) -> u32 {
    let pages: u32 = scalar(conn, &format!("SELECT (pg_relation_size('{table}') / 8192)::text")).await.parse().unwrap();
    for block in blocks {
        assert!(*block < pages, "{table} has {pages} blocks");
        let id =
            scalar(conn, &format!("SELECT min(id)::text FROM {table} WHERE (ctid::text::point)[0] = {block}")).await;
        execute(conn, &format!("UPDATE {table} SET pad = repeat('y', 200) WHERE id = {id}")).await;
    }
    pages
}

/// One test per major for a scenario taking the major.
macro_rules! per_major {
    ($scenario:ident: $($name:ident => $major:expr),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                $scenario($major).await;
            }
        )+
    };
}

per_major!(updated_heap_blocks:
    updated_heap_blocks_are_found_in_the_wal_and_by_page_lsn => 15,
    pg13_updated_heap_blocks_are_found_in_the_wal_and_by_page_lsn => 13,
    pg14_updated_heap_blocks_are_found_in_the_wal_and_by_page_lsn => 14,
    pg16_updated_heap_blocks_are_found_in_the_wal_and_by_page_lsn => 16,
    pg17_updated_heap_blocks_are_found_in_the_wal_and_by_page_lsn => 17,
    pg18_updated_heap_blocks_are_found_in_the_wal_and_by_page_lsn => 18,
);

per_major!(created_files:
    created_files_are_whole_and_a_vacuum_truncation_sets_from => 15,
    pg13_created_files_are_whole_and_a_vacuum_truncation_sets_from => 13,
    pg14_created_files_are_whole_and_a_vacuum_truncation_sets_from => 14,
    pg16_created_files_are_whole_and_a_vacuum_truncation_sets_from => 16,
    pg17_created_files_are_whole_and_a_vacuum_truncation_sets_from => 17,
    pg18_created_files_are_whole_and_a_vacuum_truncation_sets_from => 18,
);

/// A cluster of `major` archiving into the test's repository.
async fn setup(major: u32) -> Setup {
    Setup::with(Options::restorable().postgres(major)).await
}

async fn updated_heap_blocks(major: u32) {
    let setup = setup(major).await;
    let mut conn = setup.connect().await;
    frozen_table(&mut conn, "accounts").await;
    let from = checkpoint(&mut conn).await;
    let updated = [3, 17, 40];
    let pages = update_rows_in_blocks(&mut conn, "accounts", &updated).await;
    assert!(pages > 60, "{pages}");
    let to = checkpoint(&mut conn).await;

    let changes = changes_between(&setup, from, to).await.unwrap();
    let heap = relation_file(&mut conn, "accounts").await;
    let (found, truncated) = blocks_of(&changes, &heap);
    assert_eq!(found, updated.into_iter().collect(), "the updated rows' blocks, and no other");
    assert_eq!(truncated, None);
    // Another segment of the same fork has nothing.
    let (later, _) = blocks_of(&changes, &RelationFile { segment: 1, ..heap });
    assert!(later.is_empty());
    let summary = changes.summary();
    assert!(summary.records > 0 && summary.block_references >= 3, "{summary:?}");
    let last = WalSegment::containing(Timeline::FIRST, to, SegmentSize::DEFAULT).name(SegmentSize::DEFAULT);
    assert_eq!(
        summary.segments.last().map(|read| (read.name.as_str(), read.origin)),
        Some((last.as_str(), SegmentOrigin::PgWal))
    );

    // The page LSNs on disk (flushed by the checkpoint) tell at least as much, and leave the
    // untouched blocks out.
    let now: Lsn = scalar(&mut conn, "SELECT pg_current_wal_insert_lsn()::text").await.parse().unwrap();
    let path = setup.cluster.data_dir().join(format!("base/{}/{}", heap.fork.database, heap.fork.relation));
    let by_lsn: BTreeSet<u32> = changed_by_page_lsn(&path, from, now).unwrap().into_iter().collect();
    assert!(by_lsn.is_superset(&found), "{by_lsn:?} ⊇ {found:?}");
    for untouched in [0, 4, 16, 18, 39, 41, pages - 1] {
        assert!(!by_lsn.contains(&untouched), "block {untouched} was not changed: {by_lsn:?}");
    }
    // Since the second checkpoint nothing changed.
    assert!(changed_by_page_lsn(&path, to, now).unwrap().iter().all(|block| *block >= pages));
    // An empty range is empty.
    let none = changes_between(&setup, to, to).await.unwrap();
    assert_eq!(blocks_of(&none, &heap), (BTreeSet::new(), None));
}

async fn created_files(major: u32) {
    let setup = setup(major).await;
    let mut conn = setup.connect().await;
    frozen_table(&mut conn, "emptied").await;
    frozen_table(&mut conn, "shrunk").await;
    frozen_table(&mut conn, "kept").await;
    let emptied_before = relation_file(&mut conn, "emptied").await;
    let from = checkpoint(&mut conn).await;

    execute(&mut conn, "CREATE TABLE fresh (id int)").await;
    execute(&mut conn, "INSERT INTO fresh SELECT generate_series(1, 100)").await;
    execute(&mut conn, "TRUNCATE emptied").await;
    execute(&mut conn, "INSERT INTO emptied VALUES (1, 'a')").await;
    execute(&mut conn, "DELETE FROM shrunk WHERE id > 1000").await;
    execute(&mut conn, "VACUUM shrunk").await;
    let left: u32 = scalar(&mut conn, "SELECT (pg_relation_size('shrunk') / 8192)::text").await.parse().unwrap();
    // The default strategy is WAL_LOG from 15; before, every database is copied file by file.
    let mut databases = vec![("by_default", "CREATE DATABASE by_default")];
    if major >= 15 {
        databases.push(("copied_by_file", "CREATE DATABASE copied_by_file STRATEGY FILE_COPY"));
    }
    for (_, sql) in &databases {
        execute(&mut conn, sql).await;
    }
    let to = checkpoint(&mut conn).await;

    let changes = changes_between(&setup, from, to).await.unwrap();
    let whole = |file: &RelationFile| changes.for_file(file, BLOCKS_PER_SEGMENT) == FileChanges::Whole;
    assert!(whole(&relation_file(&mut conn, "fresh").await), "a table created in the range");
    let emptied = relation_file(&mut conn, "emptied").await;
    assert_ne!(emptied, emptied_before, "TRUNCATE gives a new relfilenode");
    assert!(whole(&emptied), "the relfilenode TRUNCATE created");

    let shrunk = relation_file(&mut conn, "shrunk").await;
    let (_, truncated) = blocks_of(&changes, &shrunk);
    assert!(left > 0, "VACUUM left the rows before id 1000");
    assert_eq!(truncated, Some(left), "VACUUM truncated to {left} blocks");
    let kept = relation_file(&mut conn, "kept").await;
    assert_eq!(blocks_of(&changes, &kept), (BTreeSet::new(), None), "a table nothing touched");

    for (database, _) in &databases {
        let oid = scalar(&mut conn, &format!("SELECT oid::text FROM pg_database WHERE datname = '{database}'")).await;
        let files = relation_files(setup.cluster.data_dir(), &format!("base/{oid}"));
        assert!(files.len() > 100, "{database}: {} relation files", files.len());
        for file in files {
            assert!(whole(&file), "{database}: {file:?}");
        }
    }
    // The template the databases were copied from is only read.
    let template = relation_files(setup.cluster.data_dir(), "base/1");
    assert!(template.iter().all(|file| !whole(file)));
    let summary = changes.summary();
    assert_eq!(summary.created_databases, databases.len() as u64, "{summary:?}");
    assert!(summary.truncations >= 1, "{summary:?}");
}

/// The relation files under `dir` (relative to the data directory), as their paths parse.
fn relation_files(data_dir: &Path, dir: &str) -> Vec<RelationFile> {
    std::fs::read_dir(data_dir.join(dir))
        .unwrap()
        .filter_map(|entry| parse_relation_path(&format!("{dir}/{}", entry.unwrap().file_name().to_string_lossy())))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn segments_gone_from_pg_wal_are_read_from_the_archive_and_a_missing_one_is_named() {
    let setup = Setup::with(Options::restorable().setting("wal_keep_size", "0")).await;
    let mut conn = setup.connect().await;
    frozen_table(&mut conn, "ledger").await;
    let from = checkpoint(&mut conn).await;
    update_rows_in_blocks(&mut conn, "ledger", &[7]).await;
    archive_current_segment(&mut conn).await;
    update_rows_in_blocks(&mut conn, "ledger", &[9]).await;
    archive_current_segment(&mut conn).await;
    update_rows_in_blocks(&mut conn, "ledger", &[11]).await;
    // Two checkpoints: the segments before the first one's redo point leave pg_wal.
    checkpoint(&mut conn).await;
    let to = checkpoint(&mut conn).await;
    let size = SegmentSize::DEFAULT;
    let first = WalSegment::containing(Timeline::FIRST, from, size);
    let second = first.next();
    let pg_wal = setup.cluster.data_dir().join("pg_wal");
    assert!(!pg_wal.join(first.name(size)).exists(), "{} left pg_wal", first.name(size));

    let changes = changes_between(&setup, from, to).await.unwrap();
    let ledger = relation_file(&mut conn, "ledger").await;
    assert_eq!(blocks_of(&changes, &ledger).0, [7, 9, 11].into_iter().collect());
    let summary = changes.summary();
    assert_eq!(summary.segments[0].name, first.name(size));
    assert_eq!(summary.segments[0].origin, SegmentOrigin::Archive);
    assert_eq!(summary.segments.last().unwrap().origin, SegmentOrigin::PgWal);

    // The archived copy of a segment no longer in pg_wal disappears: the error names it.
    let archived = setup.repo_dir().join("clusters/main/wal/00000001").join(second.name(size));
    assert!(!pg_wal.join(second.name(size)).exists(), "{} left pg_wal", second.name(size));
    std::fs::remove_file(&archived).unwrap();
    let error = changes_between(&setup, from, to).await.unwrap_err();
    assert!(matches!(error, IncompleteWal::Missing { .. }), "{error}");
    assert_eq!(error.segment(), Some(second.name(size).as_str()));
    let message = error.to_string();
    assert!(message.starts_with(&format!("WAL {} is not archived", second.name(size))), "{message}");
    std::fs::remove_file(setup.repo_dir().join("clusters/main/wal/00000001").join(first.name(size))).unwrap();
    let error = changes_between(&setup, from, to).await.unwrap_err();
    assert_eq!(error.segment(), Some(first.name(size).as_str()), "{error}");
    assert!(error.to_string().contains(&pg_wal.display().to_string()), "{error}");
}
