//! `wal-push`: store one file that PostgreSQL's archiver hands over, under guarantee G2.
//!
//! - Exit 0 only once the file is durable: the repository's put returns only then.
//! - The object is written create-only, so an archived file is never replaced. When it already
//!   exists (PostgreSQL retries a push whose success it did not record, for instance after a
//!   crash), the stored plaintext's BLAKE3 is compared with the local file's, both streamed: the
//!   same content is success, different content is a loud failure that changes nothing.
//! - Before anything is written, the segment's system identifier (from its first page) is
//!   checked against the cluster record, which the first push creates.
//!
//! History and backup history files carry no page header; their cluster is checked through the
//! data directory's `pg_control` when the file sits in a `pg_wal` directory, as it does when
//! PostgreSQL runs the command.

use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;

use super::page::{self, LongPageHeader};
use crate::catalog::cluster::{ClusterRecord, IdentityError, Observed};
use crate::catalog::layout::ClusterLayout;
use crate::catalog::wal::{InvalidWalName, SegmentSize, WalFile};
use crate::config::Config;
use crate::object::{ObjectError, WriteOptions};
use crate::postgres::version::{self, UnsupportedVersion};
use crate::repository::{Repository, RepositoryError};
use crate::storage::{ByteReader, ObjectKey, PutMode, StorageError};

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub file: WalFile,
    pub name: String,
    pub key: ObjectKey,
    /// The object existed already with identical content; nothing was written.
    pub already_archived: bool,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("cannot read {}: {source}; nothing was stored", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{} is not a file PostgreSQL archives ({reason}); archive_command must pass %p, the path of a WAL \
         segment, .partial, .history or .backup file",
        path.display()
    )]
    NotWalFile { path: PathBuf, reason: String },

    #[error("{} is not a valid WAL segment: {reason}; nothing was stored", path.display())]
    BadSegment { path: PathBuf, reason: String },

    /// Boxed to keep `Result<_, PushError>` small.
    #[error(transparent)]
    Conflict(Box<Conflict>),

    #[error(
        "{name} is already archived as {key}, but that copy cannot be read to compare it with {}: {detail}. \
         Nothing was changed; check the repository's key, and `lifeboat wal check`",
        path.display()
    )]
    Unreadable { name: String, key: ObjectKey, path: PathBuf, detail: String },

    #[error(transparent)]
    Identity(#[from] IdentityError),

    #[error("{0}; nothing was stored")]
    Version(#[from] UnsupportedVersion),

    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// The file is already archived with other content (G2: fail loudly, change nothing).
#[derive(Debug, thiserror::Error)]
#[error(
    "{kind} {name} is already archived as {key} in {location} with different content (archived copy: \
     BLAKE3 {archived}, {bytes_archived} bytes; {path}: BLAKE3 {local}, {bytes_local} bytes). The archived \
     copy was left unchanged. Either two PostgreSQL servers archive under cluster name {cluster:?} (give \
     each its own [cluster] name), or this server is a restored copy writing WAL that the original already \
     archived (a restored server must start a new timeline). Keep the archived copy unless you are sure \
     it is wrong: a backup may need it",
    path = path.display()
)]
pub struct Conflict {
    pub kind: &'static str,
    pub name: String,
    pub key: ObjectKey,
    pub location: String,
    pub cluster: String,
    pub path: PathBuf,
    pub archived: blake3::Hash,
    pub local: blake3::Hash,
    pub bytes_archived: u64,
    pub bytes_local: u64,
}

/// How WAL objects are written: the repository's compression algorithm at `[wal]
/// compression_level`, its frames compressed by `workers` threads (0: on the sealing thread), and
/// no plaintext hash (no manifest records one).
pub fn write_options(config: &Config, workers: u32) -> WriteOptions {
    WriteOptions {
        level: config.wal.compression_level,
        workers,
        hash_plaintext: false,
        ..crate::ops::open::write_options(config)
    }
}

/// Archives the file at `path` (relative paths are relative to the working directory, which is
/// the data directory when PostgreSQL runs `archive_command`), written with `options`.
pub async fn push(
    repository: &Repository,
    layout: &ClusterLayout,
    path: &Path,
    options: WriteOptions,
) -> Result<Pushed, PushError> {
    let read_error = |source| PushError::Read { path: path.to_owned(), source };
    let name = path.file_name().and_then(|name| name.to_str()).ok_or_else(|| PushError::NotWalFile {
        path: path.to_owned(),
        reason: "its name is not a WAL file name".into(),
    })?;
    let not_wal = |error: InvalidWalName| PushError::NotWalFile { path: path.to_owned(), reason: error.to_string() };
    let data_dir = page::data_dir_of(path);
    let version = data_dir.as_deref().and_then(page::postgres_version);

    // Any name valid for some segment size is valid for the smallest (its last group has the
    // widest range), so this recognises the kind before the real size is known.
    let smallest = SegmentSize::new(SegmentSize::MIN.into()).expect("a valid size");
    let kind = WalFile::parse(name, smallest).map_err(not_wal)?;
    let (file, size) = if matches!(kind, WalFile::Segment(_) | WalFile::Partial(_)) {
        let header = LongPageHeader::read(path)
            .map_err(read_error)?
            .map_err(|reason| PushError::BadSegment { path: path.to_owned(), reason })?;
        version::check_wal_magic(header.magic, format_args!("{}", path.display()))?;
        let size = header.segment_size;
        let file = WalFile::parse(name, size).map_err(not_wal)?;
        check_segment(path, &file, &header)?;
        let observed = Observed {
            system_identifier: header.system_identifier,
            segment_size: size,
            postgres_version: version,
            source: format!("WAL segment {}", path.display()),
        };
        ClusterRecord::ensure(repository, layout, &observed).await?;
        (file, size)
    } else {
        // No header to read: the record (if any) gives the segment size and the identifier to
        // compare with pg_control's.
        let record = ClusterRecord::read(repository, layout).await?;
        let size = record.as_ref().map_or(SegmentSize::DEFAULT, |record| record.wal_segment_size);
        let file = WalFile::parse(name, size).map_err(not_wal)?;
        if let (Some(record), Some(data_dir)) = (&record, &data_dir) {
            match page::control_file_system_identifier(data_dir) {
                Ok(system_identifier) => {
                    let observed = Observed {
                        system_identifier,
                        segment_size: record.wal_segment_size,
                        postgres_version: version,
                        source: format!("{} (per {}/global/pg_control)", path.display(), data_dir.display()),
                    };
                    record.check(&repository.location(), layout, &observed)?;
                }
                Err(error) => tracing::debug!(%error, "no pg_control beside {}; identity not checked", path.display()),
            }
        }
        (file, size)
    };

    let key = layout.wal_file(&file, size);
    let local = std::fs::File::open(path).map_err(read_error)?;
    match repository.with_write_options(options).put_file(&key, local, PutMode::CreateOnly).await {
        Ok(summary) => {
            tracing::debug!(%key, bytes = summary.plaintext_len, stored = summary.stored_len, "archived {name}");
            Ok(Pushed { file, name: name.to_owned(), key, already_archived: false, bytes: summary.plaintext_len })
        }
        Err(RepositoryError::Storage(StorageError::AlreadyExists { .. })) => {
            compare_with_archived(repository, layout, path, file, name, key).await
        }
        Err(error) => Err(error.into()),
    }
}

/// A segment must be whole and must start where its name says.
fn check_segment(path: &Path, file: &WalFile, header: &LongPageHeader) -> Result<(), PushError> {
    let bad = |reason: String| PushError::BadSegment { path: path.to_owned(), reason };
    let size = header.segment_size;
    let segment = file.segment().expect("segments and partial segments have one");
    let expected = segment.start_lsn(size);
    if header.page_address != expected {
        return Err(bad(format!(
            "its first page is at LSN {}, but its name puts it at {expected} (was it renamed or copied over?)",
            header.page_address
        )));
    }
    let length = std::fs::metadata(path).map_err(|source| PushError::Read { path: path.to_owned(), source })?.len();
    if length != u64::from(size.bytes()) {
        return Err(bad(format!("it has {length} bytes, but its segment size is {} ({size})", size.bytes())));
    }
    Ok(())
}

async fn open(path: &Path) -> std::io::Result<ByteReader> {
    Ok(Box::new(tokio::fs::File::open(path).await?))
}

async fn compare_with_archived(
    repository: &Repository,
    layout: &ClusterLayout,
    path: &Path,
    file: WalFile,
    name: &str,
    key: ObjectKey,
) -> Result<Pushed, PushError> {
    let (local, bytes_local) =
        hash(open(path).await.map_err(|source| PushError::Read { path: path.to_owned(), source })?)
            .await
            .map_err(|source| PushError::Read { path: path.to_owned(), source })?;
    let unreadable = |detail: String| PushError::Unreadable {
        name: name.to_owned(),
        key: key.clone(),
        path: path.to_owned(),
        detail,
    };
    let stored = repository.get(&key).await.map_err(|error| unreadable(error.to_string()))?;
    let (archived, bytes_archived) = hash(stored).await.map_err(|error| match ObjectError::from_io(&error) {
        Some(object_error) => unreadable(object_error.to_string()),
        None => unreadable(error.to_string()),
    })?;
    if archived != local || bytes_archived != bytes_local {
        return Err(PushError::Conflict(Box::new(Conflict {
            kind: file.kind(),
            name: name.to_owned(),
            key,
            location: repository.location(),
            cluster: layout.name().to_string(),
            path: path.to_owned(),
            archived,
            local,
            bytes_archived,
            bytes_local,
        })));
    }
    // A warning, so it reaches PostgreSQL's log: a retried push is worth knowing about.
    tracing::warn!(%key, "{name} was already archived with identical content; nothing to do");
    Ok(Pushed { file, name: name.to_owned(), key, already_archived: true, bytes: bytes_local })
}

/// BLAKE3 and length of everything `reader` yields, read in bounded blocks.
async fn hash(mut reader: ByteReader) -> std::io::Result<(blake3::Hash, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut block = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let read = reader.read(&mut block).await?;
        if read == 0 {
            return Ok((hasher.finalize(), total));
        }
        hasher.update(&block[..read]);
        total += read as u64;
    }
}
