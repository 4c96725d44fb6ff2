//! S3 Object Lock: writing objects with a retention date, and deleting on a bucket that keeps
//! versions.
//!
//! The store stays ignorant of the repository layout: whoever builds it says how each key is
//! written ([`LockScope`], answering a [`Retain`]): under retention and never overwritten (backups,
//! WAL), under retention on every version (lifeboat.repo, which `key add` rewrites and which no one
//! must be able to destroy), or plainly (leases, which lifeboat deletes as routine).
//!
//! Object Lock needs a versioned bucket, where a plain DeleteObject only adds a delete marker: the
//! object disappears from listings (and a backup with it) while its bytes stay, retained and
//! billed. So a lock-configured store deletes for real: it reads the retention of every version of
//! the key first, refuses with [`StorageError::Locked`] (touching nothing) while any is retained,
//! and otherwise removes every version and delete marker of exactly that key.

use std::fmt;
use std::sync::Arc;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::DateTime as S3DateTime;
use aws_sdk_s3::types::ObjectLockEnabled;
use chrono::{DateTime, TimeDelta, Utc};

use super::{S3Store, http_status};
use crate::storage::{ObjectKey, StorageError};

/// `governance` or `compliance`, as S3 defines them (see docs/object-lock.md for what each
/// protects against).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectLockMode {
    /// Users with `s3:BypassGovernanceRetention` can still delete or shorten the retention.
    Governance,
    /// Nobody, the account's root user included, can delete a version or shorten its retention
    /// before the date.
    Compliance,
}

impl ObjectLockMode {
    /// The configuration file's spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            ObjectLockMode::Governance => "governance",
            ObjectLockMode::Compliance => "compliance",
        }
    }

    fn sdk(self) -> aws_sdk_s3::types::ObjectLockMode {
        match self {
            ObjectLockMode::Governance => aws_sdk_s3::types::ObjectLockMode::Governance,
            ObjectLockMode::Compliance => aws_sdk_s3::types::ObjectLockMode::Compliance,
        }
    }

    fn sdk_retention(self) -> aws_sdk_s3::types::ObjectLockRetentionMode {
        match self {
            ObjectLockMode::Governance => aws_sdk_s3::types::ObjectLockRetentionMode::Governance,
            ObjectLockMode::Compliance => aws_sdk_s3::types::ObjectLockRetentionMode::Compliance,
        }
    }
}

/// `repository.s3.object_lock`: the mode and how long each object is retained after it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    pub mode: ObjectLockMode,
    pub days: u32,
}

impl ObjectLock {
    /// One day to a hundred years (S3's own bound for a bucket's default retention).
    pub const DAYS: std::ops::RangeInclusive<u32> = 1..=36_500;

    fn retain_until(&self) -> DateTime<Utc> {
        Utc::now() + TimeDelta::days(i64::from(self.days))
    }
}

/// How a lock-configured store writes one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retain {
    /// Without retention: what lifeboat deletes as routine (a retained lease could never be
    /// released).
    No,
    /// Under retention, written once: an overwrite is refused, since it would only add a version.
    Once,
    /// Under retention, each version: objects lifeboat rewrites in place but never deletes. Every
    /// overwrite adds a version, retained as long as the first.
    EveryVersion,
}

/// How a lock-configured store writes each key. Given by the layer that knows the repository
/// layout (`catalog::layout::retain`).
pub type LockScope = Arc<dyn Fn(&ObjectKey) -> Retain + Send + Sync>;

/// What a lock-configured store holds: the retention to apply and where.
#[derive(Clone)]
pub(super) struct Locking {
    lock: ObjectLock,
    scope: LockScope,
}

impl fmt::Debug for Locking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Locking").field("lock", &self.lock).finish_non_exhaustive()
    }
}

/// The retention headers of one write: mode and retain-until date.
pub(super) struct Retention {
    pub mode: aws_sdk_s3::types::ObjectLockMode,
    pub until: S3DateTime,
    lock: ObjectLock,
    until_utc: DateTime<Utc>,
}

/// Why a bucket cannot hold a lock-configured repository (`lifeboat init` checks it).
#[derive(Debug, thiserror::Error)]
pub enum ObjectLockError {
    #[error(
        "{location}: bucket {bucket:?} does not have Object Lock enabled, so repository.s3.object_lock \
         cannot make backups immutable there; create a bucket with Object Lock enabled (e.g. `aws s3api \
         create-bucket --bucket <name> --object-lock-enabled-for-bucket`) and point repository.url at it, \
         or remove object_lock from [repository.s3]"
    )]
    NotEnabled { location: String, bucket: String },

    #[error(
        "{location}: bucket {bucket:?} applies a default retention ({rule}) to every object written, \
         which would also lock lifeboat's leases (deleted on release) and stop every later backup; \
         remove the bucket's default retention (`aws s3api put-object-lock-configuration --bucket \
         {bucket} --object-lock-configuration '{{\"ObjectLockEnabled\":\"Enabled\"}}'`): lifeboat sets \
         retention itself on backups, dumps and WAL"
    )]
    DefaultRetention { location: String, bucket: String, rule: String },

    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl S3Store {
    /// Writes the keys `scope` selects with `lock`'s mode and a retention date `lock.days` after
    /// each write, and deletes on this store as the module documentation says. The bucket must
    /// have Object Lock enabled ([`S3Store::check_object_lock`]).
    pub fn with_object_lock(mut self, lock: ObjectLock, scope: LockScope) -> S3Store {
        self.locking = Some(Locking { lock, scope });
        self
    }

    /// The configured Object Lock, if any.
    pub fn object_lock(&self) -> Option<ObjectLock> {
        self.locking.as_ref().map(|locking| locking.lock)
    }

    /// Checks that the bucket can honour the configured lock: Object Lock enabled, and no default
    /// retention that would lock the objects lifeboat must be able to delete.
    pub async fn check_object_lock(&self) -> Result<(), ObjectLockError> {
        let bucket = self.bucket.clone();
        let not_enabled = || ObjectLockError::NotEnabled { location: self.location.clone(), bucket: bucket.clone() };
        let output = match self.client.get_object_lock_configuration().bucket(&self.bucket).send().await {
            Ok(output) => output,
            Err(error)
                if error.code() == Some("ObjectLockConfigurationNotFoundError")
                    || (http_status(&error) == Some(404) && error.code() != Some("NoSuchBucket")) =>
            {
                return Err(not_enabled());
            }
            Err(error) => return Err(self.classify("check Object Lock of", &self.bucket, error).into()),
        };
        self.bucket_exists();
        let Some(configuration) = output.object_lock_configuration() else {
            return Err(not_enabled());
        };
        if configuration.object_lock_enabled() != Some(&ObjectLockEnabled::Enabled) {
            return Err(not_enabled());
        }
        if let Some(default) = configuration.rule().and_then(|rule| rule.default_retention()) {
            let mode = default.mode().map_or("no mode", |mode| mode.as_str()).to_lowercase();
            let period = match (default.days().filter(|days| *days > 0), default.years().filter(|years| *years > 0)) {
                (Some(days), _) => format!("{days} days"),
                (None, Some(years)) => format!("{years} years"),
                (None, None) => "no period".to_owned(),
            };
            return Err(ObjectLockError::DefaultRetention {
                location: self.location.clone(),
                bucket,
                rule: format!("{mode}, {period}"),
            });
        }
        Ok(())
    }

    /// The retention to write `key` with, when this store locks it.
    pub(super) fn retention_for(&self, key: &ObjectKey) -> Option<Retention> {
        let locking = self.locking.as_ref().filter(|locking| (locking.scope)(key) != Retain::No)?;
        let until_utc = locking.lock.retain_until();
        Some(Retention {
            mode: locking.lock.mode.sdk(),
            until: S3DateTime::from_secs(until_utc.timestamp()),
            lock: locking.lock,
            until_utc,
        })
    }

    /// Whether `key` is written once under retention, and so never overwritten.
    pub(super) fn written_once(&self, key: &ObjectKey) -> bool {
        self.locking.as_ref().is_some_and(|locking| (locking.scope)(key) == Retain::Once)
    }

    /// Makes sure the object a multipart upload just completed carries its retention. AWS applies
    /// the headers given to CreateMultipartUpload; some S3-compatible servers (moto among them)
    /// ignore them there, and an object believed immutable that is not would be worse than an
    /// error. One HeadObject; PutObjectRetention only when the date is missing or short.
    pub(super) async fn confirm_retention(
        &self,
        key: &ObjectKey,
        version: Option<&str>,
        retention: &Retention,
    ) -> Result<(), StorageError> {
        let wanted = retention.until_utc.timestamp();
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.s3_key(key))
            .set_version_id(version.map(str::to_owned))
            .send()
            .await
            .map_err(|error| self.classify("put", key.as_str(), error))?;
        if head.object_lock_retain_until_date().is_some_and(|until| until.secs() >= wanted) {
            return Ok(());
        }
        let applied = aws_sdk_s3::types::ObjectLockRetention::builder()
            .mode(retention.lock.mode.sdk_retention())
            .retain_until_date(retention.until)
            .build();
        self.client
            .put_object_retention()
            .bucket(&self.bucket)
            .key(self.s3_key(key))
            .set_version_id(version.map(str::to_owned))
            .retention(applied)
            .send()
            .await
            .map_err(|error| self.classify("put", key.as_str(), error))?;
        Ok(())
    }

    /// Until when one version of `key` (the current one for `None`) is retained; `None` when it
    /// is not, its date has passed, or there is no such object.
    pub(super) async fn retained_until(
        &self,
        key: &ObjectKey,
        version: Option<&str>,
    ) -> Result<Option<DateTime<Utc>>, StorageError> {
        let request = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.s3_key(key))
            .set_version_id(version.map(str::to_owned));
        let head = match request.send().await {
            Ok(head) => head,
            // 404: no object, or a delete marker is the current version. 405: the version asked
            // for is itself a delete marker.
            Err(error) if matches!(http_status(&error), Some(404 | 405)) => {
                self.confirm_bucket().await?;
                return Ok(None);
            }
            Err(error) => return Err(self.classify("read the retention of", key.as_str(), error)),
        };
        self.bucket_exists();
        let until = head
            .object_lock_retain_until_date()
            .and_then(|until| DateTime::<Utc>::from_timestamp(until.secs(), until.subsec_nanos()));
        Ok(until.filter(|until| *until > Utc::now()))
    }

    /// Deletes every version and delete marker of exactly `key`, unless one is still retained.
    pub(super) async fn delete_versions(&self, key: &ObjectKey) -> Result<(), StorageError> {
        let s3_key = self.s3_key(key);
        // (version id, is a delete marker, is the current version)
        let mut versions: Vec<(String, bool, bool)> = Vec::new();
        let (mut key_marker, mut version_marker) = (None, None);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(&s3_key)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|error| self.classify("delete", key.as_str(), error))?;
            self.bucket_exists();
            // The prefix also matches longer keys (`wal/…1` and `wal/…1.partial`): exact matches only.
            for version in page.versions().iter().filter(|version| version.key() == Some(s3_key.as_str())) {
                if let Some(id) = version.version_id() {
                    versions.push((id.to_owned(), false, version.is_latest() == Some(true)));
                }
            }
            for marker in page.delete_markers().iter().filter(|marker| marker.key() == Some(s3_key.as_str())) {
                if let Some(id) = marker.version_id() {
                    versions.push((id.to_owned(), true, marker.is_latest() == Some(true)));
                }
            }
            match (page.is_truncated(), page.next_key_marker()) {
                // Past the key itself, the listing holds only longer keys.
                (Some(true), Some(next)) if next <= s3_key.as_str() => {
                    key_marker = Some(next.to_owned());
                    version_marker = page.next_version_id_marker().map(str::to_owned);
                }
                _ => break,
            }
        }

        let mut locked: Option<DateTime<Utc>> = None;
        for (version, _, _) in versions.iter().filter(|(_, marker, _)| !marker) {
            if let Some(until) = self.retained_until(key, Some(version)).await? {
                locked = Some(locked.map_or(until, |other| other.max(until)));
            }
        }
        if let Some(until) = locked {
            return Err(StorageError::Locked { location: self.location.clone(), key: key.clone(), until });
        }

        // Older versions first and the current one last, so that a delete cut short leaves the
        // object as it was rather than an older version in its place.
        versions.sort_by_key(|(_, _, current)| *current);
        for (version, _, _) in versions {
            let deleted =
                self.client.delete_object().bucket(&self.bucket).key(&s3_key).version_id(&version).send().await;
            match deleted {
                Ok(_) => {}
                // Removed by someone else since it was listed.
                Err(error) if matches!(error.code(), Some("NoSuchVersion" | "NoSuchKey")) => {}
                Err(error) => return Err(self.classify("delete", key.as_str(), error)),
            }
        }
        Ok(())
    }
}
