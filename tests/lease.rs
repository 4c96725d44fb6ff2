//! Leases keep two writers (two backups, a backup and a delete) off one cluster at a time (G6):
//! a second contender waits, and gives up naming the holder; dead holders are taken over. A wait
//! for a live holder is told to the task's observer, and an operation that waits (a backup, with
//! a real cluster) emits it as events and counts its seconds.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lifeboat::backup::BackupOptions;
use lifeboat::catalog::lease::{Lease, LeaseError, LeaseHolder, LeaseWait, WaitObserver, hostname, observing_waits};
use lifeboat::object::{Cipher, WriteOptions};
use lifeboat::ops::event::{Event, MetricValue, Operation};
use lifeboat::repository::Repository;
use lifeboat::storage::local::LocalStore;
use lifeboat::storage::{ObjectKey, PutMode};
use support::archiving::{Setup, layout};

async fn repository(dir: &tempfile::TempDir) -> Arc<Repository> {
    let store = Arc::new(LocalStore::new(dir.path()));
    Arc::new(Repository::init(store, Cipher::None, None, "", WriteOptions::default()).await.unwrap())
}

fn lock() -> ObjectKey {
    ObjectKey::new("clusters/main/locks/backup").unwrap()
}

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn a_second_writer_waits_for_the_first_to_release() {
    let dir = tempfile::tempdir().unwrap();
    let repository = repository(&dir).await;
    let first = Lease::acquire(repository.clone(), &lock(), "backup one", LONG, LONG).await.unwrap();
    let released = Arc::new(AtomicBool::new(false));
    let releaser = {
        let released = released.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            released.store(true, Ordering::SeqCst);
            first.release().await.unwrap();
        })
    };
    let second = Lease::acquire(repository.clone(), &lock(), "backup two", LONG, LONG).await.unwrap();
    assert!(released.load(Ordering::SeqCst), "the second writer got the lease while the first still held it");
    releaser.await.unwrap();
    second.release().await.unwrap();
    assert!(repository.store().list("clusters/main/locks/").await.unwrap().is_empty(), "release leaves nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn giving_up_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let repository = repository(&dir).await;
    let held = Lease::acquire(repository.clone(), &lock(), "backup 20261127T0300Z", LONG, LONG).await.unwrap();
    let error = Lease::acquire(repository.clone(), &lock(), "delete", LONG, Duration::from_millis(300)).await;
    let Err(LeaseError::Busy { holder, .. }) = &error else { panic!("expected Busy, got {:?}", error.err()) };
    assert_eq!(holder.pid, std::process::id());
    let message = error.err().unwrap().to_string();
    assert!(message.contains("backup 20261127T0300Z") && message.contains(&hostname()), "{message}");
    held.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_lease_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let repository = repository(&dir).await;
    let short = Duration::from_millis(600);
    let abandoned = Lease::acquire(repository.clone(), &lock(), "crashed backup", short, LONG).await.unwrap();
    drop(abandoned); // stops renewal, like a process frozen or gone on another host
    let taken = Lease::acquire(repository.clone(), &lock(), "next backup", LONG, LONG).await.unwrap();
    let remaining = repository.store().list("clusters/main/locks/backup/").await.unwrap();
    assert_eq!(remaining.len(), 1, "the stale generation is cleaned up: {remaining:?}");
    taken.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_of_a_dead_process_on_this_host_is_taken_over_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let repository = repository(&dir).await;
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let now = chrono::Utc::now();
    let holder = LeaseHolder {
        token: "dead".into(),
        host: hostname(),
        pid: dead_pid,
        purpose: "killed backup".into(),
        acquired_at: now,
        expires_at: now + chrono::Duration::hours(1),
    };
    let key = lock().join("00000000000000000007").unwrap();
    repository.put_bytes(&key, serde_json::to_vec(&holder).unwrap(), PutMode::CreateOnly).await.unwrap();
    let lease = Lease::acquire(repository.clone(), &lock(), "backup", LONG, Duration::from_millis(200)).await;
    lease.expect("a dead holder's lease must not block").release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_holder_notices_when_its_lease_was_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let repository = repository(&dir).await;
    let lease =
        Lease::acquire(repository.clone(), &lock(), "slow backup", Duration::from_millis(600), LONG).await.unwrap();
    let now = chrono::Utc::now();
    let usurper = LeaseHolder {
        token: "other".into(),
        host: "another-host".into(),
        pid: 1,
        purpose: "backup elsewhere".into(),
        acquired_at: now,
        expires_at: now + chrono::Duration::hours(1),
    };
    let key = lock().join("00000000000000000099").unwrap();
    repository.put_bytes(&key, serde_json::to_vec(&usurper).unwrap(), PutMode::CreateOnly).await.unwrap();
    for _ in 0..50 {
        if lease.is_lost() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(lease.is_lost(), "renewal must notice the higher generation");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_contender_tells_its_observer_whom_it_waits_for_and_how_long_it_waited() {
    let dir = tempfile::tempdir().unwrap();
    let repository = repository(&dir).await;
    let first = Lease::acquire(repository.clone(), &lock(), "backup one", LONG, LONG).await.unwrap();
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        first.release().await.unwrap();
    });
    let waits = Arc::new(Mutex::new(Vec::new()));
    let heard = waits.clone();
    let observer: WaitObserver = Arc::new(move |wait: &LeaseWait| heard.lock().unwrap().push(wait.clone()));
    let second =
        observing_waits(observer, Lease::acquire(repository.clone(), &lock(), "backup two", LONG, LONG)).await.unwrap();
    releaser.await.unwrap();
    second.release().await.unwrap();

    let waits = waits.lock().unwrap().clone();
    let [LeaseWait::Began { holder: began, .. }, ended @ LeaseWait::Ended { holder, waited, acquired, .. }] =
        waits.as_slice()
    else {
        panic!("expected the start and the end of one wait: {waits:?}");
    };
    assert_eq!(
        (began.purpose.as_str(), began.pid, began.host.as_str()),
        ("backup one", std::process::id(), hostname().as_str())
    );
    assert_eq!(holder, began);
    assert!(*acquired && *waited >= Duration::from_millis(800), "{waits:?}");
    assert_eq!(ended.lock_name(), "backup");

    // A free lock is taken without a word to the observer.
    let quiet = Arc::new(Mutex::new(0));
    let counted = quiet.clone();
    let observer: WaitObserver = Arc::new(move |_: &LeaseWait| *counted.lock().unwrap() += 1);
    let free = observing_waits(observer, Lease::acquire(repository.clone(), &lock(), "backup three", LONG, LONG)).await;
    free.unwrap().release().await.unwrap();
    assert_eq!(*quiet.lock().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_waiting_for_a_live_holder_emits_the_wait_and_counts_its_seconds() {
    let setup = Setup::start().await;
    let mut context = lifeboat::ops::open(setup.config()).await.expect("open the repository");
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    context.events.set_observer(Arc::new(move |event| {
        if matches!(event, Event::LeaseWaiting { .. } | Event::LeaseWaited { .. }) {
            seen.lock().unwrap().push(event.clone());
        }
    }));
    let held = Duration::from_millis(1500);
    let holder = Lease::acquire(context.repository.clone(), &layout().lock("backup"), "held by the test", LONG, LONG)
        .await
        .unwrap();
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(held).await;
        holder.release().await.unwrap();
    });
    let mut options = BackupOptions::from_config(&context.config.backup);
    options.lock_wait = LONG;
    let summary = lifeboat::ops::backup(&context, options).await.expect("the backup runs once the lock is free");
    releaser.await.unwrap();

    let events = events.lock().unwrap().clone();
    let [
        Event::LeaseWaiting { operation: Operation::Backup, lock, holder, host, pid },
        Event::LeaseWaited { operation: Operation::Backup, waited, acquired: true, .. },
    ] = events.as_slice()
    else {
        panic!("expected a wait for the lock and its end: {events:?}");
    };
    assert_eq!((lock.as_str(), host.as_str(), *pid), ("backup", hostname().as_str(), std::process::id()));
    assert!(holder.contains("held by the test"), "{holder}");
    assert!(*waited >= held, "waited {waited:?}");
    let Some(MetricValue::Summary { sum, count: 1 }) = context
        .events
        .metrics()
        .get("lifeboat_lease_wait_seconds", &[("operation", "backup"), ("lock", "backup"), ("acquired", "true")])
    else {
        panic!("no lease wait metric: {:?}", context.events.metrics().snapshot());
    };
    assert!(sum >= held.as_secs_f64(), "{sum}");
    assert!(!summary.manifest.id.to_string().is_empty());
}
