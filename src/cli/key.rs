//! `lifeboat key add | list | remove | check`: manage key slots without rewriting any data, and
//! prove that the configured key opens the repository before it is needed.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{ArgGroup, Args, Subcommand};

use crate::config::{Config, SecretOrigin};
use crate::keys::Unlock;
use crate::keys::slots::KeyFile;
use crate::object::Cipher;
use crate::ops::open::{configured_unlock, connect_store, key_probes, write_options};
use crate::report::{
    self,
    repository::{KeyCheckView, KeyListView, SlotView},
};
use crate::repository::{RepoFile, Repository};
use crate::secret::Secret;

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Add a key slot for a new passphrase or key file. The repository is opened with the
    /// configured key; the new one is given by exactly one of the options.
    Add(AddArgs),
    /// List the key slots (needs no key)
    List {
        /// Print JSON (schema key-list/1, docs/json.md) instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Remove a key slot: its passphrase or key file no longer opens the repository
    Remove {
        /// Slot id, as `lifeboat key list` shows it
        slot: String,
    },
    /// Open the repository with the configured key (key file or passphrase) and show the slot it
    /// opens; run it before an incident. Exits non-zero when the key opens no slot or none is
    /// configured
    Check {
        /// Print JSON (schema key-check/1, docs/json.md) instead of text
        #[arg(long)]
        json: bool,
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
    let config = super::load_config(config_path)?;
    match command {
        KeyCommand::Add(args) => {
            let context = crate::ops::open(config).await?;
            let unlock = new_unlock(&args)?;
            let slot = crate::ops::key_add(&context, &unlock, &args.label).await?;
            println!("added key slot {} ({}) for {}", slot.id, slot.kind, unlock.describe());
        }
        KeyCommand::List { json } => {
            let store = connect_store(&config).await?;
            let file = RepoFile::read(store.as_ref()).await?;
            let view =
                KeyListView { location: store.location(), slots: file.slots.iter().map(SlotView::from).collect() };
            if json {
                println!("{}", report::to_json(&view));
            } else if view.slots.is_empty() {
                println!("no key slots: the repository is not encrypted");
            } else {
                print_slots(&view.slots);
            }
        }
        KeyCommand::Remove { slot } => {
            let context = crate::ops::open(config).await?;
            let removed = crate::ops::key_remove(&context, &slot).await?;
            println!(
                "removed key slot {} ({}, {:?}); {} slot(s) remain",
                removed.slot.id, removed.slot.kind, removed.slot.label, removed.remaining
            );
        }
        KeyCommand::Check { json } => check(&config, json).await?,
    }
    Ok(())
}

/// `lifeboat key check`: unlocks the repository as every other command would, then reads one
/// stored object with the key, so a key that opens another repository's `lifeboat.repo` fails too.
async fn check(config: &Config, json: bool) -> anyhow::Result<()> {
    let store = connect_store(config).await?;
    let unlock = configured_unlock(config)?;
    let probes = key_probes(config);
    let repository = Repository::open_probing(store, unlock.as_ref(), write_options(config), &probes).await?;
    let checked = repository.check_objects_key(&probes, unlock.as_ref()).await?;
    let file = repository.file();
    let result = KeyCheckView {
        location: repository.location(),
        repository_id: file.repository_id.clone(),
        encrypted: file.cipher == Cipher::Aes256Gcm,
        key: unlock.as_ref().map(|unlock| describe_key(config, unlock)),
        slot: repository.opened_slot().map(SlotView::from),
        checked_object: checked.map(|key| key.to_string()),
    };
    if json {
        println!("{}", report::to_json(&result));
        return Ok(());
    }
    println!("repository  {} (id {})", result.location, result.repository_id);
    match (&result.slot, &result.key) {
        (Some(slot), Some(key)) => {
            println!("key         {key}");
            println!(
                "opens slot  {} ({}, label {:?}, created {})",
                slot.id,
                slot.kind,
                slot.label,
                slot.created_at.format("%Y-%m-%d %H:%M:%SZ")
            );
        }
        (_, key) => {
            let configured = key.as_ref().map(|key| format!("; {key} is not needed")).unwrap_or_default();
            println!("key         none needed: the repository is not encrypted (cipher none){configured}");
        }
    }
    match &result.checked_object {
        Some(object) => println!("checked     {object} read and authenticated"),
        None => println!("checked     nothing stored yet for cluster {:?}", config.cluster.name.as_str()),
    }
    Ok(())
}

/// The configured key and where it is configured, never its value.
fn describe_key(config: &Config, unlock: &Unlock) -> String {
    let origin = match unlock {
        Unlock::KeyFile(_) => config.source.key_file.as_ref(),
        Unlock::Passphrase(_) => config.source.passphrase.as_ref(),
    };
    match (unlock, origin) {
        (Unlock::KeyFile(_), Some(SecretOrigin::File { named_by, .. })) => {
            format!("{} (from {named_by})", unlock.describe())
        }
        (_, Some(origin)) => format!("{} ({origin})", unlock.describe()),
        (_, None) => unlock.describe(),
    }
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

/// The slots as a table (`key list`, `repo info`).
pub fn print_slots(slots: &[SlotView]) {
    let mut rows = super::table::plain(&["SLOT", "KIND", "CREATED (UTC)", "KDF", "LABEL"], &[]);
    for slot in slots {
        rows.add_row(vec![
            slot.id.clone(),
            slot.kind.clone(),
            slot.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            slot.kdf.clone(),
            slot.label.clone(),
        ]);
    }
    println!("{}", super::table::render(&rows));
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use clap::Parser as _;

    use super::*;
    use crate::cli::Cli;
    use crate::keys::SlotKind;
    use crate::object::WriteOptions;
    use crate::repository::RepositoryError;
    use crate::storage::local::LocalStore;

    /// The `lifeboat ...` commands a message quotes (between backticks), split into words.
    fn suggested_commands(message: &str) -> Vec<Vec<String>> {
        message
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|quoted| quoted.starts_with("lifeboat "))
            .map(|quoted| quoted.split_whitespace().map(str::to_owned).collect())
            .collect()
    }

    /// Every command `message` suggests is one the command line accepts, and there is at least one.
    #[track_caller]
    fn assert_suggestions_parse(message: &str) {
        let commands = suggested_commands(message);
        assert!(!commands.is_empty(), "no command suggested in: {message}");
        for command in commands {
            // `--version` and `--help` parse to an "error" that prints them.
            let parsed = Cli::try_parse_from(&command).map(drop).or_else(|error| match error.kind() {
                clap::error::ErrorKind::DisplayVersion | clap::error::ErrorKind::DisplayHelp => Ok(()),
                _ => Err(error),
            });
            if let Err(error) = parsed {
                panic!("`{}` does not parse ({error}); suggested in: {message}", command.join(" "));
            }
        }
    }

    fn key_file(dir: &Path, name: &str) -> Unlock {
        Unlock::KeyFile(KeyFile::generate(&dir.join(name)).unwrap())
    }

    #[tokio::test]
    async fn hardening_8_every_command_a_key_error_suggests_parses() {
        let dir = tempfile::tempdir().unwrap();
        let weak = dir.path().join("weak.key");
        std::fs::write(&weak, "short\n").unwrap();
        let mut messages = vec![
            KeyFile::load(&weak).err().unwrap().to_string(),
            KeyFile::load(&dir.path().join("missing.key")).err().unwrap().to_string(),
        ];
        let location = "file:///var/lib/lifeboat/repo".to_owned();
        messages.extend([
            RepositoryError::NoMatchingSlot {
                location: location.clone(),
                repository_id: "0".repeat(32),
                unlock: "the passphrase".into(),
                kind: SlotKind::Passphrase,
                tried: 1,
            }
            .to_string(),
            RepositoryError::NoSlotOfKind {
                location: location.clone(),
                unlock: "the passphrase".into(),
                kind: SlotKind::Passphrase,
            }
            .to_string(),
            RepositoryError::NoSlotOfKind {
                location: location.clone(),
                unlock: "key file k".into(),
                kind: SlotKind::KeyFile,
            }
            .to_string(),
            RepositoryError::NoSuchSlot { location: location.clone(), slot: "3fa9c2d1".into() }.to_string(),
            RepositoryError::UnsupportedVersion {
                location,
                name: "lifeboat.repo",
                found: 2,
                supported: 1,
                release: "0.1.0",
            }
            .to_string(),
        ]);
        // Another repository's lifeboat.repo in place of this one's: the advice depends on what
        // the copy and the key say; here the key opens the copy.
        let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
        let ours_key = key_file(dir.path(), "ours.key");
        for (root, unlock) in [(&ours, &ours_key), (&theirs, &key_file(dir.path(), "theirs.key"))] {
            let store = Arc::new(LocalStore::new(root));
            Repository::init(store, Cipher::Aes256Gcm, Some(unlock), "", WriteOptions::default()).await.unwrap();
        }
        std::fs::copy(theirs.join("lifeboat.repo"), ours.join("lifeboat.repo")).unwrap();
        let error = Repository::open(Arc::new(LocalStore::new(&ours)), Some(&ours_key), WriteOptions::default())
            .await
            .err()
            .unwrap();
        assert!(matches!(error, RepositoryError::ForeignRepoFile(_)), "{error}");
        messages.push(error.to_string());
        for message in &messages {
            assert_suggestions_parse(message);
        }
        assert!(messages[0].contains("--new-key-file"), "{}", messages[0]);
    }
}
