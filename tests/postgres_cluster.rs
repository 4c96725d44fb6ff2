//! Throwaway local clusters against the installed PostgreSQL: they start, serve queries, take the
//! settings they were given, and leave no process or directory behind.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use lifeboat::postgres::binaries::PgBinaries;
use lifeboat::postgres::cluster::{ClusterError, LocalCluster, LocalClusterOptions};
use sqlx::{Connection, PgConnection};

fn binaries() -> PgBinaries {
    PgBinaries::find(None).expect("PostgreSQL binaries (scripts/test installs them)")
}

/// Whether `pid` is a live process; a zombie waiting to be reaped counts as gone.
fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).unwrap_or("?");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// The current value of a server setting (what `SHOW` prints).
async fn show(conn: &mut PgConnection, setting: &str) -> String {
    sqlx::query_scalar("SELECT current_setting($1)").bind(setting).fetch_one(conn).await.unwrap()
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1) == 0
}

#[tokio::test]
async fn cluster_serves_queries_takes_settings_and_leaves_nothing_behind() {
    let marker = r"it's C:\here";
    let options = LocalClusterOptions::default()
        .setting("wal_level", "replica")
        .setting("archive_mode", "on")
        .setting("archive_command", "/bin/true '%p'")
        .setting("lifeboat.test_marker", marker);
    let mut cluster = LocalCluster::start_new(&binaries(), options).await.expect("start a cluster");
    let root = cluster.root_dir().to_path_buf();
    let pid = cluster.pid().expect("postmaster.pid names the server");
    assert!(pid_alive(pid), "server process {pid} should be running");
    assert!(cluster.is_running());

    let socket = cluster.socket_dir().join(format!(".s.PGSQL.{}", cluster.port()));
    assert!(socket.as_os_str().len() <= 107, "{}", socket.display());
    if running_as_root() {
        assert_eq!(cluster.server_os_user(), Some("postgres"));
        let owner = std::fs::metadata(cluster.data_dir()).unwrap().uid();
        assert_ne!(owner, 0, "the data directory must not belong to root");
    }

    let mut conn = PgConnection::connect_with(&cluster.connect_options()).await.expect("connect over the Unix socket");
    sqlx::query("CREATE TABLE fruit (id int PRIMARY KEY, name text NOT NULL)").execute(&mut conn).await.unwrap();
    for (id, name) in [(1, "apple"), (2, "pear"), (3, "quince")] {
        sqlx::query("INSERT INTO fruit (id, name) VALUES ($1, $2)")
            .bind(id)
            .bind(name)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM fruit ORDER BY id").fetch_all(&mut conn).await.unwrap();
    assert_eq!(names, ["apple", "pear", "quince"]);

    assert_eq!(show(&mut conn, "archive_mode").await, "on");
    assert_eq!(show(&mut conn, "wal_level").await, "replica");
    assert_eq!(show(&mut conn, "lifeboat.test_marker").await, marker, "quoting must round-trip");
    assert_eq!(show(&mut conn, "listen_addresses").await, "", "the server must not listen on TCP");
    conn.close().await.unwrap();

    // The URL form reaches the same server.
    let mut conn = PgConnection::connect(&cluster.connection_url()).await.expect("connect with the URL");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM fruit").fetch_one(&mut conn).await.unwrap();
    assert_eq!(count, 3);
    conn.close().await.unwrap();
    // ... and so does libpq, which pg_dump and psql use.
    let psql = std::process::Command::new(cluster.binaries().require("psql").unwrap())
        .args(["--no-psqlrc", "--tuples-only", "--no-align", "--command"])
        .arg("SELECT string_agg(name, ',' ORDER BY id) FROM fruit")
        .arg(cluster.connection_url())
        .output()
        .unwrap();
    assert!(psql.status.success(), "{psql:?}");
    assert_eq!(String::from_utf8_lossy(&psql.stdout).trim(), "apple,pear,quince");

    cluster.stop().await.expect("stop the server");
    assert!(!pid_alive(pid), "server process {pid} still running after stop");
    assert!(!cluster.is_running());
    assert_eq!(cluster.pid(), None);

    // Restarting works, and dropping a running cluster stops it too.
    cluster.start().await.expect("restart");
    let pid = cluster.pid().expect("restarted server");
    assert!(pid_alive(pid));

    drop(cluster);
    assert!(!pid_alive(pid), "server process {pid} still running after drop");
    assert!(!root.exists(), "{} not removed", root.display());
}

#[tokio::test]
async fn kept_cluster_directory_survives_drop() {
    let mut cluster =
        LocalCluster::init(&binaries(), LocalClusterOptions::default().keep(true)).await.expect("init a cluster");
    let root = cluster.root_dir().to_path_buf();
    assert!(cluster.data_dir().join("PG_VERSION").is_file());
    drop(cluster);
    assert!(root.join("data/PG_VERSION").is_file());
    std::fs::remove_dir_all(&root).unwrap();

    // set_keep(false) after the fact removes it again.
    cluster = LocalCluster::init(&binaries(), LocalClusterOptions::default().keep(true)).await.expect("init a cluster");
    cluster.set_keep(false);
    let root = cluster.root_dir().to_path_buf();
    drop(cluster);
    assert!(!root.exists());
}

#[tokio::test]
async fn missing_bin_dir_names_the_missing_program() {
    let err = PgBinaries::find(Some(Path::new("/nonexistent/postgresql/bin"))).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("`postgres`"), "{message}");
    assert!(message.contains("/nonexistent/postgresql/bin/postgres"), "{message}");
    assert!(message.contains("cluster.bin_dir"), "{message}");
}

#[tokio::test]
async fn bin_dir_without_initdb_fails_naming_initdb() {
    // A directory holding only the server program: the version can be read, initdb is missing.
    let dir = tempfile::tempdir().unwrap();
    let real = binaries();
    std::os::unix::fs::symlink(real.path("postgres"), dir.path().join("postgres")).unwrap();
    let partial = PgBinaries::find(Some(dir.path())).expect("postgres --version works");
    assert_eq!(partial.major(), real.major());

    let parent = tempfile::tempdir().unwrap();
    let options = LocalClusterOptions::default().parent_dir(parent.path());
    let err = LocalCluster::init(&partial, options).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, ClusterError::Binaries(_)), "{err:?}");
    assert!(message.contains("`initdb`"), "{message}");
    assert!(message.contains(&dir.path().display().to_string()), "{message}");
    assert!(message.contains(&format!("postgresql-{}", real.major())), "{message}");
    assert_eq!(
        std::fs::read_dir(parent.path()).unwrap().count(),
        0,
        "nothing may be created before the programs are checked"
    );
}

#[tokio::test]
async fn failed_start_reports_the_server_log_and_cleans_up() {
    let parent = tempfile::tempdir().unwrap();
    if running_as_root() {
        // tempfile makes the directory private to root; the server's user must reach into it.
        std::fs::set_permissions(parent.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let options = LocalClusterOptions::default().parent_dir(parent.path()).setting("shared_buffers", "lots");
    let err = LocalCluster::start_new(&binaries(), options).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, ClusterError::Start { .. }), "{err:?}");
    assert!(message.contains("shared_buffers"), "{message}");
    assert!(message.contains("server.log"), "{message}");
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0, "the failed cluster's directory must be removed");
}

#[tokio::test]
async fn invalid_setting_is_refused_before_anything_is_created() {
    let parent = tempfile::tempdir().unwrap();
    let options =
        LocalClusterOptions::default().parent_dir(parent.path()).setting("archive_command", "line one\nline two");
    let err = LocalCluster::init(&binaries(), options).await.unwrap_err();
    assert!(matches!(err, ClusterError::InvalidSetting { ref name, .. } if name == "archive_command"), "{err:?}");
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
}
