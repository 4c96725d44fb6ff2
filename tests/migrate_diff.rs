//! `lifeboat migrate diff --to schema.sql NAME` on a real PostgreSQL cluster (issue 15, part 5):
//! from a directory of migrations (tables, an enum, a sequence, a view, foreign keys, indexes,
//! checks) and a schema.sql that changes each kind, the generated pair, applied after the existing
//! migrations by `lifeboat migrate up`, gives a schema identical to a database built from
//! schema.sql (normalised `pg_dump --schema-only`), and `lifeboat migrate down` gives back the
//! original; no difference writes nothing; a difference only in what it does not compare (a
//! comment) is reported, and one left over after a generated migration fails its proof; an error in
//! schema.sql names its file and line; another tool's layout is refused.

mod support;

use std::path::{Path, PathBuf};

use lifeboat::migrate::schema_dump::NormalisedSchema;
use support::archiving::{Archiving, Options, Setup, execute};
use support::output::{assert_failure, assert_success, describe};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

const BASE_UP: &str = "\
CREATE TYPE status AS ENUM ('new', 'paid');
CREATE SEQUENCE invoice_no START 100;
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text, legacy text);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    customer_id int REFERENCES customers (id),
    state status NOT NULL DEFAULT 'new',
    amount int CONSTRAINT amount_positive CHECK (amount > 0),
    note varchar(20) DEFAULT 'none',
    invoice bigint DEFAULT nextval('invoice_no')
);
CREATE INDEX orders_state ON orders (state);
CREATE TABLE tags (name text);
CREATE TABLE events (id int PRIMARY KEY, kind text);
CREATE TABLE audit (id int, what text);
";

const BASE_DOWN: &str = "\
DROP TABLE audit, events, tags, orders, customers;
DROP SEQUENCE invoice_no;
DROP TYPE status;
";

const VIEWS_UP: &str = "\
CREATE VIEW open_orders AS SELECT id, state FROM orders WHERE state = 'new';
CREATE VIEW tag_names AS SELECT name FROM tags;
CREATE UNIQUE INDEX customers_email ON customers (email);
";

const VIEWS_DOWN: &str = "DROP INDEX customers_email;\nDROP VIEW tag_names;\nDROP VIEW open_orders;\n";

/// Every kind changed: an enum label added, a sequence's increment, columns added, dropped,
/// retyped, with a new default and nullability, a unique index swapped for a unique constraint,
/// a primary key added (tags) and dropped (events), a check replaced, a foreign key changed and
/// one added, a table added (products) and one dropped (audit), a view widened (tag_names) and
/// one rewritten over retyped columns (open_orders).
const SCHEMA: &str = "\
-- The schema the application wants.
CREATE TYPE status AS ENUM ('new', 'shipped', 'paid');
CREATE SEQUENCE invoice_no START 100 INCREMENT 5;
CREATE TABLE customers (
    id int PRIMARY KEY,
    name text,
    email text NOT NULL CONSTRAINT customers_email_key UNIQUE,
    country text DEFAULT 'NL'
);
CREATE TABLE products (id int PRIMARY KEY, title text NOT NULL);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    customer_id bigint REFERENCES customers (id) ON DELETE CASCADE,
    state status NOT NULL DEFAULT 'new',
    amount int CONSTRAINT amount_non_negative CHECK (amount >= 0),
    note text DEFAULT 'n/a',
    invoice bigint DEFAULT nextval('invoice_no'),
    product_id int REFERENCES products (id)
);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE TABLE tags (name text PRIMARY KEY);
CREATE TABLE events (id int NOT NULL, kind text);
CREATE VIEW open_orders AS SELECT id, state, amount FROM orders WHERE state <> 'paid';
CREATE VIEW tag_names AS SELECT name, upper(name) AS loud FROM tags;
";

/// A cluster with database `app`, `[migrate]` on `migrations/` and `[verify] scratch_dir` in the
/// test's directory.
async fn setup() -> (Setup, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let migrations = dir.path().join("migrations");
    std::fs::create_dir(&migrations).unwrap();
    let options = Options::new().archiving(Archiving::Copy).extra(&format!(
        "\n[migrate]\ndir = \"{}\"\ndatabase = \"app\"\nlock_timeout = \"5s\"\n",
        migrations.display()
    ));
    let setup = Setup::verifying(options, "").await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE DATABASE app").await;
    std::mem::forget(dir);
    (setup, migrations)
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn url(setup: &Setup, database: &str) -> String {
    setup.cluster.connection_url().replacen("///postgres?", &format!("///{database}?"), 1)
}

/// The normalised schema of `database`, without lifeboat's history table.
fn dump(setup: &Setup, database: &str) -> NormalisedSchema {
    let output = std::process::Command::new(format!("{PG_BIN}/pg_dump"))
        .args(["--schema-only", "--no-owner", "--no-privileges", "--dbname", &url(setup, database)])
        .output()
        .unwrap();
    assert!(output.status.success(), "pg_dump {database}: {}", describe(&output));
    let mut schema = NormalisedSchema::from_dump(&String::from_utf8_lossy(&output.stdout));
    schema.statements.retain(|statement| !statement.contains("lifeboat.") && statement != "CREATE SCHEMA lifeboat;");
    schema
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_generated_pair_takes_the_migrations_to_schema_sql_and_back() {
    let (setup, dir) = setup().await;
    write(&dir, "1_base.up.sql", BASE_UP);
    write(&dir, "1_base.down.sql", BASE_DOWN);
    write(&dir, "2_views.up.sql", VIEWS_UP);
    write(&dir, "2_views.down.sql", VIEWS_DOWN);
    let schema_file = setup.dir.path().join("schema.sql");
    std::fs::write(&schema_file, SCHEMA).unwrap();
    assert_success(&setup.run(&["migrate", "up"]));
    let original = dump(&setup, "app");

    // As text, into a copy of the directory: the files written and what they change.
    let copy = setup.dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    for name in files(&dir) {
        std::fs::copy(dir.join(&name), copy.join(&name)).unwrap();
    }
    let output = setup.run(&[
        "migrate",
        "diff",
        "--to",
        schema_file.to_str().unwrap(),
        "reshape",
        "--dir",
        copy.to_str().unwrap(),
    ]);
    assert_success(&output);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains(&format!("wrote {}", copy.join("3_reshape.up.sql").display())), "{text}");
    assert!(text.contains("tables: 1 created, 1 dropped, 3 altered; indexes: 1 created, 2 dropped"), "{text}");
    assert!(text.contains("warning: drops table public.audit"), "{text}");
    assert!(text.contains("proven on a scratch server (PostgreSQL 15 in "), "{text}");
    assert!(text.contains("lint: ") && text.contains("changing-column-type"), "{text}");

    let report = setup.json(&["migrate", "diff", "--to", schema_file.to_str().unwrap(), "reshape", "--json"]);
    assert_eq!(report["schema"], "migrate-diff/1");
    assert_eq!(report["different"], true);
    assert_eq!(report["proven"], true, "{report:#}");
    assert_eq!(report["version"], "3");
    assert_eq!(files(&dir)[4..], ["3_reshape.down.sql", "3_reshape.up.sql"]);
    let summary = &report["summary"];
    assert_eq!(summary["tables_created"], serde_json::json!(["public.products"]));
    assert_eq!(summary["tables_dropped"], serde_json::json!(["public.audit"]));
    assert_eq!(summary["enums_altered"], serde_json::json!(["public.status"]));
    assert_eq!(summary["sequences_altered"], serde_json::json!(["public.invoice_no"]));
    assert_eq!(summary["views_replaced"], serde_json::json!(["public.open_orders", "public.tag_names"]));
    assert_eq!(summary["indexes_dropped"], serde_json::json!(["public.customers_email", "public.orders_state"]));
    assert_eq!(summary["indexes_created"], serde_json::json!(["public.orders_customer"]));
    let warnings = report["warnings"].to_string();
    assert!(warnings.contains("drops table public.audit") && warnings.contains("drops column public.customers.legacy"));
    // The generated migration is linted like any other: its type change and dropped table are
    // named, graded by the environment's (existing) tables.
    let rules: Vec<&str> = report["findings"].as_array().unwrap().iter().map(|f| f["rule"].as_str().unwrap()).collect();
    assert!(rules.contains(&"changing-column-type") && rules.contains(&"ban-drop-table"), "{rules:?}");
    let type_change =
        report["findings"].as_array().unwrap().iter().find(|f| f["rule"] == "changing-column-type").unwrap();
    assert_eq!(type_change["graded"], true, "{type_change}");

    let up = std::fs::read_to_string(dir.join("3_reshape.up.sql")).unwrap();
    assert!(up.starts_with("-- Generated by `lifeboat migrate diff` from "), "{up}");
    for expected in [
        "ALTER TYPE public.status ADD VALUE 'shipped' AFTER 'new';",
        "ALTER TABLE public.orders ALTER COLUMN customer_id TYPE bigint USING customer_id::bigint;",
        "ALTER TABLE public.customers ALTER COLUMN email SET NOT NULL;",
        "ALTER TABLE public.customers ALTER COLUMN name DROP NOT NULL;",
        "ALTER TABLE public.orders ALTER COLUMN note SET DEFAULT 'n/a'::text;",
        "ALTER TABLE public.tags ADD CONSTRAINT tags_pkey PRIMARY KEY (name);",
        "ALTER TABLE public.events DROP CONSTRAINT events_pkey;",
        "CREATE OR REPLACE VIEW public.tag_names AS",
        "-- WARNING: drops table public.audit",
    ] {
        assert!(up.contains(expected), "{expected:?} is not in the up file:\n{up}");
    }
    let down = std::fs::read_to_string(dir.join("3_reshape.down.sql")).unwrap();
    assert!(down.contains("ALTER TYPE public.status RENAME TO status__lifeboat_old;"), "{down}");
    // Names are qualified, so the files mean the same under any search_path.
    assert!(up.contains("WHERE (orders.state <> 'paid'::public.status)"), "{up}");

    // Applied by the runner after the existing migrations: the schema of schema.sql. Its drops
    // are intended here, so the operator turns their rules off (or writes allow directives).
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    let reviewed = "\n[migrate.lint]\ndisable = [\"ban-drop-table\", \"ban-drop-column\", \"ban-drop-not-null\"]\n";
    std::fs::write(setup.config_path(), format!("{config}{reviewed}")).unwrap();
    assert_success(&setup.run(&["migrate", "up"]));
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE DATABASE wanted").await;
    let psql = std::process::Command::new(format!("{PG_BIN}/psql"))
        .args(["--no-psqlrc", "-v", "ON_ERROR_STOP=1", "--quiet", "--dbname", &url(&setup, "wanted"), "--file"])
        .arg(&schema_file)
        .output()
        .unwrap();
    assert!(psql.status.success(), "psql: {}", describe(&psql));
    let migrated = dump(&setup, "app");
    assert_eq!(migrated.difference(&dump(&setup, "wanted")), None, "after up");
    assert_ne!(migrated, original);

    // And its down file gives back the schema the first two migrations built.
    assert_success(&setup.run(&["migrate", "down"]));
    assert_eq!(original.difference(&dump(&setup, "app")), None, "after down");

    // Again from the same directory (3 is pending now) nothing differs: no new files.
    let output = setup.run(&["migrate", "diff", "--to", schema_file.to_str().unwrap(), "again"]);
    assert_success(&output);
    assert!(String::from_utf8_lossy(&output.stdout).contains("no difference"), "{}", describe(&output));
    assert_eq!(files(&dir).len(), 6);
}

#[tokio::test]
async fn no_difference_writes_nothing_and_other_layouts_are_refused() {
    let (setup, dir) = setup().await;
    write(&dir, "1_base.up.sql", BASE_UP);
    write(&dir, "1_base.down.sql", BASE_DOWN);
    let schema_file = setup.dir.path().join("schema.sql");
    // Written differently (a table per statement, in another order), the same schema.
    std::fs::write(&schema_file, BASE_UP.replace("CREATE TABLE audit (id int, what text);\n", "")).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&schema_file)
        .map(|mut file| {
            use std::io::Write as _;
            file.write_all(b"create table AUDIT (ID integer, WHAT text);\n").unwrap()
        })
        .unwrap();
    let report = setup.json(&["migrate", "diff", "--to", schema_file.to_str().unwrap(), "nothing", "--json"]);
    assert_eq!(report["different"], false, "{report:#}");
    assert_eq!(report["files"], serde_json::json!([]));
    assert_eq!(files(&dir), ["1_base.down.sql", "1_base.up.sql"]);

    // What migrate diff does not compare is not called agreement: nothing written, exit 1.
    let commented = setup.dir.path().join("commented.sql");
    let mut text = std::fs::read_to_string(&schema_file).unwrap();
    text.push_str("COMMENT ON TABLE audit IS 'kept for the auditors';\n");
    std::fs::write(&commented, &text).unwrap();
    let output = setup.run(&["migrate", "diff", "--to", commented.to_str().unwrap(), "comment"]);
    assert_failure(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("differ only in what migrate diff does not compare"), "{}", describe(&output));
    assert!(stdout.contains("- COMMENT ON TABLE public.audit IS 'kept for the auditors';"), "{stdout}");
    assert_eq!(files(&dir), ["1_base.down.sql", "1_base.up.sql"]);

    // With a change it does write, the proof on the scratch server finds the comment missing: the
    // files are written for correction, and the command fails saying what differs.
    text.push_str("CREATE TABLE notes (body text);\n");
    std::fs::write(&commented, &text).unwrap();
    let output = setup.run(&["migrate", "diff", "--to", commented.to_str().unwrap(), "notes", "--json"]);
    assert_failure(&output);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["proven"], false);
    assert_eq!(report["summary"]["tables_created"], serde_json::json!(["public.notes"]));
    let problems = report["problems"].to_string();
    assert!(problems.contains("after the up file the schema differs"), "{problems}");
    assert!(problems.contains("- COMMENT ON TABLE public.audit IS 'kept for the auditors';"), "{problems}");
    assert_eq!(files(&dir), ["1_base.down.sql", "1_base.up.sql", "2_notes.down.sql", "2_notes.up.sql"]);

    let prisma = setup.dir.path().join("prisma");
    std::fs::create_dir_all(prisma.join("20240101000000_init")).unwrap();
    write(&prisma, "migration_lock.toml", "provider = \"postgresql\"\n");
    write(&prisma.join("20240101000000_init"), "migration.sql", "CREATE TABLE a (id int);\n");
    let output =
        setup.run(&["migrate", "diff", "--to", schema_file.to_str().unwrap(), "x", "--dir", prisma.to_str().unwrap()]);
    let stderr = assert_failure(&output);
    assert!(stderr.contains("is laid out for prisma"), "{stderr}");
    assert_eq!(files(&prisma), ["20240101000000_init", "migration_lock.toml"]);
}

#[tokio::test]
async fn an_error_in_schema_sql_names_the_file_and_line() {
    let (setup, dir) = setup().await;
    write(&dir, "1_base.up.sql", BASE_UP);
    let schema_file = setup.dir.path().join("schema.sql");
    std::fs::write(
        &schema_file,
        "CREATE TABLE products (id int PRIMARY KEY);\n\nCREATE TABLE orders (\n    id int,\n    product_id integr \
         REFERENCES products (id)\n);\n",
    )
    .unwrap();
    let output = setup.run(&["migrate", "diff", "--to", schema_file.to_str().unwrap(), "Broken"]);
    assert!(assert_failure(&output).contains("\"Broken\" is not a migration name"), "{}", describe(&output));
    let output = setup.run(&["migrate", "diff", "--to", schema_file.to_str().unwrap(), "broken"]);
    let stderr = assert_failure(&output);
    assert!(stderr.contains(&format!("{}:5: ", schema_file.display())), "{stderr}");
    assert!(stderr.contains("type \"integr\" does not exist"), "{stderr}");
    assert_eq!(files(&dir), ["1_base.up.sql"]);
    // The scratch server is gone with its directory.
    assert_eq!(std::fs::read_dir(setup.scratch_dir()).unwrap().count(), 0);
}
