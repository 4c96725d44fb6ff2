//! Deletion is as visible as alteration (G9; issue 9, defects 2 and 6), end to end: a real cluster
//! archiving with `wal-push`, backups, a dump and verifications taken through the CLI, then one
//! stored object of each kind deleted or altered behind lifeboat's back, and what `list`, `info`,
//! `restore`, `backup` and `wal-push` make of it. Each command remembers the journal in the test's
//! own state directory, as a host would.

mod support;

use std::path::{Path, PathBuf};

use lifeboat::postgres::cluster::{LocalCluster, LocalClusterOptions};
use serde_json::Value;
use support::archiving::{Setup, binaries};
use support::output::{assert_failure, assert_success, describe};

/// A command that must fail having printed JSON: the JSON, and the error on stderr.
fn failed_json(setup: &Setup, args: &[&str]) -> (Value, String) {
    let output = setup.run(args);
    let error = assert_failure(&output);
    let json = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("no JSON: {}", describe(&output)));
    (json, error)
}

fn ids(list: &Value) -> Vec<String> {
    list["backups"].as_array().unwrap().iter().map(|entry| entry["id"].as_str().unwrap().to_owned()).collect()
}

/// The problem whose key is `key`, if `list --json` reported one.
fn problem<'a>(list: &'a Value, key: &str) -> Option<&'a str> {
    list["problems"]
        .as_array()?
        .iter()
        .find(|problem| problem["key"] == key)
        .and_then(|problem| problem["detail"].as_str())
}

fn backup(setup: &Setup) -> String {
    setup.json(&["backup", "--json"])["id"].as_str().unwrap().to_owned()
}

fn manifest_path(setup: &Setup, id: &str) -> PathBuf {
    setup.repo_dir().join(format!("clusters/main/backups/{id}/manifest"))
}

fn journal_entry(setup: &Setup, seq: u64) -> PathBuf {
    setup.repo_dir().join(format!("clusters/main/journal/{seq:020}"))
}

fn key_of(setup: &Setup, path: &Path) -> String {
    path.strip_prefix(setup.repo_dir()).unwrap().display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_2_a_deleted_manifest_is_named_and_a_deletion_by_lifeboat_is_not() {
    let setup = Setup::start().await;
    let older = backup(&setup);
    let newer = backup(&setup);
    let list = setup.json(&["list", "--json"]);
    assert_eq!(ids(&list), [older.clone(), newer.clone()]);
    assert_eq!(list["problems"], serde_json::json!([]));

    // Behind lifeboat's back: the newer manifest goes.
    let manifest = manifest_path(&setup, &newer);
    std::fs::remove_file(&manifest).unwrap();
    let (list, error) = failed_json(&setup, &["list", "--json"]);
    assert_eq!(ids(&list), std::slice::from_ref(&older));
    let detail = problem(&list, &key_of(&setup, &manifest)).unwrap_or_else(|| panic!("not named: {list}"));
    assert!(detail.contains("is missing") && detail.contains("never deleted"), "{detail}");
    assert!(error.contains("1 problem(s)"), "{error}");
    let text = setup.run(&["list"]);
    assert_failure(&text);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("PROBLEMS (1)") && text.contains(&key_of(&setup, &manifest)), "{text}");

    // verify proves what is there, and names what is not.
    let verified = setup.run(&["verify", "--all", "--integrity-only"]);
    let error = assert_failure(&verified);
    assert!(error.contains(&key_of(&setup, &manifest)) && error.contains("what was verified passed"), "{error}");

    // A restore chooses among what remains, and says what is missing.
    let planned = setup.restore(&setup.restore_dir("planned"), &["--dry-run"]);
    assert_success(&planned);
    let warning = String::from_utf8_lossy(&planned.stderr);
    assert!(warning.contains(&format!("{newer} is missing from the repository")), "{warning}");

    // A deletion by lifeboat is recorded, so it is no problem; the missing one still is.
    assert_success(&setup.run(&["delete", &older, "--force"]));
    let (list, _) = failed_json(&setup, &["list", "--json"]);
    assert_eq!(ids(&list), Vec::<String>::new());
    assert_eq!(list["problems"].as_array().unwrap().len(), 1, "{list}");
    assert!(problem(&list, &key_of(&setup, &manifest)).is_some(), "{list}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_2_deleting_the_failed_report_does_not_make_a_backup_verified() {
    let setup = Setup::start().await;
    let id = backup(&setup);
    assert_success(&setup.run(&["verify", &id, "--integrity-only"]));
    let list = setup.json(&["list", "--json"]);
    assert_eq!(list["backups"][0]["verification"]["status"], "passed", "{list}");

    // A second verification fails on a damaged object, which is then repaired.
    let damaged = setup.repo_dir().join(setup.damage_largest_object(&id));
    let failed = setup.run(&["verify", &id, "--integrity-only"]);
    assert_failure(&failed);
    let mut bytes = std::fs::read(&damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&damaged, bytes).unwrap();
    let list = setup.json(&["list", "--json"]);
    let verification = &list["backups"][0]["verification"];
    assert_eq!(verification["status"], "failed (integrity)", "{list}");
    let failed_report = verification["report"].as_str().unwrap().to_owned();

    // Deleting that report leaves the verdict as the journal recorded it, and names the report.
    std::fs::remove_file(setup.repo_dir().join(&failed_report)).unwrap();
    let (list, _) = failed_json(&setup, &["list", "--json"]);
    let verification = &list["backups"][0]["verification"];
    assert_eq!(verification["status"], "failed (integrity)", "{list}");
    assert_eq!(verification["passed"], false);
    assert_eq!(verification["recorded"], true);
    let detail = problem(&list, &failed_report).unwrap_or_else(|| panic!("not named: {list}"));
    assert!(detail.contains("is missing") && detail.contains("the verdict stands"), "{detail}");
    let text = String::from_utf8(setup.run(&["list"]).stdout).unwrap();
    assert!(text.contains("FAILED") && !text.contains(" passed "), "{text}");
    let info = setup.run(&["info", &id]);
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains("FAILED (INTEGRITY)") && text.contains(&failed_report), "{}", describe(&info));
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_2_a_deleted_cluster_record_is_rederived_and_another_cluster_is_refused() {
    let setup = Setup::start().await;
    backup(&setup);
    let record = setup.repo_dir().join("clusters/main/cluster");
    std::fs::remove_file(&record).unwrap();
    let (list, _) = failed_json(&setup, &["list", "--json"]);
    let detail = problem(&list, "clusters/main/cluster").unwrap_or_else(|| panic!("not named: {list}"));
    assert!(detail.contains("is missing"), "{detail}");

    // WAL of another initdb is refused, although the record is gone, and nothing is stored.
    let other = LocalCluster::init(&binaries(), LocalClusterOptions::default()).await.unwrap();
    let segment = std::fs::read_dir(other.data_dir().join("pg_wal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.file_name().unwrap().len() == 24)
        .expect("initdb wrote a WAL segment");
    let pushed = setup.run(&["wal-push", &segment.display().to_string()]);
    let error = assert_failure(&pushed);
    assert!(error.contains("belongs to another PostgreSQL cluster") && error.contains("the journal"), "{error}");
    assert!(!record.exists(), "the record of another cluster was written");

    // The cluster's own next segment writes the record again, and all is well.
    let mut conn = setup.connect().await;
    support::archiving::execute(&mut conn, "CREATE TABLE after_the_loss (id int)").await;
    support::archiving::archive_current_segment(&mut conn).await;
    assert!(record.exists(), "the record was not written again");
    let list = setup.json(&["list", "--json"]);
    assert_eq!(list["problems"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_2_journal_entries_deleted_or_cut_back_are_reported_and_stop_writers() {
    let setup = Setup::start().await;
    backup(&setup);
    backup(&setup);
    let list = setup.json(&["list", "--json"]);
    assert_eq!(list["problems"], serde_json::json!([]));
    let entries: Vec<PathBuf> = (1..).map(|seq| journal_entry(&setup, seq)).take_while(|path| path.exists()).collect();
    assert!(entries.len() >= 3, "began, identity, two backups: {entries:?}");

    // A middle entry deleted: named.
    let middle = &entries[1];
    let saved = std::fs::read(middle).unwrap();
    std::fs::remove_file(middle).unwrap();
    let (list, _) = failed_json(&setup, &["list", "--json"]);
    let detail = problem(&list, &key_of(&setup, middle)).unwrap_or_else(|| panic!("not named: {list}"));
    assert!(detail.contains("is missing"), "{detail}");
    std::fs::write(middle, saved).unwrap();
    assert_eq!(setup.json(&["list", "--json"])["problems"], serde_json::json!([]));

    // The newest entry deleted: this host saw it, so the repository was rolled back.
    let newest = entries.last().unwrap();
    std::fs::remove_file(newest).unwrap();
    let (list, _) = failed_json(&setup, &["list", "--json"]);
    let rolled_back = list["problems"].as_array().unwrap().iter().any(|problem| {
        problem["detail"].as_str().unwrap().contains(&format!("this host saw it reach entry {}", entries.len()))
    });
    assert!(rolled_back, "{list}");
    // ... and nothing is written on top of a history that was cut back.
    let error = assert_failure(&setup.run(&["backup"]));
    assert!(error.contains("rolled back") && error.contains(&setup.state_dir().display().to_string()), "{error}");
    let error = assert_failure(&setup.run(&["verify", "--integrity-only"]));
    assert!(error.contains("was not verified") && error.contains("rolled back"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_6_one_damaged_manifest_is_named_and_the_rest_still_listed_and_restorable() {
    let setup = Setup::start().await;
    let older = backup(&setup);
    let newer = backup(&setup);
    let manifest = manifest_path(&setup, &newer);
    let mut bytes = std::fs::read(&manifest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&manifest, bytes).unwrap();

    let (list, _) = failed_json(&setup, &["list", "--json"]);
    assert_eq!(ids(&list), std::slice::from_ref(&older));
    let detail = problem(&list, &key_of(&setup, &manifest)).unwrap_or_else(|| panic!("not named: {list}"));
    assert!(detail.contains("cannot be read") && detail.contains(&newer), "{detail}");

    // A restore that would choose among the backups says which one is intact.
    let target = setup.restore_dir("restored");
    let error = assert_failure(&setup.restore(&target, &[]));
    assert!(error.contains(&key_of(&setup, &manifest)) && error.contains("--backup <id>"), "{error}");
    assert!(error.contains(&format!("intact full backups: {older}")), "{error}");
    assert_success(&setup.restore(&target, &["--backup", &older]));

    // Another backup's (authentic) manifest copied in its place does not pass for it either.
    std::fs::copy(manifest_path(&setup, &older), &manifest).unwrap();
    let (list, _) = failed_json(&setup, &["list", "--json"]);
    assert_eq!(ids(&list), [older]);
    assert!(problem(&list, &key_of(&setup, &manifest)).is_some(), "{list}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_2_a_manifest_replaced_by_a_key_holder_fails_verification() {
    let setup = Setup::start().await;
    let id = backup(&setup);
    let repository = setup.repository().await;
    let layout = support::archiving::layout();
    let key = layout.backup_manifest(id.parse().unwrap());
    let mut manifest =
        lifeboat::format::backup_manifest::BackupManifest::read(&repository, &layout, id.parse().unwrap())
            .await
            .unwrap();
    manifest.label = "rewritten".to_owned();
    repository.put_bytes(&key, manifest.to_json(), lifeboat::storage::PutMode::Overwrite).await.unwrap();

    let (list, _) = failed_json(&setup, &["list", "--json"]);
    let detail = problem(&list, key.as_str()).unwrap_or_else(|| panic!("not named: {list}"));
    assert!(detail.contains("replaced"), "{detail}");
    let error = assert_failure(&setup.run(&["verify", &id, "--integrity-only"]));
    assert!(error.contains("verification of") && error.contains("is not the one journal entry"), "{error}");
    // The failure is recorded; the manifest's recorded hash is not changed by it.
    let (list, _) = failed_json(&setup, &["list", "--json"]);
    assert_eq!(list["backups"][0]["verification"]["status"], "failed (integrity)", "{list}");
    assert!(problem(&list, key.as_str()).is_some(), "{list}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_8_a_damaged_verification_report_is_named_by_list() {
    let setup = Setup::start().await;
    let id = backup(&setup);
    assert_success(&setup.run(&["verify", &id, "--integrity-only"]));
    let list = setup.json(&["list", "--json"]);
    let report = list["backups"][0]["verification"]["report"].as_str().unwrap().to_owned();
    let path = setup.repo_dir().join(&report);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();

    let (list, _) = failed_json(&setup, &["list", "--json"]);
    let detail = problem(&list, &report).unwrap_or_else(|| panic!("not named: {list}"));
    assert!(detail.contains("replaced or cannot be read"), "{detail}");
    let text = String::from_utf8(setup.run(&["list"]).stdout).unwrap();
    assert!(text.contains("PROBLEMS (1)") && text.contains(&report), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_2_a_deleted_wal_segment_a_backup_needs_and_a_deleted_repo_file_copy_are_named() {
    let setup = Setup::start().await;
    let id = backup(&setup);
    let list = setup.json(&["list", "--json"]);
    let start_wal = list["backups"][0]["start_wal"].as_str().unwrap().to_owned();
    let segment = format!("clusters/main/wal/{}/{start_wal}", &start_wal[..8]);
    std::fs::remove_file(setup.repo_dir().join(&segment)).unwrap();
    std::fs::remove_file(setup.repo_dir().join("lifeboat.repo.copy")).unwrap();

    let (list, _) = failed_json(&setup, &["list", "--json"]);
    let detail = problem(&list, &segment).unwrap_or_else(|| panic!("not named: {list}"));
    assert!(detail.contains(&format!("backup {id} needs it")) && detail.contains("cannot be restored"), "{detail}");
    let detail = problem(&list, "lifeboat.repo.copy").unwrap_or_else(|| panic!("not named: {list}"));
    assert!(detail.contains("is missing") && detail.contains("lifeboat.repo"), "{detail}");
}
