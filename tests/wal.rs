//! WAL archiving end to end: real PostgreSQL clusters run the built binary as `archive_command`
//! and `restore_command`, against a local-directory repository and a real S3-compatible server.
//!
//! The archiver runs the binary as the server's OS user (`postgres` when the tests run as root),
//! so each test's directory (configuration, key file, local repository) is handed to that user.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lifeboat::postgres::binaries::PgBinaries;
use lifeboat::postgres::cluster::{LocalCluster, LocalClusterOptions, format_setting};
use sqlx::{Connection, PgConnection};
use support::output::{assert_success, describe};
use support::s3::{ACCESS_KEY, S3Server, S3ServerKind, SECRET_KEY};

const LIFEBOAT: &str = env!("CARGO_BIN_EXE_lifeboat");
/// How long the archiver may take to catch up before a test gives up (and shows the server log).
const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(180);

fn binaries() -> PgBinaries {
    PgBinaries::find(None).expect("PostgreSQL binaries (scripts/test installs them)")
}

/// Where a test's repository lives.
enum Backend {
    Local,
    S3 { endpoint: String, bucket: String },
}

/// A test directory with `lifeboat.toml`, a key file and (for the local backend) `repo/`.
struct Archive {
    dir: tempfile::TempDir,
    backend: Backend,
}

const S3_PREFIX: &str = "prod";

impl Archive {
    fn local(prefetch: u32) -> Archive {
        Archive::create(Backend::Local, prefetch)
    }

    async fn s3(server: &S3Server) -> Archive {
        let bucket = server.fresh_bucket().await.bucket;
        Archive::create(Backend::S3 { endpoint: server.endpoint(), bucket }, 8)
    }

    fn create(backend: Backend, prefetch: u32) -> Archive {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        let repository = match &backend {
            Backend::Local => format!("url = \"file://{root}/repo\"\nkey_file = \"{root}/repo.key\"\n"),
            Backend::S3 { endpoint, bucket } => format!(
                "url = \"s3://{bucket}/{S3_PREFIX}\"\nkey_file = \"{root}/repo.key\"\n\n[repository.s3]\n\
                 endpoint = \"{endpoint}\"\nforce_path_style = true\naccess_key_id = \"{ACCESS_KEY}\"\n\
                 secret_access_key = \"{SECRET_KEY}\"\n"
            ),
        };
        let config = format!(
            "[cluster]\nname = \"main\"\n\n[wal]\nprefetch = {prefetch}\n\n[audit]\npath = \"{root}/audit.jsonl\"\n\n[repository]\n{repository}"
        );
        std::fs::write(dir.path().join("lifeboat.toml"), config).unwrap();
        let archive = Archive { dir, backend };
        assert_success(&archive.run(&["init"]));
        archive
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> PathBuf {
        self.path("lifeboat.toml")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_in(self.dir.path(), args)
    }

    fn run_in(&self, cwd: &Path, args: &[&str]) -> Output {
        let mut command = Command::new(LIFEBOAT);
        command.current_dir(cwd).arg("--config").arg(self.config()).args(args);
        for (variable, _) in std::env::vars_os() {
            let name = variable.to_string_lossy();
            if name.starts_with("LIFEBOAT_") || name.starts_with("AWS_") {
                command.env_remove(&variable);
            }
        }
        command.output().unwrap()
    }

    /// The `archive_command` for this archive.
    fn archive_command(&self) -> String {
        format!("{LIFEBOAT} --config {} wal-push %p", self.config().display())
    }

    fn restore_command(&self) -> String {
        format!("{LIFEBOAT} --config {} wal-fetch %f %p", self.config().display())
    }

    /// The stored bytes of an object, as the backend holds them.
    async fn stored(&self, server: Option<&S3Server>, key: &str) -> Vec<u8> {
        match &self.backend {
            Backend::Local => std::fs::read(self.path("repo").join(key)).unwrap(),
            Backend::S3 { bucket, .. } => {
                let client = server.expect("an S3 server").client();
                let object = client.get_object().bucket(bucket).key(format!("{S3_PREFIX}/{key}")).send().await.unwrap();
                object.body.collect().await.unwrap().into_bytes().to_vec()
            }
        }
    }

    async fn delete(&self, server: Option<&S3Server>, key: &str) {
        match &self.backend {
            Backend::Local => std::fs::remove_file(self.path("repo").join(key)).unwrap(),
            Backend::S3 { bucket, .. } => {
                let client = server.expect("an S3 server").client();
                client.delete_object().bucket(bucket).key(format!("{S3_PREFIX}/{key}")).send().await.unwrap();
            }
        }
    }

    fn check_json(&self) -> (Output, serde_json::Value) {
        let output = self.run(&["wal", "check", "--json"]);
        let json =
            serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("{error}: {}", describe(&output)));
        (output, json)
    }
}

fn segment_key(name: &str) -> String {
    format!("clusters/main/wal/{}/{name}", &name[..8])
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn assert_exit_1(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "expected exit status 1\n{}", describe(output));
    stderr(output)
}

/// A running cluster whose `archive_command` is `command`, with `dir` handed to its OS user.
async fn archiving_cluster(command: &str, dir: &Path) -> LocalCluster {
    let options = LocalClusterOptions::default()
        .setting("wal_level", "replica")
        .setting("archive_mode", "on")
        .setting("archive_command", command);
    let mut cluster = LocalCluster::init(&binaries(), options).await.expect("init a cluster");
    cluster.give_to_server_user(dir).unwrap();
    cluster.start().await.expect("start the cluster");
    cluster
}

/// Ends the current segment and waits until the archiver reports it archived. Returns its name.
async fn switch_and_wait(conn: &mut PgConnection, cluster: &LocalCluster) -> String {
    let last: String =
        sqlx::query_scalar("SELECT pg_walfile_name(pg_switch_wal())").fetch_one(&mut *conn).await.unwrap();
    wait_archived(conn, cluster, &last).await;
    last
}

async fn wait_archived(conn: &mut PgConnection, cluster: &LocalCluster, name: &str) {
    let deadline = Instant::now() + ARCHIVE_TIMEOUT;
    loop {
        let (archived, failed): (Option<String>, i64) =
            sqlx::query_as("SELECT last_archived_wal, failed_count FROM pg_stat_archiver")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        if archived.as_deref().is_some_and(|archived| archived >= name) {
            return;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(cluster.log_file()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
            panic!(
                "{name} not archived after {ARCHIVE_TIMEOUT:?} (last archived {archived:?}, {failed} failures); server log:\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Some WAL: a few inserts, each batch ending its segment.
async fn write_segments(conn: &mut PgConnection, cluster: &LocalCluster, count: usize) -> String {
    sqlx::query("CREATE TABLE IF NOT EXISTS filler (id bigint, payload text)").execute(&mut *conn).await.unwrap();
    let mut last = String::new();
    for _ in 0..count {
        sqlx::query("INSERT INTO filler SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 5000) g")
            .execute(&mut *conn)
            .await
            .unwrap();
        last = switch_and_wait(conn, cluster).await;
    }
    last
}

/// pgbench's initial load (scale 5, about 80 MB of WAL) interleaved with segment switches.
async fn pgbench_load(conn: &mut PgConnection, cluster: &LocalCluster) -> String {
    let pgbench = cluster.binaries().require("pgbench").unwrap();
    let output = Command::new(pgbench).args(["-i", "-s", "5", "-q"]).arg(cluster.connection_url()).output().unwrap();
    assert!(output.status.success(), "pgbench -i: {}", describe(&output));
    write_segments(conn, cluster, 3).await
}

/// Real segments from a throwaway cluster that archives with `cp` (no lifeboat involved).
/// Returns the directory and the segment files in order.
async fn real_segments(count: usize) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let walsave = dir.path().join("pg_wal");
    std::fs::create_dir(&walsave).unwrap();
    let command = format!("cp %p {}/%f", walsave.display());
    let cluster = archiving_cluster(&command, dir.path()).await;
    let mut conn = PgConnection::connect_with(&cluster.connect_options()).await.unwrap();
    write_segments(&mut conn, &cluster, count).await;
    conn.close().await.unwrap();
    drop(cluster);
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&walsave)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().unwrap().len() == 24)
        .collect();
    segments.sort();
    assert!(segments.len() >= count, "only {} segments archived", segments.len());
    (dir, segments)
}

fn file_name(path: &Path) -> &str {
    path.file_name().unwrap().to_str().unwrap()
}

/// The number of a 16 MiB segment on timeline 1, from its name.
fn segment_number(name: &str) -> u64 {
    u64::from_str_radix(&name[8..16], 16).unwrap() * 256 + u64::from_str_radix(&name[16..], 16).unwrap()
}

fn segment_name(number: u64) -> String {
    format!("00000001{:08X}{:08X}", number / 256, number % 256)
}

// ---------------------------------------------------------------------------------------------
// Archiving under load, and the continuity check

async fn archives_every_segment_and_names_a_deleted_one(archive: Archive, server: Option<&S3Server>) {
    let cluster = archiving_cluster(&archive.archive_command(), archive.dir.path()).await;
    let mut conn = PgConnection::connect_with(&cluster.connect_options()).await.unwrap();
    let last = pgbench_load(&mut conn, &cluster).await;
    let archived_count: i64 =
        sqlx::query_scalar("SELECT archived_count FROM pg_stat_archiver").fetch_one(&mut conn).await.unwrap();
    let failed: i64 =
        sqlx::query_scalar("SELECT failed_count FROM pg_stat_archiver").fetch_one(&mut conn).await.unwrap();
    assert_eq!(failed, 0, "the archiver saw failures");

    let (output, report) = archive.check_json();
    assert_success(&output);
    let timelines = report["timelines"].as_array().unwrap();
    assert_eq!(timelines.len(), 1, "{report}");
    let ranges = timelines[0]["ranges"].as_array().unwrap();
    assert_eq!(ranges.len(), 1, "one contiguous range expected: {report}");
    assert_eq!(ranges[0]["first"], "000000010000000000000001");
    assert_eq!(ranges[0]["last"], last.as_str());
    assert_eq!(timelines[0]["segments"].as_i64().unwrap(), archived_count, "{report}");
    assert!(archived_count >= 5, "pgbench -s 5 and three switches should fill more segments: {archived_count}");
    assert!(report["system_identifier"].as_str().unwrap().parse::<u64>().is_ok(), "{report}");
    // wal-push found PG_VERSION beside pg_wal (PostgreSQL runs it in the data directory).
    let major = cluster.binaries().major().to_string();
    assert_eq!(report["postgres_versions"], serde_json::json!([major]), "{report}");
    let text = archive.run(&["wal", "check"]);
    assert_success(&text);
    assert!(String::from_utf8_lossy(&text.stdout).contains("no gaps"), "{}", describe(&text));

    // Lose one segment in the middle: the check names exactly that one and fails.
    let victim = segment_name(segment_number(&last).div_ceil(2));
    archive.delete(server, &segment_key(&victim)).await;
    let (output, report) = archive.check_json();
    assert_exit_1(&output);
    let gaps = report["timelines"][0]["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{report}");
    assert_eq!(gaps[0]["first_missing"], victim.as_str());
    assert_eq!(gaps[0]["missing"], 1);
    let text = archive.run(&["wal", "check"]);
    let error = assert_exit_1(&text);
    assert!(error.contains(&victim), "the error should name {victim}: {error}");
    assert!(String::from_utf8_lossy(&text.stdout).contains(&format!("GAP: first missing segment {victim}")));
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn archiving_under_load_is_complete_and_a_lost_segment_is_named_on_a_local_repository() {
    archives_every_segment_and_names_a_deleted_one(Archive::local(8), None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn archiving_under_load_is_complete_and_a_lost_segment_is_named_on_s3() {
    let server = S3Server::start(S3ServerKind::S3sFs).await;
    let archive = Archive::s3(&server).await;
    archives_every_segment_and_names_a_deleted_one(archive, Some(&server)).await;
}

// ---------------------------------------------------------------------------------------------
// G2: repeated pushes

#[tokio::test(flavor = "multi_thread")]
async fn pushing_a_segment_again_succeeds_only_with_the_same_content_and_never_changes_it() {
    let (_segments_dir, segments) = real_segments(2).await;
    let archive = Archive::local(0);
    let segment = &segments[1];
    let name = file_name(segment);
    let key = segment_key(name);
    let segment_text = segment.to_str().unwrap();

    assert_success(&archive.run(&["wal-push", segment_text]));
    let stored = archive.stored(None, &key).await;

    let again = archive.run(&["wal-push", segment_text]);
    assert_success(&again);
    assert!(stderr(&again).contains("identical content"), "{}", describe(&again));
    assert_eq!(archive.stored(None, &key).await, stored, "an identical push must not rewrite the object");

    // The same name with one byte changed (past the page header, so it still looks like a segment).
    let forged_dir = archive.path("forged/pg_wal");
    std::fs::create_dir_all(&forged_dir).unwrap();
    let forged = forged_dir.join(name);
    let mut bytes = std::fs::read(segment).unwrap();
    bytes[100_000] ^= 0x5A;
    std::fs::write(&forged, &bytes).unwrap();
    let refused = archive.run(&["wal-push", forged.to_str().unwrap()]);
    let error = assert_exit_1(&refused);
    assert!(error.contains(name) && error.contains("different content"), "{error}");
    let original_hash = blake3::hash(&std::fs::read(segment).unwrap()).to_hex().to_string();
    let forged_hash = blake3::hash(&bytes).to_hex().to_string();
    assert!(error.contains(&original_hash) && error.contains(&forged_hash), "both hashes expected: {error}");
    assert!(error.contains("left unchanged"), "{error}");
    assert_eq!(archive.stored(None, &key).await, stored, "the archived copy must be unchanged");

    // And the archive still holds the original, byte for byte.
    let restored = archive.path("restored");
    assert_success(&archive.run(&["wal-fetch", name, restored.to_str().unwrap()]));
    assert_eq!(std::fs::read(&restored).unwrap(), std::fs::read(segment).unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_segment_from_another_cluster_is_refused() {
    let ((_dir_a, ours), (_dir_b, theirs)) = tokio::join!(real_segments(2), real_segments(2));
    let archive = Archive::local(0);
    assert_success(&archive.run(&["wal-push", ours[0].to_str().unwrap()]));
    let record = archive.stored(None, "clusters/main/cluster").await;

    // Both clusters number their segments from 1, so theirs would land on our keys.
    let existing = archive.stored(None, &segment_key(file_name(&ours[0]))).await;
    for segment in [&theirs[0], &theirs[1]] {
        let output = archive.run(&["wal-push", segment.to_str().unwrap()]);
        let error = assert_exit_1(&output);
        assert!(error.contains("belongs to another PostgreSQL cluster"), "{error}");
        assert!(error.contains("Nothing was stored"), "{error}");
    }
    assert_eq!(archive.stored(None, &segment_key(file_name(&ours[0]))).await, existing);
    assert!(!archive.path("repo").join(segment_key(file_name(&theirs[1]))).exists(), "a foreign segment was stored");
    assert_eq!(archive.stored(None, "clusters/main/cluster").await, record, "the cluster record changed");
    // Ours still go in.
    assert_success(&archive.run(&["wal-push", ours[1].to_str().unwrap()]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_segment_of_an_unknown_postgresql_version_is_refused_by_name() {
    let (_segments_dir, segments) = real_segments(1).await;
    let archive = Archive::local(0);
    // The same segment as a PostgreSQL newer than 18 might write it: another page magic.
    let newer = archive.path("pg_wal").join(file_name(&segments[0]));
    std::fs::create_dir_all(newer.parent().unwrap()).unwrap();
    let mut bytes = std::fs::read(&segments[0]).unwrap();
    bytes[0..2].copy_from_slice(&0xD11Au16.to_ne_bytes());
    std::fs::write(&newer, &bytes).unwrap();

    let error = assert_exit_1(&archive.run(&["wal-push", newer.to_str().unwrap()]));
    assert!(error.contains(&format!("{} has WAL page magic 0xD11A", newer.display())), "{error}");
    assert!(error.contains("PostgreSQL 13 (0xD106)") && error.contains("18 (0xD118)"), "{error}");
    assert!(error.contains("upgrade lifeboat") && error.contains("nothing was stored"), "{error}");
    assert!(!archive.path("repo/clusters").exists(), "nothing should have been written");
    // The segment as PostgreSQL really wrote it goes in.
    assert_success(&archive.run(&["wal-push", segments[0].to_str().unwrap()]));
}

#[tokio::test(flavor = "multi_thread")]
async fn files_that_are_not_wal_segments_are_refused() {
    let archive = Archive::local(0);
    let junk = archive.path("000000010000000000000001");
    std::fs::write(&junk, vec![0u8; 16 * 1024 * 1024]).unwrap();
    let error = assert_exit_1(&archive.run(&["wal-push", junk.to_str().unwrap()]));
    assert!(error.contains("not a valid WAL segment") && error.contains("nothing was stored"), "{error}");
    let notes = archive.path("notes.txt");
    std::fs::write(&notes, "hello").unwrap();
    let error = assert_exit_1(&archive.run(&["wal-push", notes.to_str().unwrap()]));
    assert!(error.contains("not a file PostgreSQL archives"), "{error}");
    let missing = archive.path("pg_wal/000000010000000000000002");
    let error = assert_exit_1(&archive.run(&["wal-push", missing.to_str().unwrap()]));
    assert!(error.contains("cannot read") && error.contains("000000010000000000000002"), "{error}");
    assert!(!archive.path("repo/clusters").exists(), "nothing should have been written");
}

// ---------------------------------------------------------------------------------------------
// wal-fetch

#[tokio::test(flavor = "multi_thread")]
async fn wal_fetch_restores_exact_bytes_prefetches_and_is_quiet_about_missing_files() {
    let (_segments_dir, segments) = real_segments(6).await;
    let archive = Archive::local(3);
    for segment in &segments {
        assert_success(&archive.run(&["wal-push", segment.to_str().unwrap()]));
    }
    // A data directory being restored; PostgreSQL runs restore_command in it with %p = pg_wal/RECOVERYXLOG.
    let data = archive.path("restore");
    std::fs::create_dir_all(data.join("pg_wal")).unwrap();
    let spool = data.join("pg_wal/.lifeboat-spool");
    let name = |index: usize| file_name(&segments[index]).to_owned();

    let first = archive.run_in(&data, &["wal-fetch", &name(0), "pg_wal/RECOVERYXLOG"]);
    assert_success(&first);
    assert_eq!(std::fs::read(data.join("pg_wal/RECOVERYXLOG")).unwrap(), std::fs::read(&segments[0]).unwrap());
    for index in 1..=3 {
        assert!(spool.join(name(index)).is_file(), "{} should be prefetched", name(index));
    }
    assert!(!spool.join(name(4)).exists(), "only 3 segments ahead were asked for");

    // The next call is served from the spool: the file is moved out of it.
    assert!(spool.join(name(1)).is_file());
    let second = archive.run_in(&data, &["wal-fetch", &name(1), "pg_wal/RECOVERYXLOG"]);
    assert_success(&second);
    assert_eq!(std::fs::read(data.join("pg_wal/RECOVERYXLOG")).unwrap(), std::fs::read(&segments[1]).unwrap());
    assert!(!spool.join(name(1)).exists(), "a served segment leaves the spool");
    assert!(!spool.join(name(0)).exists());

    // After serving index 2, only index 3 is ahead in the window of 3 (at most half), so this call
    // refills the window: indexes 4 and 5.
    let third = archive.run_in(&data, &["wal-fetch", &name(2), "pg_wal/RECOVERYXLOG"]);
    assert_success(&third);
    assert_eq!(std::fs::read(data.join("pg_wal/RECOVERYXLOG")).unwrap(), std::fs::read(&segments[2]).unwrap());
    for (index, segment) in segments.iter().enumerate().take(6).skip(3) {
        assert!(spool.join(name(index)).is_file(), "{} should be spooled", name(index));
        assert_eq!(std::fs::read(spool.join(name(index))).unwrap(), std::fs::read(segment).unwrap());
    }

    // Past the end, and a history file of a timeline that does not exist: exit 1, no error noise.
    let past_end = segment_name(segment_number(file_name(segments.last().unwrap())) + 1);
    for missing in [past_end.as_str(), "00000002.history"] {
        let output = archive.run_in(&data, &["wal-fetch", missing, "pg_wal/RECOVERYXLOG.missing"]);
        let quiet = assert_exit_1(&output);
        assert!(!quiet.to_lowercase().contains("error"), "not-found must not look like an error: {quiet}");
        assert!(quiet.lines().count() <= 1, "at most one line: {quiet}");
        assert!(!data.join("pg_wal/RECOVERYXLOG.missing").exists());
    }
    let leftovers: Vec<String> = std::fs::read_dir(data.join("pg_wal"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".lifeboat-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // A name that is not a WAL file is an error, not a quiet miss.
    let output = archive.run_in(&data, &["wal-fetch", "../../etc/passwd", "pg_wal/RECOVERYXLOG"]);
    assert!(assert_exit_1(&output).contains("not a WAL file name"), "{}", describe(&output));
}

#[tokio::test(flavor = "multi_thread")]
async fn wal_fetch_refuses_a_corrupted_object_and_leaves_no_file() {
    let (_segments_dir, segments) = real_segments(2).await;
    let archive = Archive::local(4);
    for segment in &segments {
        assert_success(&archive.run(&["wal-push", segment.to_str().unwrap()]));
    }
    let name = file_name(&segments[0]);
    let key = segment_key(name);
    let object = archive.path("repo").join(&key);
    let mut stored = std::fs::read(&object).unwrap();
    let middle = stored.len() / 2;
    stored[middle] ^= 0x01;
    std::fs::write(&object, &stored).unwrap();

    let data = archive.path("restore");
    std::fs::create_dir_all(data.join("pg_wal")).unwrap();
    let output = archive.run_in(&data, &["wal-fetch", name, "pg_wal/RECOVERYXLOG"]);
    let error = assert_exit_1(&output);
    assert!(error.contains(&key), "the error should name the object {key}: {error}");
    assert!(error.contains("failed authentication") || error.contains("corrupted"), "{error}");
    assert!(!data.join("pg_wal/RECOVERYXLOG").exists(), "nothing may be written at %p");
    let mut left: Vec<String> = std::fs::read_dir(data.join("pg_wal"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.retain(|name| name != ".lifeboat-spool");
    assert!(left.is_empty(), "files left in pg_wal: {left:?}");
    if let Ok(entries) = std::fs::read_dir(data.join("pg_wal/.lifeboat-spool")) {
        let temporary: Vec<_> = entries
            .map(|entry| entry.unwrap().file_name())
            .filter(|name| name.to_string_lossy().starts_with(".lifeboat-tmp"))
            .collect();
        assert!(temporary.is_empty(), "temporary spool files left: {temporary:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Recovery through restore_command, and a new timeline archived

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_recovers_through_wal_fetch_and_archives_its_new_timeline() {
    let archive = Archive::local(4);
    let source = archiving_cluster(&archive.archive_command(), archive.dir.path()).await;
    let mut conn = PgConnection::connect_with(&source.connect_options()).await.unwrap();
    write_segments(&mut conn, &source, 1).await;

    // A base backup without WAL (pg_basebackup -X none): every segment recovery needs comes
    // from the archive through restore_command.
    let mut copy = LocalCluster::init(&binaries(), LocalClusterOptions::default()).await.unwrap();
    let data = copy.data_dir().to_path_buf();
    std::fs::remove_dir_all(&data).unwrap();
    let basebackup = source.binaries().require("pg_basebackup").unwrap();
    let output = Command::new(basebackup)
        .arg("--pgdata")
        .arg(&data)
        .args(["--wal-method=none", "--checkpoint=fast", "--no-sync", "--dbname"])
        .arg(source.connection_url())
        .output()
        .unwrap();
    assert!(output.status.success(), "pg_basebackup: {}", describe(&output));

    // Work after the backup that only the archive holds.
    sqlx::query("CREATE TABLE after_backup AS SELECT g AS id FROM generate_series(1, 4321) g")
        .execute(&mut conn)
        .await
        .unwrap();
    let last_before = write_segments(&mut conn, &source, 3).await;

    let mut settings = String::from("\n");
    for (name, value) in [
        ("port", copy.port().to_string()),
        ("unix_socket_directories", copy.socket_dir().display().to_string()),
        ("restore_command", archive.restore_command()),
        ("archive_mode", "on".to_string()),
        ("archive_command", archive.archive_command()),
    ] {
        settings.push_str(&format_setting(name, &value).unwrap());
        settings.push('\n');
    }
    let conf = data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(&settings);
    std::fs::write(&conf, text).unwrap();
    std::fs::write(data.join("recovery.signal"), "").unwrap();
    copy.give_to_server_user(&data).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    copy.start().await.expect("the copy starts and recovers");

    let mut restored = PgConnection::connect_with(&copy.connect_options()).await.unwrap();
    let deadline = Instant::now() + ARCHIVE_TIMEOUT;
    while sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()").fetch_one(&mut restored).await.unwrap() {
        assert!(Instant::now() < deadline, "recovery did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM after_backup").fetch_one(&mut restored).await.unwrap();
    assert_eq!(rows, 4321, "the copy should have replayed the archived WAL past the backup");

    // The promoted copy archives its timeline history and new segments under the same name
    // (same system identifier), on timeline 2.
    write_segments(&mut restored, &copy, 1).await;
    let (output, report) = archive.check_json();
    assert_success(&output);
    assert_eq!(report["history_files"], serde_json::json!(["00000002.history"]), "{report}");
    let timelines = report["timelines"].as_array().unwrap();
    assert_eq!(timelines.len(), 2, "{report}");
    assert_eq!(timelines[1]["timeline"], 2);
    assert_eq!(timelines[0]["ranges"][0]["last"], last_before.as_str(), "{report}");
    // pg_basebackup's backup history file (pg_backup_stop writes it) is archived beside its segment.
    assert_eq!(timelines[0]["backup_history"].as_array().unwrap().len(), 1, "{report}");
    assert!(timelines[1]["segments"].as_i64().unwrap() >= 1, "{report}");

    // The restore_command calls logged nothing alarming.
    let log = std::fs::read_to_string(copy.log_file()).unwrap();
    assert!(!log.contains("lifeboat: error"), "wal-fetch or wal-push reported an error:\n{log}");
    assert!(log.contains("is not in the archive"), "recovery should have asked past the end:\n{log}");
    restored.close().await.unwrap();
    conn.close().await.unwrap();
}
