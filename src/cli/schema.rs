//! `lifeboat schema check [--env E] [--json]`, and the same check after `migrate up` as
//! `[migrate] schema_check` says (off, warn, fail). docs/schema-check.md describes the problems.

use std::io::Write;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use sqlx::postgres::PgConnection;

use super::QuietExit;
use crate::config::{Config, Environment, SchemaCheckMode};
use crate::report::schema::SchemaCheckView;
use crate::report::to_json;
use crate::schema::check::{self, Settings};

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Find what makes the schema fragile: tables without a primary key, foreign keys without an
    /// index, invalid indexes, NOT VALID constraints, rows breaking a foreign key, sequences near
    /// the end of their range, duplicate and overlapping indexes, foreign keys whose column types
    /// differ; each with its fix. Exits 1 when it finds an error (overlapping indexes are warnings)
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The environment ([migrate] environment or a [migrate.environments.NAME])
    #[arg(long = "env", value_name = "NAME")]
    pub env: Option<String>,
    /// Print the result as JSON instead of text
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config_path: Option<&std::path::Path>, command: SchemaCommand) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    match command {
        SchemaCommand::Check(args) => check(&config, args).await,
    }
}

async fn check(config: &Config, args: CheckArgs) -> anyhow::Result<()> {
    let environment = config.migrate.environment(args.env.as_deref()).map_err(anyhow::Error::msg)?;
    let mut conn = crate::postgres::connect::connect(&environment.connection).await?;
    let view = inspect(config, environment, &mut conn).await?;
    crate::migrate::run::close(conn).await;
    if args.json {
        println!("{}", to_json(&view));
    } else {
        print(&view, &mut std::io::stdout().lock())?;
    }
    if view.errors > 0 { Err(QuietExit { code: 1 }.into()) } else { Ok(()) }
}

/// The check's settings: lifeboat's own history tables live in schemas it leaves out (unless
/// they were put in `public`, which holds the application's tables too).
fn settings(config: &Config, environment: &Environment) -> Settings {
    let mut skip_schemas: Vec<String> = [&environment.history_table.schema, &config.migrate.seed_history_table.schema]
        .into_iter()
        .filter(|schema| schema.as_str() != "public")
        .cloned()
        .collect();
    skip_schemas.dedup();
    Settings { sequence_share_limit: config.migrate.sequence_share_limit, skip_schemas }
}

async fn inspect(
    config: &Config,
    environment: &Environment,
    conn: &mut PgConnection,
) -> anyhow::Result<SchemaCheckView> {
    let database: String = sqlx::query_scalar("SELECT current_database()::text").fetch_one(&mut *conn).await?;
    let problems = check::check(conn, &settings(config, environment))
        .await
        .with_context(|| format!("schema check of {database} (environment {})", environment.name))?;
    Ok(SchemaCheckView::new(environment.name.clone(), database, problems))
}

fn print(view: &SchemaCheckView, out: &mut dyn Write) -> std::io::Result<()> {
    if view.problems.is_empty() {
        return writeln!(out, "schema check of {} (environment {}): no problems", view.database, view.environment);
    }
    writeln!(
        out,
        "schema check of {} (environment {}): {} error{}, {} warning{}",
        view.database,
        view.environment,
        view.errors,
        if view.errors == 1 { "" } else { "s" },
        view.warnings,
        if view.warnings == 1 { "" } else { "s" }
    )?;
    for problem in &view.problems {
        writeln!(out, "\n{:<7} {}  {}", problem.severity.as_str(), problem.kind.as_str(), problem.object)?;
        writeln!(out, "  {}", problem.message)?;
        writeln!(out, "  fix: {}", problem.fix)?;
    }
    Ok(())
}

/// After `migrate up` applied migrations: the check on the same connection, printed on stderr
/// (stdout may carry `--json`). With `schema_check = "fail"`, an error fails the command; the
/// migrations stay applied either way.
pub(super) async fn after_up(
    config: &Config,
    environment: &Environment,
    conn: &mut PgConnection,
) -> anyhow::Result<()> {
    let mode = config.migrate.schema_check;
    if mode == SchemaCheckMode::Off {
        return Ok(());
    }
    let view = match inspect(config, environment, conn).await {
        Ok(view) => view,
        Err(error) if mode == SchemaCheckMode::Warn => {
            eprintln!("warning: {error:#}");
            return Ok(());
        }
        Err(error) => return Err(error.context("the schema check after migrate up (schema_check = \"fail\")")),
    };
    if view.problems.is_empty() {
        return Ok(());
    }
    print(&view, &mut std::io::stderr().lock())?;
    if mode == SchemaCheckMode::Fail && view.errors > 0 {
        anyhow::bail!(
            "the schema check after migrate up found {} error{} (schema_check = \"fail\"); the migrations stay \
             applied: fix the problems above in a new migration, or set schema_check = \"warn\" in [migrate]",
            view.errors,
            if view.errors == 1 { "" } else { "s" }
        );
    }
    Ok(())
}
