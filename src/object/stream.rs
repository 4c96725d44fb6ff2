//! Async adapters: sealing and opening run on a blocking thread each (they are CPU-bound), fed
//! by and feeding bounded channels, so a slow consumer slows the producer instead of filling memory.

use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::io::SyncIoBridge;

use super::seal::{Opener, SealSummary, Sealer, WriteOptions};
use crate::keys::MasterKey;
use crate::storage::{ByteReader, ObjectKey};

/// Chunks in flight between a pipeline thread and its consumer. With 1 MiB chunks this bounds
/// each pipeline to a few MiB however large the object is.
const CHANNEL_DEPTH: usize = 4;
const READ_BLOCK: usize = 256 * 1024;

/// Where the plaintext of an object comes from.
pub enum Plaintext {
    /// Any async reader; the sealing thread waits for each read.
    Async(ByteReader),
    /// A reader the sealing thread can read itself, such as a local file: no hand-over between
    /// threads per read (for a 16 MiB WAL segment read through `tokio::fs` in 256 KiB pieces, those
    /// cost about 15 ms of the push on the benchmark machine).
    Blocking(Box<dyn Read + Send>),
}

/// Seals everything `plaintext` yields as the object `name`. Returns the stored bytes as a reader
/// (to hand to [`crate::storage::ObjectStore::put`]) and a handle that yields the summary once the
/// reader has been drained. A read error from `plaintext` surfaces through the returned reader, so
/// the put fails and nothing is stored.
pub fn seal_reader(
    name: &ObjectKey,
    master: Option<&MasterKey>,
    options: &WriteOptions,
    plaintext: Plaintext,
) -> (ByteReader, JoinHandle<std::io::Result<SealSummary>>) {
    let mut sealer = Sealer::new(name, master, options);
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let name = name.clone();
    let task = tokio::task::spawn_blocking(move || {
        let blocking = matches!(plaintext, Plaintext::Blocking(_));
        let mut source: Box<dyn Read + Send> = match plaintext {
            Plaintext::Async(reader) => Box::new(SyncIoBridge::new(reader)),
            Plaintext::Blocking(reader) => reader,
        };
        // A failed send means the consumer hung up; `tx.is_closed()` below notices and stops.
        let mut send = |chunk: Vec<u8>| {
            let _ = tx.blocking_send(Ok(Bytes::from(chunk)));
        };
        send(sealer.header().to_vec());
        // A local file is read in the pieces the sealer compresses without a copy.
        let mut block = vec![0u8; if blocking { sealer.input_len() } else { READ_BLOCK }];
        loop {
            let read = match source.read(&mut block) {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    let message = format!("reading the data for object {name}: {error}");
                    let _ = tx.blocking_send(Err(std::io::Error::new(error.kind(), message.clone())));
                    return Err(std::io::Error::new(error.kind(), message));
                }
            };
            sealer.update(&block[..read], &mut send).map_err(|error| error.into_io())?;
            if tx.is_closed() {
                return Err(consumer_gone_error(&name));
            }
        }
        let summary = sealer.finish(&mut send).map_err(|error| error.into_io())?;
        if tx.is_closed() {
            return Err(consumer_gone_error(&name));
        }
        Ok(summary)
    });
    (Box::new(ChannelReader::new(rx)), task)
}

/// Opens the stored object `name` read from `stored`, yielding authenticated plaintext. Any
/// authentication failure is an `InvalidData` I/O error carrying an [`super::ObjectError`] that
/// names the object; no unauthenticated byte is ever yielded.
pub fn open_reader(name: &ObjectKey, master: Option<Arc<MasterKey>>, stored: ByteReader) -> ByteReader {
    let mut opener = Opener::new(name, master);
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let mut source = SyncIoBridge::new(stored);
    let name = name.clone();
    tokio::task::spawn_blocking(move || {
        let mut emit = |plain: &[u8]| {
            if !plain.is_empty() {
                let _ = tx.blocking_send(Ok(Bytes::copy_from_slice(plain)));
            }
        };
        let mut block = vec![0u8; READ_BLOCK];
        let outcome = loop {
            let read = match source.read(&mut block) {
                Ok(0) => break opener.finish(&mut emit).map_err(|error| error.into_io()),
                Ok(read) => read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => break Err(std::io::Error::new(error.kind(), format!("reading object {name}: {error}"))),
            };
            if let Err(error) = opener.update(&block[..read], &mut emit) {
                break Err(error.into_io());
            }
            if tx.is_closed() {
                return;
            }
        };
        if let Err(error) = outcome {
            let _ = tx.blocking_send(Err(error));
        }
    });
    Box::new(ChannelReader::new(rx))
}

fn consumer_gone_error(name: &ObjectKey) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        format!("object {name}: the storage backend stopped reading the sealed data"),
    )
}

/// An `AsyncRead` over a channel of byte blocks; an `Err` item ends the stream with that error.
struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<std::io::Result<Bytes>>) -> Self {
        ChannelReader { rx, current: Bytes::new() }
    }
}

impl AsyncRead for ChannelReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        while self.current.is_empty() {
            match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error)),
                Poll::Ready(Some(Ok(block))) => self.current = block,
            }
        }
        let take = self.current.len().min(buf.remaining());
        buf.put_slice(&self.current.split_to(take));
        Poll::Ready(Ok(()))
    }
}
