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
//! An unknown `-- lifeboat:` directive is a problem rather than a comment: a typo must not quietly
//! run a migration inside a transaction it was meant to avoid.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::split::split_from;
use super::{Problem, Statement};
use crate::config::parse_duration;

/// What the directives are called, for the message about an unknown one.
const DIRECTIVES: &str = "no-transaction, lock-timeout DURATION, statement-timeout DURATION";

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
        for (index, line) in self.text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let Some(comment) = line.strip_prefix("--") else { break };
            let Some(directive) = comment.trim_start().strip_prefix("lifeboat:") else { continue };
            let (word, argument) = directive.trim().split_once(char::is_whitespace).unwrap_or((directive.trim(), ""));
            let argument = argument.trim();
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
                _ => bad(index, format!("unknown directive `-- lifeboat:{word}`; the directives are {DIRECTIVES}")),
            }
        }
        self.transaction = transaction;
        self.lock_timeout = lock_timeout;
        self.statement_timeout = statement_timeout;
    }
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
