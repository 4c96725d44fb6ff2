//! Incremental backups end to end on real clusters: a full backup, writes, an incremental,
//! writes, an incremental; each restored to its own point with every row checked; a damaged
//! block object in the middle of the chain named by `verify` and `restore`; the WAL path and the
//! page-LSN fallback each forced; retention and `delete` never leaving an incremental without its
//! base.

mod support;

use std::path::Path;

use lifeboat::catalog::id::BackupId;
use lifeboat::format::backup_manifest::BackupManifest;
use sqlx::PgConnection;
use support::archiving::{Setup, archive_current_segment, execute, layout, scalar};
use support::output::{assert_failure, assert_success};
use support::restored::restore_and_start;

/// A table of about 8 MB (about 1000 blocks), large enough to be stored block by block.
async fn create_bulk(conn: &mut PgConnection) {
    execute(conn, "CREATE TABLE bulk (id int PRIMARY KEY, v text) WITH (fillfactor = 50)").await;
    execute(conn, "INSERT INTO bulk SELECT g, md5(g::text) || repeat('b', 60) FROM generate_series(1, 60000) g").await;
    execute(conn, "CREATE TABLE ledger (batch int NOT NULL, n int NOT NULL)").await;
}

/// Rows of `batch` in the ledger, and a few scattered rows of bulk changed to say so.
async fn write_batch(conn: &mut PgConnection, batch: i32) {
    execute(conn, &format!("INSERT INTO ledger SELECT {batch}, g FROM generate_series(1, 100) g")).await;
    execute(conn, &format!("UPDATE bulk SET v = 'batch {batch}' WHERE id % 997 = {batch}")).await;
}

/// What a restored (or the source) cluster holds: the ledger's batches and a digest of bulk.
async fn state(conn: &mut PgConnection) -> (Vec<i32>, String) {
    let batches =
        sqlx::query_scalar("SELECT DISTINCT batch FROM ledger ORDER BY batch").fetch_all(&mut *conn).await.unwrap();
    let digest = scalar(conn, "SELECT md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM bulk").await;
    (batches, digest)
}

fn backup(setup: &Setup, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["backup", "--json"];
    all.extend_from_slice(args);
    setup.json(&all)
}

async fn manifest(setup: &Setup, id: &str) -> BackupManifest {
    let repository = setup.repository().await;
    BackupManifest::read(&repository, &layout(), id.parse::<BackupId>().unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chain_of_incrementals_restores_each_point_and_a_damaged_block_is_named() {
    let setup = Setup::start().await;
    let mut conn = setup.connect().await;
    create_bulk(&mut conn).await;
    write_batch(&mut conn, 1).await;
    let full = backup(&setup, &[]);
    let full_id = full["id"].as_str().unwrap().to_owned();
    assert_eq!(full["kind"], "full");

    write_batch(&mut conn, 2).await;
    let first = backup(&setup, &["--incremental"]);
    let first_id = first["id"].as_str().unwrap().to_owned();
    let after_first = state(&mut conn).await;
    assert_eq!(first["kind"], "incr", "{first}");
    assert_eq!(first["incremental"]["parent"], full_id.as_str());
    assert_eq!(first["incremental"]["changes_from"], "wal", "{first}");
    let changed = first["incremental"]["changed_blocks"].as_u64().unwrap();
    assert!(changed > 0, "the updated rows' blocks are stored: {first}");
    assert!(
        first["stored_size"].as_u64().unwrap() * 4 < full["stored_size"].as_u64().unwrap(),
        "the incremental stores far less than the full backup: {first} vs {full}"
    );
    assert_eq!(first["size"], first["totals"]["bytes"], "size is what a restore writes");

    write_batch(&mut conn, 3).await;
    execute(&mut conn, "CREATE TABLE born_later AS SELECT g FROM generate_series(1, 5000) g").await;
    write_batch(&mut conn, 4).await;
    let second = backup(&setup, &["--incremental"]);
    let second_id = second["id"].as_str().unwrap().to_owned();
    let after_second = state(&mut conn).await;
    assert_eq!(second["incremental"]["parent"], first_id.as_str());
    assert_eq!(second["incremental"]["chain"], serde_json::json!([full_id, first_id]));
    write_batch(&mut conn, 5).await;
    let latest = state(&mut conn).await;
    archive_current_segment(&mut conn).await;

    // The manifest refers to the chain's objects for what did not change.
    let bulk_path = scalar(&mut conn, "SELECT pg_relation_filepath('bulk')").await;
    let second_manifest = manifest(&setup, &second_id).await;
    let bulk = second_manifest.file(&bulk_path).unwrap();
    let owners: std::collections::BTreeSet<String> = bulk
        .locations
        .iter()
        .map(|location| location.backup.map_or(second_id.clone(), |backup| backup.to_string()))
        .collect();
    assert_eq!(owners.len(), 3, "bulk's blocks come from all three backups: {owners:?}");

    let list = setup.run(&["list"]);
    assert_success(&list);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.contains(&format!("{full_id} <- {first_id} <- {second_id}")), "{listed}");
    let info = setup.run(&["info", &second_id]);
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("incremental backup") && info.contains(&format!("base          {first_id}")), "{info}");

    for (name, id, expected) in [("first", &first_id, &after_first), ("second", &second_id, &after_second)] {
        let (restored, stdout) = restore_and_start(&setup, name, &["--backup", id, "--target", "immediate"]);
        assert!(stdout.contains(&format!("restored backup {id}")), "{stdout}");
        assert_eq!(&state(&mut restored.connect().await).await, expected, "restore of {name} ({id})");
    }
    let (restored, _) = restore_and_start(&setup, "latest", &["--backup", &second_id]);
    let mut restored_conn = restored.connect().await;
    assert_eq!(state(&mut restored_conn).await, latest, "restore to the end of the WAL");
    assert_eq!(scalar(&mut restored_conn, "SELECT count(*)::text FROM born_later").await, "5000");
    drop(restored_conn);
    drop(restored);

    assert_success(&setup.run(&["verify", &second_id]));

    // Damage a block object of the incremental in the middle of the chain.
    let first_manifest = manifest(&setup, &first_id).await;
    let block_object = first_manifest
        .file(&bulk_path)
        .unwrap()
        .locations
        .iter()
        .find(|location| location.backup.is_none())
        .expect("the first incremental stored some of bulk's blocks")
        .object
        .clone();
    let key = format!("clusters/main/backups/{first_id}/{block_object}");
    flip_byte(&setup.repo_dir().join(&key));
    let verify = assert_failure(&setup.run(&["verify", &second_id]));
    assert!(verify.contains(&key), "verify names the damaged object: {verify}");
    let restore = assert_failure(&setup.restore(&setup.restore_dir("damaged"), &["--backup", &second_id]));
    assert!(restore.contains(&key), "restore names the damaged object: {restore}");
}

fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(path, &bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_wal_since_the_base_the_incremental_compares_page_lsns() {
    let setup = Setup::start().await;
    let mut conn = setup.connect().await;
    create_bulk(&mut conn).await;
    let full = backup(&setup, &[]);
    let full_start = full["start_wal"].as_str().unwrap().to_owned();
    write_batch(&mut conn, 1).await;
    // Move pg_wal past the full backup's start, so its start segment is only in the archive...
    for _ in 0..2 {
        archive_current_segment(&mut conn).await;
        execute(&mut conn, "CHECKPOINT").await;
    }
    let pg_wal = setup.cluster.data_dir().join("pg_wal");
    assert!(!pg_wal.join(&full_start).exists(), "{full_start} is still in pg_wal");
    // ...and then not there either.
    std::fs::remove_file(setup.repo_dir().join(format!("clusters/main/wal/00000001/{full_start}"))).unwrap();

    let incremental = backup(&setup, &["--incremental"]);
    assert_eq!(incremental["incremental"]["changes_from"], "page-lsn", "{incremental}");
    let reason = incremental["incremental"]["fallback_reason"].as_str().unwrap();
    assert!(reason.contains(&full_start), "the reason names the missing segment: {reason}");
    assert!(incremental["incremental"]["changed_blocks"].as_u64().unwrap() > 0);
    let expected = state(&mut conn).await;
    archive_current_segment(&mut conn).await;
    let id = incremental["id"].as_str().unwrap();
    let (restored, _) = restore_and_start(&setup, "fallback", &["--backup", id, "--target", "immediate"]);
    assert_eq!(state(&mut restored.connect().await).await, expected);

    // The text summary of the next one says what it holds and what it stored, and on what.
    write_batch(&mut conn, 2).await;
    let output = setup.run(&["backup", "--incremental"]);
    assert_success(&output);
    let text = String::from_utf8_lossy(&output.stdout);
    let size = text.lines().find(|line| line.trim_start().starts_with("size")).unwrap_or_default();
    assert!(size.contains("restorable,") && !size.contains(" read"), "not '<size> read': {text}");
    assert!(text.contains("blocks and") && text.contains("found in the WAL"), "{text}");
    assert!(text.contains(&format!("base      {id} (chain of 3)")), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_base_is_never_deleted_from_under_its_incrementals() {
    let setup = Setup::start().await;
    let mut conn = setup.connect().await;
    create_bulk(&mut conn).await;
    // Without any backup, --incremental takes a full one and says why.
    let output = setup.run(&["backup", "--incremental", "--json"]);
    assert_success(&output);
    let first: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(first["kind"], "full");
    assert!(String::from_utf8_lossy(&output.stderr).contains("taking a full backup instead"));
    let full_id = first["id"].as_str().unwrap().to_owned();
    write_batch(&mut conn, 1).await;
    let incremental = backup(&setup, &["--incremental"]);
    let incremental_id = incremental["id"].as_str().unwrap().to_owned();
    write_batch(&mut conn, 2).await;
    backup(&setup, &[]);

    let refused = assert_failure(&setup.run(&["delete", &full_id]));
    assert!(refused.contains(&incremental_id) && refused.contains("built on it"), "{refused}");

    // Retention keeping only the newest full backup takes the old chain whole.
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    std::fs::write(setup.config_path(), config.replacen("[backup]\n", "[backup]\nretention = { full = 1 }\n", 1))
        .unwrap();
    let expired = setup.json(&["expire", "--json"]);
    let action = |id: &str| {
        let items = expired["items"].as_array().unwrap();
        items.iter().find(|item| item["id"] == id).map(|item| item["action"].as_str().unwrap().to_owned())
    };
    assert_eq!(action(&full_id).as_deref(), Some("deleted"), "{expired}");
    assert_eq!(action(&incremental_id).as_deref(), Some("deleted"), "{expired}");
    assert!(!setup.json(&["list", "--json"]).to_string().contains(&incremental_id));
}
