//! `lifeboat key add | list | remove`: manage key slots without rewriting any data.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{ArgGroup, Args, Subcommand};
use serde::Serialize;

use super::context::{connect_store, load_config, open_repository};
use crate::keys::Unlock;
use crate::keys::slots::{Kdf, KeyFile, KeySlot};
use crate::repository::RepoFile;
use crate::secret::Secret;

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Add a key slot for a new passphrase or key file. The repository is opened with the
    /// configured key; the new one is given by exactly one of the options.
    Add(AddArgs),
    /// List the key slots (needs no key)
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a key slot: its passphrase or key file no longer opens the repository
    Remove {
        /// Slot id, as `lifeboat key list` shows it
        slot: String,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("new_key").required(true).multiple(false)))]
pub struct AddArgs {
    /// Read the new passphrase from this file (one trailing newline is ignored)
    #[arg(long, value_name = "PATH", group = "new_key")]
    pub new_passphrase_file: Option<PathBuf>,
    /// Read the new passphrase from standard input (one trailing newline is ignored)
    #[arg(long, group = "new_key")]
    pub new_passphrase_stdin: bool,
    /// Use this key file; it is created (256 random bits, mode 0600) if it does not exist
    #[arg(long, value_name = "PATH", group = "new_key")]
    pub new_key_file: Option<PathBuf>,
    /// Free-text label shown by `lifeboat key list`
    #[arg(long, default_value = "")]
    pub label: String,
}

pub async fn run(config_path: Option<&Path>, command: KeyCommand) -> anyhow::Result<()> {
    let config = load_config(config_path)?;
    match command {
        KeyCommand::Add(args) => {
            let mut repository = open_repository(&config).await?;
            let unlock = new_unlock(&args)?;
            let slot = repository.add_slot(&unlock, &args.label).await?;
            println!("added key slot {} ({}) for {}", slot.id, slot.kind, unlock.describe());
        }
        KeyCommand::List { json } => {
            let store = connect_store(&config).await?;
            let file = RepoFile::read(store.as_ref()).await?;
            let slots: Vec<SlotView> = file.slots.iter().map(SlotView::from).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&slots)?);
            } else if slots.is_empty() {
                println!("no key slots: the repository is not encrypted");
            } else {
                print_slots(&slots);
            }
        }
        KeyCommand::Remove { slot } => {
            let mut repository = open_repository(&config).await?;
            let removed = repository.remove_slot(&slot).await?;
            println!(
                "removed key slot {} ({}, {:?}); {} slot(s) remain",
                removed.id,
                removed.kind,
                removed.label,
                repository.file().slots.len()
            );
        }
    }
    Ok(())
}

fn new_unlock(args: &AddArgs) -> anyhow::Result<Unlock> {
    let passphrase = if let Some(path) = &args.new_passphrase_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the new passphrase from {}", path.display()))?;
        Some(text)
    } else if args.new_passphrase_stdin {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read the new passphrase from stdin")?;
        Some(text)
    } else {
        None
    };
    if let Some(mut text) = passphrase {
        for ending in ["\r\n", "\n"] {
            if text.ends_with(ending) {
                text.truncate(text.len() - ending.len());
                break;
            }
        }
        if text.is_empty() {
            bail!("the new passphrase is empty");
        }
        return Ok(Unlock::Passphrase(Secret::new(text)));
    }
    let path = args.new_key_file.as_ref().expect("clap requires one of the options");
    if path.exists() {
        Ok(Unlock::KeyFile(KeyFile::load(path)?))
    } else {
        let file = KeyFile::generate(path)?;
        println!("created key file {} (mode 0600)", path.display());
        Ok(Unlock::KeyFile(file))
    }
}

/// What `key list` and `repo info` show of a slot: never the salt or the wrapped key.
#[derive(Debug, Serialize)]
pub struct SlotView {
    pub id: String,
    pub kind: String,
    pub label: String,
    pub created_at: String,
    pub kdf: String,
}

impl From<&KeySlot> for SlotView {
    fn from(slot: &KeySlot) -> Self {
        let kdf = match &slot.kdf {
            Kdf::Argon2id { memory_kib, iterations, parallelism, .. } => {
                format!("argon2id m={}MiB t={iterations} p={parallelism}", memory_kib / 1024)
            }
            Kdf::HkdfSha256 { .. } => "hkdf-sha256".to_owned(),
        };
        SlotView {
            id: slot.id.clone(),
            kind: slot.kind.to_string(),
            label: slot.label.clone(),
            created_at: slot.created_at.format("%Y-%m-%d %H:%M:%SZ").to_string(),
            kdf,
        }
    }
}

pub fn print_slots(slots: &[SlotView]) {
    println!("{:<10} {:<11} {:<21} {:<27} label", "slot", "kind", "created", "kdf");
    for slot in slots {
        println!("{:<10} {:<11} {:<21} {:<27} {}", slot.id, slot.kind, slot.created_at, slot.kdf, slot.label);
    }
}
