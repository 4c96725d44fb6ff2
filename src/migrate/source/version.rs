//! Migration versions as the tools write them: digit groups separated by `.` or `_` (Flyway's
//! `4.11.0.1` and `1_1`), compared numerically part by part, so `9 < 10` and `4.11 < 4.11.0.1`
//! whatever the padding (`0007` is 7).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// A migration's version. Equality, order and hash use the numeric parts with leading zeros and
/// trailing zero parts dropped (Flyway's rule: `1.0` is `1`); [`Version::as_str`] and `Display`
/// give the text as written in the file name.
#[derive(Clone, Debug)]
pub struct Version {
    text: String,
    /// Digit strings without leading zeros ("0" for zero), trailing "0" parts removed.
    parts: Vec<String>,
}

impl Version {
    pub fn parse(text: &str) -> Result<Version, String> {
        let invalid = || {
            format!(
                "{text:?} is not a migration version: write digits, optionally in groups separated by '.' \
                 (e.g. 20240102030405, 0007 or 4.11.0.1)"
            )
        };
        if text.is_empty() {
            return Err(invalid());
        }
        let mut parts = Vec::new();
        for part in text.split(['.', '_']) {
            if part.is_empty() || !part.bytes().all(|byte| byte.is_ascii_digit()) {
                return Err(invalid());
            }
            let trimmed = part.trim_start_matches('0');
            parts.push(if trimmed.is_empty() { "0".to_owned() } else { trimmed.to_owned() });
        }
        while parts.len() > 1 && parts.last().is_some_and(|part| part == "0") {
            parts.pop();
        }
        Ok(Version { text: text.to_owned(), parts })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The version as one integer, when it is a single group that fits (sqlx, golang-migrate).
    pub fn to_i64(&self) -> Option<i64> {
        match self.parts.as_slice() {
            [single] => single.parse().ok(),
            _ => None,
        }
    }

    /// Whether the version is a single group of digits (no `.` or `_`).
    pub fn is_integer(&self) -> bool {
        !self.text.contains(['.', '_'])
    }

    /// `YYYYMMDDHHMMSS`: what `migrate new`, sqlx, dbmate and Prisma write.
    pub fn is_timestamp(&self) -> bool {
        self.is_integer() && self.text.len() == 14
    }
}

/// Compares two digit strings without leading zeros as numbers.
fn compare_digits(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let longest = self.parts.len().max(other.parts.len());
        for index in 0..longest {
            let a = self.parts.get(index).map_or("0", String::as_str);
            let b = other.parts.get(index).map_or("0", String::as_str);
            match compare_digits(a, b) {
                Ordering::Equal => continue,
                unequal => return unequal,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.parts == other.parts
    }
}

impl Eq for Version {}

impl Hash for Version {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts.hash(state);
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn versions_sort_numerically_part_by_part() {
        assert!(v("9") < v("10"));
        assert!(v("4.11") < v("4.11.0.1"));
        assert!(v("4.2") < v("4.11"));
        assert!(v("20240101000000") < v("20240101000001"));
        assert_eq!(v("0007"), v("7"));
        assert_eq!(v("1_1"), v("1.1"));
        assert_eq!(v("1.0"), v("1"));
        assert_eq!(v("0007").to_string(), "0007");
        assert_eq!(v("1_1").as_str(), "1_1");
    }

    #[test]
    fn malformed_versions_are_refused() {
        for text in ["", "1a", ".1", "1..2", "v1", "1 2"] {
            let error = Version::parse(text).unwrap_err();
            assert!(error.contains("is not a migration version"), "{text}: {error}");
        }
    }

    #[test]
    fn integer_and_timestamp_versions_are_recognised() {
        assert_eq!(v("0042").to_i64(), Some(42));
        assert_eq!(v("4.11").to_i64(), None);
        assert!(v("20240102030405").is_timestamp());
        assert!(!v("0001").is_timestamp());
    }
}
