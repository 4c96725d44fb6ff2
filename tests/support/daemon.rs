//! A `lifeboat daemon` started by a test with the setup's configuration: its log collected as it
//! comes, waits on what it logged, signals, and a stop that checks it exits cleanly. Dropping it
//! kills a daemon still running, so a failing test leaves nothing behind.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::archiving::Setup;

/// A running `lifeboat daemon` and what it has logged so far.
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    pub fn start(setup: &Setup) -> Daemon {
        let mut child = setup.command(&["daemon"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let writer = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = writer.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let daemon = Daemon { child, log };
        daemon.wait_for("lifeboat daemon ready", 1, Duration::from_secs(30));
        daemon
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// Waits until the log holds `needle` `times` times.
    pub fn wait_for(&self, needle: &str, times: usize, limit: Duration) {
        self.wait_until(limit, &format!("{times} x {needle:?}"), || self.count(needle) >= times);
    }

    pub fn wait_until(&self, limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
        let until = Instant::now() + limit;
        while !done() {
            assert!(Instant::now() < until, "waited {limit:?} for {what}; the daemon logged:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the child this test started.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, signal) }, 0);
    }

    /// SIGTERM, then waits up to `limit` for the exit: its status, how long it took, the log.
    pub fn terminate(mut self, limit: Duration) -> (ExitStatus, Duration, String) {
        let sent = Instant::now();
        self.signal(libc::SIGTERM);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(200));
                return (status, sent.elapsed(), self.log());
            }
            if sent.elapsed() > limit {
                self.child.kill().unwrap();
                panic!("the daemon did not exit within {limit:?} of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(self) -> String {
        let (status, _, log) = self.terminate(Duration::from_secs(60));
        assert!(status.success(), "the daemon exits 0 on SIGTERM ({status}):\n{log}");
        assert!(log.contains("lifeboat daemon stopped"), "{log}");
        log
    }
}

/// A test that fails before stopping its daemon must not leave it running.
impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `[backup]` keys (the setup's configuration continues its `[backup]` table with them), then a
/// `[daemon]` table keeping its state in `aux`, with `daemon` keys, then `more` tables.
pub fn daemon_config(backup: &str, aux: &Path, daemon: &str, more: &str) -> String {
    format!("{backup}\n\n[daemon]\nstate_dir = \"{}\"\n{daemon}\n{more}\n", aux.join("state").display())
}
