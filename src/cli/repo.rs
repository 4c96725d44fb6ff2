//! `lifeboat repo info`: what a repository is, read from `lifeboat.repo` (no key needed).

use std::path::Path;

use clap::Subcommand;
use serde::Serialize;

use super::key::{SlotView, print_slots};
use crate::config::Config;
use crate::object::Cipher;
use crate::ops::open::connect_store;
use crate::repository::RepoFile;

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Show the repository's format, cipher and key slots
    Info {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Serialize)]
struct RepoInfo {
    location: String,
    repository_id: String,
    format_version: u32,
    created_at: String,
    cipher: Cipher,
    key_id: Option<String>,
    slots: Vec<SlotView>,
}

pub async fn run(config_path: Option<&Path>, command: RepoCommand) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let RepoCommand::Info { json } = command;
    let store = connect_store(&config).await?;
    let file = RepoFile::read(store.as_ref()).await?;
    let info = RepoInfo {
        location: store.location(),
        repository_id: file.repository_id.clone(),
        format_version: file.version,
        created_at: file.created_at.format("%Y-%m-%d %H:%M:%SZ").to_string(),
        cipher: file.cipher,
        key_id: file.key_id.clone(),
        slots: file.slots.iter().map(SlotView::from).collect(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    println!("repository  {}", info.location);
    println!("id          {}", info.repository_id);
    println!("format      lifeboat-repository version {}", info.format_version);
    println!("created     {}", info.created_at);
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
