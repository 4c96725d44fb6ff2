//! The static half of the linter on small scripts: which rule fires where, the file's context,
//! the allow directive. The graded half and the CLI are in tests/migrate_lint.rs.

use super::*;
use crate::migrate::source::read_file;

fn lint_text(text: &str, settings: &LintSettings) -> Vec<Finding> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("1_test.up.sql");
    std::fs::write(&path, text).unwrap();
    let (script, problems) = read_file(&path).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    lint_script(&script.unwrap(), settings)
}

fn rules_and_lines(text: &str) -> Vec<(String, u32)> {
    lint_text(text, &LintSettings::default()).into_iter().map(|finding| (finding.rule, finding.line)).collect()
}

fn pair(rule: &str, line: u32) -> (String, u32) {
    (rule.to_owned(), line)
}

#[test]
fn an_index_on_a_table_created_in_the_same_transactional_file_is_fine() {
    assert_eq!(rules_and_lines("CREATE TABLE t (id bigint);\nCREATE INDEX t_id ON t (id);\n"), []);
    assert_eq!(rules_and_lines("CREATE INDEX t_id ON t (id);\n"), [pair("require-concurrent-index-creation", 1)]);
}

#[test]
fn concurrent_index_in_a_transactional_file_is_an_error_naming_the_directive() {
    let findings = lint_text("CREATE INDEX CONCURRENTLY IF NOT EXISTS t_id ON t (id);\n", &LintSettings::default());
    let rules: Vec<&str> = findings.iter().map(|finding| finding.rule.as_str()).collect();
    assert_eq!(rules, ["ban-concurrent-index-creation-in-transaction"]);
    assert_eq!(findings[0].severity, Severity::Error);
    assert!(findings[0].fix.contains("needs -- lifeboat:no-transaction as its first line"), "{}", findings[0].fix);
    assert_eq!(findings[0].table.as_deref(), Some("t"));
}

#[test]
fn the_corruption_bug_is_named_only_on_fourteen_zero_to_three() {
    let text = "-- lifeboat:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_id ON t (id);\n";
    let on = |major, minor| LintSettings { server: Some(ServerVersion { major, minor }), ..LintSettings::default() };
    let rules = |settings| lint_text(text, &settings).into_iter().map(|finding| finding.rule).collect::<Vec<_>>();
    assert_eq!(rules(on(14, 3)), ["concurrent-index-corruption-bug"]);
    assert!(rules(on(14, 4)).is_empty());
    assert!(rules(on(15, 0)).is_empty());
    assert!(rules(LintSettings::default()).is_empty());
}

#[test]
fn disable_and_enable_switch_rules() {
    let text = "CREATE TABLE t (id int);\n";
    assert_eq!(rules_and_lines(text), [pair("prefer-bigint-over-int", 1)]);
    let settings = LintSettings {
        disable: vec!["prefer-bigint-over-int".to_owned()],
        enable: vec!["require-table-schema".to_owned()],
        server: None,
    };
    let found: Vec<String> = lint_text(text, &settings).into_iter().map(|finding| finding.rule).collect();
    assert_eq!(found, ["require-table-schema"]);
}

#[test]
fn an_allow_marks_the_next_statements_finding_and_an_unused_one_is_a_note() {
    let text = "-- lifeboat:allow ban-drop-column nothing reads it since release 41\n\
                ALTER TABLE t DROP COLUMN old;\n\
                -- lifeboat:allow ban-drop-table wrong statement\n\
                ALTER TABLE t DROP COLUMN older;\n";
    let findings = lint_text(text, &LintSettings::default());
    let seen: Vec<(&str, u32, Option<&str>)> =
        findings.iter().map(|f| (f.rule.as_str(), f.line, f.allowed.as_deref())).collect();
    assert_eq!(
        seen,
        [
            ("ban-drop-column", 2, Some("nothing reads it since release 41")),
            ("unused-allow", 3, None),
            ("ban-drop-column", 4, None),
        ]
    );
    assert_eq!(findings[1].severity, Severity::Note);
    assert!(!findings[0].is_refusal() && findings[2].is_refusal());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("2_drop.up.sql");
    std::fs::write(&path, text).unwrap();
    let record = allowed_record(&read_file(&path).unwrap().0.unwrap()).unwrap();
    assert_eq!(
        record,
        r#"[{"rule":"ban-drop-column","line":2,"statement":0,"reason":"nothing reads it since release 41"}]"#
    );
}

#[test]
fn a_virtual_generated_column_is_not_a_rewrite_but_a_stored_one_is() {
    assert_eq!(
        rules_and_lines("ALTER TABLE t ADD COLUMN total numeric GENERATED ALWAYS AS (a + b) STORED;\n"),
        [pair("adding-stored-generated-column", 1)]
    );
    assert_eq!(rules_and_lines("ALTER TABLE t ADD COLUMN total numeric GENERATED ALWAYS AS (a + b) VIRTUAL;\n"), []);
}

#[test]
fn known_rule_knows_squawks_and_lifeboats_names_and_aliases() {
    assert!(known_rule("require-concurrent-index-creation"));
    assert!(known_rule("unbatched-backfill"));
    assert!(known_rule("prefer-timestamptz"));
    assert!(!known_rule("no-such-rule"));
}

#[test]
fn a_view_dropped_and_created_again_in_the_same_transaction_is_fine() {
    let recreated = "DROP VIEW public.open_orders;\nALTER TABLE t ALTER COLUMN n SET DEFAULT 0;\n\
                     CREATE OR REPLACE VIEW public.open_orders AS SELECT 1 AS one;\n";
    assert_eq!(rules_and_lines(recreated), []);
    let gone = "DROP VIEW IF EXISTS public.open_orders, public.other;\nCREATE VIEW public.open_orders AS SELECT 1;\n";
    assert_eq!(rules_and_lines(gone), [pair("ban-drop-view", 1)]);
    let outside = format!("-- lifeboat:no-transaction\n{recreated}");
    assert!(
        rules_and_lines(&outside).contains(&pair("ban-drop-view", 2)),
        "outside a transaction the view is missing a while"
    );
}
