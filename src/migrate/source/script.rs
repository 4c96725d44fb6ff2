//! One migration script: its text, its checksum (line endings and a BOM do not count, so a
//! checkout on Windows is not a "modified" migration), the `-- lifeboat:` directives among its
//! leading comment lines, and its statements.
//!
//! Directives (each on its own line, before the first statement):
//! - `-- lifeboat:no-transaction`: run outside a transaction, statement by statement; it must be
//!   the file's first line, so it cannot be missed when reading the file;
//! - `-- lifeboat:lock-timeout 5s` and `-- lifeboat:statement-timeout 10m`: override the
//!   environment's timeouts for this migration (durations as the configuration writes them).
//!
//! One directive may also stand on any comment line below the first statement:
//! - `-- lifeboat:allow <rule> <reason>`: the lint finding `<rule>` on the next statement is
//!   allowed (kept in the output, marked allowed, and recorded in the history row), see
//!   docs/lint.md. The reason is required and the rule must be one `lifeboat migrate lint --rules`
//!   lists: an allow nobody can later explain, or one that names no rule, is a problem.
//!
//! An unknown `-- lifeboat:` directive is a problem rather than a comment: a typo must not quietly
//! run a migration inside a transaction it was meant to avoid.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::split::split_from;
use super::{Problem, Statement};
use crate::config::parse_duration;

/// What the directives are called, for the message about an unknown one.
const DIRECTIVES: &str = "no-transaction, lock-timeout DURATION, statement-timeout DURATION, allow RULE REASON";

/// `-- lifeboat:allow <rule> <reason>`: one lint finding accepted on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    pub rule: String,
    pub reason: String,
    /// The directive's line in the file.
    pub line: u32,
}

#[derive(Debug, Clone)]
pub struct Script {
    /// The file (for messages).
    pub path: PathBuf,
    /// The text as read with a leading BOM removed (for dbmate, the section's text).
    pub text: String,
    /// [`checksum`] of `text`.
    pub checksum: String,
    /// False: run outside a transaction (`-- lifeboat:no-transaction`, sqlx's `-- no-transaction`,
    /// dbmate's `transaction:false`, Flyway's `executeInTransaction=false`).
    pub transaction: bool,
    pub lock_timeout: Option<Duration>,
    pub statement_timeout: Option<Duration>,
    pub statements: Vec<Statement>,
    /// "line L, column C: message" from the parser, lines counted in the file.
    pub syntax_errors: Vec<String>,
    /// The `-- lifeboat:allow` directives, in file order.
    pub allows: Vec<Allow>,
    /// The file line `text` starts at (1, or where a dbmate section begins).
    pub first_line: u32,
}

impl Script {
    /// Reads `text` (which starts at line `first_line` of `path`) with its directives; a bad
    /// directive becomes a problem. `transaction` is what the file's own tool decided.
    pub(super) fn new(
        path: &Path,
        text: String,
        transaction: bool,
        first_line: u32,
        problems: &mut Vec<Problem>,
    ) -> Script {
        let mut script = Script {
            path: path.to_path_buf(),
            checksum: checksum(&text),
            transaction,
            lock_timeout: None,
            statement_timeout: None,
            statements: Vec::new(),
            syntax_errors: Vec::new(),
            allows: Vec::new(),
            first_line,
            text,
        };
        script.read_directives(first_line, problems);
        let (statements, errors) = split_from(&script.text, first_line);
        script.statements = statements;
        script.syntax_errors = errors;
        script
    }

    fn read_directives(&mut self, first_line: u32, problems: &mut Vec<Problem>) {
        let mut bad = |line: usize, why: String| {
            problems.push(Problem::Unreadable {
                path: self.path.clone(),
                why: format!("line {}: {why}", line as u32 + first_line),
            })
        };
        let mut transaction = self.transaction;
        let (mut lock_timeout, mut statement_timeout) = (None, None);
        let mut allows = Vec::new();
        // Past the first statement only `allow` is a directive; other lines are comments.
        let mut leading = true;
        for (index, line) in self.text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let Some(comment) = line.strip_prefix("--") else {
                leading = false;
                continue;
            };
            let Some(directive) = comment.trim_start().strip_prefix("lifeboat:") else { continue };
            let (word, argument) = directive.trim().split_once(char::is_whitespace).unwrap_or((directive.trim(), ""));
            let argument = argument.trim();
            if !leading && word != "allow" {
                continue;
            }
            match word {
                "no-transaction" if !argument.is_empty() => {
                    bad(index, format!("`-- lifeboat:no-transaction` takes no argument (found {argument:?})"))
                }
                "no-transaction" if index != 0 => {
                    bad(index, "`-- lifeboat:no-transaction` must be the file's first line; move it there".to_owned())
                }
                "no-transaction" => transaction = false,
                "lock-timeout" | "statement-timeout" => match parse_duration(argument) {
                    Ok(duration) if word == "lock-timeout" => lock_timeout = Some(duration),
                    Ok(duration) => statement_timeout = Some(duration),
                    Err(why) => bad(index, format!("`-- lifeboat:{word}`: {why}")),
                },
                "allow" => match read_allow(argument) {
                    Ok((rule, reason)) => allows.push(Allow { rule, reason, line: index as u32 + first_line }),
                    Err(why) => bad(index, why),
                },
                _ => bad(index, format!("unknown directive `-- lifeboat:{word}`; the directives are {DIRECTIVES}")),
            }
        }
        self.allows = allows;
        self.transaction = transaction;
        self.lock_timeout = lock_timeout;
        self.statement_timeout = statement_timeout;
    }
}

/// One file read on its own as a lifeboat migration script (`lifeboat migrate lint FILE`): `None`
/// with a problem when it is not UTF-8 text.
pub fn read_file(path: &Path) -> Result<(Option<Script>, Vec<Problem>), super::SourceError> {
    let mut problems = Vec::new();
    let script = super::read_text(path, &mut problems)?.map(|text| Script::new(path, text, true, 1, &mut problems));
    Ok((script, problems))
}

/// The rule and reason of `-- lifeboat:allow <rule> <reason>`, or why the directive is refused.
fn read_allow(argument: &str) -> Result<(String, String), String> {
    let (rule, reason) = argument.split_once(char::is_whitespace).unwrap_or((argument, ""));
    let reason = reason.trim();
    if rule.is_empty() {
        return Err("`-- lifeboat:allow` needs a rule and a reason, e.g. `-- lifeboat:allow \
                    require-concurrent-index-creation the table holds 20 rows`"
            .to_owned());
    }
    if !crate::migrate::lint::known_rule(rule) {
        return Err(format!(
            "`-- lifeboat:allow {rule}`: there is no lint rule {rule:?}; `lifeboat migrate lint --rules` lists them"
        ));
    }
    if reason.is_empty() {
        return Err(format!(
            "`-- lifeboat:allow {rule}` needs a reason after the rule (it is kept in the migration history): say why \
             the finding is acceptable here"
        ));
    }
    Ok((rule.to_owned(), reason.to_owned()))
}

/// The text without a leading BOM and with CRLF and lone CR turned into LF.
pub fn normalise(text: &str) -> String {
    text.strip_prefix('\u{feff}').unwrap_or(text).replace("\r\n", "\n").replace('\r', "\n")
}

/// Hex SHA-256 of [`normalise`]d text: the same file checked out with CRLF endings or saved with
/// a BOM has the same checksum; any other edit changes it.
pub fn checksum(text: &str) -> String {
    hex::encode(Sha256::digest(normalise(text).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(text: &str) -> (Script, Vec<Problem>) {
        let mut problems = Vec::new();
        let script = Script::new(Path::new("m/1_a.up.sql"), text.to_owned(), true, 1, &mut problems);
        (script, problems)
    }

    #[test]
    fn line_endings_and_bom_do_not_change_the_checksum() {
        let lf = "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\n";
        let crlf = lf.replace('\n', "\r\n");
        let bom = format!("\u{feff}{lf}");
        let cr = lf.replace('\n', "\r");
        assert_eq!(checksum(lf), checksum(&crlf));
        assert_eq!(checksum(lf), checksum(&bom));
        assert_eq!(checksum(lf), checksum(&cr));
        assert_eq!(checksum(lf).len(), 64);
        assert_ne!(checksum(lf), checksum(&lf.replace("VALUES (1)", "VALUES (2)")));
        assert_ne!(checksum(lf), checksum(&lf.replace("a (id", "a  (id")));
    }

    #[test]
    fn directives_among_the_leading_comments_are_read() {
        let (script, problems) = script(
            "-- lifeboat:no-transaction\n-- builds the index\n-- lifeboat:lock-timeout 5s\n\n\
             -- lifeboat:statement-timeout 10m\nCREATE INDEX CONCURRENTLY i ON a (id);\n\
             -- lifeboat:lock-timeout 9s\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert!(!script.transaction);
        assert_eq!(script.lock_timeout, Some(Duration::from_secs(5)));
        assert_eq!(script.statement_timeout, Some(Duration::from_secs(600)));
        assert_eq!(script.statements.len(), 1);
    }

    #[test]
    fn no_transaction_below_the_first_line_is_a_problem() {
        let (script, problems) = script("-- adds a column\n-- lifeboat:no-transaction\nSELECT 1;\n");
        assert!(script.transaction);
        assert_eq!(problems.len(), 1);
        let message = problems[0].to_string();
        assert!(message.contains("m/1_a.up.sql") && message.contains("line 2"), "{message}");
        assert!(message.contains("must be the file's first line"), "{message}");
    }

    #[test]
    fn allow_directives_are_read_anywhere_with_their_lines() {
        let (script, problems) = script(
            "-- lifeboat:allow ban-drop-column the column was unused since v2\nALTER TABLE a DROP COLUMN b;\n\n  \
             -- lifeboat:allow require-concurrent-index-creation  lookup table of 12 rows \n\
             CREATE INDEX i ON a (id);\n-- lifeboat:lock-timeout 9s\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            script.allows,
            [
                Allow {
                    rule: "ban-drop-column".to_owned(),
                    reason: "the column was unused since v2".to_owned(),
                    line: 1
                },
                Allow {
                    rule: "require-concurrent-index-creation".to_owned(),
                    reason: "lookup table of 12 rows".to_owned(),
                    line: 4
                },
            ]
        );
        assert_eq!(script.lock_timeout, None, "only allow is read below the first statement");
        assert_eq!(script.statements.len(), 2);
    }

    #[test]
    fn an_allow_without_a_reason_or_naming_no_rule_is_a_problem_naming_the_line() {
        let (script, problems) = script(
            "SELECT 1;\n-- lifeboat:allow ban-drop-table\nDROP TABLE a;\n-- lifeboat:allow no-such-rule because\n\
             SELECT 2;\n-- lifeboat:allow\n",
        );
        assert!(script.allows.is_empty(), "{:?}", script.allows);
        let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[0].contains("m/1_a.up.sql: line 2") && messages[0].contains("needs a reason"), "{messages:?}");
        assert!(
            messages[1].contains("line 4") && messages[1].contains("no lint rule \"no-such-rule\""),
            "{messages:?}"
        );
        assert!(messages[1].contains("lifeboat migrate lint --rules"), "{messages:?}");
        assert!(messages[2].contains("line 6") && messages[2].contains("needs a rule and a reason"), "{messages:?}");
    }

    #[test]
    fn unknown_directives_and_bad_durations_are_problems_naming_the_line() {
        let (_, problems) =
            script("-- lifeboat:no-transactions\n-- lifeboat:lock-timeout soon\n-- lifeboat:statement-timeout 10min\n");
        let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[0].contains("line 1") && messages[0].contains("unknown directive"), "{messages:?}");
        assert!(messages[1].contains("line 2") && messages[1].contains("not a duration"), "{messages:?}");
        assert!(messages[2].contains("line 3") && messages[2].contains("\"10min\""), "{messages:?}");
    }
}
