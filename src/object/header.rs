//! The 64-byte object header: what a reader must know before the first chunk.

use serde::{Deserialize, Serialize};

use super::ObjectError;
use crate::storage::ObjectKey;

pub const MAGIC: [u8; 8] = *b"LIFEBOAT";
pub const HEADER_LEN: usize = 64;
pub const FORMAT_VERSION: u8 = 1;
/// Chunk sizes outside these bounds are refused when reading, so a damaged header cannot make a
/// reader allocate gigabytes.
pub const MIN_CHUNK_SIZE: u32 = 4 * 1024;
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;

/// How chunk payloads are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cipher {
    /// No confidentiality; each chunk carries a 16-byte keyless BLAKE3 check, which still detects
    /// accidental damage, truncation and reordering. For tests and explicit opt-out only.
    #[serde(rename = "none")]
    None,
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
}

/// How the plaintext is compressed before it is cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Zstd,
}

/// How the stream of an object is compressed: the header's compression code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// `0`: the stream is the plaintext.
    Plain,
    /// `1`: one zstd frame (what lifeboat wrote before frames).
    ZstdFrame,
    /// `2`: zstd frames one after the other, each of a bounded piece of the plaintext.
    ZstdFrames,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub compression: Stream,
    pub cipher: Cipher,
    /// Bytes of the (compressed) stream per chunk; every chunk but the last holds exactly this many.
    pub chunk_size: u32,
    /// Identifies the master key the object key was derived from; all zero without encryption.
    pub key_id: [u8; 16],
    /// Random per object; the object key is derived from it, so no two objects share a key.
    pub salt: [u8; 32],
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&MAGIC);
        out[8] = FORMAT_VERSION;
        out[9] = match self.compression {
            Stream::Plain => 0,
            Stream::ZstdFrame => 1,
            Stream::ZstdFrames => 2,
        };
        out[10] = match self.cipher {
            Cipher::None => 0,
            Cipher::Aes256Gcm => 1,
        };
        out[12..16].copy_from_slice(&self.chunk_size.to_be_bytes());
        out[16..32].copy_from_slice(&self.key_id);
        out[32..64].copy_from_slice(&self.salt);
        out
    }

    pub fn decode(key: &ObjectKey, bytes: &[u8]) -> Result<Header, ObjectError> {
        let bad = |detail: String| ObjectError::BadHeader { key: key.clone(), detail };
        if bytes.len() < HEADER_LEN {
            return Err(bad(format!("{} bytes, shorter than the {HEADER_LEN}-byte header", bytes.len())));
        }
        if bytes[0..8] != MAGIC {
            return Err(bad("wrong magic bytes".into()));
        }
        if bytes[8] != FORMAT_VERSION {
            return Err(ObjectError::UnsupportedVersion { key: key.clone(), version: bytes[8] });
        }
        let compression = match bytes[9] {
            0 => Stream::Plain,
            1 => Stream::ZstdFrame,
            2 => Stream::ZstdFrames,
            other => {
                return Err(bad(format!(
                    "unknown compression code {other}; a newer lifeboat wrote it: read it with that version"
                )));
            }
        };
        let cipher = match bytes[10] {
            0 => Cipher::None,
            1 => Cipher::Aes256Gcm,
            other => return Err(bad(format!("unknown cipher code {other}"))),
        };
        if bytes[11] != 0 {
            return Err(bad("reserved byte is not zero".into()));
        }
        let chunk_size = u32::from_be_bytes(bytes[12..16].try_into().expect("4 bytes"));
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(bad(format!("chunk size {chunk_size} outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}")));
        }
        Ok(Header {
            compression,
            cipher,
            chunk_size,
            key_id: bytes[16..32].try_into().expect("16 bytes"),
            salt: bytes[32..64].try_into().expect("32 bytes"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_decodes() {
        let header = Header {
            compression: Stream::ZstdFrames,
            cipher: Cipher::Aes256Gcm,
            chunk_size: 1 << 20,
            key_id: [7; 16],
            salt: [9; 32],
        };
        let key = ObjectKey::new("a/b").unwrap();
        assert_eq!(Header::decode(&key, &header.encode()).unwrap(), header);
    }

    #[test]
    fn refuses_garbage_naming_the_object() {
        let key = ObjectKey::new("clusters/main/x").unwrap();
        let err =
            Header::decode(&key, b"not a lifeboat object at all, just some text....................").unwrap_err();
        assert!(err.to_string().contains("clusters/main/x"), "{err}");
        let mut future = Header {
            compression: Stream::Plain,
            cipher: Cipher::None,
            chunk_size: 1 << 20,
            key_id: [0; 16],
            salt: [0; 32],
        }
        .encode();
        future[8] = 2;
        assert!(matches!(Header::decode(&key, &future), Err(ObjectError::UnsupportedVersion { version: 2, .. })));
    }
}
