//! `lifeboat migrate new | status | plan | up | down | redo | validate | baseline | repair |
//! restore-before | adopt`: the migration runner over `[migrate] dir`, against one environment
//! (`--env`, default `[migrate] environment`).
//!
//! Every command that changes the database takes the migration lock first (polling, see
//! [`crate::migrate::lock`]) and reads the history under it, so two runners started at once
//! apply each migration once. Against a production environment, `up`, `down` and `redo` need the
//! environment's name typed at a terminal or `--approve`, and the backup gate (G7).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use sqlx::postgres::PgConnection;

use super::QuietExit;
use super::restore_before::{RestoreBeforeArgs, Undo};
use crate::config::{Config, Environment, MigrationLayout, ServerVersion};
use crate::migrate::adopt::{self, ForeignState};
use crate::migrate::export::ExportedRow;
use crate::migrate::gate::{self, GateRequest, RestorePoint};
use crate::migrate::history::{self, Row};
use crate::migrate::lint::{self, Finding, LintSettings};
use crate::migrate::plan::{Plan, State, short};
use crate::migrate::run::{Direction, GateRecord, RunError, Runner};
use crate::migrate::source::{self, Directory, Migration};
use crate::migrate::{export, lock, rehearse};
use crate::ops::OpContext;
use crate::ops::audit::AuditLog;
use crate::ops::event::EventSink;
use crate::report::lint::{LintRule, LintRulesView, LintSummary, LintView, render as lint_render, summary_line};
use crate::report::migrate::{
    MigrateChangeView, MigratePlanView, MigrateRunView, MigrateStatusView, MigrateValidateView, PlanRehearsal,
    PlannedMigration,
};
use crate::report::rehearse::MigrateRehearseView;
use crate::report::to_json;

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Create <version>_<name>.up.sql and .down.sql in the migration directory (timestamped
    /// versions, or the next number when the directory is numbered sequentially)
    New(NewArgs),
    /// Every migration and its state: applied, pending, failed, modified since applied, missing
    Status(Target),
    /// Dry run: for each pending migration its statements with their lint findings (and the last
    /// rehearsal's timings), whether it runs in a transaction, and the gate's verdict; changes nothing
    Plan(UpArgs),
    /// Apply the pending migrations, each in its own transaction with its history row
    Up(UpArgs),
    /// Revert applied migrations with their down files, newest first (one without --to/--steps)
    Down(DownArgs),
    /// Revert the newest applied migration and apply it again
    Redo(ChangeArgs),
    /// Check the directory (duplicates, gaps, files between applied ones) and that applied files
    /// are unchanged; exits 1 on any problem
    Validate(Target),
    /// Record every migration up to VERSION as applied without running it (a database whose schema
    /// already has them)
    Baseline(BaselineArgs),
    /// After a failed migration: clear its failed row so a fixed file can run again (or record it
    /// as applied with --mark-applied), and record the new checksums of edited applied files
    Repair(RepairArgs),
    /// Undo migration VERSION and everything after it: a point-in-time restore to the restore point
    /// recorded just before it (says what would be lost first)
    RestoreBefore {
        #[command(flatten)]
        args: RestoreBeforeArgs,
        /// The environment ([migrate] environment or a [migrate.environments.NAME])
        #[arg(long = "env", value_name = "NAME")]
        env: Option<String>,
    },
    /// Continue from another tool's migrations: read its directory and history table and record
    /// what it applied, so `migrate up` applies only the rest
    Adopt(AdoptArgs),
    /// Check migrations for statements that block, rewrite or break a live database, graded by
    /// the real size of the tables they touch; exits 1 on an error nobody allowed
    Lint(LintArgs),
    /// Apply the pending migrations to a restore of the newest verified backup, replayed to the
    /// latest archived WAL: time, locks, rewrites, WAL and rows per statement, and each down file
    /// proven (up, down, up); changes nothing but a scratch server, removed afterwards
    Rehearse(Target),
    /// Write a new migration pair that takes the schema the migrations build to the one FILE
    /// describes (and back), proven on a scratch server; nothing is written when they agree
    Diff(DiffArgs),
}

/// Which environment and directory a command works on.
#[derive(Debug, Args)]
pub struct Target {
    /// The environment ([migrate] environment or a [migrate.environments.NAME])
    #[arg(long = "env", value_name = "NAME")]
    pub env: Option<String>,
    /// The migration directory [default: [migrate] dir]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print the result as JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The migration's name: lower-case letters, digits and _
    pub name: String,
    /// The migration directory [default: [migrate] dir]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// What every command that changes the database takes.
#[derive(Debug, Args)]
pub struct ChangeArgs {
    #[command(flatten)]
    pub target: Target,
    /// Proceed against a production environment without the typed confirmation (for pipelines)
    #[arg(long)]
    pub approve: bool,
    /// When the newest verified backup is too old, take one and verify it first (as
    /// take_backup_if_stale = true)
    #[arg(long)]
    pub take: bool,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub change: ChangeArgs,
    /// Apply the pending migrations up to and including VERSION only
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    /// Also apply pending migrations that sort before applied ones
    #[arg(long)]
    pub allow_out_of_order: bool,
    /// When a migration fails, revert the ones this run applied (newest first) with their down files
    #[arg(long)]
    pub rollback_on_failure: bool,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    #[command(flatten)]
    pub change: ChangeArgs,
    /// Revert every applied migration newer than VERSION (VERSION itself stays)
    #[arg(long, value_name = "VERSION", conflicts_with = "steps")]
    pub to: Option<String>,
    /// Revert this many migrations [default: 1]
    #[arg(long, value_name = "N")]
    pub steps: Option<usize>,
}

#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// The newest version the schema already has
    pub version: String,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Args)]
pub struct RepairArgs {
    #[command(flatten)]
    pub target: Target,
    /// Record the failed migration VERSION as applied (you completed it by hand) instead of
    /// clearing its row
    #[arg(long, value_name = "VERSION")]
    pub mark_applied: Option<String>,
}

#[derive(Debug, Args)]
pub struct AdoptArgs {
    /// The tool whose migrations these are: sqlx, prisma, drizzle, golang-migrate, dbmate, flyway
    /// [default: detected from the directory]
    #[arg(long, value_name = "TOOL")]
    pub from: Option<String>,
    /// The tool's migration directory [default: [migrate] dir]
    pub dir: Option<PathBuf>,
    /// The environment ([migrate] environment or a [migrate.environments.NAME])
    #[arg(long = "env", value_name = "NAME")]
    pub env: Option<String>,
    /// Print the result as JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Files to lint [default: the pending migrations of the environment; with --offline, every
    /// migration of the directory]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub target: Target,
    /// List the rules (name, category, severity without a database, fix) and exit
    #[arg(long)]
    pub rules: bool,
    /// Do not connect to a database: findings are not graded by table size
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The desired schema: a plain SQL file of CREATE statements
    #[arg(long = "to", value_name = "FILE")]
    pub to: PathBuf,
    /// The new migration's name: lower-case letters, digits and _
    pub name: String,
    #[command(flatten)]
    pub target: Target,
}

pub async fn run(config_path: Option<&Path>, command: MigrateCommand) -> anyhow::Result<()> {
    let config = match super::load_config(config_path) {
        Err(error) if matches!(&command, MigrateCommand::Lint(args) if args.offline) && is_default_missing(&error) => {
            eprintln!(
                "no configuration file at the default location: linting with the default [migrate] and [migrate.lint] \
                 settings (pass --config to use yours)"
            );
            Config::from_toml("[cluster]\nname = \"offline\"\n", Path::new("(defaults)"), &|_| None)?
        }
        result => result?,
    };
    match command {
        MigrateCommand::New(args) => new(&config, args),
        MigrateCommand::Status(target) => status(&config, target).await,
        MigrateCommand::Validate(target) => validate(&config, target).await,
        MigrateCommand::Plan(args) => plan(&config, args).await,
        MigrateCommand::Up(args) => up(&config, args).await,
        MigrateCommand::Down(args) => down(&config, args).await,
        MigrateCommand::Redo(args) => redo(&config, args).await,
        MigrateCommand::Baseline(args) => baseline(&config, args).await,
        MigrateCommand::Repair(args) => repair(&config, args).await,
        MigrateCommand::Adopt(args) => adopt(&config, args).await,
        MigrateCommand::RestoreBefore { args, env } => restore_before(&config, env, args).await,
        MigrateCommand::Lint(args) => lint(&config, args).await,
        MigrateCommand::Rehearse(target) => rehearse(&config, target).await,
        MigrateCommand::Diff(args) => diff(&config, args).await,
    }
}

fn new(config: &Config, args: NewArgs) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(|| config.migrate.dir.clone());
    let created = source::create(&dir, &args.name, chrono::Utc::now())?;
    for path in created {
        println!("created {}", path.display());
    }
    Ok(())
}

/// An environment's database, connected, with the directory read.
struct Session<'a> {
    environment: &'a Environment,
    directory: Directory,
    conn: PgConnection,
    server: ServerVersion,
}

impl<'a> Session<'a> {
    async fn open(config: &'a Config, target: &Target) -> anyhow::Result<Session<'a>> {
        Session::open_with_layout(config, target, config.migrate.layout).await
    }

    /// As [`Session::open`], reading the directory as `layout` lays it out (`None`: detected).
    async fn open_with_layout(
        config: &'a Config,
        target: &Target,
        layout: Option<MigrationLayout>,
    ) -> anyhow::Result<Session<'a>> {
        let environment = config.migrate.environment(target.env.as_deref()).map_err(anyhow::Error::msg)?;
        let dir = target.dir.clone().unwrap_or_else(|| config.migrate.dir.clone());
        let directory = source::read(&dir, layout)?;
        let mut conn = crate::postgres::connect::connect(&environment.connection).await?;
        let num: String = sqlx::query_scalar("SHOW server_version_num").fetch_one(&mut conn).await?;
        let server = ServerVersion::from_num(num.trim().parse().context("server_version_num is not a number")?);
        if let Some(minimum) = environment.min_server_version
            && server < minimum
        {
            anyhow::bail!(
                "environment {} runs PostgreSQL {server}, older than min_server_version = {minimum}; upgrade the \
                 server, or lower min_server_version in [migrate] if the migrations are written for it",
                environment.name
            );
        }
        Ok(Session { environment, directory, conn, server })
    }

    async fn history(&mut self) -> anyhow::Result<Vec<Row>> {
        history::read(&mut self.conn, &self.environment.history_table)
            .await
            .with_context(|| format!("cannot read the migration history {}", self.environment.history_table))
    }

    /// Takes the migration lock (saying so when another runner has it) and makes sure the
    /// history table exists.
    async fn lock(&mut self) -> anyhow::Result<()> {
        let table = self.environment.history_table.clone();
        let wait = self.environment.lock_wait;
        lock::acquire(&mut self.conn, &table, wait, |holder| {
            eprintln!(
                "waiting for the migration lock of this database, held by PostgreSQL backend {holder} (another \
                 lifeboat migrate), for at most {}",
                crate::config::format_duration(wait)
            )
        })
        .await?;
        history::ensure(&mut self.conn, &table)
            .await
            .with_context(|| format!("cannot create the migration history table {table}"))?;
        Ok(())
    }
}

/// The event sink of a migration run: the local audit trail, mirrored into the repository when
/// one is open.
fn events_for(config: &Config, context: Option<&OpContext>) -> EventSink {
    match context {
        Some(context) => context.events.clone(),
        None => {
            let layout = crate::catalog::layout::ClusterLayout::new(&config.cluster.name);
            EventSink::new(AuditLog::new(config.audit.path.clone(), &layout, None))
        }
    }
}

async fn status(config: &Config, target: Target) -> anyhow::Result<()> {
    let mut session = Session::open(config, &target).await?;
    let rows = session.history().await?;
    let plan = Plan::new(&session.directory, &rows);
    let mut problems: Vec<String> = plan.refusals(false);
    problems.extend(missing_files(&plan));
    let view = MigrateStatusView {
        environment: session.environment.name.clone(),
        production: session.environment.production,
        history_table: session.environment.history_table.to_string(),
        layout: session.directory.layout.as_str(),
        directory: session.directory.path.display().to_string(),
        migrations: plan.entries.clone(),
        problems: problems.clone(),
    };
    if target.json {
        println!("{}", to_json(&view));
    } else {
        print_status(&view);
    }
    if problems.is_empty() { Ok(()) } else { Err(QuietExit { code: 1 }.into()) }
}

fn missing_files(plan: &Plan<'_>) -> Vec<String> {
    plan.entries
        .iter()
        .filter(|entry| entry.state == State::Missing)
        .map(|entry| {
            format!(
                "migration {} ({}) is in the history but its file is gone from the directory; restore it (git) so it \
                 can be reverted and checked",
                entry.version, entry.name
            )
        })
        .collect()
}

fn print_status(view: &MigrateStatusView) {
    println!(
        "environment {} · {} migrations in {} ({}) · history {}",
        view.environment,
        view.migrations.len(),
        view.directory,
        view.layout,
        view.history_table
    );
    for entry in &view.migrations {
        let when = entry
            .row
            .as_ref()
            .map(|row| format!("  {}", row.applied_at.format("%Y-%m-%d %H:%M:%S UTC")))
            .unwrap_or_default();
        println!("  {:<13} {} {}{when}", entry.state.as_str(), entry.version, entry.name);
    }
    for problem in &view.problems {
        println!("\n{problem}");
    }
}

async fn validate(config: &Config, target: Target) -> anyhow::Result<()> {
    let mut session = Session::open(config, &target).await?;
    let rows = session.history().await?;
    let plan = Plan::new(&session.directory, &rows);
    let mut problems = plan.refusals(false);
    problems.extend(missing_files(&plan));
    for migration in &session.directory.migrations {
        for script in std::iter::once(&migration.up).chain(migration.down.as_ref()) {
            if let Err(error) = crate::migrate::run::check_script(script) {
                problems.push(error.to_string());
            }
        }
    }
    if target.json {
        println!(
            "{}",
            to_json(&MigrateValidateView {
                migrations: session.directory.migrations.len(),
                problems: problems.clone()
            })
        );
    } else if problems.is_empty() {
        println!(
            "{} migrations in {}: no problems",
            session.directory.migrations.len(),
            session.directory.path.display()
        );
    } else {
        for problem in &problems {
            println!("{problem}\n");
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(QuietExit { code: 1 }.into()) }
}

/// The migrations `up` would apply, in order, after every check that needs no change.
fn pending<'d>(plan: &Plan<'d>, args: &UpArgs) -> anyhow::Result<Vec<&'d Migration>> {
    let refusals = plan.refusals(args.allow_out_of_order);
    if !refusals.is_empty() {
        anyhow::bail!("{}", refusals.join("\n\n"));
    }
    let mut pending = plan.pending(args.allow_out_of_order);
    if let Some(to) = &args.to {
        let to = source::Version::parse(to).map_err(anyhow::Error::msg)?;
        if !plan.directory.migrations.iter().any(|migration| migration.version == to) {
            anyhow::bail!("--to {to}: there is no migration {to} in {}", plan.directory.path.display());
        }
        pending.retain(|migration| migration.version <= to);
    }
    for migration in &pending {
        crate::migrate::run::check_script(&migration.up)?;
    }
    Ok(pending)
}

/// `after = [...]`: every migration about to be applied must have succeeded in those
/// environments first, with the same file.
async fn check_after(config: &Config, environment: &Environment, migrations: &[&Migration]) -> anyhow::Result<()> {
    for name in &environment.after {
        let before = config.migrate.environment(Some(name)).map_err(anyhow::Error::msg)?;
        let mut conn = crate::postgres::connect::connect(&before.connection)
            .await
            .with_context(|| format!("environment {} must run each migration first (after = [...])", before.name))?;
        let rows = history::read(&mut conn, &before.history_table).await?;
        crate::migrate::run::close(conn).await;
        for migration in migrations {
            match rows.iter().find(|row| row.version == migration.version.as_str()) {
                Some(row) if row.success && row.checksum == migration.up.checksum => {}
                Some(row) if row.success => anyhow::bail!(
                    "migration {} ({}) ran in {} with another file (checksum {} there, {} here); apply this file there \
                     first (after = [{:?}])",
                    migration.version,
                    migration.name,
                    before.name,
                    short(&row.checksum),
                    short(&migration.up.checksum),
                    before.name
                ),
                _ => anyhow::bail!(
                    "migration {} ({}) has not been applied successfully in {} yet, and {} requires it first (after = \
                     [{:?}]); run `lifeboat migrate up --env {}` first",
                    migration.version,
                    migration.name,
                    before.name,
                    environment.name,
                    before.name,
                    before.name
                ),
            }
        }
    }
    Ok(())
}

/// The gate, for an environment that needs it: passes, takes a backup, or refuses. Elsewhere,
/// "not required".
async fn pass_gate(context: Option<&OpContext>, environment: &Environment, take: bool) -> anyhow::Result<GateRecord> {
    let Some(context) = context.filter(|_| environment.production) else {
        return Ok(GateRecord { verdict: "not required".to_owned(), backup_id: None });
    };
    let request = GateRequest {
        max_age: environment.require_verified_backup_within,
        take: take || environment.take_backup_if_stale,
    };
    let pass = gate::check(context, environment, &request).await?;
    let verdict = pass.verdict();
    eprintln!("gate: {verdict}: {} {} verified {} ago", pass.kind.as_str(), pass.backup, gate::format_age(pass.age));
    Ok(GateRecord { verdict: verdict.to_owned(), backup_id: Some(pass.backup) })
}

/// The repository, for the gate (production: required) and for the schema export (elsewhere:
/// used when it opens).
async fn open_repository(config: &Config, environment: &Environment) -> anyhow::Result<Option<OpContext>> {
    match super::context_for(config.clone()).await {
        Ok(context) => Ok(Some(context)),
        Err(error) if environment.production => Err(anyhow::Error::new(error)
            .context(format!("the backup gate of production environment {} needs the repository", environment.name))),
        Err(error) => {
            tracing::info!("repository not opened ({error}); the schema will not be exported");
            Ok(None)
        }
    }
}

async fn plan(config: &Config, args: UpArgs) -> anyhow::Result<()> {
    let mut session = Session::open(config, &args.change.target).await?;
    let rows = session.history().await?;
    let plan = Plan::new(&session.directory, &rows);
    let pending = pending(&plan, &args)?;
    let environment = session.environment;
    let context = open_repository(config, environment).await?;
    let rehearsed = last_rehearsal(context.as_ref(), environment).await;
    let gate = if !environment.production {
        "not required".to_owned()
    } else {
        let request = GateRequest { max_age: environment.require_verified_backup_within, take: false };
        match gate::check(context.as_ref().expect("production opens the repository"), environment, &request).await {
            Ok(pass) => format!("passes: {} {} verified", pass.kind.as_str(), pass.backup),
            Err(_) if args.change.take || environment.take_backup_if_stale => {
                "would take a backup and verify it by restore first (take_backup_if_stale)".to_owned()
            }
            Err(error) => format!("would refuse: {error}"),
        }
    };
    let mut findings = Vec::new();
    for migration in &pending {
        findings.push(lint_graded(config, &mut session.conn, session.server, migration).await?);
    }
    let view = MigratePlanView {
        environment: environment.name.clone(),
        production: environment.production,
        gate,
        migrations: pending
            .iter()
            .zip(findings)
            .map(|(migration, findings)| PlannedMigration {
                version: migration.version.to_string(),
                name: migration.name.clone(),
                transactional: migration.up.transaction,
                lock_timeout_ms: migration.up.lock_timeout.unwrap_or(environment.lock_timeout).as_millis(),
                statements: migration.up.statements.iter().map(|statement| statement.text.clone()).collect(),
                findings,
                rehearsed: rehearsed.as_ref().map(|report| unchanged_measures(report, migration)).unwrap_or_default(),
            })
            .collect(),
        rehearsal: rehearsed.as_ref().map(|report| PlanRehearsal {
            started_at: report.started_at,
            source_kind: report.source.kind.clone(),
            source_id: report.source.id.clone(),
        }),
    };
    if args.change.target.json {
        println!("{}", to_json(&view));
        return Ok(());
    }
    println!(
        "environment {}{}: gate {}",
        view.environment,
        if view.production { " (production)" } else { "" },
        view.gate
    );
    if view.migrations.is_empty() {
        println!("nothing to apply: the database is up to date");
    }
    for migration in &view.migrations {
        let mode = if migration.transactional {
            "in one transaction"
        } else {
            "outside a transaction, statement by statement"
        };
        println!("\n{} {} ({mode}, lock_timeout {} ms):", migration.version, migration.name, migration.lock_timeout_ms);
        for (index, statement) in migration.statements.iter().enumerate() {
            println!("  {}. {}", index + 1, statement.replace('\n', "\n     "));
            if let Some(measure) = migration.rehearsed.iter().find(|measure| measure.statement == index) {
                println!("     on a copy of the data: {}", crate::report::rehearse::measured(measure));
            }
            for finding in migration.findings.iter().filter(|finding| finding.statement == index) {
                println!("     {}", lint_render(finding).replace('\n', "\n     "));
            }
        }
    }
    if let Some(rehearsal) = &view.rehearsal {
        println!(
            "\n(rehearsal timings from {} on {} {}, `lifeboat migrate rehearse`)",
            rehearsal.started_at.format("%Y-%m-%d %H:%M UTC"),
            rehearsal.source_kind,
            rehearsal.source_id
        );
    }
    Ok(())
}

/// The newest stored rehearsal for `environment`, when the repository opens and has one; `plan`
/// shows its timings and does without them otherwise.
async fn last_rehearsal(
    context: Option<&OpContext>,
    environment: &Environment,
) -> Option<rehearse::report::RehearsalReport> {
    let context = context?;
    match rehearse::report::newest(&context.repository, &context.layout, Some(&environment.name)).await {
        Ok(found) => found.map(|(_, report)| report),
        Err(error) => {
            tracing::info!("no rehearsal timings: {error}");
            None
        }
    }
}

/// What the rehearsal measured for `migration`'s statements whose text it ran unchanged.
fn unchanged_measures(
    report: &rehearse::report::RehearsalReport,
    migration: &Migration,
) -> Vec<rehearse::measure::StatementMeasure> {
    let Some(rehearsed) = report.migrations.iter().find(|rehearsed| rehearsed.version == migration.version.to_string())
    else {
        return Vec::new();
    };
    rehearsed
        .statements
        .iter()
        .filter(|measure| {
            migration
                .up
                .statements
                .get(measure.statement)
                .is_some_and(|statement| statement.text.trim() == measure.text)
        })
        .cloned()
        .collect()
}

pub(super) async fn up(config: &Config, args: UpArgs) -> anyhow::Result<()> {
    let mut session = Session::open(config, &args.change.target).await?;
    session.lock().await?;
    let rows = session.history().await?;
    let plan = Plan::new(&session.directory, &rows);
    let migrations: Vec<Migration> = pending(&plan, &args)?.into_iter().cloned().collect();
    let repeatables: Vec<source::Repeatable> =
        plan.repeatables_due.iter().map(|repeatable| (*repeatable).clone()).collect();
    let environment = session.environment;
    let mut findings = Vec::new();
    for migration in &migrations {
        findings.extend(lint_graded(config, &mut session.conn, session.server, migration).await?);
    }
    if let Some(refusal) = crate::migrate::lint::refusal(&findings) {
        anyhow::bail!("{refusal}");
    }
    if migrations.is_empty() && repeatables.is_empty() {
        println!("nothing to apply: {} is up to date ({} migrations applied)", environment.name, rows.len());
        return Ok(());
    }
    check_after(config, environment, &migrations.iter().collect::<Vec<_>>()).await?;
    let context = if config.migrate.rehearse && !migrations.is_empty() {
        Some(rehearse_before_up(config, environment, &session.directory, &args).await?)
    } else {
        open_repository(config, environment).await?
    };
    let (gate, events) = prepare_change(config, environment, &args.change, context.as_ref()).await?;
    let mut runner =
        Runner { conn: &mut session.conn, environment, events: &events, gate: gate.clone(), observer: None };
    let mut view = run_view(environment, &gate);
    let mut failure = None;
    for migration in &migrations {
        if !args.change.target.json {
            eprintln!("applying {} {} ...", migration.version, migration.name);
        }
        match runner.run(migration, Direction::Up).await {
            Ok(ran) => view.ran.push(ran),
            Err(error) => {
                failure = Some((migration.version.to_string(), error));
                break;
            }
        }
    }
    if failure.is_none() {
        for repeatable in &repeatables {
            match runner.run_repeatable(repeatable).await {
                Ok(ran) => view.ran.push(ran),
                Err(error) => {
                    failure = Some((crate::migrate::plan::repeatable_version(&repeatable.name), error));
                    break;
                }
            }
        }
    }
    if let Some((failed, error)) = &failure
        && args.rollback_on_failure
    {
        rollback(&mut runner, &migrations, failed, error, &mut view).await;
    }
    let rows = history::read(runner.conn, &environment.history_table).await?;
    view.schema_export = export_schema(context.as_ref(), environment, session.server, &rows).await;
    view.error = failure.as_ref().map(|(_, error)| error.to_string());
    let checked =
        if failure.is_none() { super::schema::after_up(config, environment, runner.conn).await } else { Ok(()) };
    finish(config, view, failure.map(|(_, error)| error), args.change.target.json, started_notice(&migrations)).await?;
    checked
}

/// What `up`, `down` and `redo` do before changing anything, with the repository they opened
/// (for the gate and the schema export): the production confirmation, the gate, and the events
/// of the run.
async fn prepare_change(
    config: &Config,
    environment: &Environment,
    args: &ChangeArgs,
    context: Option<&OpContext>,
) -> anyhow::Result<(GateRecord, EventSink)> {
    super::gate::confirm_production(environment, args.approve)?;
    let gate = pass_gate(context, environment, args.take).await?;
    let events = events_for(config, context);
    Ok((gate, events))
}

/// The view of a run that has not run anything yet.
fn run_view(environment: &Environment, gate: &GateRecord) -> MigrateRunView {
    MigrateRunView {
        environment: environment.name.clone(),
        gate: gate.verdict.clone(),
        backup: gate.backup_id.clone(),
        ran: Vec::new(),
        rolled_back: Vec::new(),
        schema_export: None,
        error: None,
    }
}

fn started_notice(migrations: &[Migration]) -> String {
    migrations.iter().map(|migration| migration.version.to_string()).collect::<Vec<_>>().join(", ")
}

/// `--rollback-on-failure`: the down files of what this run applied, newest first. The failed
/// migration itself is left as its history says (a transactional one landed nothing; its row is
/// cleared, so the history is as before the run).
async fn rollback(
    runner: &mut Runner<'_>,
    migrations: &[Migration],
    failed: &str,
    error: &RunError,
    view: &mut MigrateRunView,
) {
    eprintln!("migration {failed} failed; --rollback-on-failure: reverting what this run applied, newest first");
    let applied: Vec<&Migration> = migrations
        .iter()
        .filter(|migration| view.ran.iter().any(|ran| ran.version == migration.version.as_str()))
        .collect();
    for migration in applied.into_iter().rev() {
        match runner.run(migration, Direction::Down).await {
            Ok(ran) => {
                eprintln!("reverted {} {}", migration.version, migration.name);
                view.rolled_back.push(ran);
            }
            Err(error) => {
                eprintln!("cannot revert {}: {error}; stopping the rollback here", migration.version);
                return;
            }
        }
    }
    if matches!(error, RunError::Failed(failure) if failure.transactional)
        && let Err(error) = history::remove(runner.conn, &runner.environment.history_table, failed).await
    {
        eprintln!("cannot clear the failed row of {failed}: {error}");
    }
}

/// Stores the schema and history in the repository (when one is open); the note says what
/// happened, and a failure to export never fails the migration that already landed.
async fn export_schema(
    context: Option<&OpContext>,
    environment: &Environment,
    server: ServerVersion,
    rows: &[Row],
) -> Option<String> {
    let context = context?;
    match export::export(context, environment, server.major, rows).await {
        Ok(key) => Some(key.to_string()),
        Err(error) => {
            eprintln!("warning: {error}; the migrations themselves are recorded in the history table");
            None
        }
    }
}

/// Prints the run, notifies a failure, and maps it to the exit status.
async fn finish(
    config: &Config,
    view: MigrateRunView,
    failure: Option<RunError>,
    json: bool,
    versions: String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", to_json(&view));
    } else {
        for ran in &view.ran {
            let retried =
                if ran.lock_retries > 0 { format!(", {} lock retries", ran.lock_retries) } else { String::new() };
            println!(
                "{} {} {} ({} statements, {} ms{retried})",
                if ran.direction == "up" { "applied" } else { "reverted" },
                ran.version,
                ran.name,
                ran.statements,
                ran.duration_ms
            );
        }
        if let Some(key) = &view.schema_export {
            println!("schema and history stored as {key}");
        }
    }
    let Some(error) = failure else { return Ok(()) };
    let notifier = crate::notify::Notifier::new(&config.notify, config.cluster.name.as_str());
    if notifier.has_sinks() {
        notifier
            .job_finished(&crate::notify::JobOutcome {
                job: format!("migrate:{}", view.environment),
                result: crate::notify::JobResult::Failed,
                error: Some(error.to_string()),
                ids: vec![versions],
                duration: std::time::Duration::ZERO,
                finished_at: chrono::Utc::now(),
            })
            .await;
    }
    if json {
        return Err(QuietExit { code: 1 }.into());
    }
    let hint = match &error {
        RunError::Failed(failure) if view.rolled_back.is_empty() => format!(
            "\n  Choose one:\n    lifeboat migrate restore-before {version}   # the database as it was just before it \
             (PITR)\n    fix the file, then: lifeboat migrate repair && lifeboat migrate up\n    lifeboat migrate \
             down   # revert with down files",
            version = failure.version
        ),
        _ => String::new(),
    };
    Err(anyhow::anyhow!("{error}{hint}"))
}

/// The applied migrations to revert for `down`.
fn to_revert<'d>(plan: &Plan<'d>, to: Option<&str>, steps: Option<usize>) -> anyhow::Result<Vec<&'d Migration>> {
    let applied = plan.applied_newest_first();
    match to {
        Some(to) => {
            let to = source::Version::parse(to).map_err(anyhow::Error::msg)?;
            if !applied.iter().any(|migration| migration.version == to) {
                anyhow::bail!("--to {to}: migration {to} is not applied (see `lifeboat migrate status`)");
            }
            Ok(applied.into_iter().filter(|migration| migration.version > to).collect())
        }
        None => Ok(applied.into_iter().take(steps.unwrap_or(1)).collect()),
    }
}

async fn down(config: &Config, args: DownArgs) -> anyhow::Result<()> {
    let mut session = Session::open(config, &args.change.target).await?;
    session.lock().await?;
    let rows = session.history().await?;
    let plan = Plan::new(&session.directory, &rows);
    let failed: Vec<String> = plan.failed().map(|entry| entry.version.clone()).collect();
    let migrations: Vec<Migration> = to_revert(&plan, args.to.as_deref(), args.steps)?.into_iter().cloned().collect();
    if migrations.is_empty() {
        println!("nothing to revert: no migration is applied in {}", session.environment.name);
        return Ok(());
    }
    if !failed.is_empty() {
        eprintln!("note: migrations {} failed earlier; down reverts applied ones only", failed.join(", "));
    }
    revert_then_apply(config, session, args.change, migrations, false).await
}

async fn redo(config: &Config, args: ChangeArgs) -> anyhow::Result<()> {
    let mut session = Session::open(config, &args.target).await?;
    session.lock().await?;
    let rows = session.history().await?;
    let plan = Plan::new(&session.directory, &rows);
    let refusals = plan.refusals(false);
    if !refusals.is_empty() {
        anyhow::bail!("{}", refusals.join("\n\n"));
    }
    let migrations: Vec<Migration> = to_revert(&plan, None, Some(1))?.into_iter().cloned().collect();
    if migrations.is_empty() {
        anyhow::bail!("nothing to redo: no migration is applied in {}", session.environment.name);
    }
    revert_then_apply(config, session, args, migrations, true).await
}

/// Reverts `migrations` (newest first) and, for `redo`, applies them again.
async fn revert_then_apply(
    config: &Config,
    mut session: Session<'_>,
    args: ChangeArgs,
    migrations: Vec<Migration>,
    apply_again: bool,
) -> anyhow::Result<()> {
    for migration in &migrations {
        crate::migrate::run::check_script(crate::migrate::run::down_script(migration)?)?;
    }
    let environment = session.environment;
    let context = open_repository(config, environment).await?;
    let (gate, events) = prepare_change(config, environment, &args, context.as_ref()).await?;
    let mut runner =
        Runner { conn: &mut session.conn, environment, events: &events, gate: gate.clone(), observer: None };
    let mut view = run_view(environment, &gate);
    let mut failure = None;
    for migration in &migrations {
        match runner.run(migration, Direction::Down).await {
            Ok(ran) => view.ran.push(ran),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    if apply_again && failure.is_none() {
        for migration in migrations.iter().rev() {
            match runner.run(migration, Direction::Up).await {
                Ok(ran) => view.ran.push(ran),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
    }
    let rows = history::read(runner.conn, &environment.history_table).await?;
    view.schema_export = export_schema(context.as_ref(), environment, session.server, &rows).await;
    view.error = failure.as_ref().map(ToString::to_string);
    finish(config, view, failure, args.target.json, started_notice(&migrations)).await
}

async fn baseline(config: &Config, args: BaselineArgs) -> anyhow::Result<()> {
    let mut session = Session::open(config, &args.target).await?;
    session.lock().await?;
    let rows = session.history().await?;
    if !rows.is_empty() {
        anyhow::bail!(
            "the history {} already has {} rows: baseline starts a history, it does not rewrite one (see `lifeboat \
             migrate status`)",
            session.environment.history_table,
            rows.len()
        );
    }
    let version = source::Version::parse(&args.version).map_err(anyhow::Error::msg)?;
    if !session.directory.migrations.iter().any(|migration| migration.version == version) {
        anyhow::bail!("there is no migration {version} in {}", session.directory.path.display());
    }
    let mut recorded = Vec::new();
    for migration in session.directory.migrations.iter().filter(|migration| migration.version <= version) {
        let row = recorded_row(migration, "baseline", None, None);
        history::upsert(&mut session.conn, &session.environment.history_table, &row).await?;
        recorded.push(migration.version.to_string());
    }
    audit_change(config, session.environment, "baseline", &recorded).await;
    if args.target.json {
        let view = MigrateChangeView {
            environment: session.environment.name.clone(),
            change: "baseline",
            changes: recorded.iter().map(|version| format!("recorded {version} as applied (baseline)")).collect(),
            notes: Vec::new(),
        };
        println!("{}", to_json(&view));
    } else {
        println!("recorded {} migrations up to {version} as the baseline (not run)", recorded.len());
    }
    Ok(())
}

/// A history row for a migration lifeboat records without running it.
fn recorded_row(
    migration: &Migration,
    kind: &str,
    applied_at: Option<chrono::DateTime<chrono::Utc>>,
    adopted: Option<(&str, Option<String>)>,
) -> Row {
    Row {
        version: migration.version.to_string(),
        name: migration.name.clone(),
        kind: kind.to_owned(),
        checksum: migration.up.checksum.clone(),
        applied_at: applied_at.unwrap_or_else(chrono::Utc::now),
        duration_ms: None,
        applied_by: history::applied_by(),
        success: true,
        transactional: migration.up.transaction,
        gate: None,
        backup_id: None,
        restore_point: None,
        timeline: None,
        lsn_before: None,
        time_before: None,
        lsn_after: None,
        time_after: None,
        statements_done: 0,
        statements_total: migration.up.statements.len() as i32,
        failed_statement: None,
        error: None,
        adopted_from: adopted.as_ref().map(|(tool, _)| (*tool).to_owned()),
        original_checksum: adopted.and_then(|(_, checksum)| checksum),
        allowed: None,
    }
}

/// An audit line for a history change that runs no migration (baseline, repair, adopt).
async fn audit_change(config: &Config, environment: &Environment, change: &str, versions: &[String]) {
    let events = events_for(config, None);
    let arguments = std::collections::BTreeMap::from([
        ("environment".to_owned(), environment.name.clone()),
        ("change".to_owned(), change.to_owned()),
        ("versions".to_owned(), versions.join(",")),
    ]);
    let began = Instant::now();
    events
        .emit(crate::ops::event::Event::Finished {
            operation: crate::ops::event::Operation::Migrate,
            arguments,
            outcome: crate::ops::event::Outcome::Succeeded,
            duration: began.elapsed(),
            totals: crate::ops::event::Totals::default(),
        })
        .await;
}

async fn repair(config: &Config, args: RepairArgs) -> anyhow::Result<()> {
    let mut session = Session::open(config, &args.target).await?;
    session.lock().await?;
    let rows = session.history().await?;
    let plan = Plan::new(&session.directory, &rows);
    let table = session.environment.history_table.clone();
    let mut done = Vec::new();
    for entry in &plan.entries {
        match entry.state {
            State::Failed => {
                let row = entry.row.as_ref().expect("a failed entry has a row");
                if args.mark_applied.as_deref() == Some(entry.version.as_str()) {
                    let mut row = row.clone();
                    row.success = true;
                    row.error = Some(format!(
                        "recorded as applied by `migrate repair --mark-applied` after: {}",
                        row.error.unwrap_or_default()
                    ));
                    if let Some(checksum) = &entry.file_checksum {
                        row.checksum = checksum.clone();
                    }
                    history::upsert(&mut session.conn, &table, &row).await?;
                    done.push(format!("marked {} ({}) as applied", entry.version, entry.name));
                } else {
                    history::remove(&mut session.conn, &table, &entry.version).await?;
                    let landed = if let Some(tool) = &row.adopted_from {
                        format!(
                            "it had failed under {tool}, so what of it landed is unknown: make the file safe to run \
                             again (IF NOT EXISTS) before `migrate up`"
                        )
                    } else if row.transactional || row.statements_done == 0 {
                        "nothing of it had landed".to_owned()
                    } else {
                        format!(
                            "its first {} statements had landed: make the file safe to run again (IF NOT EXISTS) \
                             before `migrate up`",
                            row.statements_done
                        )
                    };
                    done.push(format!("cleared the failed run of {} ({}); {landed}", entry.version, entry.name));
                }
            }
            State::Modified => {
                let checksum = entry.file_checksum.as_deref().expect("a modified entry has a file");
                history::set_checksum(&mut session.conn, &table, &entry.version, checksum).await?;
                let old = entry.row.as_ref().map(|row| short(&row.checksum).to_owned()).unwrap_or_default();
                done.push(format!(
                    "recorded the edited file of {} ({}): checksum {old} -> {}",
                    entry.version,
                    entry.name,
                    short(checksum)
                ));
            }
            _ => {}
        }
    }
    if let Some(version) = &args.mark_applied
        && !done.iter().any(|line| line.starts_with(&format!("marked {version} ")))
    {
        anyhow::bail!("--mark-applied {version}: migration {version} has no failed run to mark (see `migrate status`)");
    }
    audit_change(config, session.environment, "repair", &done).await;
    if args.target.json {
        let view = MigrateChangeView {
            environment: session.environment.name.clone(),
            change: "repair",
            changes: done.clone(),
            notes: Vec::new(),
        };
        println!("{}", to_json(&view));
    } else if done.is_empty() {
        println!("nothing to repair: no failed migration and no edited applied file");
    } else {
        for line in &done {
            println!("{line}");
        }
    }
    Ok(())
}

async fn adopt(config: &Config, args: AdoptArgs) -> anyhow::Result<()> {
    let environment = config.migrate.environment(args.env.as_deref()).map_err(anyhow::Error::msg)?;
    let dir = args.dir.clone().unwrap_or_else(|| config.migrate.dir.clone());
    let named = args.from.as_deref().map(MigrationLayout::parse).transpose().map_err(anyhow::Error::msg)?;
    if named == Some(MigrationLayout::Lifeboat) {
        anyhow::bail!("--from lifeboat: lifeboat's own migrations need no adoption; run `lifeboat migrate up`");
    }
    let target = Target { env: args.env.clone(), dir: Some(dir.clone()), json: args.json };
    let mut session = Session::open_with_layout(config, &target, named).await?;
    let tool = match named {
        Some(tool) => tool,
        // lifeboat, sqlx and golang-migrate name their files alike: the history table tells.
        None if session.directory.layout != MigrationLayout::Lifeboat => session.directory.layout,
        None => match adopt::find_tools(&mut session.conn).await?.as_slice() {
            [tool] => *tool,
            [] => anyhow::bail!(
                "found no other tool's history table in {}'s database; name the tool with --from \
                 sqlx|prisma|drizzle|golang-migrate|dbmate|flyway",
                environment.name
            ),
            several => anyhow::bail!(
                "the database has the history tables of {}; name the one to adopt with --from",
                several.iter().map(|tool| tool.as_str()).collect::<Vec<_>>().join(" and ")
            ),
        },
    };
    session.lock().await?;
    let rows = session.history().await?;
    let foreign = adopt::read_history(&mut session.conn, tool, &session.directory).await?;
    let table = session.environment.history_table.clone();
    let mut changes = Vec::new();
    let mut notes = foreign.notes.clone();
    for entry in &foreign.entries {
        if rows.iter().any(|row| row.version == entry.version.as_str()) {
            notes.push(format!("{} is already in lifeboat's history; left as it is", entry.version));
            continue;
        }
        let Some(migration) = session.directory.migrations.iter().find(|migration| migration.version == entry.version)
        else {
            notes.push(format!(
                "{} ({}) is in {} but has no file in {}; not recorded",
                entry.version,
                entry.name,
                foreign.table,
                dir.display()
            ));
            continue;
        };
        let mut row = recorded_row(
            migration,
            "versioned",
            entry.applied_at,
            Some((tool.as_str(), entry.original_checksum.clone())),
        );
        match &entry.state {
            ForeignState::Applied => {
                changes.push(format!("recorded {} ({}) as applied by {tool}", entry.version, entry.name))
            }
            ForeignState::Failed { detail } => {
                row.success = false;
                row.error = Some(format!("failed under {tool}: {detail}"));
                changes.push(format!(
                    "recorded {} ({}) as FAILED under {tool} ({detail}): `migrate up` refuses until it is resolved \
                     (`migrate status` shows the choices)",
                    entry.version, entry.name
                ));
            }
            ForeignState::RolledBack => {
                notes
                    .push(format!("{} ({}) was rolled back under {tool}; it stays pending", entry.version, entry.name));
                continue;
            }
        }
        history::upsert(&mut session.conn, &table, &row).await?;
    }
    for adopted in &foreign.repeatables {
        let version = crate::migrate::plan::repeatable_version(&adopted.name);
        let Some(repeatable) = session.directory.repeatables.iter().find(|repeatable| repeatable.name == adopted.name)
        else {
            continue;
        };
        if rows.iter().any(|row| row.version == version) {
            continue;
        }
        let mut row = recorded_row(
            &crate::migrate::run::repeatable_migration(repeatable),
            "repeatable",
            adopted.applied_at,
            Some((tool.as_str(), adopted.original_checksum.clone())),
        );
        row.version = version;
        history::upsert(&mut session.conn, &table, &row).await?;
        changes.push(format!("recorded repeatable {} as applied by {tool} (unchanged since)", adopted.name));
    }
    let history = session.history().await?;
    let plan = Plan::new(&session.directory, &history);
    let pending: Vec<String> = plan.pending(false).iter().map(|migration| migration.version.to_string()).collect();
    notes.push(if pending.is_empty() {
        format!("nothing is pending: {tool} had applied every migration in {}", dir.display())
    } else {
        format!("pending, for `lifeboat migrate up`: {}", pending.join(", "))
    });
    if config.migrate.layout != Some(tool) {
        notes.push(format!(
            "set layout = \"{tool}\" and dir = \"{}\" in [migrate] so `migrate up` reads this directory as {tool} writes it",
            dir.display()
        ));
    }
    audit_change(config, environment, "adopt", &changes).await;
    let view = MigrateChangeView { environment: environment.name.clone(), change: "adopt", changes, notes };
    if args.json {
        println!("{}", to_json(&view));
    } else {
        println!("adopted {} from {} ({} in {})", dir.display(), foreign.table, tool, environment.name);
        for line in view.changes.iter().chain(&view.notes) {
            println!("  {line}");
        }
    }
    Ok(())
}

/// `migrate restore-before V`: V's restore point from the database's history, or from the
/// repository's newest export when the database cannot tell (it may be what broke).
async fn restore_before(config: &Config, env: Option<String>, args: RestoreBeforeArgs) -> anyhow::Result<()> {
    let environment = config.migrate.environment(env.as_deref()).map_err(anyhow::Error::msg)?;
    let rows = match read_history_of(environment).await {
        Ok(rows) if rows.iter().any(|row| row.version == args.version) => rows,
        Ok(_) => exported_history(config, environment).await?,
        Err(error) => {
            eprintln!(
                "cannot read the history of {} ({error:#}); using its export in the repository",
                environment.name
            );
            exported_history(config, environment).await?
        }
    };
    let row = rows.iter().find(|row| row.version == args.version).ok_or_else(|| {
        anyhow::anyhow!(
            "migration {} is in neither the history of {} nor its export in the repository; `lifeboat migrate \
             status` lists the applied versions",
            args.version,
            environment.name
        )
    })?;
    let (Some(name), Some(lsn), Some(time), Some(timeline)) =
        (&row.restore_point, &row.lsn_before, row.time_before, row.timeline)
    else {
        anyhow::bail!(
            "migration {} ({}) has no restore point recorded (it was {}); restore to a time instead: `lifeboat \
             restore --target-time ...`",
            row.version,
            row.name,
            if row.kind == "versioned" { "applied without one" } else { "not run by lifeboat" }
        );
    };
    let later = rows
        .iter()
        .filter(|other| other.kind != "baseline" && other.time_before.is_some_and(|at| at > time))
        .map(|other| (other.version.clone(), other.name.clone()))
        .collect();
    let undo = Undo {
        point: RestorePoint { name: name.clone(), lsn: lsn.clone(), time, timeline: timeline as u32 },
        version: row.version.clone(),
        later,
    };
    let code = super::restore_before::run(config, &args, undo).await?;
    if code == std::process::ExitCode::SUCCESS { Ok(()) } else { Err(QuietExit { code: 1 }.into()) }
}

/// The history of `environment`'s database, as exported rows.
async fn read_history_of(environment: &Environment) -> anyhow::Result<Vec<ExportedRow>> {
    let mut conn = crate::postgres::connect::connect(&environment.connection).await?;
    let rows = history::read(&mut conn, &environment.history_table).await?;
    crate::migrate::run::close(conn).await;
    Ok(rows.iter().map(ExportedRow::from).collect())
}

/// The history in the newest export of `environment` in the repository.
async fn exported_history(config: &Config, environment: &Environment) -> anyhow::Result<Vec<ExportedRow>> {
    let context = crate::ops::open(config.clone()).await?;
    let snapshot = export::newest(&context, &environment.name).await?;
    Ok(snapshot.map(|snapshot| snapshot.history).unwrap_or_default())
}

/// No `--config`, no `LIFEBOAT_CONFIG`, and nothing at the default path: `lint --offline` of a CI
/// checkout needs no configuration.
fn is_default_missing(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<crate::config::ConfigError>(),
        Some(crate::config::ConfigError::NotFound { chosen_by, .. }) if *chosen_by == "the default location"
    )
}

/// The findings of `migration`'s up file, graded by the sizes of its tables in `conn`'s database.
async fn lint_graded(
    config: &Config,
    conn: &mut PgConnection,
    server: ServerVersion,
    migration: &Migration,
) -> anyhow::Result<Vec<Finding>> {
    let settings = LintSettings::new(&config.migrate.lint, Some(server));
    let mut findings = lint::lint_migration(migration, &settings);
    lint::grade(&mut findings, conn, &config.migrate.lint)
        .await
        .with_context(|| format!("cannot look up the table sizes for the lint of {}", migration.up.path.display()))?;
    Ok(findings)
}

/// `migrate lint`: FILES, or the pending migrations (graded by the environment's database), or
/// with `--offline` every migration of the directory (not graded).
async fn lint(config: &Config, args: LintArgs) -> anyhow::Result<()> {
    if args.rules {
        let settings = LintSettings::new(&config.migrate.lint, None);
        let view = LintRulesView {
            rules: lint::rules::RULES
                .iter()
                .map(|rule| LintRule { rule: *rule, enabled: settings.is_enabled(rule.name) })
                .collect(),
        };
        if args.target.json {
            println!("{}", to_json(&view));
        } else {
            for rule in &view.rules {
                let state = if rule.enabled { "" } else { "  (off)" };
                println!(
                    "{}  {}  {}{state}\n  {}\n  fix: {}",
                    rule.rule.name,
                    rule.rule.category.as_str(),
                    rule.rule.severity.as_str(),
                    rule.rule.message,
                    rule.rule.fix
                );
            }
        }
        return Ok(());
    }
    let mut problems = Vec::new();
    let mut scripts = Vec::new();
    for path in &args.files {
        let (script, found) = source::read_file(path)?;
        problems.extend(found.iter().map(ToString::to_string));
        scripts.extend(script);
    }
    let (environment, server, findings) = if args.offline {
        if args.files.is_empty() {
            let dir = args.target.dir.clone().unwrap_or_else(|| config.migrate.dir.clone());
            let directory = source::read(&dir, config.migrate.layout)?;
            problems.extend(directory.problems.iter().filter(|p| p.is_blocking()).map(ToString::to_string));
            scripts.extend(directory.migrations.into_iter().map(|migration| migration.up));
        }
        let settings = LintSettings::new(&config.migrate.lint, None);
        let findings = scripts.iter().flat_map(|script| lint::lint_script(script, &settings)).collect();
        (None, None, findings)
    } else {
        let mut session = Session::open(config, &args.target).await.context(
            "lint grades findings by the table sizes in the environment's database; pass --offline to lint without one",
        )?;
        if args.files.is_empty() {
            let rows = session.history().await?;
            let plan = Plan::new(&session.directory, &rows);
            problems.extend(session.directory.problems.iter().filter(|p| p.is_blocking()).map(ToString::to_string));
            scripts.extend(plan.pending(false).into_iter().map(|migration| migration.up.clone()));
        }
        let settings = LintSettings::new(&config.migrate.lint, Some(session.server));
        let mut findings: Vec<Finding> =
            scripts.iter().flat_map(|script| lint::lint_script(script, &settings)).collect();
        lint::grade(&mut findings, &mut session.conn, &config.migrate.lint)
            .await
            .context("cannot look up the table sizes for the lint")?;
        (Some(session.environment.name.clone()), Some(session.server.to_string()), findings)
    };
    let view = LintView {
        environment,
        server_version: server,
        files: scripts.iter().map(|script| script.path.display().to_string()).collect(),
        problems,
        summary: LintSummary::of(&findings),
        findings,
    };
    if args.target.json {
        println!("{}", to_json(&view));
    } else {
        for problem in &view.problems {
            println!("{problem}\n");
        }
        for finding in &view.findings {
            println!("{}\n", lint_render(finding));
        }
        println!("{} files linted: {}", view.files.len(), summary_line(&view.summary));
    }
    if view.summary.errors > 0 || !view.problems.is_empty() { Err(QuietExit { code: 1 }.into()) } else { Ok(()) }
}

/// `migrate rehearse`: the pending migrations on a restored copy, measured; exits 1 when one fails
/// or a down path does not hold.
async fn rehearse(config: &Config, target: Target) -> anyhow::Result<()> {
    let environment = config.migrate.environment(target.env.as_deref()).map_err(anyhow::Error::msg)?;
    let dir = target.dir.clone().unwrap_or_else(|| config.migrate.dir.clone());
    let directory = source::read(&dir, config.migrate.layout)?;
    let context = super::context_for(config.clone())
        .await
        .context("a rehearsal restores the cluster's newest verified backup from the repository")?;
    let request = rehearse::Request { environment, directory: &directory, to: None, allow_out_of_order: false };
    let (report, key) = rehearse::rehearse(&context, &request).await?;
    let failed = !report.passed || !report.down_paths_hold;
    let view = MigrateRehearseView { stored_as: key.to_string(), report };
    if target.json {
        println!("{}", to_json(&view));
    } else {
        print!("{}", crate::report::rehearse::text(&view));
    }
    if failed { Err(QuietExit { code: 1 }.into()) } else { Ok(()) }
}

/// `[migrate] rehearse = true`: what `up` is about to apply, rehearsed on a copy of the cluster's
/// data first (for any environment: the copy is of the cluster lifeboat backs up, its database
/// the one the environment's connection names); a failure refuses before anything changes. The
/// repository it opened serves `up`'s gate and schema export too.
async fn rehearse_before_up(
    config: &Config,
    environment: &Environment,
    directory: &Directory,
    args: &UpArgs,
) -> anyhow::Result<OpContext> {
    let context = super::context_for(config.clone())
        .await
        .context("[migrate] rehearse = true restores the cluster's newest verified backup from the repository")?;
    let to = args.to.as_deref().map(source::Version::parse).transpose().map_err(anyhow::Error::msg)?;
    let request =
        rehearse::Request { environment, directory, to: to.as_ref(), allow_out_of_order: args.allow_out_of_order };
    eprintln!(
        "rehearsing the pending migrations on a restored copy of cluster {} ([migrate] rehearse = true) ...",
        config.cluster.name
    );
    let (report, key) = rehearse::rehearse(&context, &request).await?;
    if let Some(failure) = &report.failure {
        anyhow::bail!(
            "{failure}\n  up refuses: the rehearsal on a copy of the data failed ([migrate] rehearse = true), so \
             nothing was applied to {}. The rehearsal's report is {key}; fix the migration (`lifeboat migrate \
             rehearse --env {}` tries it again)",
            environment.name,
            environment.name
        );
    }
    eprintln!(
        "rehearsal passed on {} {}: {} migration(s) in {:.1} s on the copy (report {key})",
        report.source.kind,
        report.source.id,
        report.migrations.len(),
        report.apply_seconds
    );
    Ok(context)
}

/// `migrate diff`: the scratch server is of the environment's major when the environment answers
/// (else the newest installed one), so the generated DDL is what that server prints.
async fn diff(config: &Config, args: DiffArgs) -> anyhow::Result<()> {
    let environment = config.migrate.environment(args.target.env.as_deref()).map_err(anyhow::Error::msg)?;
    let dir = args.target.dir.clone().unwrap_or_else(|| config.migrate.dir.clone());
    let mut reached = match reach(environment).await {
        Ok(reached) => Some(reached),
        Err(error) => {
            eprintln!(
                "cannot reach environment {} ({error:#}); the scratch server uses the newest PostgreSQL installed here \
                 and the lint of the generated migration is not graded by table size",
                environment.name
            );
            None
        }
    };
    let server_major = reached.as_ref().map(|(_, server)| server.major);
    let request = crate::migrate::diff::Request {
        schema_file: &args.to,
        dir: &dir,
        layout: config.migrate.layout,
        name: &args.name,
        bin_dir: config.cluster.bin_dir.as_deref(),
        scratch_dir: &config.verify.scratch_dir,
        os_user: &config.cluster.os_user,
        server_major,
        history_table: &environment.history_table,
    };
    let outcome = crate::migrate::diff::run(&request).await?;
    // Linted like any other migration, graded by the environment's tables: a generated
    // ALTER COLUMN TYPE on a large table is an error `up` would refuse.
    let findings = match (&outcome.migration, reached.as_mut()) {
        (None, _) => Vec::new(),
        (Some(migration), Some((conn, server))) => lint_graded(config, conn, *server, migration).await?,
        (Some(migration), None) => lint::lint_migration(migration, &LintSettings::new(&config.migrate.lint, None)),
    };
    if let Some((conn, _)) = reached {
        crate::migrate::run::close(conn).await;
    }
    let view = crate::report::diff::MigrateDiffView::new(&args.to, &dir, &outcome, findings);
    if args.target.json {
        println!("{}", to_json(&view));
    } else {
        crate::report::diff::print(&view);
    }
    if outcome.problems.is_empty() {
        Ok(())
    } else {
        if !args.target.json && outcome.migration.is_some() {
            eprintln!(
                "the generated migration does not do what {} asks on the scratch server (see above); it was written \
                 so it can be corrected: edit or remove {} before `lifeboat migrate up`",
                args.to.display(),
                outcome.files.iter().map(|path| path.display().to_string()).collect::<Vec<_>>().join(" and ")
            );
        }
        Err(QuietExit { code: 1 }.into())
    }
}

/// A connection to `environment`'s database and its server's version, given ten seconds.
async fn reach(environment: &Environment) -> anyhow::Result<(PgConnection, ServerVersion)> {
    let ask = async {
        let mut conn = crate::postgres::connect::connect(&environment.connection).await?;
        let num: String = sqlx::query_scalar("SHOW server_version_num").fetch_one(&mut conn).await?;
        let server = ServerVersion::from_num(num.trim().parse().context("server_version_num is not a number")?);
        anyhow::Ok((conn, server))
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), ask).await.context("no answer within 10 s")?
}
