//! The records lifeboat stores in the repository, side by side: what each one holds, its
//! `format` name and `version`, its key, and how it is written and read back. docs/format.md is
//! the normative description; these types are its reference implementation. Everything that
//! decides *what* to write (taking a backup, judging the catalog) lives elsewhere and uses them.
//!
//! - [`backup_manifest`]: the manifest of a base backup (`lifeboat-backup` version 1), its commit
//!   point and what a restore reads.
//! - [`dump_manifest`]: the manifest of a logical dump (`lifeboat-dump` version 1) and the keys of
//!   its objects.
//! - [`verify_report`]: what one verification found (`lifeboat-verify-report` version 1).
//! - [`journal_entry`]: one entry of a cluster's journal (`lifeboat-journal` version 1) and the
//!   state it carries.
//!
//! Each record refuses a `format` or `version` it does not know by name, so a newer repository is
//! never half-read.

pub mod backup_manifest;
pub mod dump_manifest;
pub mod journal_entry;
pub mod verify_report;
