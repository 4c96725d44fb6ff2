//! `lifeboat init`: create a repository.

use std::path::Path;

use clap::Args;

use crate::config::Config;
use crate::config::KeySource;
use crate::keys::Unlock;
use crate::keys::slots::KeyFile;
use crate::object::Cipher;
use crate::ops::open::{check_object_lock, configured_unlock, connect_store, open_repository, write_options};
use crate::report::{self, repository::RepositoryView};
use crate::repository::Repository;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Label for the first key slot, shown by `lifeboat key list`
    #[arg(long, default_value = "initial")]
    pub label: String,
    /// Create copy NAME (a [[copies]] entry) of the configured repository instead: the same master key
    /// (unwrapped with the configured key, wrapped in a slot of the copy's own) under a new
    /// repository id. `lifeboat copy --to NAME` then fills it. `--copy-of NAME` is the same flag
    #[arg(long, value_name = "NAME", visible_alias = "copy-of")]
    pub copy: Option<String>,
    /// Print the new repository as JSON (schema repository/1, docs/json.md) instead of text
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config_path: Option<&Path>, args: InitArgs) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    if let Some(name) = &args.copy {
        return init_copy(&config, name, &args).await;
    }
    // Before anything is written: a repository meant to be immutable must not start out deletable.
    check_object_lock(&config).await?;
    let store = connect_store(&config).await?;
    let cipher = config.repository.cipher;
    let unlock = match cipher {
        Cipher::None => None,
        Cipher::Aes256Gcm => Some(match config.key_source()? {
            KeySource::Passphrase(secret) => Unlock::Passphrase(secret),
            KeySource::KeyFile(path) if path.exists() => Unlock::KeyFile(KeyFile::load(&path)?),
            KeySource::KeyFile(path) => {
                let file = KeyFile::generate(&path)?;
                let line = format!("created key file {} (mode 0600): keep a copy somewhere safe", path.display());
                if args.json {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
                Unlock::KeyFile(file)
            }
        }),
    };
    let repository = Repository::init(store, cipher, unlock.as_ref(), &args.label, write_options(&config)).await?;
    let file = repository.file();
    if args.json {
        println!("{}", report::to_json(&RepositoryView::new(repository.location(), file)));
        return Ok(());
    }
    println!("initialised repository {} at {}", file.repository_id, repository.location());
    match (&unlock, file.slots.first()) {
        (Some(unlock), Some(slot)) => {
            println!("cipher aes-256-gcm; key slot {} ({}) opens it with {}", slot.id, slot.kind, unlock.describe());
            println!(
                "Without a working key the backups cannot be read: add a second slot for safekeeping \
                 with `lifeboat key add`."
            );
        }
        _ => println!("cipher none: objects are checksummed but NOT encrypted"),
    }
    Ok(())
}

/// `lifeboat init --copy NAME`: the primary is opened with the configured key, and its master
/// key goes into the new copy under a slot for the same key.
async fn init_copy(config: &Config, name: &str, args: &InitArgs) -> anyhow::Result<()> {
    let primary = open_repository(config).await?;
    let copy_config = config.for_copy(name)?;
    // A copy meant to be immutable must not start out deletable either.
    check_object_lock(&copy_config).await?;
    let store = connect_store(&copy_config).await?;
    let unlock = configured_unlock(config)?;
    let copy = Repository::init_copy(store, &primary, unlock.as_ref(), &args.label, write_options(config)).await?;
    if args.json {
        println!("{}", report::to_json(&RepositoryView::new(copy.location(), copy.file())));
        return Ok(());
    }
    println!(
        "initialised copy {name:?}: repository {} at {}, with the master key of repository {} at {}",
        copy.file().repository_id,
        copy.location(),
        primary.file().repository_id,
        primary.location()
    );
    if let Some(slot) = copy.file().slots.first() {
        println!("key slot {} ({}) opens it with the key configured for [repository]", slot.id, slot.kind);
    }
    println!("Fill it with `lifeboat copy --to {name}`; read from it with `lifeboat --repository {name} <command>`.");
    Ok(())
}
