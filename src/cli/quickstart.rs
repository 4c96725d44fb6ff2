//! `lifeboat quickstart`: the whole life cycle on a throwaway cluster, with no configuration.
//!
//! In one workspace directory it creates a PostgreSQL cluster that archives its WAL with
//! `lifeboat wal-push`, an encrypted local repository and the configuration naming both, loads
//! some rows, takes a base backup, verifies it by a real restore, applies the example migrations
//! of `migrations/` through the backup gate and undoes the first with `migrate restore-before`,
//! deletes the rows by "accident", restores to the moment before and shows the rows back. Each step says what it did
//! and which command does the same on a real system. The servers are stopped and removed at the
//! end (also on failure); the repository, key and configuration stay for a look around.
//!
//! As root, the servers and lifeboat's own `wal-push`/`wal-fetch` run as `postgres`, so the
//! workspace belongs to that user and this program is copied into it (a build under `/root` is
//! out of that user's reach).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use sqlx::{Connection as _, PgConnection};

use super::restore::lifeboat_command;
use crate::backup::BackupOptions;
use crate::config::Config;
use crate::keys::Unlock;
use crate::keys::slots::KeyFile;
use crate::object::Cipher;
use crate::ops::open::{connect_store, write_options};
use crate::ops::{OpContext, VerifyTarget};
use crate::postgres::binaries::PgBinaries;
use crate::postgres::cluster::{LocalCluster, LocalClusterOptions, OsUser, running_as_root};
use crate::postgres::version;
use crate::repository::Repository;
use crate::restore::target::{RecoveryGoal, RecoveryTarget, TargetAction, TimelineChoice, postgres_time};
use crate::restore::target_dir::ExistingData;
use crate::restore::{ReadAheadSpool, RestoreOptions, RestoreSummary};
use crate::util::format_bytes;
use crate::verify::VerifyOptions;

/// Rows the tour loads and then "loses".
const ORDERS: i64 = 1000;
/// The example migrations of the repository's top-level `migrations/` directory, built in so the
/// tour needs no checkout: (file name, text).
const MIGRATIONS: [(&str, &str); 4] = [
    ("20261201090000_order_status.up.sql", include_str!("../../migrations/20261201090000_order_status.up.sql")),
    ("20261201090000_order_status.down.sql", include_str!("../../migrations/20261201090000_order_status.down.sql")),
    (
        "20261201090100_orders_by_customer.up.sql",
        include_str!("../../migrations/20261201090100_orders_by_customer.up.sql"),
    ),
    (
        "20261201090100_orders_by_customer.down.sql",
        include_str!("../../migrations/20261201090100_orders_by_customer.down.sql"),
    ),
];
/// The first example migration: the one the tour undoes.
const FIRST_MIGRATION: &str = "20261201090000";

/// How long to wait for `wal-push` to archive a segment.
const ARCHIVE_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// The workspace: a new (or empty) directory [default: a new lifeboat-quickstart-<random>
    /// directory in the system's temporary directory]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Remove the workspace at the end instead of leaving the repository for a look around
    #[arg(long)]
    pub remove: bool,
    /// The OS user that runs PostgreSQL when lifeboat runs as root
    #[arg(long, value_name = "USER", default_value = "postgres")]
    pub os_user: String,
    /// The directory of the PostgreSQL server programs to run (initdb, pg_ctl, postgres), to try
    /// a particular major; it becomes the tour's `[cluster] bin_dir` [default: found through
    /// pg_config, else the newest /usr/lib/postgresql/<major>/bin]
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
}

pub async fn run(args: QuickstartArgs) -> anyhow::Result<()> {
    let binaries = PgBinaries::find(args.bin_dir.as_deref()).context(
        "the quickstart needs the PostgreSQL server binaries (initdb, pg_ctl, postgres): install them \
         (Debian/Ubuntu: `apt-get install postgresql`), put their directory on PATH, or name it with --bin-dir",
    )?;
    version::check_supported(
        binaries.major(),
        format_args!("the PostgreSQL programs in {}", binaries.dir().display()),
    )?;
    let workspace = create_workspace(args.dir.as_deref(), &args.os_user)?;
    println!("lifeboat quickstart: the life cycle of a backup on a throwaway cluster");
    println!("everything happens in {} and nothing else on this machine is touched", workspace.display());
    let tour = Tour::new(binaries, workspace.clone(), args.os_user.clone());
    let outcome = tour.run().await;
    match (&outcome, args.remove) {
        (Ok(()), true) => {
            std::fs::remove_dir_all(&workspace).with_context(|| format!("cannot remove {}", workspace.display()))?;
            println!("removed {}", workspace.display());
        }
        (Ok(()), false) => print_whats_left(&workspace),
        (Err(_), _) => eprintln!(
            "the quickstart stopped; its servers are stopped and removed, the rest is in {} for a look",
            workspace.display()
        ),
    }
    outcome
}

/// The paths of the tour and the programs it runs.
struct Tour {
    binaries: PgBinaries,
    workspace: PathBuf,
    os_user: String,
    /// This program, as the server's OS user can run it.
    exe: PathBuf,
    config_path: PathBuf,
}

impl Tour {
    fn new(binaries: PgBinaries, workspace: PathBuf, os_user: String) -> Tour {
        let config_path = workspace.join("lifeboat.toml");
        Tour { binaries, exe: PathBuf::new(), config_path, workspace, os_user }
    }

    async fn run(mut self) -> anyhow::Result<()> {
        self.exe = self.reachable_exe()?;
        let options = LocalClusterOptions::default()
            .parent_dir(&self.workspace)
            .os_user(self.os_user.clone())
            .setting("wal_level", "replica")
            .setting("archive_mode", "on")
            .setting("archive_command", lifeboat_command(&self.exe, &self.config_path, "wal-push %p"));
        step(1, "a PostgreSQL cluster that archives its WAL with lifeboat");
        let mut cluster = LocalCluster::init(&self.binaries, options).await?;
        detail("data directory", cluster.data_dir().display());
        detail("socket", format!("{} port {}", cluster.socket_dir().display(), cluster.port()));
        detail("archive_command", lifeboat_command(&self.exe, &self.config_path, "wal-push %p"));

        step(2, "an encrypted repository, and the configuration naming it");
        let config = self.write_config(&cluster)?;
        let repository = self.init_repository(&config).await?;
        // Created now so that it, too, goes to the server's OS user: wal-push appends to it.
        std::fs::File::create(self.audit_path())
            .with_context(|| format!("cannot create {}", self.audit_path().display()))?;
        cluster.give_to_server_user(&self.workspace)?;
        detail("configuration", self.config_path.display());
        detail("repository", format!("{} (AES-256-GCM)", repository.location()));
        detail("key file", format!("{} (without it the backups cannot be read)", self.key_path().display()));
        detail("same as", "lifeboat init");

        let outcome = match super::operation_context(Some(&self.config_path)).await {
            Ok(context) => self.life_cycle(&mut cluster, &context).await,
            Err(error) => Err(error),
        };
        let stopped = cluster.remove().await;
        outcome?;
        stopped?;
        let copy = self.workspace.join("bin");
        if copy.exists() {
            // The copy was for the servers' archive_command and restore_command; they are gone.
            std::fs::remove_dir_all(copy)?;
        }
        Ok(())
    }

    async fn life_cycle(&self, cluster: &mut LocalCluster, context: &OpContext) -> anyhow::Result<()> {
        cluster.start().await?;
        let mut connection = PgConnection::connect_with(&cluster.connect_options()).await?;
        step(3, "some data, and its WAL archived");
        execute(
            &mut connection,
            &format!(
                "CREATE TABLE orders (id int PRIMARY KEY, customer text NOT NULL, amount numeric(10,2) NOT NULL);
                 INSERT INTO orders SELECT g, 'customer ' || (g % 97), (g % 500) + 0.99 FROM generate_series(1, {ORDERS}) g;"
            ),
        )
        .await?;
        let segment = archive_current_segment(&mut connection).await?;
        detail("table", format!("orders: {ORDERS} rows"));
        detail("archived", format!("WAL segment {segment}, pushed by wal-push as PostgreSQL's archive_command"));

        step(4, "a base backup");
        let config = &context.config;
        let backup = crate::ops::backup(context, BackupOptions::from_config(&config.backup)).await?;
        let manifest = &backup.manifest;
        detail(
            "backup",
            format!(
                "{}: {} files, {} read, {} stored, {:.1} s",
                manifest.id,
                manifest.totals.files,
                format_bytes(manifest.totals.bytes),
                format_bytes(manifest.totals.stored_bytes),
                backup.backup_duration.as_secs_f64()
            ),
        );
        detail("same as", "lifeboat backup");

        step(5, "the backup verified by restoring it into a scratch server");
        let target = VerifyTarget::Id(manifest.id.to_string());
        let verified = crate::ops::verify(context, &target, &VerifyOptions::from_config(config)).await?;
        for report in &verified.reports {
            super::verify::print_report(report, &context.layout);
            super::verify::failure_error(report)?;
        }
        detail("same as", format!("lifeboat verify {}", manifest.id));

        self.migrate(cluster).await?;

        step(8, "an accident");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before: String = sqlx::query_scalar("SELECT clock_timestamp()::text").fetch_one(&mut connection).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        execute(&mut connection, "DELETE FROM orders").await?;
        let left = count_orders(&mut connection).await?;
        archive_current_segment(&mut connection).await?;
        connection.close().await?;
        detail("at", &before);
        detail("ran", format!("DELETE FROM orders  (no WHERE): {left} orders left"));

        step(9, "a point-in-time restore to just before the accident");
        let target = RecoveryTarget::parse_time(&before).map_err(anyhow::Error::msg)?;
        let mut restored = LocalCluster::prepare(
            &self.binaries,
            &LocalClusterOptions::default().parent_dir(&self.workspace).os_user(self.os_user.clone()),
        )?;
        let outcome = self.restore(&restored, context, target).await;
        let back = match &outcome {
            Ok(_) => count_restored(&restored).await,
            Err(_) => Ok(0),
        };
        let stopped = restored.stop().await;
        let summary = outcome?;
        let back = back?;
        stopped?;
        let reached = summary.reached.as_ref();
        detail("restored", format!("{} into {}", summary.backup, summary.pgdata.display()));
        detail(
            "time",
            format!(
                "{:.1} s writing files, {:.1} s in all to a usable server ({} WAL segment(s) replayed)",
                summary.restore_seconds,
                summary.seconds,
                reached.map_or(0, |reached| reached.segments_restored)
            ),
        );
        if let Some(stopped) = reached.and_then(|reached| reached.stopped.as_deref()) {
            detail("PostgreSQL", stopped);
        }
        detail("same as", format!("lifeboat restore --pgdata DIR --target-time '{}' --start", postgres_time(target)));

        step(10, "the accident undone");
        detail("original", format!("{left} orders (the accident happened there)"));
        detail("restored", format!("{back} orders"));
        if back != ORDERS {
            anyhow::bail!("the restored copy has {back} orders, not the {ORDERS} committed before the accident");
        }
        Ok(())
    }

    /// Steps 6 and 7: the example migrations through the gate, and the first one undone with
    /// `migrate restore-before` into a second server.
    async fn migrate(&self, cluster: &LocalCluster) -> anyhow::Result<()> {
        use super::migrate::{ChangeArgs, MigrateCommand, Target, UpArgs};
        step(6, "migrations through the gate: only after a backup proven by a restore");
        let dir = self.workspace.join("migrations");
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (name, text) in MIGRATIONS {
            std::fs::write(dir.join(name), text).with_context(|| format!("cannot write {name}"))?;
        }
        let up = UpArgs {
            change: ChangeArgs { target: Target { env: None, dir: None, json: false }, approve: true, take: false },
            to: None,
            allow_out_of_order: false,
            rollback_on_failure: false,
        };
        super::migrate::run(Some(&self.config_path), MigrateCommand::Up(up)).await?;
        let mut connection = PgConnection::connect_with(&cluster.connect_options()).await?;
        let (backup, point): (Option<String>, Option<String>) =
            sqlx::query_as("SELECT backup_id, restore_point FROM lifeboat.migrations WHERE version = $1")
                .bind(FIRST_MIGRATION)
                .fetch_one(&mut connection)
                .await?;
        let paid: i64 =
            sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'paid'").fetch_one(&mut connection).await?;
        // The restore in step 7 replays the WAL past the restore point: it must be archived.
        archive_current_segment(&mut connection).await?;
        connection.close().await?;
        detail("migrations", format!("{} in {}", MIGRATIONS.len() / 2, dir.display()));
        detail("gate", format!("passed on backup {} (verified by restore in step 5)", backup.unwrap_or_default()));
        detail("restore point", point.unwrap_or_default());
        detail("orders", format!("{paid} now have status 'paid'"));
        detail("same as", "lifeboat migrate up --approve");

        step(7, "the first migration undone: a point-in-time restore to just before it");
        let restored = LocalCluster::prepare(
            &self.binaries,
            &LocalClusterOptions::default().parent_dir(&self.workspace).os_user(self.os_user.clone()),
        )?;
        let args = super::restore_before::RestoreBeforeArgs {
            version: FIRST_MIGRATION.to_owned(),
            pgdata: Some(restored.data_dir().to_path_buf()),
            verify_only: false,
            delta: false,
            force: false,
            start: true,
            port: Some(restored.port()),
            yes: true,
            json: false,
        };
        let undone =
            super::migrate::run(Some(&self.config_path), MigrateCommand::RestoreBefore { args, env: None }).await;
        let looked = match &undone {
            Ok(()) => self.look_before_migration(cluster, restored.port()).await,
            Err(_) => Ok((0, 0)),
        };
        let mut restored = restored;
        let stopped = restored.stop().await;
        undone?;
        let (orders, columns) = looked?;
        stopped?;
        detail("restored", format!("{orders} orders, {columns} column named status (the migration is gone)"));
        detail("same as", format!("lifeboat migrate restore-before {FIRST_MIGRATION} --pgdata DIR --start"));
        Ok(())
    }

    /// The orders and the `status` columns in the server restored to before the first migration
    /// (its socket is where the tour's cluster keeps its own: the restored configuration's).
    async fn look_before_migration(&self, cluster: &LocalCluster, port: u16) -> anyhow::Result<(i64, i64)> {
        let options = cluster.connect_options().port(port);
        let mut connection = PgConnection::connect_with(&options).await?;
        let orders = count_orders(&mut connection).await?;
        let columns: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'status'",
        )
        .fetch_one(&mut connection)
        .await?;
        connection.close().await?;
        Ok((orders, columns))
    }

    async fn restore(
        &self,
        holder: &LocalCluster,
        context: &OpContext,
        target: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<RestoreSummary> {
        let options = RestoreOptions {
            pgdata: holder.data_dir().to_path_buf(),
            backup: None,
            goal: RecoveryGoal {
                target: RecoveryTarget::Time(target),
                timeline: TimelineChoice::Current,
                action: TargetAction::Promote,
                exclusive: false,
            },
            existing: ExistingData::Refuse,
            tablespace_map: Vec::new(),
            workers: 2,
            server_settings: vec![
                ("archive_mode", "off".to_owned()),
                ("unix_socket_directories", holder.socket_dir().display().to_string()),
                ("listen_addresses", String::new()),
            ],
            dry_run: false,
            start: Some(Some(holder.port())),
            restore_command: lifeboat_command(&self.exe, &self.config_path, "wal-fetch %f %p"),
            read_ahead: ReadAheadSpool::of_wal_fetch(&context.config, holder.data_dir()),
            os_user: self.os_user.clone(),
            bin_dir: Some(self.binaries.dir().to_path_buf()),
            cancel: context.cancel.token().clone(),
            progress: Default::default(),
        };
        Ok(crate::ops::restore(context, options).await?)
    }

    fn key_path(&self) -> PathBuf {
        self.workspace.join("lifeboat.key")
    }

    fn audit_path(&self) -> PathBuf {
        self.workspace.join("audit.jsonl")
    }

    fn write_config(&self, cluster: &LocalCluster) -> anyhow::Result<Config> {
        let text = format!(
            "# Written by `lifeboat quickstart` for its throwaway cluster; config/lifeboat.example.toml\n\
             # documents every key.\n\
             [cluster]\n\
             name = \"quickstart\"\n\
             pgdata = {pgdata}\n\
             connection = {connection}\n\
             bin_dir = {bin_dir}\n\
             os_user = {os_user}\n\n\
             [repository]\n\
             url = {url}\n\
             key_file = {key}\n\n\
             [verify]\n\
             scratch_dir = {scratch}\n\
             checks = [\"select count(*) = {ORDERS} from orders\"]\n\n\
             [audit]\n\
             path = {audit}\n\n\
             [migrate]\n\
             dir = {migrations}\n\
             environment = \"production\"\n\
             require_verified_backup_within = \"1h\"\n",
            pgdata = toml_string(&cluster.data_dir().display().to_string()),
            connection = toml_string(&cluster.connection_url()),
            bin_dir = toml_string(&self.binaries.dir().display().to_string()),
            os_user = toml_string(&self.os_user),
            url = toml_string(&format!("file://{}", self.workspace.join("repo").display())),
            key = toml_string(&self.key_path().display().to_string()),
            scratch = toml_string(&self.workspace.display().to_string()),
            audit = toml_string(&self.audit_path().display().to_string()),
            migrations = toml_string(&self.workspace.join("migrations").display().to_string()),
        );
        std::fs::write(&self.config_path, text)
            .with_context(|| format!("cannot write {}", self.config_path.display()))?;
        Ok(Config::load(Some(&self.config_path))?)
    }

    async fn init_repository(&self, config: &Config) -> anyhow::Result<Repository> {
        let key = KeyFile::generate(&self.key_path())?;
        let store = connect_store(config).await?;
        let unlock = Unlock::KeyFile(key);
        Ok(Repository::init(store, Cipher::Aes256Gcm, Some(&unlock), "quickstart", write_options(config)).await?)
    }

    /// This program where the server's OS user can run it: itself, or (as root, when it lives
    /// somewhere private such as `/root`) a copy in the workspace.
    fn reachable_exe(&self) -> anyhow::Result<PathBuf> {
        let exe = std::env::current_exe().context("cannot find this program's path")?;
        if !running_as_root() || runnable_by_anyone(&exe) {
            return Ok(exe);
        }
        let bin = self.workspace.join("bin");
        std::fs::create_dir_all(&bin)?;
        let copy = bin.join("lifeboat");
        std::fs::copy(&exe, &copy).with_context(|| format!("cannot copy {} to {}", exe.display(), copy.display()))?;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
        Ok(copy)
    }
}

/// Whether every user may run `exe`: it and each directory above it are executable by others.
fn runnable_by_anyone(exe: &Path) -> bool {
    exe.ancestors().all(|path| std::fs::metadata(path).is_ok_and(|metadata| metadata.permissions().mode() & 0o001 != 0))
}

/// A new workspace, reachable by the server's OS user.
fn create_workspace(dir: Option<&Path>, os_user: &str) -> anyhow::Result<PathBuf> {
    let dir = match dir {
        Some(dir) => std::path::absolute(dir)?,
        None => {
            let mut random = [0u8; 4];
            getrandom::fill(&mut random).map_err(|error| anyhow::anyhow!("no randomness: {error}"))?;
            std::env::temp_dir().join(format!("lifeboat-quickstart-{}", hex::encode(random)))
        }
    };
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        anyhow::bail!("{} is not empty; give --dir a new or empty directory", dir.display());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    if running_as_root() {
        let user = OsUser::lookup(os_user)?;
        std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid))?;
    }
    Ok(dir)
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn step(number: u32, title: &str) {
    println!();
    println!("{number}. {title}");
}

fn detail(label: &str, value: impl std::fmt::Display) {
    println!("   {label:<16} {value}");
}

async fn execute(connection: &mut PgConnection, sql: &str) -> anyhow::Result<()> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(connection).await?;
    Ok(())
}

async fn count_orders(connection: &mut PgConnection) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(connection).await?)
}

async fn count_restored(restored: &LocalCluster) -> anyhow::Result<i64> {
    let mut connection = PgConnection::connect_with(&restored.connect_options()).await?;
    let count = count_orders(&mut connection).await;
    connection.close().await?;
    count
}

/// Switches to a new WAL segment and waits until `wal-push` has archived the old one.
async fn archive_current_segment(connection: &mut PgConnection) -> anyhow::Result<String> {
    let segment: String =
        sqlx::query_scalar("SELECT pg_walfile_name(pg_switch_wal())").fetch_one(&mut *connection).await?;
    let began = Instant::now();
    loop {
        let (archived, failed): (Option<String>, Option<String>) =
            sqlx::query_as("SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver")
                .fetch_one(&mut *connection)
                .await?;
        if archived.as_deref().is_some_and(|archived| archived >= segment.as_str()) {
            return Ok(segment);
        }
        if began.elapsed() > ARCHIVE_WAIT {
            anyhow::bail!(
                "WAL segment {segment} was not archived within {} s (last failure: {}); the server log says why",
                ARCHIVE_WAIT.as_secs(),
                failed.as_deref().unwrap_or("none")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_whats_left(workspace: &Path) {
    let config = workspace.join("lifeboat.toml");
    println!();
    println!("done. Both servers are stopped and removed; what is left in {}:", workspace.display());
    println!("   lifeboat.toml    the configuration of this tour (a real one: config/lifeboat.example.toml)");
    println!("   lifeboat.key     the key that opens the repository");
    println!("   repo/            the repository: the backup, its verification report, the archived WAL,");
    println!("                    and the audit trail");
    println!("   audit.jsonl      the audit trail on this host: one line per operation");
    println!("look around:");
    println!("   lifeboat --config {} list", config.display());
    println!("   lifeboat --config {} info latest", config.display());
    println!("   lifeboat --config {} audit", config.display());
    println!("remove it all:");
    println!("   rm -rf {}", workspace.display());
}
