//! WAL archiving through the daemon: the daemon end of the `wal-push` hand-off
//! ([`crate::wal::handoff`]), and the push-ahead that makes a backlog drain fast.
//!
//! The daemon listens on `<[daemon] state_dir>/wal-push.sock` (mode 0600; when it runs as root, the
//! socket belongs to `[cluster] os_user`, PostgreSQL's user, so the archiver can connect). A peer
//! must be the daemon's own user, root, or that OS user, and the file it names must belong to it:
//! the daemon reads nothing its client could not read itself. Each request is answered only once
//! the push (the same [`ops::wal_push`] a lone `wal-push` runs: identity check, create-only,
//! durable) has ended, so "exit 0 only once durable" holds through the hand-off.
//!
//! Push-ahead: the `pg_wal` directory of the files asked for is remembered; after each request
//! the daemon lists `archive_status/` and starts pushing the oldest `.ready` segments it has not
//! pushed yet, up to `[wal] push_ahead` of them stored or in flight ahead of the archiver. When the
//! archiver asks for one of them, the answer waits for that push (or is immediate when it has
//! ended), and the slot goes to the next ready segment. A push ahead that failed is not trusted:
//! the file is pushed again when asked for. The daemon never touches `archive_status/`: PostgreSQL
//! marks a segment `.done` when its `wal-push` returns 0, as always.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Current;
use crate::config::Config;
use crate::ops::{self, event::Metrics};
use crate::wal::handoff::{self, MAX_LINE, Outcome, PROTOCOL, Reply, Request};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(
        "another process already serves wal-push at {} (a second lifeboat daemon with the same [daemon] state_dir?); \
         this daemon does not take WAL hand-offs. Give each daemon its own state_dir",
        path.display()
    )]
    InUse { path: PathBuf },
    #[error("cannot listen on {}: {source}; wal-push stores each segment itself", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot give the socket {} to [cluster] os_user {user:?}: {detail}; PostgreSQL's archiver cannot hand \
         segments to the daemon, so wal-push stores each segment itself",
        path.display()
    )]
    Owner { path: PathBuf, user: String, detail: String },
}

/// The listening socket and who may use it.
pub struct ArchiveSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Peers allowed besides root and the daemon's own user: `[cluster] os_user` when the daemon runs as root.
    os_user_uid: Option<u32>,
}

/// Binds `<state_dir>/wal-push.sock`, replacing a socket no process listens on any more.
pub fn bind(config: &Config) -> Result<ArchiveSocket, ArchiveError> {
    let state_dir = &config.daemon.state_dir;
    let path = handoff::socket_path(state_dir);
    let bind_error = |source| ArchiveError::Bind { path: path.clone(), source };
    std::fs::create_dir_all(state_dir).map_err(bind_error)?;
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(ArchiveError::InUse { path });
        }
        std::fs::remove_file(&path).map_err(bind_error)?;
    }
    let listener = UnixListener::bind(&path).map_err(bind_error)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(bind_error)?;
    let os_user_uid = if nix::unistd::geteuid().is_root() {
        let owner_error =
            |detail: String| ArchiveError::Owner { path: path.clone(), user: config.cluster.os_user.clone(), detail };
        let user = nix::unistd::User::from_name(&config.cluster.os_user)
            .map_err(|error| owner_error(error.to_string()))?
            .ok_or_else(|| owner_error("no such user".to_owned()))?;
        std::os::unix::fs::chown(&path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .map_err(|error| owner_error(error.to_string()))?;
        Some(user.uid.as_raw())
    } else {
        None
    };
    Ok(ArchiveSocket { listener, path, os_user_uid })
}

/// Answers hand-offs until `shutdown`, then removes the socket. A request still being served then
/// gets no answer, and its `wal-push` stores the file itself.
pub async fn serve(
    socket: ArchiveSocket,
    current: watch::Receiver<Current>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    tracing::info!(socket = %socket.path.display(), "taking WAL from wal-push at {}", socket.path.display());
    let archiver = Arc::new(Archiver {
        current,
        metrics,
        own_uid: nix::unistd::geteuid().as_raw(),
        os_user_uid: socket.os_user_uid,
        ahead: Mutex::default(),
        warned_peer: AtomicBool::new(false),
    });
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = socket.listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let archiver = archiver.clone();
                    tokio::spawn(async move { archiver.answer(stream).await });
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a wal-push connection: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
    let _ = std::fs::remove_file(&socket.path);
}

/// One push, started for a request or ahead of one.
struct Entry {
    done: watch::Receiver<Option<Reply>>,
    /// Started ahead of the archiver's request.
    ahead: bool,
    /// A request asked for it: it no longer takes a push-ahead slot.
    claimed: bool,
}

impl Entry {
    fn finished(&self) -> bool {
        self.done.borrow().is_some()
    }

    fn failed(&self) -> bool {
        self.done.borrow().as_ref().is_some_and(|reply| reply.result == Outcome::Failed)
    }
}

#[derive(Default)]
struct Ahead {
    /// The `pg_wal` directory of the last file asked for: where `.ready` files are looked for.
    pg_wal: Option<PathBuf>,
    /// Pushes started, by absolute path, until their file is no longer ready.
    entries: HashMap<PathBuf, Entry>,
}

struct Archiver {
    current: watch::Receiver<Current>,
    metrics: Arc<Metrics>,
    own_uid: u32,
    os_user_uid: Option<u32>,
    ahead: Mutex<Ahead>,
    warned_peer: AtomicBool,
}

impl Archiver {
    async fn answer(self: Arc<Self>, stream: UnixStream) {
        let Ok(peer) = stream.peer_cred() else { return };
        let uid = peer.uid();
        if !(uid == 0 || uid == self.own_uid || Some(uid) == self.os_user_uid) {
            if !self.warned_peer.swap(true, Ordering::SeqCst) {
                tracing::warn!(
                    uid,
                    "a wal-push of uid {uid} connected; only root, the daemon's user and [cluster] os_user may"
                );
            }
            return;
        }
        let (reading, mut writing) = stream.into_split();
        let mut line = String::new();
        let mut reader = BufReader::new(reading).take(MAX_LINE as u64);
        if reader.read_line(&mut line).await.is_err() {
            return;
        }
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(request) => self.serve(request, uid).await,
            Err(error) => Reply::with_error(Outcome::Refused, format!("not a {PROTOCOL} request: {error}")),
        };
        let mut line = serde_json::to_string(&reply).expect("a reply serialises");
        line.push('\n');
        // A client gone meanwhile finds out from PostgreSQL's retry, which is answered from the archive.
        let _ = writing.write_all(line.as_bytes()).await;
    }

    async fn serve(self: &Arc<Self>, request: Request, uid: u32) -> Reply {
        if request.protocol != PROTOCOL {
            return Reply::with_error(Outcome::Refused, format!("this daemon speaks {PROTOCOL}"));
        }
        let config = self.current.borrow().config.clone();
        if request.cluster != config.cluster.name.as_str() {
            return Reply::with_error(
                Outcome::Refused,
                format!("this daemon archives cluster {:?}", config.cluster.name),
            );
        }
        let repository = config.repository.url.to_string();
        if request.repository != repository {
            return Reply::with_error(Outcome::Refused, format!("this daemon archives into {repository}"));
        }
        let path = request.path;
        if !path.is_absolute() {
            return Reply::with_error(Outcome::Refused, format!("{} is not an absolute path", path.display()));
        }
        // The daemon may run as root: it reads only files of the user who asks.
        if let Ok(metadata) = std::fs::metadata(&path)
            && uid != 0
            && uid != self.own_uid
            && metadata.uid() != uid
        {
            return Reply::with_error(Outcome::Refused, format!("{} does not belong to uid {uid}", path.display()));
        }
        if let Some(pg_wal) = path.parent().filter(|dir| dir.join("archive_status").is_dir()) {
            self.ahead.lock().expect("the push-ahead lock is not poisoned").pg_wal = Some(pg_wal.to_owned());
        }
        let (done, was_ahead) = self.claim(&path, false);
        self.refill();
        let mut reply = wait(done).await;
        if reply.result == Outcome::Failed && was_ahead {
            let (done, _) = self.claim(&path, true);
            reply = wait(done).await;
        }
        // The answered file's entry stays until PostgreSQL marks it done, so it is not pushed
        // ahead again meanwhile; its slot is free.
        self.refill();
        tracing::debug!(path = %path.display(), result = ?reply.result, ahead = reply.ahead, "wal-push handed over");
        reply
    }

    /// The push of `path` for a request: the one started ahead (unless it failed, or `again`),
    /// or a new one. Whether it was started ahead.
    fn claim(self: &Arc<Self>, path: &Path, again: bool) -> (watch::Receiver<Option<Reply>>, bool) {
        let mut ahead = self.ahead.lock().expect("the push-ahead lock is not poisoned");
        if let Some(entry) = ahead.entries.get_mut(path)
            && !again
            && !entry.failed()
        {
            entry.claimed = true;
            return (entry.done.clone(), entry.ahead);
        }
        let done = self.start(path.to_owned(), false);
        ahead.entries.insert(path.to_owned(), Entry { done: done.clone(), ahead: false, claimed: true });
        (done, false)
    }

    /// Starts a push as a task of its own: it ends even if the client goes away.
    fn start(self: &Arc<Self>, path: PathBuf, ahead: bool) -> watch::Receiver<Option<Reply>> {
        let (sender, done) = watch::channel(None);
        let archiver = self.clone();
        tokio::spawn(async move {
            let reply = archiver.push(&path, ahead).await;
            let _ = sender.send(Some(reply));
        });
        done
    }

    /// Starts pushes of the oldest ready segments not pushed yet, up to `[wal] push_ahead` ahead.
    fn refill(self: &Arc<Self>) {
        let push_ahead = self.current.borrow().config.wal.push_ahead as usize;
        let mut ahead = self.ahead.lock().expect("the push-ahead lock is not poisoned");
        let ready = ahead.pg_wal.as_deref().map(ready_segments).unwrap_or_default();
        // A file no longer ready was marked done by PostgreSQL (or is gone): forget its push.
        ahead.entries.retain(|path, entry| {
            !entry.finished()
                || path.file_name().and_then(|name| name.to_str()).is_some_and(|name| ready.contains(name))
        });
        let Some(pg_wal) = ahead.pg_wal.clone() else { return };
        let unclaimed = ahead.entries.values().filter(|entry| !entry.claimed).count();
        let mut free = push_ahead.saturating_sub(unclaimed);
        for name in ready {
            if free == 0 {
                break;
            }
            let path = pg_wal.join(&name);
            if ahead.entries.contains_key(&path) {
                continue;
            }
            let done = self.start(path.clone(), true);
            ahead.entries.insert(path, Entry { done, ahead: true, claimed: false });
            free -= 1;
        }
    }

    /// Pushes `path` as `wal-push` does, with the daemon's configuration and open repository.
    async fn push(&self, path: &Path, ahead: bool) -> Reply {
        let Current { config, repository } = self.current.borrow().clone();
        let context = ops::context_on(config, repository, self.metrics.clone());
        // Several pushes run at once here: each compresses on its own thread.
        match ops::wal_push(&context, path, 0).await {
            Ok(pushed) => {
                let result = if pushed.already_archived { Outcome::AlreadyArchived } else { Outcome::Stored };
                Reply { ahead, bytes: pushed.bytes, ..Reply::new(result) }
            }
            Err(error) => {
                if ahead {
                    tracing::debug!(%error, "pushing {} ahead failed; it is pushed again when asked for", path.display());
                }
                Reply::with_error(Outcome::Failed, error.to_string())
            }
        }
    }
}

/// The reply a push sends when it ends.
async fn wait(mut done: watch::Receiver<Option<Reply>>) -> Reply {
    match done.wait_for(Option::is_some).await {
        Ok(reply) => reply.clone().expect("waited for Some"),
        // The push's task ended without a reply (the runtime is shutting down).
        Err(_) => Reply::with_error(Outcome::Failed, "the daemon stopped before the push ended".to_owned()),
    }
}

/// Names of the WAL segments (not history, backup history or partial files) that PostgreSQL has
/// marked ready in `<pg_wal>/archive_status`, oldest first.
fn ready_segments(pg_wal: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(pg_wal.join("archive_status")) else { return BTreeSet::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|name| name.strip_suffix(".ready").map(str::to_owned))
        .filter(|name| name.len() == 24 && name.bytes().all(|byte| byte.is_ascii_hexdigit()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ready_segments_are_pushed_ahead_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let status = dir.path().join("archive_status");
        std::fs::create_dir(&status).unwrap();
        for name in [
            "000000010000000000000003.ready",
            "000000010000000000000001.ready",
            "000000010000000000000002.done",
            "00000002.history.ready",
            "000000010000000000000004.partial.ready",
            "000000010000000000000005.00000028.backup.ready",
        ] {
            std::fs::write(status.join(name), b"").unwrap();
        }
        let ready: Vec<String> = ready_segments(dir.path()).into_iter().collect();
        assert_eq!(ready, ["000000010000000000000001", "000000010000000000000003"]);
        assert!(ready_segments(&dir.path().join("missing")).is_empty());
    }
}
