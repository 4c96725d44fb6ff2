//! A 1 GiB object streams through sealing, storage and opening in memory that does not grow with
//! its size. Memory, not time: the peak resident set (VmHWM) is reset before each phase and read
//! after it, so the figure is deterministic enough to assert with a wide margin.

mod support;

use std::sync::Arc;

use lifeboat::keys::Unlock;
use lifeboat::object::{Cipher, WriteOptions};
use lifeboat::repository::Repository;
use lifeboat::secret::Secret;
use lifeboat::storage::local::LocalStore;
use lifeboat::storage::s3::S3Store;
use lifeboat::storage::{ObjectKey, ObjectStore, PutMode};

use support::data::{Pattern, generated, hash_reader, peak_rss_bytes};
use support::s3::{S3Server, S3ServerKind};

const GIB: u64 = 1024 * 1024 * 1024;
/// Generous: chunk buffers, channels, zstd windows, multipart parts and the runtime's threads fit
/// many times over, while a pipeline that buffered the object would need 1 GiB.
const ALLOWED_GROWTH: u64 = 160 * 1024 * 1024;

fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM needs Linux 4.0+");
}

async fn stream_one_gib(store: Arc<dyn ObjectStore>, label: &str) {
    let unlock = Unlock::Passphrase(Secret::new("memory test"));
    let repository =
        Repository::init(store, Cipher::Aes256Gcm, Some(&unlock), "t", WriteOptions::default()).await.unwrap();
    let key = ObjectKey::new("big/one-gib").unwrap();
    // Warm up thread pools and allocators so the baseline includes them.
    repository.put_bytes(&ObjectKey::new("big/warm-up").unwrap(), vec![1; 4 << 20], PutMode::Overwrite).await.unwrap();

    reset_peak_rss();
    let baseline = peak_rss_bytes();
    let summary = repository.put(&key, generated(GIB, 1, Pattern::Random), PutMode::Overwrite).await.unwrap();
    let written_peak = peak_rss_bytes();
    assert_eq!(summary.plaintext_len, GIB);

    reset_peak_rss();
    let read_baseline = peak_rss_bytes();
    let (len, hash) = hash_reader(repository.get(&key).await.unwrap()).await.unwrap();
    let read_peak = peak_rss_bytes();
    assert_eq!((len, Some(hash)), (GIB, summary.plaintext_hash), "{label}: 1 GiB object changed in a round trip");

    let write_growth = written_peak.saturating_sub(baseline);
    let read_growth = read_peak.saturating_sub(read_baseline);
    eprintln!("{label}: peak RSS growth writing 1 GiB {} MiB, reading {} MiB", write_growth >> 20, read_growth >> 20);
    assert!(write_growth < ALLOWED_GROWTH, "{label}: writing 1 GiB grew RSS by {} MiB", write_growth >> 20);
    assert!(read_growth < ALLOWED_GROWTH, "{label}: reading 1 GiB grew RSS by {} MiB", read_growth >> 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_gib_streams_in_bounded_memory_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    stream_one_gib(Arc::new(LocalStore::new(dir.path())), "local").await;
    drop(dir);

    let server = S3Server::start(S3ServerKind::S3sFs).await;
    let store = S3Store::connect(server.fresh_bucket().await).await.unwrap();
    stream_one_gib(Arc::new(store), "s3s-fs").await;
}
