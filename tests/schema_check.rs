//! `lifeboat schema check` on a real PostgreSQL cluster (issue 15, part 3): a database built to
//! have each problem gets exactly those problems, with their objects and fixes; a clean one gets
//! none; `migrate up` prints the problems of the schema it leaves with `schema_check = "warn"` and
//! fails with `"fail"`, its migration still applied.

mod support;

use std::path::PathBuf;

use sqlx::{Connection as _, PgConnection};
use support::archiving::{Archiving, Options, Setup, execute, scalar};
use support::output::{assert_failure, assert_success, describe};

/// A cluster with database `app`, the default environment's, and `[migrate]` pointing at an empty
/// `migrations/` in the test's directory, followed by `extra` keys.
async fn setup_with(extra: &str) -> (Setup, PathBuf) {
    let migrations = tempfile::tempdir().unwrap().keep();
    let setup = Setup::with(Options::new().archiving(Archiving::Copy).extra(&format!(
        "\n[migrate]\ndir = \"{}\"\ndatabase = \"app\"\nlock_timeout = \"300ms\"\n{extra}\n",
        migrations.display()
    )))
    .await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE DATABASE app").await;
    (setup, migrations)
}

async fn app(setup: &Setup) -> PgConnection {
    PgConnection::connect_with(&setup.cluster.connect_options().database("app")).await.unwrap()
}

/// One table (or two) per problem, nothing else wrong with them.
const BROKEN: &str = "
CREATE TABLE nokey (a int, b text);

CREATE TABLE parent (id bigint PRIMARY KEY);
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id));
INSERT INTO parent VALUES (1);
INSERT INTO child VALUES (1, 1);

CREATE TABLE orders (id int PRIMARY KEY, customer_id bigint);
CREATE INDEX orders_customer_id ON orders (customer_id);
INSERT INTO orders VALUES (1, 1), (2, 999);
ALTER TABLE orders ADD CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id) REFERENCES parent (id) NOT VALID;

CREATE TABLE counters (id int PRIMARY KEY);
CREATE SEQUENCE counters_id_seq AS bigint OWNED BY counters.id;
ALTER TABLE counters ALTER COLUMN id SET DEFAULT nextval('counters_id_seq');
SELECT setval('counters_id_seq', 2000000000);
CREATE SEQUENCE big_seq;
SELECT setval('big_seq', 8000000000000000000);
CREATE SEQUENCE quiet_seq;
SELECT setval('quiet_seq', 1000);

CREATE TABLE tags (id int PRIMARY KEY, name text);
CREATE INDEX tags_name ON tags (name);
CREATE INDEX tags_name_again ON tags (name);

CREATE TABLE events (id int PRIMARY KEY, kind text, at timestamptz);
CREATE INDEX events_kind ON events (kind);
CREATE INDEX events_kind_at ON events (kind, at);

CREATE TABLE dupes (id int PRIMARY KEY, v int);
INSERT INTO dupes VALUES (1, 7), (2, 7);
";

fn problems(document: &serde_json::Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = document["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|problem| (problem["kind"].as_str().unwrap().to_owned(), problem["object"].as_str().unwrap().to_owned()))
        .collect();
    found.sort();
    found
}

fn problem<'a>(document: &'a serde_json::Value, kind: &str, object: &str) -> &'a serde_json::Value {
    document["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|problem| problem["kind"] == kind && problem["object"] == object)
        .unwrap_or_else(|| panic!("no {kind} on {object} in {document:#}"))
}

#[tokio::test]
async fn each_problem_is_found_with_its_object_and_fix_and_a_clean_schema_has_none() {
    let (setup, _) = setup_with("").await;
    let mut conn = app(&setup).await;
    sqlx::raw_sql(BROKEN).execute(&mut conn).await.unwrap();
    // A failed CREATE INDEX CONCURRENTLY leaves its index behind, invalid.
    let failed = sqlx::raw_sql("CREATE UNIQUE INDEX CONCURRENTLY dupes_v_unique ON dupes (v)").execute(&mut conn).await;
    assert!(failed.is_err(), "the unique index over duplicates must fail");
    // A row breaking a validated foreign key, loaded the way replication and restores load them.
    execute(&mut conn, "SET session_replication_role = replica").await;
    execute(&mut conn, "INSERT INTO child VALUES (2, 42)").await;
    execute(&mut conn, "RESET session_replication_role").await;

    let output = setup.run(&["schema", "check", "--json"]);
    assert_eq!(output.status.code(), Some(1), "errors exit 1: {}", describe(&output));
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["schema"], "schema-check/1");
    assert_eq!(document["database"], "app");
    let expected: Vec<(String, String)> = [
        ("duplicate-index", "public.tags_name_again"),
        ("foreign-key-type-mismatch", "public.child.parent_id"),
        ("foreign-key-violation", "public.child.child_parent_id_fkey"),
        ("foreign-key-violation", "public.orders.orders_customer_fk"),
        ("invalid-index", "public.dupes_v_unique"),
        ("missing-primary-key", "public.nokey"),
        ("not-valid-constraint", "public.orders.orders_customer_fk"),
        ("overlapping-index", "public.events_kind"),
        ("sequence-near-limit", "public.big_seq"),
        ("sequence-near-limit", "public.counters_id_seq"),
        ("unindexed-foreign-key", "public.child.child_parent_id_fkey"),
    ]
    .iter()
    .map(|(kind, object)| (kind.to_string(), object.to_string()))
    .collect();
    assert_eq!(problems(&document), expected, "{document:#}");
    assert_eq!(document["errors"], 10);
    assert_eq!(document["warnings"], 1);

    let fix = |kind, object| problem(&document, kind, object)["fix"].as_str().unwrap().to_owned();
    let message = |kind, object| problem(&document, kind, object)["message"].as_str().unwrap().to_owned();
    assert!(fix("missing-primary-key", "public.nokey").contains("ALTER TABLE public.nokey ADD PRIMARY KEY"));
    assert_eq!(
        fix("unindexed-foreign-key", "public.child.child_parent_id_fkey"),
        "CREATE INDEX CONCURRENTLY ON public.child (parent_id);"
    );
    assert!(
        fix("invalid-index", "public.dupes_v_unique").starts_with("REINDEX INDEX CONCURRENTLY public.dupes_v_unique;")
    );
    assert!(
        fix("not-valid-constraint", "public.orders.orders_customer_fk")
            .starts_with("ALTER TABLE public.orders VALIDATE CONSTRAINT orders_customer_fk;")
    );
    let orphan = message("foreign-key-violation", "public.orders.orders_customer_fk");
    assert!(orphan.starts_with("1 row of public.orders") && orphan.contains("(999)"), "{orphan}");
    let replica = message("foreign-key-violation", "public.child.child_parent_id_fkey");
    assert!(replica.contains("(42)") && replica.contains("although the constraint is validated"), "{replica}");
    let counters = message("sequence-near-limit", "public.counters_id_seq");
    assert!(counters.contains("column public.counters.id (integer)") && counters.contains("2147483647"), "{counters}");
    assert!(
        fix("sequence-near-limit", "public.counters_id_seq")
            .starts_with("ALTER TABLE public.counters ALTER COLUMN id TYPE bigint;")
    );
    assert!(message("sequence-near-limit", "public.big_seq").contains("86.7 %"));
    assert_eq!(fix("duplicate-index", "public.tags_name_again"), "DROP INDEX CONCURRENTLY public.tags_name_again;");
    assert_eq!(problem(&document, "overlapping-index", "public.events_kind")["severity"], "warning");
    assert!(message("overlapping-index", "public.events_kind").contains("public.events_kind_at"));
    assert!(
        fix("foreign-key-type-mismatch", "public.child.parent_id")
            .starts_with("ALTER TABLE public.child ALTER COLUMN parent_id TYPE bigint;")
    );

    // The text form names the same problems.
    let text = setup.run(&["schema", "check"]);
    assert_eq!(text.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("10 errors, 1 warning"), "{stdout}");
    assert!(stdout.contains("error   unindexed-foreign-key  public.child.child_parent_id_fkey"), "{stdout}");
    assert!(stdout.contains("fix: CREATE INDEX CONCURRENTLY ON public.child (parent_id);"), "{stdout}");

    // A share limit of 1 lets the sequences be.
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    std::fs::write(setup.config_path(), config.replace("[migrate]\n", "[migrate]\nsequence_share_limit = 1.0\n"))
        .unwrap();
    let relaxed: serde_json::Value = serde_json::from_slice(&setup.run(&["schema", "check", "--json"]).stdout).unwrap();
    assert!(!problems(&relaxed).iter().any(|(kind, _)| kind == "sequence-near-limit"), "{relaxed:#}");

    // A clean schema: keys, indexes, validated constraints, matching types.
    execute(&mut conn, "DROP SCHEMA public CASCADE").await;
    execute(&mut conn, "CREATE SCHEMA public").await;
    sqlx::raw_sql(
        "CREATE TABLE parent (id bigint PRIMARY KEY);
         CREATE TABLE child (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, parent_id bigint NOT NULL REFERENCES parent (id));
         CREATE INDEX child_parent_id ON child (parent_id);
         CREATE TABLE events (id serial PRIMARY KEY, kind text);
         CREATE INDEX events_kind ON events (kind, id);
         INSERT INTO parent VALUES (1), (2);
         INSERT INTO child (parent_id) VALUES (1), (2);
         INSERT INTO events (kind) VALUES ('a');",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let clean = setup.run(&["schema", "check"]);
    assert_success(&clean);
    assert!(
        String::from_utf8_lossy(&clean.stdout).contains("app (environment default): no problems"),
        "{}",
        describe(&clean)
    );
    let document = setup.json(&["schema", "check", "--json"]);
    assert_eq!(document["problems"], serde_json::json!([]));
    assert_eq!(scalar(&mut conn, "SELECT count(*)::text FROM child").await, "2");
}

#[tokio::test]
async fn up_prints_the_problems_with_warn_and_fails_with_fail_leaving_the_migration_applied() {
    let (setup, dir) = setup_with("").await;
    std::fs::write(dir.join("1_events.sql"), "CREATE TABLE events (id int, kind text);\n").unwrap();
    let output = setup.run(&["migrate", "up"]);
    assert_success(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("error   missing-primary-key  public.events"), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("applied 1 events"), "{}", describe(&output));

    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    std::fs::write(setup.config_path(), config.replace("[migrate]\n", "[migrate]\nschema_check = \"fail\"\n")).unwrap();
    std::fs::write(
        dir.join("2_orders.sql"),
        "CREATE TABLE orders (id int PRIMARY KEY, event_id int);\nALTER TABLE events ADD PRIMARY KEY (id);\n\
         ALTER TABLE orders ADD FOREIGN KEY (event_id) REFERENCES events (id);\n",
    )
    .unwrap();
    let failed = setup.run(&["migrate", "up"]);
    let message = assert_failure(&failed);
    assert!(message.contains("unindexed-foreign-key  public.orders.orders_event_id_fkey"), "{message}");
    assert!(message.contains("schema_check = \"fail\""), "{message}");
    assert!(!message.contains("missing-primary-key"), "the second migration gave events its key: {message}");
    let mut conn = app(&setup).await;
    assert_eq!(
        scalar(
            &mut conn,
            "SELECT string_agg(version || ':' || success, ',' ORDER BY version) FROM lifeboat.migrations"
        )
        .await,
        "1:true,2:true",
        "the migrations stay applied"
    );

    // With the problem fixed, up (nothing to apply) and the check both pass.
    execute(&mut conn, "CREATE INDEX orders_event_id ON orders (event_id)").await;
    assert_success(&setup.run(&["schema", "check"]));
    std::fs::write(dir.join("3_more.sql"), "CREATE TABLE more (id int PRIMARY KEY);\n").unwrap();
    assert_success(&setup.run(&["migrate", "up"]));
}
