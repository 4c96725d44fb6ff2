//! The command line: argument types (clap), and the glue from a parsed command to the library.
//!
//! `main.rs` calls [`main`]; each subcommand lives in its own file. Commands print results on
//! stdout and diagnostics on stderr, and return errors instead of exiting, so [`main`] alone maps
//! them to exit codes.

mod audit;
mod backup;
mod catalog;
mod completions;
mod config_cmd;
mod copy;
mod daemon;
mod db;
mod dump;
mod expire;
mod gate;
mod init;
mod key;
mod migrate;
mod notify;
mod progress;
mod quickstart;
mod repo;
mod restore;
mod restore_before;
mod restore_dump;
mod schema;
mod seed;
mod status;
mod table;
mod verify;
mod wal;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "lifeboat",
    version,
    about = "PostgreSQL backup and point-in-time recovery, with a migration runner gated on verified backups",
    long_about = None,
)]
pub struct Cli {
    /// Configuration file [default: $LIFEBOAT_CONFIG, else /etc/lifeboat/lifeboat.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// More detail on stderr (-v: debug, -vv: trace). LIFEBOAT_LOG=<filter> overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Read from copy NAME (a [[copies]] entry) instead of [repository]: list, info, restore, verify,
    /// wal-fetch, wal check, repo info, key, audit, delete, expire. Copies are written by `lifeboat copy` only,
    /// so backup, dump and wal-push refuse it
    #[arg(long, global = true, value_name = "NAME")]
    pub repository: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// See the whole life cycle in a minute, with no configuration: a throwaway cluster archiving
    /// its WAL, a backup, its verification by restore, an accident and a point-in-time restore
    Quickstart(quickstart::QuickstartArgs),
    /// Create a new, empty repository at repository.url with a fresh random master key
    Init(init::InitArgs),
    /// Manage the key slots that open the repository (add, list, remove, check)
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Inspect the repository
    #[command(subcommand)]
    Repo(repo::RepoCommand),
    /// Validate or display the configuration
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Take a physical base backup: pg_backup_start, a parallel copy of the data directory and its
    /// tablespaces, pg_backup_stop (run it on the database host)
    Backup(backup::BackupArgs),
    /// Archive one WAL file (PostgreSQL's archive_command)
    WalPush(wal::WalPushArgs),
    /// Restore one archived WAL file, prefetching the next ones (PostgreSQL's restore_command)
    ///
    /// Exits with status 1 and no error message when the archive does not have the file, which is
    /// how PostgreSQL learns that it has reached the end of the archive.
    WalFetch(wal::WalFetchArgs),
    /// Inspect the WAL archive
    #[command(subcommand)]
    Wal(wal::WalCommand),
    /// Take logical dumps: pg_dump of each database plus the globals, with every table's row count
    Dump(dump::DumpArgs),
    /// List the backups and dumps of the cluster, oldest first, and the archived WAL per timeline
    List(catalog::ListArgs),
    /// Show everything about one backup or dump (`latest`: the newest)
    Info(catalog::InfoArgs),
    /// Restore a base backup with point-in-time recovery (--pgdata), or one database from a dump (--dump)
    ///
    /// Chooses the newest backup that can reach the target, checks that the WAL it needs is archived,
    /// and refuses a non-empty directory (unless --delta or --force) or a running server, all before
    /// writing anything.
    Restore(Box<restore::RestoreArgs>),
    /// Prove backups and dumps restorable: read and authenticate every object, restore into a
    /// scratch server, run pg_amcheck and the checks of [verify]; the report is stored in the repository
    ///
    /// Without an id, verifies the newest base backup and the newest dump. Exits non-zero when a
    /// verification fails, naming what failed. The scratch server and files are always removed,
    /// also on failure, timeout (verify.timeout) and Ctrl-C.
    Verify(verify::VerifyArgs),
    /// Delete a backup or dump: its manifest first (it leaves listings at once), then its objects.
    /// Refuses to delete the only full backup unless --force
    Delete(catalog::DeleteArgs),
    /// Apply the retention policy ([backup] retention): delete the backups, dumps, verification
    /// reports and WAL it no longer keeps
    ///
    /// Deletes in the order that keeps every step safe to interrupt (journal entry and manifest
    /// first, then objects); the next run removes what an interrupted one left. Never deletes the
    /// newest backup whose last verification passed, nor what S3 Object Lock still retains. With
    /// --dry-run, prints what would go and, for everything that stays, the rule that keeps it.
    /// Then each copy ([[copies]]) is expired under its own `retention` (default: [backup]
    /// retention); with --repository NAME, only that copy.
    Expire(expire::ExpireArgs),
    /// Show the audit trail stored in the repository: who ran which operation, when, and how it ended
    Audit(audit::AuditArgs),
    /// Bring the copies ([[copies]]) up to date with the repository: cluster record, WAL, backups, dumps
    /// and verification reports, copied as stored and checked; resumes where an interrupted run stopped
    ///
    /// With --check, reads every object each copy holds and compares it with the primary's instead,
    /// naming each that differs (exit status 1).
    Copy(copy::CopyArgs),
    /// Run the schedules of the configuration (backups, dumps, verification, expiry, copies, the
    /// WAL check) in the foreground, as systemd's lifeboat.service does
    ///
    /// Reloads the configuration on SIGHUP (an invalid file is refused and the old one kept); on
    /// SIGTERM starts nothing new, lets running jobs finish within [daemon] shutdown_timeout, then
    /// cancels them cleanly and exits 0. docs/daemon.md describes it.
    Daemon,
    /// Test the notifications of [notify] (webhook, desktop)
    #[command(subcommand)]
    Notify(notify::NotifyCommand),
    /// Versioned SQL migrations behind the backup gate: new, status, plan, up, down, redo, validate,
    /// baseline, repair, adopt, restore-before, and their safety: lint, rehearse, diff
    /// (docs/migrations.md)
    ///
    /// Against an environment marked production, up, down and redo proceed only when a backup of
    /// the cluster passed verification by restore within [migrate] require_verified_backup_within
    /// (or take one, with take_backup_if_stale or --take), and record a restore point before each
    /// migration so `migrate restore-before VERSION` can put the database back.
    #[command(subcommand)]
    Migrate(migrate::MigrateCommand),
    /// Print the shell completion script for bash, zsh or fish
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff), or with --out DIR write one page per command into DIR
    Man(completions::ManArgs),
    /// How the backups stand: newest (verified) backup, archiver, copies, jobs; from the daemon at
    /// daemon.listen, or read directly when none answers
    ///
    /// Exits with status 1 when something needs attention: no verified backup or dump, the
    /// repository cannot be read, PostgreSQL's archiver is failing, or the daemon is unhealthy.
    Status(status::StatusArgs),
    /// Run another tool's migration command behind the backup gate, after a restore point
    ///
    /// Against a production environment, refuses unless a backup verified by restore is fresh
    /// enough (or takes one with --take) and WAL archiving works; then records a restore point,
    /// runs COMMAND with DATABASE_URL, LIFEBOAT_RESTORE_POINT and LIFEBOAT_GATE_BACKUP set, records
    /// its result in the audit log and exits with its status. docs/gate.md describes it.
    Gate(gate::GateArgs),
    /// Check the schema of an environment's database (docs/schema-check.md)
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
    /// Load an environment's seed files (SQL and CSV, in foreign-key order) and track them:
    /// run, status, rollback, clear (docs/seeds.md)
    #[command(subcommand)]
    Seed(seed::SeedCommand),
    /// Drop and recreate an environment's database, migrate and seed it (refused in production)
    #[command(subcommand)]
    Db(db::DbCommand),
}

impl Command {
    /// Commands that write backups, dumps or WAL into the repository they open: copies are written
    /// by `lifeboat copy` alone, so these refuse `--repository`.
    fn writes_primary(&self) -> Option<&'static str> {
        match self {
            Command::Backup(_) => Some("backup"),
            Command::Dump(_) => Some("dump"),
            Command::WalPush(_) => Some("wal-push"),
            Command::Copy(_) => Some("copy"),
            Command::Daemon => Some("daemon"),
            Command::Init(_) => Some("init"),
            Command::Quickstart(_) => Some("quickstart"),
            Command::Gate(_) => Some("gate"),
            _ => None,
        }
    }
}

/// Parses the command line, runs the command and maps the outcome to an exit code:
/// 0 success, 1 failure (the message on stderr), 2 bad usage (from clap).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The quickstart explains each step itself; lifeboat's progress lines would drown it. wal-push
    // writes into PostgreSQL's log once per segment: nothing there on success.
    let quiet = matches!(cli.command, Command::Quickstart(_) | Command::WalPush(_)) && cli.verbose == 0;
    // The daemon under systemd logs to the journal, with its fields.
    let journal = matches!(cli.command, Command::Daemon) && std::env::var_os("JOURNAL_STREAM").is_some();
    init_tracing(if quiet { None } else { Some(cli.verbose) }, journal);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if matches!(cli.command, Command::Daemon) {
        // The scheduler loop's timers are driven by the worker threads: on a two-core host, two
        // jobs in a blocking call (a scratch server stopping) would hold up its wake-ups and the
        // watchdog pings. A few more workers keep it on time.
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        builder.worker_threads(cores.max(DAEMON_MIN_WORKERS));
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("lifeboat: error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    silence_broken_pipe_panics();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(run(cli))));
    let Ok(outcome) = outcome else {
        // A reader that stopped reading (`lifeboat list | head`) is not a failure worth a
        // message; any other panic was already reported by the hook.
        return if BROKEN_PIPE.load(std::sync::atomic::Ordering::SeqCst) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(101)
        };
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is::<QuietExit>() => {
            ExitCode::from(error.downcast_ref::<QuietExit>().map_or(1, |quiet| quiet.code))
        }
        Err(error)
            if matches!(error.downcast_ref::<crate::ops::OpError>(), Some(crate::ops::OpError::Cancelled { .. })) =>
        {
            eprintln!("lifeboat: {error}");
            ExitCode::from(INTERRUPTED_EXIT)
        }
        Err(error) => {
            eprintln!("lifeboat: error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The fewest async worker threads the daemon runs with.
const DAEMON_MIN_WORKERS: usize = 4;

/// The exit status after a cancellation, as shells report a process ended by SIGINT.
const INTERRUPTED_EXIT: u8 = 130;

static BROKEN_PIPE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `println!` panics when stdout is a closed pipe. Keep that panic quiet (and remember it, so the
/// exit code can be 0, as for other Unix tools); report every other panic as usual.
fn silence_broken_pipe_panics() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            BROKEN_PIPE.store(true, std::sync::atomic::Ordering::SeqCst);
            return;
        }
        default_hook(info);
    }));
}

/// Not a failure, but not success either: the command has said what it had to (or nothing) and
/// the process exits with `code` without an error message. `wal-fetch` uses it for "not in the
/// archive", which PostgreSQL asks about routinely.
#[derive(Debug, thiserror::Error)]
#[error("exit status {code}")]
pub struct QuietExit {
    pub code: u8,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config_path = cli.config.as_deref();
    if let Some(name) = &cli.repository {
        if let Some(command) = cli.command.writes_primary() {
            anyhow::bail!(
                "`{command}` does not take --repository {name}: copies are written only by `lifeboat copy` (which \
                 reads [repository] and writes each copy; `lifeboat copy --to {name}`), and a copy is created \
                 with `lifeboat init --copy {name}`. Run `{command}` without --repository"
            );
        }
        let _ = READ_FROM.set(name.clone());
    }
    match cli.command {
        Command::Quickstart(_) if config_path.is_some() => {
            anyhow::bail!("quickstart takes no --config: it writes its own configuration into its workspace (--dir)")
        }
        Command::Quickstart(args) => quickstart::run(args).await,
        Command::Init(args) => init::run(config_path, args).await,
        Command::Key(command) => key::run(config_path, command).await,
        Command::Repo(command) => repo::run(config_path, command).await,
        Command::Config(command) => config_cmd::run(config_path, command).await,
        Command::Backup(args) => backup::run(config_path, args).await,
        Command::WalPush(args) => wal::push_command(config_path, args).await,
        Command::WalFetch(args) => wal::fetch_command(config_path, args).await,
        Command::Wal(command) => wal::run(config_path, command).await,
        Command::Dump(args) => dump::run(config_path, args).await,
        Command::List(args) => catalog::list(config_path, args).await,
        Command::Info(args) => catalog::info(config_path, args).await,
        Command::Delete(args) => catalog::delete(config_path, args).await,
        Command::Expire(args) => expire::run(config_path, args).await,
        Command::Restore(args) => restore::run(config_path, *args).await,
        Command::Verify(args) => verify::run(config_path, args).await,
        Command::Audit(args) => audit::run(config_path, args).await,
        Command::Copy(args) => copy::run(config_path, args).await,
        Command::Daemon => daemon::run(config_path).await,
        Command::Notify(command) => notify::run(config_path, command).await,
        Command::Completions(args) => completions::run_completions(args),
        Command::Man(args) => completions::run_man(args),
        Command::Status(args) => status::run(config_path, args).await,
        Command::Migrate(command) => migrate::run(config_path, command).await,
        Command::Gate(args) => gate::run(config_path, args).await,
        Command::Schema(command) => schema::run(config_path, command).await,
        Command::Seed(command) => seed::run(config_path, command).await,
        Command::Db(command) => db::run(config_path, command).await,
    }
}

/// The copy `--repository` named, for the whole process (one command runs per process).
static READ_FROM: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The configuration, turned into the copy's when `--repository NAME` was given.
fn load_config(config_path: Option<&std::path::Path>) -> anyhow::Result<crate::config::Config> {
    let config = crate::config::Config::load(config_path)?;
    Ok(match READ_FROM.get() {
        Some(name) => config.for_copy(name)?,
        None => config,
    })
}

/// The context of an operation: the configuration, the opened repository, and a cancellation
/// that SIGINT and SIGTERM trigger (the operation stops at a safe point and reports cancelled).
async fn operation_context(config_path: Option<&std::path::Path>) -> anyhow::Result<crate::ops::OpContext> {
    Ok(context_for(load_config(config_path)?).await?)
}

/// [`operation_context`] for a configuration already loaded.
async fn context_for(config: crate::config::Config) -> Result<crate::ops::OpContext, crate::ops::OpenError> {
    let mut context = crate::ops::open(config).await?;
    progress::install(&mut context.events);
    cancel_on_signals(&context.cancel);
    Ok(context)
}

fn cancel_on_signals(cancel: &crate::ops::Cancel) {
    use tokio::signal::unix::{SignalKind, signal};
    // Registered before the operation starts; the task only waits.
    if let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            cancel.cancel(name);
        });
    }
}

/// Logging on stderr, or to journald with `journal` (falling back to stderr when its socket is
/// not there): `verbose` is the number of `-v`s; `None` shows warnings and errors only.
fn init_tracing(verbose: Option<u8>, journal: bool) {
    let default = match verbose {
        None => "lifeboat=warn",
        Some(0) => "lifeboat=info",
        Some(1) => "lifeboat=debug",
        Some(_) => "lifeboat=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIFEBOAT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    if let Some(layer) = journal.then(|| tracing_journald::layer().ok()).flatten() {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        tracing_subscriber::registry().with(filter).with(layer.with_syslog_identifier("lifeboat".to_owned())).init();
        return;
    }
    // No colour codes unless stderr is a terminal: PostgreSQL copies wal-push's stderr into its log.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let log_writer = progress::LogWriter::for_stderr();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || log_writer)
        .with_ansi(ansi)
        .with_target(false)
        .init();
}
