//! The PostgreSQL major versions lifeboat knows, and how each one is recognised: by the server's
//! `server_version_num`, by a data directory's `PG_VERSION`, by a manifest's recorded version, and
//! by the magic number at the start of every WAL page (`XLOG_PAGE_MAGIC`, which changes with each
//! major's WAL format). Everything version-sensitive asks here first, so a version outside the
//! list is refused by name rather than read with another version's rules: a PostgreSQL newer than
//! this lifeboat may have changed a format lifeboat parses (it happens every major: PostgreSQL 18
//! widened the dropped-statistics items of commit records).
//!
//! What differs between the supported majors, and where lifeboat handles it, is tabled in
//! `docs/versions.md`.

use std::fmt;

/// Each supported major with the WAL page magic its server writes, oldest first.
const KNOWN: [(u32, u16); 6] = [(13, 0xD106), (14, 0xD10D), (15, 0xD110), (16, 0xD113), (17, 0xD116), (18, 0xD118)];

/// The oldest major lifeboat supports.
pub const OLDEST: u32 = KNOWN[0].0;
/// The newest major lifeboat supports.
pub const NEWEST: u32 = KNOWN[KNOWN.len() - 1].0;

/// The major of a `server_version_num`: 15 for 150018 (9 for 90624, only to name it in a refusal).
pub fn major_of_version_num(version_num: u32) -> u32 {
    version_num / 10_000
}

/// The major whose WAL pages carry `magic`, if lifeboat knows it.
pub fn major_of_wal_magic(magic: u16) -> Option<u32> {
    KNOWN.iter().find(|(_, known)| *known == magic).map(|(major, _)| *major)
}

/// Refuses a major lifeboat does not support; `what` names where it was seen ("the server at
/// postgresql://...", "backup 20261205T101010Z", ...).
pub fn check_supported(major: u32, what: impl fmt::Display) -> Result<(), UnsupportedVersion> {
    if (OLDEST..=NEWEST).contains(&major) {
        Ok(())
    } else if major > NEWEST {
        Err(UnsupportedVersion::Newer { what: what.to_string(), major })
    } else {
        Err(UnsupportedVersion::Older { what: what.to_string(), major })
    }
}

/// Refuses WAL whose page magic belongs to no supported major.
pub fn check_wal_magic(magic: u16, what: impl fmt::Display) -> Result<u32, UnsupportedVersion> {
    major_of_wal_magic(magic).ok_or_else(|| UnsupportedVersion::WalMagic { what: what.to_string(), magic })
}

/// "13, 14, 15, 16, 17 and 18".
pub fn supported_list() -> String {
    let majors: Vec<String> = KNOWN.iter().map(|(major, _)| major.to_string()).collect();
    let (last, rest) = majors.split_last().expect("the list is not empty");
    format!("{} and {last}", rest.join(", "))
}

/// "PostgreSQL 13 (0xD106), 14 (0xD10D), ...": the magics, for messages about WAL.
pub fn wal_magic_list() -> String {
    let items: Vec<String> = KNOWN.iter().map(|(major, magic)| format!("{major} ({magic:#06X})")).collect();
    format!("PostgreSQL {}", items.join(", "))
}

/// A PostgreSQL version lifeboat does not support, and where it was met.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsupportedVersion {
    #[error(
        "{what} is PostgreSQL {major}, which is newer than this lifeboat knows: it supports PostgreSQL {}. \
         Its formats may have changed, so lifeboat will not read or write anything for it; upgrade lifeboat \
         to a release that supports PostgreSQL {major}",
        supported_list()
    )]
    Newer { what: String, major: u32 },

    #[error(
        "{what} is PostgreSQL {major}, which lifeboat does not support: it supports PostgreSQL {}. Upgrade \
         the server (pg_upgrade) to a supported major first",
        supported_list()
    )]
    Older { what: String, major: u32 },

    #[error(
        "{what} has WAL page magic {magic:#06X}, which is no PostgreSQL version this lifeboat knows ({}): \
         it comes from a newer PostgreSQL or is not WAL. Nothing was read as WAL; if the server is newer \
         than PostgreSQL {NEWEST}, upgrade lifeboat",
        wal_magic_list()
    )]
    WalMagic { what: String, magic: u16 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_major_has_its_own_wal_magic() {
        for (major, magic) in KNOWN {
            assert_eq!(major_of_wal_magic(magic), Some(major));
            assert_eq!(check_wal_magic(magic, "segment"), Ok(major));
            assert_eq!(check_supported(major, "the server"), Ok(()));
        }
        assert_eq!(supported_list(), "13, 14, 15, 16, 17 and 18");
        assert_eq!(major_of_version_num(180004), 18);
        assert_eq!(major_of_version_num(90624), 9);
    }

    #[test]
    fn a_newer_major_is_refused_by_name_with_the_known_ones() {
        let message = check_supported(19, "the server at postgresql://db1/postgres").unwrap_err().to_string();
        assert!(message.starts_with("the server at postgresql://db1/postgres is PostgreSQL 19"), "{message}");
        assert!(message.contains("supports PostgreSQL 13, 14, 15, 16, 17 and 18"), "{message}");
        assert!(message.contains("upgrade lifeboat"), "{message}");

        let message = check_supported(12, "the server").unwrap_err().to_string();
        assert!(message.contains("PostgreSQL 12, which lifeboat does not support"), "{message}");
        assert!(message.contains("pg_upgrade"), "{message}");
    }

    #[test]
    fn an_unknown_wal_magic_is_refused_with_every_known_one() {
        let message = check_wal_magic(0xD11A, "WAL segment 000000010000000000000003").unwrap_err().to_string();
        assert!(message.contains("WAL segment 000000010000000000000003 has WAL page magic 0xD11A"), "{message}");
        assert!(message.contains("18 (0xD118)"), "{message}");
        assert!(message.contains("13 (0xD106)"), "{message}");
    }
}
