//! `lifeboat seed` and `lifeboat db reset` on a real PostgreSQL cluster (issue 15, part 4): files
//! load once however often `run` runs, parents before children whatever their names, a changed
//! file is reported and not re-run, rollback removes what the last run loaded, a CSV file of
//! 100,000 rows loads through COPY, `clear` is refused in production, and `db reset` drops,
//! migrates and seeds.

mod support;

use std::path::{Path, PathBuf};
use std::time::Instant;

use sqlx::{Connection as _, PgConnection};
use support::archiving::{Archiving, Options, Setup, execute, scalar};
use support::output::{assert_failure, assert_success, describe};

/// A cluster with database `app` as environment `environment` (`production` is one), migrations
/// in `<dir>/migrations` and seeds in `<dir>/seeds/<environment>`; the test's directory.
async fn setup_for(environment: &str) -> (Setup, PathBuf) {
    let dir = tempfile::tempdir().unwrap().keep();
    std::fs::create_dir_all(dir.join("migrations")).unwrap();
    std::fs::create_dir_all(dir.join("seeds").join(environment)).unwrap();
    let setup = Setup::with(Options::new().archiving(Archiving::Copy).extra(&format!(
        "\n[migrate]\ndir = \"{dir}/migrations\"\nseeds_dir = \"{dir}/seeds\"\ndatabase = \"app\"\nenvironment = \
         \"{environment}\"\nrequire_verified_backup_within = \"1h\"\n",
        dir = dir.display()
    )))
    .await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE DATABASE app").await;
    (setup, dir.join("seeds").join(environment))
}

async fn app(setup: &Setup) -> PgConnection {
    PgConnection::connect_with(&setup.cluster.connect_options().database("app")).await.unwrap()
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// Customers and their orders and reviews; the child tables sort before the parent by name.
const SCHEMA: &str = "
CREATE TABLE b_customers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE a_orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES b_customers (id), total numeric);
CREATE TABLE reviews (id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES b_customers (id), stars int);
";

fn write_seeds(dir: &Path) {
    write(dir, "a_orders.csv", "id,customer_id,total\n10,1,9.50\n11,2,\"1000.00\"\n");
    write(dir, "b_customers.csv", "id,name\n1,Ada\n2,\"Grace, \"\"Amazing\"\" Hopper\"\n");
    write(dir, "0_reviews.sql", "INSERT INTO public.reviews (customer_id, stars) VALUES (1, 5), (2, 4);\n");
    write(dir, "0_reviews.down.sql", "DELETE FROM reviews WHERE customer_id IN (1, 2);\n");
}

async fn counts(conn: &mut PgConnection) -> String {
    scalar(
        conn,
        "SELECT (SELECT count(*) FROM b_customers) || '/' || (SELECT count(*) FROM a_orders) || '/' || (SELECT \
         count(*) FROM reviews)",
    )
    .await
}

fn files(document: &serde_json::Value) -> Vec<(String, String)> {
    document["seeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|seed| {
            let state = seed.get("action").or_else(|| seed.get("state")).unwrap();
            (seed["file"].as_str().unwrap().to_owned(), state.as_str().unwrap().to_owned())
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[tokio::test]
async fn run_twice_loads_once_in_foreign_key_order_a_changed_seed_is_reported_and_rollback_removes_the_rows() {
    let (setup, seeds) = setup_for("dev").await;
    let mut conn = app(&setup).await;
    sqlx::raw_sql(SCHEMA).execute(&mut conn).await.unwrap();
    write_seeds(&seeds);

    let status = setup.json(&["seed", "status", "--json"]);
    assert_eq!(status["schema"], "seed-status/1");
    assert_eq!(
        files(&status),
        pairs(&[("0_reviews.sql", "pending"), ("a_orders.csv", "pending"), ("b_customers.csv", "pending")])
    );

    // b_customers first: its children a_orders and reviews (named before it) reference it.
    let first = setup.json(&["seed", "run", "--json"]);
    assert_eq!(first["schema"], "seed-run/1");
    assert_eq!(
        files(&first),
        pairs(&[("b_customers.csv", "loaded"), ("0_reviews.sql", "loaded"), ("a_orders.csv", "loaded")])
    );
    assert_eq!(first["seeds"][0]["tables"], serde_json::json!(["public.b_customers"]));
    assert_eq!(first["seeds"][1]["tables"], serde_json::json!(["public.reviews"]));
    assert_eq!(first["seeds"][2]["rows"], 2);
    assert_eq!(counts(&mut conn).await, "2/2/2");
    assert_eq!(scalar(&mut conn, "SELECT name FROM b_customers WHERE id = 2").await, "Grace, \"Amazing\" Hopper");

    let second = setup.run(&["seed", "run"]);
    assert_success(&second);
    let text = String::from_utf8_lossy(&second.stdout);
    assert_eq!(text.matches("(loaded before, unchanged)").count(), 3, "{text}");
    assert_eq!(counts(&mut conn).await, "2/2/2", "a second run loads nothing");
    let history: Vec<(String, String, i64, i32)> =
        sqlx::query_as("SELECT file, checksum, rows, run FROM lifeboat.seeds ORDER BY file")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(history.len(), 3);
    assert!(
        history.iter().all(|(_, checksum, rows, run)| checksum.len() == 64 && *rows == 2 && *run == 1),
        "{history:?}"
    );

    // An edited file is reported, not run again; nothing else loads meanwhile.
    write(&seeds, "b_customers.csv", "id,name\n1,Ada\n2,Grace\n3,Edsger\n");
    write(&seeds, "c_more.sql", "-- lifeboat:seeds b_customers\nINSERT INTO b_customers VALUES (4, 'Barbara');\n");
    let status = setup.json(&["seed", "status", "--json"]);
    assert_eq!(
        files(&status),
        pairs(&[
            ("0_reviews.sql", "applied"),
            ("a_orders.csv", "applied"),
            ("b_customers.csv", "changed"),
            ("c_more.sql", "pending")
        ])
    );
    let refused = assert_failure(&setup.run(&["seed", "run"]));
    assert!(refused.contains("b_customers.csv (checksum") && refused.contains("--reapply"), "{refused}");
    assert_eq!(counts(&mut conn).await, "2/2/2");
    assert_eq!(scalar(&mut conn, "SELECT count(*)::text FROM b_customers WHERE id = 4").await, "0");

    // Back to the loaded file: c_more.sql runs alone, as run 2; rollback undoes just it.
    write(&seeds, "b_customers.csv", "id,name\n1,Ada\n2,\"Grace, \"\"Amazing\"\" Hopper\"\n");
    let third = setup.json(&["seed", "run", "--json"]);
    assert!(files(&third).contains(&("c_more.sql".to_owned(), "loaded".to_owned())), "{third:#}");
    write(&seeds, "c_more.down.sql", "DELETE FROM b_customers WHERE id = 4;\n");
    let undone = setup.json(&["seed", "rollback", "--json"]);
    assert_eq!(files(&undone), pairs(&[("c_more.sql", "rolled-back")]));
    assert_eq!(scalar(&mut conn, "SELECT count(*)::text FROM b_customers").await, "2");

    // The first run's files, newest first: the CSV rows by their keys, the SQL by its down file.
    let undone = setup.run(&["seed", "rollback"]);
    assert_success(&undone);
    assert_eq!(counts(&mut conn).await, "0/0/0", "{}", describe(&undone));
    assert_eq!(scalar(&mut conn, "SELECT count(*)::text FROM lifeboat.seeds").await, "0");
    let nothing = setup.run(&["seed", "rollback"]);
    assert!(String::from_utf8_lossy(&nothing.stdout).contains("nothing to roll back"), "{}", describe(&nothing));

    // A SQL file without a down file cannot be rolled back, and says so.
    std::fs::remove_file(seeds.join("c_more.down.sql")).unwrap();
    assert_success(&setup.run(&["seed", "run"]));
    assert_eq!(counts(&mut conn).await, "3/2/2");
    let refused = assert_failure(&setup.run(&["seed", "rollback"]));
    assert!(refused.contains("c_more.sql has no c_more.down.sql"), "{refused}");
    assert_eq!(counts(&mut conn).await, "3/2/2", "a refused rollback removes nothing");

    // clear empties every seeded table and the history, outside production.
    let cleared = setup.json(&["seed", "clear", "--json"]);
    assert_eq!(cleared["command"], "clear");
    assert_eq!(counts(&mut conn).await, "0/0/0");
    assert_eq!(scalar(&mut conn, "SELECT count(*)::text FROM lifeboat.seeds").await, "0");
    let audit = std::fs::read_to_string(setup.audit_path()).unwrap();
    assert!(audit.lines().any(|line| line.contains("\"operation\":\"seed\"") && line.contains("\"clear\"")), "{audit}");
}

#[tokio::test]
async fn seeds_in_a_cycle_of_foreign_keys_are_refused_naming_the_tables() {
    let (setup, seeds) = setup_for("dev").await;
    let mut conn = app(&setup).await;
    sqlx::raw_sql(
        "CREATE TABLE hens (id int PRIMARY KEY, egg_id int);
         CREATE TABLE eggs (id int PRIMARY KEY, hen_id int REFERENCES hens (id));
         ALTER TABLE hens ADD FOREIGN KEY (egg_id) REFERENCES eggs (id);",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    write(&seeds, "eggs.csv", "id,hen_id\n1,\n");
    write(&seeds, "hens.csv", "id,egg_id\n1,\n");
    let refused = assert_failure(&setup.run(&["seed", "run"]));
    assert!(refused.contains("cycle (public.eggs, public.hens)"), "{refused}");
    assert_eq!(scalar(&mut conn, "SELECT count(*)::text FROM hens").await, "0");
}

#[tokio::test]
async fn a_csv_of_100000_rows_loads_through_copy() {
    let (setup, seeds) = setup_for("dev").await;
    let mut conn = app(&setup).await;
    execute(
        &mut conn,
        "CREATE TABLE readings (id bigint PRIMARY KEY, sensor text NOT NULL, value double precision, at timestamptz)",
    )
    .await;
    let mut text = String::from("id,sensor,value,at\n");
    for id in 1..=100_000u32 {
        text.push_str(&format!("{id},sensor-{},{}.25,2026-01-01 00:00:{:02}+00\n", id % 97, id % 1000, id % 60));
    }
    write(&seeds, "readings.csv", &text);
    let started = Instant::now();
    let output = setup.run(&["seed", "run", "--json"]);
    let elapsed = started.elapsed();
    assert_success(&output);
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    println!(
        "100,000-row CSV ({} bytes): seed run took {} ms end to end, {} ms in COPY",
        text.len(),
        elapsed.as_millis(),
        document["seeds"][0]["duration_ms"]
    );
    assert_eq!(document["seeds"][0]["rows"], 100_000);
    assert_eq!(scalar(&mut conn, "SELECT count(*)::text FROM readings").await, "100000");
    assert_eq!(
        scalar(&mut conn, "SELECT sensor || ' ' || value FROM readings WHERE id = 99999").await,
        "sensor-89 999.25"
    );
    // The row count is COPY's own, recorded with the file.
    assert_eq!(scalar(&mut conn, "SELECT rows::text FROM lifeboat.seeds WHERE file = 'readings.csv'").await, "100000");
}

#[tokio::test]
async fn clear_and_db_reset_are_refused_in_production_and_nothing_is_deleted() {
    let (setup, seeds) = setup_for("production").await;
    let mut conn = app(&setup).await;
    sqlx::raw_sql(SCHEMA).execute(&mut conn).await.unwrap();
    write_seeds(&seeds);
    assert_success(&setup.run(&["seed", "run"]));
    assert_eq!(counts(&mut conn).await, "2/2/2");

    let refused = assert_failure(&setup.run(&["seed", "clear"]));
    assert!(refused.contains("`seed clear` is refused in environment \"production\""), "{refused}");
    assert_eq!(counts(&mut conn).await, "2/2/2");
    assert_eq!(scalar(&mut conn, "SELECT count(*)::text FROM lifeboat.seeds").await, "3");

    let refused = assert_failure(&setup.run(&["db", "reset", "--yes"]));
    assert!(refused.contains("`db reset` is refused in environment \"production\""), "{refused}");
    assert_eq!(counts(&mut conn).await, "2/2/2");
}

#[tokio::test]
async fn db_reset_drops_migrates_and_seeds_outside_production() {
    let (setup, seeds) = setup_for("dev").await;
    let migrations = seeds.parent().unwrap().parent().unwrap().join("migrations");
    write(&migrations, "1_schema.sql", SCHEMA);
    write_seeds(&seeds);
    let mut conn = app(&setup).await;
    execute(&mut conn, "CREATE TABLE leftover (id int PRIMARY KEY)").await;
    conn.close().await.unwrap();

    let unconfirmed = assert_failure(&setup.run(&["db", "reset"]));
    assert!(unconfirmed.contains("pass --yes"), "{unconfirmed}");

    // Another session holds the database: refused unless --force.
    let holder = app(&setup).await;
    let busy = assert_failure(&setup.run(&["db", "reset", "--yes"]));
    assert!(busy.contains("1 other session connected") && busy.contains("--force"), "{busy}");

    let output = setup.run(&["db", "reset", "--yes", "--force"]);
    assert_success(&output);
    drop(holder);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("dropped and recreated database app"), "{}", describe(&output));
    assert!(stdout.contains("applied 1 schema"), "{}", describe(&output));
    let mut conn = app(&setup).await;
    assert_eq!(scalar(&mut conn, "SELECT (to_regclass('leftover') IS NULL)::text").await, "true");
    assert_eq!(counts(&mut conn).await, "2/2/2");
    assert_eq!(scalar(&mut conn, "SELECT count(*)::text FROM lifeboat.migrations WHERE success").await, "1");
    assert_eq!(scalar(&mut conn, "SELECT count(*)::text FROM lifeboat.seeds").await, "3");
    let audit = std::fs::read_to_string(setup.audit_path()).unwrap();
    assert!(
        audit.lines().any(|line| line.contains("\"operation\":\"db-reset\"") && line.contains("succeeded")),
        "{audit}"
    );
}
