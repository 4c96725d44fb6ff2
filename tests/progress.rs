//! Progress, with a real cluster and repository:
//! - through the library, a backup, a dump, a restore, a verification of the backup and of the
//!   dump, and a restore of the dump each report progress as `Progressed` events (seen by an
//!   observer of the event sink), the bytes done never going back and the last count reaching the
//!   total; a verification also reports its phases (`PhaseChanged`) in the order it goes through
//!   them;
//! - `backup --json` and `restore --json`, whose stderr is not a terminal, print one JSON document
//!   on stdout and nothing else (no bar, no progress line).

mod support;

use std::sync::{Arc, Mutex};

use lifeboat::dump::{DumpRequest, Selection};
use lifeboat::ops::event::{Event, Operation};
use lifeboat::ops::{OpContext, VerifyTarget};
use lifeboat::restore::RestoreOptions;
use lifeboat::restore::target::{RecoveryGoal, RecoveryTarget, TargetAction, TimelineChoice};
use lifeboat::restore::target_dir::ExistingData;
use lifeboat::verify::VerifyOptions;
use support::archiving::{Setup, execute};
use support::output::assert_success;

/// Rows enough (some megabytes) for the copies to take more than an instant.
const FILL: &str = "CREATE TABLE filler AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS payload \
                    FROM generate_series(1, 200000) AS g";

type Counts = Arc<Mutex<Vec<(Operation, u64, Option<u64>)>>>;
type Phases = Arc<Mutex<Vec<&'static str>>>;

/// The setup's operation context, with an observer that keeps every `Progressed` event and the
/// phases of verifications.
async fn observed(setup: &Setup) -> (OpContext, Counts, Phases) {
    let mut context = lifeboat::ops::open(setup.config()).await.expect("open the repository");
    let counts: Counts = Arc::default();
    let phases: Phases = Arc::default();
    let (seen, phased) = (counts.clone(), phases.clone());
    context.events.set_observer(Arc::new(move |event| match event {
        Event::Progressed { operation, bytes_done, bytes_total } => {
            seen.lock().unwrap().push((*operation, *bytes_done, *bytes_total))
        }
        Event::PhaseChanged { operation: Operation::Verify, phase } => phased.lock().unwrap().push(phase),
        _ => {}
    }));
    (context, counts, phases)
}

/// Takes the phases reported since the last call, and checks that `expected` are among them in
/// this order.
fn assert_phases(phases: &Phases, expected: &[&str]) {
    let taken = std::mem::take(&mut *phases.lock().unwrap());
    let mut rest = taken.iter();
    for phase in expected {
        assert!(rest.any(|seen| seen == phase), "phase {phase:?} missing or out of order: {taken:?}");
    }
}

/// Takes the counts `operation` reported since the last call, and checks them: at least one,
/// bytes done never decreasing, the last one at a known, non-zero total. The total.
fn assert_progress(counts: &Counts, operation: Operation) -> u64 {
    let taken: Vec<_> = std::mem::take(&mut *counts.lock().unwrap());
    let mine: Vec<(u64, Option<u64>)> =
        taken.iter().filter(|(op, ..)| *op == operation).map(|(_, done, total)| (*done, *total)).collect();
    assert!(!mine.is_empty(), "{operation:?} reported no progress: {taken:?}");
    assert!(mine.windows(2).all(|pair| pair[0].0 <= pair[1].0), "{operation:?}: bytes done went back: {mine:?}");
    let (done, total) = *mine.last().unwrap();
    assert!(done > 0 && total == Some(done), "{operation:?} ended at {done} of {total:?}: {mine:?}");
    done
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_dump_restore_and_verify_report_progress_up_to_their_total() {
    let setup = Setup::start_verifying("").await;
    let mut conn = setup.connect().await;
    execute(&mut conn, FILL).await;
    let (context, counts, phases) = observed(&setup).await;

    let options = lifeboat::backup::BackupOptions::from_config(&context.config.backup);
    let summary = lifeboat::ops::backup(&context, options).await.expect("backup");
    let backed_up = assert_progress(&counts, Operation::Backup);
    assert_eq!(backed_up, summary.manifest.totals.bytes);

    let request = DumpRequest {
        selection: Selection::Databases(vec!["postgres".into()]),
        lock_wait: context.config.dump.lock_wait,
    };
    let manifest = lifeboat::ops::dump(&context, &request, &mut |_| {}).await.expect("dump");
    let dumped = assert_progress(&counts, Operation::Dump);
    assert_eq!(dumped, manifest.globals.object.size + manifest.databases[0].object.size);

    let pgdata = setup.restore_dir("restored");
    let restore = RestoreOptions {
        pgdata: pgdata.clone(),
        backup: Some(summary.manifest.id),
        goal: RecoveryGoal {
            target: RecoveryTarget::Immediate,
            timeline: TimelineChoice::Id(summary.manifest.timeline),
            action: TargetAction::Promote,
            exclusive: false,
        },
        existing: ExistingData::Refuse,
        tablespace_map: Vec::new(),
        workers: 2,
        server_settings: Vec::new(),
        dry_run: false,
        start: None,
        restore_command: "false".into(),
        read_ahead: None,
        os_user: context.config.cluster.os_user.clone(),
        bin_dir: None,
        cancel: Default::default(),
        progress: Default::default(),
    };
    let restored = lifeboat::ops::restore(&context, restore).await.expect("restore");
    let written = assert_progress(&counts, Operation::Restore);
    assert_eq!(written, restored.bytes_written);
    assert!(written > 1024 * 1024, "the filler table was restored: {written} bytes");

    let verify = VerifyOptions::from_config(&context.config);
    let target = VerifyTarget::Id(summary.manifest.id.to_string());
    let outcome = lifeboat::ops::verify(&context, &target, &verify).await.expect("verify");
    assert!(outcome.reports[0].passed, "the verification passed");
    // Its restore phase: the same files as the restore above (its WAL is read before, uncounted).
    let verified = assert_progress(&counts, Operation::Verify);
    assert_eq!(verified, written);
    assert_phases(&phases, &["reading WAL", "restoring files", "recovering", "running amcheck"]);

    // A dump's verification reads each of its objects once (the globals, then the database
    // through its restore into a scratch server).
    let target = VerifyTarget::Id(manifest.id.to_string());
    let outcome = lifeboat::ops::verify(&context, &target, &verify).await.expect("verify the dump");
    assert!(outcome.reports[0].passed, "the dump's verification passed");
    assert_eq!(assert_progress(&counts, Operation::Verify), dumped);
    assert_phases(&phases, &["reading objects", "preparing the scratch server", "restoring databases"]);

    // A restore of the dump reads the database's object, to its stored size.
    execute(&mut conn, "CREATE DATABASE copy").await;
    let request = lifeboat::restore::dump::RestoreRequest {
        database: "postgres".into(),
        into: context.config.cluster.connection.with_database("copy"),
        tables: Vec::new(),
        clean: false,
        ownership: lifeboat::restore::dump::Ownership::Skip,
    };
    let report = lifeboat::ops::restore_dump(&context, &manifest.id.to_string(), &request, &mut |_, _| {})
        .await
        .expect("restore the dump");
    let read = assert_progress(&counts, Operation::Restore);
    assert_eq!((read, report.bytes), (manifest.databases[0].object.size, read));
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_and_restore_with_json_print_only_json_on_stdout_when_stderr_is_not_a_terminal() {
    let setup = Setup::start().await;
    let mut conn = setup.connect().await;
    execute(&mut conn, FILL).await;

    let output = setup.run(&["backup", "--json"]);
    assert_success(&output);
    let backup: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("stdout is not one JSON document ({error}): {:?}", output.stdout));
    let id = backup["id"].as_str().expect("the backup's id").to_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains('\r') && !stderr.contains("\x1b["), "no bar drawn on stderr: {stderr:?}");

    let pgdata = setup.restore_dir("restored");
    let output = setup.restore(&pgdata, &["--backup", &id, "--json"]);
    assert_success(&output);
    let restored: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("stdout is not one JSON document ({error}): {:?}", output.stdout));
    assert_eq!(restored["backup"]["id"], id.as_str());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains('\r') && !stderr.contains("\x1b["), "no bar drawn on stderr: {stderr:?}");
}
