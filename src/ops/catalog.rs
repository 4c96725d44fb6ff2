//! Reading the catalog, for any caller (the CLI's `list` and `info`, later the daemon): every
//! backup and dump of a cluster with its verification, the WAL archive and every problem found,
//! or one backup or dump in detail, as the views of [`crate::report`]. It only reads, so nothing
//! is audited.

use crate::catalog::audit::{self, Problem};
use crate::catalog::layout::ClusterLayout;
use crate::catalog::listing::{self, Entry};
use crate::catalog::wal::WalFile;
use crate::report::backup::{Detail, EntryView};
use crate::report::catalog::ListView;
use crate::repository::Repository;
use crate::wal::check::{ArchiveReport, check};

use super::OpError;

/// The catalog of the cluster, with what is wrong with it in `problems` (the caller decides how
/// loudly to fail).
pub async fn list(repository: &Repository, layout: &ClusterLayout) -> Result<ListView, OpError> {
    let mut survey = audit::survey(repository, layout).await?;
    let wal = check(repository, layout).await?;
    survey.problems.extend(missing_backup_wal(&survey.entries, &wal, layout));
    Ok(ListView::new(layout, &survey.entries, &survey.verifications, &wal, &survey.problems))
}

/// One backup or dump in detail, and the problems found that concern it.
#[derive(Debug, Clone)]
pub struct Described {
    pub view: EntryView,
    pub problems: Vec<Problem>,
}

/// `id` is an id as `list` shows it, or `latest`.
pub async fn describe(repository: &Repository, layout: &ClusterLayout, id: &str) -> Result<Described, OpError> {
    let id = listing::resolve(repository, layout, id).await?;
    let audit::Survey { entries, verifications, problems } = audit::survey(repository, layout).await?;
    // The survey read every intact manifest; one it left out is read again for its error.
    let entry = match entries.into_iter().find(|entry| entry.id() == id) {
        Some(entry) => entry,
        None => listing::read_entry(repository, layout, id).await?,
    };
    let wal = match &entry {
        Entry::Physical(_) => Some(check(repository, layout).await?),
        Entry::Dump(_) => None,
    };
    let id_text = id.to_string();
    // The problems of this entry, and those of what every entry depends on (the journal, the
    // cluster record, the repository files); not those of other backups, dumps and reports.
    let other_entry = |key: &str| {
        [layout.backups_prefix(), layout.dumps_prefix(), layout.verify_prefix()]
            .iter()
            .any(|prefix| key.starts_with(prefix.as_str()))
    };
    let mut problems: Vec<Problem> = problems
        .into_iter()
        .filter(|problem| problem.key.contains(&id_text) || !other_entry(&problem.key) && !is_wal(layout, &problem.key))
        .collect();
    if let (Some(wal), Entry::Physical(_)) = (&wal, &entry) {
        problems.extend(missing_backup_wal(std::slice::from_ref(&entry), wal, layout));
    }
    Ok(Described { view: EntryView::new(&entry, layout, wal.as_ref(), verifications.get(&id), Detail::Full), problems })
}

/// Whether a problem's key is a WAL file's: those concern the backups that need them.
fn is_wal(layout: &ClusterLayout, key: &str) -> bool {
    key.starts_with(layout.wal_prefix().as_str())
}

/// A segment a listed full backup needs to reach consistency that is not archived: without it
/// the backup cannot be restored, whatever else is there.
fn missing_backup_wal(entries: &[Entry], wal: &ArchiveReport, layout: &ClusterLayout) -> Vec<Problem> {
    entries
        .iter()
        .filter_map(|entry| match entry {
            Entry::Physical(manifest) => Some(manifest),
            Entry::Dump(_) => None,
        })
        .filter_map(|manifest| {
            let missing = wal.first_missing(manifest.start_segment(), manifest.stop_segment())?;
            Some(Problem {
                key: layout.wal_file(&WalFile::Segment(missing), manifest.wal_segment_size).to_string(),
                detail: format!(
                    "is missing, and backup {} needs it (its WAL runs from {} to {}): that backup cannot be restored",
                    manifest.id, manifest.start_wal, manifest.stop_wal
                ),
            })
        })
        .collect()
}
