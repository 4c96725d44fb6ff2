//! A fault-injecting HTTP/1.1 proxy on 127.0.0.1 for tests: it forwards every connection to an
//! upstream server (the S3-compatible server of `s3.rs`) byte for byte and cuts a given share of
//! the responses short: it forwards only the first part of a response's bytes and then closes
//! both connections, as a flaky network or a restarted load balancer would. A response with a
//! body is cut at a random point of its body, one without (HEAD, most PUT answers) at a random
//! point of its status line and headers: cuts before the body are what the SDK's own retries
//! handle, cuts inside it are what the store must resume.
//!
//! The proxy follows HTTP/1.1 framing (Content-Length, chunked, bodiless responses to HEAD and
//! 1xx/204/304) in both directions so that, with keep-alive, it sees every response on a
//! connection and the rate is per response. Which responses are cut is a schedule, not a coin
//! toss: with rate 1/n, one response in every n that pass through (counted across connections,
//! from a phase the seed picks) is cut, so a test of a few hundred responses is sure to see its
//! share of cuts and cannot pass by luck. Where each cut falls comes from a generator seeded per
//! connection. The proxy runs on its own thread and runtime, so a test may block on child
//! processes while it serves; dropping it stops that thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy did so far.
#[derive(Debug, Default)]
pub struct ProxyStats {
    responses: AtomicU64,
    cut: AtomicU64,
    cut_in_body: AtomicU64,
}

impl ProxyStats {
    /// Final responses that started through the proxy (cut or not).
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

    /// e.g. "17 of 342 responses cut short (5.0%), 12 of them inside the body".
    pub fn summary(&self) -> String {
        let (responses, cut) = (self.responses(), self.cut());
        format!(
            "{cut} of {responses} responses cut short ({:.1}%), {} of them inside the body",
            100.0 * cut as f64 / responses.max(1) as f64,
            self.cut_in_body()
        )
    }
}

pub struct FaultyProxy {
    address: SocketAddr,
    stats: Arc<ProxyStats>,
    /// Cut one response in this many; 0 cuts none.
    period: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultyProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream` (e.g. `http://127.0.0.1:PORT`),
    /// cutting the share `cut_rate` of the responses short.
    pub fn start(upstream: &str, cut_rate: f64, seed: u64) -> FaultyProxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|error| panic!("the proxy's upstream {upstream} is not http://IP:PORT: {error}"));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port for the proxy");
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let stats = Arc::new(ProxyStats::default());
        let period = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("faulty-proxy".into())
            .spawn({
                let stats = stats.clone();
                let period = period.clone();
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
                            _ = accept_loop(listener, upstream, seed, stats, period) => {}
                        }
                    });
                    // Dropping the runtime ends every connection still open.
                    runtime.shutdown_background();
                }
            })
            .expect("start the proxy thread");
        let proxy = FaultyProxy { address, stats, period, stop: Some(stop), thread: Some(thread) };
        proxy.set_cut_rate(cut_rate);
        proxy
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }

    /// Changes the share of responses cut from now on: one in `round(1 / rate)`; 0 lets
    /// everything through.
    pub fn set_cut_rate(&self, rate: f64) {
        let period = if rate > 0.0 { (1.0 / rate.min(1.0)).round() as u64 } else { 0 };
        self.period.store(period, Ordering::Relaxed);
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
    period: Arc<AtomicU64>,
) {
    let mut connection: u64 = 0;
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        connection += 1;
        let rng = Rng::new(seed ^ connection.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (stats, period) = (stats.clone(), period.clone());
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else { return };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            // Any error or cut ends the connection; both sockets close when dropped here.
            let _ = relay(client, server, rng, seed, &stats, &period).await;
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

/// Forwards request/response exchanges one at a time (HTTP/1.1 clients do not pipeline).
async fn relay(
    client: TcpStream,
    server: TcpStream,
    mut rng: Rng,
    phase: u64,
    stats: &ProxyStats,
    period: &AtomicU64,
) -> Result<(), Stop> {
    let (client_read, mut client_write) = client.into_split();
    let (server_read, mut server_write) = server.into_split();
    let mut from_client = Framed::new(client_read);
    let mut from_server = Framed::new(server_read);
    loop {
        let Some(request) = from_client.head().await? else { return Err(Stop::Closed) };
        let method = request.split(|&byte| byte == b' ').next().unwrap_or_default().to_vec();
        let framing = body_framing(&request, None);
        server_write.write_all(&request).await?;
        let mut to_server = Sink { writer: &mut server_write, budget: None };
        from_client.forward_body(framing, &mut to_server).await?;
        loop {
            let Some(response) = from_server.head().await? else { return Err(Stop::Closed) };
            let status = status_code(&response);
            if (100..200).contains(&status) && status != 101 {
                // An interim answer (100 Continue): passed on, the final one follows.
                client_write.write_all(&response).await?;
                continue;
            }
            let number = stats.responses.fetch_add(1, Ordering::Relaxed);
            let framing = body_framing(&response, Some((&method, status)));
            let period = period.load(Ordering::Relaxed);
            let scheduled = period > 0 && (number + phase % period).is_multiple_of(period);
            let budget = scheduled.then(|| {
                let head = response.len() as u64;
                match framing.known_length() {
                    Some(0) => rng.below(head),
                    Some(body) => head + rng.below(body),
                    None => head + rng.below(1024),
                }
            });
            let mut to_client = Sink { writer: &mut client_write, budget };
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

/// Writes to one side, cutting the stream after `budget` more bytes when it is set.
struct Sink<'a, W> {
    writer: &'a mut W,
    budget: Option<u64>,
}

impl<W: AsyncWrite + Unpin> Sink<'_, W> {
    async fn send(&mut self, data: &[u8]) -> Result<(), Stop> {
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
