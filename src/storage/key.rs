//! Object keys: the only names a backend accepts.
//!
//! A key is a relative, `/`-separated path such as `clusters/main/wal/00000001/000000010000000000000001`.
//! Validating once here means the local backend can never be steered outside its root and the S3
//! backend never produces surprising keys.

use std::fmt;

/// A validated object key: non-empty `/`-separated components, none empty, `.` or `..`, none
/// starting with `.lifeboat-` (reserved for a backend's temporary files), no NUL or backslash.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(String);

#[derive(Debug, thiserror::Error)]
#[error("invalid object key {key:?}: {reason}")]
pub struct InvalidKey {
    pub key: String,
    pub reason: &'static str,
}

/// Prefix of temporary names a backend may create next to real objects; never a valid key component.
pub const RESERVED_PREFIX: &str = ".lifeboat-";

impl ObjectKey {
    pub fn new(key: impl Into<String>) -> Result<Self, InvalidKey> {
        let key = key.into();
        let reason = if key.is_empty() {
            Some("it is empty")
        } else if key.contains('\0') || key.contains('\\') {
            Some("it contains a NUL or backslash")
        } else if key.split('/').any(|part| part.is_empty()) {
            Some("it has an empty path component (leading, trailing or doubled '/')")
        } else if key.split('/').any(|part| part == "." || part == "..") {
            Some("it has a '.' or '..' component")
        } else if key.split('/').any(|part| part.starts_with(RESERVED_PREFIX)) {
            Some("a component starts with the reserved prefix '.lifeboat-'")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(InvalidKey { key, reason }),
            None => Ok(ObjectKey(key)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This key with `suffix` appended as further components, e.g. `clusters/main` + `wal/x`.
    pub fn join(&self, suffix: &str) -> Result<Self, InvalidKey> {
        ObjectKey::new(format!("{}/{}", self.0, suffix))
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_repository_paths() {
        for key in ["lifeboat.repo", "clusters/main/wal/00000001/000000010000000000000001", "a"] {
            assert_eq!(ObjectKey::new(key).unwrap().as_str(), key);
        }
    }

    #[test]
    fn rejects_paths_that_could_escape_or_collide() {
        for key in ["", "/abs", "a//b", "a/", "../x", "a/./b", "a/..", "a\\b", "x/.lifeboat-tmp", "nul\0"] {
            assert!(ObjectKey::new(key).is_err(), "{key:?} should be rejected");
        }
    }
}
