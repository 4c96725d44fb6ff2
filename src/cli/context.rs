//! What most commands need first: the configuration, the store it points at, the key it names,
//! and the opened repository.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use crate::catalog::layout::ClusterLayout;
use crate::config::{Config, KeySource, RepositoryUrl};
use crate::keys::Unlock;
use crate::keys::slots::KeyFile;
use crate::object::WriteOptions;
use crate::repository::Repository;
use crate::storage::local::LocalStore;
use crate::storage::s3::S3Store;
use crate::storage::{ObjectKey, ObjectStore};

pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

pub async fn connect_store(config: &Config) -> anyhow::Result<Arc<dyn ObjectStore>> {
    Ok(match &config.repository.url {
        RepositoryUrl::Local(root) => Arc::new(LocalStore::new(root)),
        RepositoryUrl::S3 { .. } => {
            let settings = config.s3_settings().expect("an s3:// url has S3 settings");
            Arc::new(S3Store::connect(settings).await?)
        }
    })
}

/// The key the configuration names, loaded; `None` when none is configured (enough for an
/// unencrypted repository, and for commands that read only `lifeboat.repo`).
pub fn configured_unlock(config: &Config) -> anyhow::Result<Option<Unlock>> {
    if !config.has_key() {
        return Ok(None);
    }
    Ok(Some(match config.key_source()? {
        KeySource::KeyFile(path) => Unlock::KeyFile(KeyFile::load(&path)?),
        KeySource::Passphrase(secret) => Unlock::Passphrase(secret),
    }))
}

pub fn write_options(config: &Config) -> WriteOptions {
    let compression = &config.repository.compression;
    WriteOptions { compression: compression.algorithm, level: compression.level, ..WriteOptions::default() }
}

/// Sealed objects whose header shows which master key the repository's objects are under: the
/// cluster's identity record, written by its first backup or WAL.
pub fn key_probes(config: &Config) -> Vec<ObjectKey> {
    vec![ClusterLayout::new(&config.cluster.name).cluster_record()]
}

pub async fn open_repository(config: &Config) -> anyhow::Result<Repository> {
    let store = connect_store(config).await?;
    let unlock = configured_unlock(config)?;
    Repository::open_probing(store, unlock.as_ref(), write_options(config), &key_probes(config))
        .await
        .with_context(|| format!("cannot open the repository of cluster {:?}", config.cluster.name))
}
