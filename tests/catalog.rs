//! The catalog commands end to end (`lifeboat list`, `info`, `delete`): a real cluster archiving
//! with the built binary's `wal-push`, two base backups and a dump taken through the CLI, then what
//! the listing shows against the stored manifests, and deletes (manifest and every object gone;
//! the only full backup kept unless `--force`; an unknown id named).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat::catalog::backup_manifest::BackupManifest;
use lifeboat::catalog::id::BackupId;
use lifeboat::catalog::layout::ClusterLayout;
use lifeboat::config::{Config, RepositoryUrl};
use lifeboat::dump::manifest::{DumpKeys, DumpManifest};
use lifeboat::keys::Unlock;
use lifeboat::keys::slots::KeyFile;
use lifeboat::object::WriteOptions;
use lifeboat::postgres::binaries::PgBinaries;
use lifeboat::postgres::cluster::{LocalCluster, LocalClusterOptions, format_setting};
use lifeboat::repository::Repository;
use lifeboat::storage::ObjectStore;
use lifeboat::storage::local::LocalStore;
use lifeboat::verify::report::{Mode, VerifyReport};
use serde_json::Value;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

const LIFEBOAT: &str = env!("CARGO_BIN_EXE_lifeboat");

struct Setup {
    dir: tempfile::TempDir,
    cluster: LocalCluster,
}

impl Setup {
    /// A cluster whose archive_command is the built binary's wal-push into a local repository.
    async fn start() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        let config_path = dir.path().join("lifeboat.toml");
        let options = LocalClusterOptions::default().setting("wal_level", "replica").setting("archive_mode", "on");
        let binaries = PgBinaries::find(None).expect("PostgreSQL binaries (scripts/test installs them)");
        let cluster = LocalCluster::init(&binaries, options).await.expect("init a cluster");
        let command = format!("{LIFEBOAT} --config {} wal-push %p", config_path.display());
        let mut conf =
            std::fs::OpenOptions::new().append(true).open(cluster.data_dir().join("postgresql.conf")).unwrap();
        writeln!(conf, "{}", format_setting("archive_command", &command).unwrap()).unwrap();
        let config = format!(
            "[cluster]\nname = \"main\"\npgdata = \"{pgdata}\"\nconnection = \"{connection}\"\n\n\
             [repository]\nurl = \"file://{root}/repo\"\nkey_file = \"{root}/repo.key\"\n\n\
             [backup]\nworkers = 2\nlock_wait = \"5m\"\n",
            pgdata = cluster.data_dir().display(),
            connection = cluster.connection_url(),
        );
        std::fs::write(&config_path, config).unwrap();
        let mut setup = Setup { dir, cluster };
        assert_success(&setup.run(&["init"]));
        // The archiver runs wal-push as the server's OS user: it needs the configuration, the key
        // file and the repository.
        setup.cluster.give_to_server_user(setup.dir.path()).unwrap();
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
            if name.starts_with("LIFEBOAT_") || name.starts_with("AWS_") || name.starts_with("PG") {
                command.env_remove(&variable);
            }
        }
        command.output().unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let output = self.run(args);
        assert_success(&output);
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("{error}\n{}", describe(&output)))
    }

    async fn repository(&self) -> Arc<Repository> {
        let config = Config::load(Some(&self.config_path())).unwrap();
        let RepositoryUrl::Local(root) = &config.repository.url else { panic!("a local repository") };
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(root));
        let unlock = Unlock::KeyFile(KeyFile::load(config.repository.key_file.as_ref().unwrap()).unwrap());
        Arc::new(Repository::open(store, Some(&unlock), WriteOptions::default()).await.unwrap())
    }

    async fn connect(&self) -> PgConnection {
        PgConnection::connect_with(&self.cluster.connect_options()).await.unwrap()
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

#[track_caller]
fn assert_failure(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "expected exit status 1\n{}", describe(output));
    String::from_utf8_lossy(&output.stderr).into_owned()
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

async fn keys_under(repository: &Repository, prefix: &str) -> Vec<String> {
    repository.store().list(prefix).await.unwrap().into_iter().map(|meta| meta.key.to_string()).collect()
}

fn ids(list: &Value) -> Vec<String> {
    list["backups"].as_array().unwrap().iter().map(|entry| entry["id"].as_str().unwrap().to_owned()).collect()
}

/// The archived range of timeline 1 that holds `first..=last`, if one does.
fn covered(list: &Value, first: &str, last: &str) -> bool {
    list["wal"].as_array().unwrap().iter().filter(|timeline| timeline["timeline"] == 1).any(|timeline| {
        timeline["ranges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|range| range["first"].as_str().unwrap() <= first && last <= range["last"].as_str().unwrap())
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn list_info_and_delete_describe_and_remove_backups_and_dumps() {
    let setup = Setup::start().await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 12345) g").await;
    // A first archived segment, so wal-push (as the server's OS user) creates the WAL directories.
    let first: String = scalar(&mut conn, "SELECT pg_walfile_name(pg_switch_wal())").await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let archived = scalar(&mut conn, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver").await;
        if archived >= first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{first} was not archived: {}",
            std::fs::read_to_string(setup.cluster.log_file()).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    conn.close().await.unwrap();

    // Nothing yet: an empty catalog lists nothing and `latest` names no backup.
    assert_eq!(ids(&setup.json(&["list", "--json"])), Vec::<String>::new());
    let error = assert_failure(&setup.run(&["info", "latest"]));
    assert!(error.contains("no backups or dumps"), "{error}");

    let older = setup.json(&["backup", "--json"])["id"].as_str().unwrap().to_owned();
    let newer = setup.json(&["backup", "--json"])["id"].as_str().unwrap().to_owned();
    let dump = setup.json(&["dump", "--db", "postgres", "--json"])["id"].as_str().unwrap().to_owned();
    let order: Vec<BackupId> = [&older, &newer, &dump].map(|id| id.parse().unwrap()).to_vec();
    assert!(order.is_sorted(), "{older} {newer} {dump}");

    let repository = setup.repository().await;
    let layout = layout();
    let older_manifest = BackupManifest::read(&repository, &layout, older.parse().unwrap()).await.unwrap();
    let newer_manifest = BackupManifest::read(&repository, &layout, newer.parse().unwrap()).await.unwrap();
    let dump_id: BackupId = dump.parse().unwrap();
    let dump_manifest =
        DumpManifest::from_json(&repository.get_bytes(&DumpKeys::new(&layout, dump_id).manifest()).await.unwrap())
            .unwrap();

    // A passed verification report of the newer backup (`lifeboat verify` writes these; its own
    // tests are in tests/verify.rs).
    let mut report = VerifyReport::new(newer.parse().unwrap(), Mode::Restore, chrono::Utc::now());
    report.passed = true;
    let report_key = report.store(&repository, &layout).await.unwrap();

    // list --json: exactly the three, oldest first, as their manifests say.
    let list = setup.json(&["list", "--json"]);
    assert_eq!(list["cluster"], "main");
    assert_eq!(ids(&list), vec![older.clone(), newer.clone(), dump.clone()]);
    let entries = list["backups"].as_array().unwrap();
    for (entry, manifest) in entries.iter().zip([&older_manifest, &newer_manifest]) {
        assert_eq!(entry["kind"], "full");
        assert_eq!(entry["timeline"], manifest.timeline.id());
        assert_eq!(entry["start_lsn"], manifest.start_lsn.to_string());
        assert_eq!(entry["stop_lsn"], manifest.stop_lsn.to_string());
        assert_eq!(entry["start_wal"], manifest.start_wal.as_str());
        assert_eq!(entry["stop_wal"], manifest.stop_wal.as_str());
        assert_eq!(entry["size"], manifest.totals.bytes);
        assert_eq!(entry["stored_size"], manifest.totals.stored_bytes);
        assert!(manifest.totals.bytes > 0 && manifest.totals.stored_bytes > 0);
        assert!(entry["compression_ratio"].as_f64().unwrap() > 1.0, "{entry}");
        assert_eq!(entry["start_time"], manifest.start_time.to_rfc3339());
        assert_eq!(entry["stop_time"], manifest.stop_time.to_rfc3339());
        assert!(
            covered(&list, &manifest.start_wal, &manifest.stop_wal),
            "{}..{} not in the archived ranges: {}",
            manifest.start_wal,
            manifest.stop_wal,
            list["wal"]
        );
    }
    assert_eq!(entries[0]["verification"], Value::Null);
    assert_eq!(entries[1]["verification"]["status"], "passed");
    assert_eq!(entries[1]["verification"]["reports"], 1);
    assert_eq!(entries[1]["verification"]["report"], report_key.as_str());
    let dump_entry = &entries[2];
    assert_eq!(dump_entry["kind"], "dump");
    assert_eq!(dump_entry["databases"], serde_json::json!(["postgres"]));
    assert_eq!(dump_entry["start_lsn"], Value::Null);
    let dump_size = dump_manifest.globals.object.size + dump_manifest.databases[0].object.size;
    assert_eq!(dump_entry["size"], dump_size);
    assert!(dump_size > 0 && dump_entry["stored_size"].as_u64().unwrap() > 0);
    assert_eq!(dump_entry["verification"], Value::Null);

    // The text table names them, fits 120 columns, and shows the WAL ranges.
    let text = setup.run(&["list"]);
    assert_success(&text);
    let text = String::from_utf8(text.stdout).unwrap();
    for id in [&older, &newer, &dump] {
        assert!(text.contains(id.as_str()), "{id} missing from\n{text}");
    }
    assert!(text.contains(" passed "), "{text}");
    assert!(text.contains(&format!("{}..{}", newer_manifest.start_lsn, newer_manifest.stop_lsn)), "{text}");
    assert!(text.lines().all(|line| line.chars().count() <= 120), "{text}");
    assert!(text.contains("timeline 1:"), "{text}");

    // info --json of a full backup matches its manifest.
    let info = setup.json(&["info", &older, "--json"]);
    assert_eq!(info["id"], older.as_str());
    assert_eq!(info["kind"], "full");
    assert_eq!(info["start_lsn"], older_manifest.start_lsn.to_string());
    assert_eq!(info["stop_lsn"], older_manifest.stop_lsn.to_string());
    assert_eq!(info["start_wal"], older_manifest.start_wal.as_str());
    assert_eq!(info["stop_wal"], older_manifest.stop_wal.as_str());
    assert_eq!(info["timeline"], older_manifest.timeline.id());
    assert_eq!(info["system_identifier"], older_manifest.system_identifier.to_string());
    assert_eq!(info["postgres_version"], older_manifest.postgres_version.as_str());
    assert_eq!(info["label"], older_manifest.label.as_str());
    assert_eq!(info["totals"], serde_json::to_value(older_manifest.totals).unwrap());
    assert_eq!(info["objects"], older_manifest.objects.len());
    assert_eq!(info["wal_archived"], true, "{info}");
    assert_eq!(info["wal_first_missing"], Value::Null);
    let text = setup.run(&["info", &older]);
    assert_success(&text);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains(&older_manifest.start_wal) && text.contains("all archived"), "{text}");

    // info latest is the dump, with its tables' row counts.
    let latest = setup.json(&["info", "latest", "--json"]);
    assert_eq!(latest["id"], dump.as_str());
    assert_eq!(latest["kind"], "dump");
    assert_eq!(latest["databases"][0]["name"], "postgres");
    let tables = latest["databases"][0]["tables"].as_array().unwrap();
    let t = tables.iter().find(|table| table["table"] == "t").expect("table t in the dump");
    assert_eq!(t["rows"], 12345);
    assert_eq!(latest["databases"][0]["tables"], serde_json::to_value(&dump_manifest.databases[0].tables).unwrap());
    let text = setup.run(&["info", "latest"]);
    assert_success(&text);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("public.t") && text.contains("12345"), "{text}");

    // Deleting the older full backup removes every object under its prefix.
    let older_prefix = layout.backup_dir(older.parse().unwrap());
    let objects_before = keys_under(&repository, &older_prefix).await.len();
    assert!(objects_before >= 2, "a manifest and data objects");
    let deleted = setup.run(&["delete", &older]);
    assert_success(&deleted);
    let stdout = String::from_utf8_lossy(&deleted.stdout);
    assert!(stdout.contains(&format!("{objects_before} object(s)")), "{stdout}");
    assert_eq!(keys_under(&repository, &older_prefix).await, Vec::<String>::new());
    assert_eq!(ids(&setup.json(&["list", "--json"])), vec![newer.clone(), dump.clone()]);
    let error = assert_failure(&setup.run(&["info", &older]));
    assert!(error.contains(&older), "{error}");

    // The only full backup left: refused without --force, and nothing deleted.
    let newer_prefix = layout.backup_dir(newer.parse().unwrap());
    let error = assert_failure(&setup.run(&["delete", &newer]));
    assert!(error.contains("only full backup") && error.contains("--force"), "{error}");
    assert!(keys_under(&repository, &newer_prefix).await.iter().any(|key| key.ends_with("/manifest")));
    assert_eq!(ids(&setup.json(&["list", "--json"])), vec![newer.clone(), dump.clone()]);
    assert_success(&setup.run(&["delete", &newer, "--force"]));
    assert_eq!(keys_under(&repository, &newer_prefix).await, Vec::<String>::new());
    assert_eq!(keys_under(&repository, &format!("{}{newer}/", layout.verify_prefix())).await, Vec::<String>::new());

    // An unknown id is named.
    let unknown = "20200101T000000Z-full";
    let error = assert_failure(&setup.run(&["delete", unknown]));
    assert!(error.contains(unknown) && error.contains(&dump), "{error}");

    // A dump goes freely.
    assert_success(&setup.run(&["delete", &dump]));
    assert_eq!(keys_under(&repository, &DumpKeys::new(&layout, dump_id).prefix()).await, Vec::<String>::new());
    assert_eq!(ids(&setup.json(&["list", "--json"])), Vec::<String>::new());
}
