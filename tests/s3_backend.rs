//! What only the S3 backend has to get right, checked against real local servers (moto and s3s-fs,
//! one fresh server per test): multipart uploads and their abort, conditional create-only puts,
//! keys under a prefix and paginated listing, and errors an operator can act on (missing bucket,
//! bad credentials, unreachable endpoint) that never contain a secret. The behaviour every backend
//! shares is `storage_conformance.rs`'s job.

mod support;

use std::time::{Duration, Instant};

use lifeboat::secret::Secret;
use lifeboat::storage::s3::{S3Credentials, S3Settings, S3Store};
use lifeboat::storage::{ByteReader, ObjectKey, ObjectStore, PutMode, StorageError};
use std::future::Future;

use tokio::io::AsyncReadExt;

use support::data::{FailsAfter, Pattern, generated, generated_bytes};
use support::s3::{S3Server, S3ServerKind};

const MIB: usize = 1024 * 1024;

/// Runs `async fn $name(kind: S3ServerKind)` once against each server.
macro_rules! on_both_servers {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test]
            async fn moto() {
                super::$name(S3ServerKind::Moto).await
            }

            #[tokio::test]
            async fn s3s_fs() {
                super::$name(S3ServerKind::S3sFs).await
            }
        }
    )*};
}

on_both_servers!(
    multipart_round_trip_with_ranges_across_parts,
    failed_body_aborts_the_multipart_upload,
    create_only_refuses_an_existing_object_and_leaves_it_unchanged,
    missing_bucket_is_named_as_such,
    create_only_holds_against_a_writer_racing_the_head_check,
    missing_objects_and_idempotent_delete,
    list_filters_by_prefix_sorts_and_follows_pagination,
);

fn key(name: &str) -> ObjectKey {
    ObjectKey::new(name).unwrap()
}

fn bytes_reader(bytes: impl Into<Vec<u8>>) -> ByteReader {
    Box::new(std::io::Cursor::new(bytes.into()))
}

async fn read_all(reader: ByteReader) -> Vec<u8> {
    let mut reader = reader;
    let mut out = Vec::new();
    reader.read_to_end(&mut out).await.unwrap();
    out
}

async fn store_on(server: &S3Server, configure: impl FnOnce(&mut S3Settings)) -> S3Store {
    let mut settings = server.fresh_bucket().await;
    configure(&mut settings);
    S3Store::connect(settings).await.unwrap()
}

async fn multipart_round_trip_with_ranges_across_parts(kind: S3ServerKind) {
    let server = S3Server::start(kind).await;
    let store = store_on(&server, |settings| {
        settings.prefix = "repo".into();
        settings.part_size = 5 * MIB;
    })
    .await;
    let bucket = store.location().trim_start_matches("s3://").split('/').next().unwrap().to_owned();
    // Eight full parts and a short ninth.
    let length = 40 * MIB + 12_345;
    let expected = generated_bytes(length as u64, 1, Pattern::Random).await;
    let object = key("big/object");

    store.put(&object, generated(length as u64, 1, Pattern::Random), PutMode::Overwrite).await.unwrap();

    let head = store.head(&object).await.unwrap().expect("the object exists");
    assert_eq!(head.size, length as u64);
    let raw = server.client().head_object().bucket(&bucket).key("repo/big/object").send().await.unwrap();
    let etag = raw.e_tag().unwrap_or_default();
    assert!(etag.ends_with("-9\""), "a multipart upload of 9 parts has an ETag ending in -9, got {etag}");

    let stored = read_all(store.get(&object).await.unwrap()).await;
    assert!(stored == expected, "the object read back differs from what was written");

    let boundary = 5 * MIB as u64;
    let across = read_all(store.get_range(&object, boundary - 1000..boundary + 1000).await.unwrap()).await;
    assert_eq!(across, expected[(boundary - 1000) as usize..(boundary + 1000) as usize]);
    let last_boundary = 40 * MIB as u64;
    let tail = read_all(store.get_range(&object, last_boundary - 7..length as u64 + 100).await.unwrap()).await;
    assert_eq!(tail, expected[last_boundary as usize - 7..], "a range past the end is cut at the end");
    for empty in [length as u64..length as u64 + 10, length as u64 + 5..length as u64 + 10, 10..10] {
        let bytes = read_all(store.get_range(&object, empty.clone()).await.unwrap()).await;
        assert!(bytes.is_empty(), "range {empty:?} of a {length}-byte object yields nothing");
    }

    assert_eq!(server.open_multipart_uploads(&bucket).await, 0, "no multipart upload is left open");
}

async fn failed_body_aborts_the_multipart_upload(kind: S3ServerKind) {
    let server = S3Server::start(kind).await;
    let settings = server.fresh_bucket().await;
    let bucket = settings.bucket.clone();
    let store = S3Store::connect(S3Settings { part_size: 5 * MIB, ..settings }).await.unwrap();
    let object = key("wal/broken");
    // The count below can see an open upload.
    let probe = server.client().create_multipart_upload().bucket(&bucket).key("probe").send().await.unwrap();
    assert_eq!(server.open_multipart_uploads(&bucket).await, 1);
    let probe_id = probe.upload_id().unwrap();
    server.client().abort_multipart_upload().bucket(&bucket).key("probe").upload_id(probe_id).send().await.unwrap();
    assert_eq!(server.open_multipart_uploads(&bucket).await, 0);

    // Two whole parts go up before the body fails in the third.
    let error = store.put(&object, Box::new(FailsAfter { good: 12 * MIB }), PutMode::Overwrite).await.unwrap_err();

    assert!(matches!(error, StorageError::Io { .. }), "{error:?}");
    assert!(error.to_string().contains("wal/broken"), "{error}");
    assert_eq!(store.head(&object).await.unwrap(), None, "nothing is visible after a failed put");
    assert_eq!(server.open_multipart_uploads(&bucket).await, 0, "the failed upload was aborted");
}

async fn create_only_refuses_an_existing_object_and_leaves_it_unchanged(kind: S3ServerKind) {
    let server = S3Server::start(kind).await;
    let store = store_on(&server, |settings| settings.part_size = 5 * MIB).await;
    let segment = key("wal/00000001/000000010000000000000001");
    store.put(&segment, bytes_reader("original"), PutMode::Overwrite).await.unwrap();

    let small = store.put(&segment, bytes_reader("replacement"), PutMode::CreateOnly).await.unwrap_err();
    assert!(matches!(small, StorageError::AlreadyExists { .. }), "{small:?}");
    let large =
        store.put(&segment, generated(11 * MIB as u64, 2, Pattern::Random), PutMode::CreateOnly).await.unwrap_err();
    assert!(matches!(large, StorageError::AlreadyExists { .. }), "{large:?}");
    assert!(!large.is_retryable());
    assert_eq!(read_all(store.get(&segment).await.unwrap()).await, b"original");

    // Where nothing exists, create-only writes, small and multipart alike.
    let fresh = key("wal/00000001/000000010000000000000002");
    store.put(&fresh, bytes_reader("new segment"), PutMode::CreateOnly).await.unwrap();
    assert_eq!(read_all(store.get(&fresh).await.unwrap()).await, b"new segment");
    let big = key("dumps/big");
    store.put(&big, generated(11 * MIB as u64, 3, Pattern::Random), PutMode::CreateOnly).await.unwrap();
    assert!(
        read_all(store.get(&big).await.unwrap()).await == generated_bytes(11 * MIB as u64, 3, Pattern::Random).await
    );
}

/// A body that signals when the store first reads it and then waits for a gate, so a test can
/// write the same key behind the store's back after its create-only head check and before its
/// PutObject or CompleteMultipartUpload.
struct GatedReader {
    inner: ByteReader,
    first_read: Option<tokio::sync::oneshot::Sender<()>>,
    gate: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl tokio::io::AsyncRead for GatedReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(signal) = self.first_read.take() {
            let _ = signal.send(());
        }
        if let Some(gate) = self.gate.as_mut() {
            std::task::ready!(std::pin::Pin::new(gate).poll(cx)).expect("the test opens the gate");
            self.gate = None;
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

async fn create_only_holds_against_a_writer_racing_the_head_check(kind: S3ServerKind) {
    let server = S3Server::start(kind).await;
    let settings = server.fresh_bucket().await;
    let bucket = settings.bucket.clone();
    let store = std::sync::Arc::new(S3Store::connect(S3Settings { part_size: 5 * MIB, ..settings }).await.unwrap());

    // One body small enough for PutObject, one that needs a multipart upload.
    for (name, body_length) in [("wal/small", 1000u64), ("dumps/large", 11 * MIB as u64)] {
        let (first_read_tx, first_read_rx) = tokio::sync::oneshot::channel();
        let (gate_tx, gate_rx) = tokio::sync::oneshot::channel();
        let body = GatedReader {
            inner: generated(body_length, 6, Pattern::Random),
            first_read: Some(first_read_tx),
            gate: Some(gate_rx),
        };
        let put = tokio::spawn({
            let store = store.clone();
            async move { store.put(&key(name), Box::new(body), PutMode::CreateOnly).await }
        });
        // The head check has passed once the body is read; now another writer gets in first.
        first_read_rx.await.unwrap();
        let raw = server.client();
        raw.put_object().bucket(&bucket).key(name).body(b"the other writer".to_vec().into()).send().await.unwrap();
        gate_tx.send(()).unwrap();

        let error = put.await.unwrap().unwrap_err();
        assert!(matches!(error, StorageError::AlreadyExists { .. }), "{name}: {error:?}");
        assert_eq!(read_all(store.get(&key(name)).await.unwrap()).await, b"the other writer", "{name}");
    }
    assert_eq!(server.open_multipart_uploads(&bucket).await, 0, "the refused multipart upload was aborted");
}

async fn missing_bucket_is_named_as_such(kind: S3ServerKind) {
    let server = S3Server::start(kind).await;
    let store = S3Store::connect(S3Settings { part_size: 5 * MIB, ..server.settings("lifeboat-no-such-bucket") })
        .await
        .unwrap();
    let object = key("lifeboat.repo");

    let mut errors = vec![
        store.get(&object).await.err().unwrap(),
        store.get_range(&object, 0..10).await.err().unwrap(),
        store.get_range(&object, 5..5).await.err().unwrap(),
        store.head(&object).await.unwrap_err(),
        store.list("clusters/").await.unwrap_err(),
        store.delete(&object).await.unwrap_err(),
        store.put(&object, bytes_reader("x"), PutMode::CreateOnly).await.unwrap_err(),
    ];
    // s3s-fs quietly creates the bucket's directory on PutObject, so unconditional writes are
    // checked on moto only (and last, so the quirk cannot hide the checks above).
    if kind == S3ServerKind::Moto {
        errors.push(store.put(&object, bytes_reader("x"), PutMode::Overwrite).await.unwrap_err());
        let multipart = generated(11 * MIB as u64, 5, Pattern::Random);
        errors.push(store.put(&object, multipart, PutMode::Overwrite).await.unwrap_err());
    }
    for error in errors {
        assert!(matches!(error, StorageError::BucketMissing { .. }), "{error:?}");
        assert!(!error.is_retryable());
        let message = error.to_string();
        assert!(message.contains("lifeboat-no-such-bucket") && message.contains("does not exist"), "{message}");
    }
}

async fn missing_objects_and_idempotent_delete(kind: S3ServerKind) {
    let server = S3Server::start(kind).await;
    let store = store_on(&server, |settings| settings.prefix = "p".into()).await;
    let missing = key("no/such/object");

    assert!(store.get(&missing).await.err().unwrap().is_not_found());
    assert!(store.get_range(&missing, 0..10).await.err().unwrap().is_not_found());
    assert!(store.get_range(&missing, 5..5).await.err().unwrap().is_not_found(), "even for an empty range");
    assert_eq!(store.head(&missing).await.unwrap(), None);
    store.delete(&missing).await.unwrap();

    let object = key("present");
    store.put(&object, bytes_reader("bytes"), PutMode::Overwrite).await.unwrap();
    store.delete(&object).await.unwrap();
    assert_eq!(store.head(&object).await.unwrap(), None);
    store.delete(&object).await.unwrap();
}

async fn list_filters_by_prefix_sorts_and_follows_pagination(kind: S3ServerKind) {
    let server = S3Server::start(kind).await;
    let settings = server.fresh_bucket().await;
    let bucket = settings.bucket.clone();
    let store =
        S3Store::connect(S3Settings { prefix: "team/repo".into(), ..settings }).await.unwrap().with_list_page_size(2);
    let raw = server.client();

    // Pages of two keys only exist if the server honours max-keys; check, so this test really
    // crosses page boundaries.
    for name in
        ["team/repo/a/10", "team/repo/b/1", "team/repo/a/1", "team/repo/a/sub/deep", "team/repo/ab", "team/repo/a/2"]
    {
        let relative = name.strip_prefix("team/repo/").unwrap();
        store.put(&key(relative), bytes_reader(relative), PutMode::Overwrite).await.unwrap();
    }
    // Neighbours the listing must not pick up: a sibling prefix sharing the same characters, the
    // bucket root, and a console-style folder marker that is no valid key.
    for name in ["team/repo-old/a/1", "team/x", "a/1", "team/repo/a/"] {
        let body = if name.ends_with('/') { Vec::new() } else { b"noise".to_vec() };
        raw.put_object().bucket(&bucket).key(name).body(body.into()).send().await.unwrap();
    }
    let page = raw.list_objects_v2().bucket(&bucket).prefix("team/repo/").max_keys(2).send().await.unwrap();
    assert_eq!(page.contents().len(), 2);
    assert_eq!(page.is_truncated(), Some(true), "the server paginates at max-keys");
    let stored = raw.head_object().bucket(&bucket).key("team/repo/a/sub/deep").send().await.unwrap();
    assert_eq!(stored.content_length(), Some(10), "keys are stored under the prefix");

    let names = |objects: Vec<lifeboat::storage::ObjectMeta>| {
        objects.into_iter().map(|meta| (meta.key.to_string(), meta.size)).collect::<Vec<_>>()
    };
    let all = names(store.list("").await.unwrap());
    let expected: Vec<(String, u64)> = ["a/1", "a/10", "a/2", "a/sub/deep", "ab", "b/1"]
        .into_iter()
        .map(|name| (name.to_owned(), name.len() as u64))
        .collect();
    assert_eq!(all, expected, "every page, sorted, with the prefix stripped");
    assert_eq!(names(store.list("a").await.unwrap()), expected[..5]);
    assert_eq!(names(store.list("a/").await.unwrap()), expected[..4]);
    assert_eq!(names(store.list("a/1").await.unwrap()), expected[..2]);
    assert!(store.list("c").await.unwrap().is_empty());
}

#[tokio::test]
async fn storage_class_is_applied_to_single_and_multipart_puts() {
    // moto records the storage class; s3s-fs ignores it.
    let server = S3Server::start(S3ServerKind::Moto).await;
    let settings = server.fresh_bucket().await;
    let bucket = settings.bucket.clone();
    let store =
        S3Store::connect(S3Settings { storage_class: Some("STANDARD_IA".into()), part_size: 5 * MIB, ..settings })
            .await
            .unwrap();
    store.put(&key("small"), bytes_reader("x"), PutMode::Overwrite).await.unwrap();
    store.put(&key("large"), generated(6 * MIB as u64, 4, Pattern::Random), PutMode::Overwrite).await.unwrap();
    for name in ["small", "large"] {
        let head = server.client().head_object().bucket(&bucket).key(name).send().await.unwrap();
        assert_eq!(head.storage_class().map(|class| class.as_str()), Some("STANDARD_IA"), "{name}");
    }
}

#[tokio::test]
async fn bad_credentials_are_access_denied_without_the_secret() {
    // moto accepts any credentials; s3s-fs checks signatures.
    let server = S3Server::start(S3ServerKind::S3sFs).await;
    let good = server.fresh_bucket().await;
    let secret = "do-not-print-this-secret-7f3a";
    let cases =
        [("wrong secret", support::s3::ACCESS_KEY.to_owned()), ("unknown access key", "no-such-access-key".to_owned())];
    for (case, access_key_id) in cases {
        let store = S3Store::connect(S3Settings {
            credentials: Some(S3Credentials {
                access_key_id,
                secret_access_key: Secret::new(secret),
                session_token: None,
            }),
            ..good.clone()
        })
        .await
        .unwrap();
        assert!(!format!("{store:?}").contains(secret));
        let object = key("lifeboat.repo");
        let errors = [
            store.put(&object, bytes_reader("x"), PutMode::Overwrite).await.unwrap_err(),
            store.get(&object).await.err().unwrap(),
            store.head(&object).await.unwrap_err(),
            store.list("").await.unwrap_err(),
        ];
        for error in errors {
            assert!(matches!(error, StorageError::AccessDenied { .. }), "{case}: {error:?}");
            assert!(!error.is_retryable());
            for shown in [error.to_string(), format!("{error:?}")] {
                assert!(!shown.contains(secret), "{case}: the secret leaked: {shown}");
            }
        }
    }
}

#[tokio::test]
async fn unreachable_endpoint_fails_quickly_and_names_the_endpoint() {
    // A port nothing listens on, and nothing else can take while the test runs (a port merely
    // closed again was once taken by another test's S3 server): bound, never listening.
    let (_reserved, port) = bound_not_listening();
    let endpoint = format!("http://127.0.0.1:{port}");
    let store = S3Store::connect(S3Settings {
        bucket: "backups".into(),
        prefix: String::new(),
        endpoint: Some(endpoint.clone()),
        region: "us-east-1".into(),
        force_path_style: true,
        storage_class: None,
        credentials: Some(S3Credentials {
            access_key_id: "key".into(),
            secret_access_key: Secret::new("unreachable-secret"),
            session_token: None,
        }),
        part_size: S3Settings::DEFAULT_PART_SIZE,
        // The default: the bound below includes every retry's backoff.
        max_attempts: S3Settings::DEFAULT_MAX_ATTEMPTS,
    })
    .await
    .unwrap();

    let started = Instant::now();
    let error = store.list("").await.unwrap_err();
    let elapsed = started.elapsed();

    assert!(matches!(error, StorageError::Unreachable { .. }), "{error:?}");
    assert!(error.is_retryable());
    let message = error.to_string();
    assert!(message.contains(&endpoint) && !message.contains("unreachable-secret"), "{message}");
    assert!(elapsed < Duration::from_secs(30), "gave up after {elapsed:?}");

    let started = Instant::now();
    let error = store.put(&key("x"), bytes_reader("x"), PutMode::Overwrite).await.unwrap_err();
    assert!(matches!(error, StorageError::Unreachable { .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(30), "gave up after {:?}", started.elapsed());
}

/// A TCP socket bound to a free port of 127.0.0.1 that never listens, so connecting to the port
/// is refused, and the port. Closed when the descriptor drops.
fn bound_not_listening() -> (std::os::fd::OwnedFd, u16) {
    use std::os::fd::FromRawFd as _;
    // SAFETY: plain socket calls on a descriptor this function owns; the address structs are
    // initialised and their sizes passed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let mut address: libc::sockaddr_in = std::mem::zeroed();
        address.sin_family = libc::AF_INET as libc::sa_family_t;
        address.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let size = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let bound = libc::bind(fd, (&raw const address).cast(), size);
        assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
        let mut length = size;
        let named = libc::getsockname(fd, (&raw mut address).cast(), &mut length);
        assert_eq!(named, 0, "getsockname: {}", std::io::Error::last_os_error());
        (owned, u16::from_be(address.sin_port))
    }
}
