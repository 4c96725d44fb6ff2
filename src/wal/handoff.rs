//! The hand-off of `wal-push` to `lifeboat daemon` over a local Unix socket: the messages, the
//! socket's place, and the client side. The daemon side is [`crate::daemon::archive`].
//!
//! One request per connection, each message one line of JSON (docs/json.md, "wal-push hand-off").
//! The client names the cluster, the repository and the absolute path of the file; the daemon
//! answers only once the file is durable in the repository (`stored`, `already_archived`), or
//! with the push's error (`failed`), or `refused` when it serves another cluster or repository.
//! Anything else (no socket, a refused connection, a daemon that dies before answering, another
//! protocol version) is [`Handoff::Unavailable`]: the caller pushes the file itself, which is
//! always safe because pushes are create-only and idempotent. Exit 0 therefore still means
//! "durable" (G2), whoever stored the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// The protocol's name and version; a daemon or client speaking another one is not used.
pub const PROTOCOL: &str = "lifeboat-wal-push/1";

/// The socket's file name in `[daemon] state_dir`.
pub const SOCKET_NAME: &str = "wal-push.sock";

/// The longest a request line may be: a path and two names.
pub const MAX_LINE: usize = 64 * 1024;

/// How long connecting may take before the client pushes alone (a daemon stuck in accept).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the daemon of `state_dir` listens.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// What `wal-push` asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub protocol: String,
    /// `[cluster] name` of the client's configuration.
    pub cluster: String,
    /// `repository.url` of the client's configuration.
    pub repository: String,
    /// Absolute path of the file to archive.
    pub path: PathBuf,
}

/// How the daemon's push ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Durable in the repository, written by this push.
    Stored,
    /// Already archived with identical content.
    AlreadyArchived,
    /// The push failed; `error` says why.
    Failed,
    /// Not this daemon's cluster or repository; `error` says which differs.
    Refused,
}

/// What the daemon answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub protocol: String,
    pub result: Outcome,
    /// The daemon had stored the file ahead, before the archiver asked for it.
    #[serde(default)]
    pub ahead: bool,
    /// Plaintext bytes of the file (stored or already archived).
    #[serde(default)]
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    pub fn new(result: Outcome) -> Reply {
        Reply { protocol: PROTOCOL.to_owned(), result, ahead: false, bytes: 0, error: None }
    }

    pub fn with_error(result: Outcome, error: String) -> Reply {
        Reply { error: Some(error), ..Reply::new(result) }
    }
}

/// The daemon's push failed: the client exits non-zero with the daemon's message.
#[derive(Debug, thiserror::Error)]
#[error("{error} (reported by lifeboat daemon, pid {pid})")]
pub struct DaemonPushFailed {
    pub error: String,
    pub pid: String,
}

/// How handing a file to the daemon went.
#[derive(Debug)]
pub enum Handoff {
    /// The daemon stored it (or found it archived already): done.
    Done(Reply),
    /// The daemon tried and failed.
    Failed(DaemonPushFailed),
    /// No daemon took the request; the reason is for -v.
    Unavailable(String),
}

/// Asks the daemon listening at `socket` to archive `path` (absolute) for `cluster` in
/// `repository`, and waits for its answer, however long the push takes.
pub async fn hand_off(socket: &Path, cluster: &str, repository: &str, path: &Path) -> Handoff {
    let connecting = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(socket)).await;
    let stream = match connecting {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Handoff::Unavailable(format!("cannot connect to {}: {error}", socket.display())),
        Err(_) => {
            return Handoff::Unavailable(format!("{} did not accept within {CONNECT_TIMEOUT:?}", socket.display()));
        }
    };
    let pid = stream.peer_cred().ok().and_then(|cred| cred.pid()).map_or_else(|| "?".to_owned(), |pid| pid.to_string());
    let request = Request {
        protocol: PROTOCOL.to_owned(),
        cluster: cluster.to_owned(),
        repository: repository.to_owned(),
        path: path.to_owned(),
    };
    let (reading, mut writing) = stream.into_split();
    let mut line = serde_json::to_string(&request).expect("a request serialises");
    line.push('\n');
    if let Err(error) = writing.write_all(line.as_bytes()).await {
        return Handoff::Unavailable(format!("cannot send the request to the daemon (pid {pid}): {error}"));
    }
    let mut answer = String::new();
    let mut reader = BufReader::new(reading).take(MAX_LINE as u64);
    match reader.read_line(&mut answer).await {
        Ok(0) => {
            return Handoff::Unavailable(format!("the daemon (pid {pid}) closed the connection without an answer"));
        }
        Ok(_) => {}
        Err(error) => return Handoff::Unavailable(format!("no answer from the daemon (pid {pid}): {error}")),
    }
    let reply: Reply = match serde_json::from_str(&answer) {
        Ok(reply) => reply,
        Err(error) => return Handoff::Unavailable(format!("the daemon (pid {pid}) answered {answer:?}: {error}")),
    };
    if reply.protocol != PROTOCOL {
        return Handoff::Unavailable(format!("the daemon (pid {pid}) speaks {}, not {PROTOCOL}", reply.protocol));
    }
    match reply.result {
        Outcome::Stored | Outcome::AlreadyArchived => Handoff::Done(reply),
        Outcome::Failed => Handoff::Failed(DaemonPushFailed {
            error: reply.error.unwrap_or_else(|| "the daemon's push failed".to_owned()),
            pid,
        }),
        Outcome::Refused => Handoff::Unavailable(format!(
            "the daemon (pid {pid}) does not archive for this configuration: {}",
            reply.error.unwrap_or_default()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_of_json_with_the_protocol() {
        let request = Request {
            protocol: PROTOCOL.to_owned(),
            cluster: "main".to_owned(),
            repository: "file:///var/lib/lifeboat/repo".to_owned(),
            path: PathBuf::from("/pg/pg_wal/000000010000000000000001"),
        };
        let line = serde_json::to_string(&request).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), request);
        let reply = Reply { ahead: true, bytes: 16, ..Reply::new(Outcome::AlreadyArchived) };
        let line = serde_json::to_string(&reply).unwrap();
        assert_eq!(line, r#"{"protocol":"lifeboat-wal-push/1","result":"already_archived","ahead":true,"bytes":16}"#);
        assert_eq!(serde_json::from_str::<Reply>(&line).unwrap(), reply);
    }
}
