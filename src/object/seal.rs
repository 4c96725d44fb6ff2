//! Sealing and opening objects, synchronously and in bounded memory.
//!
//! [`Sealer`] takes plaintext in any number of pieces and emits the header and sealed chunks;
//! [`Opener`] takes stored bytes in any number of pieces and emits plaintext. Neither ever holds
//! more than one chunk plus one compression buffer, whatever the object's size; zstd runs with
//! fixed-size output buffers so even a highly compressed chunk is expanded piece by piece.

use std::sync::Arc;

use aead_stream::{NewStream, StreamBE32, StreamPrimitive};
use aes_gcm::{Aes256Gcm, KeyInit};
use zstd::stream::raw::{Decoder, Encoder, InBuffer, Operation, OutBuffer};

use super::ObjectError;
use super::header::{Cipher, Compression, HEADER_LEN, Header};
use crate::keys::MasterKey;
use crate::keys::master::random_array;
use crate::storage::ObjectKey;

/// Size of the authentication tag after each chunk, for both ciphers.
pub const TAG_LEN: usize = 16;
/// Plaintext and decompressed output are handled in pieces of this size.
const IO_BUFFER: usize = 256 * 1024;

/// How new objects are written. Readers take everything they need from the header instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    pub compression: Compression,
    /// zstd level; ignored without compression.
    pub level: i32,
    pub chunk_size: u32,
    /// zstd worker threads compressing one object in parallel (0: on the sealing thread). Only
    /// for one large object at a time (`wal-push` alone): the stream format is the same.
    pub workers: u32,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions { compression: Compression::Zstd, level: 3, chunk_size: 1024 * 1024, workers: 0 }
    }
}

/// What sealing an object produced; manifests record these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealSummary {
    pub plaintext_len: u64,
    pub stored_len: u64,
    /// BLAKE3 of the plaintext.
    pub plaintext_hash: blake3::Hash,
}

/// Seals or opens one chunk in place: appends or checks and strips the 16-byte tag.
enum ChunkProtector {
    Aes(Box<StreamBE32<Aes256Gcm>>),
    /// Keyless BLAKE3 check for `cipher = none`: catches damage, truncation and reordering, but
    /// anyone can forge it, so it is never accepted where a key is configured.
    Check {
        key: [u8; 32],
    },
}

impl ChunkProtector {
    fn new(header: &Header, master: Option<&MasterKey>, name: &ObjectKey) -> ChunkProtector {
        match (header.cipher, master) {
            (Cipher::Aes256Gcm, Some(master)) => {
                let material = master.derive_object_key(&header.salt, name.as_str());
                let aead = Aes256Gcm::new((&material.key).into());
                ChunkProtector::Aes(Box::new(StreamBE32::from_aead(aead, (&material.nonce_prefix).into())))
            }
            (Cipher::None, _) | (Cipher::Aes256Gcm, None) => {
                let mut context = Vec::with_capacity(32 + name.as_str().len());
                context.extend_from_slice(&header.salt);
                context.extend_from_slice(name.as_str().as_bytes());
                ChunkProtector::Check { key: blake3::derive_key("lifeboat object check v1", &context) }
            }
        }
    }

    fn seal(&self, counter: u32, last: bool, aad: &[u8], chunk: &mut Vec<u8>) {
        match self {
            ChunkProtector::Aes(stream) => stream
                .encrypt_in_place(counter, last, aad, chunk)
                .expect("AES-GCM accepts chunks far larger than the 16 MiB maximum"),
            ChunkProtector::Check { key } => {
                let tag = check_tag(key, counter, last, aad, chunk);
                chunk.extend_from_slice(&tag);
            }
        }
    }

    /// Returns false when the chunk does not authenticate at this position with this flag.
    fn open(&self, counter: u32, last: bool, aad: &[u8], chunk: &mut Vec<u8>) -> bool {
        match self {
            ChunkProtector::Aes(stream) => stream.decrypt_in_place(counter, last, aad, chunk).is_ok(),
            ChunkProtector::Check { key } => {
                let Some(body_len) = chunk.len().checked_sub(TAG_LEN) else { return false };
                let expected = check_tag(key, counter, last, aad, &chunk[..body_len]);
                if expected[..] != chunk[body_len..] {
                    return false;
                }
                chunk.truncate(body_len);
                true
            }
        }
    }
}

fn check_tag(key: &[u8; 32], counter: u32, last: bool, aad: &[u8], body: &[u8]) -> [u8; TAG_LEN] {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(&counter.to_be_bytes()).update(&[u8::from(last)]).update(aad).update(body);
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&hasher.finalize().as_bytes()[..TAG_LEN]);
    tag
}

/// Turns plaintext into the stored form of one object.
pub struct Sealer {
    encoder: Option<Encoder<'static>>,
    compressed_out: Vec<u8>,
    chunker: Chunker,
    hasher: blake3::Hasher,
    plaintext_len: u64,
}

/// Cuts the (compressed) stream into chunks and seals them.
struct Chunker {
    name: ObjectKey,
    header: [u8; HEADER_LEN],
    protector: ChunkProtector,
    /// Stream bytes not sealed yet; sealed only once more bytes arrive or at the end, because only
    /// then is it known whether the chunk is the last one.
    pending: Vec<u8>,
    chunk_size: usize,
    counter: u32,
    stored_len: u64,
}

impl Sealer {
    /// A sealer for the object `name`, encrypted under `master` or, with `None`, unencrypted.
    pub fn new(name: &ObjectKey, master: Option<&MasterKey>, options: &WriteOptions) -> Sealer {
        let header = Header {
            compression: options.compression,
            cipher: if master.is_some() { Cipher::Aes256Gcm } else { Cipher::None },
            chunk_size: options.chunk_size,
            key_id: master.map(MasterKey::id).unwrap_or_default(),
            salt: random_array(),
        };
        let encoder = match options.compression {
            Compression::Zstd => {
                let mut encoder =
                    Encoder::new(options.level).expect("zstd accepts the levels the configuration allows");
                if options.workers > 0 {
                    encoder
                        .set_parameter(zstd::stream::raw::CParameter::NbWorkers(options.workers))
                        .expect("zstd is built with worker threads (the zstdmt feature)");
                }
                Some(encoder)
            }
            Compression::None => None,
        };
        Sealer {
            compressed_out: vec![0; if encoder.is_some() { IO_BUFFER } else { 0 }],
            encoder,
            chunker: Chunker {
                name: name.clone(),
                protector: ChunkProtector::new(&header, master, name),
                header: header.encode(),
                pending: Vec::with_capacity(options.chunk_size as usize + TAG_LEN),
                chunk_size: options.chunk_size as usize,
                counter: 0,
                stored_len: HEADER_LEN as u64,
            },
            hasher: blake3::Hasher::new(),
            plaintext_len: 0,
        }
    }

    /// The header; it comes first in the stored object.
    pub fn header(&self) -> &[u8] {
        &self.chunker.header
    }

    pub fn update(&mut self, plaintext: &[u8], emit: &mut dyn FnMut(Vec<u8>)) -> Result<(), ObjectError> {
        self.hasher.update(plaintext);
        self.plaintext_len += plaintext.len() as u64;
        let Some(encoder) = self.encoder.as_mut() else {
            return self.chunker.push(plaintext, emit);
        };
        let mut input = InBuffer::around(plaintext);
        while input.pos() < plaintext.len() {
            let mut output = OutBuffer::around(&mut self.compressed_out[..]);
            encoder.run(&mut input, &mut output).expect("zstd compression of in-memory data cannot fail");
            let produced = output.pos();
            self.chunker.push(&self.compressed_out[..produced], emit)?;
        }
        Ok(())
    }

    pub fn finish(mut self, emit: &mut dyn FnMut(Vec<u8>)) -> Result<SealSummary, ObjectError> {
        if let Some(encoder) = self.encoder.as_mut() {
            loop {
                let mut output = OutBuffer::around(&mut self.compressed_out[..]);
                let remaining =
                    encoder.finish(&mut output, true).expect("zstd compression of in-memory data cannot fail");
                let produced = output.pos();
                self.chunker.push(&self.compressed_out[..produced], emit)?;
                if remaining == 0 {
                    break;
                }
            }
        }
        let stored_len = self.chunker.finish(emit);
        Ok(SealSummary { plaintext_len: self.plaintext_len, stored_len, plaintext_hash: self.hasher.finalize() })
    }
}

impl Chunker {
    fn push(&mut self, mut bytes: &[u8], emit: &mut dyn FnMut(Vec<u8>)) -> Result<(), ObjectError> {
        while !bytes.is_empty() {
            if self.pending.len() == self.chunk_size {
                let mut chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(self.chunk_size + TAG_LEN));
                self.protector.seal(self.counter, false, &self.header, &mut chunk);
                self.counter =
                    self.counter.checked_add(1).ok_or_else(|| ObjectError::TooLarge { key: self.name.clone() })?;
                self.stored_len += chunk.len() as u64;
                emit(chunk);
            }
            let take = (self.chunk_size - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        Ok(())
    }

    /// Seals what is pending (possibly nothing) as the last chunk; returns the object's stored size.
    fn finish(mut self, emit: &mut dyn FnMut(Vec<u8>)) -> u64 {
        let mut last = std::mem::take(&mut self.pending);
        self.protector.seal(self.counter, true, &self.header, &mut last);
        self.stored_len += last.len() as u64;
        emit(last);
        self.stored_len
    }
}

/// Turns the stored form of one object back into plaintext, authenticating every chunk.
pub struct Opener {
    name: ObjectKey,
    /// `Some` when the repository is encrypted: then unencrypted objects are refused.
    master: Option<Arc<MasterKey>>,
    header_bytes: Vec<u8>,
    state: Option<OpenState>,
}

struct OpenState {
    protector: ChunkProtector,
    record_len: usize,
    pending: Vec<u8>,
    counter: u32,
    decoder: Option<Decoder<'static>>,
    /// zstd's hint from the last step: 0 once the frame is complete.
    frame_remaining: usize,
    plain_out: Vec<u8>,
}

impl Opener {
    pub fn new(name: &ObjectKey, master: Option<Arc<MasterKey>>) -> Opener {
        Opener { name: name.clone(), master, header_bytes: Vec::with_capacity(HEADER_LEN), state: None }
    }

    pub fn update(&mut self, mut stored: &[u8], emit: &mut dyn FnMut(&[u8])) -> Result<(), ObjectError> {
        if self.state.is_none() {
            let take = (HEADER_LEN - self.header_bytes.len()).min(stored.len());
            self.header_bytes.extend_from_slice(&stored[..take]);
            stored = &stored[take..];
            if self.header_bytes.len() < HEADER_LEN {
                return Ok(());
            }
            self.state = Some(self.start()?);
        }
        let state = self.state.as_mut().expect("started above");
        state.pending.extend_from_slice(stored);
        // A record is known not to be the last only when bytes follow it.
        while state.pending.len() > state.record_len {
            let rest = state.pending.split_off(state.record_len);
            let mut chunk = std::mem::replace(&mut state.pending, rest);
            if !state.protector.open(state.counter, false, &self.header_bytes, &mut chunk) {
                return Err(ObjectError::Tampered { key: self.name.clone(), chunk: state.counter });
            }
            state.decompress(&self.name, &chunk, emit)?;
            state.counter =
                state.counter.checked_add(1).ok_or_else(|| ObjectError::TooLarge { key: self.name.clone() })?;
        }
        Ok(())
    }

    pub fn finish(mut self, emit: &mut dyn FnMut(&[u8])) -> Result<(), ObjectError> {
        let Some(mut state) = self.state.take() else {
            return Err(ObjectError::BadHeader {
                key: self.name.clone(),
                detail: format!("{} bytes, shorter than the {HEADER_LEN}-byte header", self.header_bytes.len()),
            });
        };
        let mut last = std::mem::take(&mut state.pending);
        let stored = last.clone();
        if !state.protector.open(state.counter, true, &self.header_bytes, &mut last) {
            // Tell a cut-off object from altered bytes: a final record that is too short to carry
            // a tag, or one that authenticates as a middle chunk, means the end is missing.
            let mut probe = stored;
            let ends_at_boundary = probe.len() < TAG_LEN;
            let intact_middle =
                !ends_at_boundary && state.protector.open(state.counter, false, &self.header_bytes, &mut probe);
            return Err(if ends_at_boundary || intact_middle {
                ObjectError::Truncated {
                    key: self.name.clone(),
                    intact_chunks: state.counter + u32::from(intact_middle),
                }
            } else {
                ObjectError::Tampered { key: self.name.clone(), chunk: state.counter }
            });
        }
        state.decompress(&self.name, &last, emit)?;
        if state.decoder.is_some() && state.frame_remaining != 0 {
            return Err(ObjectError::BadCompression {
                key: self.name.clone(),
                detail: "the compressed stream ends in the middle of a frame".into(),
            });
        }
        Ok(())
    }

    fn start(&self) -> Result<OpenState, ObjectError> {
        let header = Header::decode(&self.name, &self.header_bytes)?;
        match (header.cipher, &self.master) {
            (Cipher::Aes256Gcm, None) => return Err(ObjectError::KeyRequired { key: self.name.clone() }),
            (Cipher::None, Some(_)) => return Err(ObjectError::Unencrypted { key: self.name.clone() }),
            (Cipher::Aes256Gcm, Some(master)) if master.id() != header.key_id => {
                return Err(ObjectError::WrongKey {
                    key: self.name.clone(),
                    found: hex::encode(header.key_id),
                    expected: hex::encode(master.id()),
                });
            }
            _ => {}
        }
        let decoder =
            match header.compression {
                Compression::Zstd => Some(Decoder::new().map_err(|error| ObjectError::BadCompression {
                    key: self.name.clone(),
                    detail: error.to_string(),
                })?),
                Compression::None => None,
            };
        let record_len = header.chunk_size as usize + TAG_LEN;
        Ok(OpenState {
            protector: ChunkProtector::new(&header, self.master.as_deref(), &self.name),
            plain_out: vec![0; if decoder.is_some() { IO_BUFFER } else { 0 }],
            record_len,
            pending: Vec::with_capacity(record_len + IO_BUFFER),
            counter: 0,
            decoder,
            frame_remaining: 1,
        })
    }
}

impl OpenState {
    fn decompress(&mut self, name: &ObjectKey, chunk: &[u8], emit: &mut dyn FnMut(&[u8])) -> Result<(), ObjectError> {
        let Some(decoder) = self.decoder.as_mut() else {
            emit(chunk);
            return Ok(());
        };
        let mut input = InBuffer::around(chunk);
        loop {
            if input.pos() < chunk.len() && self.frame_remaining == 0 {
                return Err(ObjectError::BadCompression {
                    key: name.clone(),
                    detail: "data follows the end of the compressed stream".into(),
                });
            }
            let mut output = OutBuffer::around(&mut self.plain_out[..]);
            self.frame_remaining = decoder
                .run(&mut input, &mut output)
                .map_err(|error| ObjectError::BadCompression { key: name.clone(), detail: error.to_string() })?;
            let produced = output.pos();
            emit(&self.plain_out[..produced]);
            // A full output buffer may mean zstd holds more for us even with the input consumed,
            // unless the frame just ended: asking again would start on a next frame.
            if input.pos() == chunk.len() && (produced < self.plain_out.len() || self.frame_remaining == 0) {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> ObjectKey {
        ObjectKey::new("clusters/main/test/object").unwrap()
    }

    fn seal(data: &[u8], master: Option<&MasterKey>, options: &WriteOptions, piece: usize) -> (Vec<u8>, SealSummary) {
        let mut sealer = Sealer::new(&name(), master, options);
        let mut stored = sealer.header().to_vec();
        for part in data.chunks(piece.max(1)) {
            sealer.update(part, &mut |chunk| stored.extend_from_slice(&chunk)).unwrap();
        }
        let summary = sealer.finish(&mut |chunk| stored.extend_from_slice(&chunk)).unwrap();
        (stored, summary)
    }

    fn open(stored: &[u8], master: Option<Arc<MasterKey>>, piece: usize) -> Result<Vec<u8>, ObjectError> {
        let mut opener = Opener::new(&name(), master);
        let mut plain = Vec::new();
        for part in stored.chunks(piece.max(1)) {
            opener.update(part, &mut |bytes| plain.extend_from_slice(bytes))?;
        }
        opener.finish(&mut |bytes| plain.extend_from_slice(bytes))?;
        Ok(plain)
    }

    /// Table-like bytes: zstd shrinks them several times over.
    fn rows(len: usize) -> Vec<u8> {
        (0..len).map(|i| if i % 64 < 4 { (i / 64 % 251) as u8 } else { b"row data "[i % 9] }).collect()
    }

    #[test]
    fn round_trips_whatever_the_piece_sizes() {
        let master = Arc::new(MasterKey::generate());
        let options = WriteOptions { chunk_size: 4096, ..WriteOptions::default() };
        let data = rows(100_000);
        for (seal_piece, open_piece) in [(1, 7), (4096, 4096), (5000, 1), (100_000, 100_000)] {
            let (stored, summary) = seal(&data, Some(&master), &options, seal_piece);
            assert_eq!(summary.stored_len, stored.len() as u64);
            assert_eq!(summary.plaintext_hash, blake3::hash(&data));
            assert_eq!(open(&stored, Some(master.clone()), open_piece).unwrap(), data);
        }
    }

    /// Regression: when the zstd frame ended exactly as the output buffer filled, the opener asked
    /// zstd for more, got the next frame's header hint, and reported a truncated frame.
    #[test]
    fn compressible_data_ending_on_an_output_buffer_boundary() {
        let master = Arc::new(MasterKey::generate());
        let data = rows(8 * IO_BUFFER);
        let (stored, _) = seal(&data, Some(&master), &WriteOptions::default(), 65_536);
        assert_eq!(open(&stored, Some(master), 65_536).unwrap(), data);
    }

    #[test]
    fn unencrypted_objects_round_trip_and_detect_damage() {
        let options = WriteOptions { compression: Compression::None, level: 0, chunk_size: 4096, workers: 0 };
        let data = rows(10_000);
        let (mut stored, _) = seal(&data, None, &options, 1000);
        assert_eq!(stored.len(), HEADER_LEN + 10_000 + 3 * TAG_LEN);
        assert_eq!(open(&stored, None, 333).unwrap(), data);
        stored[HEADER_LEN + 5000] ^= 1;
        assert!(matches!(open(&stored, None, 333), Err(ObjectError::Tampered { chunk: 1, .. })));
    }

    #[test]
    fn objects_from_another_key_are_named_as_such() {
        let options = WriteOptions::default();
        let (stored, _) = seal(b"rows", Some(&MasterKey::generate()), &options, 4);
        let error = open(&stored, Some(Arc::new(MasterKey::generate())), 64).unwrap_err();
        assert!(matches!(error, ObjectError::WrongKey { .. }), "{error}");
        assert!(matches!(open(&stored, None, 64), Err(ObjectError::KeyRequired { .. })));
    }

    #[test]
    fn matches_the_aead_stream_reference_implementation() {
        use aead_stream::EncryptorBE32;
        let master = MasterKey::generate();
        let options = WriteOptions { compression: Compression::None, level: 0, chunk_size: 4096, workers: 0 };
        let data = rows(4096 * 2 + 10);
        let (stored, _) = seal(&data, Some(&master), &options, 4096);
        let salt: [u8; 32] = stored[32..64].try_into().unwrap();
        let material = master.derive_object_key(&salt, name().as_str());
        let header = &stored[..HEADER_LEN];
        let mut reference = EncryptorBE32::<Aes256Gcm>::new((&material.key).into(), (&material.nonce_prefix).into());
        let mut expected = header.to_vec();
        for piece in data[..8192].chunks(4096) {
            let payload = aes_gcm::aead::Payload { msg: piece, aad: header };
            expected.extend(reference.encrypt_next(payload).unwrap());
        }
        expected.extend(reference.encrypt_last(aes_gcm::aead::Payload { msg: &data[8192..], aad: header }).unwrap());
        assert_eq!(stored, expected, "the object format must be exactly STREAM-BE32 over AES-256-GCM");
    }
}
