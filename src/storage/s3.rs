//! The S3 backend (aws-sdk-s3): AWS and S3-compatible servers (MinIO, Ceph, R2, moto, s3s-fs).
//!
//! This module owns everything S3-specific behind [`ObjectStore`]: building the SDK client from
//! [`S3Settings`] (endpoint, region, credentials, retries, timeouts), mapping repository keys to
//! bucket keys under the configured prefix, streaming puts (a single PutObject for small bodies, a
//! bounded-memory multipart upload for large ones, aborted on any failure), conditional create-only
//! writes, ranged gets whose bodies resume after a dropped connection (`resume`), paginated
//! listing, Object Lock retention on the keys its builder selects and real deletes on a versioned
//! bucket (`lock`), and turning SDK errors into [`StorageError`]s an operator can act on. Credentials never
//! leave the SDK's credential provider: errors, logs and `Debug` output name the bucket and the
//! endpoint only (G5).

mod lock;
mod resume;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, StorageClass};
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;

use self::lock::Locking;
pub use self::lock::{LockScope, ObjectLock, ObjectLockError, ObjectLockMode, Retain};
use self::resume::{Backoff, Reopen, Reopening, ResumingReader, check_resumed};
use super::{ByteReader, ObjectKey, ObjectMeta, ObjectStore, PutMode, StorageError, Swept};
use crate::secret::Secret;

/// Everything the S3 backend needs, resolved from `[repository]` and `[repository.s3]`.
/// `Debug` shows no secret: credentials print redacted, and an endpoint URL without its user-info.
#[derive(Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix inside the bucket without leading or trailing `/`; empty for the bucket root.
    pub prefix: String,
    /// `None` means AWS's regional endpoint.
    pub endpoint: Option<String>,
    pub region: String,
    /// Path-style addressing (`http://host/bucket/key`), which most S3-compatible servers need.
    pub force_path_style: bool,
    /// e.g. `STANDARD_IA`; `None` leaves the bucket's default.
    pub storage_class: Option<String>,
    /// Static credentials from the configuration; `None` uses the standard AWS chain
    /// (environment, profile, web identity, instance metadata).
    pub credentials: Option<S3Credentials>,
    /// Bodies larger than this go up as multipart uploads of parts this size. Bounds memory: a put
    /// holds at most three parts (two uploading, one being read). S3 allows 10,000 parts, so parts
    /// double in size every 2,000 parts (see [`part_size_for`]): about 970 GiB fit with the 16 MiB
    /// default, and memory grows only for objects that large. Values below
    /// [`S3Settings::MIN_PART_SIZE`] are raised to it.
    pub part_size: usize,
    /// Attempts per request, including the first, for throttling, 5xx and transport errors.
    pub max_attempts: u32,
}

#[derive(Debug, Clone)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint.as_deref().map(without_userinfo))
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field("storage_class", &self.storage_class)
            .field("credentials", &self.credentials)
            .field("part_size", &self.part_size)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

impl S3Settings {
    pub const DEFAULT_PART_SIZE: usize = 16 * 1024 * 1024;
    /// S3's minimum part size for every part but the last.
    pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
}

/// S3's limit on the number of parts in one multipart upload.
const MAX_PARTS: i32 = 10_000;
/// Parts keep the configured size for this many parts, then double, five times at most.
const PARTS_PER_SIZE_STEP: i32 = 2_000;
/// S3's largest allowed part.
const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;

/// The size of part `part_number` (1-based) for a configured `base` size: the base for the first
/// 2,000 parts, then twice that for the next 2,000, and so on, so one object can be about
/// 31 × 2,000 × base (970 GiB for 16 MiB) while small and medium objects keep the memory bound.
fn part_size_for(base: usize, part_number: i32) -> usize {
    let step = ((part_number.max(1) - 1) / PARTS_PER_SIZE_STEP).min(4) as u32;
    (base << step).min(MAX_PART_SIZE)
}

/// Parts uploading at once. Two keep the connection busy while the next part is read from the body,
/// and with the part being filled bound a put's memory to three parts.
const PARTS_IN_FLIGHT: usize = 2;

/// An endpoint that does not accept a TCP connection within this long is reported unreachable
/// (per attempt) instead of leaving the caller hanging on a black-holed address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bound for one attempt of a request without a large body (head, list, delete, the start
/// of a get, creating and completing multipart uploads): a server that accepts the connection but
/// never answers must not hang a backup.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Uploads get [`REQUEST_TIMEOUT`] plus the time to send their body at this rate, so a slow but
/// working link still completes a part while a dead one is retried in bounded time.
const SLOWEST_UPLOAD_BYTES_PER_SECOND: u64 = 128 * 1024;

/// Error codes (and the 403 status) that mean the credentials or the policy refuse the request.
const ACCESS_DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidToken",
    "NotSignedUp",
    "SignatureDoesNotMatch",
    "TokenRefreshRequired",
];

/// Error codes worth another attempt later even though the SDK's own retries gave up.
const RETRYABLE_CODES: &[&str] = &[
    "InternalError",
    "RequestLimitExceeded",
    "RequestTimeout",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "TooManyRequests",
];

/// What a spawned part upload hands back: its part number and the SDK's answer.
type PartOutcome = (
    i32,
    Result<
        aws_sdk_s3::operation::upload_part::UploadPartOutput,
        SdkError<aws_sdk_s3::operation::upload_part::UploadPartError>,
    >,
);

/// An [`ObjectStore`] in one S3 bucket, under an optional key prefix.
pub struct S3Store {
    client: Client,
    bucket: String,
    /// `settings.prefix` plus a trailing `/`, or empty: prepended to every key, stripped from listings.
    key_prefix: String,
    /// `s3://bucket/prefix`, for messages.
    location: String,
    /// The endpoint as shown in messages (without any user-info part of the URL).
    endpoint: String,
    region: String,
    storage_class: Option<StorageClass>,
    part_size: usize,
    /// `max-keys` for ListObjectsV2; `None` lets the server choose (1,000 on AWS).
    list_page_size: Option<i32>,
    /// The SDK's retry budget and backoff, applied to object bodies that drop mid-stream.
    body_backoff: Backoff,
    /// Set once any request proved the bucket exists. Until then a 404 from head or get is
    /// double-checked with HeadBucket (see [`S3Store::confirm_bucket`]) so a wrong bucket name is
    /// reported as such rather than as a missing object.
    bucket_seen: AtomicBool,
    /// Object Lock retention for the keys its scope selects; `None` writes and deletes plainly.
    locking: Option<Locking>,
}

impl fmt::Debug for S3Store {
    // Written by hand so the SDK client (which holds the credential provider) is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("location", &self.location)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("storage_class", &self.storage_class)
            .field("part_size", &self.part_size)
            .field("locking", &self.locking)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Builds the client. No request is made, so a store can be created while the endpoint is down;
    /// the first operation reports what is wrong. Fails only for an endpoint that is not an
    /// `http://` or `https://` URL.
    pub async fn connect(settings: S3Settings) -> Result<S3Store, StorageError> {
        let prefix = settings.prefix.trim_matches('/').to_owned();
        let location = if prefix.is_empty() {
            format!("s3://{}", settings.bucket)
        } else {
            format!("s3://{}/{}", settings.bucket, prefix)
        };
        let endpoint = match &settings.endpoint {
            Some(endpoint) => without_userinfo(endpoint),
            None => format!("https://s3.{}.amazonaws.com", settings.region),
        };
        if let Some(configured) = &settings.endpoint
            && !(configured.starts_with("http://") || configured.starts_with("https://"))
        {
            return Err(StorageError::Unreachable {
                location,
                endpoint,
                detail: "the endpoint is not an http:// or https:// URL".to_owned(),
            });
        }

        // Standard mode: exponential backoff with jitter on throttling, 5xx, timeouts and
        // transport errors, guarded by a retry quota so an outage does not multiply traffic.
        let retry = RetryConfig::standard().with_max_attempts(settings.max_attempts.max(1));
        let body_backoff =
            Backoff { max_attempts: retry.max_attempts(), initial: retry.initial_backoff(), max: retry.max_backoff() };
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .retry_config(retry)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(REQUEST_TIMEOUT)
                    .build(),
            );
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(credentials) = &settings.credentials {
            loader = loader.credentials_provider(Credentials::new(
                credentials.access_key_id.clone(),
                credentials.secret_access_key.expose(),
                credentials.session_token.as_ref().map(|token| token.expose().to_owned()),
                None,
                "lifeboat-configuration",
            ));
        }
        let sdk = loader.load().await;
        let config = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(settings.force_path_style).build();

        Ok(S3Store {
            client: Client::from_conf(config),
            bucket: settings.bucket,
            key_prefix: if prefix.is_empty() { String::new() } else { format!("{prefix}/") },
            location,
            endpoint,
            region: settings.region,
            storage_class: settings.storage_class.as_deref().map(StorageClass::from),
            part_size: settings.part_size.max(S3Settings::MIN_PART_SIZE),
            list_page_size: None,
            body_backoff,
            bucket_seen: AtomicBool::new(false),
            locking: None,
        })
    }

    /// Lists in pages of `page_size` keys instead of the server's default (1,000 on AWS), so tests
    /// can exercise pagination without creating thousands of objects.
    #[doc(hidden)]
    pub fn with_list_page_size(mut self, page_size: i32) -> S3Store {
        self.list_page_size = Some(page_size.max(1));
        self
    }

    fn s3_key(&self, key: &ObjectKey) -> String {
        format!("{}{}", self.key_prefix, key.as_str())
    }

    fn bucket_exists(&self) {
        self.bucket_seen.store(true, Ordering::Relaxed);
    }

    fn not_found(&self, key: &ObjectKey) -> StorageError {
        StorageError::NotFound { location: self.location.clone(), key: key.clone() }
    }

    fn already_exists(&self, key: &ObjectKey) -> StorageError {
        StorageError::AlreadyExists { location: self.location.clone(), key: key.clone() }
    }

    fn body_error(&self, key: &ObjectKey, source: std::io::Error) -> StorageError {
        StorageError::Io { location: self.location.clone(), operation: "put", key: key.to_string(), source }
    }

    fn service_error(&self, operation: &'static str, key: &str, detail: String, retryable: bool) -> StorageError {
        StorageError::Service { location: self.location.clone(), operation, key: key.to_owned(), detail, retryable }
    }

    /// Turns an SDK failure into a [`StorageError`]. Only error codes, server messages, HTTP
    /// statuses and transport errors are copied into the result, none of which carry credentials.
    fn classify<E>(&self, operation: &'static str, key: &str, error: SdkError<E>) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match &error {
            SdkError::DispatchFailure(_) => {
                let detail = error_chain(&error);
                // The SDK loads credentials lazily, at the first request; when the standard chain
                // finds none, that surfaces here, before anything is sent.
                if detail.contains("credentials") {
                    return StorageError::NoCredentials { location: self.location.clone(), detail };
                }
                // Connection refused, DNS or TLS failure, connect timeout: the request never got an
                // answer, which is almost always a wrong endpoint or a server that is down.
                return StorageError::Unreachable {
                    location: self.location.clone(),
                    endpoint: self.endpoint.clone(),
                    detail,
                };
            }
            SdkError::TimeoutError(_) => {
                return self.service_error(
                    operation,
                    key,
                    format!("no answer from {} in time (after all retries)", self.endpoint),
                    true,
                );
            }
            SdkError::ConstructionFailure(_) => {
                return self.service_error(operation, key, error_chain(&error), false);
            }
            // The connection dropped while the response was being read (or it arrived garbled):
            // the SDK retried it as transient, and it stays worth another attempt later.
            SdkError::ResponseError(_) => {
                let detail = format!(
                    "the response from {} was cut short (after all retries): {}",
                    self.endpoint,
                    error_chain(&error)
                );
                return self.service_error(operation, key, detail, true);
            }
            _ => {}
        }
        let status = http_status(&error);
        let code = error.code();
        if code == Some("NoSuchBucket") {
            return StorageError::BucketMissing { location: self.location.clone(), bucket: self.bucket.clone() };
        }
        if code.is_some_and(|code| ACCESS_DENIED_CODES.contains(&code)) || status == Some(403) {
            return StorageError::AccessDenied {
                location: self.location.clone(),
                // The code alone: it says what is wrong (unknown key id, bad signature, policy)
                // without echoing anything from the request.
                detail: match (code, status) {
                    (Some(code), _) => code.to_owned(),
                    (None, Some(status)) => format!("HTTP {status}"),
                    (None, None) => "no error code".to_owned(),
                },
            };
        }
        // 501 Not Implemented will not go away by asking again.
        let retryable = status.is_some_and(|status| (status >= 500 && status != 501) || status == 429)
            || code.is_some_and(|code| RETRYABLE_CODES.contains(&code));
        let detail = match (code, error.message(), status) {
            (Some(code), Some(message), Some(status)) => format!("{code}: {message} (HTTP {status})"),
            (Some(code), None, Some(status)) => format!("{code} (HTTP {status})"),
            (None, _, Some(status)) => format!("HTTP {status}: {}", error_chain(&error)),
            (_, _, None) => error_chain(&error),
        };
        self.service_error(operation, key, detail, retryable)
    }

    /// Timeout override for a request carrying `length` body bytes (see [`SLOWEST_UPLOAD_BYTES_PER_SECOND`]).
    fn upload_timeout(length: usize) -> aws_sdk_s3::config::Builder {
        let seconds = REQUEST_TIMEOUT.as_secs() + length as u64 / SLOWEST_UPLOAD_BYTES_PER_SECOND;
        aws_sdk_s3::config::Builder::new()
            .timeout_config(TimeoutConfig::builder().operation_attempt_timeout(Duration::from_secs(seconds)).build())
    }

    /// When a request said 404 and none has yet shown that the bucket exists, asks the bucket
    /// itself, so a typo in the bucket name is not mistaken for a missing object. HeadObject's
    /// 404 has no body to tell the two apart, and some servers answer NoSuchKey for both.
    async fn confirm_bucket(&self) -> Result<(), StorageError> {
        if self.bucket_seen.load(Ordering::Relaxed) {
            return Ok(());
        }
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => {
                self.bucket_exists();
                Ok(())
            }
            Err(error) if http_status(&error) == Some(404) => {
                Err(StorageError::BucketMissing { location: self.location.clone(), bucket: self.bucket.clone() })
            }
            // A 403 here usually means the policy lacks s3:ListBucket; the 404 from HeadObject
            // already answered the question asked, so do not turn it into an error.
            Err(_) => Ok(()),
        }
    }

    /// The error for a get that found no object: NotFound, unless the bucket itself is missing
    /// (AWS says NoSuchBucket right away; s3s-fs answers NoSuchKey for both).
    async fn missing_object(&self, key: &ObjectKey) -> StorageError {
        match self.confirm_bucket().await {
            Ok(()) => self.not_found(key),
            Err(error) => error,
        }
    }

    /// The body of a GetObject response holding the object's bytes from `start`, as a reader that
    /// asks for the rest with a ranged GET, pinned to this response's ETag, when the connection
    /// drops mid-body (see `resume`). Without an ETag nothing could tell a replaced object from
    /// the one being read, so such a body is handed out as it is.
    fn resuming_body(&self, key: &ObjectKey, output: GetObjectOutput, start: u64) -> ByteReader {
        let end = output.content_length().and_then(|length| u64::try_from(length).ok()).map(|length| start + length);
        let Some(etag) = output.e_tag().map(str::to_owned) else {
            return Box::new(output.body.into_async_read());
        };
        let source =
            S3Resume { client: self.client.clone(), bucket: self.bucket.clone(), s3_key: self.s3_key(key), etag };
        Box::new(ResumingReader::new(
            Box::new(output.body.into_async_read()),
            start,
            end,
            self.body_backoff,
            Arc::new(source),
        ))
    }

    async fn put_single(&self, key: &ObjectKey, data: Bytes, mode: PutMode) -> Result<(), StorageError> {
        let length = data.len();
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.s3_key(key))
            .set_storage_class(self.storage_class.clone())
            // A body built from `Bytes` is replayable, so the SDK can retry it.
            .body(ByteStream::from(data));
        if mode == PutMode::CreateOnly {
            request = request.if_none_match("*");
        }
        if let Some(retention) = self.retention_for(key) {
            // AWS wants a checksum on every write that sets a retention.
            request = request
                .object_lock_mode(retention.mode)
                .object_lock_retain_until_date(retention.until)
                .checksum_algorithm(ChecksumAlgorithm::Crc32);
        }
        match request.customize().config_override(Self::upload_timeout(length)).send().await {
            Ok(_) => {
                self.bucket_exists();
                Ok(())
            }
            Err(error) if mode == PutMode::CreateOnly && is_precondition_failure(&error) => {
                Err(self.already_exists(key))
            }
            Err(error) => Err(self.classify("put", key.as_str(), error)),
        }
    }

    async fn put_multipart(
        &self,
        key: &ObjectKey,
        first: Bytes,
        second: Bytes,
        body: &mut ByteReader,
        mode: PutMode,
    ) -> Result<(), StorageError> {
        let s3_key = self.s3_key(key);
        let retention = self.retention_for(key);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&s3_key)
            .set_storage_class(self.storage_class.clone())
            // Declared up front so S3 keeps each part's CRC32 and checks them again on completion.
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .set_object_lock_mode(retention.as_ref().map(|retention| retention.mode.clone()))
            .set_object_lock_retain_until_date(retention.as_ref().map(|retention| retention.until))
            .send()
            .await
            .map_err(|error| self.classify("put", key.as_str(), error))?;
        self.bucket_exists();
        let Some(upload_id) = created.upload_id().map(str::to_owned) else {
            return Err(self.service_error(
                "put",
                key.as_str(),
                "CreateMultipartUpload returned no upload id".into(),
                true,
            ));
        };
        tracing::debug!(location = %self.location, %key, %upload_id, "multipart upload started");
        let mut guard = AbortOnDrop {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: s3_key.clone(),
            upload_id: upload_id.clone(),
            armed: true,
        };
        let result = self.upload_parts_and_complete(key, &s3_key, &upload_id, first, second, body, mode).await;
        match result {
            Ok(version) => {
                guard.armed = false;
                tracing::debug!(location = %self.location, %key, %upload_id, "multipart upload completed");
                match &retention {
                    Some(retention) => self.confirm_retention(key, version.as_deref(), retention).await,
                    None => Ok(()),
                }
            }
            Err(error) => {
                // Parts of an unfinished upload are invisible but billed; remove them now rather
                // than leave them to a bucket lifecycle rule.
                guard.abort().await;
                Err(error)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_parts_and_complete(
        &self,
        key: &ObjectKey,
        s3_key: &str,
        upload_id: &str,
        first: Bytes,
        second: Bytes,
        body: &mut ByteReader,
        mode: PutMode,
    ) -> Result<Option<String>, StorageError> {
        // Dropping the set (on error or cancellation) aborts the uploads still running.
        let mut uploads = JoinSet::new();
        let mut completed = Vec::new();
        let mut part_number: i32 = 0;
        let mut data = first;
        let mut read_ahead = Some(second);
        loop {
            part_number += 1;
            if part_number > MAX_PARTS {
                return Err(self.service_error(
                    "put",
                    key.as_str(),
                    format!(
                        "the object is larger than S3's limit of {MAX_PARTS} parts (growing from {} MiB); \
                         raise repository.s3.part_size_mib",
                        self.part_size >> 20
                    ),
                    false,
                ));
            }
            if uploads.len() >= PARTS_IN_FLIGHT {
                completed.push(self.finish_part(key, uploads.join_next().await).await?);
            }
            let request = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(s3_key)
                .upload_id(upload_id)
                .part_number(part_number)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .content_length(data.len() as i64)
                .body(ByteStream::from(data.clone()))
                .customize()
                .config_override(Self::upload_timeout(data.len()));
            uploads.spawn(async move { (part_number, request.send().await) });
            data = match read_ahead.take() {
                Some(next) => next,
                None => {
                    let next_size = part_size_for(self.part_size, part_number + 1);
                    let next = read_part(body, next_size).await.map_err(|error| self.body_error(key, error))?;
                    if next.is_empty() {
                        break;
                    }
                    next.freeze()
                }
            };
        }
        while !uploads.is_empty() {
            completed.push(self.finish_part(key, uploads.join_next().await).await?);
        }
        completed.sort_by_key(|part| part.part_number());

        let mut request = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(s3_key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build());
        if mode == PutMode::CreateOnly {
            request = request.if_none_match("*");
        }
        match request.send().await {
            // The version id, on a versioned bucket: retention is confirmed on exactly this version.
            Ok(output) => Ok(output.version_id),
            Err(error) if mode == PutMode::CreateOnly && is_precondition_failure(&error) => {
                Err(self.already_exists(key))
            }
            Err(error) => Err(self.classify("put", key.as_str(), error)),
        }
    }

    async fn finish_part(
        &self,
        key: &ObjectKey,
        joined: Option<Result<PartOutcome, tokio::task::JoinError>>,
    ) -> Result<CompletedPart, StorageError> {
        match joined {
            Some(Ok((part_number, Ok(output)))) => Ok(CompletedPart::builder()
                .part_number(part_number)
                .set_e_tag(output.e_tag)
                .set_checksum_crc32(output.checksum_crc32)
                .build()),
            Some(Ok((_, Err(error)))) => Err(self.classify("put", key.as_str(), error)),
            Some(Err(error)) => {
                Err(self.service_error("put", key.as_str(), format!("part upload task failed: {error}"), false))
            }
            None => Err(self.service_error("put", key.as_str(), "no part upload to wait for".into(), false)),
        }
    }
}

/// Where a GetObject body that dropped mid-stream gets the rest of its bytes: a ranged GetObject
/// with `If-Match` on the first response's ETag, so that an object replaced in between is an
/// error rather than a splice of two versions. The request goes through the SDK and so gets its
/// retries and backoff like any other.
struct S3Resume {
    client: Client,
    bucket: String,
    s3_key: String,
    etag: String,
}

impl Reopen for S3Resume {
    fn reopen(&self, from: u64, end: Option<u64>) -> Reopening {
        let range = match end {
            Some(end) => format!("bytes={from}-{}", end - 1),
            None => format!("bytes={from}-"),
        };
        let request = self.client.get_object().bucket(&self.bucket).key(&self.s3_key).if_match(&self.etag).range(range);
        let expected_etag = self.etag.clone();
        Box::pin(async move {
            let output = match request.send().await {
                Ok(output) => output,
                // Asked for the bytes after the end of an object of unknown length: there are none.
                Err(error)
                    if end.is_none() && (error.code() == Some("InvalidRange") || http_status(&error) == Some(416)) =>
                {
                    return Ok(Box::new(tokio::io::empty()) as ByteReader);
                }
                Err(error) if is_precondition_failure(&error) => {
                    return Err(std::io::Error::other(format!(
                        "the object was replaced while being read (its ETag is no longer {expected_etag}); \
                         run the command again"
                    )));
                }
                Err(error) => {
                    return Err(std::io::Error::other(format!(
                        "asking again for the bytes from {from} after the connection dropped failed: {}",
                        error_chain(&error)
                    )));
                }
            };
            check_resumed(from, end, output.content_range(), output.content_length(), output.e_tag(), &expected_etag)
                .map_err(std::io::Error::other)?;
            Ok(Box::new(output.body.into_async_read()) as ByteReader)
        })
    }
}

/// Aborts a multipart upload that was neither completed nor explicitly aborted, e.g. because the
/// `put` future was dropped mid-upload. Best effort: a bucket lifecycle rule for incomplete
/// multipart uploads remains the backstop.
struct AbortOnDrop {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    armed: bool,
}

impl AbortOnDrop {
    fn request(&self) -> aws_sdk_s3::operation::abort_multipart_upload::builders::AbortMultipartUploadFluentBuilder {
        self.client.abort_multipart_upload().bucket(&self.bucket).key(&self.key).upload_id(&self.upload_id)
    }

    async fn abort(mut self) {
        self.armed = false;
        if let Err(error) = self.request().send().await {
            tracing::warn!(
                bucket = %self.bucket, key = %self.key, upload_id = %self.upload_id,
                error = %error_chain(&error),
                "could not abort a failed multipart upload; its parts stay until a lifecycle rule removes them"
            );
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let request = self.request();
            let (bucket, key, upload_id) = (self.bucket.clone(), self.key.clone(), self.upload_id.clone());
            runtime.spawn(async move {
                if let Err(error) = request.send().await {
                    tracing::warn!(
                        %bucket, %key, %upload_id, error = %error_chain(&error),
                        "could not abort an interrupted multipart upload"
                    );
                }
            });
        }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn put(&self, key: &ObjectKey, mut body: ByteReader, mode: PutMode) -> Result<(), StorageError> {
        if mode == PutMode::Overwrite && self.written_once(key) {
            // On a versioned, locked bucket an overwrite does not replace anything: it adds a
            // version that is retained as long as the first. Lifeboat writes the kinds of objects it
            // locks exactly once, so this is refused rather than left to pile up versions.
            return Err(self.service_error(
                "put",
                key.as_str(),
                "refusing to overwrite an object of a kind written under Object Lock retention (each \
                 overwrite would add a retained version); lifeboat writes these once, so this is a \
                 lifeboat bug: please report it"
                    .into(),
                false,
            ));
        }
        if mode == PutMode::CreateOnly && self.head(key).await?.is_some() {
            // `If-None-Match: *` on the write itself is the real guarantee (AWS, moto and s3s-fs
            // honour it). This check costs one small request and protects G2 on S3-compatible
            // servers that ignore the header, where only a writer racing between this check and
            // the write could still slip through; it also saves uploading a body to be refused.
            return Err(self.already_exists(key));
        }
        let first = read_part(&mut body, self.part_size).await.map_err(|error| self.body_error(key, error))?;
        if first.len() < self.part_size {
            return self.put_single(key, first.freeze(), mode).await;
        }
        // The body filled a whole part: read one more before choosing, so a body of exactly one
        // part still goes up as a plain PutObject.
        let second = read_part(&mut body, self.part_size).await.map_err(|error| self.body_error(key, error))?;
        if second.is_empty() {
            return self.put_single(key, first.freeze(), mode).await;
        }
        self.put_multipart(key, first.freeze(), second.freeze(), &mut body, mode).await
    }

    async fn get(&self, key: &ObjectKey) -> Result<ByteReader, StorageError> {
        match self.client.get_object().bucket(&self.bucket).key(self.s3_key(key)).send().await {
            Ok(output) => {
                self.bucket_exists();
                Ok(self.resuming_body(key, output, 0))
            }
            Err(error) if is_missing_object(&error) => Err(self.missing_object(key).await),
            Err(error) => Err(self.classify("get", key.as_str(), error)),
        }
    }

    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<ByteReader, StorageError> {
        if range.start >= range.end {
            // No Range header can ask for zero bytes (S3 ignores an invalid one and sends the whole
            // object), but a missing object must still be reported, as `get` would.
            return match self.head(key).await? {
                Some(_) => Ok(Box::new(tokio::io::empty())),
                None => Err(self.not_found(key)),
            };
        }
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.s3_key(key))
            // Inclusive end; S3 cuts a range reaching past the end of the object at the end.
            .range(format!("bytes={}-{}", range.start, range.end - 1));
        match request.send().await {
            Ok(output) => {
                self.bucket_exists();
                Ok(self.resuming_body(key, output, range.start))
            }
            // 416: the range starts at or after the end of an existing object, so it holds no bytes.
            Err(error) if error.code() == Some("InvalidRange") || http_status(&error) == Some(416) => {
                Ok(Box::new(tokio::io::empty()))
            }
            Err(error) if is_missing_object(&error) => Err(self.missing_object(key).await),
            Err(error) => Err(self.classify("get", key.as_str(), error)),
        }
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError> {
        match self.client.head_object().bucket(&self.bucket).key(self.s3_key(key)).send().await {
            Ok(output) => {
                self.bucket_exists();
                let size = output.content_length().unwrap_or(0).max(0) as u64;
                let modified = output.last_modified().and_then(timestamp);
                Ok(Some(ObjectMeta { key: key.clone(), size, modified }))
            }
            Err(error) if http_status(&error) == Some(404) => {
                self.confirm_bucket().await?;
                Ok(None)
            }
            Err(error) => Err(self.classify("head", key.as_str(), error)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let full_prefix = format!("{}{}", self.key_prefix, prefix);
        let mut objects = Vec::new();
        let mut continuation = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_max_keys(self.list_page_size)
                .set_continuation_token(continuation.take())
                .send()
                .await
                .map_err(|error| self.classify("list", prefix, error))?;
            self.bucket_exists();
            for object in page.contents() {
                let Some(relative) = object.key().and_then(|key| key.strip_prefix(&self.key_prefix)) else {
                    continue;
                };
                match ObjectKey::new(relative) {
                    Ok(key) => objects.push(ObjectMeta {
                        key,
                        size: object.size().unwrap_or(0).max(0) as u64,
                        modified: object.last_modified().and_then(timestamp),
                    }),
                    // Objects lifeboat cannot have written (console "folder" markers and the like).
                    Err(invalid) => tracing::debug!(location = %self.location, %invalid, "ignoring object"),
                }
            }
            match page.next_continuation_token() {
                Some(token) if page.is_truncated() == Some(true) => continuation = Some(token.to_owned()),
                _ if page.is_truncated() == Some(true) => {
                    return Err(self.service_error(
                        "list",
                        prefix,
                        "the server said the listing is truncated but sent no continuation token".into(),
                        false,
                    ));
                }
                _ => break,
            }
        }
        // S3 already lists in UTF-8 byte order, which is the order of `ObjectKey`; sorting again
        // costs little and keeps the contract with servers that do not.
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// With Object Lock configured, every version of the key goes (see `lock`), or nothing does
    /// while one is retained. Without, one DeleteObject, as on any bucket.
    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        if self.locking.is_some() {
            return self.delete_versions(key).await;
        }
        match self.client.delete_object().bucket(&self.bucket).key(self.s3_key(key)).send().await {
            Ok(_) => Ok(()),
            // AWS answers 204 for a missing key; some compatible servers answer NoSuchKey.
            Err(error) if is_missing_object(&error) => Ok(()),
            Err(error) => Err(self.classify("delete", key.as_str(), error)),
        }
    }

    /// The current version's retain-until date (HeadObject), whether or not this store is
    /// configured to lock: a bucket may hold objects locked by an earlier configuration.
    async fn locked_until(&self, key: &ObjectKey) -> Result<Option<chrono::DateTime<chrono::Utc>>, StorageError> {
        self.retained_until(key, None).await
    }

    /// Aborts the multipart uploads below `prefix` started more than `idle` ago: what a put killed
    /// mid-upload leaves (invisible to `list`, but stored and billed). S3 has no directories.
    async fn sweep(&self, prefix: &str, idle: Duration) -> Result<Swept, StorageError> {
        let full_prefix = format!("{}{}", self.key_prefix, prefix);
        let cutoff = std::time::SystemTime::now()
            .checked_sub(idle)
            .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |since| since.as_secs() as i64);
        let mut swept = Swept::default();
        let (mut key_marker, mut upload_marker) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(upload_marker.take())
                .send()
                .await;
            let page = match page {
                Ok(page) => page,
                // Some S3-compatible servers (s3s-fs) cannot list uploads: there only a lifecycle
                // rule (AbortIncompleteMultipartUpload) can expire them.
                Err(error) if error.code() == Some("NotImplemented") => {
                    tracing::debug!(location = %self.location, "the server cannot list multipart uploads");
                    return Ok(swept);
                }
                Err(error) => return Err(self.classify("sweep", prefix, error)),
            };
            for upload in page.uploads() {
                let (Some(key), Some(upload_id)) = (upload.key(), upload.upload_id()) else { continue };
                let stale = upload.initiated().is_some_and(|initiated| initiated.secs() <= cutoff);
                if !key.starts_with(&full_prefix) || !stale {
                    continue;
                }
                match self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .send()
                    .await
                {
                    Ok(_) => swept.partial += 1,
                    // Completed or aborted since it was listed.
                    Err(error) if error.code() == Some("NoSuchUpload") => {}
                    Err(error) => return Err(self.classify("sweep", key, error)),
                }
            }
            match (page.is_truncated(), page.next_key_marker(), page.next_upload_id_marker()) {
                (Some(true), Some(key), upload) => {
                    key_marker = Some(key.to_owned());
                    upload_marker = upload.map(str::to_owned);
                }
                _ => break,
            }
        }
        Ok(swept)
    }
}

/// Reads from `body` until `limit` bytes or the end, whichever comes first. The buffer is
/// allocated at its final size once; pages that are never written are never touched.
async fn read_part(body: &mut ByteReader, limit: usize) -> std::io::Result<BytesMut> {
    let mut buffer = BytesMut::with_capacity(limit);
    while buffer.len() < limit {
        let room = (limit - buffer.len()) as u64;
        if (&mut *body).take(room).read_buf(&mut buffer).await? == 0 {
            break;
        }
    }
    Ok(buffer)
}

fn http_status<E>(error: &SdkError<E>) -> Option<u16> {
    match error {
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
            error.raw_response().map(|response| response.status().as_u16())
        }
        _ => None,
    }
}

/// A 404 about the object rather than the bucket.
fn is_missing_object<E: ProvideErrorMetadata>(error: &SdkError<E>) -> bool {
    error.code() == Some("NoSuchKey") || (http_status(error) == Some(404) && error.code() != Some("NoSuchBucket"))
}

/// The answers to a conditional write (`If-None-Match: *`) that found an object already there:
/// 412, or 409 when another conditional write to the same key is in progress.
fn is_precondition_failure<E: ProvideErrorMetadata>(error: &SdkError<E>) -> bool {
    matches!(error.code(), Some("PreconditionFailed" | "ConditionalRequestConflict")) || http_status(error) == Some(412)
}

/// The messages of `error` and its sources, joined with `: `, e.g. "dispatch failure: io error:
/// ... tcp connect error: Connection refused (os error 111)". Display texts only: the SDK's Debug
/// output is long and would put raw responses into operator-facing messages.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        // Some wrappers already repeat their source's message; do not print it twice.
        if !message.is_empty() && !text.ends_with(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}

/// `scheme://user:pass@host/...` without the `user:pass@`, so an endpoint is safe to print.
fn without_userinfo(endpoint: &str) -> String {
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return endpoint.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => endpoint.to_owned(),
    }
}

/// An S3 timestamp as a UTC time.
fn timestamp(time: &aws_sdk_s3::primitives::DateTime) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(time.secs(), time.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_so_large_objects_fit_in_ten_thousand_parts() {
        let base = S3Settings::DEFAULT_PART_SIZE;
        assert_eq!(part_size_for(base, 1), base);
        assert_eq!(part_size_for(base, 2_000), base);
        assert_eq!(part_size_for(base, 2_001), 2 * base);
        assert_eq!(part_size_for(base, MAX_PARTS), 16 * base);
        let capacity: u64 = (1..=MAX_PARTS).map(|part| part_size_for(base, part) as u64).sum();
        assert!(capacity > 960 * (1 << 30), "{} GiB", capacity >> 30);
        assert_eq!(part_size_for(1 << 30, MAX_PARTS), MAX_PART_SIZE, "never above S3's 5 GiB part limit");
    }

    fn settings() -> S3Settings {
        S3Settings {
            bucket: "backups".into(),
            prefix: "/prod-db/".into(),
            endpoint: Some("http://admin:hunter2@127.0.0.1:9/".into()),
            region: "eu-west-1".into(),
            force_path_style: true,
            storage_class: Some("STANDARD_IA".into()),
            credentials: Some(S3Credentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: Secret::new("wJalrXUtnFEMI-very-secret"),
                session_token: Some(Secret::new("session-token-secret")),
            }),
            part_size: 1,
            max_attempts: 3,
        }
    }

    #[tokio::test]
    async fn location_names_bucket_and_prefix_only() {
        let store = S3Store::connect(settings()).await.unwrap();
        assert_eq!(store.location(), "s3://backups/prod-db");
        assert_eq!(store.s3_key(&ObjectKey::new("a/b").unwrap()), "prod-db/a/b");
        assert_eq!(store.part_size, S3Settings::MIN_PART_SIZE, "tiny part sizes are raised to S3's minimum");

        let root = S3Store::connect(S3Settings { prefix: String::new(), ..settings() }).await.unwrap();
        assert_eq!(root.location(), "s3://backups");
        assert_eq!(root.s3_key(&ObjectKey::new("a").unwrap()), "a");
    }

    #[tokio::test]
    async fn debug_output_holds_no_secret() {
        let store = S3Store::connect(settings()).await.unwrap();
        let printed = format!("{store:?} {:?}", settings());
        for secret in ["wJalrXUtnFEMI-very-secret", "session-token-secret", "hunter2"] {
            assert!(!printed.contains(secret), "{secret} leaked in {printed}");
        }
        assert!(printed.contains("s3://backups/prod-db"));
    }

    #[tokio::test]
    async fn rejects_an_endpoint_that_is_not_a_url() {
        let error =
            S3Store::connect(S3Settings { endpoint: Some("127.0.0.1:9000".into()), ..settings() }).await.unwrap_err();
        assert!(matches!(error, StorageError::Unreachable { .. }), "{error:?}");
        assert!(error.to_string().contains("127.0.0.1:9000"), "{error}");
    }

    #[test]
    fn endpoints_are_printed_without_userinfo() {
        assert_eq!(without_userinfo("http://u:p@host:9000/x"), "http://host:9000/x");
        assert_eq!(without_userinfo("https://s3.example.com"), "https://s3.example.com");
        assert_eq!(without_userinfo("http://host/a@b"), "http://host/a@b");
    }
}
