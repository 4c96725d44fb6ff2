//! The views of one backup or dump: [`BackupView`] (`backup --json`, `info --json`, an entry of
//! `list --json`), [`DumpView`] (the same for dumps) and the [`VerificationView`] both embed.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Document;
use crate::backup::BackupSummary;
use crate::catalog::audit::Verification;
use crate::catalog::layout::ClusterLayout;
use crate::catalog::listing::{self, Entry};
use crate::format::backup_manifest::{BackupManifest, BackupMethod, Tablespace, Totals};
use crate::format::dump_manifest::{DumpManifest, TableRows};
use crate::format::verify_report::VerifyReport;
use crate::util::{round_to as round, seconds_between};
use crate::wal::check::ArchiveReport;

/// How much of a backup or dump a view holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// An entry of `list`: without each database's `tables` and the verification's `latest`
    /// report, which can be long.
    Summary,
    /// `info`, `backup`, `dump`: everything.
    Full,
}

/// A base backup.
#[derive(Debug, Clone, Serialize)]
pub struct BackupView {
    pub id: String,
    /// `"full"` or `"incr"`.
    pub kind: &'static str,
    pub cluster: String,
    pub method: BackupMethod,
    /// For an incremental backup: its base and what it stored.
    pub incremental: Option<IncrementalView>,
    /// The key of its manifest.
    pub manifest: String,
    pub system_identifier: String,
    pub postgres_version: String,
    pub postgres_version_num: u32,
    pub wal_segment_size: u32,
    pub timeline: u32,
    pub start_lsn: String,
    pub stop_lsn: String,
    pub start_wal: String,
    pub stop_wal: String,
    /// Segments from `start_wal` to `stop_wal`: what a restore needs to reach consistency.
    pub wal_segments: u64,
    /// Whether all of them are archived; `None` when the archive was not looked at.
    pub wal_archived: Option<bool>,
    /// The first of them that is not archived.
    pub wal_first_missing: Option<String>,
    pub start_time: DateTime<Utc>,
    pub stop_time: DateTime<Utc>,
    pub duration_seconds: f64,
    pub label: String,
    pub host: String,
    pub lifeboat_version: String,
    pub tablespaces: Vec<Tablespace>,
    pub totals: Totals,
    /// Plaintext bytes (what a restore writes) and bytes as stored: `totals.bytes` and
    /// `totals.stored_bytes`, under the names a dump uses.
    pub size: u64,
    pub stored_size: u64,
    pub compression_ratio: f64,
    pub verification: Option<VerificationView>,
    /// How the backup ran: only from the `backup` that took it.
    pub run: Option<BackupRun>,
}

/// What an incremental backup builds on and what it cost.
#[derive(Debug, Clone, Serialize)]
pub struct IncrementalView {
    /// The backup it was taken against.
    pub parent: String,
    /// Every backup a restore of it reads, the full backup first, the parent last.
    pub chain: Vec<String>,
    /// `"wal"` or `"page-lsn"`: how the changed blocks were found.
    pub changes_from: &'static str,
    pub fallback_reason: Option<String>,
    pub changed_blocks: u64,
    pub whole_files: u64,
    pub unchanged_files: u64,
    /// Plaintext bytes it stored itself (changed blocks and whole files).
    pub stored_plaintext_bytes: u64,
}

/// What only the run that took a backup knows.
#[derive(Debug, Clone, Serialize)]
pub struct BackupRun {
    /// From pg_backup_start until the manifest was stored.
    pub backup_seconds: f64,
    /// From the command's start (waiting for the lease included).
    pub seconds: f64,
    pub bytes_per_second: f64,
    /// Objects of interrupted backups removed before this one began.
    pub removed_orphans: usize,
}

/// A logical dump.
#[derive(Debug, Clone, Serialize)]
pub struct DumpView {
    pub id: String,
    /// Always `"dump"`.
    pub kind: &'static str,
    pub cluster: String,
    pub manifest: String,
    pub system_identifier: String,
    pub server_version: String,
    pub server_version_num: u32,
    pub pg_dump_version: String,
    pub start_time: DateTime<Utc>,
    pub stop_time: DateTime<Utc>,
    pub duration_seconds: f64,
    pub size: u64,
    pub stored_size: u64,
    pub compression_ratio: f64,
    pub globals: GlobalsView,
    pub databases: Vec<DatabaseView>,
    pub verification: Option<VerificationView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GlobalsView {
    pub key: String,
    pub size: u64,
    pub stored_size: u64,
    pub role_passwords: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseView {
    pub name: String,
    pub key: String,
    pub size: u64,
    pub stored_size: u64,
    pub start_time: DateTime<Utc>,
    pub stop_time: DateTime<Utc>,
    pub total_rows: u64,
    /// Every table with its row count; left out of `list`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<TableRows>>,
}

/// What the verifications of a backup or dump concluded.
#[derive(Debug, Clone, Serialize)]
pub struct VerificationView {
    /// `"passed"`, `"failed (<phase>)"`, or `"unreadable"` when the newest report cannot be read.
    pub status: String,
    pub passed: bool,
    /// When the verification that gave the verdict started.
    pub verified_at: Option<DateTime<Utc>>,
    /// Reports stored under `verify/<id>/`.
    pub reports: usize,
    /// The key of the report the verdict comes from.
    pub report: String,
    /// Whether the cluster's journal records the verdict: only a recorded verdict counts.
    pub recorded: bool,
    /// The report itself (docs/format.md section 11), `None` when it is missing or unreadable;
    /// left out of `list`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest: Option<Option<VerifyReport>>,
}

/// Either view, as `list` holds them (each says its `kind`).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum EntryView {
    Full(Box<BackupView>),
    Dump(Box<DumpView>),
}

impl Document for BackupView {
    fn schema(&self) -> &'static str {
        "backup/1"
    }
}

impl Document for DumpView {
    fn schema(&self) -> &'static str {
        "dump/1"
    }
}

impl Document for EntryView {
    fn schema(&self) -> &'static str {
        match self {
            EntryView::Full(view) => view.schema(),
            EntryView::Dump(view) => view.schema(),
        }
    }
}

impl EntryView {
    /// `wal`, when given, fills in whether a full backup's WAL is archived.
    pub fn new(
        entry: &Entry,
        layout: &ClusterLayout,
        wal: Option<&ArchiveReport>,
        verification: Option<&Verification>,
        detail: Detail,
    ) -> EntryView {
        let verification = verification.map(|verification| VerificationView::from_survey(verification, detail));
        match entry {
            Entry::Physical(manifest) => {
                EntryView::Full(Box::new(BackupView::new(manifest, layout, wal, verification)))
            }
            Entry::Dump(manifest) => EntryView::Dump(Box::new(DumpView::new(manifest, layout, verification, detail))),
        }
    }
}

impl BackupView {
    pub fn new(
        manifest: &BackupManifest,
        layout: &ClusterLayout,
        wal: Option<&ArchiveReport>,
        verification: Option<VerificationView>,
    ) -> BackupView {
        let (first, last) = (manifest.start_segment(), manifest.stop_segment());
        let missing = wal.map(|wal| wal.first_missing(first, last));
        BackupView {
            id: manifest.id.to_string(),
            kind: manifest.id.kind().as_str(),
            cluster: manifest.cluster.clone(),
            method: manifest.method,
            incremental: manifest.incremental.as_ref().map(|incremental| IncrementalView {
                parent: incremental.parent.to_string(),
                chain: incremental.chain.iter().map(ToString::to_string).collect(),
                changes_from: incremental.changes_from.as_str(),
                fallback_reason: incremental.fallback_reason.clone(),
                changed_blocks: incremental.changed_blocks,
                whole_files: incremental.whole_files,
                unchanged_files: incremental.unchanged_files,
                stored_plaintext_bytes: incremental.stored_plaintext_bytes,
            }),
            manifest: listing::manifest_key(layout, manifest.id).to_string(),
            system_identifier: manifest.system_identifier.to_string(),
            postgres_version: manifest.postgres_version.clone(),
            postgres_version_num: manifest.postgres_version_num,
            wal_segment_size: manifest.wal_segment_size.bytes(),
            timeline: manifest.timeline.id(),
            start_lsn: manifest.start_lsn.to_string(),
            stop_lsn: manifest.stop_lsn.to_string(),
            start_wal: manifest.start_wal.clone(),
            stop_wal: manifest.stop_wal.clone(),
            wal_segments: last.number.saturating_sub(first.number) + 1,
            wal_archived: missing.map(|missing| missing.is_none()),
            wal_first_missing: missing.flatten().map(|segment| segment.name(manifest.wal_segment_size)),
            start_time: manifest.start_time,
            stop_time: manifest.stop_time,
            duration_seconds: round(seconds_between(manifest.start_time, manifest.stop_time), 3),
            label: manifest.label.clone(),
            host: manifest.host.clone(),
            lifeboat_version: manifest.lifeboat_version.clone(),
            tablespaces: manifest.tablespaces.clone(),
            totals: manifest.totals,
            size: manifest.totals.bytes,
            stored_size: manifest.totals.stored_bytes,
            compression_ratio: round(manifest.compression_ratio(), 2),
            verification,
            run: None,
        }
    }

    /// The view `backup` prints of the backup it just took.
    pub fn taken(summary: &BackupSummary, layout: &ClusterLayout, verification: Option<&VerifyReport>) -> BackupView {
        let mut view = BackupView::new(
            &summary.manifest,
            layout,
            None,
            verification.map(|report| VerificationView::just_made(report, layout)),
        );
        view.run = Some(BackupRun {
            backup_seconds: round(summary.backup_duration.as_secs_f64(), 3),
            seconds: round(summary.duration.as_secs_f64(), 3),
            bytes_per_second: round(summary.bytes_per_second(), 0),
            removed_orphans: summary.removed_orphans.iter().map(|orphans| orphans.objects).sum(),
        });
        view
    }
}

impl DumpView {
    pub fn new(
        manifest: &DumpManifest,
        layout: &ClusterLayout,
        verification: Option<VerificationView>,
        detail: Detail,
    ) -> DumpView {
        DumpView {
            id: manifest.id.to_string(),
            kind: "dump",
            cluster: manifest.cluster.clone(),
            manifest: listing::manifest_key(layout, manifest.id).to_string(),
            system_identifier: manifest.system_identifier.to_string(),
            server_version: manifest.server_version.clone(),
            server_version_num: manifest.server_version_num,
            pg_dump_version: manifest.pg_dump_version.clone(),
            start_time: manifest.started_at,
            stop_time: manifest.finished_at,
            duration_seconds: round(seconds_between(manifest.started_at, manifest.finished_at), 3),
            size: manifest.size(),
            stored_size: manifest.stored_size(),
            compression_ratio: round(manifest.compression_ratio(), 2),
            globals: GlobalsView {
                key: manifest.globals.object.key.clone(),
                size: manifest.globals.object.size,
                stored_size: manifest.globals.object.stored_size,
                role_passwords: manifest.globals.role_passwords,
            },
            databases: manifest
                .databases
                .iter()
                .map(|database| DatabaseView {
                    name: database.name.clone(),
                    key: database.object.key.clone(),
                    size: database.object.size,
                    stored_size: database.object.stored_size,
                    start_time: database.started_at,
                    stop_time: database.finished_at,
                    total_rows: database.total_rows(),
                    tables: (detail == Detail::Full).then(|| database.tables.clone()),
                })
                .collect(),
            verification,
        }
    }

    /// The view `dump` prints of the dump it just took.
    pub fn taken(manifest: &DumpManifest, layout: &ClusterLayout, verification: Option<&VerifyReport>) -> DumpView {
        let verification = verification.map(|report| VerificationView::just_made(report, layout));
        DumpView::new(manifest, layout, verification, Detail::Full)
    }
}

impl VerificationView {
    /// What the catalog survey found for a backup or dump.
    pub fn from_survey(verification: &Verification, detail: Detail) -> VerificationView {
        VerificationView {
            status: verification.status.clone(),
            passed: verification.passed,
            verified_at: verification.verified_at,
            reports: verification.reports,
            report: verification.report.clone(),
            recorded: verification.recorded,
            latest: (detail == Detail::Full).then(|| verification.latest.clone()),
        }
    }

    /// The verification `backup --verify` or `dump --verify` just ran (and recorded in the
    /// journal: a verification whose verdict could not be recorded is an error, not a report).
    pub fn just_made(report: &VerifyReport, layout: &ClusterLayout) -> VerificationView {
        VerificationView {
            status: report.status(),
            passed: report.passed,
            verified_at: Some(report.started_at),
            reports: 1,
            report: report.key(layout).to_string(),
            recorded: true,
            latest: Some(Some(report.clone())),
        }
    }
}
