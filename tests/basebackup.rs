//! `lifeboat backup --method basebackup` end to end: a real cluster (archiving with `cp`) with
//! several tables, one of them unlogged, backed up by streaming `pg_basebackup`'s tar output into
//! a local-directory repository. The manifest has the native method's shape: LSNs from the
//! server, `backup_label` as a field, no WAL, relation files hashing to the files on disk (and to
//! a native backup's), every object authenticating. A failing `pg_basebackup` fails the backup
//! with its messages (password redacted) and leaves no manifest.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;

use lifeboat::backup::BackupOptions;
use lifeboat::catalog::backup_manifest::{BackupManifest, BackupMethod, EntryKind};
use lifeboat::catalog::id::BackupId;
use lifeboat::catalog::layout::ClusterLayout;
use lifeboat::config::{Config, RepositoryUrl};
use lifeboat::keys::Unlock;
use lifeboat::keys::slots::KeyFile;
use lifeboat::object::WriteOptions;
use lifeboat::postgres::binaries::PgBinaries;
use lifeboat::postgres::cluster::{LocalCluster, LocalClusterOptions, format_setting};
use lifeboat::repository::Repository;
use lifeboat::storage::ObjectStore;
use lifeboat::storage::local::LocalStore;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

const LIFEBOAT: &str = env!("CARGO_BIN_EXE_lifeboat");
const PASSWORD: &str = "hunter2-sekrit";

struct Setup {
    dir: tempfile::TempDir,
    cluster: LocalCluster,
}

impl Setup {
    /// A cluster archiving with `cp`, autovacuum off (so nothing rewrites pages behind the
    /// test's back), and an initialised local repository. `hba` replaces pg_hba.conf if given.
    /// The connection carries a password (trust ignores it) to check that it stays secret.
    async fn start(hba: Option<&str>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        let binaries = PgBinaries::find(None).expect("PostgreSQL binaries (scripts/test installs them)");
        let options = LocalClusterOptions::default()
            .setting("wal_level", "replica")
            .setting("archive_mode", "on")
            .setting("autovacuum", "off");
        let cluster = LocalCluster::init(&binaries, options).await.expect("init a cluster");
        let archive = cluster.root_dir().join("archive");
        std::fs::create_dir(&archive).unwrap();
        cluster.give_to_server_user(&archive).unwrap();
        let command = format!("test ! -f {0}/%f && cp %p {0}/%f", archive.display());
        let mut conf =
            std::fs::OpenOptions::new().append(true).open(cluster.data_dir().join("postgresql.conf")).unwrap();
        writeln!(conf, "{}", format_setting("archive_command", &command).unwrap()).unwrap();
        if let Some(hba) = hba {
            std::fs::write(cluster.data_dir().join("pg_hba.conf"), hba).unwrap();
        }
        let config = format!(
            "[cluster]\nname = \"main\"\npgdata = \"{pgdata}\"\nconnection = \"{connection}&password={PASSWORD}\"\n\n\
             [repository]\nurl = \"file://{root}/repo\"\nkey_file = \"{root}/repo.key\"\n\n\
             [backup]\nworkers = 2\nlock_wait = \"5m\"\n",
            pgdata = cluster.data_dir().display(),
            connection = cluster.connection_url(),
        );
        std::fs::write(dir.path().join("lifeboat.toml"), config).unwrap();
        let setup = Setup { dir, cluster };
        assert_success(&setup.run(&["init"]));
        let mut setup = setup;
        setup.cluster.start().await.expect("start the cluster");
        setup
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("lifeboat.toml")
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new(LIFEBOAT);
        command.arg("--config").arg(self.config_path()).args(args);
        for (variable, _) in std::env::vars_os() {
            let name = variable.to_string_lossy();
            if name.starts_with("LIFEBOAT_") || name.starts_with("AWS_") {
                command.env_remove(&variable);
            }
        }
        command.output().unwrap()
    }

    async fn connect(&self) -> PgConnection {
        PgConnection::connect_with(&self.cluster.connect_options()).await.unwrap()
    }

    async fn repository(&self) -> Arc<Repository> {
        let config = Config::load(Some(&self.config_path())).unwrap();
        let RepositoryUrl::Local(root) = &config.repository.url else { panic!("a local repository") };
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(root));
        let unlock = Unlock::KeyFile(KeyFile::load(config.repository.key_file.as_ref().unwrap()).unwrap());
        let compression = config.repository.compression;
        let options =
            WriteOptions { compression: compression.algorithm, level: compression.level, ..WriteOptions::default() };
        Arc::new(Repository::open(store, Some(&unlock), options).await.unwrap())
    }

    /// Runs `lifeboat backup --json` with `args`; returns the stored manifest.
    async fn backup(&self, args: &[&str]) -> (serde_json::Value, BackupManifest) {
        let mut all = vec!["backup", "--json"];
        all.extend_from_slice(args);
        let output = self.run(&all);
        assert_success(&output);
        let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let id: BackupId = summary["id"].as_str().unwrap().parse().unwrap();
        let manifest = BackupManifest::read(&*self.repository().await, &layout(), id).await.unwrap();
        (summary, manifest)
    }
}

fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[track_caller]
fn assert_success(output: &Output) {
    assert!(output.status.success(), "expected success\n{}", describe(output));
}

fn layout() -> ClusterLayout {
    ClusterLayout::new(&lifeboat::config::ClusterName::parse("main").unwrap())
}

async fn execute(conn: &mut PgConnection, sql: &str) {
    sqlx::query(AssertSqlSafe(sql.to_owned()))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
}

async fn scalar(conn: &mut PgConnection, sql: &str) -> String {
    sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
}

/// Every object authenticates and hashes to its entry; every file's pieces hash to the file's
/// entry; every object byte belongs to a file. Returns the files' contents by path.
async fn verify_stored_bytes(repository: &Repository, manifest: &BackupManifest) -> BTreeMap<String, Vec<u8>> {
    let layout = layout();
    let directory = layout.backup_dir(manifest.id);
    let mut listed: Vec<String> = repository
        .store()
        .list(&directory)
        .await
        .unwrap()
        .into_iter()
        .map(|meta| meta.key.as_str().strip_prefix(&directory).unwrap().to_owned())
        .collect();
    listed.sort();
    let mut expected: Vec<String> =
        manifest.objects.iter().map(|object| object.key.clone()).chain(["manifest".to_owned()]).collect();
    expected.sort();
    assert_eq!(listed, expected, "the backup's directory holds exactly the manifest and its objects");
    let mut objects = BTreeMap::new();
    for object in &manifest.objects {
        let plaintext = repository.get_bytes(&layout.backup_object(manifest.id, &object.key)).await.unwrap();
        assert_eq!(plaintext.len() as u64, object.size, "{}", object.key);
        assert_eq!(blake3::hash(&plaintext).to_hex().to_string(), object.blake3, "{}", object.key);
        objects.insert(object.key.clone(), plaintext);
    }
    let mut contents = BTreeMap::new();
    let mut used = BTreeMap::<&str, u64>::new();
    for file in manifest.files.iter().filter(|file| file.kind == EntryKind::File) {
        let mut bytes = Vec::new();
        for piece in &file.locations {
            let object = &objects[&piece.object];
            bytes.extend_from_slice(&object[piece.offset as usize..(piece.offset + piece.length) as usize]);
            *used.entry(&piece.object).or_default() += piece.length;
        }
        assert_eq!(Some(bytes.len() as u64), file.size, "{}", file.path);
        assert_eq!(Some(blake3::hash(&bytes).to_hex().to_string()), file.blake3, "{}", file.path);
        contents.insert(file.path.clone(), bytes);
    }
    for object in &manifest.objects {
        assert_eq!(used.get(object.key.as_str()).copied().unwrap_or(0), object.size, "{} is not all used", object.key);
    }
    contents
}

fn file_hash(manifest: &BackupManifest, path: &str) -> Option<String> {
    manifest.files.iter().find(|file| file.path == path).and_then(|file| file.blake3.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_base_backup_has_the_native_shape() {
    let setup = Setup::start(None).await;
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

    let (summary, manifest) = setup.backup(&["--method", "basebackup"]).await;
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
    let archive = setup.cluster.root_dir().join("archive");
    let history = std::fs::read_dir(&archive)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|extension| extension == "backup"))
        .expect("the server archived a backup history file");
    let history = std::fs::read_to_string(history).unwrap();
    assert!(history.contains(&format!("STOP WAL LOCATION: {} ", manifest.stop_lsn)), "{history}");
    assert!(archive.join(&manifest.stop_wal).exists(), "the stop segment {} is archived", manifest.stop_wal);

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
    let config = Config::load(Some(&setup.config_path())).unwrap();
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
    let (summary, native) = setup.backup(&[]).await;
    assert_eq!(summary["method"], "native");
    for relation in [&large, &small] {
        assert_eq!(file_hash(&native, relation), file_hash(&manifest, relation), "{relation}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pg_basebackup_fails_the_backup_and_leaves_no_manifest() {
    // Ordinary connections work (so lifeboat gets as far as running pg_basebackup), replication
    // connections are refused.
    let setup = Setup::start(Some("local all all trust\n")).await;
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
    let setup = Setup::start(None).await;
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
