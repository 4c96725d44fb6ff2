//! A real cluster that archives its WAL with the built binary's `wal-push` into the repository of
//! the test's configuration, as in production: what the restore and verify tests start from.
//!
//! Tests run as root and the server as `postgres`, so the test's directory (configuration, key
//! file, local repository, scratch directory) is given to that user once the repository exists.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat::backup::BackupOptions;
use lifeboat::config::{Config, RepositoryUrl};
use lifeboat::keys::Unlock;
use lifeboat::keys::slots::KeyFile;
use lifeboat::object::WriteOptions;
use lifeboat::postgres::binaries::PgBinaries;
use lifeboat::postgres::cluster::{LocalCluster, LocalClusterOptions, format_setting};
use lifeboat::repository::Repository;
use lifeboat::storage::ObjectStore;
use lifeboat::storage::local::LocalStore;
use lifeboat::storage::s3::S3Store;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::output::assert_success;

pub const LIFEBOAT: &str = env!("CARGO_BIN_EXE_lifeboat");

pub fn binaries() -> PgBinaries {
    PgBinaries::find(None).expect("PostgreSQL binaries (scripts/test installs them)")
}

/// A cluster archiving with `wal-push` into the repository the test's configuration names.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub cluster: LocalCluster,
}

impl Setup {
    /// `repository` is the `[repository]` table's url line (default: a local directory), `extra`
    /// is appended to the configuration.
    pub async fn start(repository: Option<String>, extra: &str) -> Setup {
        Setup::start_in(tempfile::tempdir().unwrap(), repository, extra).await
    }

    /// A local repository and a `[verify]` table whose `scratch_dir` is [`Setup::scratch_dir`],
    /// followed by `settings` (more `[verify]` keys such as `checks = [...]`).
    pub async fn start_verifying(settings: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("scratch");
        let extra = format!("\n[verify]\nscratch_dir = \"{}\"\n{settings}\n", scratch.display());
        Setup::start_in(dir, None, &extra).await
    }

    async fn start_in(dir: tempfile::TempDir, repository: Option<String>, extra: &str) -> Setup {
        let root = dir.path().display().to_string();
        let config_path = dir.path().join("lifeboat.toml");
        let options = LocalClusterOptions::default()
            .setting("wal_level", "replica")
            .setting("archive_mode", "on")
            .setting("track_commit_timestamp", "on");
        let cluster = LocalCluster::init(&binaries(), options).await.expect("init a cluster");
        let command = format!("{LIFEBOAT} --config {} wal-push %p", config_path.display());
        let mut conf =
            std::fs::OpenOptions::new().append(true).open(cluster.data_dir().join("postgresql.conf")).unwrap();
        writeln!(conf, "{}", format_setting("archive_command", &command).unwrap()).unwrap();
        let repository = repository.unwrap_or_else(|| format!("url = \"file://{root}/repo\"\n"));
        let config = format!(
            "[cluster]\nname = \"main\"\npgdata = \"{pgdata}\"\nconnection = \"{connection}\"\n\n\
             [repository]\n{repository}key_file = \"{root}/repo.key\"\n\n[backup]\nworkers = 2\n{extra}",
            pgdata = cluster.data_dir().display(),
            connection = cluster.connection_url(),
        );
        std::fs::write(&config_path, config).unwrap();
        // Where verifications make their scratch restores; the server's OS user must reach it.
        std::fs::create_dir(dir.path().join("scratch")).unwrap();
        let mut setup = Setup { dir, cluster };
        assert_success(&setup.run(&["init"]));
        // wal-push and wal-fetch run as the server's OS user: they need the configuration, the key
        // file and the local repository.
        setup.cluster.give_to_server_user(setup.dir.path()).unwrap();
        setup.cluster.start().await.expect("start the cluster");
        // A first archived segment, so wal-push (as the server's OS user) creates the cluster's
        // record and WAL directories before a backup taken by root creates their parent.
        let mut conn = setup.connect().await;
        execute(&mut conn, "CREATE TABLE first_segment (id int)").await;
        archive_current_segment(&mut conn).await;
        setup
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("lifeboat.toml")
    }

    /// The local repository's directory (with the default repository url).
    pub fn repo_dir(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// Flips one byte in the middle of the largest data object of `backup` in the local
    /// repository; the object's key.
    pub fn damage_largest_object(&self, backup: &str) -> String {
        let data = self.repo_dir().join(format!("clusters/main/backups/{backup}/data"));
        let largest = std::fs::read_dir(&data)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .max_by_key(|path| std::fs::metadata(path).unwrap().len())
            .unwrap();
        let mut bytes = std::fs::read(&largest).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(&largest, &bytes).unwrap();
        format!("clusters/main/backups/{backup}/data/{}", largest.file_name().unwrap().to_string_lossy())
    }

    /// The `verify.scratch_dir` of [`Setup::start_verifying`]: an empty directory the server's
    /// OS user can reach.
    pub fn scratch_dir(&self) -> PathBuf {
        self.dir.path().join("scratch")
    }

    /// The built binary with `--config` and `args`, without the environment variables that would
    /// steer it elsewhere.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(LIFEBOAT);
        command.arg("--config").arg(self.config_path()).args(args);
        for (variable, _) in std::env::vars_os() {
            let name = variable.to_string_lossy();
            if name.starts_with("LIFEBOAT_") || name.starts_with("AWS_") {
                command.env_remove(&variable);
            }
        }
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs a command that must succeed and print JSON; the parsed JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let output = self.run(args);
        assert_success(&output);
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!("{args:?} printed no JSON ({error}): {}", String::from_utf8_lossy(&output.stdout))
        })
    }

    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect_with(&self.cluster.connect_options()).await.unwrap()
    }

    /// The configuration and the repository it names, opened with the key file.
    pub async fn open(&self) -> (Config, Arc<Repository>) {
        let config = Config::load(Some(&self.config_path())).unwrap();
        let repository = open_repository(&config).await;
        (config, repository)
    }

    /// A base backup through the library, with 1 MiB parts so larger relation files are stored
    /// in several objects and restored by several workers.
    pub async fn backup(&self) -> String {
        let (config, repository) = self.open().await;
        let options = BackupOptions { part_size: 1024 * 1024, ..BackupOptions::from_config(&config.backup) };
        let summary = lifeboat::backup::run(&config, repository, &options).await.unwrap_or_else(|e| panic!("{e}"));
        summary.manifest.id.to_string()
    }

    /// A directory for a restored copy that the server's OS user can use.
    pub fn restore_dir(&self, name: &str) -> PathBuf {
        self.cluster.root_dir().join(name)
    }

    /// `lifeboat restore --pgdata <dir> <args>`.
    pub fn restore(&self, pgdata: &Path, args: &[&str]) -> Output {
        let pgdata = pgdata.display().to_string();
        let mut all = vec!["restore", "--pgdata", pgdata.as_str()];
        all.extend_from_slice(args);
        self.run(&all)
    }
}

pub async fn open_repository(config: &Config) -> Arc<Repository> {
    let store: Arc<dyn ObjectStore> = match &config.repository.url {
        RepositoryUrl::Local(root) => Arc::new(LocalStore::new(root)),
        RepositoryUrl::S3 { .. } => Arc::new(S3Store::connect(config.s3_settings().unwrap()).await.unwrap()),
    };
    let unlock = Unlock::KeyFile(KeyFile::load(config.repository.key_file.as_ref().unwrap()).unwrap());
    Arc::new(Repository::open(store, Some(&unlock), WriteOptions::default()).await.unwrap())
}

pub async fn execute(conn: &mut PgConnection, sql: &str) {
    sqlx::query(AssertSqlSafe(sql.to_owned()))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
}

pub async fn scalar(conn: &mut PgConnection, sql: &str) -> String {
    sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
}

/// Switches to a new WAL segment and waits until the finished one is archived.
pub async fn archive_current_segment(conn: &mut PgConnection) {
    let segment = scalar(conn, "SELECT pg_walfile_name(pg_switch_wal())").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let archived = scalar(conn, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver").await;
        if archived.as_str() >= segment.as_str() && !archived.is_empty() {
            return;
        }
        let failed = scalar(conn, "SELECT coalesce(last_failed_wal, '') FROM pg_stat_archiver").await;
        assert!(Instant::now() < deadline, "segment {segment} was not archived in time (last failed: {failed})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
