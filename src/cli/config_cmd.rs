//! `lifeboat config check | show`.

use std::path::Path;

use clap::Subcommand;

use crate::config::Config;
use crate::ops::open::{check_object_lock, configured_unlock, connect_store, write_options};
use crate::repository::Repository;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration file, then check that the repository is reachable and that the
    /// configured key opens it. Exits non-zero on the first problem, naming it.
    Check {
        /// Only validate the file; do not contact the repository or read key files
        #[arg(long)]
        offline: bool,
    },
    /// Print the resolved configuration (defaults filled in) with every secret redacted
    Show,
}

pub async fn run(config_path: Option<&Path>, command: ConfigCommand) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    match command {
        ConfigCommand::Show => print!("{}", config.to_redacted_toml()),
        ConfigCommand::Check { offline } => {
            println!("ok   configuration {}", config.origin().display());
            if offline {
                return Ok(());
            }
            let unlock = configured_unlock(&config)?;
            match &unlock {
                Some(unlock) => println!("ok   key: {}", unlock.describe()),
                None => println!("--   no key configured (fine only for an unencrypted repository)"),
            }
            let store = connect_store(&config).await?;
            let repository = Repository::open(store, unlock.as_ref(), write_options(&config)).await?;
            println!(
                "ok   repository {} ({}) opens with the configured key",
                repository.location(),
                repository.file().repository_id
            );
            // An existing repository is not checked on every open (wal-push opens one per
            // segment); here, on demand, a bucket that lost its Object Lock setting is found.
            if let Some(lock) = config.repository.s3.as_ref().and_then(|s3| s3.object_lock) {
                check_object_lock(&config).await?;
                println!(
                    "ok   Object Lock: {} mode, {} days, and the bucket has it enabled",
                    lock.mode.as_str(),
                    lock.days
                );
            }
        }
    }
    Ok(())
}
