//! WAL archiving through `lifeboat daemon` (issue 16): a real cluster whose `archive_command` is
//! the built binary's `wal-push -v`, and a real daemon for the same configuration listening on
//! `<state_dir>/wal-push.sock`. What is observed is what the processes say and store: wal-push's
//! stderr in the server log (at -v it says who stored the segment, and whether the daemon had
//! stored it ahead), the audit trail (the pid of the process that pushed), and the repository.
//!
//! The daemon runs as the server's OS user (the tests run as root, the server as `postgres`), as
//! it would on a database host with a local repository that wal-push also writes alone.

mod support;

use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lifeboat::postgres::binaries::PgBinaries;
use lifeboat::postgres::cluster::{LocalCluster, LocalClusterOptions};
use sqlx::{Connection, PgConnection};
use support::output::{assert_success, describe};

const LIFEBOAT: &str = env!("CARGO_BIN_EXE_lifeboat");
const TIMEOUT: Duration = Duration::from_secs(180);
const PASSPHRASE: &str = "correct horse battery staple, async edition";

/// A test directory: configuration, repository, daemon state, audit log.
struct Archive {
    dir: tempfile::TempDir,
}

impl Archive {
    /// A local repository opened with a passphrase (the secret that must never be printed).
    fn new(push_ahead: u32) -> Archive {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        let config = format!(
            "[cluster]\nname = \"main\"\n\n[wal]\npush_ahead = {push_ahead}\n\n[daemon]\nlisten = false\n\
             state_dir = \"{root}/state\"\n\n[audit]\npath = \"{root}/audit.jsonl\"\n\n[repository]\n\
             url = \"file://{root}/repo\"\npassphrase = \"{PASSPHRASE}\"\n"
        );
        std::fs::write(dir.path().join("lifeboat.toml"), config).unwrap();
        let archive = Archive { dir };
        assert_success(&archive.command(&["init"]).output().unwrap());
        archive
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        self.command_with(&self.path("lifeboat.toml"), args)
    }

    fn command_with(&self, config: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(LIFEBOAT);
        command.current_dir(self.dir.path()).arg("--config").arg(config).args(args);
        for (variable, _) in std::env::vars_os() {
            let name = variable.to_string_lossy();
            if name.starts_with("LIFEBOAT_") || name.starts_with("AWS_") {
                command.env_remove(&variable);
            }
        }
        command
    }

    fn archive_command(&self) -> String {
        format!("{LIFEBOAT} -v --config {} wal-push %p", self.path("lifeboat.toml").display())
    }

    fn stored(&self, name: &str) -> PathBuf {
        self.path("repo").join(format!("clusters/main/wal/{}/{name}", &name[..8]))
    }

    /// The pids of the processes whose wal-push of `name` finished with `result`, per the audit log.
    fn pushed_by(&self, name: &str, result: &str) -> Vec<u32> {
        let log = std::fs::read_to_string(self.path("audit.jsonl")).unwrap_or_default();
        log.lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .filter(|record| {
                record["operation"] == "wal-push"
                    && record["event"] == "finished"
                    && record["result"] == result
                    && record["arguments"]["path"].as_str().is_some_and(|path| path.ends_with(name))
            })
            .map(|record| record["pid"].as_u64().unwrap() as u32)
            .collect()
    }
}

/// `lifeboat daemon`, run as the owner of the data directory.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(archive: &Archive, cluster: &LocalCluster) -> Daemon {
        let owner = std::fs::metadata(cluster.data_dir()).unwrap();
        let log = archive.path("daemon.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut command = archive.command(&["daemon"]);
        command.stdout(Stdio::null()).stderr(file).uid(owner.uid()).gid(owner.gid());
        let child = command.spawn().unwrap();
        let daemon = Daemon { child, log };
        daemon.wait_for("taking WAL from wal-push");
        daemon
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.log().contains(text) {
            assert!(Instant::now() < deadline, "the daemon did not log {text:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` (`STOP`, `TERM`, ...) with kill(1).
    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args(["-s", signal, &self.pid().to_string()]).status().unwrap();
        assert!(status.success(), "kill -s {signal} {}", self.pid());
    }

    /// SIGTERM, and the exit status must be 0.
    fn stop(mut self) -> String {
        self.signal("TERM");
        let status = self.child.wait().unwrap();
        let log = self.log();
        assert!(status.success(), "the daemon exits 0 on SIGTERM ({status}):\n{log}");
        log
    }

    fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running cluster with archive_mode on and archive_command `command`; `dir` goes to its OS user.
async fn cluster(command: &str, dir: &Path) -> (LocalCluster, PgConnection) {
    let binaries = PgBinaries::find(None).expect("PostgreSQL binaries (scripts/test installs them)");
    let options = LocalClusterOptions::default()
        .setting("wal_level", "replica")
        .setting("archive_mode", "on")
        .setting("archive_command", command);
    let mut cluster = LocalCluster::init(&binaries, options).await.expect("init a cluster");
    cluster.give_to_server_user(dir).unwrap();
    cluster.start().await.expect("start the cluster");
    let conn = PgConnection::connect_with(&cluster.connect_options()).await.unwrap();
    (cluster, conn)
}

async fn set_archive_command(conn: &mut PgConnection, command: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER SYSTEM SET archive_command = '{command}'")))
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("SELECT pg_reload_conf()").execute(&mut *conn).await.unwrap();
}

/// Writes `count` segments (each ended by a switch); returns their names, oldest first.
async fn write_segments(conn: &mut PgConnection, count: usize) -> Vec<String> {
    sqlx::query("CREATE TABLE IF NOT EXISTS filler (id bigint, payload text)").execute(&mut *conn).await.unwrap();
    let mut names = Vec::new();
    for _ in 0..count {
        sqlx::query("INSERT INTO filler SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 5000) g")
            .execute(&mut *conn)
            .await
            .unwrap();
        names.push(sqlx::query_scalar("SELECT pg_walfile_name(pg_switch_wal())").fetch_one(&mut *conn).await.unwrap());
    }
    names
}

fn server_log(cluster: &LocalCluster) -> String {
    std::fs::read_to_string(cluster.log_file()).unwrap_or_default()
}

/// Waits until the archiver reports `name` archived.
async fn wait_archived(conn: &mut PgConnection, cluster: &LocalCluster, name: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let archived: Option<String> =
            sqlx::query_scalar("SELECT last_archived_wal FROM pg_stat_archiver").fetch_one(&mut *conn).await.unwrap();
        if archived.as_deref().is_some_and(|archived| archived >= name) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} not archived (last {archived:?}); server log:\n{}",
            server_log(cluster)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_stores_a_backlog_ahead_of_the_archiver_and_answers_every_wal_push() {
    let archive = Archive::new(4);
    // Nothing is archived until the daemon runs: a backlog of ready segments builds up.
    let (cluster, mut conn) = cluster("", archive.dir.path()).await;
    let names = write_segments(&mut conn, 8).await;
    let daemon = Daemon::start(&archive, &cluster);
    set_archive_command(&mut conn, &archive.archive_command()).await;
    wait_archived(&mut conn, &cluster, names.last().unwrap()).await;

    let log = server_log(&cluster);
    assert_eq!(count(&log, "storing it here"), 0, "every wal-push went through the daemon:\n{log}");
    for name in &names {
        assert!(archive.stored(name).is_file(), "{name} is not in the repository");
        assert!(
            log.contains(&format!("pg_wal/{name}: stored")),
            "no wal-push of {name} answered by the daemon:\n{log}"
        );
        // Pushed once, by the daemon (not by a wal-push process of its own).
        assert_eq!(archive.pushed_by(name, "succeeded"), [daemon.pid()], "{name}");
    }
    // The archiver asks for the oldest first; the daemon started the next ones before it asked.
    let ahead = count(&log, "stored ahead by lifeboat daemon");
    assert!(ahead >= names.len() - 2, "only {ahead} of {} segments were stored ahead:\n{log}", names.len());
    let failed: i64 =
        sqlx::query_scalar("SELECT failed_count FROM pg_stat_archiver").fetch_one(&mut conn).await.unwrap();
    assert_eq!(failed, 0, "{log}");

    let daemon_log = daemon.stop();
    assert!(!archive.path("state/wal-push.sock").exists(), "the daemon removes its socket when it stops");
    for text in [&log, &daemon_log] {
        assert!(!text.contains(PASSPHRASE), "the passphrase was printed:\n{text}");
    }
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn wal_push_stores_alone_when_the_daemon_dies_before_or_during_its_request() {
    let archive = Archive::new(0);
    let (cluster, mut conn) = cluster(&archive.archive_command(), archive.dir.path()).await;
    let first = write_segments(&mut conn, 1).await;
    wait_archived(&mut conn, &cluster, &first[0]).await;

    // A copy of the archived segment, pushed again below: identical content is success.
    let copy = archive.path("pg_wal").join(&first[0]);
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(cluster.data_dir().join("pg_wal").join(&first[0]), &copy).unwrap();

    // Killed while it has a request: stopped first, so it accepts the connection and never answers.
    let daemon = Daemon::start(&archive, &cluster);
    let pid = daemon.pid();
    daemon.signal("STOP");
    let push = archive
        .command(&["-v", "wal-push", copy.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let log = daemon.kill();
    let output: Output = push.wait_with_output().unwrap();
    assert_success(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The request reached the daemon, which went away without answering (EOF or a reset).
    assert!(
        stderr.contains(&format!("from the daemon (pid {pid})"))
            || stderr.contains(&format!("daemon (pid {pid}) closed")),
        "{}",
        describe(&output)
    );
    assert!(stderr.contains("storing it here"), "{}", describe(&output));
    assert!(stderr.contains("identical content"), "{}", describe(&output));
    assert!(!log.contains(PASSPHRASE));

    // With the daemon gone (its socket left behind), the archiver goes on through wal-push alone.
    assert!(archive.path("state/wal-push.sock").exists(), "a killed daemon leaves its socket");
    let names = write_segments(&mut conn, 3).await;
    wait_archived(&mut conn, &cluster, names.last().unwrap()).await;
    for name in &names {
        assert!(archive.stored(name).is_file(), "{name} is not in the repository");
        let pids = archive.pushed_by(name, "succeeded");
        assert!(pids.len() == 1 && pids[0] != pid, "{name} was pushed by {pids:?}, not by a wal-push alone");
    }
    let log = server_log(&cluster);
    assert!(log.contains("storing it here"), "{log}");
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_that_fails_in_the_daemon_fails_wal_push_and_postgres_retries_it() {
    let archive = Archive::new(4);
    let (cluster, mut conn) = cluster(&archive.archive_command(), archive.dir.path()).await;
    let daemon = Daemon::start(&archive, &cluster);
    let first = write_segments(&mut conn, 1).await;
    wait_archived(&mut conn, &cluster, &first[0]).await;

    // The segment being written next is already "archived" with other content: a stored object
    // of another segment, copied under its name. The daemon's push refuses to replace it.
    // The segment after the one just archived (timeline 1, far from a wrap of the low part).
    let low = u32::from_str_radix(&first[0][16..], 16).unwrap();
    let next = format!("{}{:08X}", &first[0][..16], low + 1);
    let planted = archive.stored(&next);
    std::fs::copy(archive.stored(&first[0]), &planted).unwrap();
    let before = std::fs::read(&planted).unwrap();
    let names = write_segments(&mut conn, 1).await;
    assert_eq!(names[0], next);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (failed, last_failed): (i64, Option<String>) =
            sqlx::query_as("SELECT failed_count, last_failed_wal FROM pg_stat_archiver")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        if failed >= 2 && last_failed.as_deref() == Some(next.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "wal-push of {next} did not fail; server log:\n{}", server_log(&cluster));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = server_log(&cluster);
    assert!(log.contains("reported by lifeboat daemon"), "the daemon's error reaches PostgreSQL's log:\n{log}");
    assert!(log.contains(&next), "{log}");
    assert_eq!(std::fs::read(&planted).unwrap(), before, "the archived object was changed");
    assert!(archive.pushed_by(&next, "succeeded").is_empty());

    // Once the obstacle is gone, PostgreSQL's next retry goes through the daemon.
    std::fs::remove_file(&planted).unwrap();
    // After three failures in a row the archiver waits up to a minute; a reload wakes it.
    sqlx::query("SELECT pg_reload_conf()").execute(&mut conn).await.unwrap();
    wait_archived(&mut conn, &cluster, &next).await;
    assert_eq!(archive.pushed_by(&next, "succeeded"), [daemon.pid()]);
    let daemon_log = daemon.stop();
    for text in [&server_log(&cluster), &daemon_log] {
        assert!(!text.contains(PASSPHRASE), "the passphrase was printed:\n{text}");
    }
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_for_another_cluster_is_not_used() {
    let archive = Archive::new(4);
    let (cluster, mut conn) = cluster("", archive.dir.path()).await;
    let daemon = Daemon::start(&archive, &cluster);
    // Same state_dir and repository, another cluster name: the daemon refuses, wal-push stores alone.
    let other = archive.path("other.toml");
    let text = std::fs::read_to_string(archive.path("lifeboat.toml")).unwrap();
    std::fs::write(&other, text.replace("name = \"main\"", "name = \"other\"")).unwrap();
    let names = write_segments(&mut conn, 1).await;
    let segment = cluster.data_dir().join("pg_wal").join(&names[0]);
    let output = archive.command_with(&other, &["-v", "wal-push", segment.to_str().unwrap()]).output().unwrap();
    assert_success(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not archive for this configuration"), "{}", describe(&output));
    assert!(archive.path("repo").join(format!("clusters/other/wal/{}/{}", &names[0][..8], names[0])).is_file());
    assert!(!archive.stored(&names[0]).exists(), "the daemon of cluster main stored nothing");
    daemon.stop();
    conn.close().await.unwrap();
}
