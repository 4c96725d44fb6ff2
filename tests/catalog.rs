//! The catalog commands end to end (`lifeboat list`, `info`, `delete`): a real cluster archiving
//! with the built binary's `wal-push`, two base backups and a dump taken through the CLI, then what
//! the listing shows against the stored manifests, and deletes (manifest and every object gone;
//! the only full backup kept unless `--force`; an unknown id named).

mod support;

use lifeboat::catalog::id::BackupId;
use lifeboat::catalog::journal;
use lifeboat::catalog::listing;
use lifeboat::format::backup_manifest::BackupManifest;
use lifeboat::format::dump_manifest::{DumpKeys, DumpManifest};
use lifeboat::format::journal_entry::{Event, Verdict};
use lifeboat::format::verify_report::{Mode, VerifyReport};
use lifeboat::repository::Repository;
use serde_json::Value;
use sqlx::Connection;
use support::archiving::{Options, Setup, execute, layout};
use support::output::{assert_failure, assert_success};

async fn keys_under(repository: &Repository, prefix: &str) -> Vec<String> {
    repository.store().list(prefix).await.unwrap().into_iter().map(|meta| meta.key.to_string()).collect()
}

fn ids(list: &Value) -> Vec<String> {
    list["backups"].as_array().unwrap().iter().map(|entry| entry["id"].as_str().unwrap().to_owned()).collect()
}

/// The archived range of timeline 1 that holds `first..=last`, if one does.
fn covered(list: &Value, first: &str, last: &str) -> bool {
    list["wal"]["timelines"].as_array().unwrap().iter().filter(|timeline| timeline["timeline"] == 1).any(|timeline| {
        timeline["ranges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|range| range["first"].as_str().unwrap() <= first && last <= range["last"].as_str().unwrap())
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn list_info_and_delete_describe_and_remove_backups_and_dumps() {
    let setup = Setup::with(Options::new().lock_wait("5m")).await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 12345) g").await;
    conn.close().await.unwrap();

    // Nothing yet: an empty catalog lists nothing and `latest` names no backup.
    assert_eq!(ids(&setup.json(&["list", "--json"])), Vec::<String>::new());
    let error = assert_failure(&setup.run(&["info", "latest"]));
    assert!(error.contains("no backups or dumps"), "{error}");

    let older = setup.json(&["backup", "--json"])["id"].as_str().unwrap().to_owned();
    let newer = setup.json(&["backup", "--json"])["id"].as_str().unwrap().to_owned();
    let dump = setup.json(&["dump", "--db", "postgres", "--json"])["id"].as_str().unwrap().to_owned();
    let order: Vec<BackupId> = [&older, &newer, &dump].map(|id| id.parse().unwrap()).to_vec();
    assert!(order.is_sorted(), "{older} {newer} {dump}");

    let repository = setup.repository().await;
    let layout = layout();
    let older_manifest = BackupManifest::read(&repository, &layout, older.parse().unwrap()).await.unwrap();
    let newer_manifest = BackupManifest::read(&repository, &layout, newer.parse().unwrap()).await.unwrap();
    let dump_id: BackupId = dump.parse().unwrap();
    let dump_manifest =
        DumpManifest::from_json(&repository.get_bytes(&DumpKeys::new(&layout, dump_id).manifest()).await.unwrap())
            .unwrap();

    // A passed verification report of the newer backup, stored and recorded in the journal as
    // `lifeboat verify` does (its own tests are in tests/verify.rs).
    let mut report = VerifyReport::new(newer.parse().unwrap(), Mode::Restore, chrono::Utc::now());
    report.passed = true;
    let report_key = report.store(&repository, &layout).await.unwrap();
    let (_, manifest_blake3) = listing::read_manifest(&repository, &layout, newer.parse().unwrap()).await.unwrap();
    let verdict = Verdict::of(&report, &report_key, &report.to_json());
    journal::append(&repository, &layout, Event::Verified { id: newer.parse().unwrap(), manifest_blake3, verdict })
        .await
        .unwrap();

    // list --json: exactly the three, oldest first, as their manifests say.
    let list = setup.json(&["list", "--json"]);
    assert_eq!(list["cluster"], "main");
    assert_eq!(ids(&list), vec![older.clone(), newer.clone(), dump.clone()]);
    let entries = list["backups"].as_array().unwrap();
    for (entry, manifest) in entries.iter().zip([&older_manifest, &newer_manifest]) {
        assert_eq!(entry["kind"], "full");
        assert_eq!(entry["timeline"], manifest.timeline.id());
        assert_eq!(entry["start_lsn"], manifest.start_lsn.to_string());
        assert_eq!(entry["stop_lsn"], manifest.stop_lsn.to_string());
        assert_eq!(entry["start_wal"], manifest.start_wal.as_str());
        assert_eq!(entry["stop_wal"], manifest.stop_wal.as_str());
        assert_eq!(entry["size"], manifest.totals.bytes);
        assert_eq!(entry["stored_size"], manifest.totals.stored_bytes);
        assert!(manifest.totals.bytes > 0 && manifest.totals.stored_bytes > 0);
        assert!(entry["compression_ratio"].as_f64().unwrap() > 1.0, "{entry}");
        assert_eq!(entry["start_time"], serde_json::to_value(manifest.start_time).unwrap());
        assert_eq!(entry["stop_time"], serde_json::to_value(manifest.stop_time).unwrap());
        assert!(
            covered(&list, &manifest.start_wal, &manifest.stop_wal),
            "{}..{} not in the archived ranges: {}",
            manifest.start_wal,
            manifest.stop_wal,
            list["wal"]
        );
    }
    assert_eq!(entries[0]["verification"], Value::Null);
    assert_eq!(entries[1]["verification"]["status"], "passed");
    assert_eq!(entries[1]["verification"]["reports"], 1);
    assert_eq!(entries[1]["verification"]["report"], report_key.as_str());
    assert_eq!(entries[1]["verification"]["recorded"], true);
    assert_eq!(list["problems"], serde_json::json!([]));
    let dump_entry = &entries[2];
    assert_eq!(dump_entry["kind"], "dump");
    assert_eq!(dump_entry["databases"][0]["name"], "postgres");
    assert!(dump_entry["databases"][0].get("tables").is_none(), "list leaves the tables out: {dump_entry}");
    assert!(dump_entry.get("start_lsn").is_none(), "{dump_entry}");
    let dump_size = dump_manifest.globals.object.size + dump_manifest.databases[0].object.size;
    assert_eq!(dump_entry["size"], dump_size);
    assert!(dump_size > 0 && dump_entry["stored_size"].as_u64().unwrap() > 0);
    assert_eq!(dump_entry["verification"], Value::Null);

    // The text table names them, fits 120 columns, and shows the WAL ranges.
    let text = setup.run(&["list"]);
    assert_success(&text);
    let text = String::from_utf8(text.stdout).unwrap();
    for id in [&older, &newer, &dump] {
        assert!(text.contains(id.as_str()), "{id} missing from\n{text}");
    }
    assert!(text.contains(" passed "), "{text}");
    assert!(text.contains(&format!("{}..{}", newer_manifest.start_lsn, newer_manifest.stop_lsn)), "{text}");
    assert!(text.lines().all(|line| line.chars().count() <= 120), "{text}");
    assert!(text.contains("timeline 1:"), "{text}");

    // info --json of a full backup matches its manifest.
    let info = setup.json(&["info", &older, "--json"]);
    assert_eq!(info["id"], older.as_str());
    assert_eq!(info["kind"], "full");
    assert_eq!(info["start_lsn"], older_manifest.start_lsn.to_string());
    assert_eq!(info["stop_lsn"], older_manifest.stop_lsn.to_string());
    assert_eq!(info["start_wal"], older_manifest.start_wal.as_str());
    assert_eq!(info["stop_wal"], older_manifest.stop_wal.as_str());
    assert_eq!(info["timeline"], older_manifest.timeline.id());
    assert_eq!(info["system_identifier"], older_manifest.system_identifier.to_string());
    assert_eq!(info["postgres_version"], older_manifest.postgres_version.as_str());
    assert_eq!(info["label"], older_manifest.label.as_str());
    assert_eq!(info["totals"], serde_json::to_value(older_manifest.totals).unwrap());
    assert_eq!(info["totals"]["objects"], older_manifest.objects.len());
    assert_eq!(info["wal_archived"], true, "{info}");
    assert_eq!(info["wal_first_missing"], Value::Null);
    let text = setup.run(&["info", &older]);
    assert_success(&text);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains(&older_manifest.start_wal) && text.contains("all archived"), "{text}");

    // info latest is the dump, with its tables' row counts.
    let latest = setup.json(&["info", "latest", "--json"]);
    assert_eq!(latest["id"], dump.as_str());
    assert_eq!(latest["kind"], "dump");
    assert_eq!(latest["databases"][0]["name"], "postgres");
    let tables = latest["databases"][0]["tables"].as_array().unwrap();
    let t = tables.iter().find(|table| table["table"] == "t").expect("table t in the dump");
    assert_eq!(t["rows"], 12345);
    assert_eq!(latest["databases"][0]["tables"], serde_json::to_value(&dump_manifest.databases[0].tables).unwrap());
    let text = setup.run(&["info", "latest"]);
    assert_success(&text);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("public.t") && text.contains("12345"), "{text}");

    // Deleting the older full backup removes every object under its prefix.
    let older_prefix = layout.backup_dir(older.parse().unwrap());
    let objects_before = keys_under(&repository, &older_prefix).await.len();
    assert!(objects_before >= 2, "a manifest and data objects");
    let deleted = setup.run(&["delete", &older]);
    assert_success(&deleted);
    let stdout = String::from_utf8_lossy(&deleted.stdout);
    assert!(stdout.contains(&format!("{objects_before} object(s)")), "{stdout}");
    assert_eq!(keys_under(&repository, &older_prefix).await, Vec::<String>::new());
    assert_eq!(ids(&setup.json(&["list", "--json"])), vec![newer.clone(), dump.clone()]);
    let error = assert_failure(&setup.run(&["info", &older]));
    assert!(error.contains(&older), "{error}");

    // The only full backup left: refused without --force, and nothing deleted.
    let newer_prefix = layout.backup_dir(newer.parse().unwrap());
    let error = assert_failure(&setup.run(&["delete", &newer]));
    assert!(error.contains("only full backup") && error.contains("--force"), "{error}");
    assert!(keys_under(&repository, &newer_prefix).await.iter().any(|key| key.ends_with("/manifest")));
    assert_eq!(ids(&setup.json(&["list", "--json"])), vec![newer.clone(), dump.clone()]);
    assert_success(&setup.run(&["delete", &newer, "--force"]));
    assert_eq!(keys_under(&repository, &newer_prefix).await, Vec::<String>::new());
    assert_eq!(keys_under(&repository, &format!("{}{newer}/", layout.verify_prefix())).await, Vec::<String>::new());

    // An unknown id is named.
    let unknown = "20200101T000000Z-full";
    let error = assert_failure(&setup.run(&["delete", unknown]));
    assert!(error.contains(unknown) && error.contains(&dump), "{error}");

    // A dump goes freely.
    assert_success(&setup.run(&["delete", &dump]));
    assert_eq!(keys_under(&repository, &DumpKeys::new(&layout, dump_id).prefix()).await, Vec::<String>::new());
    assert_eq!(ids(&setup.json(&["list", "--json"])), Vec::<String>::new());
}
