//! `lifeboat repo info`: what a repository is, read from `lifeboat.repo` (no key needed).

use std::path::Path;

use super::key::print_slots;
use crate::object::Cipher;
use crate::ops::open::connect_store;
use crate::report::{self, repository::RepositoryView};
use crate::repository::RepoFile;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Show the repository's format, cipher and key slots
    Info {
        /// Print JSON (schema repository/1, docs/json.md) instead of text
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config_path: Option<&Path>, command: RepoCommand) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let RepoCommand::Info { json } = command;
    let store = connect_store(&config).await?;
    let file = RepoFile::read(store.as_ref()).await?;
    let info = RepositoryView::new(store.location(), &file);
    if json {
        println!("{}", report::to_json(&info));
        return Ok(());
    }
    println!("repository  {}", info.location);
    println!("id          {}", info.repository_id);
    println!("format      lifeboat-repository version {}", info.format_version);
    println!("created     {}", info.created_at.format("%Y-%m-%d %H:%M:%SZ"));
    match (&info.cipher, &info.key_id) {
        (Cipher::Aes256Gcm, Some(key_id)) => println!("cipher      aes-256-gcm (master key {key_id})"),
        _ => println!("cipher      none (objects are checksummed, not encrypted)"),
    }
    println!("key slots   {}", info.slots.len());
    if !info.slots.is_empty() {
        println!();
        print_slots(&info.slots);
    }
    Ok(())
}
