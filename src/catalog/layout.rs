//! [`ClusterLayout`]: the object keys of one cluster's part of the repository (DESIGN.md,
//! "Repository layout"; docs/format.md section 5), so no other module spells a key by hand.
//!
//! ```text
//! clusters/<name>/cluster                              identity: system identifier, segment size
//! clusters/<name>/wal/<timeline>/<segment>             one object per WAL segment
//! clusters/<name>/wal/<timeline>/<segment>.partial     last segment of a timeline, incomplete
//! clusters/<name>/wal/<timeline>/<segment>.<offset>.backup   backup history file
//! clusters/<name>/wal/<timeline>.history               timeline history file
//! clusters/<name>/journal/<seq>                       what lifeboat added and removed, in order
//! clusters/<name>/audit/<time>-<random>                a batch of audit lines (who ran what, and how it ended)
//! clusters/<name>/backups/  dumps/  locks/  verify/
//! ```

use super::lsn::Timeline;
use super::wal::{SegmentSize, WalFile};
use crate::config::ClusterName;
use crate::repository::{REPO_FILE, REPO_FILE_COPY};
use crate::storage::ObjectKey;
use crate::storage::s3::Retain;

/// The keys of one cluster in the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterLayout {
    name: ClusterName,
    /// `clusters/<name>`; a valid key prefix because cluster names are restricted to safe characters.
    root: String,
}

impl ClusterLayout {
    pub fn new(name: &ClusterName) -> ClusterLayout {
        ClusterLayout { name: name.clone(), root: format!("clusters/{}", name.as_str()) }
    }

    /// The cluster's name, for messages.
    pub fn name(&self) -> &ClusterName {
        &self.name
    }

    fn key(&self, suffix: &str) -> ObjectKey {
        ObjectKey::new(format!("{}/{suffix}", self.root)).expect("layout keys are built from validated parts")
    }

    /// `clusters/<name>/`: everything of this cluster.
    pub fn prefix(&self) -> String {
        format!("{}/", self.root)
    }

    /// `clusters/<name>/cluster`: the cluster's identity (see [`super::cluster::ClusterRecord`]).
    pub fn cluster_record(&self) -> ObjectKey {
        self.key("cluster")
    }

    /// `clusters/<name>/wal/`: every archived WAL file of the cluster.
    pub fn wal_prefix(&self) -> String {
        format!("{}/wal/", self.root)
    }

    /// `clusters/<name>/wal/<timeline>/`: the segments (and partial and backup history files) of
    /// one timeline.
    pub fn wal_timeline_prefix(&self, timeline: Timeline) -> String {
        format!("{}/wal/{timeline}/", self.root)
    }

    /// Where an archived WAL file lives: segments and the files named after a segment under
    /// their timeline's directory, history files beside those directories.
    pub fn wal_file(&self, file: &WalFile, size: SegmentSize) -> ObjectKey {
        match file {
            WalFile::History(timeline) => self.key(&format!("wal/{timeline}.history")),
            other => self.key(&format!("wal/{}/{}", other.timeline(), other.name(size))),
        }
    }

    /// The WAL file stored under `key`, if `key` is one of this cluster's WAL keys. A key whose
    /// timeline directory does not match the file's own timeline is not one.
    pub fn parse_wal_key(&self, key: &ObjectKey, size: SegmentSize) -> Option<WalFile> {
        let rest = key.as_str().strip_prefix(&self.wal_prefix())?;
        let file = match rest.split_once('/') {
            None => WalFile::parse(rest, size).ok().filter(|file| matches!(file, WalFile::History(_)))?,
            Some((timeline, name)) => {
                let timeline = Timeline::from_hex(timeline).ok()?;
                let file = WalFile::parse(name, size).ok()?;
                (!matches!(file, WalFile::History(_)) && file.timeline() == timeline).then_some(file)?
            }
        };
        // Only the canonical spelling is ours (upper-case hex), so a key maps to one file and back.
        (self.wal_file(&file, size) == *key).then_some(file)
    }

    /// `clusters/<name>/backups/`: base backups, one directory per backup id.
    pub fn backups_prefix(&self) -> String {
        format!("{}/backups/", self.root)
    }

    /// `clusters/<name>/dumps/`: logical dumps, one directory per dump id.
    pub fn dumps_prefix(&self) -> String {
        format!("{}/dumps/", self.root)
    }

    /// `clusters/<name>/verify/`: verification reports.
    pub fn verify_prefix(&self) -> String {
        format!("{}/verify/", self.root)
    }

    /// `clusters/<name>/locks/<lock>`: the prefix of one lease's generations (see [`super::lease`]).
    /// `clusters/<name>/journal/`: the cluster's journal (see [`super::journal`]).
    pub fn journal_prefix(&self) -> String {
        format!("{}/journal/", self.root)
    }

    /// `clusters/<name>/audit/`: batches of audit lines (see [`crate::ops::audit`]).
    pub fn audit_prefix(&self) -> String {
        format!("{}/audit/", self.root)
    }

    /// `clusters/<name>/audit/<batch>`: one batch; `batch` is `<UTC time>-<random hex>`.
    pub fn audit_batch(&self, batch: &str) -> ObjectKey {
        self.key(&format!("audit/{batch}"))
    }

    pub fn lock(&self, lock: &str) -> ObjectKey {
        self.key(&format!("locks/{lock}"))
    }
}

/// The folders of a cluster whose objects are written once and removed only by `delete` or
/// retention: with `repository.s3.object_lock` they are written under retention.
const WRITTEN_ONCE: &[&str] = &["backups", "dumps", "wal", "verify", "journal"];

/// How a lock-configured store writes `key` (the scope handed to it, for every cluster):
/// - the write-once folders ([`WRITTEN_ONCE`]) under retention, never overwritten;
/// - `lifeboat.repo`, its copy and each cluster's record under retention on every version: lifeboat
///   rewrites them in place (`key add`, a new PostgreSQL major version) but never deletes them, and
///   losing both repository files would lose every backup's key;
/// - everything else plainly: `locks/` (a retained lease could never be released), `audit/`, and
///   the migration exports and rehearsal reports (`migrations/`, `rehearsals/`), on which no backup
///   depends.
pub fn retain(key: &ObjectKey) -> Retain {
    if key.as_str() == REPO_FILE || key.as_str() == REPO_FILE_COPY {
        return Retain::EveryVersion;
    }
    let parts: Vec<&str> = key.as_str().splitn(4, '/').collect();
    match parts.as_slice() {
        ["clusters", _, "cluster"] => Retain::EveryVersion,
        ["clusters", _, folder, _] if WRITTEN_ONCE.contains(folder) => Retain::Once,
        _ => Retain::No,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::wal::WalSegment;

    fn layout() -> ClusterLayout {
        ClusterLayout::new(&ClusterName::parse("main").unwrap())
    }

    #[test]
    fn what_object_lock_retains_follows_the_folders() {
        let retain_of = |key: &str| retain(&ObjectKey::new(key).unwrap());
        for once in [
            "clusters/main/backups/20261205T100000Z/manifest",
            "clusters/main/dumps/x/app.dump",
            "clusters/other/wal/00000001/000000010000000000000001",
            "clusters/main/wal/00000002.history",
            "clusters/main/verify/r",
            "clusters/main/journal/0000000001",
        ] {
            assert_eq!(retain_of(once), Retain::Once, "{once}");
        }
        for every in ["lifeboat.repo", "lifeboat.repo.copy", "clusters/main/cluster"] {
            assert_eq!(retain_of(every), Retain::EveryVersion, "{every}");
        }
        for routine in [
            "clusters/main/locks/backup",
            "clusters/main/locks/backup/1",
            "clusters/main/audit/20261205T100000Z-ab",
            "clusters/main/backupsX/y",
            "clusters/main/backups",
            "clusters/main/cluster/x",
            "other/main/backups/x",
            "lifeboat.repo.old",
        ] {
            assert_eq!(retain_of(routine), Retain::No, "{routine}");
        }
    }

    #[test]
    fn keys_follow_the_documented_layout() {
        let layout = layout();
        let size = SegmentSize::DEFAULT;
        let timeline = Timeline::new(2).unwrap();
        let segment = WalSegment::new(timeline, 0xA * 256 + 0xFF);
        assert_eq!(layout.cluster_record().as_str(), "clusters/main/cluster");
        assert_eq!(
            layout.wal_file(&WalFile::Segment(segment), size).as_str(),
            "clusters/main/wal/00000002/000000020000000A000000FF"
        );
        assert_eq!(
            layout.wal_file(&WalFile::Partial(segment), size).as_str(),
            "clusters/main/wal/00000002/000000020000000A000000FF.partial"
        );
        assert_eq!(
            layout.wal_file(&WalFile::BackupHistory { segment, offset: 0x28 }, size).as_str(),
            "clusters/main/wal/00000002/000000020000000A000000FF.00000028.backup"
        );
        assert_eq!(layout.wal_file(&WalFile::History(timeline), size).as_str(), "clusters/main/wal/00000002.history");
        assert_eq!(layout.wal_prefix(), "clusters/main/wal/");
        assert_eq!(layout.wal_timeline_prefix(timeline), "clusters/main/wal/00000002/");
        assert_eq!(layout.backups_prefix(), "clusters/main/backups/");
        assert_eq!(layout.dumps_prefix(), "clusters/main/dumps/");
        assert_eq!(layout.verify_prefix(), "clusters/main/verify/");
        assert_eq!(layout.journal_prefix(), "clusters/main/journal/");
        assert_eq!(layout.lock("backup").as_str(), "clusters/main/locks/backup");
        assert_eq!(layout.prefix(), "clusters/main/");
    }

    #[test]
    fn wal_keys_parse_back_to_their_files() {
        let layout = layout();
        let size = SegmentSize::DEFAULT;
        let segment = WalSegment::new(Timeline::new(3).unwrap(), 17);
        for file in [
            WalFile::Segment(segment),
            WalFile::Partial(segment),
            WalFile::BackupHistory { segment, offset: 0x60 },
            WalFile::History(Timeline::new(3).unwrap()),
        ] {
            assert_eq!(layout.parse_wal_key(&layout.wal_file(&file, size), size), Some(file));
        }
    }

    #[test]
    fn foreign_keys_are_not_wal_files() {
        let layout = layout();
        let size = SegmentSize::DEFAULT;
        for key in [
            "clusters/main/cluster",
            "clusters/other/wal/00000001/000000010000000000000001",
            "clusters/main/wal/00000002/000000010000000000000001", // wrong timeline directory
            "clusters/main/wal/00000001/000000010000000000000001/x",
            "clusters/main/wal/00000001/00000002.history", // history files are not in a timeline directory
            "clusters/main/wal/000000010000000000000001",  // segments are
            "clusters/main/wal/00000001/000000010000000000000100",
            "clusters/main/wal/00000001/00000001000000000000000a", // not canonical
            "clusters/main/wal/0000000a.history",
            "clusters/main/wal/notes.txt",
        ] {
            assert_eq!(layout.parse_wal_key(&ObjectKey::new(key).unwrap(), size), None, "{key}");
        }
    }
}
