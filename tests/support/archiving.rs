//! A real cluster that archives its WAL into the repository of the test's configuration with the
//! built binary's `wal-push`, as in production (or with `cp` into a directory, for tests that must
//! not depend on `wal-push`): what the backup, catalog, restore and verify tests start from.
//!
//! Tests run as root and the server as `postgres`, so with `wal-push` the test's directory
//! (configuration, key file, local repository, scratch directory) is given to that user once the
//! repository exists.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat::backup::{BackupOptions, BackupSummary};
use lifeboat::catalog::layout::ClusterLayout;
use lifeboat::config::{ClusterName, Config};
use lifeboat::keys::Unlock;
use lifeboat::keys::slots::KeyFile;
use lifeboat::object::WriteOptions;
use lifeboat::postgres::binaries::PgBinaries;
use lifeboat::postgres::cluster::{LocalCluster, LocalClusterOptions, format_setting};
use lifeboat::repository::Repository;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::output::assert_success;
use super::postgres;
use super::s3::{ACCESS_KEY, S3Server, SECRET_KEY};

pub const LIFEBOAT: &str = env!("CARGO_BIN_EXE_lifeboat");

pub fn binaries() -> PgBinaries {
    PgBinaries::find(None).expect("PostgreSQL binaries (scripts/test installs them)")
}

/// The layout of the cluster every test configuration names, `main`.
pub fn layout() -> ClusterLayout {
    ClusterLayout::new(&ClusterName::parse("main").unwrap())
}

/// How WAL leaves the test cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Archiving {
    /// The built binary's `wal-push`, into the test's repository. The test's directory is given
    /// to the server's OS user, and a first segment is archived before [`Setup::with`] returns.
    #[default]
    WalPush,
    /// `cp` into [`Setup::archive_dir`] (outside the data directory, so a backup does not copy
    /// the archive); the test's directory stays root's.
    Copy,
}

/// How [`Setup::with`] makes the cluster and its configuration. Besides what is set here the
/// server has `wal_level = replica` and `archive_mode = on`, and the configuration names cluster
/// `main` with the server's data directory and connection, a key file, `[backup]
/// workers = 2`, and the audit log in the test's directory ([`Setup::audit_path`]).
#[derive(Debug, Clone, Default)]
pub struct Options {
    archiving: Archiving,
    /// The major of [`Options::postgres`]; `None` finds the programs as lifeboat does.
    postgres: Option<u32>,
    settings: Vec<(String, String)>,
    hba: Option<String>,
    repository: Option<String>,
    connection_params: String,
    lock_wait: Option<String>,
    extra: String,
}

impl Options {
    pub fn new() -> Options {
        Options::default()
    }

    /// What the restore and verify tests use: `wal-push`, and commit timestamps kept (restores
    /// to a time name commits).
    pub fn restorable() -> Options {
        Options::new().setting("track_commit_timestamp", "on")
    }

    pub fn archiving(mut self, archiving: Archiving) -> Options {
        self.archiving = archiving;
        self
    }

    /// Runs PostgreSQL `major` (tests/support/postgres.rs): the cluster is made with its programs,
    /// the configuration names them in `[cluster] bin_dir` (except for the default major, whose
    /// programs lifeboat finds by itself), and the lifeboat commands of the setup find
    /// PostgreSQL 18's client programs at the end of their `PATH`, as an operator's would.
    pub fn postgres(mut self, major: u32) -> Options {
        self.postgres = Some(major);
        self
    }

    /// One more server setting.
    pub fn setting(mut self, name: &str, value: &str) -> Options {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Replaces the server's pg_hba.conf with `text` before it starts.
    pub fn hba(mut self, text: &str) -> Options {
        self.hba = Some(text.to_owned());
        self
    }

    /// The `[repository]` table's url line (default: a local directory, [`Setup::repo_dir`]).
    pub fn repository(mut self, url_line: &str) -> Options {
        self.repository = Some(url_line.to_owned());
        self
    }

    /// A repository in `bucket` (under `prod`) of a running S3-compatible server, with its
    /// `[repository.s3]` table.
    pub fn s3(self, server: &S3Server, bucket: &str) -> Options {
        self.s3_at(&server.endpoint(), bucket, "")
    }

    /// As [`Options::s3`], reached at `endpoint` (a fault proxy in front of the server), with an
    /// attempt budget of 5 (`max_attempts`) for what the proxy breaks.
    pub fn s3_through(self, endpoint: &str, bucket: &str) -> Options {
        self.s3_at(endpoint, bucket, "max_attempts = 5\n")
    }

    fn s3_at(self, endpoint: &str, bucket: &str, more: &str) -> Options {
        let table = format!(
            "\n[repository.s3]\nendpoint = \"{endpoint}\"\nforce_path_style = true\n{more}\
             access_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n"
        );
        self.repository(&format!("url = \"s3://{bucket}/prod\"\n")).extra(&table)
    }

    /// Appended to the cluster's connection url in the configuration (`&name=value...`).
    pub fn connection_params(mut self, params: &str) -> Options {
        self.connection_params.push_str(params);
        self
    }

    /// `backup.lock_wait`: how long a backup waits for another one's lease.
    pub fn lock_wait(mut self, wait: &str) -> Options {
        self.lock_wait = Some(wait.to_owned());
        self
    }

    /// Appended to the configuration file (more tables).
    pub fn extra(mut self, text: &str) -> Options {
        self.extra.push_str(text);
        self
    }
}

/// A running cluster archiving its WAL, and a test directory with `lifeboat.toml`, a key file,
/// and (with the default repository) the initialised repository.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub cluster: LocalCluster,
    /// Where `cp` archives to, with [`Archiving::Copy`].
    archive: Option<PathBuf>,
    /// The `PATH` of the setup's lifeboat commands, with [`Options::postgres`].
    path: Option<std::ffi::OsString>,
}

impl Setup {
    /// What the restore tests start from: [`Options::restorable`] with a local repository.
    pub async fn start() -> Setup {
        Setup::with(Options::restorable()).await
    }

    /// As [`Setup::start`], with a `[verify]` table whose `scratch_dir` is
    /// [`Setup::scratch_dir`], followed by `settings` (more `[verify]` keys such as
    /// `checks = [...]`).
    pub async fn start_verifying(settings: &str) -> Setup {
        Setup::verifying(Options::restorable(), settings).await
    }

    /// [`Setup::start_verifying`] on top of `options` (an S3 repository, say).
    pub async fn verifying(options: Options, settings: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("scratch");
        let extra = format!("\n[verify]\nscratch_dir = \"{}\"\n{settings}\n", scratch.display());
        Setup::start_in(dir, options.extra(&extra)).await
    }

    pub async fn with(options: Options) -> Setup {
        Setup::start_in(tempfile::tempdir().unwrap(), options).await
    }

    async fn start_in(dir: tempfile::TempDir, options: Options) -> Setup {
        let root = dir.path().display().to_string();
        let config_path = dir.path().join("lifeboat.toml");
        let mut cluster_options =
            LocalClusterOptions::default().setting("wal_level", "replica").setting("archive_mode", "on");
        for (name, value) in &options.settings {
            cluster_options = cluster_options.setting(name, value);
        }
        let binaries = options.postgres.map_or_else(binaries, postgres::binaries);
        let cluster = LocalCluster::init(&binaries, cluster_options).await.expect("init a cluster");
        let (command, archive) = match options.archiving {
            Archiving::WalPush => (format!("{LIFEBOAT} --config {} wal-push %p", config_path.display()), None),
            Archiving::Copy => {
                let archive = cluster.root_dir().join("archive");
                std::fs::create_dir(&archive).unwrap();
                cluster.give_to_server_user(&archive).unwrap();
                (format!("test ! -f {0}/%f && cp %p {0}/%f", archive.display()), Some(archive))
            }
        };
        let mut conf =
            std::fs::OpenOptions::new().append(true).open(cluster.data_dir().join("postgresql.conf")).unwrap();
        writeln!(conf, "{}", format_setting("archive_command", &command).unwrap()).unwrap();
        if let Some(hba) = &options.hba {
            std::fs::write(cluster.data_dir().join("pg_hba.conf"), hba).unwrap();
        }
        let repository = options.repository.unwrap_or_else(|| format!("url = \"file://{root}/repo\"\n"));
        let lock_wait = options.lock_wait.map(|wait| format!("lock_wait = \"{wait}\"\n")).unwrap_or_default();
        let bin_dir = match options.postgres {
            Some(major) if major != postgres::DEFAULT_MAJOR => format!("bin_dir = \"{}\"\n", binaries.dir().display()),
            _ => String::new(),
        };
        let config = format!(
            "[cluster]\nname = \"main\"\npgdata = \"{pgdata}\"\nconnection = \"{connection}{params}\"\n{bin_dir}\n\
             [repository]\n{repository}key_file = \"{root}/repo.key\"\n\n[backup]\nworkers = 2\n{lock_wait}{extra}\n\
             [audit]\npath = \"{root}/audit.jsonl\"\n",
            pgdata = cluster.data_dir().display(),
            connection = cluster.connection_url(),
            params = options.connection_params,
            extra = options.extra,
        );
        std::fs::write(&config_path, config).unwrap();
        // Where verifications make their scratch restores; the server's OS user must reach it.
        std::fs::create_dir(dir.path().join("scratch")).unwrap();
        let path = options.postgres.map(|_| postgres::path_with_clients());
        let mut setup = Setup { dir, cluster, archive, path };
        assert_success(&setup.run(&["init"]));
        if options.archiving == Archiving::WalPush {
            // wal-push and wal-fetch run as the server's OS user: they need the configuration, the
            // key file and the local repository.
            setup.cluster.give_to_server_user(setup.dir.path()).unwrap();
        }
        setup.cluster.start().await.expect("start the cluster");
        if options.archiving == Archiving::WalPush {
            // A first archived segment, so wal-push (as the server's OS user) creates the cluster's
            // record and WAL directories before a backup taken by root creates their parent.
            let mut conn = setup.connect().await;
            execute(&mut conn, "CREATE TABLE first_segment (id int)").await;
            archive_current_segment(&mut conn).await;
        }
        setup
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("lifeboat.toml")
    }

    /// The local audit log (`[audit] path`).
    pub fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    /// The local repository's directory (with the default repository url).
    pub fn repo_dir(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// Flips one byte in the middle of the largest data object of `backup` in the local
    /// repository; the object's key.
    pub fn damage_largest_object(&self, backup: &str) -> String {
        flip_largest_data_object(&self.repo_dir(), backup)
    }

    /// The `verify.scratch_dir` of [`Setup::start_verifying`]: an empty directory the server's
    /// OS user can reach.
    pub fn scratch_dir(&self) -> PathBuf {
        self.dir.path().join("scratch")
    }

    /// Where WAL is archived to with [`Archiving::Copy`].
    pub fn archive_dir(&self) -> Option<&Path> {
        self.archive.as_deref()
    }

    /// The built binary with this test's configuration and `args`; see [`lifeboat_command`]. What
    /// it remembers of the repository's journal is kept in the test's directory ([`Setup::state_dir`]).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = lifeboat_command(&self.config_path(), args);
        command.env("LIFEBOAT_STATE_DIR", self.state_dir());
        if let Some(path) = &self.path {
            command.env("PATH", path);
        }
        command
    }

    /// Where the commands of [`Setup::command`] remember the newest journal entries they saw.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
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

    pub fn config(&self) -> Config {
        Config::load(Some(&self.config_path())).unwrap()
    }

    /// The repository the configuration names, opened with the key file.
    pub async fn repository(&self) -> Arc<Repository> {
        open_repository(&self.config()).await
    }

    /// The configuration and the repository it names, opened with the key file.
    pub async fn open(&self) -> (Config, Arc<Repository>) {
        let config = self.config();
        let repository = open_repository(&config).await;
        (config, repository)
    }

    /// A base backup through the library, with the configuration's options as `adjust` leaves
    /// them.
    pub async fn backup_with(&self, adjust: impl FnOnce(&mut BackupOptions)) -> BackupSummary {
        let (config, repository) = self.open().await;
        let mut options = BackupOptions::from_config(&config.backup);
        adjust(&mut options);
        lifeboat::backup::run(&config, repository, &options)
            .await
            .unwrap_or_else(|error| panic!("backup failed: {error}"))
    }

    /// A base backup through the library, with 1 MiB parts so larger relation files are stored
    /// in several objects and restored by several workers; its id.
    pub async fn backup(&self) -> String {
        self.backup_with(|options| options.part_size = 1024 * 1024).await.manifest.id.to_string()
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

/// The built binary with `--config <config>` and `args`, without the environment variables that
/// would steer it (or the PostgreSQL programs it runs) elsewhere.
pub fn lifeboat_command(config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(LIFEBOAT);
    command.arg("--config").arg(config).args(args);
    without_steering_env(&mut command);
    command
}

/// Removes from `command`'s environment the `LIFEBOAT_`, `AWS_` and `PG` variables of the test
/// process.
pub fn without_steering_env(command: &mut Command) -> &mut Command {
    for (variable, _) in std::env::vars_os() {
        let name = variable.to_string_lossy();
        if name.starts_with("LIFEBOAT_") || name.starts_with("AWS_") || name.starts_with("PG") {
            command.env_remove(&variable);
        }
    }
    command
}

/// The repository `config` names, opened with its key file, writing with its compression (and
/// its Object Lock, as the CLI would).
pub async fn open_repository(config: &Config) -> Arc<Repository> {
    let store = lifeboat::ops::open::connect_store(config).await.unwrap();
    let unlock = Unlock::KeyFile(KeyFile::load(config.repository.key_file.as_ref().unwrap()).unwrap());
    let compression = config.repository.compression;
    let options =
        WriteOptions { compression: compression.algorithm, level: compression.level, ..WriteOptions::default() };
    Arc::new(Repository::open(store, Some(&unlock), options).await.unwrap())
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
///
/// A transaction with an xid is committed first, in its own statement, so the switch always has
/// a record to close a segment after: with no WAL written since the last switch (right after a
/// backup), `pg_switch_wal()` does nothing and returns a position whose segment is not the one
/// the archiver reports next, and the wait would run out on PostgreSQL 17 and 18.
pub async fn archive_current_segment(conn: &mut PgConnection) {
    archive_current_segment_within(conn, Duration::from_secs(60)).await;
}

/// [`archive_current_segment`] with a deadline of `limit`. Once an attempt has failed, each look
/// also reloads the configuration: after three failures the archiver sleeps for up to a minute,
/// and a reload wakes it.
pub async fn archive_current_segment_within(conn: &mut PgConnection, limit: Duration) {
    scalar(conn, "SELECT txid_current()::text").await;
    let segment = scalar(conn, "SELECT pg_walfile_name(pg_switch_wal())").await;
    let deadline = Instant::now() + limit;
    loop {
        let archived = scalar(conn, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver").await;
        if archived.as_str() >= segment.as_str() && !archived.is_empty() {
            return;
        }
        let failed = scalar(conn, "SELECT coalesce(last_failed_wal, '') FROM pg_stat_archiver").await;
        assert!(
            Instant::now() < deadline,
            "segment {segment} was not archived within {limit:?} (last failed: {failed})"
        );
        if !failed.is_empty() {
            scalar(conn, "SELECT pg_reload_conf()::text").await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Flips one byte in the middle of the largest data object of backup `id` in the local
/// repository at `repo_dir`; the object's key.
pub fn flip_largest_data_object(repo_dir: &Path, id: &str) -> String {
    let data = repo_dir.join(format!("clusters/main/backups/{id}/data"));
    let largest = std::fs::read_dir(&data)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .max_by_key(|path| std::fs::metadata(path).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&largest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&largest, &bytes).unwrap();
    format!("clusters/main/backups/{id}/data/{}", largest.file_name().unwrap().to_string_lossy())
}
