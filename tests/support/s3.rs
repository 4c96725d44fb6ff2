//! Real S3-compatible servers for integration tests, one per test, on 127.0.0.1.
//!
//! [`S3Server::start`] launches moto or s3s-fs on a free loopback port with its log (and, for
//! s3s-fs, its data) in a fresh temporary directory, and waits until it answers HTTP. Dropping the
//! server kills that one process by its id and removes the directory, unless the test is
//! panicking: then the directory is kept and its path printed, so a failure can be inspected.
//! A missing server binary is a panic that says how to install it, never a silently skipped test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use lifeboat::secret::Secret;
use lifeboat::storage::s3::{S3Credentials, S3Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// s3s-fs checks SigV4 signatures against these; moto accepts any credentials.
pub const ACCESS_KEY: &str = "lifeboat-test-key";
pub const SECRET_KEY: &str = "lifeboat-test-secret";
pub const REGION: &str = "us-east-1";

/// How long a server may take to answer its first request (moto needs about half a second).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3ServerKind {
    /// moto (Python): broad S3 coverage, accepts any credentials.
    Moto,
    /// s3s-fs (Rust): fast, checks signatures, stores objects as files.
    S3sFs,
}

impl S3ServerKind {
    fn binary_name(self) -> &'static str {
        match self {
            S3ServerKind::Moto => "moto_server",
            S3ServerKind::S3sFs => "s3s-fs",
        }
    }

    fn env_var(self) -> &'static str {
        match self {
            S3ServerKind::Moto => "LIFEBOAT_TEST_MOTO_SERVER",
            S3ServerKind::S3sFs => "LIFEBOAT_TEST_S3S_FS",
        }
    }

    /// Where `scripts/test` installs the binary.
    fn default_path(self, home: &Path) -> PathBuf {
        match self {
            S3ServerKind::Moto => home.join(".cache/lifeboat-test/venv/bin/moto_server"),
            S3ServerKind::S3sFs => home.join(".cargo/bin/s3s-fs"),
        }
    }

    /// The binary from the environment variable, else the install location, else `PATH`.
    fn find_binary(self) -> PathBuf {
        if let Some(path) = std::env::var_os(self.env_var()) {
            let path = PathBuf::from(path);
            assert!(path.is_file(), "{} points at {}, which is not a file", self.env_var(), path.display());
            return path;
        }
        if let Some(home) = std::env::var_os("HOME") {
            let path = self.default_path(Path::new(&home));
            if path.is_file() {
                return path;
            }
        }
        if let Some(paths) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&paths) {
                let path = dir.join(self.binary_name());
                if path.is_file() {
                    return path;
                }
            }
        }
        panic!(
            "{} is not installed: run scripts/test, which installs moto and s3s-fs, or set {} to the binary",
            self.binary_name(),
            self.env_var()
        );
    }
}

/// A running server. Everything it stored disappears with it.
pub struct S3Server {
    kind: S3ServerKind,
    child: Child,
    port: u16,
    /// Holds `server.log` and, for s3s-fs, `data/`. `None` only while dropping.
    dir: Option<tempfile::TempDir>,
}

impl S3Server {
    /// Starts a server of `kind` on a free port of 127.0.0.1 and waits until it answers.
    pub async fn start(kind: S3ServerKind) -> S3Server {
        let binary = kind.find_binary();
        // Picking a free port and then starting the server races with other processes binding
        // ports; a server that exits at once is tried again on another port.
        let mut last_failure = String::new();
        for _ in 0..3 {
            let dir = tempfile::Builder::new().prefix("lifeboat-s3-").tempdir().expect("create a temporary directory");
            let port = free_port();
            let log_path = dir.path().join("server.log");
            if kind == S3ServerKind::S3sFs {
                std::fs::create_dir(dir.path().join("data")).expect("create the s3s-fs data directory");
            }
            let child = spawn(kind, &binary, port, dir.path(), &log_path);
            let mut server = S3Server { kind, child, port, dir: Some(dir) };
            match server.wait_until_answering().await {
                Ok(()) => return server,
                Err(failure) => {
                    last_failure = format!("{failure}\n--- {} ---\n{}", log_path.display(), read_log(&log_path));
                    // Dropping `server` kills the process and removes the directory.
                }
            }
        }
        panic!("{} did not start: {last_failure}", binary.display());
    }

    /// Stops the server, as in an outage: requests are refused until [`S3Server::resume`].
    /// s3s-fs keeps its objects on disk, so only it can resume with what it held.
    pub fn stop_for_outage(&mut self) {
        assert_eq!(self.kind, S3ServerKind::S3sFs, "only s3s-fs keeps its objects across a restart");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port, with the objects it held.
    pub async fn resume(&mut self) {
        let dir = self.dir.as_ref().expect("the server's directory").path().to_path_buf();
        self.child = spawn(self.kind, &self.kind.find_binary(), self.port, &dir, &dir.join("server.log"));
        self.wait_until_answering().await.unwrap_or_else(|failure| panic!("the server did not come back: {failure}"));
    }

    async fn wait_until_answering(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|error| error.to_string())? {
                return Err(format!("{:?} exited with {status} before answering", self.kind));
            }
            if answers_http(self.port).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{:?} did not answer on port {} within {STARTUP_TIMEOUT:?}", self.kind, self.port));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Where s3s-fs keeps the objects, one file each; `None` for moto, which keeps them in memory.
    pub fn data_dir(&self) -> Option<PathBuf> {
        let dir = self.dir.as_ref().expect("the server's directory").path();
        (self.kind == S3ServerKind::S3sFs).then(|| dir.join("data"))
    }

    pub fn kind(&self) -> S3ServerKind {
        self.kind
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A plain SDK client with the test credentials, for tests that inspect or tamper with
    /// objects behind the store's back.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(aws_sdk_s3::config::Region::new(REGION))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Settings for this server with the test credentials and `bucket`, which need not exist.
    pub fn settings(&self, bucket: &str) -> S3Settings {
        S3Settings {
            bucket: bucket.to_owned(),
            prefix: String::new(),
            endpoint: Some(self.endpoint()),
            region: REGION.to_owned(),
            force_path_style: true,
            storage_class: None,
            credentials: Some(S3Credentials {
                access_key_id: ACCESS_KEY.to_owned(),
                secret_access_key: Secret::new(SECRET_KEY),
                session_token: None,
            }),
            part_size: S3Settings::DEFAULT_PART_SIZE,
            max_attempts: S3Settings::DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// How many multipart uploads are started but neither completed nor aborted in `bucket`.
    /// s3s-fs does not implement ListMultipartUploads, so for it the upload files in its data
    /// directory are counted instead (it keeps one `.upload-<id>.json` per open upload).
    pub async fn open_multipart_uploads(&self, bucket: &str) -> usize {
        match self.kind {
            S3ServerKind::Moto => {
                let listed = self.client().list_multipart_uploads().bucket(bucket).send().await.unwrap();
                listed.uploads().len()
            }
            S3ServerKind::S3sFs => {
                let data = self.dir.as_ref().expect("server directory").path().join("data");
                std::fs::read_dir(data)
                    .expect("read the s3s-fs data directory")
                    .filter(|entry| {
                        let name = entry.as_ref().unwrap().file_name();
                        let name = name.to_string_lossy();
                        name.starts_with(".upload-") && name.ends_with(".json")
                    })
                    .count()
            }
        }
    }

    /// Creates a new, uniquely named, empty bucket and returns settings pointing at it.
    pub async fn fresh_bucket(&self) -> S3Settings {
        self.create_bucket(false).await
    }

    /// As [`S3Server::fresh_bucket`], with Object Lock enabled (and so versioning), as
    /// `aws s3api create-bucket --object-lock-enabled-for-bucket` makes it. moto only.
    pub async fn fresh_locked_bucket(&self) -> S3Settings {
        assert_eq!(self.kind, S3ServerKind::Moto, "s3s-fs implements neither versioning nor Object Lock");
        self.create_bucket(true).await
    }

    async fn create_bucket(&self, object_lock: bool) -> S3Settings {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let bucket =
            format!("lifeboat-test-{}-{}-{nanos:x}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let request = self.client().create_bucket().bucket(&bucket);
        let request = if object_lock { request.object_lock_enabled_for_bucket(true) } else { request };
        request.send().await.unwrap_or_else(|error| {
            panic!("create bucket {bucket} on {:?}: {}", self.kind, aws_sdk_s3::error::DisplayErrorContext(error))
        });
        self.settings(&bucket)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        // Only this child, by its id; an already-exited child makes kill fail harmlessly.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.dir.take()
            && std::thread::panicking()
        {
            eprintln!("{:?} server files kept for inspection: {}", self.kind, dir.keep().display());
        }
    }
}

/// Starts `binary` as a server of `kind` on `port`, keeping its files (s3s-fs: `data/`, which must
/// exist) in `dir`, its output appended to `log_path`.
fn spawn(kind: S3ServerKind, binary: &Path, port: u16, dir: &Path, log_path: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path).expect("open the server log");
    let mut command = Command::new(binary);
    match kind {
        S3ServerKind::Moto => {
            command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        }
        S3ServerKind::S3sFs => {
            command
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(dir.join("data"));
        }
    }
    command.stdin(Stdio::null()).stdout(log.try_clone().expect("duplicate the log handle")).stderr(log);
    command.spawn().unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()))
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    listener.local_addr().expect("local address").port()
}

/// Whether something on `port` answers an HTTP request with an HTTP status line (any status:
/// s3s-fs answers an unsigned request with 403, which still proves it is serving).
async fn answers_http(port: u16) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await.ok()?;
        let mut head = [0u8; 8];
        stream.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1."))
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), attempt).await, Ok(Some(true)))
}

fn read_log(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(4000);
    let start = (start..text.len()).find(|&index| text.is_char_boundary(index)).unwrap_or(text.len());
    text[start..].to_owned()
}
