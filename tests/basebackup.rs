//! `lifeboat backup --method basebackup` end to end: a real cluster (archiving with `wal-push`) with
//! several tables, one of them unlogged, backed up by streaming `pg_basebackup`'s tar output into
//! a local-directory repository. The manifest has the native method's shape: LSNs from the
//! server, `backup_label` as a field, no WAL, relation files hashing to the files on disk (and to
//! a native backup's), every object authenticating. A failing `pg_basebackup` fails the backup
//! with its messages (password redacted) and leaves no manifest.

mod support;

use lifeboat::backup::BackupOptions;
use lifeboat::catalog::id::BackupId;
use lifeboat::format::backup_manifest::{BackupManifest, BackupMethod, EntryKind};
use sqlx::Connection;
use support::archiving::{Options, Setup, execute, layout, scalar};
use support::output::describe;
use support::stored::{archived_backup_history, verify_stored_bytes};

const PASSWORD: &str = "hunter2-sekrit";

/// A cluster archiving with `wal-push`, autovacuum off (so nothing rewrites pages behind the test's
/// back), and an initialised local repository. The connection carries a password (trust ignores
/// it) to check that it stays secret.
fn options() -> Options {
    Options::new().setting("autovacuum", "off").connection_params(&format!("&password={PASSWORD}")).lock_wait("5m")
}

/// Runs `lifeboat backup --json` with `args`; its summary and the stored manifest.
async fn backup(setup: &Setup, args: &[&str]) -> (serde_json::Value, BackupManifest) {
    let mut all = vec!["backup", "--json"];
    all.extend_from_slice(args);
    let summary = setup.json(&all);
    let id: BackupId = summary["id"].as_str().unwrap().parse().unwrap();
    let manifest = BackupManifest::read(&*setup.repository().await, &layout(), id).await.unwrap();
    (summary, manifest)
}

fn file_hash(manifest: &BackupManifest, path: &str) -> Option<String> {
    manifest.files.iter().find(|file| file.path == path).and_then(|file| file.blake3.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_base_backup_has_the_native_shape() {
    let setup = Setup::with(options()).await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE large (id int PRIMARY KEY, payload text)").await;
    execute(
        &mut conn,
        "INSERT INTO large SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 60000) g",
    )
    .await;
    execute(&mut conn, "CREATE TABLE small (id int, name text)").await;
    execute(&mut conn, "INSERT INTO small VALUES (1, 'apple'), (2, 'pear')").await;
    execute(&mut conn, "CREATE UNLOGGED TABLE scratch (id int, junk text)").await;
    execute(&mut conn, "INSERT INTO scratch SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g").await;
    // Set every hint bit now, so no later read changes a page, then write everything out.
    execute(&mut conn, "VACUUM FREEZE large, small").await;
    execute(&mut conn, "CHECKPOINT").await;
    let path = |table: &str| format!("SELECT pg_relation_filepath('{table}')");
    let large = scalar(&mut conn, &path("large")).await;
    let small = scalar(&mut conn, &path("small")).await;
    let unlogged = scalar(&mut conn, &path("scratch")).await;
    let identifier = scalar(&mut conn, "SELECT system_identifier::text FROM pg_control_system()").await;
    conn.close().await.unwrap();

    let (summary, manifest) = backup(&setup, &["--method", "basebackup"]).await;
    assert_eq!(summary["method"], "basebackup", "{summary}");
    assert_eq!(manifest.method, BackupMethod::Basebackup);
    assert_eq!(manifest.system_identifier.to_string(), identifier);
    assert_eq!(manifest.timeline.id(), 1);
    assert!(manifest.start_lsn <= manifest.stop_lsn, "{} <= {}", manifest.start_lsn, manifest.stop_lsn);
    assert!(
        manifest
            .backup_label
            .contains(&format!("START WAL LOCATION: {} (file {})", manifest.start_lsn, manifest.start_wal)),
        "{}",
        manifest.backup_label
    );
    assert!(manifest.backup_label.contains(&format!("LABEL: lifeboat {}", manifest.id)), "{}", manifest.backup_label);
    assert_eq!(manifest.start_segment().name(manifest.wal_segment_size), manifest.start_wal);
    assert_eq!(manifest.stop_segment().name(manifest.wal_segment_size), manifest.stop_wal);
    assert!(manifest.tablespace_map.is_none());
    // The stop LSN is the server's: the backup history file it archived records it.
    let history = archived_backup_history(&*setup.repository().await, &manifest).await;
    assert!(history.contains(&format!("STOP WAL LOCATION: {} ", manifest.stop_lsn)), "{history}");

    let paths: Vec<&str> = manifest.files.iter().map(|file| file.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "files sorted by path");
    for name in ["backup_label", "tablespace_map", "backup_manifest", "postmaster.pid"] {
        assert!(!paths.contains(&name), "{name} is not a file of the backup");
    }
    let wal: Vec<&&str> = paths
        .iter()
        .filter(|path| path.starts_with("pg_wal/"))
        .filter(|path| manifest.files.iter().any(|file| file.path == **path && file.kind != EntryKind::Dir))
        .collect();
    assert!(wal.is_empty(), "no WAL in the backup: {wal:?}");
    assert!(paths.contains(&"pg_wal"), "pg_wal itself is kept");
    assert!(paths.contains(&"global/pg_control") && paths.contains(&"PG_VERSION"));
    assert!(!paths.contains(&unlogged.as_str()), "an unlogged table's data is skipped");
    assert!(paths.contains(&format!("{unlogged}_init").as_str()), "its init fork is kept");
    let large_entry = manifest.files.iter().find(|file| file.path == large).expect("the large table");
    assert!(large_entry.size.unwrap() > 4 * 1024 * 1024, "{large_entry:?}");
    assert_eq!(large_entry.locations.len(), 1);
    assert_eq!(large_entry.locations[0].offset, 0, "a large file has an object of its own");

    // The relation files are the ones on disk (nothing wrote to them since the checkpoint).
    for relation in [&large, &small] {
        let live = std::fs::read(setup.cluster.data_dir().join(relation)).unwrap();
        assert_eq!(file_hash(&manifest, relation), Some(blake3::hash(&live).to_hex().to_string()), "{relation}");
    }
    let repository = setup.repository().await;
    let contents = verify_stored_bytes(&repository, &manifest).await;
    assert_eq!(contents["PG_VERSION"], std::fs::read(setup.cluster.data_dir().join("PG_VERSION")).unwrap());
    assert!(manifest.objects.len() >= 2 && manifest.totals.objects == manifest.objects.len() as u64);
    assert!(manifest.objects.iter().any(|object| object.files > 1), "small files are bundled");

    // With a small part size the large table is cut into parts whose chaining values merge into
    // the same hash.
    let config = setup.config();
    let options = BackupOptions {
        part_size: 1024 * 1024,
        method: BackupMethod::Basebackup,
        ..BackupOptions::from_config(&config.backup)
    };
    let parted = lifeboat::backup::run(&config, repository.clone(), &options).await.unwrap().manifest;
    let entry = parted.files.iter().find(|file| file.path == large).unwrap();
    assert!(entry.locations.len() > 4, "{entry:?}");
    assert_eq!(file_hash(&parted, &large), file_hash(&manifest, &large));
    verify_stored_bytes(&repository, &parted).await;

    // A native backup of the same static tables records the same hashes.
    let (summary, native) = backup(&setup, &[]).await;
    assert_eq!(summary["method"], "native");
    for relation in [&large, &small] {
        assert_eq!(file_hash(&native, relation), file_hash(&manifest, relation), "{relation}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pg_basebackup_fails_the_backup_and_leaves_no_manifest() {
    // Ordinary connections work (so lifeboat gets as far as running pg_basebackup), replication
    // connections are refused.
    let setup = Setup::with(options().hba("local all all trust\n")).await;
    let output = setup.run(&["backup", "--method", "basebackup"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pg_basebackup failed"), "{stderr}");
    assert!(stderr.contains("pg_hba.conf"), "pg_basebackup's own message is shown: {stderr}");
    assert!(!stderr.contains(PASSWORD) && !String::from_utf8_lossy(&output.stdout).contains(PASSWORD), "{stderr}");
    let repository = setup.repository().await;
    let keys = repository.store().list(&layout().backups_prefix()).await.unwrap();
    assert!(!keys.iter().any(|meta| meta.key.as_str().ends_with("/manifest")), "no manifest: {keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_tablespaces_is_refused_up_front() {
    let setup = Setup::with(options()).await;
    let location = setup.cluster.root_dir().join("space");
    std::fs::create_dir(&location).unwrap();
    setup.cluster.give_to_server_user(&location).unwrap();
    let mut conn = setup.connect().await;
    execute(&mut conn, &format!("CREATE TABLESPACE space LOCATION '{}'", location.display())).await;
    conn.close().await.unwrap();
    let output = setup.run(&["backup", "--method", "basebackup"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tablespace(s) besides pg_default and pg_global (space)"), "{stderr}");
    assert!(stderr.contains("native backup"), "{stderr}");
    let keys = setup.repository().await.store().list(&layout().backups_prefix()).await.unwrap();
    assert!(keys.is_empty(), "nothing was written: {keys:?}");
}
