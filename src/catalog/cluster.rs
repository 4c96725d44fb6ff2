//! The cluster record, `clusters/<name>/cluster`: which PostgreSQL cluster a cluster name belongs
//! to, so that WAL or backups from another cluster are never mixed into it.
//!
//! PostgreSQL gives every cluster a random 64-bit system identifier at `initdb`; it is in every
//! WAL segment's first page and in `pg_control`. The first `wal-push` (or backup) records it here
//! with a create-only put, and every later one compares: a re-initialised or different cluster
//! archiving under the same name is refused before it writes anything. The record also keeps the
//! WAL segment size, which WAL file names depend on, so readers (`wal check`, `wal-fetch`) know
//! how to read the names without asking the server.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::journal::{self, JournalError};
use super::layout::ClusterLayout;
use super::listing::{self, Entry};
use super::wal::SegmentSize;
use crate::format::journal_entry::Event;
use crate::repository::{Repository, RepositoryError};
use crate::storage::{PutMode, StorageError};

const FORMAT_NAME: &str = "lifeboat-cluster";
const FORMAT_VERSION: u32 = 1;

/// A PostgreSQL system identifier. Serialised as a decimal string, as `pg_controldata` prints it:
/// it does not fit in a JSON number that every reader handles exactly (doubles hold 53 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SystemIdentifier(pub u64);

impl std::fmt::Display for SystemIdentifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for SystemIdentifier {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SystemIdentifier {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map(SystemIdentifier).map_err(|_| serde::de::Error::custom("not a decimal system identifier"))
    }
}

/// The contents of `clusters/<name>/cluster` (JSON, sealed like every object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterRecord {
    /// Always "lifeboat-cluster".
    pub format: String,
    pub version: u32,
    pub system_identifier: SystemIdentifier,
    /// In bytes.
    pub wal_segment_size: SegmentSize,
    /// PostgreSQL major versions that archived to this cluster name, e.g. `["15"]`.
    pub postgres_versions: Vec<String>,
    /// When lifeboat first saw the cluster (the first push or backup).
    pub first_seen: DateTime<Utc>,
}

/// What a pusher or a backup knows about the cluster it is working for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub system_identifier: SystemIdentifier,
    pub segment_size: SegmentSize,
    /// The major version (`PG_VERSION`), when known.
    pub postgres_version: Option<String>,
    /// For messages: what the identifier was read from, e.g. "WAL segment pg_wal/0000...".
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Boxed, like the next one, to keep results that carry this error small.
    #[error(transparent)]
    OtherCluster(Box<OtherCluster>),

    #[error(transparent)]
    SegmentSizeChanged(Box<SegmentSizeChanged>),

    #[error(
        "{location}: the cluster record {key} cannot be read ({detail}), so the cluster's identity \
         cannot be checked and nothing was stored. If the configured key is right, the object is damaged: \
         move it away and the next wal-push records the identity again"
    )]
    Damaged { location: String, key: String, detail: String },

    #[error(transparent)]
    Journal(Box<JournalError>),

    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Another PostgreSQL cluster (another system identifier) archives under this cluster name.
#[derive(Debug, thiserror::Error)]
#[error(
    "cluster name {cluster:?} in {location} belongs to another PostgreSQL cluster: {key} records \
     system identifier {recorded} (first seen {first_seen}), but {origin} comes from system identifier \
     {found}. Nothing was stored. Give this cluster its own name ([cluster] name) or its own repository \
     (repository.url); if this server was re-created (initdb, pg_upgrade), a new name keeps the old \
     cluster's backups restorable"
)]
pub struct OtherCluster {
    pub cluster: String,
    pub location: String,
    pub key: String,
    pub recorded: SystemIdentifier,
    pub found: SystemIdentifier,
    pub first_seen: String,
    pub origin: String,
}

/// The cluster's WAL segment size is not the recorded one.
#[derive(Debug, thiserror::Error)]
#[error(
    "cluster name {cluster:?} in {location}: {key} records WAL segments of {recorded}, but {origin} \
     has {found} segments (was the segment size changed with pg_resetwal?). Nothing was stored. \
     Archive this cluster under a new [cluster] name: WAL of two segment sizes cannot share one archive"
)]
pub struct SegmentSizeChanged {
    pub cluster: String,
    pub location: String,
    pub key: String,
    pub recorded: SegmentSize,
    pub found: SegmentSize,
    pub origin: String,
}

impl ClusterRecord {
    fn new(observed: &Observed) -> ClusterRecord {
        ClusterRecord {
            format: FORMAT_NAME.to_owned(),
            version: FORMAT_VERSION,
            system_identifier: observed.system_identifier,
            wal_segment_size: observed.segment_size,
            postgres_versions: observed.postgres_version.iter().cloned().collect(),
            first_seen: Utc::now(),
        }
    }

    /// Reads the record; `None` when the cluster has none yet (nothing was ever pushed).
    pub async fn read(repository: &Repository, layout: &ClusterLayout) -> Result<Option<ClusterRecord>, IdentityError> {
        let key = layout.cluster_record();
        let damaged =
            |detail: String| IdentityError::Damaged { location: repository.location(), key: key.to_string(), detail };
        let bytes = match repository.get_bytes(&key).await {
            Ok(bytes) => bytes,
            Err(RepositoryError::Storage(StorageError::NotFound { .. })) => return Ok(None),
            Err(RepositoryError::Object(error)) => return Err(damaged(error.to_string())),
            Err(error) => return Err(error.into()),
        };
        let record: ClusterRecord = serde_json::from_slice(&bytes).map_err(|error| damaged(error.to_string()))?;
        if record.format != FORMAT_NAME || record.version != FORMAT_VERSION {
            return Err(damaged(format!(
                "format {:?} version {}, this lifeboat reads {FORMAT_NAME:?} version {FORMAT_VERSION}",
                record.format, record.version
            )));
        }
        Ok(Some(record))
    }

    /// Checks `observed` against the cluster's record, creating the record if there is none.
    /// Two first pushers racing both create-only: the loser reads the winner's record and compares.
    pub async fn ensure(
        repository: &Repository,
        layout: &ClusterLayout,
        observed: &Observed,
    ) -> Result<ClusterRecord, IdentityError> {
        let key = layout.cluster_record();
        let mut lost_race = false;
        loop {
            if let Some(record) = ClusterRecord::read(repository, layout).await? {
                record.check(&repository.location(), layout, observed)?;
                return record.add_version(repository, layout, observed).await;
            }
            if lost_race {
                return Err(IdentityError::Damaged {
                    location: repository.location(),
                    key: key.to_string(),
                    detail: "it was created by another process and then disappeared".into(),
                });
            }
            // A missing record is not proof that nothing was ever stored: check what the journal and
            // the manifests say before writing one (G9), and record it in the journal first.
            let known = known_identity(repository, layout).await?;
            if let Some(known) = &known {
                known.check(&repository.location(), layout, observed)?;
            }
            let record = ClusterRecord::new(observed);
            let event = Event::Identity {
                system_identifier: record.system_identifier,
                wal_segment_size: record.wal_segment_size,
                recreated: known.is_some(),
            };
            journal::append(repository, layout, event)
                .await
                .map_err(|error| IdentityError::Journal(Box::new(error)))?;
            match repository.put_bytes(&key, record.to_json(), PutMode::CreateOnly).await {
                Ok(_) => {
                    match &known {
                        Some(known) => tracing::warn!(
                            cluster = %layout.name(),
                            system_identifier = %record.system_identifier,
                            "the cluster record {key} was missing; wrote it again, with the identity known from {}",
                            known.source
                        ),
                        None => tracing::info!(
                            cluster = %layout.name(),
                            system_identifier = %record.system_identifier,
                            "first WAL or backup of this cluster: recorded its identity in {key}"
                        ),
                    }
                    return Ok(record);
                }
                Err(RepositoryError::Storage(StorageError::AlreadyExists { .. })) => lost_race = true,
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Refuses `observed` if it comes from another cluster (or the same with another segment size).
    pub fn check(&self, location: &str, layout: &ClusterLayout, observed: &Observed) -> Result<(), IdentityError> {
        let known = KnownIdentity {
            system_identifier: self.system_identifier,
            segment_size: Some(self.wal_segment_size),
            source: layout.cluster_record().to_string(),
            since: self.first_seen,
        };
        known.check(location, layout, observed)
    }

    /// Records a major version not seen before. Rare (the identifier changes with `pg_upgrade`),
    /// and harmless if two writers race: the loser's version is added by its next push.
    async fn add_version(
        mut self,
        repository: &Repository,
        layout: &ClusterLayout,
        observed: &Observed,
    ) -> Result<ClusterRecord, IdentityError> {
        let Some(version) = &observed.postgres_version else { return Ok(self) };
        if self.postgres_versions.contains(version) {
            return Ok(self);
        }
        self.postgres_versions.push(version.clone());
        repository.put_bytes(&layout.cluster_record(), self.to_json(), PutMode::Overwrite).await?;
        Ok(self)
    }

    fn to_json(&self) -> Vec<u8> {
        let mut json = serde_json::to_vec_pretty(self).expect("the cluster record serialises");
        json.push(b'\n');
        json
    }
}

/// The identity of the cluster as its record, the journal or a manifest knows it.
struct KnownIdentity {
    system_identifier: SystemIdentifier,
    /// `None` when only dumps know the cluster (they do not record the segment size).
    segment_size: Option<SegmentSize>,
    /// Where it is known from, for messages.
    source: String,
    since: DateTime<Utc>,
}

impl KnownIdentity {
    /// Refuses `observed` if it comes from another cluster (or the same with another segment
    /// size), naming where the identity is known from.
    fn check(&self, location: &str, layout: &ClusterLayout, observed: &Observed) -> Result<(), IdentityError> {
        if self.system_identifier != observed.system_identifier {
            return Err(IdentityError::OtherCluster(Box::new(OtherCluster {
                cluster: layout.name().to_string(),
                location: location.to_owned(),
                key: self.source.clone(),
                recorded: self.system_identifier,
                found: observed.system_identifier,
                first_seen: self.since.format("%Y-%m-%d %H:%M:%SZ").to_string(),
                origin: observed.source.clone(),
            })));
        }
        if let Some(recorded) = self.segment_size
            && recorded != observed.segment_size
        {
            return Err(IdentityError::SegmentSizeChanged(Box::new(SegmentSizeChanged {
                cluster: layout.name().to_string(),
                location: location.to_owned(),
                key: self.source.clone(),
                recorded,
                found: observed.segment_size,
                origin: observed.source.clone(),
            })));
        }
        Ok(())
    }
}

/// What the journal, else the newest readable backup or dump manifest, says the cluster is.
async fn known_identity(
    repository: &Repository,
    layout: &ClusterLayout,
) -> Result<Option<KnownIdentity>, IdentityError> {
    let view = journal::read(repository, layout).await.map_err(|error| IdentityError::Journal(Box::new(error)))?;
    if let Some(head) = &view.head
        && let Some(identity) = head.state.identity
    {
        return Ok(Some(KnownIdentity {
            system_identifier: identity.system_identifier,
            segment_size: Some(identity.wal_segment_size),
            source: format!(
                "the journal (entry {} under {}; the cluster record is missing)",
                head.seq,
                layout.journal_prefix()
            ),
            since: head.at,
        }));
    }
    let ids = listing::list_ids(repository, layout).await.map_err(RepositoryError::from)?;
    for id in ids.into_iter().rev() {
        let source = format!("the manifest {} (the cluster record is missing)", listing::manifest_key(layout, id));
        match listing::read_manifest(repository, layout, id).await {
            Ok((Entry::Physical(manifest), _)) => {
                return Ok(Some(KnownIdentity {
                    system_identifier: manifest.system_identifier,
                    segment_size: Some(manifest.wal_segment_size),
                    source,
                    since: manifest.start_time,
                }));
            }
            Ok((Entry::Dump(manifest), _)) => {
                return Ok(Some(KnownIdentity {
                    system_identifier: manifest.system_identifier,
                    segment_size: None,
                    source,
                    since: manifest.started_at,
                }));
            }
            Err(_) => continue,
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_is_json_with_a_decimal_identifier() {
        let record = ClusterRecord::new(&Observed {
            system_identifier: SystemIdentifier(7_301_234_567_890_123_456),
            segment_size: SegmentSize::DEFAULT,
            postgres_version: Some("15".into()),
            source: "test".into(),
        });
        let json: serde_json::Value = serde_json::from_slice(&record.to_json()).unwrap();
        assert_eq!(json["format"], "lifeboat-cluster");
        assert_eq!(json["version"], 1);
        assert_eq!(json["system_identifier"], "7301234567890123456");
        assert_eq!(json["wal_segment_size"], 16_777_216);
        assert_eq!(json["postgres_versions"], serde_json::json!(["15"]));
        let back: ClusterRecord = serde_json::from_slice(&record.to_json()).unwrap();
        assert_eq!(back, record);
    }
}
