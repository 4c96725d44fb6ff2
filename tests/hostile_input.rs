//! Hostile and mistaken input (issue 17, item 6), on a real cluster: each case must end in an
//! error that names the thing and the next step, and lose nothing.
//!
//! - A full disk, for real (a small tmpfs, unmounted by a guard): under `wal-fetch`'s destination
//!   (no partial segment is left where PostgreSQL would take it, nor in the spool), under a
//!   restore's data directory (no `global/pg_control`, so nothing looks startable, and the error
//!   says so), and under a backup's state directory, where its block values spill (the backup
//!   fails and is not listed, and nothing of it is left in the repository).
//! - A file in the data directory that the backup's OS user may not read: named, not skipped.
//! - PostgreSQL programs of another major, or none, in `cluster.bin_dir`.
//!
//! Elsewhere: every configuration key with a wrong type, an out-of-range value and an unknown
//! neighbour (src/config/tests.rs, `every_key_*`); a wrong key or passphrase (tests/secrets.rs,
//! tests/hardening_messages.rs); a repository of another format version and another repository's
//! `lifeboat.repo` (tests/hardening_messages.rs); a data directory of another cluster
//! (tests/backup.rs); a full repository (tests/hardening_leftovers.rs).

mod support;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};

use support::archiving::{Setup, archive_current_segment, scalar};
use support::output::{assert_failure, describe};
use support::tmpfs::Tmpfs;

/// Every file below `dir` (not directories), relative to it, sorted.
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The uid and gid of the PostgreSQL OS user the tests run servers as.
fn postgres_user() -> (u32, u32) {
    // SAFETY: getpwnam with a NUL-terminated name; the result is read at once, before any other call.
    let entry = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    assert!(!entry.is_null(), "the tests need a postgres OS user");
    unsafe { ((*entry).pw_uid, (*entry).pw_gid) }
}

/// A cluster with 16 MiB that does not compress, archived and backed up by the CLI; the backup's id.
async fn cluster_with_a_backup() -> (Setup, String) {
    let setup = Setup::start().await;
    let mut conn = setup.connect().await;
    support::data::create_incompressible_table(&mut conn).await;
    let backup = setup.json(&["backup", "--json"]);
    archive_current_segment(&mut conn).await;
    (setup, backup["id"].as_str().unwrap().to_owned())
}

/// A directory for a tmpfs mount, which the server's OS user can reach.
fn mount_point(setup: &Setup, name: &str) -> PathBuf {
    let dir = setup.restore_dir(name);
    std::fs::create_dir(&dir).unwrap();
    dir
}

/// Defect found here: wal-fetch on a full disk named only its temporary file (`.lifeboat-tmp-*`),
/// neither the file PostgreSQL asked for nor what to do.
#[tokio::test(flavor = "multi_thread")]
async fn wal_fetch_on_a_full_disk_names_the_file_postgresql_asked_for_and_the_next_step_and_leaves_nothing() {
    let (setup, _) = cluster_with_a_backup().await;
    let mut conn = setup.connect().await;
    let segment = scalar(&mut conn, "SELECT last_archived_wal FROM pg_stat_archiver").await;

    // A pg_wal with room for a quarter of a segment, and the file name PostgreSQL passes as %p.
    let disk = mount_point(&setup, "wal-disk");
    let _tmpfs = Tmpfs::mount(&disk, "4m");
    let pg_wal = disk.join("pg_wal");
    std::fs::create_dir(&pg_wal).unwrap();
    let destination = pg_wal.join("RECOVERYXLOG");
    let error = assert_failure(&setup.run(&["wal-fetch", &segment, destination.to_str().unwrap()]));
    assert!(error.contains(&format!("cannot restore {segment} to {}", destination.display())), "{error}");
    assert!(error.contains("No space left on device"), "{error}");
    assert!(error.contains(&format!("Nothing was written to {}", destination.display())), "{error}");
    assert!(error.contains("make room on its file system"), "{error}");
    assert!(!destination.exists(), "wal-fetch left a partial segment where PostgreSQL would replay it");
    // The spool beside it may stay, with the marker naming whose segments it holds; no data.
    let left: Vec<String> = files(&disk).into_iter().filter(|file| !file.ends_with(".lifeboat-origin")).collect();
    assert!(left.is_empty(), "wal-fetch left partial files on the full disk: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_onto_a_full_disk_leaves_nothing_startable_and_says_how_to_go_on() {
    let (setup, backup) = cluster_with_a_backup().await;
    // A data directory with room for a third of the backup.
    let disk = mount_point(&setup, "restore-disk");
    let _tmpfs = Tmpfs::mount(&disk, "8m");
    let pgdata = disk.join("pgdata");
    let error = assert_failure(&setup.restore(&pgdata, &["--backup", &backup]));
    assert!(error.contains("No space left on device"), "{error}");
    assert!(error.contains(&format!("{} holds a partial restore", pgdata.display())), "{error}");
    assert!(error.contains("--delta to resume") && error.contains("--force to start over"), "{error}");
    assert!(!pgdata.join("global/pg_control").exists(), "a partial restore never looks startable");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_state_directory_fails_the_backup_naming_it_and_nothing_is_listed_or_left() {
    let (setup, first) = cluster_with_a_backup().await;
    let state_disk = mount_point(&setup, "state-disk");
    let _tmpfs = Tmpfs::mount(&state_disk, "64k");
    let listed_before = setup.json(&["list", "--json"])["backups"].clone();
    let stored_before = files(&setup.repo_dir());

    // The block values of 16 MiB are 64 KiB; the state directory holds less.
    let output = setup.command(&["backup"]).env("LIFEBOAT_STATE_DIR", &state_disk).output().unwrap();
    let error = assert_failure(&output);
    assert!(error.contains(&state_disk.display().to_string()), "{error}");
    assert!(error.contains("No space left on device"), "{error}");
    assert!(error.contains("LIFEBOAT_STATE_DIR") && error.contains("Free space there"), "{error}");

    assert_eq!(setup.json(&["list", "--json"])["backups"], listed_before, "the failed backup is listed");
    let stored_after = files(&setup.repo_dir());
    let left: Vec<&String> =
        stored_after.iter().filter(|path| !stored_before.contains(path) && path.contains("/backups/")).collect();
    assert!(left.is_empty(), "the failed backup left objects in the repository: {left:?}");
    assert!(stored_before.iter().any(|path| path.contains(&first)), "the first backup is still there");
}

/// Defect found here: the backup said only "cannot read <file>: Permission denied", with no
/// next step.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_the_backup_user_may_not_read_fails_the_backup_naming_it_and_the_next_step() {
    let setup = Setup::start().await;
    // What an operator leaves in the data directory as root: the server never reads it, the
    // backup (run as the server's OS user, as in production) cannot.
    let notes = setup.cluster.data_dir().join("root-notes.txt");
    std::fs::write(&notes, "not for postgres").unwrap();
    std::fs::set_permissions(&notes, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let listed_before = setup.json(&["list", "--json"])["backups"].clone();

    let (uid, gid) = postgres_user();
    let mut backup = setup.command(&["backup"]);
    backup.uid(uid).gid(gid);
    let output = backup.output().unwrap();
    let error = assert_failure(&output);
    assert!(error.contains(&notes.display().to_string()), "the unreadable file is not named: {error}");
    assert!(error.contains("Permission denied"), "{error}");
    assert!(error.contains(&format!("this backup runs as uid {uid}")), "{error}");
    assert!(error.contains("give it to that user, or move it out of the data directory"), "{error}");
    assert!(error.contains("nothing of this backup was stored"), "{error}");
    assert_eq!(setup.json(&["list", "--json"])["backups"], listed_before, "a backup without the file is listed");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgresql_programs_of_another_major_or_none_are_named_with_the_fix() {
    let setup = Setup::start().await;
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    let with_bin_dir =
        |dir: &Path| config.replacen("[cluster]\n", &format!("[cluster]\nbin_dir = \"{}\"\n", dir.display()), 1);

    let listed_before = setup.json(&["list", "--json"])["backups"].clone();

    // Programs of PostgreSQL 14 for a PostgreSQL 15 server.
    let other = support::postgres::bin_dir(14);
    std::fs::write(setup.config_path(), with_bin_dir(&other)).unwrap();
    let error = assert_failure(&setup.run(&["backup"]));
    assert!(error.contains(&other.display().to_string()) && error.contains("14"), "{error}");
    assert!(error.contains("15"), "the server's major is not named: {error}");
    assert!(error.contains("bin_dir"), "the setting to change is not named: {error}");
    std::fs::write(setup.config_path(), &config).unwrap();
    assert_eq!(setup.json(&["list", "--json"])["backups"], listed_before, "a backup was listed");

    // A directory without them: a backup, which runs the server's own programs, refuses; a dump,
    // which needs only client programs, uses those lifeboat finds and says so.
    let empty = setup.restore_dir("no-programs");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(setup.config_path(), with_bin_dir(&empty)).unwrap();
    let error = assert_failure(&setup.run(&["backup"]));
    assert!(error.contains(&empty.display().to_string()), "{error}");
    assert!(error.contains("bin_dir"), "the setting to change is not named: {error}");
    let dump = setup.run(&["dump"]);
    assert!(dump.status.success(), "{}", describe(&dump));
    let said = String::from_utf8_lossy(&dump.stderr);
    assert!(said.contains(&format!("cluster.bin_dir {} has no pg_dump", empty.display())), "{said}");
}

/// A wrong password, an unknown role and an unknown database each get the hint that fits what
/// the server said, not a generic one about sockets and ports, and never the password.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_login_names_what_to_check_password_role_or_database() {
    let hba = "local all guarded scram-sha-256\nlocal all all trust\n";
    let setup = Setup::with(support::archiving::Options::restorable().hba(hba)).await;
    let mut conn = setup.connect().await;
    support::archiving::execute(&mut conn, "CREATE ROLE guarded LOGIN SUPERUSER PASSWORD 'right-one'").await;
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    let cases = [
        ("&user=guarded&password=Wrong-Pass-7", "check the password"),
        ("&user=nobody_here", "check that the role of cluster.connection exists"),
    ];
    for (user, hint) in cases {
        std::fs::write(setup.config_path(), config.replacen("&user=postgres", user, 1)).unwrap();
        let output = setup.run(&["backup"]);
        let stderr = assert_failure(&output);
        assert!(stderr.contains(hint) && !stderr.contains("Wrong-Pass-7"), "{user}: {}", describe(&output));
    }
    let elsewhere = config.replacen("postgresql:///postgres?", "postgresql:///no_such_db?", 1);
    assert_ne!(elsewhere, config, "the test's connection names database postgres");
    std::fs::write(setup.config_path(), elsewhere).unwrap();
    let output = setup.run(&["backup"]);
    assert!(assert_failure(&output).contains("check the database name"), "{}", describe(&output));
}
