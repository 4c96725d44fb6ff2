//! [`LocalCluster`]: a throwaway PostgreSQL cluster in a scratch directory.
//!
//! The tests use it as their database, and the product uses it for scratch restores (verification,
//! migration rehearsal, quickstart), so it is careful about the things that go wrong on real hosts:
//!
//! - `initdb`, `pg_ctl` and `postgres` refuse to run as root. When lifeboat's effective uid is 0,
//!   they run as an unprivileged OS user (default `postgres`) and the scratch directory belongs to
//!   that user. The switch is done by the standard library (`setgid` and `setuid` in the child,
//!   supplementary groups dropped), so no `runuser`/`su` PAM session is involved.
//! - Everything lives in one directory, `<parent>/lifeboat-pg-<random>/` with `data/` (the data
//!   directory), `sock/` (the Unix socket) and `server.log`. The directory is mode 0700, so with
//!   `trust` authentication only its owner (and root) can reach the socket.
//! - The server listens on the Unix socket only (`listen_addresses = ''`), on a port picked by
//!   binding `127.0.0.1:0`, so parallel clusters never collide.
//! - Failures of `initdb` and `pg_ctl` carry their output and the tail of the server log.
//! - Dropping the cluster stops the server (`pg_ctl stop -m fast`, then `-m immediate`) and removes
//!   the directory, unless it was asked to be kept. Only `pg_ctl` on this cluster's own data
//!   directory is used to stop anything; no process is ever killed by name.
//! - A directory not meant to be kept carries its creator's stamp, and creating a cluster first
//!   stops and removes those in the same parent whose creator died without cleaning up
//!   ([`super::abandoned`]).

use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::abandoned;
use super::binaries::{BinariesError, PgBinaries};
use super::process::{PgCommand, last_lines, read_tail};
use crate::util::{URL_PATH, percent_encode, process_alive};

/// Longest Unix socket path the kernel accepts: `sun_path` is 108 bytes including the final NUL.
const MAX_SOCKET_PATH: usize = 107;

/// How many lines of the server log an error message carries.
const LOG_TAIL_LINES: usize = 30;

/// How local connections authenticate (the `initdb --auth-local` method).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LocalAuth {
    /// Anyone who can reach the socket may connect as any role. Safe here because the socket
    /// directory is private to the server's OS user (and root).
    #[default]
    Trust,
    /// Only the OS user of the same name may connect as a role (so a lifeboat running as root
    /// cannot connect as `postgres`); TCP connections are rejected.
    Peer,
}

/// How to create a [`LocalCluster`]. `Default` gives a cluster fit for tests and scratch restores.
#[derive(Debug, Clone)]
pub struct LocalClusterOptions {
    /// Where the scratch directory is created; default [`std::env::temp_dir`]. When lifeboat runs
    /// as root, every directory above it must be searchable by [`Self::os_user`].
    pub parent_dir: Option<PathBuf>,
    /// The unprivileged OS user that runs the server when lifeboat runs as root (ignored
    /// otherwise: then the server runs as the current user).
    pub os_user: String,
    /// The database superuser created by initdb (`initdb -U`), used by [`LocalCluster::connect_options`].
    pub superuser: String,
    /// Authentication of local connections.
    pub auth: LocalAuth,
    /// The cluster's locale (`initdb --locale`); `C` by default so results do not depend on the host.
    pub locale: String,
    /// Extra `postgresql.conf` settings, written after lifeboat's own so they can override them
    /// (for instance `archive_mode = on`, `archive_command = '...'`, `wal_level = replica`).
    pub settings: Vec<(String, String)>,
    /// Whether the cluster survives a host crash. A throwaway cluster does not need to, so by
    /// default initdb skips its fsyncs and the server runs with `fsync = off`, which makes tests and
    /// scratch restores much faster.
    pub durable: bool,
    /// Keep the directory (data, log, socket) when the cluster is dropped, for inspection.
    pub keep: bool,
    /// How long `pg_ctl start -w` waits for the server to accept connections.
    pub start_timeout: Duration,
    /// How long `pg_ctl stop -m fast` waits before lifeboat falls back to `-m immediate`.
    pub stop_timeout: Duration,
}

impl Default for LocalClusterOptions {
    fn default() -> Self {
        Self {
            parent_dir: None,
            os_user: "postgres".to_string(),
            superuser: "postgres".to_string(),
            auth: LocalAuth::Trust,
            locale: "C".to_string(),
            settings: Vec::new(),
            durable: false,
            keep: false,
            start_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(60),
        }
    }
}

impl LocalClusterOptions {
    /// Adds a `postgresql.conf` setting; the value is quoted when written.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Creates the scratch directory under `dir` instead of the system temporary directory.
    pub fn parent_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.parent_dir = Some(dir.into());
        self
    }

    /// Runs the server as `user` when lifeboat runs as root.
    pub fn os_user(mut self, user: impl Into<String>) -> Self {
        self.os_user = user.into();
        self
    }

    /// Keeps the scratch directory after the cluster is dropped.
    pub fn keep(mut self, keep: bool) -> Self {
        self.keep = keep;
        self
    }

    /// Makes the cluster crash-safe (fsync on), at the cost of speed.
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Sets how local connections authenticate.
    pub fn auth(mut self, auth: LocalAuth) -> Self {
        self.auth = auth;
        self
    }
}

/// Why a local cluster could not be created, started or stopped. Messages name the directory or
/// program involved, carry the programs' own output, and say what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Binaries(#[from] BinariesError),

    #[error(
        "PostgreSQL refuses to run as root, so lifeboat runs it as OS user `{user}`, but there is no \
         such user; create it (installing the postgresql package does, or \
         `useradd --system --user-group --home-dir /var/lib/postgresql {user}`) or configure another \
         unprivileged user"
    )]
    NoSuchOsUser { user: String },

    #[error(
        "OS user `{user}` has uid 0, and PostgreSQL refuses to run as root; configure an \
         unprivileged user (such as postgres) to run scratch clusters"
    )]
    OsUserIsRoot { user: String },

    #[error("could not look up OS user `{user}`: {source}")]
    OsUserLookup {
        user: String,
        #[source]
        source: io::Error,
    },

    #[error("invalid PostgreSQL setting {name:?}: {reason}")]
    InvalidSetting { name: String, reason: &'static str },

    #[error(
        "the Unix socket path {} would be {len} bytes, over the limit of {MAX_SOCKET_PATH}; \
         choose a scratch parent directory with a shorter path (such as /tmp)",
        path.display()
    )]
    SocketPathTooLong { path: PathBuf, len: usize },

    #[error("could not {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("could not run {}{}: {source}{hint}", program.display(), as_user(user.as_deref()))]
    Run {
        program: PathBuf,
        user: Option<String>,
        #[source]
        source: io::Error,
        hint: String,
    },

    #[error("initdb failed for {} ({status}){hint}:\n{output}", data_dir.display())]
    InitDb { data_dir: PathBuf, status: ExitStatus, output: String, hint: String },

    #[error(
        "PostgreSQL did not start on {} ({status}):\n{output}\nlast lines of the server log {}:\n{log_tail}",
        data_dir.display(),
        log_file.display()
    )]
    Start { data_dir: PathBuf, status: ExitStatus, output: String, log_file: PathBuf, log_tail: String },

    #[error(
        "PostgreSQL on {} did not stop:\n{output}\nlast lines of the server log {}:\n{log_tail}",
        data_dir.display(),
        log_file.display()
    )]
    Stop { data_dir: PathBuf, output: String, log_file: PathBuf, log_tail: String },
}

fn as_user(user: Option<&str>) -> String {
    user.map(|user| format!(" as OS user `{user}`")).unwrap_or_default()
}

/// A throwaway PostgreSQL cluster: created by [`LocalCluster::init`], started by
/// [`LocalCluster::start`], stopped and deleted when dropped (see the module documentation).
///
/// Prefer calling [`LocalCluster::stop`] before dropping: the drop has to stop the server with
/// blocking calls.
#[derive(Debug)]
pub struct LocalCluster {
    /// The programs that created the cluster; the same ones must start and stop it.
    binaries: PgBinaries,
    /// The scratch directory holding everything below; removed on drop unless `keep`.
    root: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    /// The server's stderr (`pg_ctl -l`); quoted in errors.
    log_file: PathBuf,
    port: u16,
    superuser: String,
    /// The OS user the programs run as when lifeboat runs as root; `None` runs them as ourselves.
    run_as: Option<OsUser>,
    keep: bool,
    start_timeout: Duration,
    stop_timeout: Duration,
}

impl LocalCluster {
    /// Creates a new cluster (initdb) in a fresh scratch directory, configured but not started.
    pub async fn init(binaries: &PgBinaries, options: LocalClusterOptions) -> Result<Self, ClusterError> {
        let initdb = binaries.require("initdb")?;
        // Refuse bad settings before anything is created.
        for (name, value) in &options.settings {
            format_setting(name, value)?;
        }
        let cluster = Self::prepare(binaries, &options)?;
        cluster.initdb(&initdb, &options).await?;
        cluster.write_settings(&options)?;
        Ok(cluster)
    }

    /// Creates the scratch directory (with its socket directory, and a free port chosen) but no
    /// data directory: for a data directory that comes from elsewhere, such as a restore into
    /// [`LocalCluster::data_dir`]. Dropping it stops whatever server runs there and removes it all.
    pub fn prepare(binaries: &PgBinaries, options: &LocalClusterOptions) -> Result<Self, ClusterError> {
        binaries.require("pg_ctl")?;
        binaries.require("postgres")?;
        let run_as = if running_as_root() { Some(OsUser::lookup(&options.os_user)?) } else { None };
        let parent = options.parent_dir.clone().unwrap_or_else(std::env::temp_dir);
        abandoned::sweep_and_log(&parent);
        let root = create_scratch_dir(&parent, run_as.as_ref())?;

        // From here on the cluster owns the directory, so an error below removes it on drop.
        let cluster = LocalCluster {
            binaries: binaries.clone(),
            data_dir: root.join("data"),
            socket_dir: root.join("sock"),
            log_file: root.join("server.log"),
            root,
            port: free_port()?,
            superuser: options.superuser.clone(),
            run_as,
            keep: options.keep,
            start_timeout: options.start_timeout,
            stop_timeout: options.stop_timeout,
        };

        if !cluster.keep {
            abandoned::stamp(&cluster.root).map_err(|source| ClusterError::Io {
                action: "write the owner stamp into",
                path: cluster.root.clone(),
                source,
            })?;
        }
        let socket = cluster.socket_dir.join(format!(".s.PGSQL.{}", cluster.port));
        let len = socket.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(ClusterError::SocketPathTooLong { path: socket, len });
        }
        make_private_dir(&cluster.socket_dir, cluster.run_as.as_ref())?;
        Ok(cluster)
    }

    /// [`LocalCluster::init`] followed by [`LocalCluster::start`].
    pub async fn start_new(binaries: &PgBinaries, options: LocalClusterOptions) -> Result<Self, ClusterError> {
        let mut cluster = Self::init(binaries, options).await?;
        cluster.start().await?;
        Ok(cluster)
    }

    async fn initdb(&self, initdb: &Path, options: &LocalClusterOptions) -> Result<(), ClusterError> {
        let mut command = self.command(initdb);
        command
            .arg("--pgdata")
            .arg(&self.data_dir)
            .arg("--username")
            .arg(&options.superuser)
            .arg("--encoding=UTF8")
            .arg(format!("--locale={}", options.locale));
        match options.auth {
            LocalAuth::Trust => command.arg("--auth=trust"),
            // peer is not valid for TCP connections, and password methods would make initdb ask
            // for a password: refuse TCP logins instead (the server does not listen on TCP anyway).
            LocalAuth::Peer => command.args(["--auth-local=peer", "--auth-host=reject"]),
        };
        if !options.durable {
            command.arg("--no-sync");
        }
        let output = self.run(initdb, command).await?;
        if output.status.success() {
            return Ok(());
        }
        let text = describe_output(&output);
        let hint = match &self.run_as {
            Some(user) if text.contains("Permission denied") => format!(
                " (OS user `{}` must be able to reach {}: every directory above it needs o+x, \
                 or choose a scratch parent such as /tmp)",
                user.name,
                self.root.display()
            ),
            _ => String::new(),
        };
        Err(ClusterError::InitDb { data_dir: self.data_dir.clone(), status: output.status, output: text, hint })
    }

    /// Appends lifeboat's settings and the caller's to `postgresql.conf`; later lines win, so the
    /// caller's come last. `ALTER SYSTEM` (postgresql.auto.conf) still overrides both.
    fn write_settings(&self, options: &LocalClusterOptions) -> Result<(), ClusterError> {
        let socket_dir = self.socket_dir.to_str().ok_or_else(|| ClusterError::InvalidSetting {
            name: "unix_socket_directories".to_string(),
            reason: "the scratch directory path is not valid UTF-8; choose another parent directory",
        })?;
        let mut text = String::from("\n# Added by lifeboat for a throwaway local cluster; later lines win.\n");
        let port = self.port.to_string();
        let mut ours = vec![("listen_addresses", ""), ("port", port.as_str()), ("unix_socket_directories", socket_dir)];
        if !options.durable {
            ours.push(("fsync", "off"));
        }
        let theirs = options.settings.iter().map(|(n, v)| (n.as_str(), v.as_str()));
        for (name, value) in ours.into_iter().chain(theirs) {
            text.push_str(&format_setting(name, value)?);
            text.push('\n');
        }

        let path = self.data_dir.join("postgresql.conf");
        // Appending keeps the file's owner (the server's OS user) and mode.
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .map_err(|source| ClusterError::Io { action: "add settings to", path, source })
    }

    /// Starts the server and waits until it accepts connections. Does nothing if it is running.
    pub async fn start(&mut self) -> Result<(), ClusterError> {
        if self.is_running() {
            return Ok(());
        }
        let pg_ctl = self.binaries.require("pg_ctl")?;
        let mut command = self.command(&pg_ctl);
        command
            .args(["start", "--wait", "--silent", "--timeout"])
            .arg(timeout_secs(self.start_timeout))
            .arg("--pgdata")
            .arg(&self.data_dir)
            .arg("--log")
            .arg(&self.log_file);
        let output = self.run(&pg_ctl, command).await?;
        if output.status.success() {
            return Ok(());
        }
        Err(ClusterError::Start {
            data_dir: self.data_dir.clone(),
            status: output.status,
            output: describe_output(&output),
            log_file: self.log_file.clone(),
            log_tail: self.log_tail(),
        })
    }

    /// Stops the server: a fast shutdown (sessions are cancelled, a checkpoint is written), and an
    /// immediate one if that does not finish within the stop timeout. Does nothing if it is not
    /// running.
    pub async fn stop(&mut self) -> Result<(), ClusterError> {
        if !self.is_running() {
            return Ok(());
        }
        let pg_ctl = self.binaries.require("pg_ctl")?;
        let fast = self.run(&pg_ctl, self.stop_command(&pg_ctl, "fast")).await?;
        if fast.status.success() {
            return Ok(());
        }
        let immediate = self.run(&pg_ctl, self.stop_command(&pg_ctl, "immediate")).await?;
        if immediate.status.success() || !self.is_running() {
            return Ok(());
        }
        Err(self.stop_error(&[fast, immediate]))
    }

    /// The same as [`LocalCluster::stop`] with blocking calls, for `Drop`.
    fn stop_blocking(&self) -> Result<(), ClusterError> {
        if !self.is_running() {
            return Ok(());
        }
        let pg_ctl = self.binaries.require("pg_ctl")?;
        let mut outputs = Vec::new();
        for mode in ["fast", "immediate"] {
            let output =
                self.stop_command(&pg_ctl, mode).output_blocking().map_err(|source| self.run_error(&pg_ctl, source))?;
            if output.status.success() {
                return Ok(());
            }
            outputs.push(output);
        }
        if !self.is_running() {
            return Ok(());
        }
        Err(self.stop_error(&outputs))
    }

    fn stop_command(&self, pg_ctl: &Path, mode: &str) -> PgCommand {
        let mut command = self.command(pg_ctl);
        command
            .args(["stop", "--wait", "--silent", "--mode", mode, "--timeout"])
            .arg(timeout_secs(self.stop_timeout))
            .arg("--pgdata")
            .arg(&self.data_dir);
        command
    }

    fn stop_error(&self, outputs: &[Output]) -> ClusterError {
        ClusterError::Stop {
            data_dir: self.data_dir.clone(),
            output: outputs.iter().map(describe_output).collect::<Vec<_>>().join("\n"),
            log_file: self.log_file.clone(),
            log_tail: self.log_tail(),
        }
    }

    /// Stops the server and removes the scratch directory, reporting what could not be done
    /// (the drop can only log it). A removal is retried briefly: a cancelled restore's workers may
    /// still be finishing a file in it.
    pub async fn remove(mut self) -> Result<(), ClusterError> {
        self.stop().await?;
        let mut attempt = 0;
        loop {
            match fs::remove_dir_all(&self.root) {
                Ok(()) => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(_) if attempt < 10 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(source) => {
                    self.keep = true;
                    return Err(ClusterError::Io { action: "remove", path: self.root.clone(), source });
                }
            }
        }
    }

    /// Whether a server process holds this data directory (its `postmaster.pid` names a live
    /// process).
    pub fn is_running(&self) -> bool {
        self.pid().is_some_and(process_alive)
    }

    /// The postmaster's process id from `postmaster.pid`, or `None` when the file is absent (no
    /// server has been started, or it shut down cleanly).
    pub fn pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// The port in the socket's name (`.s.PGSQL.<port>`); the server listens on no TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's Unix socket: the `host` to connect to.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The scratch directory holding the data directory, the socket directory and the log.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The server's log file.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The database superuser.
    pub fn superuser(&self) -> &str {
        &self.superuser
    }

    /// The programs this cluster runs with.
    pub fn binaries(&self) -> &PgBinaries {
        &self.binaries
    }

    /// The OS user the server runs as when lifeboat runs as root; `None` when it runs as the
    /// current user.
    pub fn server_os_user(&self) -> Option<&str> {
        self.run_as.as_ref().map(|user| user.name.as_str())
    }

    /// Keeps (or no longer keeps) the scratch directory when the cluster is dropped; for instance
    /// to leave a failed test's cluster for inspection.
    pub fn set_keep(&mut self, keep: bool) {
        self.keep = keep;
        // Without its stamp a kept directory is never swept; with it, one no longer kept is.
        let stamped = if keep { abandoned::unstamp(&self.root) } else { abandoned::stamp(&self.root) };
        if let Err(error) = stamped {
            tracing::warn!(dir = %self.root.display(), "could not update the owner stamp of the scratch directory: {error}");
        }
    }

    /// Options for connecting as the superuser to database `postgres` over the Unix socket.
    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .socket(&self.socket_dir)
            .port(self.port)
            .username(&self.superuser)
            .database("postgres")
            .ssl_mode(PgSslMode::Disable)
    }

    /// The same as [`LocalCluster::connect_options`] as a URL that both libpq (`psql`, `pg_dump`)
    /// and sqlx accept: `postgresql:///postgres?host=/tmp/lifeboat-pg-.../sock&port=54321&user=postgres`.
    ///
    /// The user goes in the query because sqlx (through the `url` crate) rejects a user name with
    /// an empty host (`postgresql://postgres@/postgres?host=...`), a form libpq accepts.
    pub fn connection_url(&self) -> String {
        format!(
            "postgresql:///postgres?host={}&port={}&user={}",
            percent_encode(self.socket_dir.as_os_str().as_bytes(), URL_PATH),
            self.port,
            percent_encode(self.superuser.as_bytes(), URL_PATH),
        )
    }

    /// Makes `path` (and everything below it) belong to the server's OS user, so the server can
    /// use it (an archive directory for `archive_command`, say). Does nothing when the server runs
    /// as the current user.
    pub fn give_to_server_user(&self, path: &Path) -> Result<(), ClusterError> {
        match &self.run_as {
            Some(user) => chown_tree(path, user),
            None => Ok(()),
        }
    }

    /// A command for one of the PostgreSQL programs: run as the server's OS user when needed, in
    /// the scratch directory (the caller's directory may not be readable by that user).
    fn command(&self, program: &Path) -> PgCommand {
        let mut command = PgCommand::local(program);
        command.current_dir(&self.root);
        if let Some(user) = &self.run_as {
            command.run_as(user);
        }
        command
    }

    async fn run(&self, program: &Path, command: PgCommand) -> Result<Output, ClusterError> {
        command.output().await.map_err(|source| self.run_error(program, source))
    }

    fn run_error(&self, program: &Path, source: io::Error) -> ClusterError {
        let hint = match &self.run_as {
            Some(user) if source.kind() == io::ErrorKind::PermissionDenied => format!(
                " (OS user `{}` must be able to reach {} and {}: every directory above them needs o+x)",
                user.name,
                program.display(),
                self.root.display()
            ),
            _ => String::new(),
        };
        ClusterError::Run {
            program: program.to_path_buf(),
            user: self.run_as.as_ref().map(|user| user.name.clone()),
            source,
            hint,
        }
    }

    fn log_tail(&self) -> String {
        match read_tail(&self.log_file, LOG_TAIL_LINES) {
            Ok(tail) if tail.trim().is_empty() => "(empty)".to_string(),
            Ok(tail) => tail,
            Err(err) => format!("(could not read it: {err})"),
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if let Err(err) = self.stop_blocking() {
            // Removing the directory under a running server would leave it running on deleted
            // files; leave both for the operator instead.
            tracing::warn!(
                dir = %self.root.display(),
                "could not stop throwaway PostgreSQL cluster, leaving its directory: {err}"
            );
            return;
        }
        if self.keep {
            tracing::info!(dir = %self.root.display(), "kept throwaway PostgreSQL cluster");
            return;
        }
        if !self.root.exists() {
            // Already removed by [`LocalCluster::remove`].
            return;
        }
        if let Err(err) = fs::remove_dir_all(&self.root) {
            tracing::warn!(
                dir = %self.root.display(),
                "could not remove throwaway PostgreSQL cluster directory: {err}"
            );
        }
    }
}

/// Formats one `postgresql.conf` line, `name = 'value'`, quoting the value so any string is read
/// back exactly: backslashes are doubled (the configuration parser treats them as escapes) and
/// single quotes doubled. Names must be PostgreSQL identifiers, optionally qualified
/// (`auto_explain.log_min_duration`); values cannot span lines.
pub fn format_setting(name: &str, value: &str) -> Result<String, ClusterError> {
    let invalid = |reason| ClusterError::InvalidSetting { name: name.to_string(), reason };
    let mut parts = name.split('.');
    let valid_id = |id: &str| {
        id.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let valid = match (parts.next(), parts.next(), parts.next()) {
        (Some(id), None, None) => valid_id(id),
        (Some(class), Some(id), None) => valid_id(class) && valid_id(id),
        _ => false,
    };
    if !valid {
        return Err(invalid("a setting name is letters, digits and underscores, optionally `prefix.name`"));
    }
    if value.contains(['\n', '\r', '\0']) {
        return Err(invalid("a setting value cannot contain line breaks or NUL characters"));
    }
    let quoted = value.replace('\\', "\\\\").replace('\'', "''");
    Ok(format!("{name} = '{quoted}'"))
}

/// The OS account the PostgreSQL programs run as when lifeboat runs as root.
#[derive(Debug, Clone)]
pub(crate) struct OsUser {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) home: PathBuf,
}

impl OsUser {
    pub(crate) fn lookup(name: &str) -> Result<Self, ClusterError> {
        let user = nix::unistd::User::from_name(name)
            .map_err(|errno| ClusterError::OsUserLookup { user: name.to_string(), source: io::Error::from(errno) })?
            .ok_or_else(|| ClusterError::NoSuchOsUser { user: name.to_string() })?;
        if user.uid.is_root() {
            return Err(ClusterError::OsUserIsRoot { user: name.to_string() });
        }
        Ok(Self { name: name.to_string(), uid: user.uid.as_raw(), gid: user.gid.as_raw(), home: user.dir })
    }
}

pub(crate) fn running_as_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// A port nobody was listening on a moment ago. The server only uses it to name its Unix socket,
/// so a later collision on TCP cannot hurt; keeping it free on TCP lets a caller who turns on
/// `listen_addresses` use it too.
fn free_port() -> Result<u16, ClusterError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|source| ClusterError::Io { action: "pick a free port on", path: PathBuf::from("127.0.0.1"), source })
}

/// Creates `<parent>/lifeboat-pg-<random>`, private to the server's OS user.
fn create_scratch_dir(parent: &Path, owner: Option<&OsUser>) -> Result<PathBuf, ClusterError> {
    let mut attempts = 0;
    loop {
        let mut random = [0u8; 6];
        getrandom::fill(&mut random).map_err(|err| ClusterError::Io {
            action: "name a scratch directory in",
            path: parent.to_path_buf(),
            source: io::Error::other(err.to_string()),
        })?;
        let dir = parent.join(format!("lifeboat-pg-{}", hex::encode(random)));
        match make_private_dir(&dir, owner) {
            Err(ClusterError::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists && attempts < 10 => {
                attempts += 1;
            }
            Err(err) => return Err(err),
            Ok(()) => return Ok(dir),
        }
    }
}

/// Creates `dir` with mode 0700, owned by `owner` when given.
fn make_private_dir(dir: &Path, owner: Option<&OsUser>) -> Result<(), ClusterError> {
    fs::DirBuilder::new().mode(0o700).create(dir).map_err(|source| ClusterError::Io {
        action: "create directory",
        path: dir.to_path_buf(),
        source,
    })?;
    if let Some(user) = owner {
        chown(dir, user)?;
    }
    Ok(())
}

fn chown(path: &Path, user: &OsUser) -> Result<(), ClusterError> {
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid)).map_err(|source| ClusterError::Io {
        action: "change the owner of",
        path: path.to_path_buf(),
        source,
    })
}

fn chown_tree(path: &Path, user: &OsUser) -> Result<(), ClusterError> {
    chown(path, user)?;
    let meta = fs::symlink_metadata(path).map_err(|source| ClusterError::Io {
        action: "inspect",
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        let entries = fs::read_dir(path).map_err(|source| ClusterError::Io {
            action: "list",
            path: path.to_path_buf(),
            source,
        })?;
        for entry in entries {
            let entry =
                entry.map_err(|source| ClusterError::Io { action: "list", path: path.to_path_buf(), source })?;
            chown_tree(&entry.path(), user)?;
        }
    }
    Ok(())
}

fn timeout_secs(timeout: Duration) -> String {
    timeout.as_secs().max(1).to_string()
}

/// A program's stderr, or its stdout when stderr is empty, trimmed to the last lines.
fn describe_output(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let text = if stderr.trim().is_empty() { String::from_utf8_lossy(&output.stdout) } else { stderr };
    let text = last_lines(text.trim(), LOG_TAIL_LINES);
    if text.is_empty() { "(no output)".to_string() } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_values_are_quoted() {
        assert_eq!(format_setting("archive_mode", "on").unwrap(), "archive_mode = 'on'");
        assert_eq!(format_setting("listen_addresses", "").unwrap(), "listen_addresses = ''");
        assert_eq!(
            format_setting("archive_command", r"lifeboat wal-push '%p' C:\x").unwrap(),
            r"archive_command = 'lifeboat wal-push ''%p'' C:\\x'"
        );
        assert_eq!(format_setting("lifeboat.marker", "it's").unwrap(), "lifeboat.marker = 'it''s'");
    }

    #[test]
    fn os_users_are_looked_up_by_name_and_root_is_refused() {
        // The tests run their servers as `postgres`, so the account exists wherever they run.
        let postgres = OsUser::lookup("postgres").unwrap();
        assert!(postgres.uid != 0 && postgres.name == "postgres" && postgres.home.is_absolute(), "{postgres:?}");
        assert!(matches!(OsUser::lookup("root"), Err(ClusterError::OsUserIsRoot { .. })));
        for missing in ["lifeboat-no-such-user", "nul\0inside"] {
            let error = OsUser::lookup(missing).unwrap_err();
            assert!(matches!(&error, ClusterError::NoSuchOsUser { user } if user == missing), "{error}");
        }
    }

    #[test]
    fn bad_setting_names_and_values_are_refused() {
        for name in ["", "1abc", "a b", "a=b", "a.b.c", "a.", "search_path;", "x\n"] {
            assert!(format_setting(name, "v").is_err(), "{name:?} accepted");
        }
        let err = format_setting("archive_command", "a\nb").unwrap_err().to_string();
        assert!(err.contains("archive_command") && err.contains("line breaks"), "{err}");
    }
}
