//! Reading archived WAL segments to their end through the authenticated reader, in parallel,
//! keeping them (verify's restore test copies them where its scratch server's `restore_command`
//! finds them) or discarding them (a restore, and verify's integrity pass, only need to know
//! they are intact).
//!
//! Why a restore reads WAL it does not keep: the files of a backup are useless without the WAL
//! from its start to its stop segment, and PostgreSQL reads that WAL only once it is started on
//! the restored directory. A damaged segment would then show up as "could not locate required
//! checkpoint record", long after `restore` said it succeeded. Reading those few segments first
//! costs a few seconds and lets a restore fail before it writes (or, with `--force`, deletes)
//! anything.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinSet;

use crate::catalog::layout::ClusterLayout;
use crate::catalog::wal::{SegmentSize, WalFile, WalSegment};
use crate::object::ObjectError;
use crate::repository::{Repository, RepositoryError};
use crate::storage::{ObjectKey, StorageError};

/// Bytes per read of an object.
const BLOCK: usize = 1024 * 1024;

/// Why one segment (or history file) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WalReadError {
    #[error("WAL file {name} is not in the archive ({key})")]
    Missing { name: String, key: ObjectKey },

    #[error("WAL file {name} is damaged in the archive ({detail})")]
    Damaged { name: String, detail: String },

    #[error("WAL segment {name} holds {bytes} bytes in the archive, not {expected}; it is damaged")]
    WrongLength { name: String, bytes: u64, expected: u32 },

    #[error("WAL file {name} could not be read from {key}: {detail}")]
    Read { name: String, key: ObjectKey, detail: String },

    #[error("cannot write WAL file {name} to {}: {source}", path.display())]
    Write { name: String, path: PathBuf, source: std::io::Error },
}

impl WalReadError {
    /// The WAL file that could not be read.
    pub fn name(&self) -> &str {
        match self {
            WalReadError::Missing { name, .. }
            | WalReadError::Damaged { name, .. }
            | WalReadError::WrongLength { name, .. }
            | WalReadError::Read { name, .. }
            | WalReadError::Write { name, .. } => name,
        }
    }
}

/// Reads every segment of `segments` to its end, authenticated, `parallel` at a time, and
/// checks that each holds a whole segment; with `into`, each is written there under its name.
/// Returns the plaintext bytes read. The first failure stops the others.
pub async fn read_segments(
    repository: Arc<Repository>,
    layout: &ClusterLayout,
    size: SegmentSize,
    segments: &[WalSegment],
    parallel: usize,
    into: Option<&Path>,
) -> Result<u64, WalReadError> {
    let mut pending = segments.iter().copied();
    let mut reads = JoinSet::new();
    let mut total = 0;
    loop {
        while reads.len() < parallel.max(1) {
            let Some(segment) = pending.next() else { break };
            let file = WalFile::Segment(segment);
            let key = layout.wal_file(&file, size);
            let name = file.name(size);
            let target = into.map(|dir| dir.join(&name));
            let repository = repository.clone();
            reads.spawn(async move {
                let bytes = read_object(&repository, &key, &name, target.as_deref()).await?;
                if bytes != u64::from(size.bytes()) {
                    return Err(WalReadError::WrongLength { name, bytes, expected: size.bytes() });
                }
                Ok(bytes)
            });
        }
        match reads.join_next().await {
            None => return Ok(total),
            Some(joined) => total += joined.expect("a WAL read does not panic")?,
        }
    }
}

/// Streams one object's authenticated plaintext into `target` (or nowhere); its length. `name`
/// is the WAL file's name, for errors.
pub async fn read_object(
    repository: &Repository,
    key: &ObjectKey,
    name: &str,
    target: Option<&Path>,
) -> Result<u64, WalReadError> {
    let mut reader = match repository.get(key).await {
        Ok(reader) => reader,
        Err(RepositoryError::Storage(StorageError::NotFound { .. })) => {
            return Err(WalReadError::Missing { name: name.to_owned(), key: key.clone() });
        }
        Err(error) => {
            return Err(WalReadError::Read { name: name.to_owned(), key: key.clone(), detail: error.to_string() });
        }
    };
    let write_error =
        |path: &Path, source| WalReadError::Write { name: name.to_owned(), path: path.to_path_buf(), source };
    let mut file = match target {
        Some(path) => Some((tokio::fs::File::create(path).await.map_err(|error| write_error(path, error))?, path)),
        None => None,
    };
    let mut buffer = vec![0u8; BLOCK];
    let mut total = 0u64;
    loop {
        let read = reader.read(&mut buffer).await.map_err(|error| match ObjectError::from_io(&error) {
            Some(object_error) => WalReadError::Damaged { name: name.to_owned(), detail: object_error.to_string() },
            None => WalReadError::Read { name: name.to_owned(), key: key.clone(), detail: error.to_string() },
        })?;
        if read == 0 {
            break;
        }
        if let Some((file, path)) = &mut file {
            file.write_all(&buffer[..read]).await.map_err(|error| write_error(path, error))?;
        }
        total += read as u64;
    }
    Ok(total)
}
