//! `lifeboat db reset [--env ENV] [--yes] [--force]`: drop and recreate an environment's
//! database, apply every migration (`migrate up`'s own path, with its schema check), then load
//! its seeds. Refused in an environment marked production; asks for the database's name at a
//! terminal, and needs `--yes` elsewhere. Other sessions connected to the database stop it unless
//! `--force`, which ends them (`DROP DATABASE ... WITH (FORCE)`).

use std::collections::BTreeMap;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::time::Instant;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::migrate::{ChangeArgs, Target, UpArgs};
use super::seed::SeedArgs;
use crate::config::{Config, Environment};
use crate::ops::event::{Operation, Outcome};
use crate::util::quote_identifier;

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Drop and recreate the environment's database, apply every migration, then load its seeds
    /// (refused in production; asks to confirm at a terminal, --yes otherwise)
    Reset(ResetArgs),
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    /// The environment ([migrate] environment or a [migrate.environments.NAME])
    #[arg(long = "env", value_name = "NAME")]
    pub env: Option<String>,
    /// Go ahead without the typed confirmation (scripts, CI)
    #[arg(long)]
    pub yes: bool,
    /// End the other sessions connected to the database instead of refusing
    #[arg(long)]
    pub force: bool,
}

pub async fn run(config_path: Option<&std::path::Path>, command: DbCommand) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    match command {
        DbCommand::Reset(args) => reset(&config, args).await,
    }
}

async fn reset(config: &Config, args: ResetArgs) -> anyhow::Result<()> {
    let environment = config.migrate.environment(args.env.as_deref()).map_err(anyhow::Error::msg)?;
    crate::seed::refuse_in_production(environment, "db reset")?;
    let options = crate::postgres::connect::connect_options(&environment.connection)?;
    let database = options
        .get_database()
        .or(Some(options.get_username()))
        .map(str::to_owned)
        .filter(|name| !name.is_empty())
        .context("the environment's connection names no database")?;
    if ["postgres", "template0", "template1"].contains(&database.as_str()) {
        anyhow::bail!(
            "environment {} connects to database {database}, which `db reset` does not drop; give the environment its \
             own database",
            environment.name
        );
    }
    confirm(environment, &database, args.yes)?;
    let began = Instant::now();
    let result = reset_steps(config, environment, &database, &args).await;
    let arguments = BTreeMap::from([
        ("environment".to_owned(), environment.name.clone()),
        ("database".to_owned(), database.clone()),
    ]);
    let outcome = match &result {
        Ok(()) => Outcome::Succeeded,
        Err(error) => Outcome::Failed { error: format!("{error:#}") },
    };
    super::seed::audit(config, Operation::DbReset, arguments, outcome, began).await;
    result
}

async fn reset_steps(
    config: &Config,
    environment: &Environment,
    database: &str,
    args: &ResetArgs,
) -> anyhow::Result<()> {
    recreate(environment, database, args.force).await?;
    println!("dropped and recreated database {database} (environment {})", environment.name);
    let up = UpArgs {
        change: ChangeArgs {
            target: Target { env: Some(environment.name.clone()), dir: None, json: false },
            approve: false,
            take: false,
        },
        to: None,
        allow_out_of_order: false,
        rollback_on_failure: false,
    };
    super::migrate::up(config, up).await.context("db reset: the migrations failed after the database was recreated")?;
    let seeds = crate::seed::directory(&config.migrate.seeds_dir, &environment.name);
    if !seeds.is_dir() {
        println!("no seeds: {} is not a directory", seeds.display());
        return Ok(());
    }
    let target = SeedArgs { env: Some(environment.name.clone()), json: false };
    super::seed::run_seeds(config, &target, false).await.context("db reset: the seeds failed after the migrations")
}

/// At a terminal, the database's name typed back; elsewhere `--yes`.
fn confirm(environment: &Environment, database: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "db reset drops database {database} of environment {} and this is not a terminal to confirm at: pass --yes \
             to go ahead",
            environment.name
        );
    }
    eprint!(
        "db reset drops database {database} (environment {}) with all its data. Type its name to go ahead: ",
        environment.name
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != database {
        anyhow::bail!("not confirmed ({:?} is not {database:?}); nothing was changed", answer.trim());
    }
    Ok(())
}

/// Drops and creates `database` from the server's `postgres` maintenance database.
async fn recreate(environment: &Environment, database: &str, force: bool) -> anyhow::Result<()> {
    let maintenance = environment.connection.with_database("postgres");
    let mut conn = crate::postgres::connect::connect(&maintenance).await.with_context(|| {
        format!("db reset connects to the maintenance database postgres of {}'s server", environment.name)
    })?;
    let others: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
            .bind(database)
            .fetch_one(&mut conn)
            .await?;
    if others > 0 && !force {
        crate::migrate::run::close(conn).await;
        anyhow::bail!(
            "database {database} has {others} other session{} connected; stop {}, or pass --force to end {} (DROP \
             DATABASE ... WITH (FORCE)); nothing was changed",
            if others == 1 { "" } else { "s" },
            if others == 1 { "it" } else { "them" },
            if others == 1 { "it" } else { "them" }
        );
    }
    let quoted = quote_identifier(database);
    let drop = format!("DROP DATABASE IF EXISTS {quoted}{}", if force { " WITH (FORCE)" } else { "" });
    sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
        .execute(&mut conn)
        .await
        .with_context(|| format!("cannot drop database {database}"))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}")))
        .execute(&mut conn)
        .await
        .with_context(|| format!("dropped database {database} but cannot create it again"))?;
    crate::migrate::run::close(conn).await;
    Ok(())
}
