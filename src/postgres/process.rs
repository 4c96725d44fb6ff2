//! Running PostgreSQL programs (`initdb`, `pg_ctl`, `pg_dump`, `pg_dumpall`, `pg_basebackup`,
//! `pg_restore`, `psql`, `pg_amcheck` and the `--version` probes): the one place their command is
//! built, so every program is started the same way.
//!
//! - **Environment.** A program working on a server or data directory lifeboat names on its
//!   command line ([`PgCommand::local`]: the scratch clusters, a restored data directory, the
//!   scratch server verification checks) runs without the [`STEERING_ENV`] variables, so nothing
//!   in the caller's environment can point it at another server, data directory, user, service or
//!   password, or change its session. A program connecting with a connection URL
//!   ([`PgCommand::client`]: the configured cluster, the target of a dump restore) keeps the
//!   caller's environment: lifeboat's own session to that server (sqlx) fills in what the URL
//!   leaves out from the same `PG*` variables, and both must reach the same server (`pg_dump
//!   --snapshot` uses a snapshot exported by lifeboat's session).
//! - **Password.** Only through `PGPASSWORD` ([`PgCommand::client`]), never on a command line
//!   where every user of the host can read it; everything kept of the program's output has it
//!   replaced by `<redacted>`.
//! - **User.** When lifeboat runs as root, programs that refuse root or must own the files they
//!   write run as the cluster's OS user ([`PgCommand::run_as`]): the standard library switches
//!   (`setgid` and `setuid` in the child, supplementary groups dropped), so no `runuser`/`su` PAM
//!   session is involved.
//! - **Input and errors.** Standard input is closed unless piped. Standard error is read in the
//!   background keeping only its end ([`StderrTail`]); [`last_lines`] makes the tail an error
//!   message shows.

use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{ExitStatus, Output, Stdio};

use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::process::Child;
use tokio::task::JoinHandle;

use super::cluster::OsUser;
use crate::secret::{REDACTED, Secret};

/// The libpq and server variables removed from programs run by [`PgCommand::local`]: those that
/// choose the data directory (`PGDATA`), the server (`PGHOST`, `PGHOSTADDR`, `PGPORT`,
/// `PGSERVICE`, `PGSERVICEFILE`, `PGTARGETSESSIONATTRS`), the role and its credentials (`PGUSER`,
/// `PGPASSWORD`, `PGPASSFILE`), the database (`PGDATABASE`), or the session and its transport
/// (`PGOPTIONS`, `PGSSLMODE`, `PGREQUIRESSL`, `PGGSSENCMODE`). lifeboat names each of these
/// itself on the command line when it needs them, so an inherited value could only take the
/// program somewhere else. Variables that only change how messages look are left alone.
pub const STEERING_ENV: &[&str] = &[
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGTARGETSESSIONATTRS",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGDATABASE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGREQUIRESSL",
    "PGGSSENCMODE",
];

/// How much of a program's standard error [`StderrTail`] keeps.
const STDERR_TAIL_BYTES: usize = 16 * 1024;
/// How many of its last lines an error message shows.
pub const STDERR_TAIL_LINES: usize = 15;

/// A PostgreSQL program about to be started (see the module documentation).
pub struct PgCommand {
    command: std::process::Command,
    password: Option<Secret>,
}

impl PgCommand {
    /// A program working on a server or data directory named on its command line: the
    /// [`STEERING_ENV`] variables are removed.
    pub fn local(program: &Path) -> Self {
        let mut command = Self::bare(program);
        for name in STEERING_ENV {
            command.command.env_remove(name);
        }
        command
    }

    /// A program connecting with a connection URL (given by the caller, without its password);
    /// `password`, if any, goes in `PGPASSWORD` and is redacted from its output.
    pub fn client(program: &Path, password: Option<&Secret>) -> Self {
        let mut command = Self::bare(program);
        if let Some(password) = password {
            command.command.env("PGPASSWORD", password.expose());
            command.password = Some(password.clone());
        }
        command
    }

    fn bare(program: &Path) -> Self {
        let mut command = std::process::Command::new(program);
        command.stdin(Stdio::null());
        PgCommand { command, password: None }
    }

    /// Runs the program as `user` (the cluster's OS user, when lifeboat runs as root), with that
    /// user's `HOME`, `USER` and `LOGNAME`.
    pub(crate) fn run_as(&mut self, user: &OsUser) -> &mut Self {
        self.run_as_ids(user.uid, user.gid);
        self.command.env("HOME", &user.home).env("USER", &user.name).env("LOGNAME", &user.name);
        self
    }

    /// Runs the program with these user and group ids (the owner of a restored data directory).
    pub fn run_as_ids(&mut self, uid: u32, gid: u32) -> &mut Self {
        self.command.uid(uid).gid(gid);
        self
    }

    pub fn arg(&mut self, arg: impl AsRef<std::ffi::OsStr>) -> &mut Self {
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command.args(args);
        self
    }

    /// Sets one environment variable for this run (`LC_ALL=C` for output lifeboat parses, say).
    pub fn env(&mut self, name: &str, value: impl AsRef<std::ffi::OsStr>) -> &mut Self {
        self.command.env(name, value);
        self
    }

    pub fn env_remove(&mut self, name: &str) -> &mut Self {
        self.command.env_remove(name);
        self
    }

    pub fn current_dir(&mut self, dir: &Path) -> &mut Self {
        self.command.current_dir(dir);
        self
    }

    /// Gives the program a pipe as standard input instead of nothing.
    pub fn stdin_piped(&mut self) -> &mut Self {
        self.command.stdin(Stdio::piped());
        self
    }

    /// Runs the program to its end, blocking, collecting its output (for `Drop`, and for the
    /// synchronous `--version` probes).
    pub fn output_blocking(&mut self) -> io::Result<Output> {
        self.command.output()
    }

    /// Runs the program to its end, collecting its output. Dropping the future kills the program:
    /// nobody is left to read what it says.
    pub async fn output(self) -> io::Result<Output> {
        tokio::process::Command::from(self.command).kill_on_drop(true).output().await
    }

    /// Starts the program with `stdout` as its standard output and standard error read in the
    /// background; the process is killed if the returned child is dropped.
    pub fn spawn(self, stdout: Stdio) -> io::Result<PgChild> {
        let mut command = tokio::process::Command::from(self.command);
        command.stdout(stdout).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = command.spawn()?;
        let stderr = StderrTail::collect(child.stderr.take().expect("stderr is piped"));
        Ok(PgChild { child, stderr, password: self.password })
    }
}

/// A started PostgreSQL program: the process, and its standard error being collected.
pub struct PgChild {
    child: Child,
    stderr: StderrTail,
    password: Option<Secret>,
}

impl PgChild {
    /// Splits into the process and a handle on its standard error's tail.
    pub fn into_parts(self) -> (Child, RedactedTail) {
        (self.child, RedactedTail { tail: self.stderr, password: self.password })
    }
}

/// The tail of a program's standard error that redacts the program's password.
pub struct RedactedTail {
    tail: StderrTail,
    password: Option<Secret>,
}

impl RedactedTail {
    /// Waits for standard error to close; its last [`STDERR_TAIL_LINES`] lines, password removed.
    pub async fn lines(self) -> String {
        redact(&self.tail.lines().await, self.password.as_ref())
    }
}

/// Reads a program's standard error in the background until it closes, keeping only its last
/// [`STDERR_TAIL_BYTES`] or so.
struct StderrTail(JoinHandle<Vec<u8>>);

impl StderrTail {
    fn collect(mut stderr: impl AsyncRead + Unpin + Send + 'static) -> Self {
        StderrTail(tokio::spawn(async move {
            let mut tail = Vec::new();
            let mut block = [0u8; 4096];
            loop {
                match stderr.read(&mut block).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => {
                        tail.extend_from_slice(&block[..read]);
                        if tail.len() > 2 * STDERR_TAIL_BYTES {
                            tail.drain(..tail.len() - STDERR_TAIL_BYTES);
                        }
                    }
                }
            }
            tail
        }))
    }

    /// Waits for standard error to close; its last [`STDERR_TAIL_LINES`] lines, lossily decoded.
    async fn lines(self) -> String {
        let tail = self.0.await.unwrap_or_default();
        last_lines(String::from_utf8_lossy(&tail).trim_end(), STDERR_TAIL_LINES)
    }
}

/// The last `count` lines of `text`.
pub fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// The last `count` lines of a file (a server log), reading at most its last 64 KiB.
pub fn read_tail(path: &Path, count: usize) -> io::Result<String> {
    const MAX: u64 = 64 * 1024;
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(MAX)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(last_lines(String::from_utf8_lossy(&bytes).trim_end(), count))
}

/// `text` with every occurrence of `password` replaced by `<redacted>`.
pub fn redact(text: &str, password: Option<&Secret>) -> String {
    match password {
        Some(password) if !password.expose().is_empty() => text.replace(password.expose(), REDACTED),
        _ => text.to_owned(),
    }
}

/// "exit status 1", "killed by signal 9", or the error that prevented waiting.
pub fn describe_exit(status: &io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt as _;
            match (status.code(), status.signal()) {
                (Some(code), _) => format!("exit status {code}"),
                (None, Some(signal)) => format!("killed by signal {signal}"),
                (None, None) => status.to_string(),
            }
        }
        Err(error) => format!("could not wait for it: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_keeps_the_end() {
        assert_eq!(last_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
        assert_eq!(last_lines("", 5), "");
    }

    #[test]
    fn passwords_are_redacted() {
        let password = Secret::new("hunter2");
        assert_eq!(redact("auth failed for hunter2", Some(&password)), "auth failed for <redacted>");
        assert_eq!(redact("nothing", Some(&Secret::new(""))), "nothing");
        assert_eq!(redact("hunter2", None), "hunter2");
    }

    #[test]
    fn local_programs_lose_the_steering_variables() {
        let command = PgCommand::local(Path::new("pg_ctl"));
        let removed: Vec<_> =
            command.command.get_envs().filter(|(_, value)| value.is_none()).map(|(name, _)| name.to_owned()).collect();
        for name in STEERING_ENV {
            assert!(removed.iter().any(|removed| removed == name), "{name} is kept");
        }
    }

    #[tokio::test]
    async fn clients_get_the_password_in_the_environment_only_and_it_is_redacted() {
        let password = Secret::new("s3cret");
        let mut client = PgCommand::client(Path::new("/bin/sh"), Some(&password));
        client.args(["-c", "echo \"args=$# password=$PGPASSWORD\" >&2"]);
        let (mut child, stderr) = client.spawn(Stdio::null()).unwrap().into_parts();
        assert!(child.wait().await.unwrap().success());
        assert_eq!(stderr.lines().await, "args=0 password=<redacted>");
    }

    #[tokio::test]
    async fn the_stderr_tail_keeps_the_last_lines() {
        let mut command = PgCommand::local(Path::new("/bin/sh"));
        command.args(["-c", "for i in $(seq 1 40); do echo \"line $i\" >&2; done"]);
        let (mut child, stderr) = command.spawn(Stdio::null()).unwrap().into_parts();
        child.wait().await.unwrap();
        let lines = stderr.lines().await;
        assert_eq!(lines.lines().count(), STDERR_TAIL_LINES);
        assert!(lines.starts_with("line 26") && lines.ends_with("line 40"), "{lines}");
    }
}
