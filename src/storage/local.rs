//! The local-directory backend: one file per object under a root directory.
//!
//! Writes are atomic and durable: bytes go to a temporary file beside the target (a name no key
//! can take, see [`RESERVED_PREFIX`]), which is fsynced, then renamed (or, for create-only puts,
//! hard-linked, which fails if the target exists) into place, and the directory is fsynced. A
//! crash leaves either the old object, the new one, or a stray temporary file that `list` ignores
//! and [`ObjectStore::sweep`] removes once it has been left alone long enough; deletes leave empty
//! directories, which the sweep removes too.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::io::AsyncReadExt;
use tokio_util::io::SyncIoBridge;

use super::key::RESERVED_PREFIX;
use super::{ByteReader, ObjectKey, ObjectMeta, ObjectStore, PutMode, StorageError, Swept};
use crate::keys::master::random_array;

const COPY_BUFFER: usize = 1024 * 1024;
/// How a put names its temporary file: the reserved prefix, this, and random hex.
const TEMPORARY: &str = "tmp-";

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root`. Nothing is touched until the first operation; `put` creates
    /// directories as needed.
    pub fn new(root: impl Into<PathBuf>) -> LocalStore {
        LocalStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    fn io_error(&self, operation: &'static str, key: &str, source: std::io::Error) -> StorageError {
        StorageError::Io { location: self.location(), operation, key: key.to_owned(), source }
    }

    fn not_found(&self, key: &ObjectKey) -> StorageError {
        StorageError::NotFound { location: self.location(), key: key.clone() }
    }

    fn put_blocking(&self, key: &ObjectKey, body: &mut dyn Read, mode: PutMode) -> Result<(), StorageError> {
        let target = self.path(key);
        let parent = target.parent().expect("an object path lies below the root").to_owned();
        create_dirs_durably(&parent).map_err(|error| self.io_error("put", key.as_str(), error))?;
        let temporary = parent.join(format!("{RESERVED_PREFIX}{TEMPORARY}{}", hex::encode(random_array::<8>())));
        let result = write_and_publish(&temporary, &target, body, mode);
        if result.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        match result {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists && mode == PutMode::CreateOnly => {
                Err(StorageError::AlreadyExists { location: self.location(), key: key.clone() })
            }
            Err(error) => Err(self.io_error("put", key.as_str(), error)),
        }
    }
}

/// Writes `body` to `temporary`, makes it durable, and publishes it under `target`.
fn write_and_publish(temporary: &Path, target: &Path, body: &mut dyn Read, mode: PutMode) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(temporary)?;
    let mut buffer = vec![0u8; COPY_BUFFER];
    loop {
        match body.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => file.write_all(&buffer[..read])?,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    file.sync_all()?;
    drop(file);
    match mode {
        PutMode::Overwrite => std::fs::rename(temporary, target)?,
        PutMode::CreateOnly => {
            // link(2) refuses an existing target atomically, unlike rename(2).
            std::fs::hard_link(temporary, target)?;
            std::fs::remove_file(temporary)?;
        }
    }
    sync_dir(target.parent().expect("an object path has a parent"))
}

/// `create_dir_all`, then fsync the parent of every directory it created, so the new entries
/// survive a crash along with the file put into them.
fn create_dirs_durably(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cursor = dir;
    while !cursor.exists() {
        missing.push(cursor.to_owned());
        match cursor.parent() {
            Some(parent) => cursor = parent,
            None => break,
        }
    }
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        if let Some(parent) = created.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes the temporary files below `dir` not modified for `idle`, then the directories below it
/// left empty and not modified for `idle`, deepest first. Returns whether `dir` is empty now.
/// A put may create a file in a directory at any moment: removing a directory that is no longer
/// empty fails and is not an error, and a put that loses its directory or its temporary file
/// fails (it never publishes a partial object).
fn sweep_dir(dir: &Path, idle: Duration, now: SystemTime, swept: &mut Swept) -> std::io::Result<bool> {
    let idle_since = |metadata: &std::fs::Metadata| {
        idle.is_zero() || metadata.modified().ok().and_then(|time| now.duration_since(time).ok()) >= Some(idle)
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error),
    };
    let mut left = 0;
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let file_type = entry.file_type()?;
        let temporary =
            entry.file_name().to_str().is_some_and(|name| name.starts_with(&format!("{RESERVED_PREFIX}{TEMPORARY}")));
        let gone = if file_type.is_dir() {
            sweep_dir(&path, idle, now, swept)?
                && entry.metadata().is_ok_and(|metadata| idle_since(&metadata))
                && match std::fs::remove_dir(&path) {
                    Ok(()) => {
                        swept.directories += 1;
                        true
                    }
                    Err(_) => false,
                }
        } else if file_type.is_file() && temporary {
            match entry.metadata() {
                Ok(metadata) if idle_since(&metadata) => match std::fs::remove_file(&path) {
                    Ok(()) => {
                        swept.partial += 1;
                        swept.bytes += metadata.len();
                        true
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => true,
                    Err(error) => return Err(error),
                },
                Ok(_) => false,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => true,
                Err(error) => return Err(error),
            }
        } else {
            false
        };
        if !gone {
            left += 1;
        }
    }
    Ok(left == 0)
}

/// Collects every object below `dir` whose key starts with `prefix`, skipping temporary files.
/// A file's modification time, when the filesystem keeps one.
fn modified(metadata: &std::fs::Metadata) -> Option<chrono::DateTime<chrono::Utc>> {
    metadata.modified().ok().map(chrono::DateTime::from)
}

fn walk(dir: &Path, key_of_dir: &str, prefix: &str, out: &mut Vec<ObjectMeta>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        if name.starts_with(RESERVED_PREFIX) {
            continue;
        }
        let key = if key_of_dir.is_empty() { name } else { format!("{key_of_dir}/{name}") };
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            // Descend only where the prefix can still match.
            if key.starts_with(prefix) || prefix.starts_with(&format!("{key}/")) {
                walk(&entry.path(), &key, prefix, out)?;
            }
        } else if file_type.is_file()
            && key.starts_with(prefix)
            && let Ok(key) = ObjectKey::new(key)
        {
            let metadata = entry.metadata()?;
            out.push(ObjectMeta { key, size: metadata.len(), modified: modified(&metadata) });
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn location(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn put(&self, key: &ObjectKey, body: ByteReader, mode: PutMode) -> Result<(), StorageError> {
        let store = self.clone();
        let key = key.clone();
        let mut body = SyncIoBridge::new(body);
        tokio::task::spawn_blocking(move || store.put_blocking(&key, &mut body, mode))
            .await
            .expect("the local put task does not panic")
    }

    async fn get(&self, key: &ObjectKey) -> Result<ByteReader, StorageError> {
        match tokio::fs::File::open(self.path(key)).await {
            Ok(file) => Ok(Box::new(file)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(self.not_found(key)),
            Err(error) => Err(self.io_error("get", key.as_str(), error)),
        }
    }

    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<ByteReader, StorageError> {
        let path = self.path(key);
        let start = range.start;
        let opened = tokio::task::spawn_blocking(move || -> std::io::Result<File> {
            let mut file = File::open(path)?;
            file.seek(SeekFrom::Start(start))?;
            Ok(file)
        })
        .await
        .expect("the local open task does not panic");
        match opened {
            Ok(file) => {
                let length = range.end.saturating_sub(range.start);
                Ok(Box::new(tokio::fs::File::from_std(file).take(length)))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(self.not_found(key)),
            Err(error) => Err(self.io_error("get", key.as_str(), error)),
        }
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError> {
        match tokio::fs::metadata(self.path(key)).await {
            Ok(metadata) if metadata.is_file() => {
                Ok(Some(ObjectMeta { key: key.clone(), size: metadata.len(), modified: modified(&metadata) }))
            }
            Ok(_) => Ok(None),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(self.io_error("head", key.as_str(), error)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let root = self.root.clone();
        let prefix_owned = prefix.to_owned();
        let listed = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, "", &prefix_owned, &mut out).map(|()| out)
        })
        .await
        .expect("the local list task does not panic");
        let mut objects = listed.map_err(|error| self.io_error("list", prefix, error))?;
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.path(key)).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(self.io_error("delete", key.as_str(), error)),
        }
    }

    async fn sweep(&self, prefix: &str, idle: Duration) -> Result<Swept, StorageError> {
        let dir = self.root.join(prefix.trim_end_matches('/'));
        let swept = tokio::task::spawn_blocking(move || {
            let mut swept = Swept::default();
            sweep_dir(&dir, idle, SystemTime::now(), &mut swept).map(|_| swept)
        })
        .await
        .expect("the local sweep task does not panic");
        swept.map_err(|error| self.io_error("sweep", prefix, error))
    }
}
