//! Issue 9, defect 5: what killed and failed operations leave behind is cleaned up, and a failed
//! restore says what it left and what to do next.
//!
//! - A `wal-push` or backup killed with SIGKILL mid-put leaves a `.lifeboat-tmp-*` file, and an
//!   interrupted backup or a delete leaves empty directories: planted here as they are left (a
//!   kill cannot be timed to land inside one put reliably), with the file times a kill hours ago
//!   would give them, next to a fresh temporary file that a running `wal-push` could own.
//! - A backup that fails on a full disk: the repository is a small tmpfs mounted for the test,
//!   so the failure is the kernel's real ENOSPC, in the middle of the copy.
//! - A restore that fails after writing: one data object is damaged, and repaired afterwards to
//!   follow the advice of the error.
//! - On S3 a killed put leaves an incomplete multipart upload, made here with the SDK on moto.

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime};

use lifeboat::storage::ObjectStore;
use lifeboat::storage::s3::S3Store;
use support::archiving::{Archiving, Options, Setup, archive_current_segment, execute};
use support::output::{assert_failure, assert_success, describe};
use support::s3::{S3Server, S3ServerKind};
use support::tmpfs::Tmpfs;

/// Every file and directory below `dir`, relative to it, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(root).unwrap().display().to_string());
            if path.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Sets the modification time of `path` (a file or a directory) to `ago` before now.
fn age(path: &Path, ago: Duration) {
    std::fs::File::open(path).unwrap().set_modified(SystemTime::now() - ago).unwrap();
}

/// Writes `bytes` zero bytes to `path`, creating its directory.
fn plant(path: &Path, bytes: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, vec![0u8; bytes]).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_5_partial_uploads_and_empty_directories_are_swept_by_the_next_backup_and_delete() {
    let setup = Setup::start().await;
    let first = setup.backup().await;
    let cluster = setup.repo_dir().join("clusters/main");
    let two_hours = Duration::from_secs(2 * 60 * 60);

    // A wal-push killed two hours ago, and one that is running now.
    let killed_push = cluster.join("wal/00000001/.lifeboat-tmp-0123456789abcdef");
    plant(&killed_push, 3 * 1024 * 1024);
    age(&killed_push, two_hours);
    let running_push = cluster.join("wal/00000001/.lifeboat-tmp-fedcba9876543210");
    plant(&running_push, 1024);
    // A backup killed mid-put: its partial object, fresh (only the lease holder writes there),
    // and the empty directories of a backup killed before its first object.
    let killed_backup = cluster.join("backups/20260101T000000Z-full/data/.lifeboat-tmp-00112233aabbccdd");
    plant(&killed_backup, 1024 * 1024);
    let empty_backup = cluster.join("backups/20260102T000000Z-full/data");
    std::fs::create_dir_all(&empty_backup).unwrap();
    // An empty WAL directory nobody has touched for hours, and one just made by a wal-push.
    let old_wal_dir = cluster.join("wal/00000009");
    std::fs::create_dir(&old_wal_dir).unwrap();
    age(&old_wal_dir, two_hours);
    let new_wal_dir = cluster.join("wal/0000000A");
    std::fs::create_dir(&new_wal_dir).unwrap();

    let second = setup.backup().await;
    assert!(!killed_push.exists(), "a partial upload left for hours is removed");
    assert!(running_push.exists(), "a fresh partial upload outside backups/ may be a running wal-push's");
    assert!(!killed_backup.exists(), "under backups/ only the lease holder writes: any partial upload is stale");
    assert!(!cluster.join("backups/20260101T000000Z-full").exists(), "{:?}", tree(&cluster));
    assert!(!cluster.join("backups/20260102T000000Z-full").exists(), "{:?}", tree(&cluster));
    assert!(!old_wal_dir.exists(), "an empty directory left for hours is removed");
    assert!(new_wal_dir.exists(), "a directory a running wal-push may have just made is kept");
    let backups: Vec<String> = std::fs::read_dir(cluster.join("backups"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(backups.len(), 2, "only the two backups are left: {backups:?}");

    // A delete removes the objects and, now, the directories that held them.
    assert_success(&setup.run(&["delete", &first]));
    assert!(!cluster.join("backups").join(&first).exists(), "{:?}", tree(&cluster.join("backups")));
    assert!(cluster.join("backups").join(&second).join("manifest").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_5_a_backup_that_fails_on_a_full_disk_removes_its_objects() {
    let mount_dir = tempfile::tempdir().unwrap();
    let repo = mount_dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let _tmpfs = Tmpfs::mount(&repo, "6m");
    // WAL goes elsewhere (`cp`), so only the backup fills the repository.
    let options =
        Options::restorable().archiving(Archiving::Copy).repository(&format!("url = \"file://{}\"\n", repo.display()));
    let setup = Setup::with(options).await;
    let mut conn = setup.connect().await;
    // 16 MiB that no compression shrinks: the backup cannot fit in 6 MiB.
    support::data::create_incompressible_table(&mut conn).await;
    archive_current_segment(&mut conn).await;
    let before = tree(&repo);

    let (config, repository) = setup.open().await;
    let mut backup_options = lifeboat::backup::BackupOptions::from_config(&config.backup);
    backup_options.part_size = 1024 * 1024;
    let error = lifeboat::backup::run(&config, repository, &backup_options)
        .await
        .map(|summary| summary.manifest.id)
        .expect_err("a 16 MiB backup does not fit in 6 MiB");
    let message = error.to_string();
    assert!(message.contains("No space left on device"), "{message}");
    assert!(!message.contains("left under"), "the objects were removed, so nothing is said to be left: {message}");
    let after = tree(&repo);
    let left: Vec<&String> = after
        .iter()
        .filter(|path| !before.contains(path))
        .filter(|path| path.starts_with("clusters/main/backups/") || path.contains(".lifeboat-tmp"))
        .collect();
    assert!(left.is_empty(), "the failed backup left objects or directories: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_5_a_failed_restore_says_what_is_left_and_how_to_resume_or_start_over() {
    let setup = Setup::start().await;
    let mut conn = setup.connect().await;
    execute(
        &mut conn,
        "CREATE TABLE ledger AS SELECT g AS n, repeat('x', 200) AS note FROM generate_series(1, 20000) g",
    )
    .await;
    let backup = setup.backup().await;
    archive_current_segment(&mut conn).await;
    let object = setup.damage_largest_object(&backup);

    let pgdata = setup.restore_dir("partial");
    let error = assert_failure(&setup.restore(&pgdata, &[]));
    assert!(error.contains(&object), "{error}");
    assert!(error.contains(&format!("{} holds a partial restore", pgdata.display())), "{error}");
    assert!(error.contains("--delta to resume") && error.contains("--force to start over"), "{error}");
    assert!(pgdata.join("base").is_dir(), "the restore had begun writing when it met the damaged object");
    assert!(!pgdata.join("global/pg_control").exists(), "a partial restore never looks complete");

    // The advice works: once the object is repaired, --delta finishes the restore.
    assert_eq!(setup.damage_largest_object(&backup), object, "flipping the same byte again repairs it");
    let output = setup.restore(&pgdata, &["--delta"]);
    assert_success(&output);
    assert!(pgdata.join("global/pg_control").exists(), "{}", describe(&output));
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_5_an_interrupted_multipart_upload_under_the_cluster_prefix_is_aborted_by_the_sweep() {
    let server = S3Server::start(S3ServerKind::Moto).await;
    let settings = server.fresh_bucket().await;
    let bucket = settings.bucket.clone();
    let store = S3Store::connect(settings).await.unwrap();
    // What a wal-push killed mid-upload leaves, and an upload outside the swept prefix.
    let client = server.client();
    for key in ["clusters/main/wal/00000001/000000010000000000000003", "elsewhere/object"] {
        client.create_multipart_upload().bucket(&bucket).key(key).send().await.unwrap();
    }
    assert_eq!(server.open_multipart_uploads(&bucket).await, 2);

    // moto reports every upload as initiated on 2010-11-10, so the age bound itself cannot be
    // seen here: both uploads are old enough, and only the prefix decides.
    let swept = store.sweep("clusters/main/", Duration::from_secs(3600)).await.unwrap();
    assert_eq!(swept.partial, 1);
    assert_eq!(server.open_multipart_uploads(&bucket).await, 1, "only the upload under the prefix is aborted");
}
