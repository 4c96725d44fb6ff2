//! `lifeboat init`: create a repository.

use std::path::Path;

use clap::Args;

use crate::config::Config;
use crate::config::KeySource;
use crate::keys::Unlock;
use crate::keys::slots::KeyFile;
use crate::object::Cipher;
use crate::ops::open::{check_object_lock, connect_store, write_options};
use crate::report::{self, repository::RepositoryView};
use crate::repository::Repository;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Label for the first key slot, shown by `lifeboat key list`
    #[arg(long, default_value = "initial")]
    pub label: String,
    /// Print the new repository as JSON (schema repository/1, docs/json.md) instead of text
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config_path: Option<&Path>, args: InitArgs) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
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
