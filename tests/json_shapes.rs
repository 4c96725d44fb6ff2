//! Every command that reports, run with `--json` against a real cluster and repository: each
//! prints one document whose `schema` names its kind, and whose shape (every field's name and
//! JSON type, nested) is pinned by a snapshot under tests/snapshots/. A field renamed, moved or
//! retyped fails here; docs/json.md documents the same shapes.
//!
//! To accept an intended change: `INSTA_UPDATE=always cargo nextest run --test json_shapes`, then
//! review the `.snap` diff and update docs/json.md (and the schema's version, if a field changed
//! meaning or went away).

mod support;

use serde_json::{Map, Value};
use sqlx::{Connection, PgConnection};
use support::archiving::{Options, Setup, archive_current_segment, execute};
use support::output::{assert_success, describe};
use support::restored::{Restored, free_port};

/// The shape of a document: objects keep their keys with the shapes of their values, arrays the
/// distinct shapes of their items, scalars become their type's name. The document's `schema`
/// and a backup's or dump's `kind` (`"full"`, `"dump"`) keep their values: they say which shape
/// applies.
fn shape(document: &Value) -> Value {
    let mut shaped = shape_of(document);
    if let (Some(fields), Some(schema)) = (shaped.as_object_mut(), document.get("schema")) {
        fields.insert("schema".to_owned(), schema.clone());
    }
    shaped
}

fn shape_of(value: &Value) -> Value {
    match value {
        Value::Null => Value::from("null"),
        Value::Bool(_) => Value::from("boolean"),
        Value::Number(_) => Value::from("number"),
        Value::String(_) => Value::from("string"),
        Value::Array(items) => {
            let mut shapes: Vec<Value> = Vec::new();
            for item in items.iter().map(shape_of) {
                if !shapes.contains(&item) {
                    shapes.push(item);
                }
            }
            Value::Array(shapes)
        }
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(name, value)| match (name.as_str(), value.as_str()) {
                    ("kind", Some("full" | "dump")) => (name.clone(), value.clone()),
                    _ => (name.clone(), shape_of(value)),
                })
                .collect::<Map<String, Value>>(),
        ),
    }
}

/// Runs `lifeboat <args>`, which must succeed and print exactly one JSON document with `schema`.
fn document(setup: &Setup, args: &[&str], schema: &str) -> Value {
    let output = setup.run(args);
    assert_success(&output);
    let document: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!("`{}` printed no JSON document ({error})\n{}", args.join(" "), describe(&output))
    });
    assert_eq!(document["schema"], schema, "`{}`: {document:#}", args.join(" "));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with(&format!("{{\n  \"schema\": \"{schema}\"")), "schema comes first: {text}");
    document
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_prints_its_documented_shape() {
    let setup = Setup::start_verifying("").await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE DATABASE shop").await;
    let shop_options = setup.cluster.connect_options().database("shop");
    let mut shop = PgConnection::connect_with(&shop_options).await.unwrap();
    execute(&mut shop, "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL)").await;
    execute(&mut shop, "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 100) g").await;
    shop.close().await.unwrap();

    let backup = document(&setup, &["backup", "--verify", "--json"], "backup/1");
    insta::assert_json_snapshot!("backup", shape(&backup));
    let backup_id = backup["id"].as_str().unwrap().to_owned();
    assert_eq!(backup["verification"]["latest"]["id"], backup_id.as_str(), "--verify embeds the report");
    assert_eq!(backup["verification"]["passed"], true);
    archive_current_segment(&mut conn).await;

    let dump = document(&setup, &["dump", "--db", "shop", "--json"], "dump/1");
    insta::assert_json_snapshot!("dump", shape(&dump));
    let dump_id = dump["id"].as_str().unwrap().to_owned();

    let verified = document(&setup, &["verify", &dump_id, "--json"], "verify/1");
    insta::assert_json_snapshot!("verify", shape(&verified));
    assert_eq!(verified["reports"][0]["id"], dump_id.as_str());

    // info prints the same shapes as backup and dump (with the archive checked, and the
    // verification `verify` just stored).
    let info = document(&setup, &["info", &backup_id, "--json"], "backup/1");
    insta::assert_json_snapshot!("info_backup", shape(&info));
    assert_eq!(info["wal_archived"], true, "{info:#}");
    for field in ["id", "manifest", "start_lsn", "stop_lsn", "totals", "size", "stored_size", "tablespaces"] {
        assert_eq!(info[field], backup[field], "{field} is the same in backup --json and info --json");
    }
    let info = document(&setup, &["info", &dump_id, "--json"], "dump/1");
    insta::assert_json_snapshot!("info_dump", shape(&info));
    assert_eq!(info["databases"], dump["databases"], "dump --json and info --json agree");
    assert_eq!(info["verification"]["latest"]["id"], dump_id.as_str());

    let list = document(&setup, &["list", "--json"], "list/1");
    insta::assert_json_snapshot!("list", shape(&list));
    let ids: Vec<&str> =
        list["backups"].as_array().unwrap().iter().map(|entry| entry["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [backup_id.as_str(), dump_id.as_str()]);

    let wal = document(&setup, &["wal", "check", "--json"], "wal-archive/1");
    insta::assert_json_snapshot!("wal_check", shape(&wal));
    let mut embedded = wal.clone();
    embedded.as_object_mut().unwrap().remove("schema");
    assert_eq!(list["wal"], embedded, "list embeds the WAL archive view");

    let pgdata = setup.restore_dir("planned");
    let planned = document(
        &setup,
        &["restore", "--pgdata", pgdata.to_str().unwrap(), "--backup", &backup_id, "--dry-run", "--json"],
        "restore-plan/1",
    );
    insta::assert_json_snapshot!("restore_plan", shape(&planned));
    assert_eq!(planned["dry_run"], true);
    let pgdata = setup.restore_dir("restored");
    let port = free_port(&setup).to_string();
    let restored = document(
        &setup,
        &[
            "restore",
            "--pgdata",
            pgdata.to_str().unwrap(),
            "--backup",
            &backup_id,
            "--target",
            "immediate",
            "--archive-mode",
            "off",
            "--start",
            "--port",
            &port,
            "--json",
        ],
        "restore/1",
    );
    let _server = Restored::of(&setup, pgdata, port.parse().unwrap());
    // What PostgreSQL's log says about the end of recovery depends on what the WAL held.
    let mut restored_shape = shape(&restored);
    for line in ["stopped", "redo_done", "last_transaction"] {
        restored_shape["recovery"][line] = Value::from("string or null");
    }
    insta::assert_json_snapshot!("restore", restored_shape);
    assert_eq!(restored["recovery"]["outcome"], "promoted", "{restored:#}");

    execute(&mut conn, "CREATE DATABASE shop_copy").await;
    let into = setup.cluster.connection_url().replacen("postgresql:///postgres?", "postgresql:///shop_copy?", 1);
    let restored_dump =
        document(&setup, &["restore", "--dump", &dump_id, "--db", "shop", "--into", &into, "--json"], "dump-restore/1");
    insta::assert_json_snapshot!("dump_restore", shape(&restored_dump));
    assert_eq!(restored_dump["rows"], 100);

    let deleted = document(&setup, &["delete", &dump_id, "--json"], "delete/1");
    insta::assert_json_snapshot!("delete", shape(&deleted));
    assert_eq!(deleted["id"], dump_id.as_str());

    let expired = document(&setup, &["expire", "--dry-run", "--json"], "expire/1");
    insta::assert_json_snapshot!("expire", shape(&expired));
    assert_eq!(expired["items"][0]["action"], "keep", "no retention configured: everything stays");

    let trail = document(&setup, &["audit", "--json"], "audit/1");
    // Records differ by operation (their arguments, what they created); one finished delete
    // stands for them all.
    let mut one_record = trail.clone();
    one_record["records"] = Value::Array(
        trail["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|record| record["operation"] == "delete" && record["event"] == "finished")
            .cloned()
            .collect(),
    );
    insta::assert_json_snapshot!("audit", shape(&one_record));
    let operations: Vec<&str> =
        trail["records"].as_array().unwrap().iter().filter_map(|record| record["operation"].as_str()).collect();
    assert!(operations.contains(&"delete"), "{operations:?}");

    for (args, schema, name) in [
        (&["repo", "info", "--json"][..], "repository/1", "repo_info"),
        (&["key", "list", "--json"][..], "key-list/1", "key_list"),
        (&["key", "check", "--json"][..], "key-check/1", "key_check"),
    ] {
        let printed = document(&setup, args, schema);
        insta::assert_json_snapshot!(name, shape(&printed));
    }
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_prints_its_documented_shape() {
    let copy_dir = tempfile::tempdir().unwrap();
    let copies = format!("\n[[copies]]\nname = \"nearby\"\nurl = \"file://{}/copy\"\n", copy_dir.path().display());
    let setup = Setup::with(Options::restorable().extra(&copies)).await;
    assert_success(&setup.run(&["init", "--copy", "nearby"]));
    assert_success(&setup.run(&["backup"]));

    let copied = document(&setup, &["copy", "--json"], "copy/1");
    insta::assert_json_snapshot!("copy", shape(&copied));
    assert_eq!(copied["copies"][0]["copied"]["backups"].as_array().unwrap().len(), 1, "{copied:#}");
    let checked = document(&setup, &["copy", "--check", "--json"], "copy-check/1");
    insta::assert_json_snapshot!("copy_check", shape(&checked));
    let listed = document(&setup, &["list", "--json"], "list/1");
    insta::assert_json_snapshot!("list_copies", shape(&listed["copies"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn status_prints_its_documented_shape() {
    let copy_dir = tempfile::tempdir().unwrap();
    let copies = format!(
        "\n[[copies]]\nname = \"nearby\"\nurl = \"file://{}/copy\"\nschedule = \"0 6 * * *\"\n",
        copy_dir.path().display()
    );
    let options = Options::restorable().extra(&format!("schedule = {{ full = \"0 2 * * SUN\" }}\n{copies}"));
    let setup = Setup::verifying(options, "").await;
    assert_success(&setup.run(&["init", "--copy", "nearby"]));
    assert_success(&setup.run(&["backup", "--verify"]));
    assert_success(&setup.run(&["dump"]));
    assert_success(&setup.run(&["copy"]));

    let status = document(&setup, &["status", "--json"], "status/1");
    assert_eq!(status["source"], "repository", "{status:#}");
    assert_eq!(status["jobs"][0]["job"], "backup", "{status:#}");
    insta::assert_json_snapshot!("status", shape(&status));
}
