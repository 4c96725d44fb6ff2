//! The views of `lifeboat migrate lint` (`--json`): `migrate-lint/1` (the findings of some
//! files) and `migrate-lint-rules/1` (`--rules`), and the text rendering of a finding that
//! `lint` and `plan` print. docs/json.md documents them.

use serde::Serialize;

use super::Document;
use crate::migrate::lint::rules::RuleInfo;
use crate::migrate::lint::{Finding, Severity};

/// `migrate lint`: the findings, file by file, and what the linter knew.
#[derive(Debug, Serialize)]
pub struct LintView {
    /// The environment whose database graded the findings; `None` with `--offline`.
    pub environment: Option<String>,
    /// `major.minor` of that database's server.
    pub server_version: Option<String>,
    /// The files linted, in order.
    pub files: Vec<String>,
    /// Problems reading the files (a bad `-- lifeboat:allow` among them); each makes lint fail.
    pub problems: Vec<String>,
    pub findings: Vec<Finding>,
    pub summary: LintSummary,
}

/// Counts of findings that are not allowed, by severity, and of allowed ones.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct LintSummary {
    pub errors: usize,
    pub warnings: usize,
    pub notes: usize,
    pub allowed: usize,
}

impl LintSummary {
    pub fn of(findings: &[Finding]) -> LintSummary {
        let mut summary = LintSummary::default();
        for finding in findings {
            match (&finding.allowed, finding.severity) {
                (Some(_), _) => summary.allowed += 1,
                (None, Severity::Error) => summary.errors += 1,
                (None, Severity::Warning) => summary.warnings += 1,
                (None, Severity::Note) => summary.notes += 1,
            }
        }
        summary
    }
}

impl Document for LintView {
    fn schema(&self) -> &'static str {
        "migrate-lint/1"
    }
}

/// `migrate lint --rules`: every rule with its category, severity without a database, whether
/// it is on, and the wording.
#[derive(Debug, Serialize)]
pub struct LintRulesView {
    pub rules: Vec<LintRule>,
}

#[derive(Debug, Serialize)]
pub struct LintRule {
    #[serde(flatten)]
    pub rule: RuleInfo,
    /// Whether it runs with the configuration's `disable`/`enable`.
    pub enabled: bool,
}

impl Document for LintRulesView {
    fn schema(&self) -> &'static str {
        "migrate-lint-rules/1"
    }
}

/// `file:line:column  severity  rule  message`, the table and its size when known, `fix: ...`
/// and, for an allowed finding, its reason.
pub fn render(finding: &Finding) -> String {
    let severity = match &finding.allowed {
        Some(_) => format!("{} (allowed)", finding.severity.as_str()),
        None => finding.severity.as_str().to_owned(),
    };
    let mut text = format!(
        "{}:{}:{}  {severity}  {}  {}",
        finding.file.display(),
        finding.line,
        finding.column,
        finding.rule,
        finding.message
    );
    if let Some(table) = &finding.table {
        match (&finding.size, finding.graded) {
            (Some(size), _) => text.push_str(&format!(
                "\n  table {table}: {}, about {} rows",
                crate::config::format_size(size.bytes),
                size.rows
            )),
            (None, true) => text.push_str(&format!("\n  table {table}: does not exist yet (created in this run)")),
            (None, false) => text.push_str(&format!("\n  table {table} (size not looked up)")),
        }
    }
    text.push_str(&format!("\n  fix: {}", finding.fix));
    if let Some(reason) = &finding.allowed {
        text.push_str(&format!("\n  allowed: {reason}"));
    }
    text
}

/// "2 errors, 1 warning, 0 notes, 1 allowed".
pub fn summary_line(summary: &LintSummary) -> String {
    let plural = |count: usize, word: &str| format!("{count} {word}{}", if count == 1 { "" } else { "s" });
    format!(
        "{}, {}, {}, {} allowed",
        plural(summary.errors, "error"),
        plural(summary.warnings, "warning"),
        plural(summary.notes, "note"),
        summary.allowed
    )
}
