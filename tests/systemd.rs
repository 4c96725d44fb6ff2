//! systemd and `lifeboat daemon` (issue 13): the unit passes `systemd-analyze verify`, and the
//! daemon speaks `Type=notify` to a fake `NOTIFY_SOCKET` (a datagram socket the test binds): READY
//! only once the configuration is valid and the repository open, STATUS lines, WATCHDOG pings at
//! half of `WATCHDOG_USEC` that stop when the scheduler loop hangs (the debug build's
//! `LIFEBOAT_DEBUG_STALL_SCHEDULER_AFTER`), STOPPING on SIGTERM. No PostgreSQL is needed: the
//! daemon does not connect to the server until a job runs, and none is due here.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::archiving::{LIFEBOAT, without_steering_env};
use support::output::assert_success;

/// A test directory with a configuration whose repository is `repo` (initialised)
/// and whose only job, a yearly backup, is never due during the test.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display();
        let config = format!(
            "[cluster]\nname = \"main\"\nconnection = \"postgresql://127.0.0.1:1/postgres\"\n\
             [repository]\nurl = \"file://{root}/repo\"\nkey_file = \"{root}/repo.key\"\n\
             [backup]\nschedule = {{ full = \"0 0 1 1 *\" }}\n\
             [audit]\npath = \"{root}/audit.jsonl\"\n[daemon]\nstate_dir = \"{root}/state\"\n"
        );
        std::fs::write(dir.path().join("lifeboat.toml"), config).unwrap();
        let site = Site { dir };
        assert_success(&site.command(&["init"]).output().unwrap());
        site
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(LIFEBOAT);
        command.arg("--config").arg(self.dir.path().join("lifeboat.toml")).args(args);
        without_steering_env(&mut command);
        command.env_remove("NOTIFY_SOCKET").env_remove("WATCHDOG_USEC").env_remove("WATCHDOG_PID");
        command
    }

    /// A bound notify socket in the test directory.
    fn notify_socket(&self) -> (UnixDatagram, PathBuf) {
        let path = self.dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        (socket, path)
    }

    /// `lifeboat daemon` telling `socket`, with a watchdog of `watchdog` and more `env`.
    fn daemon(&self, socket: &Path, watchdog: Duration, env: &[(&str, &str)]) -> Started {
        let mut command = self.command(&["daemon"]);
        command
            .env("NOTIFY_SOCKET", socket)
            .env("WATCHDOG_USEC", watchdog.as_micros().to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Started(command.spawn().unwrap())
    }
}

/// A daemon a test started: killed when the test ends (a failed assertion included) before it
/// exited.
struct Started(Child);

impl Started {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// One received datagram: when it arrived and its lines.
#[derive(Debug)]
struct Message {
    at: Instant,
    lines: Vec<String>,
}

/// Everything `socket` receives within `during`.
fn receive(socket: &UnixDatagram, during: Duration) -> Vec<Message> {
    let until = Instant::now() + during;
    let mut messages = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < until {
        if let Ok(length) = socket.recv(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..length]).into_owned();
            messages.push(Message { at: Instant::now(), lines: text.lines().map(str::to_owned).collect() });
        }
    }
    messages
}

fn has(messages: &[Message], line: &str) -> bool {
    messages.iter().any(|message| message.lines.iter().any(|each| each == line))
}

fn pings(messages: &[Message]) -> Vec<Instant> {
    messages.iter().filter(|message| message.lines.iter().any(|line| line == "WATCHDOG=1")).map(|m| m.at).collect()
}

fn terminate(child: &Started) {
    nix_kill(child.id(), libc::SIGTERM);
}

fn nix_kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) on the child this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
}

/// Waits up to `limit` for `child` to exit; its status and stderr.
fn wait_for_exit(mut started: Started, limit: Duration) -> (std::process::ExitStatus, String) {
    let child = &mut started.0;
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            return (status, stderr);
        }
        if Instant::now() > until {
            child.kill().unwrap();
            panic!("the daemon did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        let update = Command::new("apt-get").args(["update", "-qq"]).status().unwrap();
        assert!(update.success(), "apt-get update");
        let install = Command::new("apt-get").args(["install", "-y", "-qq", "systemd"]).status().unwrap();
        assert!(install.success(), "apt-get install systemd (for systemd-analyze)");
    }
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/lifeboat.service")).unwrap();
    for directive in [
        "Type=notify",
        "WatchdogSec=",
        "ExecStartPre=/usr/bin/lifeboat config check",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=postgres",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/lifeboat /var/log/lifeboat",
        "PrivateTmp=true",
        "NoNewPrivileges=true",
        "ProtectHome=true",
        "RestrictAddressFamilies=",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
        "Restart=on-failure",
    ] {
        assert!(unit.lines().any(|line| line.starts_with(directive)), "the unit has {directive}");
    }
    // The unit names the packaged binary; verified here with the built one in its place (and
    // without the man page, which the package installs).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("lifeboat.service");
    std::fs::write(&copy, unit.replace("/usr/bin/lifeboat", LIFEBOAT)).unwrap();
    let output = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&copy).output().unwrap();
    let complaints = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && complaints.trim().is_empty(), "systemd-analyze verify: {complaints}");
}

#[test]
fn ready_status_and_watchdog_pings_reach_the_notify_socket_and_stopping_on_sigterm() {
    let site = Site::new();
    let (socket, path) = site.notify_socket();
    let child = site.daemon(&path, Duration::from_secs(2), &[]);
    let messages = receive(&socket, Duration::from_secs(5));
    assert!(has(&messages, "READY=1"), "{messages:?}");
    let status =
        messages.iter().flat_map(|m| &m.lines).find(|line| line.starts_with("STATUS=")).expect("a STATUS line");
    assert!(status.contains("idle") && status.contains("next: backup at"), "{status}");
    // Every second (half of 2 s), from READY on.
    let pings = pings(&messages);
    assert!((3..=7).contains(&pings.len()), "{} pings in 5 s: {messages:?}", pings.len());
    for pair in pings.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap <= Duration::from_millis(1500), "pings {gap:?} apart");
    }
    terminate(&child);
    let stopping = receive(&socket, Duration::from_secs(2));
    assert!(has(&stopping, "STOPPING=1"), "{stopping:?}");
    let (status, stderr) = wait_for_exit(child, Duration::from_secs(10));
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("lifeboat daemon stopped"), "{stderr}");
}

#[test]
fn the_pings_stop_when_the_scheduler_loop_hangs() {
    let site = Site::new();
    let (socket, path) = site.notify_socket();
    let child = site.daemon(&path, Duration::from_secs(1), &[("LIFEBOAT_DEBUG_STALL_SCHEDULER_AFTER", "4")]);
    let messages = receive(&socket, Duration::from_secs(5));
    let pid = child.id();
    assert!(has(&messages, "READY=1"), "{messages:?}");
    let pings = pings(&messages);
    assert!(pings.len() >= 2, "pings before the hang: {messages:?}");
    // Pinging every 0.5 s, the loop goes round at least twice a second: by now it has hung for
    // over 2 s, so the last ping is at least that old (systemd would have restarted it).
    let last = *pings.last().unwrap();
    assert!(last.elapsed() >= Duration::from_secs(2), "a ping {:?} ago: {messages:?}", last.elapsed());
    nix_kill(pid, libc::SIGKILL);
    let (_, stderr) = wait_for_exit(child, Duration::from_secs(10));
    assert!(stderr.contains("the scheduler loop hangs now"), "{stderr}");
}

#[test]
fn no_ready_when_the_repository_cannot_be_opened() {
    let site = Site::new();
    std::fs::remove_dir_all(site.dir.path().join("repo")).unwrap();
    let (socket, path) = site.notify_socket();
    let child = site.daemon(&path, Duration::from_secs(2), &[]);
    let (status, stderr) = wait_for_exit(child, Duration::from_secs(30));
    assert!(!status.success(), "the daemon exits non-zero: {stderr}");
    assert!(stderr.contains("lifeboat init"), "the error says what to do: {stderr}");
    let messages = receive(&socket, Duration::from_millis(300));
    assert!(!has(&messages, "READY=1"), "{messages:?}");
}
