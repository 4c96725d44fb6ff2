//! Scratch clusters whose lifeboat died: the owner stamp each throwaway cluster's directory
//! carries, and the sweep that stops and removes the clusters whose owner is gone.
//!
//! A verification, rehearsal or quickstart killed with SIGKILL (the OOM killer, `systemctl
//! kill`, a deploy pipeline's timeout) cannot stop its scratch server. `pg_ctl start` puts the
//! postmaster in a session of its own, so it outlives the whole killed process group and keeps
//! its memory, its port and the disk space of its restored data directory until someone notices.
//!
//! So each scratch directory that is not meant to be kept holds `lifeboat.owner`: the process id
//! of the lifeboat that created it and that process's start time (from `/proc/<pid>/stat`, so a
//! reused process id does not count as the owner). Before a new scratch directory is created, the
//! parent directory is swept: a `lifeboat-pg-*` directory whose stamp names a process that is
//! gone has its server stopped (an immediate shutdown, signalled to the process `postmaster.pid`
//! names, and only when that process runs in this very data directory) and is removed. A
//! directory without a readable stamp is never touched: nothing proves it abandoned.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::process_alive;

/// The stamp's file name in a scratch directory.
pub(super) const OWNER_FILE: &str = "lifeboat.owner";

/// The prefix of every scratch directory's name.
pub(super) const SCRATCH_PREFIX: &str = "lifeboat-pg-";

/// How long an abandoned server gets to shut down after the immediate-shutdown signal.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

/// The process that owns a scratch directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    pid: u32,
    /// Clock ticks after boot at which the process started (field 22 of `/proc/<pid>/stat`).
    started: u64,
}

impl Owner {
    fn current() -> io::Result<Owner> {
        let pid = std::process::id();
        let started =
            start_time(pid)?.ok_or_else(|| io::Error::other("/proc/self/stat has no start time; is /proc mounted?"))?;
        Ok(Owner { pid, started })
    }

    fn parse(text: &str) -> Option<Owner> {
        let mut words = text.split_whitespace();
        let pid = words.next()?.parse().ok()?;
        let started = words.next()?.parse().ok()?;
        words.next().is_none().then_some(Owner { pid, started })
    }

    /// Whether the owner still runs: its process id is alive and started when the stamp says.
    fn alive(&self) -> bool {
        process_alive(self.pid) && start_time(self.pid).ok().flatten() == Some(self.started)
    }
}

/// When process `pid` started, in clock ticks after boot; `None` when it does not exist.
fn start_time(pid: u32) -> io::Result<Option<u64>> {
    let stat = match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    // "pid (comm) state ppid ...": the command may hold spaces and parentheses, so fields are
    // counted after its last ')'. Field 3 (state) is the first there, field 22 the 20th.
    let started = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(19)?.parse().ok());
    Ok(started)
}

/// Writes the current process's stamp into the scratch directory `root`.
pub(super) fn stamp(root: &Path) -> io::Result<()> {
    let owner = Owner::current()?;
    fs::write(root.join(OWNER_FILE), format!("{} {}\n", owner.pid, owner.started))
}

/// Removes the stamp of `root`, for a directory that is to be kept.
pub(super) fn unstamp(root: &Path) -> io::Result<()> {
    match fs::remove_file(root.join(OWNER_FILE)) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// A scratch directory the sweep found abandoned.
#[derive(Debug)]
pub struct Abandoned {
    pub dir: PathBuf,
    /// The lifeboat process that created it and is gone.
    pub owner_pid: u32,
    /// The server that still ran there and was stopped.
    pub stopped_server: Option<u32>,
    /// Why it could not be stopped or removed; `None` when it is gone.
    pub problem: Option<String>,
}

/// Stops and removes every scratch directory in `parent` whose owner is gone; what it found.
pub fn sweep(parent: &Path) -> Vec<Abandoned> {
    let Ok(entries) = fs::read_dir(parent) else { return Vec::new() };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(SCRATCH_PREFIX) {
            continue;
        }
        let dir = entry.path();
        let Some(owner) = fs::read_to_string(dir.join(OWNER_FILE)).ok().as_deref().and_then(Owner::parse) else {
            continue;
        };
        if owner.alive() {
            continue;
        }
        let data_dir = dir.join("data");
        let stopped = stop_server(&data_dir);
        let problem = match &stopped {
            Err(problem) => Some(problem.clone()),
            Ok(_) => match fs::remove_dir_all(&dir) {
                Ok(()) => None,
                Err(error) if error.kind() == io::ErrorKind::NotFound => None,
                Err(error) => Some(format!("cannot remove it: {error}")),
            },
        };
        found.push(Abandoned { dir, owner_pid: owner.pid, stopped_server: stopped.ok().flatten(), problem });
    }
    found
}

/// Sweeps `parent` and logs what it found: a warning per abandoned directory.
pub fn sweep_and_log(parent: &Path) {
    for abandoned in sweep(parent) {
        let server =
            abandoned.stopped_server.map(|pid| format!(", its server (pid {pid}) stopped")).unwrap_or_default();
        match &abandoned.problem {
            None => tracing::warn!(
                "removed the scratch directory {} left by lifeboat process {} that did not end normally{server}",
                abandoned.dir.display(),
                abandoned.owner_pid
            ),
            Some(problem) => tracing::warn!(
                "the scratch directory {} was left by lifeboat process {} that did not end normally, and {problem}; \
                 stop its server with `pg_ctl stop -m immediate -D {}/data` and remove the directory",
                abandoned.dir.display(),
                abandoned.owner_pid,
                abandoned.dir.display()
            ),
        }
    }
}

/// Stops the server running in `data_dir`, if one does: the process id it stopped.
fn stop_server(data_dir: &Path) -> Result<Option<u32>, String> {
    let Some(pid) = fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok())
    else {
        return Ok(None);
    };
    if !process_alive(pid) || !runs_in(pid, data_dir) {
        return Ok(None);
    }
    let Ok(target) = libc::pid_t::try_from(pid) else { return Ok(None) };
    // SAFETY: kill takes a process id and a signal number and touches no memory. SIGQUIT is
    // PostgreSQL's immediate shutdown, what `pg_ctl stop -m immediate` sends.
    if unsafe { libc::kill(target, libc::SIGQUIT) } != 0 {
        return Err(format!("its server (pid {pid}) cannot be signalled: {}", io::Error::last_os_error()));
    }
    let deadline = Instant::now() + SHUTDOWN_WAIT;
    while process_alive(pid) {
        if Instant::now() > deadline {
            return Err(format!("its server (pid {pid}) did not stop within {} s", SHUTDOWN_WAIT.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Some(pid))
}

/// Whether process `pid` runs in `data_dir`: a postmaster changes into its data directory, so
/// this tells it from an unrelated process that reused the id.
fn runs_in(pid: u32, data_dir: &Path) -> bool {
    match (fs::read_link(format!("/proc/{pid}/cwd")), fs::canonicalize(data_dir)) {
        (Ok(cwd), Ok(data_dir)) => cwd == data_dir,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_process_owns_what_it_stamps_and_a_stamp_round_trips() {
        let owner = Owner::current().unwrap();
        assert!(owner.alive());
        assert_eq!(Owner::parse(&format!("{} {}\n", owner.pid, owner.started)), Some(owner));
        assert_eq!(Owner::parse("12 34 56"), None);
        assert_eq!(Owner::parse("twelve 34"), None);
        assert_eq!(Owner::parse(""), None);
    }

    #[test]
    fn a_reused_process_id_is_not_the_owner() {
        let owner = Owner::current().unwrap();
        assert!(!Owner { started: owner.started + 1, ..owner }.alive());
    }

    #[test]
    fn the_sweep_removes_directories_of_gone_owners_and_leaves_the_rest() {
        let parent = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = child.id();
        child.wait().unwrap();
        let current = Owner::current().unwrap();

        let abandoned = parent.path().join("lifeboat-pg-0000000000aa");
        fs::create_dir_all(abandoned.join("data")).unwrap();
        fs::write(abandoned.join(OWNER_FILE), format!("{gone_pid} 1\n")).unwrap();
        let alive = parent.path().join("lifeboat-pg-0000000000bb");
        fs::create_dir(&alive).unwrap();
        stamp(&alive).unwrap();
        let unstamped = parent.path().join("lifeboat-pg-0000000000cc");
        fs::create_dir(&unstamped).unwrap();
        let other = parent.path().join("not-lifeboat");
        fs::create_dir(&other).unwrap();
        fs::write(other.join(OWNER_FILE), format!("{gone_pid} 1\n")).unwrap();

        let found = sweep(parent.path());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].dir, abandoned);
        assert_eq!(found[0].owner_pid, gone_pid);
        assert!(found[0].problem.is_none() && found[0].stopped_server.is_none(), "{found:?}");
        assert!(!abandoned.exists());
        assert!(alive.exists() && unstamped.exists() && other.exists());
        assert_eq!(
            fs::read_to_string(alive.join(OWNER_FILE)).unwrap(),
            format!("{} {}\n", current.pid, current.started)
        );
    }
}
