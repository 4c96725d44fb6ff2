//! `lifeboat migrate lint`: what a migration's statements will do to a live database, found
//! statically and then graded by the real size of the tables they touch.
//!
//! Detection builds on squawk's linter (`squawk-linter`, the same parser that splits the
//! statements) and adds lifeboat's own checks ([`checks`]) for what squawk does not cover. The
//! wording of every finding, its category and its severity are lifeboat's ([`rules`]). The
//! file's context counts: lifeboat tells squawk whether the file runs in a transaction (so a
//! `CREATE INDEX` on a table created earlier in the same transaction is fine, and `CREATE INDEX
//! CONCURRENTLY` in a transactional file is an error), and the server's version when known.
//!
//! [`grade`] then looks up each finding's table in the target database (size and row estimate):
//! a blocking index build on a table of ten rows is a note, on a table of 50 GB an error.
//! `-- lifeboat:allow <rule> <reason>` (read by [`crate::migrate::source`]) marks the finding of
//! that rule on the next statement as allowed; it stays in the output with its reason, and the
//! runner records it in the history row ([`allowed_record`]).

mod checks;
pub mod rules;

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgConnection;
use squawk_syntax::{SourceFile, SyntaxKind, SyntaxNode};

use self::rules::{Category, RuleInfo};
use crate::config::{LintConfig, ServerVersion};
use crate::migrate::source::{Migration, Script};

/// How much a finding matters: an error makes `lint` exit 1 and `up` refuse (unless allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Note,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// A table's size as [`grade`] found it: `pg_total_relation_size` (heap, indexes, TOAST) and
/// `pg_class.reltuples` (the estimate of the last VACUUM or ANALYZE; 0 when never estimated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSize {
    pub bytes: u64,
    pub rows: u64,
}

/// One finding on one statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub file: PathBuf,
    /// 1-based line and column (in characters) in the file.
    pub line: u32,
    pub column: u32,
    /// Index into the script's statements.
    pub statement: usize,
    pub rule: String,
    pub category: Category,
    pub message: String,
    /// The safe way to do the same thing.
    pub fix: String,
    pub severity: Severity,
    /// The table the statement works on, as written (`None`: none, or not one lint can name).
    pub table: Option<String>,
    /// The table's size when [`grade`] found it in the database; `None` with `graded` when the
    /// table does not exist yet (created by an earlier migration of the same run).
    pub size: Option<TableSize>,
    /// Whether the severity comes from the table's size in a database.
    pub graded: bool,
    /// The reason of the `-- lifeboat:allow` that accepted this finding.
    pub allowed: Option<String>,
}

impl Finding {
    /// An error nobody allowed: `lint` exits 1 and `up` refuses.
    pub fn is_refusal(&self) -> bool {
        self.severity == Severity::Error && self.allowed.is_none()
    }
}

/// Which rules run, and what is known about the target.
#[derive(Debug, Clone, Default)]
pub struct LintSettings {
    /// `[migrate.lint] disable`: rules that never report.
    pub disable: Vec<String>,
    /// `[migrate.lint] enable`: opt-in rules switched on.
    pub enable: Vec<String>,
    /// The target server's version, when a database is at hand.
    pub server: Option<ServerVersion>,
}

impl LintSettings {
    pub fn new(config: &LintConfig, server: Option<ServerVersion>) -> LintSettings {
        LintSettings { disable: config.disable.clone(), enable: config.enable.clone(), server }
    }

    /// Whether the rule called `name` runs with these settings.
    pub fn is_enabled(&self, name: &str) -> bool {
        rules::find(name).is_some_and(|rule| self.is_on(rule))
    }

    fn is_on(&self, rule: &RuleInfo) -> bool {
        let named =
            |names: &[String]| names.iter().any(|name| rules::find(name).is_some_and(|it| it.name == rule.name));
        (!rule.opt_in || named(&self.enable)) && !named(&self.disable)
    }
}

/// Whether `name` is a rule `lifeboat migrate lint --rules` lists (or one of squawk's aliases of
/// one).
pub fn known_rule(name: &str) -> bool {
    rules::find(name).is_some()
}

/// The findings of a migration's up file, without a database (severities as for files alone).
pub fn lint_migration(migration: &Migration, settings: &LintSettings) -> Vec<Finding> {
    lint_script(&migration.up, settings)
}

/// The findings of one script, in file order, with its `-- lifeboat:allow` directives applied.
pub fn lint_script(script: &Script, settings: &LintSettings) -> Vec<Finding> {
    let parse = SourceFile::parse(&script.text);
    let starts = statement_starts(script);
    let mut hits: Vec<(&'static RuleInfo, usize)> = Vec::new();

    let squawk_rules: Vec<squawk_linter::Rule> = rules::RULES
        .iter()
        .filter(|rule| settings.is_on(rule))
        .filter_map(|rule| squawk_linter::Rule::try_from(rule.name).ok())
        .collect();
    let mut linter = squawk_linter::Linter::from(squawk_rules);
    linter.settings.assume_in_transaction = script.transaction;
    if let Some(version) = settings.server
        && let Ok(version) = format!("{}.{}", version.major, version.minor).parse()
    {
        linter.settings.pg_version = version;
    }
    for violation in linter.lint(&parse, &script.text) {
        let offset = usize::from(violation.text_range.start());
        let name = violation.code.to_string();
        if name == "adding-field-with-default" && checks::is_generated_column(&parse, offset) {
            continue;
        }
        if let Some(rule) = rules::find(&name) {
            hits.push((rule, offset));
        }
    }
    for hit in checks::run(&parse, script.transaction, settings.server) {
        let rule = rules::find(hit.rule).expect("lifeboat's checks report rules of the table");
        if settings.is_on(rule) {
            hits.push((rule, hit.offset));
        }
    }
    let syntax_error = rules::find(rules::SYNTAX_ERROR).expect("syntax-error is a rule");
    if settings.is_on(syntax_error) {
        let mut seen = Vec::new();
        for error in parse.errors() {
            let offset = usize::from(error.range().start());
            let statement = statement_at(&starts, offset);
            if !seen.contains(&statement) {
                seen.push(statement);
                hits.push((syntax_error, offset));
            }
        }
    }

    let root = parse.syntax_node();
    let mut findings: Vec<Finding> = hits
        .into_iter()
        .map(|(rule, offset)| {
            let (line, column) = position(script, offset);
            Finding {
                file: script.path.clone(),
                line,
                column,
                statement: statement_at(&starts, offset),
                rule: rule.name.to_owned(),
                category: rule.category,
                message: rule.message.to_owned(),
                fix: rule.fix.to_owned(),
                severity: rule.severity,
                table: statement_node(&root, offset).and_then(|node| table_of(&node)),
                size: None,
                graded: false,
                allowed: None,
            }
        })
        .collect();
    findings.sort_by_key(|finding| (finding.line, finding.column));
    findings.dedup_by(|a, b| a.rule == b.rule && a.line == b.line && a.column == b.column);
    drop_generic_not_valid(&mut findings);
    if script.transaction {
        drop_recreated_views(script, &mut findings);
    }
    apply_allows(script, settings, &mut findings);
    findings
}

/// Rules that say more about an added constraint than squawk's `constraint-missing-not-valid`
/// (whose advice, NOT VALID, does not even apply to UNIQUE, PRIMARY KEY and EXCLUDE).
const SPECIFIC_CONSTRAINT_RULES: &[&str] = &[
    "adding-foreign-key-constraint",
    "disallowed-unique-constraint",
    "adding-serial-primary-key-field",
    "adding-exclusion-constraint",
];

/// Drops `constraint-missing-not-valid` from a statement that has a more specific finding.
fn drop_generic_not_valid(findings: &mut Vec<Finding>) {
    let specific: Vec<usize> = findings
        .iter()
        .filter(|finding| SPECIFIC_CONSTRAINT_RULES.contains(&finding.rule.as_str()))
        .map(|finding| finding.statement)
        .collect();
    findings.retain(|finding| finding.rule != "constraint-missing-not-valid" || !specific.contains(&finding.statement));
}

/// Drops `ban-drop-view` from a `DROP VIEW` whose views the same transactional file creates again
/// later (as `migrate diff` does around a column change a view depends on): no other session
/// ever sees the view missing.
fn drop_recreated_views(script: &Script, findings: &mut Vec<Finding>) {
    let words = |text: &str| -> Vec<String> {
        text.split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '(')
            .filter(|word| !word.is_empty())
            .map(|word| word.trim_matches('"').to_lowercase())
            .collect()
    };
    let created_after = |index: usize, name: &str| {
        script.statements[index + 1..].iter().any(|statement| {
            let words = words(&statement.text);
            let view = match words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                ["create", "view", name, ..] | ["create", "or", "replace", "view", name, ..] => (*name).to_owned(),
                _ => return false,
            };
            view == name
        })
    };
    findings.retain(|finding| {
        if finding.rule != "ban-drop-view" {
            return true;
        }
        let Some(statement) = script.statements.get(finding.statement) else { return true };
        let words = words(&statement.text);
        let mut names = words.iter().skip_while(|word| *word != "view").skip(1).peekable();
        if names.peek().is_some_and(|word| *word == "if") {
            names.nth(1);
        }
        let dropped: Vec<&String> = names.filter(|word| !matches!(word.as_str(), "cascade" | "restrict")).collect();
        dropped.is_empty() || !dropped.iter().all(|name| created_after(finding.statement, name))
    });
}

/// Marks the findings each `-- lifeboat:allow` accepts (the rule's findings on the next
/// statement) and reports an allow that accepts nothing as `unused-allow`.
fn apply_allows(script: &Script, settings: &LintSettings, findings: &mut Vec<Finding>) {
    let unused = rules::find(rules::UNUSED_ALLOW).expect("unused-allow is a rule");
    let mut extra = Vec::new();
    for allow in &script.allows {
        let Some(rule) = rules::find(&allow.rule) else { continue };
        let target = script.statements.iter().position(|statement| statement.line > allow.line);
        let mut used = false;
        for finding in findings.iter_mut() {
            if Some(finding.statement) == target && finding.rule == rule.name && finding.allowed.is_none() {
                finding.allowed = Some(allow.reason.clone());
                used = true;
            }
        }
        if !used && settings.is_on(unused) {
            extra.push(Finding {
                file: script.path.clone(),
                line: allow.line,
                column: 1,
                statement: target.unwrap_or(script.statements.len().saturating_sub(1)),
                rule: unused.name.to_owned(),
                category: unused.category,
                message: format!("{} ({})", unused.message, rule.name),
                fix: unused.fix.to_owned(),
                severity: unused.severity,
                table: None,
                size: None,
                graded: false,
                allowed: None,
            });
        }
    }
    findings.extend(extra);
    findings.sort_by_key(|finding| (finding.line, finding.column));
}

/// The byte offset in `script.text` where each statement starts (the statements are the text's
/// own slices, in order).
fn statement_starts(script: &Script) -> Vec<usize> {
    let mut cursor = 0;
    script
        .statements
        .iter()
        .map(|statement| {
            let start = script.text[cursor..].find(&statement.text).map_or(cursor, |found| cursor + found);
            cursor = start + statement.text.len();
            start
        })
        .collect()
}

/// The statement holding byte `offset`: the last one starting at or before it.
fn statement_at(starts: &[usize], offset: usize) -> usize {
    starts.iter().rposition(|start| *start <= offset).unwrap_or(0)
}

/// The file line and column (in characters, 1-based) of byte `offset`.
fn position(script: &Script, offset: usize) -> (u32, u32) {
    let before = &script.text[..offset.min(script.text.len())];
    let line = before.bytes().filter(|byte| *byte == b'\n').count() as u32 + script.first_line;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    (line, before[line_start..].chars().count() as u32 + 1)
}

/// The top-level statement node holding `offset`.
fn statement_node(root: &SyntaxNode, offset: usize) -> Option<SyntaxNode> {
    root.children().find(|node| {
        let range = node.text_range();
        usize::from(range.start()) <= offset && offset < usize::from(range.end())
    })
}

/// The table (or index, for DROP INDEX and REINDEX INDEX) a statement works on, as written.
fn table_of(statement: &SyntaxNode) -> Option<String> {
    let path = match statement.kind() {
        SyntaxKind::CREATE_INDEX => statement
            .children()
            .find(|node| node.kind() == SyntaxKind::TABLE_RELATION_NAME)?
            .descendants()
            .find(|node| matches!(node.kind(), SyntaxKind::PATH | SyntaxKind::PATH_REF))?,
        SyntaxKind::ALTER_TABLE
        | SyntaxKind::DROP_INDEX
        | SyntaxKind::REINDEX
        | SyntaxKind::CLUSTER
        | SyntaxKind::VACUUM
        | SyntaxKind::UPDATE
        | SyntaxKind::DELETE
        | SyntaxKind::TRUNCATE
        | SyntaxKind::DROP_TABLE
        | SyntaxKind::CREATE_TABLE => {
            statement.descendants().find(|node| matches!(node.kind(), SyntaxKind::PATH | SyntaxKind::PATH_REF))?
        }
        _ => return None,
    };
    let text: String = path
        .descendants_with_tokens()
        .filter_map(|element| element.into_token())
        .filter(|token| !token.kind().is_trivia())
        .map(|token| token.text().to_owned())
        .collect();
    (!text.is_empty()).then_some(text)
}

/// What [`grade`] found for one table name.
#[derive(Debug, Clone, Copy)]
enum Lookup {
    /// The name resolves to no relation: a table this run has not created yet.
    Missing,
    Found {
        size: TableSize,
        heap_bytes: u64,
    },
}

/// Looks up the table of each blocking finding in the database `conn` is connected to (resolving
/// names as PostgreSQL would, through the session's `search_path`; an index resolves to its table)
/// and sets its size and severity from `config`'s thresholds: a note below the warn thresholds, a
/// warning from them, an error from the error thresholds, by bytes or rows, whichever grades
/// higher. A table that does not exist yet grades as small. `fails-on-rows` findings are errors
/// when the table has rows and notes when it is empty or new.
pub async fn grade(findings: &mut [Finding], conn: &mut PgConnection, config: &LintConfig) -> Result<(), sqlx::Error> {
    let mut seen: HashMap<String, Lookup> = HashMap::new();
    for finding in findings.iter_mut() {
        if !matches!(finding.category, Category::Blocking | Category::FailsOnRows) {
            continue;
        }
        let Some(table) = finding.table.clone() else { continue };
        let lookup = match seen.get(&table) {
            Some(lookup) => *lookup,
            None => {
                let lookup = look_up(conn, &table).await?;
                seen.insert(table, lookup);
                lookup
            }
        };
        finding.graded = true;
        finding.severity = match lookup {
            Lookup::Missing => Severity::Note,
            Lookup::Found { size, heap_bytes } => {
                finding.size = Some(size);
                match finding.category {
                    Category::FailsOnRows if size.rows > 0 || heap_bytes > 0 => Severity::Error,
                    Category::FailsOnRows => Severity::Note,
                    _ if size.bytes >= config.error_table_size || size.rows >= config.error_table_rows => {
                        Severity::Error
                    }
                    _ if size.bytes >= config.warn_table_size || size.rows >= config.warn_table_rows => {
                        Severity::Warning
                    }
                    _ => Severity::Note,
                }
            }
        };
    }
    Ok(())
}

async fn look_up(conn: &mut PgConnection, table: &str) -> Result<Lookup, sqlx::Error> {
    // A name to_regclass cannot even parse names no relation either.
    let found: Option<(i64, f64, i64)> = match sqlx::query_as(
        "WITH named AS (SELECT to_regclass($1) AS oid), \
              target AS (SELECT coalesce((SELECT indrelid FROM pg_index WHERE indexrelid = named.oid), named.oid) AS oid \
                         FROM named WHERE named.oid IS NOT NULL) \
         SELECT pg_total_relation_size(c.oid), c.reltuples::float8, pg_relation_size(c.oid) \
         FROM target JOIN pg_class c ON c.oid = target.oid",
    )
    .bind(table)
    .fetch_optional(&mut *conn)
    .await
    {
        Ok(found) => found,
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42602") => None,
        Err(error) => return Err(error),
    };
    Ok(match found {
        None => Lookup::Missing,
        Some((bytes, rows, heap)) => Lookup::Found {
            size: TableSize { bytes: bytes.max(0) as u64, rows: rows.max(0.0) as u64 },
            heap_bytes: heap.max(0) as u64,
        },
    })
}

/// The non-allowed errors among `findings`, as the reason `up` refuses (`None`: none).
pub fn refusal(findings: &[Finding]) -> Option<String> {
    let errors: Vec<String> = findings
        .iter()
        .filter(|finding| finding.is_refusal())
        .map(|finding| {
            format!(
                "{}:{}:{} {}: {}{}\n  fix: {}\n  if it is intended, put `-- lifeboat:allow {} <reason>` on the line above \
                 the statement",
                finding.file.display(),
                finding.line,
                finding.column,
                finding.rule,
                finding.message,
                finding.table.as_ref().map(|table| format!(" (table {table})")).unwrap_or_default(),
                finding.fix,
                finding.rule
            )
        })
        .collect();
    (!errors.is_empty()).then(|| {
        format!(
            "lint found {} error{} in the pending migrations; nothing was changed:\n\n{}",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            errors.join("\n\n")
        )
    })
}

/// One allowed finding as the history row keeps it.
#[derive(Debug, Serialize)]
struct AllowedRecord<'a> {
    rule: &'a str,
    line: u32,
    statement: usize,
    reason: &'a str,
}

/// The findings the `-- lifeboat:allow` directives of `script` accepted, as the JSON array the
/// history's `allowed` column holds (`None`: none). Linted with every default rule and no server
/// version: what was accepted does not depend on the environment.
pub fn allowed_record(script: &Script) -> Option<String> {
    let findings = lint_script(script, &LintSettings::default());
    let allowed: Vec<AllowedRecord<'_>> = findings
        .iter()
        .filter_map(|finding| {
            finding.allowed.as_deref().map(|reason| AllowedRecord {
                rule: &finding.rule,
                line: finding.line,
                statement: finding.statement,
                reason,
            })
        })
        .collect();
    (!allowed.is_empty()).then(|| serde_json::to_string(&allowed).expect("allowed findings serialise"))
}

#[cfg(test)]
mod tests;
