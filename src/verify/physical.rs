//! Verifying a base backup.
//!
//! Integrity: the WAL from the backup's start segment to its stop segment is read and
//! authenticated, then every data object is read and every file hashed against the manifest,
//! and the block map (which no restore reads, only the next incremental) is read and hashed.
//! The restore test does the same work for real: the WAL goes into the scratch directory (where
//! PostgreSQL's `restore_command` copies it from, so the server never needs the repository's
//! key), the files are restored into `data/` by the restore code users run, with every
//! tablespace moved inside the scratch directory, and PostgreSQL recovers to the backup's
//! consistent point and is promoted. Then amcheck (`pg_amcheck`, or SQL on PostgreSQL 13) and the
//! user's checks run.
//!
//! The scratch server runs with settings that keep it to itself whatever the backed-up
//! configuration says: no TCP, its own socket and `pg_hba.conf`, no archiving, no synchronous
//! standbys to wait for, small shared memory, no fsync.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::checks::Server;
use super::scratch::Scratch;
use super::{Context, Step, round};
use crate::catalog::lsn::Timeline;
use crate::catalog::wal::{WalFile, WalSegment};
use crate::format::backup_manifest::BackupManifest;
use crate::format::verify_report::{Failure, Phase, Recovery, VerifyReport};
use crate::postgres::binaries::{Need, PgBinaries};
use crate::postgres::cluster::LocalCluster;
use crate::postgres::version;
use crate::restore::files;
use crate::restore::target::{RecoveryGoal, RecoveryTarget, TargetAction, TimelineChoice};
use crate::restore::target_dir::ExistingData;
use crate::restore::wal::{self, WalReadError};
use crate::restore::{RestoreError, RestoreOptions};
use crate::util::shell_quote;

pub(crate) async fn verify(
    context: &Context<'_>,
    manifest: &BackupManifest,
    report: &mut VerifyReport,
    scratch: &mut Scratch,
) -> Result<(), Failure> {
    let options = context.options;
    check_block_map(context, manifest, report).await?;
    if options.integrity_only {
        options.enter(Step::ReadingWal);
        read_wal(context, manifest, None, report).await?;
        options.enter(Step::ReadingObjects);
        let progress = &options.progress;
        progress.restart(manifest.totals.bytes);
        files::check_files(
            context.repository.clone(),
            context.layout,
            Arc::new(manifest.clone()),
            options.workers,
            progress.clone(),
        )
        .await
        .map_err(restore_failure)?;
        report.integrity.objects += manifest.objects.len() as u64;
        report.integrity.bytes += progress.bytes.load(Ordering::Relaxed);
        report.integrity.files = progress.files.load(Ordering::Relaxed);
        return Ok(());
    }

    let binaries = server_binaries(options.bin_dir.as_deref(), manifest)?;
    let segments = manifest.stop_segment().number - manifest.start_segment().number + 1;
    let needed = manifest.totals.bytes + segments * u64::from(manifest.wal_segment_size.bytes());
    options.enter(Step::PreparingScratch);
    let cluster = scratch.restore_dir(options, &binaries, needed)?;
    let began = Instant::now();

    // The WAL first: a backup whose WAL is gone fails before gigabytes are written. PostgreSQL's
    // restore_command copies it from here.
    let wal_dir = cluster.root_dir().join("wal");
    create_dir(&wal_dir)?;
    options.enter(Step::ReadingWal);
    read_wal(context, manifest, Some(&wal_dir), report).await?;
    cluster.give_to_server_user(&wal_dir).map_err(|error| Failure::new(Phase::Scratch, error.to_string()))?;

    let mut restore_options = scratch_restore_options(cluster, manifest, &wal_dir, RecoveryTarget::Immediate);
    restore_options.workers = options.workers;
    restore_options.os_user = options.os_user.clone();
    restore_options.bin_dir = options.bin_dir.clone();
    restore_options.progress = options.progress.clone();
    options.enter(Step::RestoringFiles);
    let summary = crate::restore::run(context.repository.clone(), context.layout, &restore_options)
        .await
        .map_err(restore_failure)?;
    report.integrity.objects += manifest.objects.len() as u64;
    report.integrity.bytes += summary.bytes_written;
    report.integrity.files = summary.files_written;
    write_config_files(cluster)?;
    let restore_seconds = began.elapsed().as_secs_f64();

    let owner = crate::restore::resolve_owner(cluster.data_dir(), &options.os_user)
        .map_err(|error| Failure::new(Phase::Scratch, error.to_string()))?;
    options.enter(Step::Recovering);
    let reached = crate::restore::start::start_and_wait(
        &binaries,
        cluster.data_dir(),
        owner,
        Some(cluster.port()),
        TargetAction::Promote,
        false,
        None,
    )
    .await
    .map_err(|error| Failure::new(Phase::Recovery, error.to_string()))?;
    let server = Server::find_superuser(cluster, &options.roles).await?;
    let (server_version, databases) = server.describe().await?;
    report.recovery = Some(Recovery {
        restore_seconds: round(restore_seconds),
        recovery_seconds: round(reached.seconds),
        total_seconds: round(began.elapsed().as_secs_f64()),
        wal_segments_replayed: reached.segments_restored,
        redo_done: reached.redo_done.clone(),
        server_version,
        databases: databases.clone(),
    });
    tracing::info!(
        "restored and recovered in {:.1} s ({:.1} s writing files, {:.1} s recovering); databases: {}",
        began.elapsed().as_secs_f64(),
        restore_seconds,
        reached.seconds,
        databases.join(", ")
    );

    options.enter(Step::Amcheck);
    report.amcheck = server.amcheck(cluster, options.amcheck, options.bin_dir.as_deref()).await?;
    if let Some(amcheck) = report.amcheck.as_ref().filter(|amcheck| !amcheck.passed) {
        return Err(Failure::new(
            Phase::Amcheck,
            format!("amcheck found problems in the restored databases:\n{}", amcheck.output),
        ));
    }
    options.enter(Step::Checks);
    let (results, failure) = server.run_checks(&options.checks, &options.default_database, &databases, false).await;
    report.checks = results;
    failure.map_or(Ok(()), Err)
}

/// The server binaries of the backup's major version.
fn server_binaries(bin_dir: Option<&Path>, manifest: &BackupManifest) -> Result<PgBinaries, Failure> {
    let major = version::major_of_version_num(manifest.postgres_version_num);
    version::check_supported(major, format_args!("backup {}", manifest.id))
        .map_err(|error| Failure::new(Phase::Scratch, error.to_string()))?;
    PgBinaries::locate(bin_dir, &Need::server(major, format!("a restore test of backup {}", manifest.id))).map_err(
        |error| {
            Failure::new(
                Phase::Scratch,
                format!(
                    "the backup is of PostgreSQL {major}, and a restore test needs that version's server binaries: \
                     {error}; set cluster.bin_dir, or verify with --integrity-only"
                ),
            )
        },
    )
}

/// Reads and authenticates the block map of a native backup and checks its BLAKE3 against the
/// manifest: a restore never reads it, so without this a damaged block map would be found only
/// by the next incremental backup.
async fn check_block_map(
    context: &Context<'_>,
    manifest: &BackupManifest,
    report: &mut VerifyReport,
) -> Result<(), Failure> {
    let Some(block_map) = &manifest.block_map else {
        return Ok(());
    };
    let key = context.layout.backup_object(manifest.id, &block_map.key);
    let bytes = context
        .repository
        .get_bytes(&key)
        .await
        .map_err(|error| Failure::new(Phase::Integrity, format!("the block map {key}: {error}")))?;
    if blake3::hash(&bytes).to_hex().as_str() != block_map.blake3 {
        return Err(Failure::new(
            Phase::Integrity,
            format!("the block map {key} does not hash to the manifest's BLAKE3: it was altered or replaced"),
        ));
    }
    report.integrity.objects += 1;
    Ok(())
}

/// Reads every WAL segment from the backup's start to its stop, authenticated, into `into` (or
/// nowhere, for an integrity check), and the timeline history files recovery asks for.
async fn read_wal(
    context: &Context<'_>,
    manifest: &BackupManifest,
    into: Option<&Path>,
    report: &mut VerifyReport,
) -> Result<(), Failure> {
    let size = manifest.wal_segment_size;
    let (first, last) = (manifest.start_segment(), manifest.stop_segment());
    let segments: Vec<WalSegment> =
        (first.number..=last.number).map(|number| WalSegment::new(first.timeline, number)).collect();
    let parallel = context.options.workers as usize;
    let bytes = wal::read_segments(context.repository.clone(), context.layout, size, &segments, parallel, into)
        .await
        .map_err(|error| {
        let what = match &error {
            WalReadError::Missing { .. } => "is not in the archive".to_owned(),
            WalReadError::Damaged { detail, .. } => format!("is damaged in the archive ({detail})"),
            other => format!("could not be read: {other}"),
        };
        Failure::new(
            Phase::Wal,
            format!(
                "WAL segment {} {what}; backup {} needs {} .. {} to reach a consistent state, so it cannot \
                     be restored. `lifeboat wal check` lists the archive's gaps; take a new backup",
                error.name(),
                manifest.id,
                manifest.start_wal,
                manifest.stop_wal
            ),
        )
    })?;
    report.integrity.wal_segments += segments.len() as u64;
    report.integrity.objects += segments.len() as u64;
    report.integrity.bytes += bytes;
    // Recovery reads the history of the backup's timeline (and its ancestors are named in it).
    if let Some(dir) = into {
        for id in 2..=manifest.timeline.id() {
            let history = WalFile::History(Timeline::new(id).expect("timeline ids from 2 up are valid"));
            let key = context.layout.wal_file(&history, size);
            let name = history.name(size);
            match wal::read_object(&context.repository, &key, &name, Some(&dir.join(&name))).await {
                Ok(_) | Err(WalReadError::Missing { .. }) => {}
                Err(error) => {
                    return Err(Failure::new(
                        Phase::Wal,
                        format!("the history file of timeline {id} could not be read: {error}"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A restore error in the words of a verification.
fn restore_failure(error: RestoreError) -> Failure {
    match error {
        // The scratch directory is removed whatever happens: the advice on resuming is not for it.
        RestoreError::Partial { source, .. } => restore_failure(*source),
        RestoreError::Damaged { key, detail } if detail.contains(&key) => Failure::new(Phase::Integrity, detail),
        RestoreError::Damaged { key, detail } => {
            Failure::new(Phase::Integrity, format!("object {key} of the backup is damaged: {detail}"))
        }
        RestoreError::Unreadable { key, detail } => Failure::new(
            Phase::Restore,
            format!("could not read object {key} from the repository ({detail}): the backup was proven neither way"),
        ),
        RestoreError::HashMismatch { path, key, expected, actual } => Failure::new(
            Phase::Integrity,
            format!(
                "{path}, read from object {key}, does not match the manifest (BLAKE3 {actual}, expected {expected})"
            ),
        ),
        error @ (RestoreError::BadManifest { .. } | RestoreError::Manifest(_)) => {
            Failure::new(Phase::Integrity, error.to_string())
        }
        error @ (RestoreError::Plan(_) | RestoreError::Wal { .. }) => Failure::new(Phase::Wal, error.to_string()),
        error => Failure::new(Phase::Restore, error.to_string()),
    }
}

fn create_dir(path: &Path) -> Result<(), Failure> {
    std::fs::create_dir(path)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)))
        .map_err(|error| Failure::new(Phase::Scratch, format!("cannot create {}: {error}", path.display())))
}

/// `cp '<dir>/%f' '%p'`, quoted for the shell, with `%` in the directory doubled for PostgreSQL.
/// A restore of `manifest` into `cluster`'s empty data directory, recovering to `target` with the
/// WAL copied into `wal_dir`, then promoting, with [`scratch_settings`]: what a verification and
/// a rehearsal both start from. One worker, the default OS user and binaries, and a cancel token
/// of its own (the verification's interrupt stops the whole restore); callers set their own.
pub(crate) fn scratch_restore_options(
    cluster: &LocalCluster,
    manifest: &BackupManifest,
    wal_dir: &Path,
    target: RecoveryTarget,
) -> RestoreOptions {
    RestoreOptions {
        pgdata: cluster.data_dir().to_path_buf(),
        backup: Some(manifest.id),
        goal: RecoveryGoal {
            target,
            timeline: TimelineChoice::Id(manifest.timeline),
            action: TargetAction::Promote,
            exclusive: false,
        },
        existing: ExistingData::Refuse,
        tablespace_map: manifest
            .tablespaces
            .iter()
            .map(|tablespace| {
                (tablespace.oid.to_string(), cluster.root_dir().join("tablespaces").join(tablespace.oid.to_string()))
            })
            .collect(),
        workers: 1,
        server_settings: scratch_settings(cluster),
        dry_run: false,
        start: None,
        restore_command: copy_command(wal_dir),
        read_ahead: None,
        os_user: String::new(),
        bin_dir: None,
        cancel: tokio_util::sync::CancellationToken::new(),
        progress: Arc::default(),
    }
}

fn copy_command(dir: &Path) -> String {
    let dir = dir.to_string_lossy().replace('%', "%%");
    format!("cp {} {}", shell_quote(&format!("{dir}/%f")), shell_quote("%p"))
}

/// Settings that keep the scratch server to itself, written after the recovery settings.
fn scratch_settings(cluster: &LocalCluster) -> Vec<(&'static str, String)> {
    let root = cluster.root_dir();
    vec![
        ("archive_mode", "off".into()),
        ("listen_addresses", String::new()),
        ("port", cluster.port().to_string()),
        ("unix_socket_directories", cluster.socket_dir().to_string_lossy().into_owned()),
        ("hba_file", root.join("pg_hba.conf").to_string_lossy().into_owned()),
        ("ident_file", root.join("pg_ident.conf").to_string_lossy().into_owned()),
        ("ssl", "off".into()),
        ("hot_standby", "off".into()),
        ("synchronous_standby_names", String::new()),
        ("primary_conninfo", String::new()),
        ("recovery_end_command", String::new()),
        ("default_transaction_read_only", "off".into()),
        ("shared_buffers", "128MB".into()),
        ("fsync", "off".into()),
    ]
}

/// `pg_hba.conf` and `pg_ident.conf` of the scratch server (trust on its private socket), and an
/// empty `postgresql.conf` when the backup has none (Debian keeps it in /etc).
pub(crate) fn write_config_files(cluster: &LocalCluster) -> Result<(), Failure> {
    let root = cluster.root_dir();
    let mut files: Vec<(PathBuf, &str)> = vec![
        (
            root.join("pg_hba.conf"),
            "# lifeboat verify: the scratch server's private socket only\nlocal all all trust\n",
        ),
        (root.join("pg_ident.conf"), ""),
    ];
    let conf = cluster.data_dir().join("postgresql.conf");
    if !conf.exists() {
        files.push((conf, "# written by lifeboat verify: the backup has no postgresql.conf\n"));
    }
    for (path, text) in files {
        std::fs::write(&path, text)
            .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)))
            .map_err(|error| Failure::new(Phase::Scratch, format!("cannot write {}: {error}", path.display())))?;
        cluster.give_to_server_user(&path).map_err(|error| Failure::new(Phase::Scratch, error.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_command_survives_quotes_and_percent_signs() {
        assert_eq!(copy_command(Path::new("/var/tmp/x/wal")), "cp '/var/tmp/x/wal/%f' '%p'");
        assert_eq!(copy_command(Path::new("/tmp/it's 100%")), r"cp '/tmp/it'\''s 100%%/%f' '%p'");
    }
}
