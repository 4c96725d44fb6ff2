//! Copies to a second repository end to end (issue 12): a real cluster archiving with `wal-push`,
//! `lifeboat init --copy`, `lifeboat copy` to a local and to an S3 copy (and from an S3 primary to
//! another bucket), the primary then deleted entirely, and a restore from the copy alone that brings
//! back every row, including those only in WAL archived after the backup. Also: a byte flipped in a
//! copied object is named by `copy --check` and by `verify` on the copy, an interrupted copy
//! resumes, and `copy --json` reports the lag.

mod support;

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use lifeboat::keys::Unlock;
use lifeboat::keys::slots::KeyFile;
use lifeboat::object::{Cipher, WriteOptions};
use lifeboat::repository::Repository;
use lifeboat::storage::local::LocalStore;

use sqlx::PgConnection;
use support::archiving::{Options, Setup, archive_current_segment, execute, flip_largest_data_object};
use support::output::{assert_failure, assert_success, describe};
use support::restored::{Restored, free_port};
use support::s3::{ACCESS_KEY, S3Server, S3ServerKind, SECRET_KEY};

const ROWS: i64 = 50;

/// A `[[copies]]` entry for `bucket` (under `copy`) on `server`.
fn s3_copy(name: &str, server: &S3Server, bucket: &str) -> String {
    format!(
        "\n[[copies]]\nname = \"{name}\"\nurl = \"s3://{bucket}/copy\"\n\n[copies.s3]\nendpoint = \"{}\"\n\
         force_path_style = true\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n",
        server.endpoint()
    )
}

fn local_copy(name: &str, dir: &Path) -> String {
    format!("\n[[copies]]\nname = \"{name}\"\nurl = \"file://{}\"\n", dir.display())
}

async fn create_bucket(server: &S3Server, bucket: &str) {
    server.client().create_bucket().bucket(bucket).send().await.unwrap();
}

/// Removes every object of `bucket`: the S3 repository in it is gone.
async fn empty_bucket(server: &S3Server, bucket: &str) {
    let client = server.client();
    let listed = client.list_objects_v2().bucket(bucket).send().await.unwrap();
    assert!(!listed.contents().is_empty(), "{bucket} held the repository");
    for object in listed.contents() {
        client.delete_object().bucket(bucket).key(object.key().unwrap()).send().await.unwrap();
    }
    assert!(!listed.is_truncated().unwrap_or(false), "one listing page held the whole repository");
}

async fn commit_batch(conn: &mut PgConnection, batch: i64) {
    execute(conn, &format!("INSERT INTO ledger SELECT {batch}, g FROM generate_series(1, {ROWS}) g")).await;
}

/// Ledger batch 1 before a backup, 2 and 3 after it, each archived (3 only in WAL): the backup id.
async fn ledger_with_backup(setup: &Setup) -> String {
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE ledger (batch bigint, n bigint)").await;
    commit_batch(&mut conn, 1).await;
    let output = setup.run(&["backup", "--json"]);
    assert_success(&output);
    let backup: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    commit_batch(&mut conn, 2).await;
    archive_current_segment(&mut conn).await;
    commit_batch(&mut conn, 3).await;
    archive_current_segment(&mut conn).await;
    backup["id"].as_str().unwrap().to_owned()
}

/// Restores from copy `copy` alone, starts the server, and checks every batch came back whole.
async fn restore_from_copy(setup: &Setup, copy: &str) {
    let pgdata = setup.restore_dir(&format!("from-{copy}"));
    let port = free_port(setup);
    let port_text = port.to_string();
    let output =
        setup.restore(&pgdata, &["--repository", copy, "--archive-mode", "off", "--start", "--port", &port_text]);
    let restored = Restored::of(setup, pgdata.clone(), port);
    assert!(output.status.success(), "restore from {copy}: {}", describe(&output));
    let auto_conf = std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap();
    // The restore_command fetches WAL from the copy too (the primary is gone).
    assert!(auto_conf.contains(&format!("--repository ''{copy}'' wal-fetch")), "{auto_conf}");
    let mut conn = restored.connect().await;
    let counts: Vec<(i64, i64)> = sqlx::query_as("SELECT batch, count(*) FROM ledger GROUP BY batch ORDER BY batch")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(counts, vec![(1, ROWS), (2, ROWS), (3, ROWS)], "every row came back from copy {copy}");
}

fn json(output: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("no JSON ({error}): {}", describe(output)))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_repository_copied_to_s3_and_a_directory_restores_alone_and_damage_is_named() {
    let server = S3Server::start(S3ServerKind::S3sFs).await;
    create_bucket(&server, "offsite").await;
    let local = tempfile::tempdir().unwrap();
    let local_dir = local.path().join("copy");
    let copies = format!("{}{}", s3_copy("offsite", &server, "offsite"), local_copy("nearby", &local_dir));
    let setup = Setup::verifying(Options::restorable().extra(&copies), "amcheck = \"off\"").await;
    for name in ["offsite", "nearby"] {
        assert_success(&setup.run(&["init", "--copy", name]));
    }
    let primary_id = scalar_repo_id(&setup, None);
    let copy_id = scalar_repo_id(&setup, Some("offsite"));
    assert_ne!(primary_id, copy_id, "a copy has its own repository id");

    let id = ledger_with_backup(&setup).await;
    let output = setup.run(&["copy", "--json"]);
    assert_success(&output);
    let run = json(&output);
    assert_eq!(run["schema"], "copy/1");
    for copy in run["copies"].as_array().unwrap() {
        assert!(copy["error"].is_null(), "{copy}");
        assert_eq!(copy["copied"]["backups"], serde_json::json!([id]), "{copy}");
        assert!(copy["copied"]["wal_files"].as_u64().unwrap() >= 2, "{copy}");
        let before = &copy["lag_before"];
        assert_eq!(before["backups_missing"], 1, "{copy}");
        assert_eq!(before["newest_backup_missing"], id.as_str(), "{copy}");
        assert!(before["newest_backup_missing_age_seconds"].as_f64().unwrap() >= 0.0, "{copy}");
        assert!(before["wal_missing"].as_u64().unwrap() >= 2, "{copy}");
        assert!(before["newest_wal_missing_age_seconds"].as_f64().is_some(), "{copy}");
        assert_eq!(copy["lag"]["backups_missing"], 0, "{copy}");
        assert_eq!(copy["lag"]["wal_missing"], 0, "{copy}");
    }
    // Nothing new: nothing is written again.
    let again = json(&setup.run(&["copy", "--to", "nearby", "--json"]));
    assert_eq!(again["copies"][0]["copied"]["backups"], serde_json::json!([]));

    // The copy lists the backup, with no problem: its own journal recorded what landed.
    let listed = json(&setup.run(&["--repository", "offsite", "list", "--json"]));
    assert_eq!(listed["backups"][0]["id"], id.as_str());
    assert_eq!(listed["problems"], serde_json::json!([]), "{listed}");
    // The primary's listing says which copies hold it.
    let listed = json(&setup.run(&["list", "--json"]));
    let holding: Vec<(&str, &serde_json::Value)> = listed["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|copy| (copy["name"].as_str().unwrap(), &copy["backups"]))
        .collect();
    assert_eq!(holding, vec![("offsite", &serde_json::json!([id])), ("nearby", &serde_json::json!([id]))]);
    let text = String::from_utf8(setup.run(&["list"]).stdout).unwrap();
    assert!(text.contains("COPIES") && text.contains("offsite,nearby"), "{text}");

    // Writing commands refuse a copy.
    let refused = assert_failure(&setup.run(&["--repository", "offsite", "backup"]));
    assert!(refused.contains("lifeboat copy"), "{refused}");

    // A byte flipped in a copied object: the check names it, and so does verify on the copy.
    let damaged = flip_largest_data_object(&local_dir, &id);
    let output = setup.run(&["copy", "--check", "--to", "nearby", "--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let check = json(&output);
    assert_eq!(check["copies"][0]["differing"][0]["key"], damaged.as_str(), "{check}");
    assert_eq!(check["copies"][0]["differing"].as_array().unwrap().len(), 1, "{check}");
    let clean = setup.run(&["copy", "--check", "--to", "offsite"]);
    assert_success(&clean);
    let failed = assert_failure(&setup.run(&["--repository", "nearby", "verify", &id]));
    assert!(failed.contains(&damaged), "verify on the copy names {damaged}: {failed}");

    // A copy that cannot be read is a warning in the listing, not a failure.
    let mut config = std::fs::OpenOptions::new().append(true).open(setup.config_path()).unwrap();
    writeln!(config, "\n[[copies]]\nname = \"gone\"\nurl = \"file:///nonexistent/lifeboat-copy\"").unwrap();
    let output = setup.run(&["list", "--json"]);
    assert_success(&output);
    let gone = &json(&output)["copies"][2];
    assert_eq!(gone["name"], "gone");
    assert!(gone["error"].as_str().unwrap().contains("no repository"), "{gone}");
    let text = setup.run(&["list"]);
    assert_success(&text);
    assert!(String::from_utf8_lossy(&text.stdout).contains("copy \"gone\" could not be read"), "{}", describe(&text));

    // A repository made with plain `init` and the same key opens, but holds another master key:
    // `copy` refuses it rather than fill it with objects that would not open there.
    let stranger = local.path().join("stranger");
    let key = KeyFile::load(&setup.dir.path().join("repo.key")).unwrap();
    let store = Arc::new(LocalStore::new(&stranger));
    Repository::init(store, Cipher::Aes256Gcm, Some(&Unlock::KeyFile(key)), "x", WriteOptions::default())
        .await
        .unwrap();
    writeln!(config, "\n[[copies]]\nname = \"stranger\"\nurl = \"file://{}\"", stranger.display()).unwrap();
    let refused = assert_failure(&setup.run(&["copy", "--to", "stranger"]));
    assert!(refused.contains("another master key") && refused.contains("init --copy stranger"), "{refused}");

    // The primary is gone entirely; the S3 copy alone restores every row.
    std::fs::remove_dir_all(setup.repo_dir()).unwrap();
    restore_from_copy(&setup, "offsite").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_repository_copied_to_another_bucket_resumes_and_restores_alone() {
    let server = S3Server::start(S3ServerKind::S3sFs).await;
    create_bucket(&server, "primary").await;
    create_bucket(&server, "second").await;
    let options = Options::restorable().s3(&server, "primary").extra(&s3_copy("second", &server, "second"));
    let setup = Setup::with(options).await;
    assert_success(&setup.run(&["init", "--copy-of", "second"]));
    let id = ledger_with_backup(&setup).await;
    assert_success(&setup.run(&["copy"]));

    // As if the copy had been killed before the backup's manifest and some of its objects landed.
    let client = server.client();
    let listed = client
        .list_objects_v2()
        .bucket("second")
        .prefix(format!("copy/clusters/main/backups/{id}/"))
        .send()
        .await
        .unwrap();
    let keys: Vec<String> = listed.contents().iter().map(|object| object.key().unwrap().to_owned()).collect();
    let manifest = keys.iter().find(|key| key.ends_with("/manifest")).expect("the manifest was copied").clone();
    let data: Vec<&String> = keys.iter().filter(|key| **key != manifest).collect();
    assert!(data.len() >= 2, "{keys:?}");
    client.delete_object().bucket("second").key(&manifest).send().await.unwrap();
    client.delete_object().bucket("second").key(data[0]).send().await.unwrap();
    // Without its manifest the backup is not on the copy at all (complete or invisible).
    let listed = json(&setup.run(&["--repository", "second", "list", "--json"]));
    assert_eq!(listed["backups"], serde_json::json!([]), "{listed}");

    let resumed = json(&setup.run(&["copy", "--json"]));
    let copy = &resumed["copies"][0];
    assert!(copy["error"].is_null(), "{copy}");
    assert_eq!(copy["lag_before"]["backups_missing"], 1, "{copy}");
    assert_eq!(copy["copied"]["backups"], serde_json::json!([id]), "{copy}");
    assert_eq!(copy["copied"]["objects"], 2, "only the missing object and the manifest were copied again: {copy}");
    assert!(copy["copied"]["already_there"].as_u64().unwrap() >= 1, "{copy}");
    assert_success(&setup.run(&["copy", "--check"]));

    empty_bucket(&server, "primary").await;
    restore_from_copy(&setup, "second").await;
}

/// The repository id `repo info --json` shows (of copy `copy`, or of the primary).
fn scalar_repo_id(setup: &Setup, copy: Option<&str>) -> String {
    let mut args = Vec::new();
    if let Some(copy) = copy {
        args.extend(["--repository", copy]);
    }
    args.extend(["repo", "info", "--json"]);
    json(&setup.run(&args))["repository_id"].as_str().unwrap().to_owned()
}

/// The backup ids `list --json` shows (on copy `copy`, or the primary), with no problem.
fn listed_backups(setup: &Setup, copy: Option<&str>) -> Vec<String> {
    let mut args = vec!["list", "--json"];
    if let Some(copy) = copy {
        args.splice(0..0, ["--repository", copy]);
    }
    let list = setup.json(&args);
    assert_eq!(list["problems"], serde_json::json!([]), "{list:#}");
    list["backups"].as_array().unwrap().iter().map(|entry| entry["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn expire_applies_each_copys_own_policy_and_copy_does_not_bring_back_what_a_copy_expired() {
    let copies = tempfile::tempdir().unwrap();
    // "long" keeps two full backups, "short" one, the primary falls back on [backup] retention (one).
    let entries = format!(
        "{}retention = {{ full = 2 }}\n{}",
        local_copy("long", &copies.path().join("long")),
        local_copy("short", &copies.path().join("short"))
    );
    let setup = Setup::with(Options::restorable().extra(&entries)).await;
    let config = setup.config_path();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replacen("[backup]\n", "[backup]\nretention = { full = 1 }\n", 1)).unwrap();
    for name in ["long", "short"] {
        assert_success(&setup.run(&["init", "--copy", name]));
    }
    let older = ledger_with_backup(&setup).await;
    let newer = setup.backup().await;
    assert_success(&setup.run(&["copy"]));
    for copy in [None, Some("long"), Some("short")] {
        assert_eq!(listed_backups(&setup, copy), [older.clone(), newer.clone()], "{copy:?} before expire");
    }

    let output = setup.run(&["expire", "--json"]);
    assert_success(&output);
    let report = json(&output);
    assert_eq!(report["schema"], "expire/1");
    let copies_report = report["copies"].as_array().unwrap();
    assert_eq!(copies_report.len(), 2, "{report:#}");
    assert_eq!(copies_report[0]["name"], "long");
    assert_eq!(copies_report[0]["expire"]["policy"], "{ full = 2 }", "{report:#}");
    assert_eq!(copies_report[1]["expire"]["policy"], "{ full = 1 }", "{report:#}");
    assert_eq!(listed_backups(&setup, None), vec![newer.clone()]);
    assert_eq!(listed_backups(&setup, Some("long")), [older.clone(), newer.clone()], "the longer policy keeps both");
    assert_eq!(listed_backups(&setup, Some("short")), vec![newer.clone()]);
    assert!(!copies.path().join(format!("short/clusters/main/backups/{older}")).exists(), "its objects are gone");

    // The next copy brings nothing back that a copy expired, and the older backup the primary no
    // longer has stays on the copy that keeps it.
    assert_success(&setup.run(&["copy"]));
    assert_eq!(listed_backups(&setup, Some("short")), vec![newer.clone()]);
    assert_eq!(listed_backups(&setup, Some("long")), [older, newer]);

    // One copy by name: only that one is expired, under its own policy.
    let output = setup.run(&["--repository", "long", "expire", "--dry-run", "--json"]);
    assert_success(&output);
    let report = json(&output);
    assert_eq!(report["policy"], "{ full = 2 }");
    assert_eq!(report["copies"], serde_json::json!([]));
}
