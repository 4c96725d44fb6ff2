//! Running `pg_dump` and `pg_dumpall` with their standard output as a stream for the repository.
//!
//! The output is never staged in a temporary file or in memory: it is the plaintext reader of a
//! [`crate::repository::Repository::put`]. The danger of streaming is a program that fails half
//! way: its output simply ends, and a put would store the truncated stream as if it were
//! complete. So the reader returned by [`Program::spawn`] does not report the end of the output
//! until the program has exited successfully; if it failed (or was killed), the read fails instead,
//! the put fails, and nothing is stored.
//!
//! The command comes from [`crate::postgres::process`], which collects standard error in the
//! background (its last lines, password redacted) for the error message. Dropping a [`Program`]
//! kills the process.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::process::ChildStdout;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::postgres::process::{PgCommand, RedactedTail, describe_exit};
use crate::storage::ByteReader;

/// A running program whose standard output is being consumed through the reader that
/// [`Program::spawn`] returned.
pub struct Program {
    kill: CancellationToken,
    waiter: JoinHandle<(io::Result<ExitStatus>, bool)>,
    /// Taken by [`Program::finish`].
    stderr: Option<RedactedTail>,
    failed_at_end: Arc<AtomicBool>,
}

/// How a program ended.
#[derive(Debug)]
pub struct Finished {
    /// The exit status, or why it could not be obtained.
    pub status: io::Result<ExitStatus>,
    /// Whether [`Program::kill`] stopped it while it was still running.
    pub killed: bool,
    /// Whether the reader reached the end of the output and then failed because of the exit
    /// status: the consumer of the output failed because of the program, not the other way round.
    pub failed_at_end: bool,
    /// The last lines of its standard error, lossily decoded, password redacted.
    pub stderr: String,
}

impl Finished {
    pub fn success(&self) -> bool {
        matches!(&self.status, Ok(status) if status.success())
    }

    /// "exit status 1", "killed by signal 9", or the error that prevented waiting.
    pub fn describe_status(&self) -> String {
        describe_exit(&self.status)
    }
}

impl Program {
    /// Starts `command` with standard output piped. Returns the program and its output, which
    /// ends only after a successful exit.
    pub fn spawn(command: PgCommand) -> io::Result<(Program, ByteReader)> {
        let (mut child, stderr) = command.spawn(std::process::Stdio::piped())?.into_parts();
        let stdout = child.stdout.take().expect("stdout is piped");

        let kill = CancellationToken::new();
        let (exit_tx, exit_rx) = oneshot::channel();
        let waiter = {
            let kill = kill.clone();
            tokio::spawn(async move {
                let (status, killed) = tokio::select! {
                    biased;
                    status = child.wait() => (status, false),
                    () = kill.cancelled() => {
                        let _ = child.start_kill();
                        (child.wait().await, true)
                    }
                };
                let _ = exit_tx.send(matches!(&status, Ok(status) if status.success()));
                (status, killed)
            })
        };

        let failed_at_end = Arc::new(AtomicBool::new(false));
        let output = CheckedOutput { stdout, exit: Some(exit_rx), failed_at_end: failed_at_end.clone() };
        Ok((Program { kill, waiter, stderr: Some(stderr), failed_at_end }, Box::new(output)))
    }

    /// Stops the program (SIGKILL) if it is still running; its output then fails instead of ending.
    pub fn kill(&self) {
        self.kill.cancel();
    }

    /// Waits for the program to exit and its standard error to close.
    pub async fn finish(mut self) -> Finished {
        let (status, killed) = match (&mut self.waiter).await {
            Ok(outcome) => outcome,
            Err(error) => (Err(io::Error::other(error.to_string())), false),
        };
        let stderr = match self.stderr.take() {
            Some(stderr) => stderr.lines().await,
            None => String::new(),
        };
        Finished { status, killed, failed_at_end: self.failed_at_end.load(Ordering::SeqCst), stderr }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        self.kill.cancel();
    }
}

/// A program's standard output that ends only after the program exited successfully.
struct CheckedOutput {
    stdout: ChildStdout,
    /// `None` once the successful exit was seen.
    exit: Option<oneshot::Receiver<bool>>,
    failed_at_end: Arc<AtomicBool>,
}

impl AsyncRead for CheckedOutput {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stdout).poll_read(cx, buf))?;
        if buf.filled().len() > before || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // The end of the output: it counts only if the program succeeded.
        let Some(exit) = this.exit.as_mut() else { return Poll::Ready(Ok(())) };
        let succeeded = ready!(Pin::new(exit).poll(cx)).unwrap_or(false);
        if succeeded {
            this.exit = None;
            return Poll::Ready(Ok(()));
        }
        this.failed_at_end.store(true, Ordering::SeqCst);
        Poll::Ready(Err(io::Error::other("the program writing this data failed; its output is incomplete")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::AsyncReadExt as _;

    use crate::postgres::process::STDERR_TAIL_LINES;

    fn shell(script: &str) -> PgCommand {
        let mut command = PgCommand::local(std::path::Path::new("/bin/sh"));
        command.arg("-c").arg(script);
        command
    }

    async fn read_all(mut reader: ByteReader) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.map(|_| out)
    }

    #[tokio::test]
    async fn output_of_a_successful_program_ends_normally() {
        let (program, output) = Program::spawn(shell("printf hello; echo 'a warning' >&2")).unwrap();
        assert_eq!(read_all(output).await.unwrap(), b"hello");
        let finished = program.finish().await;
        assert!(finished.success() && !finished.killed && !finished.failed_at_end, "{finished:?}");
        assert_eq!(finished.stderr, "a warning");
    }

    #[tokio::test]
    async fn output_of_a_failing_program_fails_at_its_end() {
        let script = "printf partial; for i in $(seq 1 40); do echo \"line $i\" >&2; done; exit 3";
        let (program, output) = Program::spawn(shell(script)).unwrap();
        let error = read_all(output).await.unwrap_err();
        assert!(error.to_string().contains("incomplete"), "{error}");
        let finished = program.finish().await;
        assert!(finished.failed_at_end && !finished.killed, "{finished:?}");
        assert_eq!(finished.describe_status(), "exit status 3");
        assert_eq!(finished.stderr.lines().count(), STDERR_TAIL_LINES);
        assert!(finished.stderr.ends_with("line 40"), "{}", finished.stderr);
    }

    #[tokio::test]
    async fn a_killed_program_never_looks_complete() {
        let (program, output) = Program::spawn(shell("printf started; exec sleep 30")).unwrap();
        let reading = tokio::spawn(read_all(output));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        program.kill();
        assert!(reading.await.unwrap().is_err());
        let finished = program.finish().await;
        assert!(finished.killed && finished.failed_at_end, "{finished:?}");
        assert_eq!(finished.describe_status(), "killed by signal 9");
    }
}
