//! `lifeboat migrate rehearse` (issue 15, part 2) on a real cluster archiving with `wal-push`
//! into a local repository: the newest verified backup is restored into a scratch cluster and
//! replayed to the end of the archived WAL, so rows written after the backup are on the copy; a
//! migration the data breaks (NOT NULL over NULLs, a unique index over duplicates) fails naming
//! its statement, although it applies to an empty database; `up` with `rehearse = true` refuses it
//! and leaves the database as it was. A type change is reported as a rewrite, with its time and
//! its ACCESS EXCLUSIVE lock; a down file that forgets an index is "schema differs after down"
//! with the index named; the stored report reads back.

mod support;

use std::path::{Path, PathBuf};

use sqlx::{Connection as _, PgConnection};
use support::archiving::{Setup, execute, layout, scalar};
use support::output::{assert_failure, assert_success, describe};

/// A verifying setup whose production environment migrates database `app`, with `rehearse`.
async fn production(rehearse: bool) -> (Setup, PathBuf) {
    let migrations = tempfile::tempdir().unwrap().keep();
    let setup = Setup::start_verifying("").await;
    write_migrate_table(&setup, &migrations, "app", rehearse);
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE DATABASE app").await;
    (setup, migrations)
}

/// Replaces (or adds) the `[migrate]` table.
fn write_migrate_table(setup: &Setup, dir: &Path, database: &str, rehearse: bool) {
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    let base = config.find("[migrate]").map_or(config.as_str(), |at| &config[..at]);
    let table = format!(
        "[migrate]\ndir = \"{}\"\ndatabase = \"{database}\"\nenvironment = \"production\"\n\
         require_verified_backup_within = \"1h\"\narchive_timeout = \"60s\"\nrehearse = {rehearse}\n",
        dir.display()
    );
    std::fs::write(setup.config_path(), format!("{base}\n{table}")).unwrap();
}

async fn connect(setup: &Setup, database: &str) -> PgConnection {
    PgConnection::connect_with(&setup.cluster.connect_options().database(database)).await.unwrap()
}

fn rehearse(setup: &Setup) -> (std::process::Output, serde_json::Value) {
    let output = setup.run(&["migrate", "rehearse", "--json"]);
    let document = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("no JSON ({error}):\n{}", describe(&output)));
    (output, document)
}

/// No scratch server is left in the scratch directory.
fn assert_scratch_removed(setup: &Setup) {
    let scratch = setup.config().verify.scratch_dir;
    let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    assert!(left.is_empty(), "the scratch cluster was removed: {left:?}");
}

#[tokio::test]
async fn data_written_after_the_backup_breaks_the_rehearsal_and_up_refuses_while_an_empty_database_takes_it() {
    let (setup, dir) = production(true).await;
    let mut app = connect(&setup, "app").await;
    execute(&mut app, "CREATE TABLE items (id int, sku text, note text)").await;
    execute(&mut app, "INSERT INTO items SELECT g, 'sku-' || g, 'note' FROM generate_series(1, 200) g").await;

    // No verified backup yet: the refusal names the next steps.
    std::fs::write(dir.join("1_items_index.up.sql"), "CREATE INDEX items_id ON items (id);\n").unwrap();
    let refused = assert_failure(&setup.run(&["migrate", "rehearse"]));
    assert!(
        refused.contains("`lifeboat backup`, then `lifeboat verify`"),
        "no verified backup: backup then verify is named: {refused}"
    );
    assert_scratch_removed(&setup);

    // Migration 1 applies for real (its rehearsal passes), so the history table exists before
    // the refused run.
    assert_success(&setup.run(&["backup", "--verify"]));
    assert_success(&setup.run(&["migrate", "up", "--approve"]));
    assert_success(&setup.run(&["backup", "--verify"]));

    // After the backup: a NULL note and a duplicate sku, archived only as WAL.
    execute(&mut app, "INSERT INTO items VALUES (201, 'sku-1', NULL)").await;
    std::fs::write(
        dir.join("2_note_required.up.sql"),
        "-- every item has a note from now on\nALTER TABLE items ADD COLUMN checked boolean;\n\
         ALTER TABLE items ALTER COLUMN note SET NOT NULL;\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("2_note_required.down.sql"),
        "ALTER TABLE items ALTER COLUMN note DROP NOT NULL;\nALTER TABLE items DROP COLUMN checked;\n",
    )
    .unwrap();

    let (output, report) = rehearse(&setup);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(report["schema"], "migrate-rehearse/1");
    assert_eq!(report["passed"], false, "{report}");
    assert_eq!(report["source"]["kind"], "base");
    let failure = &report["failure"];
    assert_eq!(failure["version"], "2", "{report}");
    assert_eq!(failure["statement"], 1, "the second statement, counted from 0: {report}");
    assert_eq!(failure["line"], 3, "{report}");
    assert!(failure["file"].as_str().unwrap().ends_with("2_note_required.up.sql"), "{report}");
    assert!(failure["text"].as_str().unwrap().contains("SET NOT NULL"), "{report}");
    assert!(failure["error"].as_str().unwrap().contains("contains null values"), "{report}");
    assert_scratch_removed(&setup);

    // `up` with rehearse = true refuses, naming the statement, and changes nothing.
    let history_before =
        scalar(&mut app, "SELECT string_agg(version || ':' || success, ',') FROM lifeboat.migrations").await;
    let refused = assert_failure(&setup.run(&["migrate", "up", "--approve"]));
    assert!(refused.contains("SET NOT NULL") && refused.contains("up refuses"), "{refused}");
    assert!(refused.contains("2_note_required.up.sql:3"), "the file and line are named: {refused}");
    assert_eq!(
        scalar(&mut app, "SELECT string_agg(version || ':' || success, ',') FROM lifeboat.migrations").await,
        history_before,
        "the history is unchanged"
    );
    assert_eq!(
        scalar(&mut app, "SELECT count(*)::text FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'checked'").await,
        "0",
        "the schema is unchanged"
    );
    assert_eq!(
        scalar(
            &mut app,
            "SELECT is_nullable FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'note'"
        )
        .await,
        "YES"
    );

    // A unique index over the duplicate sku written after the backup fails the same way.
    std::fs::remove_file(dir.join("2_note_required.up.sql")).unwrap();
    std::fs::remove_file(dir.join("2_note_required.down.sql")).unwrap();
    std::fs::write(dir.join("2_sku_unique.up.sql"), "CREATE UNIQUE INDEX items_sku ON items (sku);\n").unwrap();
    let (output, report) = rehearse(&setup);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(report["failure"]["version"], "2", "{report}");
    assert!(report["failure"]["text"].as_str().unwrap().contains("CREATE UNIQUE INDEX items_sku"), "{report}");
    assert!(report["failure"]["error"].as_str().unwrap().contains("could not create unique index"), "{report}");

    // The same migrations on an empty table: plain `up` applies them.
    std::fs::remove_file(dir.join("2_sku_unique.up.sql")).unwrap();
    std::fs::write(dir.join("3_sku_unique.up.sql"), "CREATE UNIQUE INDEX items_sku ON items (sku);\n").unwrap();
    std::fs::write(
        dir.join("2_note_required.up.sql"),
        "ALTER TABLE items ADD COLUMN checked boolean;\nALTER TABLE items ALTER COLUMN note SET NOT NULL;\n",
    )
    .unwrap();
    execute(&mut setup.connect().await, "CREATE DATABASE empty").await;
    let mut empty = connect(&setup, "empty").await;
    execute(&mut empty, "CREATE TABLE items (id int, sku text, note text)").await;
    write_migrate_table(&setup, &dir, "empty", false);
    let output = setup.run(&["migrate", "up", "--approve"]);
    assert_success(&output);
    assert_eq!(
        scalar(&mut empty, "SELECT count(*)::text FROM lifeboat.migrations WHERE success").await,
        "3",
        "{}",
        describe(&output)
    );
}

#[tokio::test]
async fn a_rewrite_its_lock_and_a_down_file_that_forgets_an_index_are_reported_and_the_report_is_stored() {
    let (setup, dir) = production(false).await;
    let mut app = connect(&setup, "app").await;
    execute(&mut app, "CREATE TABLE orders (id int PRIMARY KEY, label text NOT NULL)").await;
    execute(&mut app, "INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 5000) g").await;
    assert_success(&setup.run(&["backup", "--verify"]));

    std::fs::write(dir.join("1_wide_ids.up.sql"), "ALTER TABLE orders ALTER COLUMN id TYPE bigint;\n").unwrap();
    std::fs::write(dir.join("1_wide_ids.down.sql"), "ALTER TABLE orders ALTER COLUMN id TYPE int;\n").unwrap();
    std::fs::write(
        dir.join("2_label_index.up.sql"),
        "CREATE INDEX orders_label ON orders (label);\nUPDATE orders SET label = label || '!' WHERE id <= 10;\n",
    )
    .unwrap();
    std::fs::write(dir.join("2_label_index.down.sql"), "UPDATE orders SET label = rtrim(label, '!') WHERE id <= 10;\n")
        .unwrap();

    let (output, report) = rehearse(&setup);
    assert_eq!(output.status.code(), Some(1), "the down path of 2 does not hold: {}", describe(&output));
    let migrations = report["migrations"].as_array().unwrap();
    assert_eq!(migrations.len(), 2, "{report}");

    let widen = &migrations[0];
    let statement = &widen["statements"][0];
    assert_eq!(statement["statement"], 0);
    assert_eq!(statement["line"], 1);
    assert!(statement["file"].as_str().unwrap().ends_with("1_wide_ids.up.sql"), "{statement}");
    assert_eq!(statement["rewritten"], serde_json::json!(["orders"]), "a type change rewrites the table: {statement}");
    assert!(statement["ms"].as_f64().unwrap() > 0.0, "{statement}");
    assert!(statement["wal_bytes"].as_u64().unwrap() > 100_000, "rewriting 5000 rows writes WAL: {statement}");
    let locks = statement["locks"].as_array().unwrap();
    assert!(
        locks.iter().any(|lock| lock["mode"] == "AccessExclusiveLock" && lock["relation"] == "orders"),
        "the rewrite holds ACCESS EXCLUSIVE on orders: {statement}"
    );
    // The lint finding on the type change is graded by the copy's table and kept beside the
    // statement's measurement.
    let finding = widen["findings"].as_array().unwrap().iter().find(|f| f["rule"] == "changing-column-type");
    let finding = finding.unwrap_or_else(|| panic!("the type change is a lint finding: {widen}"));
    assert_eq!(finding["statement"], 0, "{finding}");
    assert!(finding["size"]["bytes"].as_u64().unwrap() > 0, "graded by the copy's orders table: {finding}");
    assert_eq!(widen["down"]["verdict"], "restored", "{widen}");
    assert!(widen["down"]["up_again_ms"].is_u64(), "up → down → up: {widen}");
    let counts = widen["down"]["row_counts"].as_array().unwrap();
    assert_eq!(counts[0]["table"], "orders");
    assert_eq!(counts[0]["before"], 5000);
    assert_eq!(counts[0]["after_down"], 5000);

    let index = &migrations[1];
    assert_eq!(index["statements"][1]["rows"], 10, "the UPDATE's rows: {index}");
    assert_eq!(index["statements"][1]["rewritten"], serde_json::json!([]), "an UPDATE rewrites nothing: {index}");
    assert_eq!(index["down"]["verdict"], "schema differs after down", "{index}");
    let extra = index["down"]["schema_extra"].as_array().unwrap();
    assert!(
        extra
            .iter()
            .any(|statement| statement.as_str().unwrap().starts_with("CREATE INDEX orders_label ON public.orders")),
        "the forgotten index is named: {index}"
    );
    assert_eq!(report["down_paths_hold"], false);
    assert!(
        report["failure"]["error"].as_str().unwrap().contains("already exists"),
        "the up after the down fails on the index left behind: {report}"
    );

    // The text names the verdict and shows the difference.
    let text = setup.run(&["migrate", "rehearse"]);
    let printed = String::from_utf8_lossy(&text.stdout);
    assert!(printed.contains("down path: schema differs after down"), "{printed}");
    assert!(printed.contains("+ CREATE INDEX orders_label"), "{printed}");
    assert!(printed.contains("AccessExclusiveLock orders"), "{printed}");
    assert!(
        printed.contains("changing-column-type")
            && printed.contains("on the copy: held")
            && printed.contains("held AccessExclusiveLock on orders for"),
        "the finding is printed with what its statement did on the copy: {printed}"
    );

    // The stored report reads back, beside (not inside) the verification reports.
    let repository = setup.repository().await;
    let key = report["stored_as"].as_str().unwrap();
    assert!(key.starts_with("clusters/main/rehearsals/"), "{key}");
    let (newest_key, stored) =
        lifeboat::migrate::rehearse::report::newest(&repository, &layout(), Some("production")).await.unwrap().unwrap();
    assert!(newest_key.as_str() > key, "the second rehearsal is the newest");
    assert_eq!(stored.migrations.len(), 2);
    assert_eq!(stored.migrations[1].down.verdict, "schema differs after down");
    assert_eq!(stored.source.id, report["source"]["id"].as_str().unwrap());
    let first = repository.get_bytes(&lifeboat::storage::ObjectKey::new(key.to_owned()).unwrap()).await.unwrap();
    let first = lifeboat::migrate::rehearse::report::RehearsalReport::from_json(&first).unwrap();
    assert_eq!(serde_json::to_value(&first.migrations).unwrap(), report["migrations"]);

    // `migrate plan` shows the last rehearsal's timings beside each statement it ran.
    let plan_json = setup.json(&["migrate", "plan", "--json"]);
    assert_eq!(plan_json["rehearsal"]["source_kind"], "base", "{plan_json:#}");
    let measured = &plan_json["migrations"][0]["rehearsed"][0];
    assert_eq!(measured["rewritten"], serde_json::json!(["orders"]), "plan --json carries the timings: {plan_json:#}");
    let plan = setup.run(&["migrate", "plan"]);
    assert_success(&plan);
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(plan.contains("held AccessExclusiveLock on orders for"), "{plan}");
    assert!(plan.contains("rewrote orders"), "{plan}");

    // The database itself was never touched.
    assert_eq!(scalar(&mut app, "SELECT count(*)::text FROM pg_indexes WHERE indexname = 'orders_label'").await, "0");
    assert_eq!(
        scalar(
            &mut app,
            "SELECT data_type FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'id'"
        )
        .await,
        "integer"
    );
    let audit = std::fs::read_to_string(setup.audit_path()).unwrap();
    assert!(audit.lines().any(|line| line.contains("\"operation\":\"rehearse\"")), "{audit}");
    assert!(
        !audit.lines().any(|line| line.contains("\"operation\":\"migrate\"")),
        "the runs on the copy are not migrations: {audit}"
    );
}

/// With `gate_backup = "dump"` the copy is the newest verified dump of the database, restored
/// into a fresh scratch server: the report says its data is as of the dump (a dump has no WAL to
/// replay), so a row written after the dump is not on the copy, while the dump's own rows are.
#[tokio::test]
async fn with_gate_backup_dump_the_copy_is_the_newest_verified_dump_as_of_its_time() {
    let (setup, dir) = production(false).await;
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    std::fs::write(setup.config_path(), format!("{config}gate_backup = \"dump\"\n")).unwrap();
    let mut app = connect(&setup, "app").await;
    execute(&mut app, "CREATE TABLE items (id int, sku text)").await;
    execute(&mut app, "INSERT INTO items SELECT g, 'sku-' || g FROM generate_series(1, 50) g").await;

    std::fs::write(dir.join("1_sku_unique.up.sql"), "CREATE UNIQUE INDEX items_sku ON items (sku);\n").unwrap();
    std::fs::write(dir.join("1_sku_unique.down.sql"), "DROP INDEX items_sku;\n").unwrap();
    let refused = assert_failure(&setup.run(&["migrate", "rehearse"]));
    assert!(refused.contains("`lifeboat dump --db app`, then `lifeboat verify`"), "{refused}");

    assert_success(&setup.run(&["dump", "--db", "app", "--verify"]));
    // A duplicate written after the dump: the copy, as of the dump, does not have it.
    execute(&mut app, "INSERT INTO items VALUES (51, 'sku-1')").await;

    let (output, report) = rehearse(&setup);
    assert_success(&output);
    assert_eq!(report["source"]["kind"], "dump", "{report}");
    assert!(report["source"]["data_as_of"].as_str().unwrap().contains("a dump has no WAL to replay"), "{report}");
    assert_eq!(report["passed"], true, "the dump has no duplicate: {report}");
    let migration = &report["migrations"][0];
    assert_eq!(migration["down"]["verdict"], "restored", "{migration}");
    assert_eq!(migration["down"]["row_counts"][0]["before"], 50, "the dump's rows are on the copy: {migration}");
    assert_scratch_removed(&setup);

    // The database itself still has no index.
    assert_eq!(scalar(&mut app, "SELECT count(*)::text FROM pg_indexes WHERE indexname = 'items_sku'").await, "0");
}
