//! `lifeboat gate [--max-age D] [--take] [--env E] [--approve] -- COMMAND ARGS...`: the backup
//! gate and a restore point around another tool's migration command (`npx prisma migrate deploy`,
//! `dbmate up`, ...). The command runs with `DATABASE_URL` set to the environment's connection and
//! `LIFEBOAT_RESTORE_POINT`, `LIFEBOAT_RESTORE_POINT_LSN`, `LIFEBOAT_GATE_BACKUP` and
//! `LIFEBOAT_ENVIRONMENT`; its result is an audit line (`gated-command`) and lifeboat exits with its
//! status. docs/gate.md describes it.
//!
//! Also here: [`confirm_production`], the typed confirmation (or `--approve`) every command that
//! changes a production environment asks for.

use std::collections::BTreeMap;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Args;

use crate::config::{Environment, parse_duration};
use crate::migrate::gate::{self, GatePass, GateRequest, RestorePoint};
use crate::ops::event::{Event, Operation, Outcome, Totals};

#[derive(Debug, Args)]
pub struct GateArgs {
    /// The newest verified backup must be younger than this, e.g. 6h [default: the environment's
    /// require_verified_backup_within]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_age: Option<Duration>,
    /// Take a backup and verify it by restore when there is no fresh verified one, instead of
    /// refusing [default: the environment's take_backup_if_stale]
    #[arg(long)]
    pub take: bool,
    /// The migration environment ([migrate.environments.NAME]) [default: [migrate] environment]
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    /// Go ahead on a production environment without the typed confirmation (needed when not at a
    /// terminal)
    #[arg(long)]
    pub approve: bool,
    /// Print the gate's verdict and the restore point as JSON on stdout before the command runs
    #[arg(long)]
    pub json: bool,
    /// The command to run behind the gate, after `--`
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

pub async fn run(config_path: Option<&Path>, args: GateArgs) -> anyhow::Result<()> {
    let context = super::operation_context(config_path).await?;
    let environment = context.config.migrate.environment(args.env.as_deref()).map_err(anyhow::Error::msg)?.clone();
    let pass = if environment.production {
        confirm_production(&environment, args.approve)?;
        let request = GateRequest {
            max_age: args.max_age.unwrap_or(environment.require_verified_backup_within),
            take: args.take || environment.take_backup_if_stale,
        };
        let pass = gate::check(&context, &environment, &request).await?;
        eprintln!("lifeboat gate: {}", describe_pass(&pass));
        Some(pass)
    } else {
        eprintln!(
            "lifeboat gate: the gate is not required for environment {:?} (not production); recording a restore \
             point and the command's result",
            environment.name
        );
        None
    };

    let mut conn = crate::postgres::connect::connect(&environment.connection).await?;
    let name = format!("lifeboat-before-gate-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
    let point = gate::create_restore_point(&mut conn, &name).await?;
    drop(conn);
    eprintln!(
        "lifeboat gate: restore point {} at {} on timeline {}; `lifeboat restore --target-name {} --pgdata DIR` \
         goes back to it",
        point.name, point.lsn, point.timeline, point.name
    );
    if args.json {
        println!("{}", verdict_json(&environment, pass.as_ref(), &point));
    }

    let arguments = command_arguments(&environment, pass.as_ref(), &point, &args.command);
    let status = run_command(&context, &environment, pass.as_ref(), &point, &args.command, arguments).await?;
    match status {
        0 => Ok(()),
        code => Err(super::QuietExit { code }.into()),
    }
}

/// Asks for `environment`'s name typed at a terminal before a production environment is changed;
/// without a terminal, `approve` (`--approve`) must say so.
pub(crate) fn confirm_production(environment: &Environment, approve: bool) -> anyhow::Result<()> {
    if !environment.production || approve {
        return Ok(());
    }
    let name = &environment.name;
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "environment {name:?} is production and this is not a terminal to confirm at: pass --approve to go ahead"
        );
    }
    eprint!("environment {name:?} is production. Type its name to go ahead: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != name {
        anyhow::bail!("not confirmed ({:?} is not {name:?}); nothing was changed", answer.trim());
    }
    Ok(())
}

fn describe_pass(pass: &GatePass) -> String {
    let how = if pass.taken { "taken and verified now" } else { "verified" };
    let segment = match &pass.archived_segment {
        Some(segment) => format!("; WAL archiving works (segment {segment} reached the repository)"),
        None => String::new(),
    };
    format!(
        "passed on {} {} ({how} at {}, completed {} ago){segment}",
        pass.kind.as_str(),
        pass.backup,
        pass.verified_at.format("%Y-%m-%d %H:%M:%S UTC"),
        gate::format_age(pass.age)
    )
}

fn verdict_json(environment: &Environment, pass: Option<&GatePass>, point: &RestorePoint) -> serde_json::Value {
    let gate = match pass {
        Some(pass) => serde_json::json!({
            "verdict": pass.verdict(),
            "backup": pass.backup,
            "kind": pass.kind.as_str(),
            "verified_at": pass.verified_at,
            "age_seconds": pass.age.as_secs(),
            "taken": pass.taken,
            "archived_segment": pass.archived_segment,
        }),
        None => serde_json::json!({ "verdict": "not-required" }),
    };
    serde_json::json!({ "environment": environment.name, "gate": gate, "restore_point": point })
}

/// The audit line's arguments: what ran where, behind which backup; never the connection, and
/// secret-looking arguments redacted.
fn command_arguments(
    environment: &Environment,
    pass: Option<&GatePass>,
    point: &RestorePoint,
    command: &[String],
) -> BTreeMap<String, String> {
    let connection = environment.connection.expose();
    let shown: Vec<String> = command.iter().skip(1).map(|argument| redact_argument(argument, connection)).collect();
    let mut arguments = BTreeMap::from([
        ("environment".to_owned(), environment.name.clone()),
        ("command".to_owned(), redact_argument(&command[0], connection)),
        ("restore_point".to_owned(), point.name.clone()),
        ("restore_point_lsn".to_owned(), point.lsn.clone()),
        ("gate".to_owned(), pass.map_or("not-required", GatePass::verdict).to_owned()),
    ]);
    if !shown.is_empty() {
        let quoted: Vec<String> = shown.iter().map(|argument| crate::util::shell_quote(argument)).collect();
        arguments.insert("args".to_owned(), quoted.join(" "));
    }
    if let Some(pass) = pass {
        arguments.insert("backup".to_owned(), pass.backup.clone());
    }
    arguments
}

/// `argument`, or `<redacted>` in place of what may be a secret: the environment's connection, a
/// URL's password, the value of a `...password=`/`...secret=`/`...token=` argument.
fn redact_argument(argument: &str, connection: &str) -> String {
    const REDACTED: &str = "<redacted>";
    if !connection.is_empty() && argument.contains(connection) {
        return argument.replace(connection, REDACTED);
    }
    if let Some((key, _)) = argument.split_once('=') {
        let lower = key.to_ascii_lowercase();
        if ["password", "secret", "token", "passwd", "pwd"].iter().any(|word| lower.contains(word)) {
            return format!("{key}={REDACTED}");
        }
    }
    if let Some((scheme, rest)) = argument.split_once("://") {
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            return format!("{scheme}://{}:{REDACTED}{}", &rest[..colon], &rest[at..]);
        }
    }
    argument.to_owned()
}

/// Runs the command with the environment it needs, audited as [`Operation::GatedCommand`]; its
/// exit status (128 + the signal for one killed by a signal, as shells say).
async fn run_command(
    context: &crate::ops::OpContext,
    environment: &Environment,
    pass: Option<&GatePass>,
    point: &RestorePoint,
    command: &[String],
    arguments: BTreeMap<String, String>,
) -> anyhow::Result<u8> {
    let operation = Operation::GatedCommand;
    let began = Instant::now();
    context.events.emit(Event::Started { operation, arguments: arguments.clone() }).await;
    let mut child = tokio::process::Command::new(&command[0]);
    child
        .args(&command[1..])
        .env("DATABASE_URL", environment.connection.expose())
        .env("LIFEBOAT_ENVIRONMENT", &environment.name)
        .env("LIFEBOAT_RESTORE_POINT", &point.name)
        .env("LIFEBOAT_RESTORE_POINT_LSN", &point.lsn)
        .env("LIFEBOAT_GATE_BACKUP", pass.map_or("", |pass| pass.backup.as_str()));
    // Ctrl-C reaches the command too (same process group); lifeboat waits for it to end and
    // records how it ended, so SIGINT and SIGTERM cancel nothing here.
    let status = child.status().await;
    let (outcome, code) = match &status {
        Ok(status) if status.success() => (Outcome::Succeeded, Ok(0)),
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt as _;
            let (code, how) = match (status.code(), status.signal()) {
                (Some(code), _) => (code.clamp(1, 255) as u8, format!("exited with status {code}")),
                (None, Some(signal)) => ((128 + signal).clamp(1, 255) as u8, format!("was killed by signal {signal}")),
                (None, None) => (1, "ended without a status".to_owned()),
            };
            (Outcome::Failed { error: format!("{} {how}", command[0]) }, Ok(code))
        }
        Err(error) => {
            let message = format!("cannot run {:?}: {error}", command[0]);
            (Outcome::Failed { error: message.clone() }, Err(anyhow::anyhow!(message)))
        }
    };
    let finished =
        Event::Finished { operation, arguments, outcome, duration: began.elapsed(), totals: Totals::default() };
    context.events.emit(finished).await;
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Command {
        #[command(flatten)]
        args: GateArgs,
    }

    #[test]
    fn the_command_comes_after_the_double_dash_with_its_own_options() {
        use clap::{CommandFactory as _, Parser as _};
        Command::command().debug_assert();
        let parsed = Command::try_parse_from(["x", "--take", "--", "npx", "prisma", "migrate", "--take"]).unwrap();
        assert!(parsed.args.take);
        assert_eq!(parsed.args.command, ["npx", "prisma", "migrate", "--take"]);
        assert!(Command::try_parse_from(["x", "--take"]).is_err(), "a command is required");
    }

    #[test]
    fn secret_looking_arguments_are_redacted() {
        let connection = "postgresql://deploy:hunter2@db/app";
        assert_eq!(redact_argument("--url=postgresql://deploy:hunter2@db/app", connection), "--url=<redacted>");
        assert_eq!(redact_argument("--password=hunter2", connection), "--password=<redacted>");
        assert_eq!(redact_argument("postgres://u:pw@h:5432/db", connection), "postgres://u:<redacted>@h:5432/db");
        assert_eq!(redact_argument("migrate", connection), "migrate");
        assert_eq!(redact_argument("https://example.com/x", connection), "https://example.com/x");
    }
}
