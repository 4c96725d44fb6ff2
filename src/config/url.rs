//! [`RepositoryUrl`]: where the repository lives, parsed from `repository.url`.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// A parsed, validated `repository.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositoryUrl {
    /// A local directory (`file:///abs/path`, or a bare absolute path).
    Local(PathBuf),
    /// An S3 bucket and a key prefix inside it: no leading or trailing `/`, empty for the root.
    S3 { bucket: String, prefix: String },
}

impl RepositoryUrl {
    pub const DEFAULT: &'static str = "file:///var/lib/lifeboat/repo";

    /// Parses `repository.url`. The error is a sentence for the operator; it may quote the URL,
    /// which holds no secret (S3 credentials have their own keys).
    pub fn parse(text: &str) -> Result<RepositoryUrl, String> {
        if let Some(rest) = text.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(format!(
                    "{text:?} is not an absolute file:// URL; write file:// followed by an absolute \
                     path, e.g. \"file:///var/lib/lifeboat/repo\" (three slashes)"
                ));
            }
            return local(rest);
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            return s3(rest);
        }
        if text.starts_with('/') {
            return local(text);
        }
        if let Some((scheme, _)) = text.split_once("://") {
            // Only the scheme is quoted: the rest could hold credentials.
            return Err(format!(
                "unsupported scheme \"{scheme}://\": use \"file:///absolute/path\" for a local directory or \
                 \"s3://bucket/optional/prefix\" for S3 and S3-compatible storage"
            ));
        }
        Err(format!(
            "{text:?} is neither a URL nor an absolute path: use \"file:///absolute/path\" (or just \
             \"/absolute/path\") for a local directory, or \"s3://bucket/optional/prefix\""
        ))
    }
}

fn local(path: &str) -> Result<RepositoryUrl, String> {
    let path = Path::new(path);
    if path.components().any(|component| component == Component::ParentDir) {
        return Err(format!("{} contains \"..\"; give the directory's real absolute path", path.display()));
    }
    Ok(RepositoryUrl::Local(path.to_path_buf()))
}

fn s3(rest: &str) -> Result<RepositoryUrl, String> {
    if rest.contains(['?', '#']) {
        return Err("an s3:// URL takes no query or fragment (put S3 options in [repository.s3])".into());
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.contains('@') {
        return Err("an s3:// URL takes no credentials; set repository.s3.access_key_id and secret_access_key, \
             or leave them to the standard AWS chain"
            .into());
    }
    check_bucket(bucket)?;
    let prefix = prefix.trim_end_matches('/');
    if !prefix.is_empty() && prefix.split('/').any(|segment| matches!(segment, "" | "." | "..")) {
        return Err(format!(
            "the key prefix {prefix:?} has an empty, \".\" or \"..\" segment; write it like \
             \"s3://{bucket}/prod/db1\""
        ));
    }
    Ok(RepositoryUrl::S3 { bucket: bucket.to_string(), prefix: prefix.to_string() })
}

/// S3's bucket naming rules (the ones every S3-compatible server also accepts).
fn check_bucket(bucket: &str) -> Result<(), String> {
    let problem = if bucket.is_empty() {
        Some("is missing: write s3://bucket/optional/prefix")
    } else if !(3..=63).contains(&bucket.len()) {
        Some("must be 3 to 63 characters long")
    } else if !bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-') {
        Some("may contain only lowercase letters, digits, '.' and '-'")
    } else if !bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        Some("must start and end with a letter or digit")
    } else if bucket.contains("..") {
        Some("must not contain \"..\"")
    } else if bucket.split('.').count() == 4 && bucket.split('.').all(|part| part.parse::<u8>().is_ok()) {
        Some("must not look like an IP address")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(format!("the bucket name {bucket:?} {problem}")),
        None => Ok(()),
    }
}

impl fmt::Display for RepositoryUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepositoryUrl::Local(path) => write!(f, "file://{}", path.display()),
            RepositoryUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            RepositoryUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(bucket: &str, prefix: &str) -> RepositoryUrl {
        RepositoryUrl::S3 { bucket: bucket.into(), prefix: prefix.into() }
    }

    #[test]
    fn accepts_the_documented_forms() {
        let local = RepositoryUrl::Local("/var/lib/lifeboat/repo".into());
        assert_eq!(RepositoryUrl::parse("file:///var/lib/lifeboat/repo"), Ok(local.clone()));
        assert_eq!(RepositoryUrl::parse("/var/lib/lifeboat/repo"), Ok(local));
        assert_eq!(RepositoryUrl::parse("s3://backups"), Ok(s3("backups", "")));
        assert_eq!(RepositoryUrl::parse("s3://backups/"), Ok(s3("backups", "")));
        assert_eq!(RepositoryUrl::parse("s3://backups/prod/db1/"), Ok(s3("backups", "prod/db1")));
        assert_eq!(RepositoryUrl::parse("s3://my.backups-2/x"), Ok(s3("my.backups-2", "x")));
    }

    #[test]
    fn display_round_trips() {
        for text in ["file:///var/lib/lifeboat/repo", "s3://backups", "s3://backups/prod/db1"] {
            assert_eq!(RepositoryUrl::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn refuses_what_would_surprise() {
        for (text, expect) in [
            ("file://var/lib/repo", "three slashes"),
            ("var/lib/repo", "neither a URL nor an absolute path"),
            ("https://example.com/repo", "unsupported scheme"),
            ("file:///var/lib/../repo", "\"..\""),
            ("s3://", "is missing"),
            ("s3://ab", "3 to 63"),
            ("s3://Backups", "lowercase"),
            ("s3://my_backups", "lowercase"),
            ("s3://-backups", "start and end"),
            ("s3://back..ups", "\"..\""),
            ("s3://192.168.1.10", "IP address"),
            ("s3://backups//prod", "empty"),
            ("s3://backups/a/../b", "segment"),
            ("s3://backups/prod?versionId=1", "no query"),
            ("s3://key:secret@backups/prod", "no credentials"),
        ] {
            let error = RepositoryUrl::parse(text).expect_err(text);
            assert!(error.contains(expect), "{text}: {error}");
        }
    }
}
