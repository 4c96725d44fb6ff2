//! `lifeboat migrate lint` (issue 15, part 1): a corpus of unsafe and safe migrations gives
//! exactly the expected findings, one test per rule family (linted as files, `--offline`); on a
//! real PostgreSQL cluster the same blocking index build is a note on a table of 10 rows and an
//! error on a table made large, `up` refuses it before changing anything, and
//! `-- lifeboat:allow <rule> <reason>` lets it through with the reason in the history row.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sqlx::PgConnection;
use support::archiving::{Archiving, LIFEBOAT, Options, Setup, execute, scalar};
use support::output::{assert_failure, assert_success, describe};

/// A configuration with a migration directory and no database, for `--offline` lints.
struct Offline {
    dir: tempfile::TempDir,
}

impl Offline {
    fn new(lint: &str) -> Offline {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("migrations")).unwrap();
        let config = format!(
            "[cluster]\nname = \"main\"\n\n[audit]\npath = \"{root}/audit.jsonl\"\n\n[migrate]\ndir = \"{root}/migrations\"\n{lint}\n",
            root = dir.path().display()
        );
        std::fs::write(dir.path().join("lifeboat.toml"), config).unwrap();
        Offline { dir }
    }

    fn migrations(&self) -> PathBuf {
        self.dir.path().join("migrations")
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.migrations().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(LIFEBOAT)
            .arg("--config")
            .arg(self.dir.path().join("lifeboat.toml"))
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }

    /// `migrate lint --offline --json` of one file: the document and the findings as (rule, line,
    /// severity).
    fn lint(&self, name: &str, text: &str) -> (serde_json::Value, Vec<(String, u64, String)>) {
        let path = self.write(name, text);
        let output = self.run(&["migrate", "lint", "--offline", "--json", path.to_str().unwrap()]);
        let json: serde_json::Value =
            serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("no JSON: {}", describe(&output)));
        let errors = json["summary"]["errors"].as_u64().unwrap();
        assert_eq!(output.status.code(), Some(if errors > 0 { 1 } else { 0 }), "{}", describe(&output));
        (json.clone(), found(&json))
    }
}

fn found(json: &serde_json::Value) -> Vec<(String, u64, String)> {
    json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|finding| {
            (
                finding["rule"].as_str().unwrap().to_owned(),
                finding["line"].as_u64().unwrap(),
                finding["severity"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn f(rule: &str, line: u64, severity: &str) -> (String, u64, String) {
    (rule.to_owned(), line, severity.to_owned())
}

#[test]
fn blocking_index_builds_and_drops_are_found_except_on_a_table_the_file_creates() {
    let offline = Offline::new("");
    let (_, findings) = offline.lint(
        "1_index.up.sql",
        "CREATE INDEX orders_customer ON orders (customer);\n\
         CREATE TABLE fresh (id bigint PRIMARY KEY, a text);\n\
         CREATE INDEX fresh_a ON fresh (a);\n\
         DROP INDEX orders_old;\n\
         REINDEX TABLE orders;\n",
    );
    assert_eq!(
        findings,
        [
            f("require-concurrent-index-creation", 1, "warning"),
            f("require-concurrent-index-deletion", 4, "warning"),
            f("require-concurrent-reindex", 5, "warning"),
        ]
    );
    let (_, safe) = offline.lint(
        "2_index.up.sql",
        "-- lifeboat:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS orders_customer ON orders (customer);\n",
    );
    assert_eq!(safe, []);
}

#[test]
fn constraints_without_not_valid_and_validate_in_the_same_transaction_are_found() {
    let offline = Offline::new("");
    let (_, findings) = offline.lint(
        "1_constraints.up.sql",
        "ALTER TABLE orders ADD CONSTRAINT orders_amount_positive CHECK (amount > 0);\n\
         ALTER TABLE orders ADD CONSTRAINT orders_customer_fk FOREIGN KEY (customer) REFERENCES customers (id);\n\
         ALTER TABLE orders ADD CONSTRAINT orders_code_unique UNIQUE (code);\n\
         ALTER TABLE orders ADD CONSTRAINT orders_no_overlap EXCLUDE USING gist (room WITH =, during WITH &&);\n\
         ALTER TABLE orders ADD CONSTRAINT orders_note_short CHECK (length(note) < 100) NOT VALID;\n\
         ALTER TABLE orders VALIDATE CONSTRAINT orders_note_short;\n",
    );
    assert_eq!(
        findings,
        [
            f("constraint-missing-not-valid", 1, "warning"),
            f("adding-foreign-key-constraint", 2, "warning"),
            f("disallowed-unique-constraint", 3, "warning"),
            f("adding-exclusion-constraint", 4, "warning"),
            f("constraint-missing-not-valid", 6, "warning"),
        ]
    );
    // The safe path: NOT VALID in one migration, VALIDATE in the next.
    let (_, first) = offline.lint(
        "2_check.up.sql",
        "ALTER TABLE orders ADD CONSTRAINT orders_fk FOREIGN KEY (customer) REFERENCES customers (id) NOT VALID;\n",
    );
    let (_, second) = offline.lint("3_validate.up.sql", "ALTER TABLE orders VALIDATE CONSTRAINT orders_fk;\n");
    assert_eq!((first, second), (vec![], vec![]));
}

#[test]
fn column_additions_that_rewrite_scan_or_fail_are_found() {
    let offline = Offline::new("");
    let (json, findings) = offline.lint(
        "1_columns.up.sql",
        "ALTER TABLE orders ADD COLUMN token uuid DEFAULT gen_random_uuid();\n\
         ALTER TABLE orders ADD COLUMN region text NOT NULL;\n\
         ALTER TABLE orders ALTER COLUMN note SET NOT NULL;\n\
         ALTER TABLE orders ADD COLUMN total numeric GENERATED ALWAYS AS (amount * 2) STORED;\n\
         ALTER TABLE orders ADD COLUMN seq bigserial;\n\
         ALTER TABLE orders ADD COLUMN status text DEFAULT 'new';\n\
         ALTER TABLE orders ADD COLUMN created timestamptz NOT NULL DEFAULT now();\n",
    );
    assert_eq!(
        findings,
        [
            f("adding-field-with-default", 1, "warning"),
            f("adding-required-field", 2, "warning"),
            f("adding-not-nullable-field", 3, "warning"),
            f("adding-stored-generated-column", 4, "warning"),
            f("prefer-identity", 5, "note"),
            f("adding-serial-column", 5, "warning"),
        ]
    );
    let fix = json["findings"][0]["fix"].as_str().unwrap();
    assert!(fix.contains("without a default") && fix.contains("backfill"), "{fix}");
    assert_eq!(json["findings"][0]["table"], "orders");
}

#[test]
fn a_column_type_change_is_a_rewrite() {
    let offline = Offline::new("");
    let (json, findings) = offline.lint(
        "1_types.up.sql",
        "ALTER TABLE orders ALTER COLUMN amount TYPE numeric(12, 2);\nALTER TABLE orders ALTER COLUMN id TYPE bigint;\n",
    );
    assert_eq!(findings, [f("changing-column-type", 1, "warning"), f("changing-column-type", 2, "warning")]);
    assert!(json["findings"][0]["fix"].as_str().unwrap().contains("add a column of the new type"));
}

#[test]
fn drops_and_renames_are_errors_at_any_size_and_lint_exits_1() {
    let offline = Offline::new("");
    let path = offline.write(
        "1_breaking.up.sql",
        "DROP TABLE legacy;\nALTER TABLE orders DROP COLUMN fax;\nALTER TABLE orders RENAME COLUMN note TO remark;\n\
         ALTER TABLE customers RENAME TO clients;\nTRUNCATE audit CASCADE;\n",
    );
    let output = offline.run(&["migrate", "lint", "--offline", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    for (line, rule) in [
        (1, "ban-drop-table"),
        (2, "ban-drop-column"),
        (3, "renaming-column"),
        (4, "renaming-table"),
        (5, "ban-truncate-cascade"),
    ] {
        let expected = format!("{}:{line}:", path.display());
        let shown = text.lines().find(|shown| shown.starts_with(&expected)).unwrap_or_else(|| panic!("{text}"));
        assert!(shown.contains(&format!("  error  {rule}  ")), "{shown}");
    }
    assert!(text.contains("fix: stop using the column in the application first"), "{text}");
    assert!(text.contains("1 files linted: 5 errors, 0 warnings, 0 notes, 0 allowed"), "{text}");
}

#[test]
fn transaction_control_and_concurrently_in_a_transactional_file_are_errors() {
    let offline = Offline::new("");
    let (_, nesting) = offline.lint("1_tx.up.sql", "BEGIN;\nCREATE TABLE t (id bigint);\nCOMMIT;\n");
    assert_eq!(nesting, [f("transaction-nesting", 1, "error"), f("transaction-nesting", 3, "error")]);
    let (json, cic) =
        offline.lint("2_cic.up.sql", "CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_code ON orders (code);\n");
    assert_eq!(cic, [f("ban-concurrent-index-creation-in-transaction", 1, "error")]);
    let fix = json["findings"][0]["fix"].as_str().unwrap();
    assert!(fix.contains("needs -- lifeboat:no-transaction as its first line"), "{fix}");
    let (_, drop) = offline.lint("3_dic.up.sql", "DROP INDEX CONCURRENTLY IF EXISTS orders_code;\n");
    assert_eq!(drop, [f("concurrently-in-transaction", 1, "error")]);
    let (_, fine) =
        offline.lint("4_dic.up.sql", "-- lifeboat:no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS orders_code;\n");
    assert_eq!(fine, []);
}

#[test]
fn type_hygiene_is_noted_and_json_is_a_warning() {
    let offline = Offline::new("");
    let (_, findings) = offline.lint(
        "1_things.up.sql",
        "CREATE TABLE things (\n    id serial PRIMARY KEY,\n    n int,\n    code varchar(20),\n    at timestamp,\n    \
         flag char(3),\n    doc json,\n    fine text,\n    big bigint GENERATED BY DEFAULT AS IDENTITY\n);\n",
    );
    assert_eq!(
        findings,
        [
            f("prefer-bigint-over-int", 2, "note"),
            f("prefer-identity", 2, "note"),
            f("prefer-bigint-over-int", 3, "note"),
            f("prefer-text-field", 4, "note"),
            f("prefer-timestamp-tz", 5, "note"),
            f("ban-char-field", 6, "note"),
            f("prefer-jsonb", 7, "warning"),
        ]
    );
}

#[test]
fn a_backfill_without_where_on_an_existing_table_is_found() {
    let offline = Offline::new("");
    let (_, findings) = offline.lint(
        "1_backfill.up.sql",
        "UPDATE orders SET status = 'paid';\nUPDATE orders SET status = 'paid' WHERE id < 1000;\nDELETE FROM sessions;\n\
         CREATE TABLE scratch (id bigint);\nDELETE FROM scratch;\nUPDATE scratch SET id = 1;\n",
    );
    assert_eq!(findings, [f("unbatched-backfill", 1, "warning"), f("unbatched-backfill", 3, "warning")]);
}

#[test]
fn disable_enable_and_unknown_rule_names_in_the_configuration() {
    let offline =
        Offline::new("\n[migrate.lint]\ndisable = [\"prefer-bigint-over-int\"]\nenable = [\"require-table-schema\"]\n");
    let (_, findings) = offline.lint("1_t.up.sql", "CREATE TABLE t (id int);\n");
    assert_eq!(findings, [f("require-table-schema", 1, "note")]);

    let bad = Offline::new("\n[migrate.lint]\ndisable = [\"require-concurrent-index\"]\n");
    let output = bad.run(&["migrate", "lint", "--offline"]);
    let message = assert_failure(&output);
    assert!(
        message.contains("disable") && message.contains("\"require-concurrent-index\" is not a lint rule"),
        "{message}"
    );
    assert!(message.contains("lifeboat migrate lint --rules"), "{message}");

    let rules = offline.run(&["migrate", "lint", "--rules", "--json"]);
    assert_success(&rules);
    assert!(String::from_utf8_lossy(&rules.stdout).starts_with("{\n  \"schema\": "), "schema comes first");
    let json: serde_json::Value = serde_json::from_slice(&rules.stdout).unwrap();
    assert_eq!(json["schema"], "migrate-lint-rules/1");
    let rule = |name: &str| json["rules"].as_array().unwrap().iter().find(|rule| rule["name"] == name).unwrap().clone();
    assert_eq!(rule("prefer-bigint-over-int")["enabled"], false);
    assert_eq!(rule("require-table-schema")["enabled"], true);
    assert_eq!(rule("require-lock-timeout")["enabled"], false, "lifeboat sets lock_timeout itself");
    assert_eq!(rule("unbatched-backfill")["category"], "blocking");
    assert_eq!(rule("ban-drop-column")["severity"], "error");
}

#[test]
fn an_allow_without_a_reason_is_a_problem_and_an_unused_one_a_note() {
    let offline = Offline::new("");
    let path = offline.write("1_a.up.sql", "-- lifeboat:allow ban-drop-table\nDROP TABLE legacy;\n");
    let output = offline.run(&["migrate", "lint", "--offline", "--json", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let problem = json["problems"][0].as_str().unwrap();
    assert!(problem.contains("1_a.up.sql: line 1") && problem.contains("needs a reason"), "{problem}");

    let (json, findings) = offline.lint(
        "2_b.up.sql",
        "-- lifeboat:allow ban-drop-table the table was emptied and unused since release 12\nDROP TABLE legacy;\n\
         -- lifeboat:allow ban-drop-column nothing to allow here\nCREATE TABLE t (id bigint);\n",
    );
    assert_eq!(findings, [f("ban-drop-table", 2, "error"), f("unused-allow", 3, "note")]);
    assert_eq!(json["findings"][0]["allowed"], "the table was emptied and unused since release 12");
    assert_eq!(json["summary"], serde_json::json!({"errors": 0, "warnings": 0, "notes": 1, "allowed": 1}));
}

/// A cluster with database `app` holding `small` (10 rows) and `big` (made larger than
/// `error_table_size`), and `[migrate]` pointing at `migrations/`.
async fn graded_setup() -> (Setup, PathBuf, PgConnection) {
    let dir = tempfile::tempdir().unwrap();
    let migrations = dir.path().join("migrations");
    std::fs::create_dir(&migrations).unwrap();
    let setup = Setup::with(Options::new().archiving(Archiving::Copy).extra(&format!(
        "\n[migrate]\ndir = \"{}\"\ndatabase = \"app\"\nlock_timeout = \"2s\"\n\n[migrate.lint]\n\
         warn_table_size = \"256kB\"\nerror_table_size = \"1MB\"\n",
        migrations.display()
    )))
    .await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE DATABASE app").await;
    std::mem::forget(dir);
    use sqlx::Connection as _;
    let mut app = PgConnection::connect_with(&setup.cluster.connect_options().database("app")).await.unwrap();
    execute(&mut app, "CREATE TABLE small (id bigint PRIMARY KEY, a text)").await;
    execute(&mut app, "INSERT INTO small SELECT n, 'row ' || n FROM generate_series(1, 10) n").await;
    execute(&mut app, "CREATE TABLE big (id bigint PRIMARY KEY, a text)").await;
    execute(&mut app, "INSERT INTO big SELECT n, repeat('x', 40) || n FROM generate_series(1, 30000) n").await;
    execute(&mut app, "ANALYZE small").await;
    execute(&mut app, "ANALYZE big").await;
    (setup, migrations, app)
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[tokio::test]
async fn a_blocking_index_is_a_note_on_ten_rows_and_an_error_on_a_large_table_and_up_refuses_before_changing_anything()
{
    let (setup, dir, mut app) = graded_setup().await;
    write(&dir, "1_small_index.up.sql", "CREATE INDEX small_a ON small (a);\n");
    write(&dir, "2_big_index.up.sql", "-- adds the lookup index\nCREATE INDEX big_a ON big (a);\n");
    write(
        &dir,
        "3_fresh.up.sql",
        "CREATE TABLE fresh (id bigint PRIMARY KEY, a text);\nCREATE INDEX fresh_a ON fresh (a);\n",
    );
    write(&dir, "4_fresh_check.up.sql", "ALTER TABLE fresh ADD CONSTRAINT fresh_a_short CHECK (length(a) < 9);\n");

    let output = setup.run(&["migrate", "lint", "--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("{\n  \"schema\": "), "schema comes first");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["schema"], "migrate-lint/1");
    assert_eq!(json["environment"], "default");
    assert!(json["server_version"].as_str().unwrap().starts_with("15."), "{json}");
    assert_eq!(json["files"].as_array().unwrap().len(), 4);
    let findings = json["findings"].as_array().unwrap();
    let summary: Vec<(&str, &str, &str, bool)> = findings
        .iter()
        .map(|finding| {
            (
                finding["file"].as_str().unwrap().rsplit('/').next().unwrap(),
                finding["rule"].as_str().unwrap(),
                finding["severity"].as_str().unwrap(),
                finding["graded"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("1_small_index.up.sql", "require-concurrent-index-creation", "note", true),
            ("2_big_index.up.sql", "require-concurrent-index-creation", "error", true),
            ("4_fresh_check.up.sql", "constraint-missing-not-valid", "note", true),
        ],
        "{json:#}"
    );
    assert_eq!(findings[0]["size"]["rows"], 10);
    assert_eq!(findings[1]["line"], 2);
    assert_eq!(findings[1]["table"], "big");
    assert!(findings[1]["size"]["bytes"].as_u64().unwrap() >= 1 << 20, "{json:#}");
    assert_eq!(findings[1]["size"]["rows"], 30000);
    assert!(findings[2]["size"].is_null(), "fresh is created by 3 in the same run: {json:#}");

    let text = setup.run(&["migrate", "lint"]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("2_big_index.up.sql:2:1  error  require-concurrent-index-creation  "), "{text}");
    assert!(text.contains("table big: ") && text.contains("about 30000 rows"), "{text}");
    assert!(text.contains("table fresh: does not exist yet"), "{text}");

    let plan = setup.json(&["migrate", "plan", "--json"]);
    assert_eq!(plan["migrations"][1]["findings"][0]["severity"], "error", "{plan:#}");

    let output = setup.run(&["migrate", "up"]);
    let message = assert_failure(&output);
    assert!(message.contains("2_big_index.up.sql:2:1 require-concurrent-index-creation"), "{message}");
    assert!(message.contains("-- lifeboat:allow require-concurrent-index-creation <reason>"), "{message}");
    assert!(!message.contains("1_small_index"), "a note does not refuse: {message}");
    assert_eq!(
        scalar(&mut app, "SELECT count(*)::text FROM pg_class WHERE relname IN ('small_a', 'big_a', 'fresh')").await,
        "0",
        "nothing ran"
    );
    assert_eq!(scalar(&mut app, "SELECT count(*)::text FROM lifeboat.migrations").await, "0");
}

#[tokio::test]
async fn an_allowed_finding_lets_up_through_and_its_reason_lands_in_the_history_row() {
    let (setup, dir, mut app) = graded_setup().await;
    write(
        &dir,
        "1_big_index.up.sql",
        "-- lifeboat:allow require-concurrent-index-creation big is written once a night; built in the quiet hour\n\
         CREATE INDEX big_a ON big (a);\n",
    );
    let output = setup.run(&["migrate", "lint"]);
    assert_success(&output);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("error (allowed)  require-concurrent-index-creation"), "{text}");
    assert!(text.contains("allowed: big is written once a night; built in the quiet hour"), "{text}");
    assert!(text.contains("0 errors, 0 warnings, 0 notes, 1 allowed"), "{text}");

    assert_success(&setup.run(&["migrate", "up"]));
    let allowed: serde_json::Value = serde_json::from_str(
        &scalar(&mut app, "SELECT allowed::text FROM lifeboat.migrations WHERE version = '1'").await,
    )
    .unwrap();
    assert_eq!(
        allowed,
        serde_json::json!([{
            "rule": "require-concurrent-index-creation",
            "line": 2,
            "statement": 0,
            "reason": "big is written once a night; built in the quiet hour"
        }])
    );
    assert_eq!(scalar(&mut app, "SELECT count(*)::text FROM pg_class WHERE relname = 'big_a'").await, "1");

    // A history table from before the column: status still reads it, the next up adds it back.
    execute(&mut app, "ALTER TABLE lifeboat.migrations DROP COLUMN allowed").await;
    let status = setup.json(&["migrate", "status", "--json"]);
    assert_eq!(status["migrations"][0]["state"], "applied", "{status:#}");
    write(&dir, "2_more.up.sql", "CREATE TABLE more (id bigint PRIMARY KEY);\n");
    assert_success(&setup.run(&["migrate", "up"]));
    assert_eq!(
        scalar(&mut app, "SELECT coalesce(allowed::text, 'none') FROM lifeboat.migrations WHERE version = '2'").await,
        "none"
    );
}

/// In CI, `lint --offline FILES` needs no configuration file: with none at the default location it
/// lints with the default settings (and says so); a missing file named with --config is still an
/// error.
#[test]
fn offline_lint_of_files_needs_no_configuration() {
    if Path::new("/etc/lifeboat/lifeboat.toml").exists() {
        eprintln!("skipped: this machine has a configuration at the default location");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("1_index.up.sql");
    std::fs::write(&file, "CREATE INDEX t_a ON t (a);\n").unwrap();
    let run = |extra: &[&str]| {
        Command::new(LIFEBOAT)
            .args(extra)
            .args(["migrate", "lint", "--offline"])
            .arg(&file)
            .env_remove("LIFEBOAT_CONFIG")
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let output = run(&[]);
    assert_success(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("require-concurrent-index-creation"), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("default [migrate] and [migrate.lint] settings"));
    let missing = dir.path().join("absent.toml");
    let output = run(&["--config", missing.to_str().unwrap()]);
    assert_failure(&output);
    assert!(String::from_utf8_lossy(&output.stderr).contains("given with --config"), "{}", describe(&output));
}
