//! Reading an object body to its end although the connection drops part-way through it.
//!
//! The SDK retries a request until its response headers arrive; the body of a GetObject is
//! streamed afterwards, and a connection cut while it streams would reach the caller as a bare
//! "streaming error". [`ResumingReader`] owns what happens then: it remembers how many bytes it has
//! handed to its reader, and on a failed or early-ended body asks its [`Reopen`] source for the
//! rest (a ranged GET pinned to the first response's ETag, see `S3Resume` in the parent module),
//! after the same jittered exponential backoff and within the same attempt budget as the SDK's
//! requests. Bytes already handed out are never repeated or skipped, and nothing here copies or
//! buffers the body: each read goes straight from the current response into the caller's buffer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};

use crate::storage::ByteReader;

/// A future yielding the rest of an object's body.
pub(super) type Reopening = Pin<Box<dyn Future<Output = io::Result<ByteReader>> + Send>>;

/// Where the rest of a body comes from after its connection dropped.
pub(super) trait Reopen: Send + Sync + 'static {
    /// The object's bytes from absolute offset `from` to `end` (exclusive; `None`: to the end of
    /// the object), of the same version as the first response. An error is final: the request
    /// was already retried as any other request is.
    fn reopen(&self, from: u64, end: Option<u64>) -> Reopening;
}

/// The attempt budget and backoff of the store's requests, applied to body streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Backoff {
    /// Attempts including the first response; 1 means a dropped body is never resumed.
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The pause before retry number `retry` (1-based): a random part of `initial · 2^(retry-1)`
    /// capped at `max`, as the SDK's standard retry strategy waits, so that many readers cut by
    /// the same outage do not come back in step.
    fn delay(&self, retry: u32, jitter: f64) -> Duration {
        let exponential = self.initial.saturating_mul(1u32 << (retry.saturating_sub(1)).min(16));
        exponential.min(self.max).mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// What to do once the current response stopped delivering bytes.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// The body is complete.
    Done,
    /// Ask for bytes `from..end` after waiting `delay`.
    Resume { from: u64, end: Option<u64>, delay: Duration },
    /// Give up; the reason says why, for the error.
    GiveUp(String),
}

/// The bookkeeping of one body, apart from any I/O: where the reader is, where the body ends, and
/// how many attempts in a row failed to deliver a single byte.
#[derive(Debug)]
struct Progress {
    /// Absolute offset in the object of the next byte the reader gets.
    position: u64,
    /// Absolute end of the body (exclusive), when the first response gave its length.
    end: Option<u64>,
    backoff: Backoff,
    /// Attempts that ended without delivering the whole body, since the last one that delivered
    /// at least one byte. A connection that keeps making progress is never abandoned; one that
    /// fails `max_attempts` times in a row without a byte is.
    failures: u32,
    /// Whether the current attempt has delivered a byte yet.
    delivered: bool,
}

impl Progress {
    fn new(start: u64, end: Option<u64>, backoff: Backoff) -> Progress {
        Progress { position: start, end, backoff, failures: 0, delivered: false }
    }

    fn advance(&mut self, bytes: usize) {
        if bytes > 0 {
            self.position += bytes as u64;
            self.delivered = true;
        }
    }

    /// The current response ended cleanly (`failed` false) or with an error (`failed` true).
    fn ended(&mut self, failed: bool, jitter: f64) -> Next {
        let complete = self.end.is_none_or(|end| self.position >= end);
        if complete && !failed {
            return Next::Done;
        }
        if self.end.is_some() && complete {
            // Every byte was delivered and the error came after them (a checksum trailer, say):
            // asking again cannot help.
            return Next::GiveUp(format!("the body failed after its last byte ({})", self.position));
        }
        if self.delivered {
            self.failures = 0;
        }
        self.failures += 1;
        self.delivered = false;
        if self.failures >= self.backoff.max_attempts {
            return Next::GiveUp(format!(
                "the connection dropped at byte {} and {} attempts in a row delivered nothing more \
                 (repository.s3.max_attempts = {}); check the network path to the S3 endpoint",
                self.position, self.failures, self.backoff.max_attempts
            ));
        }
        Next::Resume { from: self.position, end: self.end, delay: self.backoff.delay(self.failures, jitter) }
    }
}

enum State {
    Reading(ByteReader),
    Reopening(Reopening),
    /// A reader that failed stays failed; the error is kept while bytes read before it are
    /// handed out first.
    Failed(Option<io::Error>),
}

/// An object body that resumes itself where a dropped connection left it (see the module
/// comment).
pub(super) struct ResumingReader {
    state: State,
    progress: Progress,
    source: Arc<dyn Reopen>,
}

impl ResumingReader {
    /// `body` is the first response, holding the object's bytes from `start` to `end` (its
    /// Content-Length past `start`, when given).
    pub(super) fn new(
        body: ByteReader,
        start: u64,
        end: Option<u64>,
        backoff: Backoff,
        source: Arc<dyn Reopen>,
    ) -> ResumingReader {
        ResumingReader { state: State::Reading(body), progress: Progress::new(start, end, backoff), source }
    }

    /// Handles the end of the current response; `Some` when the read is over (done or failed).
    fn after_response(&mut self, error: Option<io::Error>) -> Option<io::Result<()>> {
        match self.progress.ended(error.is_some(), jitter()) {
            Next::Done => Some(Ok(())),
            Next::GiveUp(reason) => {
                self.state = State::Failed(None);
                let error = error.unwrap_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof));
                Some(Err(io::Error::new(error.kind(), format!("{error}: {reason}"))))
            }
            Next::Resume { from, end, delay } => {
                let cause = error.map_or_else(|| "early end of body".to_owned(), |error| error.to_string());
                tracing::debug!(from, ?end, ?delay, %cause, "object body interrupted; asking for the rest");
                let request = self.source.reopen(from, end);
                self.state = State::Reopening(Box::pin(async move {
                    tokio::time::sleep(delay).await;
                    request.await
                }));
                None
            }
        }
    }
}

/// A uniformly random fraction in [0, 1) for backoff jitter. Without an entropy source the full
/// delay is used, which is only slower.
fn jitter() -> f64 {
    getrandom::u64().map_or(1.0, |random| (random >> 11) as f64 / (1u64 << 53) as f64)
}

impl AsyncRead for ResumingReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            // A read into no room proves nothing about the end of the body.
            return Poll::Ready(Ok(()));
        }
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Reading(reader) => {
                    let before = buf.filled().len();
                    let outcome = ready!(Pin::new(reader).poll_read(cx, buf));
                    let read = buf.filled().len() - before;
                    match outcome {
                        Ok(()) if read > 0 => {
                            this.progress.advance(read);
                            return Poll::Ready(Ok(()));
                        }
                        Ok(()) => {
                            if let Some(result) = this.after_response(None) {
                                return Poll::Ready(result);
                            }
                        }
                        Err(error) => {
                            // A reader may fill part of the buffer and then fail; those bytes
                            // count as delivered, and the error is handled after them.
                            this.progress.advance(read);
                            match this.after_response(Some(error)) {
                                Some(Err(error)) if read > 0 => {
                                    this.state = State::Failed(Some(error));
                                    return Poll::Ready(Ok(()));
                                }
                                Some(result) => return Poll::Ready(result),
                                None if read > 0 => return Poll::Ready(Ok(())),
                                None => {}
                            }
                        }
                    }
                }
                State::Reopening(request) => match ready!(request.as_mut().poll(cx)) {
                    Ok(body) => this.state = State::Reading(body),
                    Err(error) => {
                        this.state = State::Failed(None);
                        return Poll::Ready(Err(error));
                    }
                },
                State::Failed(error) => {
                    let error = error.take();
                    return Poll::Ready(Err(
                        error.unwrap_or_else(|| io::Error::other("the object body already failed; read it again"))
                    ));
                }
            }
        }
    }
}

/// Checks that a resumed response continues the body exactly at `from` and is the same object:
/// its `Content-Range` starts at `from` (a server that ignored the Range header would splice the
/// object's start into the middle), its length is the one asked for, and its ETag is `expected`
/// (for servers that ignore If-Match). The reason when it does not.
pub(super) fn check_resumed(
    from: u64,
    end: Option<u64>,
    content_range: Option<&str>,
    content_length: Option<i64>,
    etag: Option<&str>,
    expected_etag: &str,
) -> Result<(), String> {
    if etag != Some(expected_etag) {
        return Err(format!(
            "the object was replaced while being read (ETag {expected_etag} became {})",
            etag.unwrap_or("none")
        ));
    }
    let range_start = content_range
        .and_then(|range| range.strip_prefix("bytes "))
        .and_then(|range| range.split_once('-'))
        .and_then(|(start, _)| start.trim().parse::<u64>().ok());
    match range_start {
        Some(start) if start == from => {}
        // A whole-object answer is what was asked for only when resuming from the start.
        None if from == 0 && content_range.is_none() => {}
        _ => {
            return Err(format!(
                "asked for the bytes from {from} but the server sent {}",
                content_range.unwrap_or("the whole object")
            ));
        }
    }
    if let (Some(end), Some(length)) = (end, content_length)
        && u64::try_from(length).ok() != Some(end - from)
    {
        return Err(format!("asked for {} bytes from {from} but the server sent {length}", end - from));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::AsyncReadExt;

    use super::*;

    const BUDGET: Backoff = Backoff { max_attempts: 5, initial: Duration::ZERO, max: Duration::ZERO };

    #[test]
    fn backoff_doubles_up_to_the_cap_and_is_jittered() {
        let backoff = Backoff { max_attempts: 5, initial: Duration::from_secs(1), max: Duration::from_secs(20) };
        assert_eq!(backoff.delay(1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff.delay(3, 1.0), Duration::from_secs(4));
        assert_eq!(backoff.delay(9, 1.0), Duration::from_secs(20));
        assert_eq!(backoff.delay(3, 0.5), Duration::from_secs(2));
        assert_eq!(backoff.delay(40, 1.0), Duration::from_secs(20), "no overflow for many retries");
    }

    #[test]
    fn progress_resumes_where_the_reader_is_and_gives_up_after_the_budget() {
        let mut progress = Progress::new(100, Some(200), BUDGET);
        progress.advance(30);
        assert_eq!(progress.ended(true, 1.0), Next::Resume { from: 130, end: Some(200), delay: Duration::ZERO });
        // Four attempts in a row without a byte: the fifth failure exhausts max_attempts = 5.
        for _ in 0..3 {
            assert!(matches!(progress.ended(true, 1.0), Next::Resume { from: 130, .. }));
        }
        match progress.ended(true, 1.0) {
            Next::GiveUp(reason) => assert!(reason.contains("byte 130") && reason.contains("max_attempts = 5")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_connection_that_keeps_making_progress_is_not_abandoned() {
        let mut progress = Progress::new(0, Some(1000), BUDGET);
        for step in 1..=20u64 {
            progress.advance(10);
            assert_eq!(
                progress.ended(true, 1.0),
                Next::Resume { from: 10 * step, end: Some(1000), delay: Duration::ZERO }
            );
        }
    }

    #[test]
    fn an_early_end_is_a_failure_and_a_full_body_is_done() {
        let mut progress = Progress::new(0, Some(10), BUDGET);
        progress.advance(4);
        assert!(matches!(progress.ended(false, 1.0), Next::Resume { from: 4, .. }));
        progress.advance(6);
        assert_eq!(progress.ended(false, 1.0), Next::Done);
        // An error after the last byte cannot be cured by asking for nothing.
        assert!(matches!(progress.ended(true, 1.0), Next::GiveUp(_)));
        // Without a known length, the end of the stream is the end of the body.
        let mut unknown = Progress::new(0, None, BUDGET);
        unknown.advance(4);
        assert_eq!(unknown.ended(false, 1.0), Next::Done);
        assert!(matches!(unknown.ended(true, 1.0), Next::Resume { from: 4, end: None, .. }));
    }

    #[test]
    fn one_attempt_means_no_resumption() {
        let mut progress = Progress::new(0, Some(10), Backoff { max_attempts: 1, ..BUDGET });
        progress.advance(3);
        assert!(matches!(progress.ended(true, 1.0), Next::GiveUp(_)));
    }

    #[test]
    fn resumed_responses_must_continue_the_same_object_at_the_offset() {
        let etag = "\"abc\"";
        assert_eq!(check_resumed(10, Some(50), Some("bytes 10-49/50"), Some(40), Some(etag), etag), Ok(()));
        assert_eq!(check_resumed(10, None, Some("bytes 10-49/50"), Some(40), Some(etag), etag), Ok(()));
        assert_eq!(check_resumed(0, Some(50), None, Some(50), Some(etag), etag), Ok(()));
        let replaced = check_resumed(10, Some(50), Some("bytes 10-49/50"), Some(40), Some("\"def\""), etag);
        assert!(replaced.unwrap_err().contains("replaced"));
        assert!(check_resumed(10, Some(50), None, Some(50), Some(etag), etag).unwrap_err().contains("whole object"));
        assert!(check_resumed(10, Some(50), Some("bytes 0-49/50"), Some(50), Some(etag), etag).is_err());
        assert!(check_resumed(10, Some(50), Some("bytes 10-29/50"), Some(20), Some(etag), etag).is_err());
    }

    /// An in-memory object whose responses are cut after the given numbers of bytes, one cut per
    /// response in order (with an error, or as a clean early end), then whole.
    struct Flaky {
        object: Vec<u8>,
        cuts: Mutex<Vec<(usize, bool)>>,
        requests: Mutex<Vec<(u64, Option<u64>)>>,
    }

    impl Flaky {
        fn new(object: Vec<u8>, cuts: Vec<(usize, bool)>) -> Arc<Flaky> {
            Arc::new(Flaky { object, cuts: Mutex::new(cuts), requests: Mutex::new(Vec::new()) })
        }

        fn response(&self, from: u64, end: Option<u64>) -> ByteReader {
            let end = end.unwrap_or(self.object.len() as u64) as usize;
            let bytes = self.object[from as usize..end].to_vec();
            let mut cuts = self.cuts.lock().unwrap();
            if cuts.is_empty() {
                return Box::new(std::io::Cursor::new(bytes));
            }
            let (after, with_error) = cuts.remove(0);
            let head = std::io::Cursor::new(bytes[..after.min(bytes.len())].to_vec());
            if with_error { Box::new(head.chain(Reset)) } else { Box::new(head) }
        }
    }

    /// A connection reset, standing in for a dropped connection.
    struct Reset;

    impl AsyncRead for Reset {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "connection reset")))
        }
    }

    impl Reopen for Flaky {
        fn reopen(&self, from: u64, end: Option<u64>) -> Reopening {
            self.requests.lock().unwrap().push((from, end));
            let body = self.response(from, end);
            Box::pin(async move { Ok(body) })
        }
    }

    fn object(length: usize) -> Vec<u8> {
        (0..length).map(|index| (index * 7 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn cut_bodies_are_resumed_without_repeating_or_skipping_a_byte() {
        let data = object(10_000);
        let cuts = vec![(1_000, true), (0, true), (2_500, false), (10, true)];
        let source = Flaky::new(data.clone(), cuts);
        let first = source.response(0, None);
        let mut reader = ResumingReader::new(first, 0, Some(10_000), BUDGET, source.clone());
        let mut out = Vec::new();
        // Small reads, so cuts land between and inside them.
        let mut block = [0u8; 333];
        loop {
            let read = reader.read(&mut block).await.unwrap();
            if read == 0 {
                break;
            }
            out.extend_from_slice(&block[..read]);
        }
        assert!(out == data, "the body read back differs");
        let requests = source.requests.lock().unwrap().clone();
        assert_eq!(
            requests,
            vec![(1_000, Some(10_000)), (1_000, Some(10_000)), (3_500, Some(10_000)), (3_510, Some(10_000))]
        );
    }

    #[tokio::test]
    async fn ranges_resume_inside_the_range_and_a_dead_link_fails_with_the_offset() {
        let data = object(5_000);
        let source = Flaky::new(data.clone(), vec![(100, true), (50, true)]);
        let first = source.response(1_000, Some(2_000));
        let mut reader = ResumingReader::new(first, 1_000, Some(2_000), BUDGET, source.clone());
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.unwrap();
        assert!(out == data[1_000..2_000]);

        let source = Flaky::new(data, vec![(10, true), (0, true), (0, true), (0, false), (0, true)]);
        let first = source.response(0, None);
        let mut reader = ResumingReader::new(first, 0, Some(5_000), BUDGET, source.clone());
        let mut out = Vec::new();
        let error = reader.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(out.len(), 10, "the bytes before the cut were delivered once");
        assert!(error.to_string().contains("byte 10") && error.to_string().contains("max_attempts"), "{error}");
        assert_eq!(source.requests.lock().unwrap().len(), 4, "one first response and four resumptions");
    }
}
