//! Sealing and opening objects, synchronously and in bounded memory.
//!
//! [`Sealer`] takes plaintext in any number of pieces and emits the header and sealed chunks;
//! [`Opener`] takes stored bytes in any number of pieces and emits plaintext. Neither ever holds
//! more than one chunk plus one compression buffer, whatever the object's size; zstd runs with
//! fixed-size output buffers so even a highly compressed chunk is expanded piece by piece.

use std::sync::Arc;

use aead_stream::{NewStream, StreamBE32, StreamPrimitive};
use aes_gcm::{Aes256Gcm, KeyInit};
use zstd::bulk::Compressor;
use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};

use super::ObjectError;
use super::header::{Cipher, Compression, HEADER_LEN, Header, Stream};
use crate::keys::MasterKey;
use crate::keys::master::random_array;
use crate::storage::ObjectKey;

/// Size of the authentication tag after each chunk, for both ciphers.
pub const TAG_LEN: usize = 16;
/// Decompressed output is handled in pieces of this size.
const IO_BUFFER: usize = 256 * 1024;
/// Plaintext bytes per zstd frame. Each frame is compressed in one call from memory, which costs
/// about a tenth less CPU than streaming compression of the whole object (no copy into a window
/// buffer, tables sized for the frame) and compresses within 0.5% as well; and frames of one object
/// can be compressed in parallel. It also bounds what a sealer holds: one frame of plaintext and
/// one compressed, per compressing thread.
const FRAME_SIZE: usize = 1024 * 1024;

/// How new objects are written. Readers take everything they need from the header instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    pub compression: Compression,
    /// zstd level; ignored without compression.
    pub level: i32,
    pub chunk_size: u32,
    /// Threads compressing the frames of one object in parallel (0 or 1: the sealing thread
    /// alone). Only for one large object at a time (`wal-push` alone): the stream is the same.
    pub workers: u32,
    /// Whether the summary carries the plaintext's BLAKE3 (manifests record it; WAL needs none).
    pub hash_plaintext: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            compression: Compression::Zstd,
            level: 3,
            chunk_size: 1024 * 1024,
            workers: 0,
            hash_plaintext: true,
        }
    }
}

/// What sealing an object produced; manifests record these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealSummary {
    pub plaintext_len: u64,
    pub stored_len: u64,
    /// BLAKE3 of the plaintext; `None` when the write options asked for none.
    pub plaintext_hash: Option<blake3::Hash>,
}

impl SealSummary {
    /// The plaintext's BLAKE3, for a manifest: manifests' objects are written with the default
    /// options, which hash.
    pub fn recorded_hash(&self) -> blake3::Hash {
        self.plaintext_hash.expect("objects a manifest records are written with hash_plaintext")
    }
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
    frames: Option<Frames>,
    chunker: Chunker,
    hasher: Option<blake3::Hasher>,
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

/// Compresses plaintext into zstd frames of [`FRAME_SIZE`] plaintext bytes, each in one call.
/// With more than one compressor, frames are compressed in batches of [`FRAMES_PER_THREAD`] per
/// compressor, each thread taking every n-th frame of the batch.
struct Frames {
    /// One per thread that compresses; the first runs on the sealing thread.
    compressors: Vec<Compressor<'static>>,
    /// The compressed frames of the current batch, in order.
    outputs: Vec<Vec<u8>>,
    /// Plaintext not compressed yet: less than a batch.
    pending: Vec<u8>,
    /// Plaintext bytes per batch.
    batch: usize,
    /// Whether a frame was written: the stream holds at least one, even for empty plaintext.
    written: bool,
}

/// Frames per compressing thread in a batch, when there are several threads: enough that each
/// thread's share takes long against starting it.
const FRAMES_PER_THREAD: usize = 4;

impl Frames {
    fn new(level: i32, threads: usize) -> Frames {
        let compressor = || Compressor::new(level).expect("zstd accepts the levels the configuration allows");
        let frames = if threads > 1 { threads * FRAMES_PER_THREAD } else { 1 };
        Frames {
            compressors: (0..threads).map(|_| compressor()).collect(),
            outputs: vec![Vec::new(); frames],
            pending: Vec::with_capacity(FRAME_SIZE * frames),
            batch: FRAME_SIZE * frames,
            written: false,
        }
    }

    fn update(
        &mut self,
        mut plaintext: &[u8],
        chunker: &mut Chunker,
        emit: &mut dyn FnMut(Vec<u8>),
    ) -> Result<(), ObjectError> {
        while !plaintext.is_empty() {
            if self.pending.is_empty() && plaintext.len() >= self.batch {
                // Whole batches straight from the caller's bytes, without copying them first.
                let (batch, rest) = plaintext.split_at(self.batch);
                self.compress(batch, chunker, emit)?;
                plaintext = rest;
                continue;
            }
            let take = (self.batch - self.pending.len()).min(plaintext.len());
            self.pending.extend_from_slice(&plaintext[..take]);
            plaintext = &plaintext[take..];
            if self.pending.len() == self.batch {
                self.compress_pending(chunker, emit)?;
            }
        }
        Ok(())
    }

    /// How many plaintext bytes to hand over at a time so that none are copied: a batch.
    fn batch_len(&self) -> usize {
        self.batch
    }

    fn finish(&mut self, chunker: &mut Chunker, emit: &mut dyn FnMut(Vec<u8>)) -> Result<(), ObjectError> {
        if !self.pending.is_empty() || !self.written {
            self.compress_pending(chunker, emit)?;
        }
        Ok(())
    }

    /// Compresses the pending plaintext (see [`Frames::compress`]) and empties it.
    fn compress_pending(&mut self, chunker: &mut Chunker, emit: &mut dyn FnMut(Vec<u8>)) -> Result<(), ObjectError> {
        let pending = std::mem::take(&mut self.pending);
        self.compress(&pending, chunker, emit)?;
        self.pending = pending;
        self.pending.clear();
        Ok(())
    }

    /// Compresses `plaintext` (at most a batch) as frames (one, possibly empty, if there is none)
    /// and passes them on in order.
    fn compress(
        &mut self,
        plaintext: &[u8],
        chunker: &mut Chunker,
        emit: &mut dyn FnMut(Vec<u8>),
    ) -> Result<(), ObjectError> {
        let pieces: Vec<&[u8]> =
            if plaintext.is_empty() { vec![&[][..]] } else { plaintext.chunks(FRAME_SIZE).collect() };
        let frames = pieces.len();
        let threads = self.compressors.len().min(frames);
        // Thread t compresses frames t, t + threads, t + 2 * threads, ...
        let mut shares: Vec<Vec<(&[u8], &mut Vec<u8>)>> = (0..threads).map(|_| Vec::new()).collect();
        for (index, (piece, output)) in pieces.into_iter().zip(self.outputs.iter_mut()).enumerate() {
            shares[index % threads].push((piece, output));
        }
        let compress = |compressor: &mut Compressor<'static>, share: Vec<(&[u8], &mut Vec<u8>)>| {
            for (piece, output) in share {
                output.clear();
                output.reserve(zstd::zstd_safe::compress_bound(piece.len()));
                compressor
                    .compress_to_buffer(piece, output)
                    .expect("zstd compression into a buffer of its bound cannot fail");
            }
        };
        let mut work = self.compressors.iter_mut().zip(shares);
        let first = work.next();
        std::thread::scope(|scope| {
            for (compressor, share) in work {
                scope.spawn(move || compress(compressor, share));
            }
            if let Some((compressor, share)) = first {
                compress(compressor, share);
            }
        });
        for output in &self.outputs[..frames] {
            chunker.push(output, emit)?;
        }
        self.written = true;
        Ok(())
    }
}

impl Sealer {
    /// A sealer for the object `name`, encrypted under `master` or, with `None`, unencrypted.
    pub fn new(name: &ObjectKey, master: Option<&MasterKey>, options: &WriteOptions) -> Sealer {
        let header = Header {
            compression: match options.compression {
                Compression::Zstd => Stream::ZstdFrames,
                Compression::None => Stream::Plain,
            },
            cipher: if master.is_some() { Cipher::Aes256Gcm } else { Cipher::None },
            chunk_size: options.chunk_size,
            key_id: master.map(MasterKey::id).unwrap_or_default(),
            salt: random_array(),
        };
        let frames = match options.compression {
            Compression::Zstd => Some(Frames::new(options.level, options.workers.max(1) as usize)),
            Compression::None => None,
        };
        Sealer {
            frames,
            chunker: Chunker {
                name: name.clone(),
                protector: ChunkProtector::new(&header, master, name),
                header: header.encode(),
                pending: Vec::with_capacity(options.chunk_size as usize + TAG_LEN),
                chunk_size: options.chunk_size as usize,
                counter: 0,
                stored_len: HEADER_LEN as u64,
            },
            hasher: options.hash_plaintext.then(blake3::Hasher::new),
            plaintext_len: 0,
        }
    }

    /// The header; it comes first in the stored object.
    pub fn header(&self) -> &[u8] {
        &self.chunker.header
    }

    /// A good size for the pieces given to [`Sealer::update`]: pieces of this size (or multiples)
    /// are compressed where they are, without being copied first.
    pub fn input_len(&self) -> usize {
        self.frames.as_ref().map_or(FRAME_SIZE, Frames::batch_len)
    }

    pub fn update(&mut self, plaintext: &[u8], emit: &mut dyn FnMut(Vec<u8>)) -> Result<(), ObjectError> {
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(plaintext);
        }
        self.plaintext_len += plaintext.len() as u64;
        match self.frames.as_mut() {
            Some(frames) => frames.update(plaintext, &mut self.chunker, emit),
            None => self.chunker.push(plaintext, emit),
        }
    }

    pub fn finish(mut self, emit: &mut dyn FnMut(Vec<u8>)) -> Result<SealSummary, ObjectError> {
        if let Some(frames) = self.frames.as_mut() {
            frames.finish(&mut self.chunker, emit)?;
        }
        let stored_len = self.chunker.finish(emit);
        Ok(SealSummary {
            plaintext_len: self.plaintext_len,
            stored_len,
            plaintext_hash: self.hasher.map(|hasher| hasher.finalize()),
        })
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
    /// Whether more frames may follow the first (compression code 2).
    frames: bool,
    /// zstd's hint from the last step: 0 once a frame is complete.
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
                Stream::ZstdFrame | Stream::ZstdFrames => Some(Decoder::new().map_err(|error| {
                    ObjectError::BadCompression { key: self.name.clone(), detail: error.to_string() }
                })?),
                Stream::Plain => None,
            };
        let record_len = header.chunk_size as usize + TAG_LEN;
        Ok(OpenState {
            protector: ChunkProtector::new(&header, self.master.as_deref(), &self.name),
            plain_out: vec![0; if decoder.is_some() { IO_BUFFER } else { 0 }],
            record_len,
            pending: Vec::with_capacity(record_len + IO_BUFFER),
            counter: 0,
            decoder,
            frames: header.compression == Stream::ZstdFrames,
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
            if input.pos() < chunk.len() && self.frame_remaining == 0 && !self.frames {
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
            // unless a frame just ended: asking again would start on a next frame.
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
            assert_eq!(summary.plaintext_hash, Some(blake3::hash(&data)));
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
    fn frames_compressed_in_parallel_round_trip() {
        let master = Arc::new(MasterKey::generate());
        for workers in [0, 1, 2, 3] {
            let options = WriteOptions { workers, ..WriteOptions::default() };
            for len in [0, 1, FRAME_SIZE - 1, FRAME_SIZE, FRAME_SIZE + 1, 5 * FRAME_SIZE + 17] {
                let data = rows(len);
                let (stored, summary) = seal(&data, Some(&master), &options, 300_000);
                assert_eq!(stored[9], 2, "written as zstd frames");
                assert_eq!(summary.plaintext_hash, Some(blake3::hash(&data)));
                assert_eq!(
                    open(&stored, Some(master.clone()), 65_536).unwrap(),
                    data,
                    "{workers} workers, {len} bytes"
                );
            }
        }
        let unhashed = WriteOptions { hash_plaintext: false, ..WriteOptions::default() };
        assert_eq!(seal(b"segment", Some(&master), &unhashed, 7).1.plaintext_hash, None);
    }

    /// Seals `frames` as the stream of an object with compression code `code`, as lifeboat did
    /// before frames (code 1: one frame, streamed).
    fn seal_stream(frames: &[Vec<u8>], code: Stream, master: &MasterKey) -> Vec<u8> {
        let header = Header {
            compression: code,
            cipher: Cipher::Aes256Gcm,
            chunk_size: 4096,
            key_id: master.id(),
            salt: random_array(),
        };
        let mut chunker = Chunker {
            name: name(),
            protector: ChunkProtector::new(&header, Some(master), &name()),
            header: header.encode(),
            pending: Vec::new(),
            chunk_size: 4096,
            counter: 0,
            stored_len: HEADER_LEN as u64,
        };
        let mut stored = header.encode().to_vec();
        for frame in frames {
            chunker.push(frame, &mut |chunk| stored.extend_from_slice(&chunk)).unwrap();
        }
        chunker.finish(&mut |chunk| stored.extend_from_slice(&chunk));
        stored
    }

    #[test]
    fn one_frame_objects_still_open_and_only_they_refuse_a_second_frame() {
        let master = Arc::new(MasterKey::generate());
        let data = rows(100_000);
        let one = zstd::encode_all(&data[..], 3).unwrap();
        let stored = seal_stream(std::slice::from_ref(&one), Stream::ZstdFrame, &master);
        assert_eq!(open(&stored, Some(master.clone()), 1000).unwrap(), data);

        let two = vec![zstd::encode_all(&data[..60_000], 3).unwrap(), zstd::encode_all(&data[60_000..], 3).unwrap()];
        let stored = seal_stream(&two, Stream::ZstdFrames, &master);
        assert_eq!(open(&stored, Some(master.clone()), 1000).unwrap(), data);
        let stored = seal_stream(&two, Stream::ZstdFrame, &master);
        let error = open(&stored, Some(master.clone()), 1000).unwrap_err();
        assert!(error.to_string().contains("data follows the end of the compressed stream"), "{error}");

        let cut = vec![two[0].clone(), two[1][..two[1].len() / 2].to_vec()];
        let error = open(&seal_stream(&cut, Stream::ZstdFrames, &master), Some(master), 1000).unwrap_err();
        assert!(error.to_string().contains("ends in the middle of a frame"), "{error}");
    }

    #[test]
    fn unencrypted_objects_round_trip_and_detect_damage() {
        let options = WriteOptions { compression: Compression::None, chunk_size: 4096, ..WriteOptions::default() };
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
        let options = WriteOptions { compression: Compression::None, chunk_size: 4096, ..WriteOptions::default() };
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
