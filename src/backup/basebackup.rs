//! Base backups through `pg_basebackup` (`lifeboat backup --method basebackup`), for a server
//! whose data directory lifeboat cannot read (another host, another OS user).
//!
//! `pg_basebackup --format=tar --pgdata=- --wal-method=none` writes the data directory as one tar
//! archive to its standard output. lifeboat reads that stream as it arrives ([`super::tar`]) and
//! stores each member the way the native method stores a file ([`super::copy`]'s rules: small
//! files bundled into objects of about 16 MiB, files from 1 MiB up in an object each, files over
//! the part size cut into parts whose BLAKE3 chaining values merge into the file's hash), so the
//! manifest has the same shape and a restore cannot tell the methods apart. Nothing is staged on
//! local disk; memory stays at a few MiB per object in flight.
//!
//! - The connection is passed as the dump code passes it: the URL without its password on the
//!   command line, the password in `PGPASSWORD`, `--no-password`, and the password removed from
//!   anything `pg_basebackup` prints.
//! - `backup_label` and `tablespace_map` arrive as members of the archive; they become the
//!   manifest's `backup_label`/`tablespace_map` fields, not files, exactly as the native method
//!   stores what `pg_backup_stop` returns.
//! - The start LSN and timeline are read from `backup_label` (`START WAL LOCATION`,
//!   `START TIMELINE`). The stop LSN comes from the server's own backup manifest, which
//!   `pg_basebackup` appends to the tar stream as its last member `backup_manifest` (PostgreSQL 13
//!   and later): its `WAL-Ranges` entry's `End-LSN` is exactly the LSN `pg_backup_stop` returned on
//!   the server, the one its backup history file records. (`pg_basebackup --verbose` prints the
//!   end point only when it fetches or streams WAL itself, which `--wal-method=none` does not.)
//!   The manifest is requested without file checksums (lifeboat hashes every file itself), is
//!   read as it streams keeping only its tail, and is not stored as a file. Servers before 13
//!   send no manifest and are refused by this method.
//! - A cluster with tablespaces is refused before anything starts: `pg_basebackup` writes one tar
//!   archive per tablespace and can stream only a single one to standard output.
//! - Then, as for the native method, lifeboat waits until the stop segment is archived, watching
//!   `pg_stat_archiver.last_archived_wal` (the server's `pg_wal` is not readable from here).
//! - The lease, the orphan sweep, the id and the manifest written last are the native method's.
//! - Cancellation (`options.cancel`) is watched as the native method watches it: while streaming,
//!   `pg_basebackup` is killed and the objects already handed to uploads are let finish, so the
//!   orphan sweep that follows every failed job removes them all; while waiting for the WAL, the
//!   wait stops; and no manifest is written once cancelled, so nothing is listed.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::copy::{BUNDLE_FILE_LIMIT, BUNDLE_TARGET, CONTROL_FILE, merge_parts};
use super::session::{ServerInfo, Session, Stopped};
use super::tar::{MemberKind, TarError, TarReader};
use super::{
    ARCHIVE_WAIT_WARNING, BackupError, BackupOptions, BackupSummary, Copied, LOCK, ManifestParts, PING_INTERVAL,
    archiving_waits, build_manifest, check_archiving, choose_id, orphans, start_timeline,
};
use crate::catalog::cluster::{ClusterRecord, Observed, SystemIdentifier};
use crate::catalog::id::BackupId;
use crate::catalog::layout::ClusterLayout;
use crate::catalog::lease::{DEFAULT_TTL, Lease};
use crate::catalog::lsn::Lsn;
use crate::catalog::wal::WalSegment;
use crate::config::Config;
use crate::dump::program::Program;
use crate::format::backup_manifest::{BackupMethod, DATA_DIR, EntryKind, FileEntry, Location, ObjectEntry};
use crate::object::SealSummary;
use crate::postgres::binaries::{Need, PgBinaries};
use crate::postgres::process::PgCommand;
use crate::postgres::version;
use crate::repository::{Repository, RepositoryError};
use crate::secret::Secret;
use crate::storage::{ObjectKey, PutMode};
use crate::util::format_bytes;

/// Bytes per block handed to an object's upload.
const SEND_BLOCK: usize = 1024 * 1024;
/// Blocks buffered between the stream and one upload.
const READ_AHEAD: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum BasebackupError {
    #[error(
        "the server has {count} tablespace(s) besides pg_default and pg_global ({names}): pg_basebackup writes \
         one tar archive per tablespace and can stream only one to its standard output, so `--method basebackup` \
         backs up only clusters without tablespaces. Take a native backup on the database host instead \
         (`lifeboat backup`)"
    )]
    Tablespaces { count: usize, names: String },

    #[error("cannot run {}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cluster.connection cannot be passed to pg_basebackup: {0}")]
    Connection(String),

    #[error("pg_basebackup failed ({status}); nothing of this backup was kept. Its last messages:\n{stderr}")]
    Failed { status: String, stderr: String },

    #[error("pg_basebackup's output is not a usable base backup ({0}); nothing of this backup was kept")]
    Tar(#[from] TarError),

    #[error("pg_basebackup's archive has no backup_label; nothing of this backup was kept")]
    NoLabel,

    #[error("the backup_label pg_basebackup sent has no START WAL LOCATION:\n{label}")]
    NoStartLsn { label: String },

    #[error(
        "pg_basebackup's stream had no backup_manifest with a WAL range, so the backup's end point is unknown; \
         nothing of this backup was kept"
    )]
    NoStopLsn,

    #[error(
        "cannot tell which PostgreSQL cluster this is: the connecting role may not call pg_control_system() and \
         the archive had no global/pg_control; connect as a superuser or a role allowed to call it"
    )]
    NoSystemIdentifier,

    #[error(
        "pg_basebackup's global/pg_control has system identifier {file}, but the server reports {server}; \
         nothing of this backup was kept"
    )]
    OtherCluster { file: u64, server: u64 },

    #[error("PostgreSQL could not report the archiver's progress (pg_stat_archiver): {0}")]
    Archiver(String),
}

/// Takes a base backup of the configured cluster through `pg_basebackup`.
pub(super) async fn run(
    config: &Config,
    repository: Arc<Repository>,
    options: &BackupOptions,
) -> Result<BackupSummary, BackupError> {
    let began = Instant::now();
    let session = Session::open(&config.cluster.connection).await?;
    let server = session.server.clone();
    session.close().await;
    version::check_supported(server.major(), format_args!("the server at {}", config.cluster.connection))?;
    if server.wal_level == "minimal" {
        return Err(BackupError::WalLevelMinimal);
    }
    if !server.tablespaces.is_empty() {
        let names: Vec<&str> = server.tablespaces.iter().map(|(_, name, _)| name.as_str()).collect();
        return Err(BasebackupError::Tablespaces { count: names.len(), names: names.join(", ") }.into());
    }
    let need = Need::clients(
        &["pg_basebackup"],
        server.major(),
        format!("the server at {}", config.cluster.connection.redacted()),
    );
    let binaries = PgBinaries::locate(config.cluster.bin_dir.as_deref(), &need)?;
    let program = binaries.require("pg_basebackup")?;
    let libpq = config.cluster.connection.for_libpq().map_err(BasebackupError::Connection)?;
    check_archiving(&server)?;

    let layout = ClusterLayout::new(&config.cluster.name);
    let lock = layout.lock(LOCK);
    let lease = Lease::acquire(repository.clone(), &lock, "backup", DEFAULT_TTL, options.lock_wait).await?;
    let job = Job {
        config,
        repository,
        layout,
        options,
        server,
        program,
        url: libpq.url,
        password: libpq.password,
        lease: &lease,
        lock: lock.to_string(),
    };
    let result = job.run().await;
    let result = super::orphans::after_job(&job.repository, &job.layout, &lease, result).await;
    let released = lease.release().await;
    let (manifest, manifest_key, removed_orphans, backup_duration) = result?;
    if let Err(error) = released {
        tracing::warn!(%error, "the backup is complete, but its lock could not be released; it expires by itself");
    }
    Ok(BackupSummary { manifest, manifest_key, duration: began.elapsed(), backup_duration, removed_orphans })
}

struct Job<'a> {
    config: &'a Config,
    repository: Arc<Repository>,
    layout: ClusterLayout,
    options: &'a BackupOptions,
    server: ServerInfo,
    program: PathBuf,
    /// The connection without its password.
    url: String,
    password: Option<Secret>,
    lease: &'a Lease,
    lock: String,
}

impl Job<'_> {
    async fn run(&self) -> Result<super::Completed, BackupError> {
        let server = &self.server;
        let source = format!("the server at {} (pg_control_system())", self.config.cluster.connection.redacted());
        if let Some(identifier) = server.system_identifier {
            self.ensure_identity(identifier, source.clone()).await?;
        }
        crate::catalog::journal::writable_head(&self.repository, &self.layout).await?;
        let removed = orphans::remove_orphans(&self.repository, &self.layout).await?;
        let (id, start_time) = choose_id(&self.repository, &self.layout, crate::catalog::id::BackupKind::Full).await?;
        let label = self.options.label.clone().unwrap_or_else(|| format!("lifeboat {id}"));
        let checkpoint = if self.options.fast_checkpoint { "fast" } else { "spread" };
        tracing::info!(backup = %id, "starting pg_basebackup ({checkpoint} checkpoint)");

        let mut command = PgCommand::client(&self.program, self.password.as_ref());
        command
            .args(["--format=tar", "--pgdata=-", "--wal-method=none", "--manifest-checksums=NONE", "--verbose"])
            .arg("--no-password")
            .arg(format!("--checkpoint={checkpoint}"))
            .arg(format!("--label={label}"))
            .arg(format!("--dbname={}", self.url))
            .env("LC_ALL", "C")
            .env_remove("LANGUAGE");
        let started = Instant::now();
        let cancel = &self.options.cancel;
        if cancel.is_cancelled() {
            return Err(BackupError::Cancelled { phase: "before pg_basebackup started" });
        }
        let (program, output) = Program::spawn(command)
            .map_err(|source| BasebackupError::Spawn { program: self.program.clone(), source })?;
        let mut streamer = Streamer::new(self, id);
        let streamed = tokio::select! {
            streamed = streamer.stream(output) => streamed,
            () = cancel.cancelled() => Err(BackupError::Cancelled { phase: "while streaming from pg_basebackup" }),
        };
        if streamed.is_err() {
            program.kill();
            streamer.settle().await;
        }
        let finished = program.finish().await;
        let stderr = finished.stderr.clone();
        if !finished.killed && !finished.success() {
            let stderr = if stderr.trim().is_empty() { "(it printed nothing)".to_owned() } else { stderr };
            return Err(BasebackupError::Failed { status: finished.describe_status(), stderr }.into());
        }
        let streamed = streamed?;
        let stop_lsn = streamed.manifest_tail.as_deref().and_then(end_lsn).ok_or(BasebackupError::NoStopLsn)?;
        if !stderr.trim().is_empty() {
            tracing::debug!("pg_basebackup: {stderr}");
        }
        let label_file = streamed.backup_label.clone().ok_or(BasebackupError::NoLabel)?;
        let timeline = start_timeline(&label_file)?;
        let start_lsn =
            start_lsn(&label_file).ok_or_else(|| BasebackupError::NoStartLsn { label: label_file.clone() })?;

        let identifier = match (server.system_identifier, streamed.control_identifier) {
            (Some(server_id), Some(file)) if file != server_id && file.swap_bytes() != server_id => {
                return Err(BasebackupError::OtherCluster { file, server: server_id }.into());
            }
            (Some(server_id), _) => server_id,
            (None, Some(file)) => {
                let source = "global/pg_control in pg_basebackup's archive".to_owned();
                self.ensure_identity(file, source).await?;
                file
            }
            (None, None) => return Err(BasebackupError::NoSystemIdentifier.into()),
        };

        let archived = async {
            if archiving_waits(server) {
                let stop =
                    WalSegment::containing(timeline, Lsn(stop_lsn.as_u64().saturating_sub(1)), server.segment_size);
                self.wait_for_archive(&stop.name(server.segment_size)).await?;
            }
            super::wait_for_wal_in_repository(
                &self.repository,
                &self.layout,
                server,
                timeline,
                start_lsn,
                stop_lsn,
                self.options,
            )
            .await
        };
        tokio::select! {
            archived = archived => archived?,
            () = cancel.cancelled() => {
                return Err(BackupError::Cancelled { phase: "while waiting for its WAL to be archived" });
            }
        }
        let stop_time = Utc::now();
        let stopped = Stopped { lsn: stop_lsn, label_file, tablespace_map: streamed.tablespace_map };
        let copied = Copied {
            files: streamed.files,
            tablespaces: Vec::new(),
            objects: streamed.objects,
            block_map: None,
            incremental: None,
            vanished: 0,
        };
        let parts = ManifestParts { id, server, timeline, start_lsn, stopped, start_time, stop_time, label, copied };
        let manifest = build_manifest(&self.layout, BackupMethod::Basebackup, SystemIdentifier(identifier), parts);
        if self.lease.is_lost() {
            return Err(BackupError::LeaseLost { lock: self.lock.clone() });
        }
        if cancel.is_cancelled() {
            return Err(BackupError::Cancelled { phase: "before its manifest was written" });
        }
        let key = super::store_manifest(&self.repository, &self.layout, &manifest).await?;
        tracing::info!(backup = %id, stop_lsn = %manifest.stop_lsn, "backup complete: manifest stored");
        Ok((manifest, key, removed, started.elapsed()))
    }

    async fn ensure_identity(&self, identifier: u64, source: String) -> Result<(), BackupError> {
        let observed = Observed {
            system_identifier: SystemIdentifier(identifier),
            segment_size: self.server.segment_size,
            postgres_version: Some(self.server.major().to_string()),
            source,
        };
        ClusterRecord::ensure(&self.repository, &self.layout, &observed).await?;
        Ok(())
    }

    /// Waits until `pg_stat_archiver.last_archived_wal` reached `segment` (WAL is archived in
    /// order, and segment names sort like their positions), warning every half minute.
    async fn wait_for_archive(&self, segment: &str) -> Result<(), BackupError> {
        let mut connection = crate::postgres::connect::connect(&self.config.cluster.connection).await?;
        let began = Instant::now();
        let mut next_warning = ARCHIVE_WAIT_WARNING;
        let mut pause = Duration::from_millis(10);
        loop {
            let last: Option<String> = sqlx::query_scalar("SELECT last_archived_wal FROM pg_stat_archiver")
                .fetch_one(&mut connection)
                .await
                .map_err(|error| BasebackupError::Archiver(error.to_string()))?;
            if last.as_deref().and_then(|last| last.get(..24)).is_some_and(|last| last >= segment) {
                break;
            }
            if began.elapsed() >= next_warning {
                tracing::warn!(
                    "waited {}s for PostgreSQL to archive {segment}, which the backup needs; if this does not end, \
                     check archive_command and the server log (`SELECT * FROM pg_stat_archiver` shows the last \
                     failure)",
                    began.elapsed().as_secs()
                );
                next_warning += ARCHIVE_WAIT_WARNING;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
        use sqlx::Connection as _;
        let _ = connection.close().await;
        tracing::debug!(waited = ?began.elapsed(), "the WAL the backup needs is archived");
        Ok(())
    }
}

/// The `End-LSN` of the last WAL range of a server backup manifest (its tail is enough):
/// `"WAL-Ranges": [ { "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" } ]`.
pub fn end_lsn(manifest_tail: &str) -> Option<Lsn> {
    let ranges = &manifest_tail[manifest_tail.rfind("\"WAL-Ranges\"")?..];
    let after = &ranges[ranges.rfind("\"End-LSN\"")? + "\"End-LSN\"".len()..];
    let value = after.trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    value[..value.find('"')?].parse().ok()
}

/// `START WAL LOCATION: 0/2000028 (file 000000010000000000000002)` → the LSN.
pub fn start_lsn(label: &str) -> Option<Lsn> {
    label.lines().find_map(|line| line.strip_prefix("START WAL LOCATION: ")?.split_whitespace().next()?.parse().ok())
}

/// What the archive held besides stored files.
struct Streamed {
    files: Vec<FileEntry>,
    objects: Vec<ObjectEntry>,
    backup_label: Option<String>,
    tablespace_map: Option<String>,
    /// The first 8 bytes of `global/pg_control`, in this host's byte order.
    control_identifier: Option<u64>,
    /// The last [`MANIFEST_TAIL`] bytes of the server's `backup_manifest`.
    manifest_tail: Option<String>,
}

/// How much of the end of the server's backup manifest is kept: its WAL ranges and checksum.
const MANIFEST_TAIL: usize = 64 * 1024;

type Upload = JoinHandle<Result<SealSummary, RepositoryError>>;

/// One object being written: its bytes go to an upload task through a bounded channel.
struct OpenObject {
    /// Relative to the backup's directory: `data/000001`.
    key: String,
    tx: mpsc::Sender<io::Result<Bytes>>,
    upload: Option<Upload>,
    /// Bytes written so far (the next file's offset).
    offset: u64,
    files: u64,
    pending: Vec<u8>,
}

impl OpenObject {
    async fn write(&mut self, data: &[u8]) -> Result<(), BackupError> {
        self.pending.extend_from_slice(data);
        if self.pending.len() >= SEND_BLOCK { self.flush().await } else { Ok(()) }
    }

    async fn flush(&mut self) -> Result<(), BackupError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let block = Bytes::from(std::mem::take(&mut self.pending));
        if self.tx.send(Ok(block)).await.is_ok() {
            return Ok(());
        }
        // The upload stopped reading: it failed.
        let upload = self.upload.take().expect("an open object has its upload");
        match upload.await {
            Ok(Err(error)) => Err(error.into()),
            Ok(Ok(_)) | Err(_) => Err(BackupError::Read {
                path: PathBuf::from(&self.key),
                source: io::Error::other("the upload ended before all data was sent"),
            }),
        }
    }
}

impl Drop for OpenObject {
    /// An object abandoned half-written is not stored as if complete.
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take() {
            upload.abort();
        }
    }
}

/// Turns the archive's members into objects and manifest entries.
struct Streamer<'a> {
    job: &'a Job<'a>,
    id: BackupId,
    number: u32,
    bundle: Option<OpenObject>,
    /// Objects whose bytes were all sent, still being sealed and stored.
    finishing: JoinSet<Result<ObjectEntry, BackupError>>,
    objects: Vec<ObjectEntry>,
    files: Vec<FileEntry>,
    bytes: u64,
}

impl<'a> Streamer<'a> {
    fn new(job: &'a Job<'a>, id: BackupId) -> Self {
        Streamer {
            job,
            id,
            number: 0,
            bundle: None,
            finishing: JoinSet::new(),
            objects: Vec::new(),
            files: Vec::new(),
            bytes: 0,
        }
    }

    async fn stream(&mut self, output: crate::storage::ByteReader) -> Result<Streamed, BackupError> {
        let mut reader = TarReader::new(output);
        let mut streamed = Streamed {
            files: Vec::new(),
            objects: Vec::new(),
            backup_label: None,
            tablespace_map: None,
            control_identifier: None,
            manifest_tail: None,
        };
        let began = Instant::now();
        let mut next_check = PING_INTERVAL;
        let mut buffer = vec![0u8; 256 * 1024];
        while let Some(member) = reader.next_member().await.map_err(BasebackupError::from)? {
            if began.elapsed() >= next_check {
                next_check += PING_INTERVAL;
                if self.job.lease.is_lost() {
                    return Err(BackupError::LeaseLost { lock: self.job.lock.clone() });
                }
            }
            let mut entry = FileEntry {
                path: member.path.clone(),
                kind: EntryKind::Dir,
                mode: member.mode,
                mtime: member.mtime,
                size: None,
                blake3: None,
                locations: Vec::new(),
                target: None,
            };
            match &member.kind {
                MemberKind::Dir => {}
                MemberKind::Symlink { target } => {
                    entry.kind = EntryKind::Symlink;
                    entry.target = Some(target.clone());
                }
                MemberKind::Other(flag) => {
                    tracing::warn!(path = %member.path, "skipping tar member of type {:?}", *flag as char);
                    continue;
                }
                MemberKind::File => match member.path.as_str() {
                    "backup_label" | "tablespace_map" => {
                        let text = read_small(&mut reader, member.size, &member.path).await?;
                        if member.path == "backup_label" {
                            streamed.backup_label = Some(text);
                        } else if !text.is_empty() {
                            streamed.tablespace_map = Some(text);
                        }
                        continue;
                    }
                    "backup_manifest" => {
                        streamed.manifest_tail = Some(read_tail(&mut reader, &mut buffer).await?);
                        continue;
                    }
                    path if path.starts_with("pg_wal/") => continue,
                    _ => {
                        entry.kind = EntryKind::File;
                        let head = self.file(&mut reader, &mut entry, member.size, &mut buffer).await?;
                        if member.path == CONTROL_FILE && head.len() == 8 {
                            streamed.control_identifier = Some(u64::from_ne_bytes(head.try_into().expect("8 bytes")));
                        }
                    }
                },
            }
            self.files.push(entry);
        }
        // Read what follows the end-of-archive marker, so the program can exit and its exit
        // status is checked (the stream ends only after a successful exit).
        let mut rest = reader.into_inner();
        tokio::io::copy(&mut rest, &mut tokio::io::sink())
            .await
            .map_err(|source| BasebackupError::Tar(TarError::Io { offset: 0, source }))?;
        if let Some(bundle) = self.bundle.take() {
            self.close(bundle).await?;
        }
        while let Some(joined) = self.finishing.join_next().await {
            self.objects.push(joined.expect("an upload does not panic")?);
        }
        self.objects.sort_by(|a, b| a.key.cmp(&b.key));
        self.files.sort_by(|a, b| a.path.cmp(&b.path));
        tracing::info!(
            backup = %self.id,
            "received {} in {} files, stored in {} objects",
            format_bytes(self.bytes),
            self.files.iter().filter(|file| file.kind == EntryKind::File).count(),
            self.objects.len()
        );
        streamed.files = std::mem::take(&mut self.files);
        streamed.objects = std::mem::take(&mut self.objects);
        Ok(streamed)
    }

    /// Stores one file's `size` bytes; fills in its entry. Returns its first 8 bytes.
    async fn file<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut TarReader<R>,
        entry: &mut FileEntry,
        size: u64,
        buffer: &mut [u8],
    ) -> Result<Vec<u8>, BackupError> {
        let mut head = Vec::new();
        self.bytes += size;
        self.job.options.progress.bytes.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
        entry.size = Some(size);
        if size == 0 {
            entry.blake3 = Some(blake3::hash(b"").to_hex().to_string());
            return Ok(head);
        }
        if size < BUNDLE_FILE_LIMIT {
            if self.bundle.is_none() {
                let bundle = self.open().await?;
                self.bundle = Some(bundle);
            }
            let bundle = self.bundle.as_mut().expect("opened above");
            let mut hasher = blake3::Hasher::new();
            copy_bytes(reader, bundle, size, &mut hasher, buffer, &mut head).await?;
            entry.blake3 = Some(hasher.finalize().to_hex().to_string());
            entry.locations.push(Location {
                backup: None,
                object: bundle.key.clone(),
                offset: bundle.offset,
                length: size,
            });
            bundle.offset += size;
            bundle.files += 1;
            if bundle.offset >= BUNDLE_TARGET {
                let bundle = self.bundle.take().expect("open");
                self.close(bundle).await?;
            }
            return Ok(head);
        }
        let part_size = self.job.options.part_size;
        let mut values = Vec::new();
        let mut whole = None;
        for offset in (0..size).step_by(part_size as usize) {
            let length = part_size.min(size - offset);
            let mut object = self.open().await?;
            let mut hasher = blake3::Hasher::new();
            if size > part_size {
                use blake3::hazmat::HasherExt as _;
                hasher.set_input_offset(offset);
            }
            copy_bytes(reader, &mut object, length, &mut hasher, buffer, &mut head).await?;
            entry.locations.push(Location { backup: None, object: object.key.clone(), offset: 0, length });
            object.offset = length;
            object.files = 1;
            self.close(object).await?;
            if size > part_size {
                use blake3::hazmat::HasherExt as _;
                values.push((length, hasher.finalize_non_root()));
            } else {
                whole = Some(hasher.finalize());
            }
        }
        let hash = whole.unwrap_or_else(|| merge_parts(&values, part_size));
        entry.blake3 = Some(hash.to_hex().to_string());
        Ok(head)
    }

    /// After the stream stopped early: drops the object being filled (its upload is aborted) and
    /// waits for the objects whose bytes were all sent, so that none is stored after the orphan
    /// sweep that follows a failed job has looked.
    async fn settle(&mut self) {
        self.bundle = None;
        while self.finishing.join_next().await.is_some() {}
    }

    /// A new object, once fewer than `workers` objects are still being stored.
    async fn open(&mut self) -> Result<OpenObject, BackupError> {
        while self.finishing.len() >= self.job.options.workers.max(1) as usize {
            if let Some(joined) = self.finishing.join_next().await {
                self.objects.push(joined.expect("an upload does not panic")?);
            }
        }
        self.number += 1;
        let key = format!("{DATA_DIR}/{:06}", self.number);
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let repository = self.job.repository.clone();
        let object_key: ObjectKey = self.job.layout.backup_object(self.id, &key);
        let body = Box::new(ChannelReader { rx, current: Bytes::new() });
        let upload = tokio::spawn(async move { repository.put(&object_key, body, PutMode::CreateOnly).await });
        Ok(OpenObject { key, tx, upload: Some(upload), offset: 0, files: 0, pending: Vec::new() })
    }

    /// Sends the rest of `object` and lets it finish storing in the background.
    async fn close(&mut self, mut object: OpenObject) -> Result<(), BackupError> {
        object.flush().await?;
        let upload = object.upload.take().expect("an open object has its upload");
        let (key, files) = (std::mem::take(&mut object.key), object.files);
        drop(object); // Closes the channel: the upload sees the end of the object.
        self.finishing.spawn(async move {
            let summary = upload.await.expect("an upload does not panic")?;
            Ok(ObjectEntry {
                key,
                size: summary.plaintext_len,
                stored_size: summary.stored_len,
                blake3: summary.recorded_hash().to_hex().to_string(),
                files,
            })
        });
        Ok(())
    }
}

/// Copies `length` bytes of the current member into `object`, hashing them; keeps the first 8.
async fn copy_bytes<R: AsyncRead + Unpin>(
    reader: &mut TarReader<R>,
    object: &mut OpenObject,
    mut length: u64,
    hasher: &mut blake3::Hasher,
    buffer: &mut [u8],
    head: &mut Vec<u8>,
) -> Result<(), BackupError> {
    while length > 0 {
        let want = (buffer.len() as u64).min(length) as usize;
        let read = reader.read_data(&mut buffer[..want]).await.map_err(BasebackupError::from)?;
        if read == 0 {
            let what = "a member's contents".to_owned();
            return Err(BasebackupError::Tar(TarError::Truncated { what, offset: reader.offset() }).into());
        }
        let data = &buffer[..read];
        if head.len() < 8 {
            let take = (8 - head.len()).min(data.len());
            head.extend_from_slice(&data[..take]);
        }
        hasher.update(data);
        object.write(data).await?;
        length -= read as u64;
    }
    Ok(())
}

/// The last [`MANIFEST_TAIL`] bytes of the current member, as text.
async fn read_tail<R: AsyncRead + Unpin>(reader: &mut TarReader<R>, buffer: &mut [u8]) -> Result<String, BackupError> {
    let mut tail = Vec::new();
    loop {
        let read = reader.read_data(buffer).await.map_err(BasebackupError::from)?;
        if read == 0 {
            break;
        }
        tail.extend_from_slice(&buffer[..read]);
        if tail.len() > 2 * MANIFEST_TAIL {
            tail.drain(..tail.len() - MANIFEST_TAIL);
        }
    }
    Ok(String::from_utf8_lossy(&tail).into_owned())
}

/// The whole contents of a small member, as text.
async fn read_small<R: AsyncRead + Unpin>(
    reader: &mut TarReader<R>,
    size: u64,
    path: &str,
) -> Result<String, BackupError> {
    if size > 16 * 1024 * 1024 {
        let problem = format!("{path} is {size} bytes long");
        return Err(BasebackupError::Tar(TarError::Malformed { offset: reader.offset(), problem }).into());
    }
    let mut data = vec![0u8; size as usize];
    let mut filled = 0;
    while filled < data.len() {
        let read = reader.read_data(&mut data[filled..]).await.map_err(BasebackupError::from)?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    Ok(String::from_utf8_lossy(&data).into_owned())
}

/// The plaintext of one object: blocks from the stream; an `Err` ends it with that error.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl AsyncRead for ChannelReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        while self.current.is_empty() {
            match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error)),
                Poll::Ready(Some(Ok(block))) => self.current = block,
            }
        }
        let take = self.current.len().min(buf.remaining());
        let chunk = self.current.split_to(take);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_from_the_label_and_the_server_manifest() {
        let manifest = "{ \"Path\": \"global/pg_control\", \"Size\": 8192 }\n],\n\
                        \"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000138\" }\n],\n\
                        \"Manifest-Checksum\": \"abc\"}\n";
        assert_eq!(end_lsn(manifest).unwrap().to_string(), "0/2000138");
        assert!(end_lsn("{ \"Files\": [] }").is_none());
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n";
        assert_eq!(start_lsn(label).unwrap().to_string(), "0/2000028");
        assert!(start_lsn("LABEL: x\n").is_none());
    }
}
