//! [`ConfigError`]: everything that can be wrong with the configuration, worded for the operator.
//!
//! Problems inside the file carry `file:line:column: dotted.key: message`, the shape compilers use,
//! so an editor can jump to them. No message ever contains the value of a secret (G5): errors about
//! secret-bearing keys say what is wrong with the value without repeating it.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file does not exist.
    #[error(
        "no configuration file at {path} ({chosen_by}): copy config/lifeboat.example.toml there and \
         edit it, or pass --config <PATH> (or set LIFEBOAT_CONFIG) to use another file",
        path = path.display()
    )]
    NotFound { path: PathBuf, chosen_by: &'static str },

    /// The configuration path is a directory, not a file.
    #[error(
        "the configuration file {path} ({chosen_by}) is a directory; lifeboat expects a TOML file there. \
         {next}",
        path = path.display()
    )]
    IsDirectory { path: PathBuf, chosen_by: &'static str, next: String },

    /// The configuration file exists but cannot be read (permissions, not UTF-8...).
    #[error(
        "cannot read the configuration file {path} ({chosen_by}): {error}. {next}",
        path = path.display()
    )]
    Unreadable { path: PathBuf, chosen_by: &'static str, error: std::io::Error, next: String },

    /// Something in the file: TOML syntax, an unknown key, a wrong type, a missing or invalid value.
    #[error("{0}")]
    Invalid(Box<Invalid>),

    /// An environment variable lifeboat reads has a value it cannot use.
    #[error("environment variable {var}: {message}")]
    Env { var: &'static str, message: String },

    /// Encryption needs a key and none is configured anywhere.
    #[error(
        "no repository key is configured: set repository.key_file or repository.passphrase_file in \
         {file}, or one of LIFEBOAT_KEY_FILE, LIFEBOAT_PASSPHRASE_FILE, LIFEBOAT_PASSPHRASE in the \
         environment (repository.passphrase also works but keeps the secret in the configuration file)",
        file = file.display()
    )]
    NoKey { file: PathBuf },

    #[error(
        "cannot read the passphrase file {path} (named by {named_by}): {error}. {next}",
        path = path.display()
    )]
    PassphraseFile {
        path: PathBuf,
        /// `env LIFEBOAT_PASSPHRASE_FILE` or `repository.passphrase_file`.
        named_by: String,
        error: std::io::Error,
        /// What to do, for this kind of error.
        next: String,
    },

    #[error("the passphrase from {origin} is not UTF-8 text")]
    PassphraseNotUtf8 { origin: String },

    #[error("the passphrase from {origin} is empty; an empty passphrase protects nothing")]
    EmptyPassphrase { origin: String },
}

/// A problem at a place in the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub file: PathBuf,
    /// 1-based line and column; `None` when the problem has no place in the text (a missing table).
    pub position: Option<(usize, usize)>,
    /// Dotted key such as `repository.compression.level`; `None` for syntax errors.
    pub key: Option<String>,
    /// What is wrong and, where useful, what to do. Never contains a secret.
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl ConfigError {
    /// An error in `text` (read from `file`) at byte range `span`, about `key`.
    pub(crate) fn invalid(
        file: &std::path::Path,
        text: &str,
        span: Option<Range<usize>>,
        key: Option<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid(Box::new(Invalid {
            file: file.to_path_buf(),
            position: span.map(|span| line_column(text, span.start)),
            key,
            message: message.into(),
        }))
    }
}

/// 1-based line and column (in characters) of byte offset `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::line_column;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 4), (1, 5));
        assert_eq!(line_column(text, 6), (2, 1));
        // "é" is two bytes but one column: the '=' after it is byte 10, column 4.
        assert_eq!(line_column(text, 10), (2, 4));
        assert_eq!(line_column(text, text.len()), (3, 1));
    }
}
