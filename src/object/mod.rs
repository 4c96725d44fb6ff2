//! The framed object format: how every stored object except `lifeboat.repo` is laid out.
//!
//! An object is a 64-byte [`Header`] followed by chunks. The plaintext is compressed as one zstd
//! stream; that compressed stream is cut into chunks of `chunk_size` bytes, and each chunk is
//! sealed with AES-256-GCM under a key derived for this object alone (HKDF-SHA256 of the master key,
//! the header's random salt and the object's name), with nonces built as in the STREAM construction
//! (a per-object prefix, a chunk counter and a last-chunk flag). The header is authenticated as
//! associated data of every chunk. So a flipped bit, a truncation (even at a chunk boundary),
//! swapped chunks, or an object copied under another name all fail authentication, and the error
//! names the object. `docs/format.md` is the normative description; this module implements it.
//!
//! [`seal`] holds the synchronous, bounded-memory sealing and opening state machines;
//! [`stream`] runs them on blocking threads behind async readers.

mod header;
pub mod seal;
pub mod stream;

pub use header::{Cipher, Compression, HEADER_LEN, Header, MAGIC};
pub use seal::{Opener, SealSummary, Sealer, WriteOptions};
pub use stream::{Plaintext, open_reader, seal_reader};

use crate::storage::ObjectKey;

/// Why an object could not be opened. Every variant names the object.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ObjectError {
    #[error("object {key}: not a lifeboat object ({detail}); it was not written by lifeboat or is damaged")]
    BadHeader { key: ObjectKey, detail: String },

    #[error(
        "object {key}: written by a newer lifeboat (format version {version}, this build reads 1); \
         upgrade lifeboat to read it"
    )]
    UnsupportedVersion { key: ObjectKey, version: u8 },

    #[error(
        "object {key}: sealed with key {found}, but the repository's key is {expected}; \
         it belongs to another repository"
    )]
    WrongKey { key: ObjectKey, found: String, expected: String },

    #[error("object {key}: encrypted, but the repository is opened without a key")]
    KeyRequired { key: ObjectKey },

    #[error(
        "object {key}: chunk {chunk} failed authentication: the object is corrupted, cut short or \
         altered (flipped bits, reordered chunks, or bytes that belong to another object)"
    )]
    Tampered { key: ObjectKey, chunk: u32 },

    #[error("object {key}: truncated: its end is missing after {intact_chunks} intact chunk(s)")]
    Truncated { key: ObjectKey, intact_chunks: u32 },

    #[error(
        "object {key}: not encrypted, but the repository is; refusing unauthenticated data \
         (someone may have replaced the object)"
    )]
    Unencrypted { key: ObjectKey },

    #[error("object {key}: the compressed stream is invalid after authentication ({detail})")]
    BadCompression { key: ObjectKey, detail: String },

    #[error("object {key}: more than 2^32 chunks; split the data into several objects")]
    TooLarge { key: ObjectKey },
}

impl ObjectError {
    /// Wraps the error for transport through `std::io` readers; [`ObjectError::from_io`] recovers it.
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, self)
    }

    /// The object error carried by an I/O error from an opened object's reader, if that is what it is.
    pub fn from_io(error: &std::io::Error) -> Option<&ObjectError> {
        error.get_ref().and_then(|inner| inner.downcast_ref::<ObjectError>())
    }
}
