//! Object storage: the one boundary between lifeboat and the place its repository lives.
//!
//! [`ObjectStore`] is deliberately small (streaming put and get, ranged get, head, list by prefix,
//! delete) so every backend can implement it faithfully and one conformance suite
//! (`tests/storage_conformance.rs`) can hold them all to the same behaviour. Backends know nothing
//! about encryption or the repository layout; they move opaque bytes under validated keys.

#[cfg(feature = "fault-injection")]
pub mod faulty;
mod key;
pub mod local;
pub mod s3;

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncRead;

pub use key::{InvalidKey, ObjectKey};

/// A byte stream handed to or returned by a backend. Boxed so that backends, the sealing pipeline
/// and callers can be combined freely; the cost of one indirection per read is irrelevant next to I/O.
pub type ByteReader = Box<dyn AsyncRead + Send + Unpin>;

/// What a put may do when the key already holds an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Replace any existing object atomically: readers see the old or the new bytes, never a mix.
    Overwrite,
    /// Fail with [`StorageError::AlreadyExists`] and leave the existing object untouched.
    CreateOnly,
}

/// What `head` and `list` report about a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: ObjectKey,
    pub size: u64,
    /// When the object was written, as the store says; `None` when it does not say.
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// An asynchronous store of immutable-by-convention objects.
///
/// Every method is safe to call concurrently. Implementations must make a successful `put` durable
/// before returning (G2): a local file and its directory are fsynced; an S3 PUT or multipart
/// completion is acknowledged.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// Where this store points, for messages: `file:///var/lib/lifeboat/repo`, `s3://bucket/prefix`.
    /// Never contains credentials.
    fn location(&self) -> String;

    /// Stores everything `body` yields under `key`. Memory use is bounded whatever the body's size.
    /// On error nothing is visible under `key` (or the previous object still is).
    async fn put(&self, key: &ObjectKey, body: ByteReader, mode: PutMode) -> Result<(), StorageError>;

    /// Streams the whole object.
    async fn get(&self, key: &ObjectKey) -> Result<ByteReader, StorageError>;

    /// Streams bytes `range.start..range.end` of the object; a range reaching past the end is cut
    /// at the end. An empty range yields no bytes.
    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<ByteReader, StorageError>;

    /// The object's metadata, or `None` when there is no object under `key`.
    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError>;

    /// Every object whose key starts with `prefix` (a plain string prefix, not only whole path
    /// components), sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError>;

    /// Removes the object. Deleting a key that holds nothing succeeds, so deletes can be retried.
    /// An object still under retention (S3 Object Lock) is not removed: [`StorageError::Locked`].
    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError>;

    /// Until when the object under `key` cannot be deleted (S3 Object Lock retention), or `None`
    /// when it can be deleted now (no retention, retention passed, no such object, or a backend
    /// without retention).
    async fn locked_until(&self, key: &ObjectKey) -> Result<Option<chrono::DateTime<chrono::Utc>>, StorageError> {
        let _ = key;
        Ok(None)
    }

    /// Removes what interrupted puts left below `prefix` (a directory-like prefix ending in `/`)
    /// and left alone for at least `idle`: partial uploads (a local temporary file, an S3
    /// multipart upload never completed) and, locally, empty directories. These never hold an
    /// object: a put publishes its bytes under the key only once they are complete. Removing one
    /// that a stalled writer still uses makes that put fail, never publishes anything, so `idle`
    /// only keeps the sweep from failing puts that are merely slow. Objects are never touched.
    async fn sweep(&self, prefix: &str, idle: Duration) -> Result<Swept, StorageError>;
}

/// What a [`ObjectStore::sweep`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Partial uploads, and the bytes they held (as far as the backend tells).
    pub partial: u64,
    pub bytes: u64,
    pub directories: u64,
}

impl Swept {
    pub fn is_empty(&self) -> bool {
        *self == Swept::default()
    }
}

impl std::ops::AddAssign for Swept {
    fn add_assign(&mut self, other: Swept) {
        self.partial += other.partial;
        self.bytes += other.bytes;
        self.directories += other.directories;
    }
}

/// A storage failure, classed so callers can decide whether trying again makes sense.
/// Messages name the store and the object and never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{location}: no object {key}")]
    NotFound { location: String, key: ObjectKey },

    #[error("{location}: object {key} already exists and was left unchanged")]
    AlreadyExists { location: String, key: ObjectKey },

    #[error("{location}: object {key} is under Object Lock retention until {until} and cannot be deleted before then")]
    Locked { location: String, key: ObjectKey, until: chrono::DateTime<chrono::Utc> },

    #[error("{location}: bucket {bucket:?} does not exist; create it or correct repository.url")]
    BucketMissing { location: String, bucket: String },

    #[error(
        "{location}: access denied ({detail}); check the S3 credentials (repository.s3.access_key_id, \
         AWS_ACCESS_KEY_ID, AWS_PROFILE) and the bucket policy"
    )]
    AccessDenied { location: String, detail: String },

    #[error(
        "{location}: no S3 credentials found ({detail}); set repository.s3.access_key_id and \
         secret_access_key, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
    )]
    NoCredentials { location: String, detail: String },

    #[error("{location}: cannot reach {endpoint} ({detail}); check repository.s3.endpoint and that the server is up")]
    Unreachable { location: String, endpoint: String, detail: String },

    #[error("{location}: {operation} {key} failed: {source}")]
    Io {
        location: String,
        operation: &'static str,
        key: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{location}: {operation} {key} failed: {detail}")]
    Service {
        location: String,
        operation: &'static str,
        key: String,
        detail: String,
        /// Throttling, server errors and timeouts are worth another attempt; the rest are not.
        retryable: bool,
    },
}

impl StorageError {
    /// Whether the same call might succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            StorageError::Unreachable { .. } => true,
            StorageError::Service { retryable, .. } => *retryable,
            StorageError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ),
            StorageError::NotFound { .. }
            | StorageError::AlreadyExists { .. }
            | StorageError::Locked { .. }
            | StorageError::BucketMissing { .. }
            | StorageError::AccessDenied { .. }
            | StorageError::NoCredentials { .. } => false,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }
}
