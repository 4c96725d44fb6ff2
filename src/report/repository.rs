//! The views of a repository and its keys: [`RepositoryView`] (`repo info --json`),
//! [`KeyListView`] (`key list --json`) and [`KeyCheckView`] (`key check --json`). None of them
//! ever holds a salt, a wrapped key, a passphrase or a key file's contents.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Document;
use crate::keys::slots::{Kdf, KeySlot};
use crate::object::Cipher;
use crate::repository::RepoFile;

/// What a repository is, from `lifeboat.repo`.
#[derive(Debug, Clone, Serialize)]
pub struct RepositoryView {
    pub location: String,
    pub repository_id: String,
    pub format_version: u32,
    pub created_at: DateTime<Utc>,
    /// `"aes-256-gcm"` or `"none"`.
    pub cipher: Cipher,
    /// The master key's id (encrypted repositories).
    pub key_id: Option<String>,
    pub slots: Vec<SlotView>,
}

/// A key slot: which kind of secret opens it, never the secret or the key it wraps.
#[derive(Debug, Clone, Serialize)]
pub struct SlotView {
    pub id: String,
    /// `"passphrase"` or `"key-file"`.
    pub kind: String,
    pub label: String,
    pub created_at: DateTime<Utc>,
    /// `"argon2id m=64MiB t=3 p=1"` or `"hkdf-sha256"`.
    pub kdf: String,
}

/// The key slots of a repository.
#[derive(Debug, Clone, Serialize)]
pub struct KeyListView {
    pub location: String,
    pub slots: Vec<SlotView>,
}

/// What `key check` found: the repository opened with the configured key, with which slot,
/// and which stored object proved it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyCheckView {
    pub location: String,
    pub repository_id: String,
    pub encrypted: bool,
    /// Which key is configured and where ("key file /etc/lifeboat/repo.key (from
    /// repository.key_file)"); `None` when none is.
    pub key: Option<String>,
    /// The slot that opened the repository; `None` when it is not encrypted.
    pub slot: Option<SlotView>,
    /// The stored object read and authenticated with the key; `None` when nothing is stored yet.
    pub checked_object: Option<String>,
}

impl Document for RepositoryView {
    fn schema(&self) -> &'static str {
        "repository/1"
    }
}

impl Document for KeyListView {
    fn schema(&self) -> &'static str {
        "key-list/1"
    }
}

impl Document for KeyCheckView {
    fn schema(&self) -> &'static str {
        "key-check/1"
    }
}

impl RepositoryView {
    pub fn new(location: String, file: &RepoFile) -> RepositoryView {
        RepositoryView {
            location,
            repository_id: file.repository_id.clone(),
            format_version: file.version,
            created_at: file.created_at,
            cipher: file.cipher,
            key_id: file.key_id.clone(),
            slots: file.slots.iter().map(SlotView::from).collect(),
        }
    }
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
            created_at: slot.created_at,
            kdf,
        }
    }
}
