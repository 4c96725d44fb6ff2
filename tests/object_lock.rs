//! S3 Object Lock against moto, which implements Object Lock, versioning and retention: objects of
//! the locked kinds are written with a retention date and cannot be deleted before it (the store
//! says until when); other objects (leases) are written and deleted as usual, for real, on the
//! versioned bucket; `lifeboat init` refuses a bucket that cannot lock; and a locked backup
//! survives `lifeboat delete --force`, every object of it still stored and visible.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use lifeboat::catalog::layout::retain;
use lifeboat::catalog::lease::Lease;
use lifeboat::object::{Cipher, WriteOptions};
use lifeboat::repository::Repository;
use lifeboat::storage::s3::{LockScope, ObjectLock, ObjectLockMode, Retain, S3Settings, S3Store};
use lifeboat::storage::{ByteReader, ObjectKey, ObjectStore, PutMode, StorageError};
use tokio::io::AsyncReadExt;

use support::archiving::{Options, Setup, execute, lifeboat_command};
use support::output::{assert_failure, assert_success};
use support::s3::{S3Server, S3ServerKind};

const MIB: usize = 1024 * 1024;

/// The configuration line the end-to-end tests lock with.
pub const GOVERNANCE_ONE_DAY: &str = "object_lock = { mode = \"governance\", days = 1 }\n";

/// moto, and a bucket on it with Object Lock enabled: the bucket's name. For tests that run
/// lifeboat against an immutable repository (with [`locked_setup`], or `Options::s3` plus
/// [`GOVERNANCE_ONE_DAY`]).
pub async fn moto_with_locked_bucket() -> (S3Server, String) {
    let server = S3Server::start(S3ServerKind::Moto).await;
    let bucket = server.fresh_locked_bucket().await.bucket;
    (server, bucket)
}

/// A cluster archiving with `wal-push` into an initialised repository in `bucket` with
/// `object_lock = { mode = "governance", days = 1 }`.
pub async fn locked_setup(server: &S3Server, bucket: &str) -> Setup {
    Setup::with(Options::restorable().s3(server, bucket).extra(GOVERNANCE_ONE_DAY)).await
}

/// The standard output of a command that must succeed.
fn stdout_of(output: &std::process::Output) -> String {
    assert_success(output);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new(name).unwrap()
}

fn bytes_reader(bytes: impl Into<Vec<u8>>) -> ByteReader {
    Box::new(std::io::Cursor::new(bytes.into()))
}

async fn read_all(store: &dyn ObjectStore, key: &ObjectKey) -> Vec<u8> {
    let mut out = Vec::new();
    store.get(key).await.unwrap().read_to_end(&mut out).await.unwrap();
    out
}

/// Every version and delete marker of exactly `key` in `bucket`.
async fn versions(server: &S3Server, bucket: &str, key: &str) -> usize {
    let listed = server.client().list_object_versions().bucket(bucket).prefix(key).send().await.unwrap();
    listed.versions().iter().filter(|version| version.key() == Some(key)).count()
        + listed.delete_markers().iter().filter(|marker| marker.key() == Some(key)).count()
}

/// Keys under `prefix` are written once under retention; the rest plainly.
fn locking_under(prefix: &'static str) -> LockScope {
    Arc::new(move |key: &ObjectKey| if key.as_str().starts_with(prefix) { Retain::Once } else { Retain::No })
}

const ONE_DAY: ObjectLock = ObjectLock { mode: ObjectLockMode::Governance, days: 1 };

#[tokio::test]
async fn a_locked_object_cannot_be_deleted_and_says_until_when() {
    let server = S3Server::start(S3ServerKind::Moto).await;
    let settings = S3Settings { part_size: 5 * MIB, ..server.fresh_locked_bucket().await };
    let bucket = settings.bucket.clone();
    let store = S3Store::connect(settings).await.unwrap().with_object_lock(ONE_DAY, locking_under("locked/"));
    let before = Utc::now();

    // One single PUT and one multipart upload (moto ignores the headers on CreateMultipartUpload;
    // the store notices and sets the retention afterwards).
    let small = key("locked/small");
    let large = key("locked/large");
    let large_body = vec![7u8; 11 * MIB];
    store.put(&small, bytes_reader("kept"), PutMode::CreateOnly).await.unwrap();
    store.put(&large, bytes_reader(large_body.clone()), PutMode::CreateOnly).await.unwrap();
    for locked in [&small, &large] {
        let head = server.client().head_object().bucket(&bucket).key(locked.as_str()).send().await.unwrap();
        assert_eq!(head.object_lock_mode().map(|mode| mode.as_str()), Some("GOVERNANCE"), "{locked}");
        let until = store.locked_until(locked).await.unwrap().expect("a retention date");
        let expected = before + TimeDelta::days(1);
        assert!(until >= expected - TimeDelta::seconds(5) && until <= expected + TimeDelta::seconds(60), "{until}");

        let error = store.delete(locked).await.unwrap_err();
        let StorageError::Locked { until: said, .. } = &error else { panic!("expected Locked, got {error:?}") };
        assert_eq!(*said, until, "the error gives the retention date");
        assert!(error.to_string().contains(&until.to_string()), "{error}");
        assert_eq!(versions(&server, &bucket, locked.as_str()).await, 1, "no delete marker hides it");
    }
    assert_eq!(read_all(&store, &small).await, b"kept");
    assert_eq!(read_all(&store, &large).await, large_body);

    // A locked kind is never overwritten (each overwrite would be another retained version).
    let error = store.put(&small, bytes_reader("replaced"), PutMode::Overwrite).await.unwrap_err();
    assert!(error.to_string().contains("Object Lock"), "{error}");
    assert_eq!(
        (read_all(&store, &small).await, versions(&server, &bucket, "locked/small").await),
        (b"kept".to_vec(), 1)
    );

    // Keys outside the scope are written without retention and deleted for real: every version
    // goes, and only the exact key (not `free/ab`, which shares the prefix).
    let free = key("free/a");
    let neighbour = key("free/ab");
    store.put(&free, bytes_reader("1"), PutMode::Overwrite).await.unwrap();
    store.put(&free, bytes_reader("2"), PutMode::Overwrite).await.unwrap();
    store.put(&neighbour, bytes_reader("n"), PutMode::CreateOnly).await.unwrap();
    assert_eq!(store.locked_until(&free).await.unwrap(), None);
    assert_eq!(versions(&server, &bucket, "free/a").await, 2);
    store.delete(&free).await.unwrap();
    assert_eq!(versions(&server, &bucket, "free/a").await, 0, "no version or delete marker is left");
    assert_eq!(read_all(&store, &neighbour).await, b"n");
    store.delete(&free).await.unwrap();
    assert_eq!(store.locked_until(&key("locked/never-written")).await.unwrap(), None);
}

#[tokio::test]
async fn a_lapsed_retention_lets_the_object_go_entirely() {
    let server = S3Server::start(S3ServerKind::Moto).await;
    let settings = server.fresh_locked_bucket().await;
    let bucket = settings.bucket.clone();
    let store = S3Store::connect(settings).await.unwrap().with_object_lock(ONE_DAY, locking_under("locked/"));
    // Written by hand with a retention of two seconds, as an object past its date would be.
    let until = aws_sdk_s3::primitives::DateTime::from_secs(Utc::now().timestamp() + 2);
    server
        .client()
        .put_object()
        .bucket(&bucket)
        .key("locked/old")
        .body(b"old".to_vec().into())
        .object_lock_mode(aws_sdk_s3::types::ObjectLockMode::Governance)
        .object_lock_retain_until_date(until)
        .send()
        .await
        .unwrap();
    assert!(store.locked_until(&key("locked/old")).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(store.locked_until(&key("locked/old")).await.unwrap(), None);
    store.delete(&key("locked/old")).await.unwrap();
    assert_eq!(versions(&server, &bucket, "locked/old").await, 0, "the bytes are freed, not hidden");
}

#[tokio::test]
async fn a_store_without_object_lock_is_unchanged() {
    let server = S3Server::start(S3ServerKind::Moto).await;
    let settings = server.fresh_bucket().await;
    let bucket = settings.bucket.clone();
    let store = S3Store::connect(settings).await.unwrap();
    assert_eq!(store.object_lock(), None);
    let object = key("clusters/main/backups/x/manifest");
    store.put(&object, bytes_reader("a"), PutMode::CreateOnly).await.unwrap();
    let head = server.client().head_object().bucket(&bucket).key(object.as_str()).send().await.unwrap();
    assert_eq!(head.object_lock_mode(), None, "no retention without object_lock");
    assert_eq!(store.locked_until(&object).await.unwrap(), None);
    store.put(&object, bytes_reader("b"), PutMode::Overwrite).await.unwrap();
    store.delete(&object).await.unwrap();
    assert_eq!(store.head(&object).await.unwrap(), None);
}

#[tokio::test]
async fn leases_are_taken_and_released_on_a_locked_store() {
    let server = S3Server::start(S3ServerKind::Moto).await;
    let settings = server.fresh_locked_bucket().await;
    let bucket = settings.bucket.clone();
    let store = S3Store::connect(settings).await.unwrap().with_object_lock(ONE_DAY, Arc::new(retain));
    let repository =
        Arc::new(Repository::init(Arc::new(store), Cipher::None, None, "", WriteOptions::default()).await.unwrap());
    let lock = key("clusters/main/locks/backup");
    let long = Duration::from_secs(60);
    for holder in ["first", "second"] {
        let lease = Lease::acquire(repository.clone(), &lock, holder, long, long).await.unwrap();
        lease.release().await.unwrap();
    }
    assert!(repository.store().list("clusters/main/locks/").await.unwrap().is_empty());
    let listed = server.client().list_object_versions().bucket(&bucket).prefix("clusters/main/locks/").send().await;
    let listed = listed.unwrap();
    assert!(listed.versions().is_empty() && listed.delete_markers().is_empty(), "{listed:?}");

    // lifeboat.repo is rewritten in place (`key add`), each version retained: the rewrite works,
    // and neither version can be deleted.
    let head = server.client().head_object().bucket(&bucket).key("lifeboat.repo").send().await.unwrap();
    assert_eq!(head.object_lock_mode().map(|mode| mode.as_str()), Some("GOVERNANCE"));
    let repo_file = key("lifeboat.repo");
    let store = repository.store();
    let rewritten = read_all(store.as_ref(), &repo_file).await;
    store.put(&repo_file, bytes_reader(rewritten.clone()), PutMode::Overwrite).await.unwrap();
    assert_eq!(versions(&server, &bucket, "lifeboat.repo").await, 2);
    let error = store.delete(&repo_file).await.unwrap_err();
    assert!(matches!(error, StorageError::Locked { .. }), "{error:?}");
    assert_eq!(read_all(store.as_ref(), &repo_file).await, rewritten);
}

/// A configuration for `lifeboat init` alone: no cluster needed, no key.
fn init_config(dir: &tempfile::TempDir, server: &S3Server, bucket: &str, lock_line: &str) -> std::path::PathBuf {
    let path = dir.path().join("lifeboat.toml");
    let text = format!(
        "[cluster]\nname = \"main\"\n\n[repository]\nurl = \"s3://{bucket}/prod\"\ncipher = \"none\"\n\n\
         [repository.s3]\nendpoint = \"{endpoint}\"\nforce_path_style = true\naccess_key_id = \"{id}\"\n\
         secret_access_key = \"{secret}\"\n{lock_line}\n[audit]\npath = \"{audit}\"\n",
        endpoint = server.endpoint(),
        id = support::s3::ACCESS_KEY,
        secret = support::s3::SECRET_KEY,
        audit = dir.path().join("audit.jsonl").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn init_refuses_a_bucket_that_cannot_lock_and_accepts_one_that_can() {
    let server = S3Server::start(S3ServerKind::Moto).await;
    let dir = tempfile::tempdir().unwrap();

    let plain = server.fresh_bucket().await.bucket;
    let config = init_config(&dir, &server, &plain, "object_lock_days = 7\n");
    let error = assert_failure(&lifeboat_command(&config, &["init"]).output().unwrap());
    assert!(error.contains(&format!("bucket \"{plain}\" does not have Object Lock enabled")), "{error}");
    assert!(error.contains("--object-lock-enabled-for-bucket") && error.contains("remove object_lock"), "{error}");
    let listed = server.client().list_objects_v2().bucket(&plain).send().await.unwrap();
    assert!(listed.contents().is_empty(), "nothing written to a bucket that cannot lock");

    // A default retention would lock the leases too.
    let defaulted = server.fresh_locked_bucket().await.bucket;
    let rule = aws_sdk_s3::types::ObjectLockRule::builder()
        .default_retention(
            aws_sdk_s3::types::DefaultRetention::builder()
                .mode(aws_sdk_s3::types::ObjectLockRetentionMode::Governance)
                .days(1)
                .build(),
        )
        .build();
    let configuration = aws_sdk_s3::types::ObjectLockConfiguration::builder()
        .object_lock_enabled(aws_sdk_s3::types::ObjectLockEnabled::Enabled)
        .rule(rule)
        .build();
    server
        .client()
        .put_object_lock_configuration()
        .bucket(&defaulted)
        .object_lock_configuration(configuration)
        .send()
        .await
        .unwrap();
    let config = init_config(&dir, &server, &defaulted, GOVERNANCE_ONE_DAY);
    let error = assert_failure(&lifeboat_command(&config, &["init"]).output().unwrap());
    assert!(error.contains("default retention (governance, 1 days)") && error.contains("leases"), "{error}");

    let locked = server.fresh_locked_bucket().await.bucket;
    let config = init_config(&dir, &server, &locked, GOVERNANCE_ONE_DAY);
    assert_success(&lifeboat_command(&config, &["init"]).output().unwrap());
    let checked = lifeboat_command(&config, &["config", "check"]).output().unwrap();
    assert_success(&checked);
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert!(stdout.contains("ok   Object Lock: governance mode, 1 days"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_locked_backup_survives_delete_force() {
    let (server, bucket) = moto_with_locked_bucket().await;
    let setup = locked_setup(&server, &bucket).await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE kept AS SELECT g AS id FROM generate_series(1, 1000) g").await;
    // What a failed backup leaves on a locked repository: data objects without a manifest, retained.
    // The next backup cannot remove them yet and must not fail because of them.
    let orphan = key("clusters/main/backups/20200101T000000Z-full/base/1/1259");
    let repository = setup.repository().await;
    repository.store().put(&orphan, bytes_reader("left by a failed backup"), PutMode::CreateOnly).await.unwrap();
    let before = Utc::now();
    let id = setup.backup().await;
    assert!(repository.store().head(&orphan).await.unwrap().is_some(), "retained until its date");

    let prefix = format!("prod/clusters/main/backups/{id}/");
    let manifest = format!("{prefix}manifest");
    let head = server.client().head_object().bucket(&bucket).key(&manifest).send().await.unwrap();
    assert_eq!(head.object_lock_mode().map(|mode| mode.as_str()), Some("GOVERNANCE"), "the manifest is locked");
    let until = head.object_lock_retain_until_date().expect("a retention date").secs();
    let until = chrono::DateTime::<Utc>::from_timestamp(until, 0).unwrap();
    assert!(until > before + TimeDelta::hours(23), "{until}");
    let stored = |bucket: String| {
        let client = server.client();
        let prefix = prefix.clone();
        async move {
            let listed = client.list_object_versions().bucket(bucket).prefix(prefix).send().await.unwrap();
            let mut keys: Vec<String> =
                listed.versions().iter().filter_map(|version| version.key().map(str::to_owned)).collect();
            keys.sort();
            (keys, listed.delete_markers().len())
        }
    };
    let (objects, markers) = stored(bucket.clone()).await;
    assert!(objects.len() >= 2 && markers == 0, "{objects:?}");

    let error = assert_failure(&setup.run(&["delete", "--force", &id]));
    let date = until.format("%Y-%m-%d %H:%M:%S").to_string();
    assert!(error.contains(&date) && error.contains("Object Lock"), "the message gives the retention date: {error}");
    assert_eq!(
        stored(bucket.clone()).await,
        (objects.clone(), 0),
        "every object stays, none hidden by a delete marker"
    );
    let body = server.client().get_object().bucket(&bucket).key(&manifest).send().await.unwrap();
    assert!(!body.body.collect().await.unwrap().into_bytes().is_empty());
    // The refusal came before anything was recorded: the backup is still listed, with no problem.
    let listed = stdout_of(&setup.run(&["list"]));
    assert!(listed.contains(&id), "{listed}");

    // A policy that keeps nothing: the locked backup stays, and expire says until when.
    let config = setup.config_path();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replacen("[backup]\n", "[backup]\nretention = { full = 0, max_age = \"1s\" }\n", 1))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let expired = stdout_of(&setup.run(&["expire"]));
    assert!(expired.contains("locked") && expired.contains(&date), "expire gives the retention date: {expired}");
    let report: serde_json::Value = serde_json::from_str(&stdout_of(&setup.run(&["expire", "--json"]))).unwrap();
    assert!(
        report["locked"].as_array().unwrap().iter().any(|locked| locked["key"] == manifest.trim_start_matches("prod/")),
        "{report}"
    );
    assert_eq!(stored(bucket.clone()).await, (objects, 0), "expire removed nothing of it");
    let listed = stdout_of(&setup.run(&["list"]));
    assert!(listed.contains(&id), "{listed}");
}
