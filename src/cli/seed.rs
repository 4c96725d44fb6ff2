//! `lifeboat seed run | status | rollback | clear [--env ENV] [--json]`: the seed files of
//! `<seeds_dir>/<environment>/` (docs/seeds.md). `clear` is refused in an environment marked
//! production; every command but `status` leaves an audit line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};

use crate::config::{Config, Environment};
use crate::ops::audit::AuditLog;
use crate::ops::event::{Event, EventSink, Operation, Outcome, Totals};
use crate::report::seed::{SeedRunView, SeedStatusView};
use crate::report::to_json;
use crate::seed::load::{self, Done};
use crate::seed::{self as seeds, SeedFile};

#[derive(Debug, Subcommand)]
pub enum SeedCommand {
    /// Load the seed files not loaded yet, each in its own transaction, parents before children
    /// (foreign keys); skips files loaded before, refuses when a loaded file has changed
    Run(RunArgs),
    /// Each seed file and its state: applied, pending, changed (since applied), missing
    Status(SeedArgs),
    /// Undo the newest run, newest file first: a CSV file's rows by their primary keys, a SQL
    /// file with its <name>.down.sql
    Rollback(SeedArgs),
    /// Empty every table the seeds fill and clear the seed history (refused in production)
    Clear(SeedArgs),
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// The environment ([migrate] environment or a [migrate.environments.NAME]); its seeds are
    /// in <seeds_dir>/<environment>/
    #[arg(long = "env", value_name = "NAME")]
    pub env: Option<String>,
    /// Print the result as JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: SeedArgs,
    /// Run the files that changed since they were loaded again, as they are now (for files
    /// written to be re-run, e.g. INSERT ... ON CONFLICT)
    #[arg(long)]
    pub reapply: bool,
}

pub async fn run(config_path: Option<&std::path::Path>, command: SeedCommand) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    match command {
        SeedCommand::Run(args) => run_seeds(&config, &args.target, args.reapply).await,
        SeedCommand::Status(args) => status(&config, &args).await,
        SeedCommand::Rollback(args) => rollback(&config, &args).await,
        SeedCommand::Clear(args) => clear(&config, &args).await,
    }
}

/// The environment, its seed directory and its files.
fn files_of<'a>(config: &'a Config, args: &SeedArgs) -> anyhow::Result<(&'a Environment, PathBuf, Vec<SeedFile>)> {
    let environment = config.migrate.environment(args.env.as_deref()).map_err(anyhow::Error::msg)?;
    let dir = seeds::directory(&config.migrate.seeds_dir, &environment.name);
    let files = seeds::read_dir(&dir)?;
    Ok((environment, dir, files))
}

/// `seed run`; also the last step of `db reset`.
pub(super) async fn run_seeds(config: &Config, args: &SeedArgs, reapply: bool) -> anyhow::Result<()> {
    let (environment, dir, files) = files_of(config, args)?;
    let began = Instant::now();
    let mut conn = crate::postgres::connect::connect(&environment.connection).await?;
    let result = load::run(&mut conn, &config.migrate.seed_history_table, files, reapply).await;
    crate::migrate::run::close(conn).await;
    let done = audited(config, environment, "run", began, result).await?;
    let view = SeedRunView {
        environment: environment.name.clone(),
        command: "run",
        seeds: done,
        emptied: Vec::new(),
        duration_ms: began.elapsed().as_millis() as u64,
    };
    if args.json {
        println!("{}", to_json(&view));
    } else {
        println!("seed run in environment {} ({}):", view.environment, dir.display());
        print_done(&view.seeds);
    }
    Ok(())
}

fn print_done(done: &[Done]) {
    if done.is_empty() {
        println!("  no seed files");
    }
    for seed in done {
        match seed.action {
            "skipped" => println!("  {:<11} {} (loaded before, unchanged)", seed.action, seed.file),
            action => println!(
                "  {action:<11} {} -> {}: {} rows ({} ms)",
                seed.file,
                seed.tables.join(", "),
                seed.rows,
                seed.duration_ms
            ),
        }
    }
}

async fn status(config: &Config, args: &SeedArgs) -> anyhow::Result<()> {
    let (environment, dir, files) = files_of(config, args)?;
    let mut conn = crate::postgres::connect::connect(&environment.connection).await?;
    let table = &config.migrate.seed_history_table;
    let rows = seeds::history::read(&mut conn, table).await?;
    crate::migrate::run::close(conn).await;
    let view = SeedStatusView {
        environment: environment.name.clone(),
        directory: dir.display().to_string(),
        history_table: table.to_string(),
        seeds: load::status(&files, &rows),
    };
    if args.json {
        println!("{}", to_json(&view));
        return Ok(());
    }
    println!(
        "environment {} · {} seed files in {} · history {}",
        view.environment,
        files.len(),
        view.directory,
        view.history_table
    );
    for entry in &view.seeds {
        let when = entry
            .applied
            .as_ref()
            .map(|row| format!("  {} rows, {}", row.rows, row.applied_at.format("%Y-%m-%d %H:%M:%S UTC")))
            .unwrap_or_default();
        println!("  {:<8} {} -> {}{when}", entry.state.as_str(), entry.file, entry.tables.join(", "));
    }
    Ok(())
}

async fn rollback(config: &Config, args: &SeedArgs) -> anyhow::Result<()> {
    let (environment, _, files) = files_of(config, args)?;
    let began = Instant::now();
    let mut conn = crate::postgres::connect::connect(&environment.connection).await?;
    let result = load::rollback(&mut conn, &config.migrate.seed_history_table, &files).await;
    crate::migrate::run::close(conn).await;
    let done = audited(config, environment, "rollback", began, result).await?;
    let view = SeedRunView {
        environment: environment.name.clone(),
        command: "rollback",
        seeds: done,
        emptied: Vec::new(),
        duration_ms: began.elapsed().as_millis() as u64,
    };
    if args.json {
        println!("{}", to_json(&view));
    } else if view.seeds.is_empty() {
        println!("nothing to roll back: no seed of {} is loaded", view.environment);
    } else {
        println!("seed rollback in environment {}:", view.environment);
        print_done(&view.seeds);
    }
    Ok(())
}

async fn clear(config: &Config, args: &SeedArgs) -> anyhow::Result<()> {
    let environment = config.migrate.environment(args.env.as_deref()).map_err(anyhow::Error::msg)?;
    seeds::refuse_in_production(environment, "seed clear")?;
    let (_, _, files) = files_of(config, args)?;
    let began = Instant::now();
    let mut conn = crate::postgres::connect::connect(&environment.connection).await?;
    let result = load::clear(&mut conn, &config.migrate.seed_history_table, &files).await;
    crate::migrate::run::close(conn).await;
    let emptied = audited(config, environment, "clear", began, result).await?;
    let view = SeedRunView {
        environment: environment.name.clone(),
        command: "clear",
        seeds: Vec::new(),
        emptied,
        duration_ms: began.elapsed().as_millis() as u64,
    };
    if args.json {
        println!("{}", to_json(&view));
    } else if view.emptied.is_empty() {
        println!("no seeded tables in {}; the seed history is cleared", view.environment);
    } else {
        println!("emptied {} and cleared the seed history of {}", view.emptied.join(", "), view.environment);
    }
    Ok(())
}

/// Writes the audit line of a seed command and passes its result on.
async fn audited<T>(
    config: &Config,
    environment: &Environment,
    command: &str,
    began: Instant,
    result: Result<T, seeds::SeedError>,
) -> anyhow::Result<T> {
    let arguments = BTreeMap::from([
        ("environment".to_owned(), environment.name.clone()),
        ("command".to_owned(), command.to_owned()),
    ]);
    let outcome = match &result {
        Ok(_) => Outcome::Succeeded,
        Err(error) => Outcome::Failed { error: error.to_string() },
    };
    audit(config, Operation::Seed, arguments, outcome, began).await;
    Ok(result?)
}

/// One audit line (the local trail; `seed` and `db reset` open no repository).
pub(super) async fn audit(
    config: &Config,
    operation: Operation,
    arguments: BTreeMap<String, String>,
    outcome: Outcome,
    began: Instant,
) {
    let layout = crate::catalog::layout::ClusterLayout::new(&config.cluster.name);
    let events = EventSink::new(AuditLog::new(config.audit.path.clone(), &layout, None));
    events
        .emit(Event::Finished { operation, arguments, outcome, duration: began.elapsed(), totals: Totals::default() })
        .await;
}
