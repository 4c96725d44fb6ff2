//! What the daemon tells people and monitors (issue 13, items 3, 5 and 6), on a real cluster
//! archiving with `wal-push` into a local repository, with a base backup taken and verified:
//!
//! - `lifeboat status --json` asks the daemon at `[daemon] listen` when one answers; without a
//!   daemon it reads the newest backup, the newest verified
//!   backup (with its restore time) and the archiver's counts as the server states them;
//! - the HTTP server, started in process on a `DaemonState` the watcher fills: `/metrics` parses
//!   and carries `lifeboat_last_verified_backup_age_seconds`, `/status` says what `status --json`
//!   says of the repository, `/healthz` is 200, then 503 naming the cause when the repository's
//!   directory is moved away, then 200 again when it is back; an `archive_command` that fails
//!   shows as a failing archiver in `/metrics` and in `lifeboat status` (exit status 1);
//! - the status page rendered by headless Chromium shows the timeline: the verified backup's and
//!   the WAL bars' colours are in the picture, and the DOM holds the SVG.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use lifeboat::daemon::state::DaemonState;
use lifeboat::daemon::{http, page, watch};
use lifeboat::ops::event::Metrics;
use lifeboat::report::status::{DaemonInfo, Status};
use support::archiving::{Options, Setup, archive_current_segment, execute, lifeboat_command, scalar};
use support::http::{get, parse_exposition};
use support::output::{assert_success, describe};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A cluster whose newest base backup was verified by restore: the setup and the backup's id.
async fn verified_backup() -> (Setup, String) {
    verified_backup_with(Options::restorable()).await
}

async fn verified_backup_with(options: Options) -> (Setup, String) {
    let setup = Setup::verifying(options, "").await;
    let taken = setup.json(&["backup", "--verify", "--json"]);
    let id = taken["id"].as_str().unwrap().to_owned();
    assert_eq!(taken["verification"]["passed"], true, "{taken}");
    (setup, id)
}

/// A daemon's state as the scheduler would start it, with the watcher running on it.
struct InProcess {
    state: Arc<DaemonState>,
    poke: Arc<Notify>,
    shutdown: CancellationToken,
    address: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Kept, as the daemon keeps it to send reloaded configurations.
    _config: tokio::sync::watch::Sender<lifeboat::daemon::Current>,
}

impl InProcess {
    async fn start(setup: &Setup) -> InProcess {
        let config = setup.config();
        let now = Utc::now();
        let state = Arc::new(DaemonState::new(Status {
            source: "daemon".into(),
            cluster: "main".into(),
            host: "test".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            daemon: Some(DaemonInfo {
                pid: std::process::id(),
                started_at: now,
                config_file: setup.config_path().display().to_string(),
                config_loaded_at: now,
                reload_error: None,
                scheduler_alive_at: now,
                shutting_down: false,
            }),
            jobs: watch::configured_jobs(&config, now),
            ..Status::default()
        }));
        let poke = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let repository = Arc::new(lifeboat::ops::open::open_repository(&config).await.unwrap());
        let current = lifeboat::daemon::Current { config: Arc::new(config), repository };
        let (config_tx, config_rx) = tokio::sync::watch::channel(current);
        let watcher = tokio::spawn(watch::run(config_rx, state.clone(), poke.clone(), shutdown.clone()));
        let listener = http::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = {
            let (state, shutdown) = (state.clone(), shutdown.clone());
            tokio::spawn(async move {
                http::serve(listener, state, Arc::new(Metrics::default()), shutdown).await.unwrap();
            })
        };
        let in_process = InProcess { state, poke, shutdown, address, tasks: vec![watcher, server], _config: config_tx };
        in_process.wait_for("the watcher's first look", |status| status.repository.is_some()).await;
        in_process
    }

    /// Keeps the scheduler's heartbeat fresh, as the scheduler loop does.
    fn heartbeat(&self) {
        self.state.scheduler_alive(Utc::now());
    }

    async fn wait_for(&self, what: &str, done: impl Fn(&Status) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            self.heartbeat();
            if done(&self.state.snapshot()) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.state.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(30), task).await.expect("stops on shutdown").unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_without_a_daemon_and_over_http_agree_and_health_follows_the_repository() {
    let (setup, id) = verified_backup().await;

    // Without a daemon (no [daemon] listen): read directly.
    let output = setup.run(&["status", "--json"]);
    assert_success(&output);
    let direct: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(direct["schema"], "status/1");
    assert_eq!(direct["source"], "repository");
    let repository = &direct["repository"];
    assert_eq!(repository["reachable"], true, "{direct}");
    assert_eq!(repository["newest_backup"]["id"], id.as_str(), "{direct}");
    assert_eq!(repository["newest_verified_backup"]["id"], id.as_str(), "{direct}");
    assert_eq!(repository["newest_verified_backup"]["verified"], true);
    let restore_seconds = repository["newest_verified_backup"]["restore_seconds"].as_f64().unwrap();
    assert!(restore_seconds > 0.0 && restore_seconds < 600.0, "{restore_seconds}");
    assert!(repository["bytes"].as_u64().unwrap() > 0);
    assert!(!repository["timeline"]["wal_spans"].as_array().unwrap().is_empty(), "{direct}");
    let archived_wal = repository["last_archived_wal"].as_str().unwrap();
    let mut conn = setup.connect().await;
    let archived: i64 = scalar(&mut conn, "SELECT archived_count::text FROM pg_stat_archiver").await.parse().unwrap();
    let failed: i64 = scalar(&mut conn, "SELECT failed_count::text FROM pg_stat_archiver").await.parse().unwrap();
    let last: String = scalar(&mut conn, "SELECT last_archived_wal::text FROM pg_stat_archiver").await;
    assert_eq!(direct["archiver"]["archived_count"], archived, "{direct}");
    assert_eq!(direct["archiver"]["failed_count"], failed, "{direct}");
    assert_eq!(direct["archiver"]["last_archived_wal"], last.as_str(), "{direct}");
    assert_eq!(direct["archiver"]["ready_files"], 0, "{direct}");
    assert!(last.starts_with(archived_wal) || archived_wal <= last.as_str(), "{archived_wal} vs {last}");

    let text = setup.run(&["status"]);
    assert_success(&text);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains(&format!("newest verified backup: {id} (full)")), "{text}");
    assert!(text.contains("all is well"), "{text}");

    // The daemon's side, in process.
    let daemon = InProcess::start(&setup).await;
    let (code, body) = get(daemon.address, "/healthz").await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));

    let (code, metrics) = get(daemon.address, "/metrics").await;
    assert_eq!(code, 200);
    let exposition = parse_exposition(&metrics);
    let age = exposition.value("lifeboat_last_verified_backup_age_seconds", &[]).expect(&metrics);
    assert!((0.0..600.0).contains(&age), "the backup was taken a moment ago, not {age} s: {metrics}");
    assert_eq!(exposition.families["lifeboat_last_verified_backup_age_seconds"].0, "gauge");
    assert_eq!(exposition.value("lifeboat_repository_up", &[]), Some(1.0));
    assert_eq!(exposition.value("lifeboat_archiver_failed_total", &[]), Some(failed as f64));
    assert_eq!(exposition.value("lifeboat_healthy", &[]), Some(1.0));
    let rto = exposition.value("lifeboat_last_verified_backup_restore_seconds", &[]).unwrap();
    assert!((rto - restore_seconds).abs() < 1e-6, "{rto} vs {restore_seconds}");

    let (code, served) = get(daemon.address, "/status").await;
    assert_eq!(code, 200);
    let served: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert_eq!(served["schema"], "status/1");
    assert_eq!(served["source"], "daemon");
    for fact in ["newest_backup", "newest_verified_backup", "newest_dump", "last_archived_wal", "bytes", "timeline"] {
        assert_eq!(served["repository"][fact], direct["repository"][fact], "{fact} differs:\n{served}\n{direct}");
    }

    // `lifeboat status` with [daemon] listen asks the daemon.
    let with_listen = setup.dir.path().join("with-listen.toml");
    let config_text = std::fs::read_to_string(setup.config_path()).unwrap();
    std::fs::write(&with_listen, format!("{config_text}\n[daemon]\nlisten = \"{}\"\n", daemon.address)).unwrap();
    let output = lifeboat_command(&with_listen, &["status", "--json"])
        .env("LIFEBOAT_STATE_DIR", setup.state_dir())
        .output()
        .unwrap();
    assert_success(&output);
    let asked: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(asked["source"], "daemon", "{asked}");
    assert_eq!(asked["daemon"]["pid"], std::process::id(), "{asked}");
    assert_eq!(asked["repository"]["newest_verified_backup"], direct["repository"]["newest_verified_backup"]);

    // The repository goes away: unhealthy, naming why; it comes back: healthy.
    let moved = setup.dir.path().join("repo-moved-away");
    std::fs::rename(setup.repo_dir(), &moved).unwrap();
    daemon.poke.notify_one();
    daemon.wait_for("the repository to be unreachable", |status| !status.repository.as_ref().unwrap().reachable).await;
    let (code, body) = get(daemon.address, "/healthz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("the repository cannot be read") && body.contains("lifeboat.repo is gone"), "{body}");
    let (_, metrics) = get(daemon.address, "/metrics").await;
    let exposition = parse_exposition(&metrics);
    assert_eq!(exposition.value("lifeboat_repository_up", &[]), Some(0.0));
    // What was known stays, so the age keeps growing for the pager.
    let age = exposition.value("lifeboat_last_verified_backup_age_seconds", &[]).unwrap();
    assert!(age.is_finite(), "{age}: {metrics}\n{:#?}", daemon.state.snapshot().repository);

    let output = setup.run(&["status"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("the repository cannot be read"), "{}", describe(&output));

    std::fs::rename(&moved, setup.repo_dir()).unwrap();
    daemon.poke.notify_one();
    daemon.wait_for("the repository to be back", |status| status.repository.as_ref().unwrap().reachable).await;
    assert_eq!(get(daemon.address, "/healthz").await.0, 200);

    // archive_command starts failing: the archiver is reported failing, and `status` exits 1.
    execute(&mut conn, "ALTER SYSTEM SET archive_command = 'false'").await;
    scalar(&mut conn, "SELECT pg_reload_conf()::text").await;
    scalar(&mut conn, "SELECT txid_current()::text").await;
    scalar(&mut conn, "SELECT pg_walfile_name(pg_switch_wal())").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while scalar(&mut conn, "SELECT failed_count::text FROM pg_stat_archiver").await == failed.to_string() {
        assert!(tokio::time::Instant::now() < deadline, "archive_command = 'false' never failed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    daemon.poke.notify_one();
    daemon.wait_for("the archiver to be seen failing", |status| status.archiver.as_ref().unwrap().failing()).await;
    let (_, metrics) = get(daemon.address, "/metrics").await;
    let exposition = parse_exposition(&metrics);
    assert_eq!(exposition.value("lifeboat_archiver_failing", &[]), Some(1.0), "{metrics}");
    assert!(exposition.value("lifeboat_archiver_failed_total", &[]).unwrap() > failed as f64, "{metrics}");
    let output = setup.run(&["status", "--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let failing: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(failing["archiver"]["failed_count"].as_i64().unwrap() > failed, "{failing}");
    assert!(failing["archiver"]["last_failed_wal"].is_string(), "{failing}");
    let output = setup.run(&["status"]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("archiver is failing"), "{}", describe(&output));
    execute(&mut conn, "ALTER SYSTEM RESET archive_command").await;
    scalar(&mut conn, "SELECT pg_reload_conf()::text").await;
    daemon.stop().await;
}

/// The colour `#rrggbb` as bytes.
fn rgb(hex: &str) -> [u8; 3] {
    let value = u32::from_str_radix(hex.trim_start_matches('#'), 16).unwrap();
    [(value >> 16) as u8, (value >> 8) as u8, value as u8]
}

/// The rows of the screenshot at `path` where `colour` fills a solid 5×5 block: drawn shapes (a
/// mark, a bar), not the anti-aliased strokes of text in that colour.
fn solid_rows(path: &Path, colour: [u8; 3]) -> Vec<usize> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buffer).unwrap();
    let (width, height, channels) = (info.width as usize, info.height as usize, info.color_type.samples());
    let matches = |x: usize, y: usize| {
        let at = (y * width + x) * channels;
        buffer[at..at + 3] == colour
    };
    let mut rows = Vec::new();
    for y in 2..height.saturating_sub(2) {
        if (2..width.saturating_sub(2)).any(|x| (y - 2..=y + 2).all(|yy| (x - 2..=x + 2).all(|xx| matches(xx, yy)))) {
            rows.push(y);
        }
    }
    rows
}

fn chromium(args: &[&str]) -> std::process::Output {
    let output = std::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
        .args(args)
        .output()
        .expect("Debian's chromium (scripts/test installs it)");
    assert!(output.status.success(), "{}", describe(&output));
    output
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_shows_the_timeline_in_headless_chromium() {
    let copy_dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "schedule = {{ full = \"0 2 * * SUN\", dump = \"30 3 * * *\" }}\n\n[[copies]]\nname = \"nearby\"\n\
         url = \"file://{}/copy\"\nschedule = \"0 6 * * *\"\n",
        copy_dir.path().display()
    );
    let (setup, id) = verified_backup_with(Options::restorable().extra(&extra)).await;
    assert_success(&setup.run(&["init", "--copy", "nearby"]));
    assert_success(&setup.run(&["copy"]));
    // More WAL and a dump after the copy: the copy lags behind.
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE later (id int)").await;
    archive_current_segment(&mut conn).await;
    assert_success(&setup.run(&["dump"]));
    let daemon = InProcess::start(&setup).await;
    let url = format!("http://{}/", daemon.address);

    let (code, html) = get(daemon.address, "/").await;
    assert_eq!(code, 200);
    assert!(html.contains(&id) && html.contains("<svg"), "{html}");
    assert!(html.contains("<td>copy:nearby</td>") && html.contains("<td>0 2 * * SUN</td>"), "{html}");
    let status = daemon.state.snapshot();
    let copy = &status.repository.as_ref().unwrap().copies[0];
    assert!(copy.reachable && copy.wal_missing >= 1 && copy.backups_missing == 1 && copy.lag_seconds > 0.0, "{copy:?}");

    let dom = chromium(&["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("<svg") && dom.contains(&format!("fill=\"{}\"", page::VERIFIED_FILL)), "{dom}");

    let shot = setup.dir.path().join("status-page.png");
    let heartbeat = {
        let state = daemon.state.clone();
        tokio::spawn(async move {
            loop {
                state.scheduler_alive(Utc::now());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let screenshot_arg = format!("--screenshot={}", shot.display());
    tokio::task::spawn_blocking({
        let url = url.clone();
        move || chromium(&[&screenshot_arg, "--window-size=1200,900", &url])
    })
    .await
    .unwrap();
    heartbeat.abort();
    // For a person to look at (the closing note describes it).
    if let Ok(dir) = std::env::var("LIFEBOAT_TEST_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, Path::new(&dir).join("status-page.png")).unwrap();
    }
    // The timeline is drawn in the first screenful: the verified backup's circle (green), and
    // below it the WAL bar (blue), each a solid shape of its colour.
    let verified = solid_rows(&shot, rgb(page::VERIFIED_FILL));
    let wal = solid_rows(&shot, rgb(page::WAL_FILL));
    assert!(!verified.is_empty(), "no verified backup's mark in the picture");
    assert!(!wal.is_empty(), "no WAL bar in the picture");
    let (verified_top, wal_top) = (verified[0], wal[0]);
    assert!(
        verified_top < 600 && wal_top < 600,
        "the timeline is not in the first screenful: {verified_top}, {wal_top}"
    );
    assert!(verified_top < wal_top, "the WAL row ({wal_top}) is drawn below the backups' row ({verified_top})");
    assert!(verified.len() >= 8 && wal.len() >= 10, "marks too thin: {} and {} rows", verified.len(), wal.len());
    // The copy's row, below the WAL, marks the backup it holds.
    let copy = solid_rows(&shot, rgb(page::COPY_FILL));
    assert!(copy.first().is_some_and(|row| *row > wal_top && *row < 600), "no copy row below the WAL: {copy:?}");
    daemon.stop().await;
}
