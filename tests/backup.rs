//! Native base backups end to end (`lifeboat backup`): real PostgreSQL clusters with a
//! tablespace and an unlogged table, backed up into a local-directory repository and into a
//! real S3-compatible server; what the manifest lists, that every stored byte hashes to what the
//! manifest says, crash safety (a backup killed with SIGKILL is invisible and its objects are
//! removed by the next one), and two concurrent backups taking turns on the lease.
//!
//! The clusters archive with the built binary's `wal-push` into the backup's repository: a backup
//! is complete only once the WAL it needs is there. One test archives with `cp` elsewhere, and
//! the backup must fail.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use lifeboat::backup::BackupOptions;
use lifeboat::catalog::id::BackupId;
use lifeboat::catalog::wal::WalFile;
use lifeboat::config::Config;
use lifeboat::format::backup_manifest::{BackupManifest, EntryKind};
use lifeboat::postgres::cluster::{LocalCluster, LocalClusterOptions};
use lifeboat::repository::Repository;
use sqlx::{Connection, PgConnection};
use support::archiving::{
    Archiving, Options, Setup, binaries, execute, layout, lifeboat_command, open_repository, scalar,
};
use support::output::{assert_failure, assert_success, describe};
use support::s3::{S3Server, S3ServerKind};
use support::stored::{archived_backup_history, verify_stored_bytes};

/// A cluster archiving as `archiving` says into the repository of `options` (initialised), with
/// `backup.lock_wait` long enough for two backups to take turns.
async fn start(archiving: Archiving, options: Options) -> Setup {
    Setup::with(options.archiving(archiving).lock_wait("5m")).await
}

fn lifeboat(config: &Path, args: &[&str]) -> Output {
    lifeboat_command(config, args).output().unwrap()
}

/// Paths (as the manifest writes them) of the interesting relations.
struct Relations {
    /// A table in the default tablespace, large enough (a few MiB) to be an object of its own.
    large: String,
    /// A small table: bundled.
    small: String,
    /// A table in tablespace `space`.
    in_tablespace: String,
    /// The main fork of an unlogged table.
    unlogged: String,
    tablespace_oid: u32,
    tablespace_dir: PathBuf,
}

/// Several tables, a tablespace with a table in it, and an unlogged table with data.
async fn populate(setup: &Setup) -> Relations {
    let tablespace_dir = setup.cluster.root_dir().join("space");
    std::fs::create_dir(&tablespace_dir).unwrap();
    setup.cluster.give_to_server_user(&tablespace_dir).unwrap();
    let mut conn = setup.connect().await;
    execute(&mut conn, &format!("CREATE TABLESPACE space LOCATION '{}'", tablespace_dir.display())).await;
    execute(&mut conn, "CREATE TABLE large (id int PRIMARY KEY, payload text)").await;
    execute(
        &mut conn,
        "INSERT INTO large SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 60000) g",
    )
    .await;
    execute(&mut conn, "CREATE TABLE small (id int, name text)").await;
    execute(&mut conn, "INSERT INTO small VALUES (1, 'apple'), (2, 'pear')").await;
    execute(&mut conn, "CREATE TABLE elsewhere (id int, note text) TABLESPACE space").await;
    execute(&mut conn, "INSERT INTO elsewhere SELECT g, 'note ' || g FROM generate_series(1, 1000) g").await;
    execute(&mut conn, "CREATE UNLOGGED TABLE scratch (id int, junk text)").await;
    execute(&mut conn, "INSERT INTO scratch SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g").await;
    execute(&mut conn, "CHECKPOINT").await;
    let path = |table: &str| format!("SELECT pg_relation_filepath('{table}')");
    let relations = Relations {
        large: scalar(&mut conn, &path("large")).await,
        small: scalar(&mut conn, &path("small")).await,
        in_tablespace: scalar(&mut conn, &path("elsewhere")).await,
        unlogged: scalar(&mut conn, &path("scratch")).await,
        tablespace_oid: scalar(&mut conn, "SELECT oid::text FROM pg_tablespace WHERE spcname = 'space'")
            .await
            .parse()
            .unwrap(),
        tablespace_dir,
    };
    conn.close().await.unwrap();
    relations
}

/// Everything the manifest of a backup of [`populate`]'s cluster must say.
async fn check_backup(
    setup: &Setup,
    relations: &Relations,
    repository: &Repository,
    manifest: &BackupManifest,
    part_size: u64,
) {
    let stored = BackupManifest::read(repository, &layout(), manifest.id).await.unwrap();
    assert_eq!(&stored, manifest, "the stored manifest is the one returned");
    let mut conn = setup.connect().await;
    let identifier = scalar(&mut conn, "SELECT system_identifier::text FROM pg_control_system()").await;
    let version_num: u32 = scalar(&mut conn, "SHOW server_version_num").await.parse().unwrap();
    conn.close().await.unwrap();
    assert_eq!(manifest.system_identifier.to_string(), identifier);
    assert_eq!(manifest.postgres_version_num, version_num);
    assert_eq!(manifest.cluster, "main");
    assert_eq!(manifest.timeline.id(), 1);

    // The LSNs are the ones PostgreSQL returned: its backup history file (archived by
    // pg_backup_stop) and the backup_label say the same.
    assert!(manifest.start_lsn < manifest.stop_lsn, "{} < {}", manifest.start_lsn, manifest.stop_lsn);
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
    let text = archived_backup_history(repository, manifest).await;
    assert!(text.contains(&format!("START WAL LOCATION: {} ", manifest.start_lsn)), "{text}");
    assert!(text.contains(&format!("STOP WAL LOCATION: {} ", manifest.stop_lsn)), "{text}");
    let tablespace_map = manifest.tablespace_map.as_deref().expect("a tablespace_map");
    assert!(
        tablespace_map.contains(&format!("{} {}", relations.tablespace_oid, relations.tablespace_dir.display())),
        "{tablespace_map}"
    );

    // What is there, and what is not.
    let entry = |path: &str| manifest.file(path).unwrap_or_else(|| panic!("{path} is not in the manifest"));
    for path in [&relations.large, &relations.small, &relations.in_tablespace, "PG_VERSION", "global/pg_control"] {
        let file = entry(path);
        assert_eq!(file.kind, EntryKind::File, "{path}");
        assert!(file.size.unwrap() > 0, "{path}");
        assert_eq!(file.mode & 0o777, 0o600, "{path}");
    }
    let large = entry(&relations.large);
    assert!(large.size.unwrap() >= 4 * 1024 * 1024, "the large table has {:?} bytes", large.size);
    let object_of = |piece: &lifeboat::format::backup_manifest::Location| {
        manifest.objects.iter().find(|object| object.key == piece.object).unwrap().clone()
    };
    if part_size >= large.size.unwrap() {
        assert_eq!(large.locations.len(), 1);
        assert_eq!(object_of(&large.locations[0]).files, 1, "a large file has its own object");
    } else {
        // Cut into parts, an object each, that fit together.
        assert_eq!(large.locations.len() as u64, large.size.unwrap().div_ceil(part_size), "{large:?}");
        for piece in &large.locations {
            assert_eq!((piece.offset, object_of(piece).size), (0, piece.length));
        }
        assert!(large.locations[..large.locations.len() - 1].iter().all(|piece| piece.length == part_size));
    }
    let small = entry(&relations.small);
    assert!(object_of(&small.locations[0]).files > 1, "small files are bundled");
    assert_eq!(entry(&format!("{}_init", relations.unlogged)).kind, EntryKind::File);
    assert!(manifest.file(&relations.unlogged).is_none(), "the unlogged table's main fork was copied");
    assert!(manifest.file(&format!("{}_fsm", relations.unlogged)).is_none());
    let link = entry(&format!("pg_tblspc/{}", relations.tablespace_oid));
    assert_eq!(link.kind, EntryKind::Symlink);
    assert_eq!(link.target.as_deref(), Some(relations.tablespace_dir.to_str().unwrap()));
    assert!(relations.in_tablespace.starts_with(&format!("pg_tblspc/{}/PG_", relations.tablespace_oid)));
    assert_eq!(manifest.tablespaces.len(), 1);
    assert_eq!(manifest.tablespaces[0].name.as_deref(), Some("space"));
    assert_eq!(manifest.tablespaces[0].oid, relations.tablespace_oid);
    assert_eq!(entry("pg_wal").kind, EntryKind::Dir);
    assert_eq!(entry("pg_wal/archive_status").kind, EntryKind::Dir);
    assert!(manifest.files.iter().all(|file| !file.path.starts_with("pg_wal/0")), "WAL segments were copied");
    for path in ["postmaster.pid", "postmaster.opts", "backup_label"] {
        assert!(manifest.file(path).is_none(), "{path} was copied");
    }
    assert!(manifest.files.iter().all(|file| !file.path.ends_with("pg_internal.init")));
    assert_eq!(entry("pg_stat_tmp").kind, EntryKind::Dir);
    assert!(manifest.files.windows(2).all(|pair| pair[0].path < pair[1].path), "files are sorted and unique");

    // Totals add up, and every stored byte is what the manifest says.
    let totals = &manifest.totals;
    assert_eq!(totals.files, manifest.files.iter().filter(|file| file.kind == EntryKind::File).count() as u64);
    assert_eq!(totals.bytes, manifest.files.iter().filter_map(|file| file.size).sum::<u64>());
    assert_eq!(totals.objects, manifest.objects.len() as u64);
    assert!(totals.stored_bytes > 0 && totals.stored_bytes < totals.bytes, "{totals:?}");
    let contents = verify_stored_bytes(repository, manifest).await;
    let on_disk = std::fs::read(setup.cluster.data_dir().join("PG_VERSION")).unwrap();
    assert_eq!(contents["PG_VERSION"], on_disk);
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_on_the_local_backend_lists_what_a_restore_needs() {
    let setup = start(Archiving::WalPush, Options::new()).await;
    let relations = populate(&setup).await;
    let output = setup.run(&["backup", "--json"]);
    assert_success(&output);
    eprintln!("{}", describe(&output));
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("{}", describe(&output)));
    let id: BackupId = summary["id"].as_str().unwrap().parse().unwrap();
    let repository = setup.repository().await;
    let manifest = BackupManifest::read(&repository, &layout(), id).await.unwrap();
    check_backup(&setup, &relations, &repository, &manifest, lifeboat::backup::copy::PART_SIZE).await;
    assert_eq!(summary["start_lsn"], manifest.start_lsn.to_string());
    assert_eq!(summary["stop_lsn"], manifest.stop_lsn.to_string());
    assert_eq!(summary["schema"], "backup/1");
    assert_eq!(summary["size"], manifest.totals.bytes);
    assert_eq!(summary["stored_size"], manifest.totals.stored_bytes);
    assert_eq!(summary["totals"], serde_json::to_value(manifest.totals).unwrap());
    assert_eq!(summary["manifest"], format!("clusters/main/backups/{id}/manifest"));
    assert_eq!(summary["tablespaces"].as_array().unwrap().len(), 1);
    assert!(summary["run"]["bytes_per_second"].as_f64().unwrap() > 0.0, "{summary:#}");

    // The text output names the id, the LSNs and the sizes.
    let output = setup.run(&["backup", "--workers", "1"]);
    assert_success(&output);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("backup 20") && text.contains("-full of cluster main complete"), "{text}");
    assert!(text.contains("timeline 1, start ") && text.contains("MB/s") && text.contains("smaller"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn block_values_go_to_the_temporary_directory_when_the_state_directory_cannot_hold_them() {
    let setup = start(Archiving::WalPush, Options::new()).await;
    // The block values wait in an unnamed file under the state directory: make that impossible,
    // as a service sandbox that leaves the user's home read-only does.
    let not_a_directory = setup.state_dir().join("file");
    std::fs::create_dir_all(setup.state_dir()).unwrap();
    std::fs::write(&not_a_directory, b"").unwrap();
    let output = setup.command(&["backup"]).env("LIFEBOAT_STATE_DIR", &not_a_directory).output().unwrap();
    assert_success(&output);
    let warning = String::from_utf8_lossy(&output.stderr);
    assert!(
        warning.contains(&not_a_directory.display().to_string()) && warning.contains("LIFEBOAT_STATE_DIR"),
        "{warning}"
    );
    assert_eq!(setup.json(&["list", "--json"])["backups"].as_array().unwrap().len(), 1);

    // With no usable temporary directory either, the backup fails naming it, and stores nothing.
    let output = setup
        .command(&["backup"])
        .env("LIFEBOAT_STATE_DIR", &not_a_directory)
        .env("TMPDIR", &not_a_directory)
        .output()
        .unwrap();
    let error = assert_failure(&output);
    assert!(error.contains("cannot keep the block values") && error.contains(&not_a_directory.display().to_string()));
    assert!(error.contains("LIFEBOAT_STATE_DIR") && error.contains("TMPDIR"), "the next step: {error}");
    assert_eq!(setup.json(&["list", "--json"])["backups"].as_array().unwrap().len(), 1, "nothing more is listed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_on_s3_lists_what_a_restore_needs() {
    let server = S3Server::start(S3ServerKind::S3sFs).await;
    let bucket = server.fresh_bucket().await.bucket;
    let setup = start(Archiving::WalPush, Options::new().s3(&server, &bucket)).await;
    let relations = populate(&setup).await;
    // Small parts, so the large table is cut into several.
    let config = setup.config();
    let options = BackupOptions { part_size: 1024 * 1024, ..BackupOptions::from_config(&config.backup) };
    let repository = setup.repository().await;
    let summary = lifeboat::backup::run(&config, repository.clone(), &options).await.unwrap();
    check_backup(&setup, &relations, &repository, &summary.manifest, options.part_size).await;
    assert!(summary.removed_orphans.is_empty());
}

/// Every object under `backups/`, grouped by backup id, and whether each id has a manifest.
async fn backup_directories(repository: &Repository) -> BTreeMap<BackupId, (bool, usize)> {
    let layout = layout();
    let mut directories = BTreeMap::<BackupId, (bool, usize)>::new();
    for meta in repository.store().list(&layout.backups_prefix()).await.unwrap() {
        let (id, relative) = layout.parse_backup_key(&meta.key).unwrap_or_else(|| panic!("stray key {}", meta.key));
        let directory = directories.entry(id).or_default();
        if relative == "manifest" {
            directory.0 = true;
        } else {
            directory.1 += 1;
        }
    }
    directories
}

/// Data objects (not temporary files) of backups in a local repository, found on disk.
fn data_objects_on_disk(repo: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(backups) = std::fs::read_dir(repo.join("clusters/main/backups")) else { return found };
    for backup in backups {
        let Ok(objects) = std::fs::read_dir(backup.unwrap().path().join("data")) else { continue };
        for object in objects {
            let path = object.unwrap().path();
            if !path.file_name().unwrap().to_string_lossy().starts_with(".lifeboat-") {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_killed_halfway_is_never_listed_and_the_next_one_removes_its_objects() {
    let setup = start(Archiving::WalPush, Options::new()).await;
    let mut conn = setup.connect().await;
    // About 40 MB that zstd level 19 needs many seconds for, while the small files are done at once.
    execute(&mut conn, "CREATE TABLE big (id int, payload text)").await;
    execute(
        &mut conn,
        "INSERT INTO big SELECT g, md5(g::text) || md5((g + 1)::text) FROM generate_series(1, 400000) g",
    )
    .await;
    execute(&mut conn, "CHECKPOINT").await;
    conn.close().await.unwrap();

    let slow_config = setup.dir.path().join("slow.toml");
    let text = std::fs::read_to_string(setup.config_path()).unwrap();
    let text = text.replace("key_file = ", "compression = { algorithm = \"zstd\", level = 19 }\nkey_file = ");
    std::fs::write(&slow_config, text).unwrap();
    let mut child =
        lifeboat_command(&slow_config, &["backup"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let repo = setup.repo_dir();
    let deadline = Instant::now() + Duration::from_secs(120);
    while data_objects_on_disk(&repo).is_empty() {
        assert!(child.try_wait().unwrap().is_none(), "the backup ended before any data object was written");
        assert!(Instant::now() < deadline, "no data object after two minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the backup finished before it could be killed");

    let repository = setup.repository().await;
    let directories = backup_directories(&repository).await;
    assert_eq!(directories.len(), 1, "{directories:?}");
    let (&killed, &(has_manifest, objects)) = directories.iter().next().unwrap();
    assert!(!has_manifest, "a killed backup must have no manifest");
    assert!(objects > 0);
    let error = BackupManifest::read(&repository, &layout(), killed).await.unwrap_err();
    assert!(error.to_string().contains("there is no backup"), "{error}");

    // The next backup takes over the dead process's lease at once, removes the orphans, and works.
    let summary = setup.backup_with(|_| {}).await;
    assert!(summary.duration < Duration::from_secs(60), "took {:?}: did it wait for the dead lease?", summary.duration);
    assert_eq!(summary.removed_orphans.len(), 1);
    assert_eq!(summary.removed_orphans[0].id, killed);
    assert_eq!(summary.removed_orphans[0].objects, objects);
    let directories = backup_directories(&repository).await;
    assert!(directories.values().all(|(has_manifest, _)| *has_manifest), "objects without a manifest: {directories:?}");
    assert_eq!(directories.keys().copied().collect::<Vec<_>>(), [summary.manifest.id]);
    verify_stored_bytes(&repository, &summary.manifest).await;
    assert!(repository.store().list("clusters/main/locks/").await.unwrap().is_empty(), "the lease was not released");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_concurrent_backups_take_turns() {
    let setup = start(Archiving::WalPush, Options::new()).await;
    let (first, second) = tokio::join!(setup.backup_with(|_| {}), setup.backup_with(|_| {}));
    let (earlier, later) = if first.manifest.id < second.manifest.id { (first, second) } else { (second, first) };
    assert_ne!(earlier.manifest.id, later.manifest.id);
    assert!(
        later.manifest.start_time >= earlier.manifest.stop_time,
        "the second backup started at {} before the first stopped at {}",
        later.manifest.start_time,
        earlier.manifest.stop_time
    );
    assert!(earlier.manifest.stop_lsn <= later.manifest.start_lsn);
    let repository = setup.repository().await;
    let directories = backup_directories(&repository).await;
    assert_eq!(directories.len(), 2);
    assert!(directories.values().all(|(has_manifest, _)| *has_manifest));
    for summary in [&earlier, &later] {
        verify_stored_bytes(&repository, &summary.manifest).await;
    }
}

/// Issue 9, defect 1: a backup whose WAL the cluster archives somewhere else (here `cp` into a
/// directory) used to exit 0 and be listed, although it could not be restored. It must wait for
/// its WAL in its own repository, fail naming the segment and the archive_command, and not be
/// listed.
#[tokio::test(flavor = "multi_thread")]
async fn hardening_1_a_backup_whose_wal_goes_elsewhere_is_not_complete() {
    let setup = start(Archiving::Copy, Options::new().extra("archive_timeout = \"3s\"\n")).await;
    let output = setup.run(&["backup"]);
    let error = assert_failure(&output);
    let repository = setup.repository().await;
    let size = lifeboat::catalog::wal::SegmentSize::DEFAULT;
    let needed = error.split("needs WAL segment ").nth(1).and_then(|rest| rest.get(..24)).unwrap_or_default();
    assert!(WalFile::parse(needed, size).is_ok(), "no segment named: {error}");
    assert!(
        error.contains(&repository.location())
            && error.contains("after 3s (backup.archive_timeout)")
            && error.contains("not recorded as complete")
            && error.contains(&format!("cp %p {}", setup.archive_dir().unwrap().display()))
            && error.contains("lifeboat wal-push %p"),
        "{error}"
    );
    assert!(setup.archive_dir().unwrap().join(needed).is_file(), "PostgreSQL did archive {needed}, elsewhere");
    let listed = setup.json(&["list", "--json"]);
    assert_eq!(listed["backups"], serde_json::json!([]), "{listed}");
    let directories = backup_directories(&repository).await;
    assert!(directories.values().all(|(has_manifest, _)| *has_manifest), "{directories:?}");
}

/// A directory that looks like a data directory of another cluster (another system identifier).
fn fake_data_directory(parent: &Path, major: u32, system_identifier: u64) -> PathBuf {
    let pgdata = parent.join("other-cluster");
    std::fs::create_dir_all(pgdata.join("global")).unwrap();
    std::fs::write(pgdata.join("PG_VERSION"), format!("{major}\n")).unwrap();
    let mut control = system_identifier.to_ne_bytes().to_vec();
    control.resize(8192, 0);
    std::fs::write(pgdata.join("global/pg_control"), control).unwrap();
    pgdata
}

#[tokio::test(flavor = "multi_thread")]
async fn what_cannot_be_backed_up_is_refused_with_the_next_step() {
    let options = LocalClusterOptions::default()
        .setting("wal_level", "minimal")
        .setting("max_wal_senders", "0")
        .setting("archive_mode", "off");
    let mut cluster = LocalCluster::start_new(&binaries(), options).await.expect("start a cluster");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display().to_string();
    let write_config = |cluster_table: &str| {
        let config = format!(
            "[cluster]\nname = \"main\"\n{cluster_table}\n[audit]\npath = \"{root}/audit.jsonl\"\n\n[repository]\nurl = \"file://{root}/repo\"\nkey_file = \"{root}/repo.key\"\n"
        );
        std::fs::write(dir.path().join("lifeboat.toml"), config).unwrap();
        dir.path().join("lifeboat.toml")
    };
    let connection = format!("connection = \"{}\"\n", cluster.connection_url());
    let pgdata = format!("pgdata = \"{}\"\n", cluster.data_dir().display());
    assert_success(&lifeboat(&write_config(""), &["init"]));

    let error = assert_failure(&lifeboat(&write_config(&connection), &["backup"]));
    assert!(error.contains("cluster.pgdata is not set") && error.contains("SHOW data_directory"), "{error}");

    let other = fake_data_directory(dir.path(), binaries().major(), 42);
    let config = write_config(&format!("{connection}pgdata = \"{}\"\n", other.display()));
    let error = assert_failure(&lifeboat(&config, &["backup"]));
    assert!(
        error.contains("belongs to another PostgreSQL cluster") && error.contains("system identifier 42"),
        "{error}"
    );

    let config =
        write_config(&format!("{pgdata}connection = \"postgresql:///postgres?host={root}&port=9&user=postgres\"\n"));
    let error = assert_failure(&lifeboat(&config, &["backup"]));
    assert!(error.contains("cannot connect to PostgreSQL") && error.contains("check that the server runs"), "{error}");

    let config = write_config(&format!("{pgdata}{connection}"));
    let error = assert_failure(&lifeboat(&config, &["backup"]));
    assert!(error.contains("wal_level = minimal") && error.contains("wal_level = replica"), "{error}");

    // With archive_mode off no backup can ever be restored (issue 9, defect 1): refused before
    // anything is copied.
    let mut conn = PgConnection::connect_with(&cluster.connect_options()).await.unwrap();
    execute(&mut conn, "ALTER SYSTEM SET wal_level = replica").await;
    conn.close().await.unwrap();
    cluster.stop().await.unwrap();
    cluster.start().await.unwrap();
    let error = assert_failure(&lifeboat(&config, &["backup"]));
    assert!(
        error.contains("archive_mode is off")
            && error.contains("could never be restored")
            && error.contains("wal-push"),
        "{error}"
    );
    // Nothing of the refused attempts was left behind.
    let repository = open_repository(&Config::load(Some(&config)).unwrap()).await;
    assert!(backup_directories(&repository).await.is_empty());
}
