//! One conformance suite, run unchanged against every storage backend: the local directory and
//! two real S3-compatible servers (moto and s3s-fs) started on 127.0.0.1 for each test.
//!
//! Raw checks exercise the `ObjectStore` contract; sealed checks run the repository (object
//! format, keys) on top, because the format's promises (byte-identical round trips at chunk
//! boundaries, tamper detection) must hold on every backend, not only on the one it was written on.

mod support;

use std::sync::Arc;

use lifeboat::keys::Unlock;
use lifeboat::object::{Cipher, Compression, ObjectError, WriteOptions};
use lifeboat::repository::{Repository, RepositoryError};
use lifeboat::secret::Secret;
use lifeboat::storage::local::LocalStore;
use lifeboat::storage::s3::S3Store;
use lifeboat::storage::{ObjectKey, ObjectStore, PutMode, StorageError};
use tokio::io::AsyncReadExt;

use support::data::{FailsAfter, Pattern, generated, generated_bytes, hash_reader};
use support::s3::{S3Server, S3ServerKind};

/// A store for one test, and whatever must live as long as it (a temp dir or a server).
struct Harness {
    store: Arc<dyn ObjectStore>,
    _server: Option<S3Server>,
    _dir: Option<tempfile::TempDir>,
}

#[derive(Debug, Clone, Copy)]
enum Backend {
    Local,
    Moto,
    S3sFs,
}

impl Harness {
    async fn new(backend: Backend) -> Harness {
        match backend {
            Backend::Local => {
                let dir = tempfile::tempdir().unwrap();
                Harness { store: Arc::new(LocalStore::new(dir.path().join("repo"))), _server: None, _dir: Some(dir) }
            }
            Backend::Moto | Backend::S3sFs => {
                let kind = if matches!(backend, Backend::Moto) { S3ServerKind::Moto } else { S3ServerKind::S3sFs };
                let server = S3Server::start(kind).await;
                let settings = server.fresh_bucket().await;
                let store = S3Store::connect(settings).await.unwrap();
                Harness { store: Arc::new(store), _server: Some(server), _dir: None }
            }
        }
    }
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new(name).unwrap()
}

fn bytes_reader(bytes: Vec<u8>) -> lifeboat::storage::ByteReader {
    Box::new(std::io::Cursor::new(bytes))
}

async fn read_all(store: &dyn ObjectStore, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    store.get(&key(name)).await.unwrap().read_to_end(&mut out).await.unwrap();
    out
}

fn passphrase(text: &str) -> Unlock {
    Unlock::Passphrase(Secret::new(text))
}

const CHUNK: u64 = 1024 * 1024;

async fn encrypted_repository(store: Arc<dyn ObjectStore>, options: WriteOptions) -> Repository {
    Repository::init(store, Cipher::Aes256Gcm, Some(&passphrase("conformance passphrase")), "test", options)
        .await
        .unwrap()
}

mod checks {
    use super::*;

    pub async fn raw_round_trip(store: Arc<dyn ObjectStore>) {
        for (index, len) in [0u64, 1, 4095, 65_536, 3 * CHUNK + 17].into_iter().enumerate() {
            let name = format!("raw/object-{index}");
            let data = generated_bytes(len, index as u64, Pattern::Random).await;
            store.put(&key(&name), bytes_reader(data.clone()), PutMode::Overwrite).await.unwrap();
            assert_eq!(read_all(store.as_ref(), &name).await, data, "{len}-byte object changed in a round trip");
            assert_eq!(store.head(&key(&name)).await.unwrap().unwrap().size, len);
        }
    }

    pub async fn overwrite_and_create_only(store: Arc<dyn ObjectStore>) {
        let name = key("modes/object");
        store.put(&name, bytes_reader(b"first".to_vec()), PutMode::CreateOnly).await.unwrap();
        let refused = store.put(&name, bytes_reader(b"second".to_vec()), PutMode::CreateOnly).await;
        assert!(matches!(refused, Err(StorageError::AlreadyExists { .. })), "{refused:?}");
        assert_eq!(read_all(store.as_ref(), "modes/object").await, b"first", "a refused put changed the object");
        store.put(&name, bytes_reader(b"third".to_vec()), PutMode::Overwrite).await.unwrap();
        assert_eq!(read_all(store.as_ref(), "modes/object").await, b"third");
    }

    pub async fn missing_objects(store: Arc<dyn ObjectStore>) {
        let missing = key("nothing/here");
        let error = store.get(&missing).await.err().expect("get of a missing object must fail");
        assert!(error.is_not_found(), "{error}");
        assert!(error.to_string().contains("nothing/here"), "the error must name the object: {error}");
        assert!(!error.is_retryable());
        assert_eq!(store.head(&missing).await.unwrap(), None);
        store.delete(&missing).await.expect("deleting a missing object succeeds, so deletes can be retried");
    }

    pub async fn ranged_reads(store: Arc<dyn ObjectStore>) {
        let data = generated_bytes(100_000, 9, Pattern::Random).await;
        let name = key("ranges/object");
        store.put(&name, bytes_reader(data.clone()), PutMode::Overwrite).await.unwrap();
        for (start, end) in [(0u64, 10u64), (4096, 70_000), (99_990, 100_000), (99_990, 200_000), (500, 500)] {
            let mut out = Vec::new();
            store.get_range(&name, start..end).await.unwrap().read_to_end(&mut out).await.unwrap();
            let expected = &data[start as usize..(end.min(100_000)) as usize];
            assert_eq!(out, expected, "range {start}..{end}");
        }
    }

    pub async fn list_by_prefix(store: Arc<dyn ObjectStore>) {
        for name in ["list/b/2", "list/a/1", "list/ab", "list/b/10", "other/x", "lists/y"] {
            store.put(&key(name), bytes_reader(name.as_bytes().to_vec()), PutMode::Overwrite).await.unwrap();
        }
        let names = |listed: Vec<lifeboat::storage::ObjectMeta>| -> Vec<String> {
            listed.into_iter().map(|meta| meta.key.to_string()).collect()
        };
        assert_eq!(names(store.list("list/").await.unwrap()), ["list/a/1", "list/ab", "list/b/10", "list/b/2"]);
        assert_eq!(names(store.list("list/a").await.unwrap()), ["list/a/1", "list/ab"], "prefixes are plain strings");
        assert_eq!(names(store.list("list/b/").await.unwrap()), ["list/b/10", "list/b/2"]);
        assert!(store.list("absent/").await.unwrap().is_empty());
        let all = store.list("").await.unwrap();
        assert_eq!(all.len(), 6);
        assert_eq!(all.iter().find(|meta| meta.key.as_str() == "list/ab").unwrap().size, 7);
        store.delete(&key("list/ab")).await.unwrap();
        assert_eq!(names(store.list("list/a").await.unwrap()), ["list/a/1"]);
    }

    pub async fn failed_body_leaves_nothing(store: Arc<dyn ObjectStore>) {
        let name = key("failed/object");
        let result = store.put(&name, Box::new(FailsAfter { good: 3 * 1024 * 1024 }), PutMode::Overwrite).await;
        assert!(result.is_err(), "a put whose body fails must fail");
        assert_eq!(store.head(&name).await.unwrap(), None, "a failed put left an object behind");
        assert!(store.list("failed/").await.unwrap().is_empty());
    }

    /// A sweep for leftovers of interrupted puts, even with no age bound, removes no object and
    /// leaves every listing as it was (and the backend accepts the calls it makes).
    pub async fn sweep_keeps_every_object(store: Arc<dyn ObjectStore>) {
        for name in ["kept/a", "kept/deep/er/b", "kept/empty", "other/c"] {
            let data = if name.ends_with("empty") { Vec::new() } else { name.as_bytes().to_vec() };
            store.put(&key(name), bytes_reader(data), PutMode::CreateOnly).await.unwrap();
        }
        let before = store.list("").await.unwrap();
        let swept = store.sweep("kept/", std::time::Duration::ZERO).await.unwrap();
        assert_eq!(swept.partial, 0, "nothing was interrupted: {swept:?}");
        assert_eq!(store.list("").await.unwrap(), before);
        assert_eq!(read_all(store.as_ref(), "kept/deep/er/b").await, b"kept/deep/er/b");
        store.sweep("", std::time::Duration::from_secs(3600)).await.unwrap();
        assert_eq!(store.list("").await.unwrap(), before);
    }

    /// Byte-identical sealed round trips at every size that stresses chunking: 0, 1, one chunk
    /// minus one, one chunk, one chunk plus one. Without compression the sealed stream is the
    /// plaintext itself, so these sizes land exactly on chunk boundaries.
    pub async fn sealed_chunk_boundaries(store: Arc<dyn ObjectStore>) {
        encrypted_repository(store.clone(), WriteOptions::default()).await;
        for compression in [Compression::None, Compression::Zstd] {
            let options = WriteOptions { compression, ..WriteOptions::default() };
            let prefix = format!("{compression:?}").to_lowercase();
            let repository =
                Repository::open(store.clone(), Some(&passphrase("conformance passphrase")), options).await.unwrap();
            for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1] {
                let name = key(&format!("sealed/{prefix}/{len}"));
                let data = generated_bytes(len, len, Pattern::Random).await;
                let summary = repository.put_bytes(&name, data.clone(), PutMode::Overwrite).await.unwrap();
                assert_eq!(summary.plaintext_len, len);
                assert_eq!(summary.plaintext_hash, Some(blake3::hash(&data)));
                let stored = store.head(&name).await.unwrap().unwrap().size;
                assert_eq!(stored, summary.stored_len);
                assert_eq!(repository.get_bytes(&name).await.unwrap(), data, "{compression:?} {len} bytes");
                if compression == Compression::None {
                    let chunks = len.div_ceil(CHUNK).max(1);
                    assert_eq!(stored, 64 + len + 16 * chunks, "{len} bytes should take {chunks} chunk(s)");
                }
            }
        }
    }

    pub async fn sealed_100_mib(store: Arc<dyn ObjectStore>) {
        let repository = encrypted_repository(store.clone(), WriteOptions::default()).await;
        let len = 100 * 1024 * 1024;
        let name = key("big/100mib");
        let summary = repository.put(&name, generated(len, 100, Pattern::Rows), PutMode::Overwrite).await.unwrap();
        let (expected_len, expected_hash) = hash_reader(generated(len, 100, Pattern::Rows)).await.unwrap();
        assert_eq!((summary.plaintext_len, summary.plaintext_hash), (expected_len, Some(expected_hash)));
        assert!(summary.stored_len < len / 2, "row-like data should compress: {} bytes stored", summary.stored_len);
        let (read_len, read_hash) = hash_reader(repository.get(&name).await.unwrap()).await.unwrap();
        assert_eq!((read_len, read_hash), (expected_len, expected_hash), "100 MiB object changed in a round trip");
    }

    /// Small chunks and no compression, so the stored layout is known: a 64-byte header, then
    /// records of chunk + 16-byte tag.
    const TAMPER_CHUNK: usize = 4096;

    async fn tamper_setup(store: &Arc<dyn ObjectStore>) -> (Repository, Vec<u8>) {
        let options =
            WriteOptions { compression: Compression::None, chunk_size: TAMPER_CHUNK as u32, ..WriteOptions::default() };
        let repository = encrypted_repository(store.clone(), options).await;
        let data = generated_bytes(3 * TAMPER_CHUNK as u64 + 100, 5, Pattern::Random).await;
        repository.put_bytes(&key("victim/object"), data.clone(), PutMode::Overwrite).await.unwrap();
        repository.put_bytes(&key("victim/other"), data.clone(), PutMode::Overwrite).await.unwrap();
        (repository, read_all(store.as_ref(), "victim/object").await)
    }

    fn record(index: usize) -> std::ops::Range<usize> {
        let start = 64 + index * (TAMPER_CHUNK + 16);
        start..start + TAMPER_CHUNK + 16
    }

    async fn open_error(repository: &Repository, name: &str) -> ObjectError {
        match repository.get_bytes(&key(name)).await {
            Err(RepositoryError::Object(error)) => {
                assert!(error.to_string().contains(name), "the error must name the object: {error}");
                error
            }
            other => panic!("expected an object error for {name}, got {other:?}"),
        }
    }

    pub async fn tampering_is_detected(store: Arc<dyn ObjectStore>) {
        let (repository, stored) = tamper_setup(&store).await;
        let put_raw = |name: &'static str, bytes: Vec<u8>| {
            let store = store.clone();
            async move { store.put(&key(name), bytes_reader(bytes), PutMode::Overwrite).await.unwrap() }
        };

        let mut flipped = stored.clone();
        flipped[record(1).start + 100] ^= 0x04;
        put_raw("victim/object", flipped).await;
        let error = open_error(&repository, "victim/object").await;
        assert!(matches!(error, ObjectError::Tampered { chunk: 1, .. }), "flipped bit: {error}");

        let truncated = stored[..record(2).end].to_vec();
        put_raw("victim/object", truncated).await;
        let error = open_error(&repository, "victim/object").await;
        assert!(matches!(error, ObjectError::Truncated { intact_chunks: 3, .. }), "truncated at a boundary: {error}");

        let truncated_header_only = stored[..64].to_vec();
        put_raw("victim/object", truncated_header_only).await;
        let error = open_error(&repository, "victim/object").await;
        assert!(matches!(error, ObjectError::Truncated { intact_chunks: 0, .. }), "only the header left: {error}");

        let mut swapped = stored.clone();
        let (first, second) = (stored[record(0)].to_vec(), stored[record(1)].to_vec());
        swapped[record(0)].copy_from_slice(&second);
        swapped[record(1)].copy_from_slice(&first);
        put_raw("victim/object", swapped).await;
        let error = open_error(&repository, "victim/object").await;
        assert!(matches!(error, ObjectError::Tampered { chunk: 0, .. }), "swapped chunks: {error}");

        // victim/other holds the same plaintext, but its bytes must not pass as victim/object.
        let other = read_all(store.as_ref(), "victim/other").await;
        put_raw("victim/object", other).await;
        let error = open_error(&repository, "victim/object").await;
        assert!(matches!(error, ObjectError::Tampered { chunk: 0, .. }), "another object's bytes: {error}");

        put_raw("victim/object", stored.clone()).await;
        assert_eq!(repository.get_bytes(&key("victim/object")).await.unwrap().len(), 3 * TAMPER_CHUNK + 100);
    }

    pub async fn wrong_and_removed_keys(store: Arc<dyn ObjectStore>) {
        let options = WriteOptions::default();
        let mut repository = encrypted_repository(store.clone(), options).await;
        repository.put_bytes(&key("data/x"), b"precious rows".to_vec(), PutMode::CreateOnly).await.unwrap();

        let wrong = Repository::open(store.clone(), Some(&passphrase("not the passphrase")), options).await;
        let error = wrong.expect_err("a wrong passphrase must not open the repository");
        assert!(matches!(error, RepositoryError::NoMatchingSlot { tried: 1, .. }), "{error}");
        assert!(!error.to_string().contains("not the passphrase"), "the error must not echo the secret");

        let first_slot = repository.file().slots[0].id.clone();
        repository.add_slot(&passphrase("second passphrase"), "second").await.unwrap();
        repository.remove_slot(&first_slot).await.unwrap();
        let revoked = Repository::open(store.clone(), Some(&passphrase("conformance passphrase")), options).await;
        assert!(
            matches!(revoked, Err(RepositoryError::NoMatchingSlot { .. })),
            "a removed slot's passphrase still opens the repository"
        );
        let reopened = Repository::open(store.clone(), Some(&passphrase("second passphrase")), options).await.unwrap();
        assert_eq!(reopened.get_bytes(&key("data/x")).await.unwrap(), b"precious rows", "data survives key changes");
        let mut reopened = reopened;
        let last = reopened.file().slots[0].id.clone();
        assert!(matches!(reopened.remove_slot(&last).await, Err(RepositoryError::LastSlot { .. })));

        // A slot change starts from lifeboat.repo as stored now: `stale` opened before a slot was
        // added elsewhere, and its change keeps that slot.
        let stale = Repository::open(store.clone(), Some(&passphrase("second passphrase")), options).await.unwrap();
        reopened.add_slot(&passphrase("third passphrase"), "third").await.unwrap();
        let mut changing = stale.for_slot_change().await.unwrap();
        changing.add_slot(&passphrase("fourth passphrase"), "fourth").await.unwrap();
        for (phrase, label) in [("third passphrase", "third"), ("fourth passphrase", "fourth")] {
            let opened = Repository::open(store.clone(), Some(&passphrase(phrase)), options).await.unwrap();
            assert_eq!(opened.opened_slot().unwrap().label, label);
            assert_eq!(opened.get_bytes(&key("data/x")).await.unwrap(), b"precious rows");
        }
        assert_eq!(changing.file().slots.len(), 3, "{:?}", changing.file().slots);
    }

    pub async fn unencrypted_object_in_encrypted_repository_is_refused(store: Arc<dyn ObjectStore>) {
        let repository = encrypted_repository(store.clone(), WriteOptions::default()).await;
        // A forger without the key writes a well-formed `cipher = none` object.
        let plain_repository_dir = tempfile::tempdir().unwrap();
        let plain_store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(plain_repository_dir.path()));
        let plain =
            Repository::init(plain_store.clone(), Cipher::None, None, "", WriteOptions::default()).await.unwrap();
        plain.put_bytes(&key("data/forged"), b"forged rows".to_vec(), PutMode::Overwrite).await.unwrap();
        let forged = read_all(plain_store.as_ref(), "data/forged").await;
        store.put(&key("data/forged"), bytes_reader(forged), PutMode::Overwrite).await.unwrap();
        let error = open_error(&repository, "data/forged").await;
        assert!(matches!(error, ObjectError::Unencrypted { .. }), "{error}");
    }
}

macro_rules! conformance {
    ($($backend:ident => $kind:expr;)*) => {$(
        mod $backend {
            use super::*;

            async fn store() -> (Harness, Arc<dyn ObjectStore>) {
                let harness = Harness::new($kind).await;
                let store = harness.store.clone();
                (harness, store)
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn raw_round_trip() { let (_h, s) = store().await; checks::raw_round_trip(s).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn overwrite_and_create_only() { let (_h, s) = store().await; checks::overwrite_and_create_only(s).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn missing_objects() { let (_h, s) = store().await; checks::missing_objects(s).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn ranged_reads() { let (_h, s) = store().await; checks::ranged_reads(s).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn list_by_prefix() { let (_h, s) = store().await; checks::list_by_prefix(s).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn failed_body_leaves_nothing() { let (_h, s) = store().await; checks::failed_body_leaves_nothing(s).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn sweep_keeps_every_object() { let (_h, s) = store().await; checks::sweep_keeps_every_object(s).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn sealed_chunk_boundaries() { let (_h, s) = store().await; checks::sealed_chunk_boundaries(s).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn sealed_100_mib() { let (_h, s) = store().await; checks::sealed_100_mib(s).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn tampering_is_detected() { let (_h, s) = store().await; checks::tampering_is_detected(s).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn wrong_and_removed_keys() { let (_h, s) = store().await; checks::wrong_and_removed_keys(s).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn unencrypted_object_in_encrypted_repository_is_refused() {
                let (_h, s) = store().await;
                checks::unencrypted_object_in_encrypted_repository_is_refused(s).await
            }
        }
    )*};
}

conformance! {
    local => Backend::Local;
    moto => Backend::Moto;
    s3s_fs => Backend::S3sFs;
}
