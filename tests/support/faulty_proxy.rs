//! A fault-injecting HTTP/1.1 proxy on 127.0.0.1 for tests: it forwards every connection to an
//! upstream server (the S3-compatible server of `s3.rs`) byte for byte and injects one kind of
//! fault ([`ProxyFault`]) into a given share of the exchanges, as a flaky network, a restarted
//! load balancer or a busy S3 would:
//!
//! - `CutMidBody`: the response is forwarded only in part, then both connections close. A
//!   response with a body is cut at a random point of its body, one without (HEAD, most PUT
//!   answers) at a random point of its status line and headers: cuts before the body are what
//!   the SDK's own retries handle, cuts inside it are what the store must resume.
//! - `ServerError` and `SlowDown`: the proxy answers itself, without forwarding the request, with
//!   what S3 sends: `500 Internal Server Error` with an `InternalError` XML body, or `503 Slow
//!   Down` with a `SlowDown` body (S3's throttling answer). The request, body included, is read
//!   off the connection first and the connection stays open: S3 answers errors on a kept-alive
//!   connection too, and a connection closed while the client still sends its body can be reset
//!   by the kernel before the client reads the answer, which would turn a clean 5xx into a cut
//!   (another fault kind). The request never reaches the server, so a retry is the first copy
//!   it sees. (The AWS SDK sends no `Expect: 100-continue`, so reading the body never waits.)
//! - `Slow`: the response is held back for 200 to 1,500 ms (drawn per connection from the seed),
//!   then its head and the first few KiB of its body trickle out in 1 KiB pieces 50 ms apart,
//!   and the rest follows at full speed. That stays far below the store's timeouts
//!   (`src/storage/s3.rs`: 30 s per attempt until the response head, 5 s to connect) and the
//!   SDK's stalled-stream protection (no byte for 20 s), so it tests slowness, not timeouts.
//!
//! The proxy follows HTTP/1.1 framing (Content-Length, chunked, bodiless responses to HEAD and
//! 1xx/204/304) in both directions so that, with keep-alive, it sees every exchange on a
//! connection and the rate is per exchange. Which exchanges get the fault is a schedule, not a
//! coin toss: with rate 1/n, one exchange in every n that pass through (counted across
//! connections, from a phase the seed picks) gets it, so a test of a few hundred requests is sure
//! to see its share of faults and cannot pass by luck. Where each cut falls and how long each
//! delay lasts come from a generator seeded per connection. The proxy runs on its own thread and
//! runtime, so a test may block on child processes while it serves; dropping it stops that
//! thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to the exchanges its schedule picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyFault {
    /// Answers `500 InternalError` itself.
    ServerError,
    /// Answers `503 SlowDown` itself.
    SlowDown,
    /// Forwards the response only in part (inside its head or its body) and closes.
    CutMidBody,
    /// Holds the response back and trickles its start.
    Slow,
}

impl ProxyFault {
    pub const ALL: [ProxyFault; 4] =
        [ProxyFault::ServerError, ProxyFault::SlowDown, ProxyFault::CutMidBody, ProxyFault::Slow];

    /// e.g. "InternalError", for trial names and summaries.
    pub fn name(self) -> &'static str {
        match self {
            ProxyFault::ServerError => "InternalError",
            ProxyFault::SlowDown => "SlowDown",
            ProxyFault::CutMidBody => "cut",
            ProxyFault::Slow => "slow",
        }
    }

    fn index(self) -> u64 {
        match self {
            ProxyFault::ServerError => 0,
            ProxyFault::SlowDown => 1,
            ProxyFault::CutMidBody => 2,
            ProxyFault::Slow => 3,
        }
    }

    fn from_index(index: u64) -> ProxyFault {
        ProxyFault::ALL[index as usize]
    }
}

/// The shortest and longest hold of a `Slow` response.
const SLOW_HOLD_MS: (u64, u64) = (200, 1_500);
/// A `Slow` response's head and first body bytes go out in pieces this big, this far apart.
const TRICKLE_PIECE: usize = 1024;
const TRICKLE_PAUSE: Duration = Duration::from_millis(50);
/// How many pieces trickle before the rest is forwarded at full speed.
const TRICKLE_PIECES: u32 = 6;

/// What the proxy did so far.
#[derive(Debug, Default)]
pub struct ProxyStats {
    responses: AtomicU64,
    cut: AtomicU64,
    cut_in_body: AtomicU64,
    server_errors: AtomicU64,
    slow_downs: AtomicU64,
    slowed: AtomicU64,
    held_ms: AtomicU64,
}

impl ProxyStats {
    /// Exchanges that started through the proxy (requests forwarded or answered by the proxy).
    pub fn responses(&self) -> u64 {
        self.responses.load(Ordering::Relaxed)
    }

    /// Responses cut short.
    pub fn cut(&self) -> u64 {
        self.cut.load(Ordering::Relaxed)
    }

    /// Responses cut after their headers, inside the body.
    pub fn cut_in_body(&self) -> u64 {
        self.cut_in_body.load(Ordering::Relaxed)
    }

    /// How many exchanges got `fault` so far.
    pub fn injected(&self, fault: ProxyFault) -> u64 {
        match fault {
            ProxyFault::ServerError => &self.server_errors,
            ProxyFault::SlowDown => &self.slow_downs,
            ProxyFault::CutMidBody => &self.cut,
            ProxyFault::Slow => &self.slowed,
        }
        .load(Ordering::Relaxed)
    }

    /// e.g. "342 exchanges: 17 cut short (5.0%, 12 inside the body), 3 InternalError, 0 SlowDown,
    /// 0 slowed (0.0 s held)".
    pub fn summary(&self) -> String {
        let (responses, cut) = (self.responses(), self.cut());
        format!(
            "{responses} exchanges: {cut} cut short ({:.1}%, {} inside the body), {} InternalError, {} SlowDown, \
             {} slowed ({:.1} s held)",
            100.0 * cut as f64 / responses.max(1) as f64,
            self.cut_in_body(),
            self.injected(ProxyFault::ServerError),
            self.injected(ProxyFault::SlowDown),
            self.injected(ProxyFault::Slow),
            self.held_ms.load(Ordering::Relaxed) as f64 / 1000.0
        )
    }
}

/// The fault and its period (one exchange in this many; 0 for none), in one word so that a
/// change is seen whole: the period shifted left by 8 bits, the fault's index below.
#[derive(Debug, Default)]
struct Schedule(AtomicU64);

impl Schedule {
    fn set(&self, fault: ProxyFault, rate: f64) {
        let period = if rate > 0.0 { (1.0 / rate.min(1.0)).round() as u64 } else { 0 };
        self.0.store(period << 8 | fault.index(), Ordering::Relaxed);
    }

    /// The fault for exchange `number` of the proxy, if the schedule picks it.
    fn pick(&self, number: u64, phase: u64) -> Option<ProxyFault> {
        let word = self.0.load(Ordering::Relaxed);
        let period = word >> 8;
        (period > 0 && (number + phase % period).is_multiple_of(period)).then(|| ProxyFault::from_index(word & 0xff))
    }
}

pub struct FaultyProxy {
    address: SocketAddr,
    stats: Arc<ProxyStats>,
    schedule: Arc<Schedule>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultyProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream` (e.g. `http://127.0.0.1:PORT`),
    /// cutting the share `cut_rate` of the responses short.
    pub fn start(upstream: &str, cut_rate: f64, seed: u64) -> FaultyProxy {
        FaultyProxy::start_with(upstream, ProxyFault::CutMidBody, cut_rate, seed)
    }

    /// As [`FaultyProxy::start`], injecting `fault` into the share `rate` of the exchanges.
    pub fn start_with(upstream: &str, fault: ProxyFault, rate: f64, seed: u64) -> FaultyProxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|error| panic!("the proxy's upstream {upstream} is not http://IP:PORT: {error}"));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port for the proxy");
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let stats = Arc::new(ProxyStats::default());
        let schedule = Arc::new(Schedule::default());
        schedule.set(fault, rate);
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("faulty-proxy".into())
            .spawn({
                let stats = stats.clone();
                let schedule = schedule.clone();
                move || {
                    let runtime = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .expect("a runtime for the proxy");
                    runtime.block_on(async move {
                        let listener = TcpListener::from_std(listener).unwrap();
                        tokio::select! {
                            _ = stopped => {}
                            _ = accept_loop(listener, upstream, seed, stats, schedule) => {}
                        }
                    });
                    // Dropping the runtime ends every connection still open.
                    runtime.shutdown_background();
                }
            })
            .expect("start the proxy thread");
        FaultyProxy { address, stats, schedule, stop: Some(stop), thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }

    /// Injects `fault` into the share `rate` of the exchanges from now on: one in
    /// `round(1 / rate)`; 0 lets everything through.
    pub fn set_fault(&self, fault: ProxyFault, rate: f64) {
        self.schedule.set(fault, rate);
    }

    /// Cuts the share `rate` of the responses short from now on.
    pub fn set_cut_rate(&self, rate: f64) {
        self.set_fault(ProxyFault::CutMidBody, rate);
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    seed: u64,
    stats: Arc<ProxyStats>,
    schedule: Arc<Schedule>,
) {
    let mut connection: u64 = 0;
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        connection += 1;
        let rng = Rng::new(seed ^ connection.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (stats, schedule) = (stats.clone(), schedule.clone());
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else { return };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            // Any error or cut ends the connection; both sockets close when dropped here.
            let _ = relay(client, server, rng, seed, &stats, &schedule).await;
        });
    }
}

/// Why forwarding on a connection stopped.
enum Stop {
    Io,
    /// A clean end between two exchanges.
    Closed,
    /// A response was cut short on purpose.
    Cut,
}

impl From<std::io::Error> for Stop {
    fn from(_: std::io::Error) -> Stop {
        Stop::Io
    }
}

/// The answer S3 gives for `fault` (`ServerError` or `SlowDown`) to a request with `method`:
/// its status, and an XML error body except for HEAD, whose answers have none.
fn error_answer(fault: ProxyFault, method: &[u8], number: u64) -> Vec<u8> {
    let (status, code, message) = match fault {
        ProxyFault::SlowDown => ("503 Slow Down", "SlowDown", "Please reduce your request rate."),
        _ => ("500 Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
    };
    let request_id = format!("FAULTYPROXY{number:08}");
    let body = if method == b"HEAD" {
        String::new()
    } else {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>\
             <RequestId>{request_id}</RequestId></Error>"
        )
    };
    let mut answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\
         x-amz-request-id: {request_id}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(body.as_bytes());
    answer
}

/// Forwards request/response exchanges one at a time (HTTP/1.1 clients do not pipeline).
async fn relay(
    client: TcpStream,
    server: TcpStream,
    mut rng: Rng,
    phase: u64,
    stats: &ProxyStats,
    schedule: &Schedule,
) -> Result<(), Stop> {
    let (client_read, mut client_write) = client.into_split();
    let (server_read, mut server_write) = server.into_split();
    let mut from_client = Framed::new(client_read);
    let mut from_server = Framed::new(server_read);
    loop {
        let Some(request) = from_client.head().await? else { return Err(Stop::Closed) };
        let method = request.split(|&byte| byte == b' ').next().unwrap_or_default().to_vec();
        let framing = body_framing(&request, None);
        let number = stats.responses.fetch_add(1, Ordering::Relaxed);
        let fault = schedule.pick(number, phase);
        if let Some(fault @ (ProxyFault::ServerError | ProxyFault::SlowDown)) = fault {
            // The request is read to its end and dropped; the connection stays in step.
            let mut discard = tokio::io::sink();
            from_client.forward_body(framing, &mut Sink::new(&mut discard)).await?;
            client_write.write_all(&error_answer(fault, &method, number)).await?;
            let counter = if fault == ProxyFault::SlowDown { &stats.slow_downs } else { &stats.server_errors };
            counter.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        server_write.write_all(&request).await?;
        from_client.forward_body(framing, &mut Sink::new(&mut server_write)).await?;
        loop {
            let Some(response) = from_server.head().await? else { return Err(Stop::Closed) };
            let status = status_code(&response);
            if (100..200).contains(&status) && status != 101 {
                // An interim answer (100 Continue): passed on, the final one follows.
                client_write.write_all(&response).await?;
                continue;
            }
            let framing = body_framing(&response, Some((&method, status)));
            let mut to_client = Sink::new(&mut client_write);
            match fault {
                Some(ProxyFault::CutMidBody) => {
                    let head = response.len() as u64;
                    to_client.budget = Some(match framing.known_length() {
                        Some(0) => rng.below(head),
                        Some(body) => head + rng.below(body),
                        None => head + rng.below(1024),
                    });
                }
                Some(ProxyFault::Slow) => {
                    let hold = SLOW_HOLD_MS.0 + rng.below(SLOW_HOLD_MS.1 - SLOW_HOLD_MS.0 + 1);
                    tokio::time::sleep(Duration::from_millis(hold)).await;
                    stats.slowed.fetch_add(1, Ordering::Relaxed);
                    stats.held_ms.fetch_add(hold, Ordering::Relaxed);
                    to_client.trickle = TRICKLE_PIECES;
                }
                _ => {}
            }
            let budget = to_client.budget;
            let outcome = match to_client.send(&response).await {
                Ok(()) => from_server.forward_body(framing, &mut to_client).await,
                Err(stop) => Err(stop),
            };
            match outcome {
                Ok(()) => break,
                Err(Stop::Cut) => {
                    stats.cut.fetch_add(1, Ordering::Relaxed);
                    if budget.is_some_and(|cut_at| cut_at >= response.len() as u64) {
                        stats.cut_in_body.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = client_write.shutdown().await;
                    return Err(Stop::Cut);
                }
                Err(other) => return Err(other),
            }
        }
    }
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

impl Framing {
    fn known_length(self) -> Option<u64> {
        match self {
            Framing::None => Some(0),
            Framing::Length(length) => Some(length),
            Framing::Chunked | Framing::UntilClose => None,
        }
    }
}

/// The body framing of a message with head `head`; `response` is the request's method and the
/// status for a response.
fn body_framing(head: &[u8], response: Option<(&[u8], u16)>) -> Framing {
    if let Some((method, status)) = response
        && (method == b"HEAD" || status == 204 || status == 304)
    {
        return Framing::None;
    }
    let text = String::from_utf8_lossy(head);
    let mut length = None;
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else { continue };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_ascii_lowercase());
        if name == "transfer-encoding" && value.ends_with("chunked") {
            return Framing::Chunked;
        }
        if name == "content-length" {
            length = value.parse().ok();
        }
    }
    match (length, response) {
        (Some(length), _) => Framing::Length(length),
        (None, None) => Framing::None,
        (None, Some(_)) => Framing::UntilClose,
    }
}

fn status_code(head: &[u8]) -> u16 {
    String::from_utf8_lossy(head).split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

/// Writes to one side, cutting the stream after `budget` more bytes when it is set, and sending
/// the first `trickle` pieces slowly.
struct Sink<'a, W> {
    writer: &'a mut W,
    budget: Option<u64>,
    trickle: u32,
}

impl<'a, W: AsyncWrite + Unpin> Sink<'a, W> {
    fn new(writer: &'a mut W) -> Sink<'a, W> {
        Sink { writer, budget: None, trickle: 0 }
    }

    async fn send(&mut self, mut data: &[u8]) -> Result<(), Stop> {
        while self.trickle > 0 && !data.is_empty() {
            let piece = data.len().min(TRICKLE_PIECE);
            self.writer.write_all(&data[..piece]).await?;
            self.writer.flush().await?;
            data = &data[piece..];
            self.trickle -= 1;
            tokio::time::sleep(TRICKLE_PAUSE).await;
        }
        match self.budget {
            Some(left) if (data.len() as u64) >= left => {
                self.writer.write_all(&data[..left as usize]).await?;
                self.writer.flush().await?;
                Err(Stop::Cut)
            }
            Some(left) => {
                self.budget = Some(left - data.len() as u64);
                self.writer.write_all(data).await?;
                Ok(())
            }
            None => {
                self.writer.write_all(data).await?;
                Ok(())
            }
        }
    }
}

/// One direction of a connection, read message by message.
struct Framed<R> {
    reader: R,
    buffer: BytesMut,
}

impl<R: AsyncRead + Unpin> Framed<R> {
    fn new(reader: R) -> Framed<R> {
        Framed { reader, buffer: BytesMut::with_capacity(64 * 1024) }
    }

    /// Reads more bytes into the buffer; false at the end of the stream.
    async fn fill(&mut self) -> Result<bool, Stop> {
        self.buffer.reserve(64 * 1024);
        Ok(self.reader.read_buf(&mut self.buffer).await? > 0)
    }

    /// The next message head (up to and including the blank line), or `None` when the stream
    /// ends before a new message starts.
    async fn head(&mut self) -> Result<Option<Bytes>, Stop> {
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                return Ok(Some(self.buffer.split_to(end + 4).freeze()));
            }
            if !self.fill().await? {
                return if self.buffer.is_empty() { Ok(None) } else { Err(Stop::Io) };
            }
        }
    }

    /// One line, with its CRLF.
    async fn line(&mut self) -> Result<Bytes, Stop> {
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n") {
                return Ok(self.buffer.split_to(end + 2).freeze());
            }
            if !self.fill().await? {
                return Err(Stop::Io);
            }
        }
    }

    /// Forwards exactly `length` bytes.
    async fn forward_exactly<W: AsyncWrite + Unpin>(
        &mut self,
        mut length: u64,
        to: &mut Sink<'_, W>,
    ) -> Result<(), Stop> {
        while length > 0 {
            if self.buffer.is_empty() && !self.fill().await? {
                return Err(Stop::Io);
            }
            let take = (self.buffer.len() as u64).min(length) as usize;
            to.send(&self.buffer[..take]).await?;
            self.buffer.advance(take);
            length -= take as u64;
        }
        Ok(())
    }

    async fn forward_body<W: AsyncWrite + Unpin>(
        &mut self,
        framing: Framing,
        to: &mut Sink<'_, W>,
    ) -> Result<(), Stop> {
        match framing {
            Framing::None => Ok(()),
            Framing::Length(length) => self.forward_exactly(length, to).await,
            Framing::Chunked => loop {
                let size_line = self.line().await?;
                to.send(&size_line).await?;
                let size_text = String::from_utf8_lossy(&size_line);
                let size_text = size_text.trim().split(';').next().unwrap_or_default().to_owned();
                let size = u64::from_str_radix(&size_text, 16).map_err(|_| Stop::Io)?;
                if size == 0 {
                    // Trailers, then the blank line that ends the message.
                    loop {
                        let line = self.line().await?;
                        to.send(&line).await?;
                        if &line[..] == b"\r\n" {
                            return Ok(());
                        }
                    }
                }
                self.forward_exactly(size + 2, to).await?;
            },
            Framing::UntilClose => loop {
                if !self.buffer.is_empty() {
                    to.send(&self.buffer).await?;
                    self.buffer.clear();
                }
                if !self.fill().await? {
                    return Err(Stop::Closed);
                }
            },
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// xorshift64*: deterministic for a seed, good enough to place cuts.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..bound` for bounds far below 2^64.
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}
