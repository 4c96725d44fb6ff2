//! Opening what an operation needs from the configuration: the store the repository URL names,
//! the key the configuration names, and the repository itself, with typed errors.

use std::sync::Arc;

use crate::catalog::layout::{self, ClusterLayout};
use crate::config::{Config, ConfigError, CopySelectError, KeySource, RepositoryUrl};
use crate::keys::Unlock;
use crate::keys::slots::{KeyError, KeyFile};
use crate::object::WriteOptions;
use crate::repository::{Repository, RepositoryError};
use crate::storage::local::LocalStore;
use crate::storage::s3::{ObjectLockError, S3Store};
use crate::storage::{ObjectKey, ObjectStore, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StorageError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    ObjectLock(#[from] ObjectLockError),
    #[error(transparent)]
    Copy(#[from] CopySelectError),
    #[error("cannot open the repository of cluster {cluster:?}: {source}")]
    Repository { cluster: String, source: RepositoryError },
    /// `LIFEBOAT_FAULTS` is set but not valid (only in builds with the `fault-injection` feature).
    #[cfg(feature = "fault-injection")]
    #[error("{0}")]
    Faults(String),
    #[error(
        "copy {name:?} at {location} holds no repository yet (no lifeboat.repo): create it with `lifeboat init --copy \
         {name}`, then fill it with `lifeboat copy --to {name}`"
    )]
    CopyNotInitialised { name: String, location: String },
}

/// The store the repository URL names (an S3 store checks its bucket when connecting). A build
/// with the `fault-injection` feature wraps it in a [`crate::storage::faulty::FaultyStore`] when
/// `LIFEBOAT_FAULTS` is set.
pub async fn connect_store(config: &Config) -> Result<Arc<dyn ObjectStore>, OpenError> {
    let store = configured_store(config).await?;
    #[cfg(feature = "fault-injection")]
    let store = crate::storage::faulty::FaultyStore::from_environment(store).map_err(OpenError::Faults)?;
    Ok(store)
}

async fn configured_store(config: &Config) -> Result<Arc<dyn ObjectStore>, OpenError> {
    Ok(match &config.repository.url {
        RepositoryUrl::Local(root) => Arc::new(LocalStore::new(root)),
        RepositoryUrl::S3 { .. } => {
            let settings = config.s3_settings().expect("an s3:// url has S3 settings");
            let store = S3Store::connect(settings).await?;
            match config.repository.s3.as_ref().and_then(|s3| s3.object_lock) {
                Some(lock) => Arc::new(store.with_object_lock(lock, Arc::new(layout::retain))),
                None => Arc::new(store),
            }
        }
    })
}

/// With `repository.s3.object_lock` configured, checks that the bucket can honour it (Object
/// Lock enabled, no default retention); without, does nothing. `lifeboat init` runs it.
pub async fn check_object_lock(config: &Config) -> Result<(), OpenError> {
    let Some(lock) = config.repository.s3.as_ref().and_then(|s3| s3.object_lock) else {
        return Ok(());
    };
    let settings = config.s3_settings().expect("object_lock is only accepted for an s3:// url");
    let store = S3Store::connect(settings).await?.with_object_lock(lock, Arc::new(layout::retain));
    Ok(store.check_object_lock().await?)
}

/// The key the configuration names, loaded; `None` when none is configured (enough for an
/// unencrypted repository, and for commands that read only `lifeboat.repo`).
pub fn configured_unlock(config: &Config) -> Result<Option<Unlock>, OpenError> {
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

/// The repository of the configuration, opened with its key.
pub async fn open_repository(config: &Config) -> Result<Repository, OpenError> {
    let store = connect_store(config).await?;
    let unlock = configured_unlock(config)?;
    Repository::open_probing(store, unlock.as_ref(), write_options(config), &key_probes(config)).await.map_err(
        |source| match (source, &config.copies.opened) {
            (RepositoryError::NotInitialised { location }, Some(name)) => {
                OpenError::CopyNotInitialised { name: name.clone(), location }
            }
            (source, _) => OpenError::Repository { cluster: config.cluster.name.as_str().to_owned(), source },
        },
    )
}

/// Copy `name` of the configuration (a `[[copies]]` entry), opened with the primary's key
/// material: a copy holds the primary's master key in slots of its own.
pub async fn open_copy_repository(config: &Config, name: &str) -> Result<Repository, OpenError> {
    open_repository(&config.for_copy(name)?).await
}
