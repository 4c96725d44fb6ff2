//! `lifeboat config show`: the resolved configuration as TOML, secrets redacted (G5).
//!
//! Written by hand rather than serialised so that it keeps the file's order, says where secrets
//! come from and what unset optional keys mean, and so that no secret can slip in through a
//! derived `Serialize`.

use std::fmt::Write as _;
use std::path::Path;

use super::{Cipher, CompressionAlgorithm, Config, RepositoryUrl, S3Config};
use crate::secret::REDACTED;

/// A TOML string literal.
pub(super) fn quote(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn path(path: &Path) -> String {
    quote(&path.to_string_lossy())
}

pub(super) fn to_redacted_toml(config: &Config) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write(config, &mut out);
    out
}

fn write(config: &Config, out: &mut String) -> std::fmt::Result {
    let source = &config.source;
    let repository = &config.repository;
    writeln!(out, "# lifeboat configuration resolved from {}", source.file.display())?;
    writeln!(out, "# (defaults filled in, environment applied, secrets shown as {REDACTED})")?;
    writeln!(out, "#")?;
    match &source.key_file {
        Some(origin) => writeln!(out, "# key file:       {origin}; unlocking uses it")?,
        None => writeln!(out, "# key file:       none")?,
    }
    match &source.passphrase {
        Some(origin) => writeln!(out, "# passphrase:     {origin}")?,
        None => writeln!(out, "# passphrase:     none")?,
    }
    if source.key_file.is_none() && source.passphrase.is_none() {
        writeln!(out, "#                 (no key configured: enough only for cipher = \"none\")")?;
    }
    if repository.s3.is_some() {
        match &source.s3_credentials {
            Some(origin) => writeln!(out, "# S3 credentials: {origin}")?,
            None => writeln!(
                out,
                "# S3 credentials: the standard AWS chain (AWS_ACCESS_KEY_ID, AWS_PROFILE, web identity, instance role)"
            )?,
        }
    }

    let cluster = &config.cluster;
    writeln!(out, "\n[cluster]")?;
    writeln!(out, "name = {}", quote(cluster.name.as_str()))?;
    match &cluster.pgdata {
        Some(pgdata) => writeln!(out, "pgdata = {}", path(pgdata))?,
        None => writeln!(out, "# pgdata: not set (physical backups on this host need it)")?,
    }
    writeln!(out, "connection = {}", quote(&cluster.connection.redacted()))?;
    match &cluster.bin_dir {
        Some(bin_dir) => writeln!(out, "bin_dir = {}", path(bin_dir))?,
        None => writeln!(
            out,
            "# bin_dir: not set (the programs that fit the server are found through pg_config --bindir, \
                 /usr/lib/postgresql/<major>/bin, /usr/pgsql-<major>/bin and PATH)"
        )?,
    }
    writeln!(out, "os_user = {}", quote(&cluster.os_user))?;

    writeln!(out, "\n[repository]")?;
    writeln!(out, "url = {}", quote(&repository.url.to_string()))?;
    match &repository.passphrase_file {
        Some(file) => writeln!(out, "passphrase_file = {}", path(file))?,
        None => writeln!(out, "# passphrase_file: not set")?,
    }
    match &repository.passphrase {
        Some(_) => writeln!(out, "passphrase = {}", quote(REDACTED))?,
        None => writeln!(out, "# passphrase: not set")?,
    }
    match &repository.key_file {
        Some(file) => writeln!(out, "key_file = {}", path(file))?,
        None => writeln!(out, "# key_file: not set")?,
    }
    let cipher = match repository.cipher {
        Cipher::Aes256Gcm => "aes-256-gcm",
        Cipher::None => "none",
    };
    writeln!(out, "cipher = {}", quote(cipher))?;
    let algorithm = match repository.compression.algorithm {
        CompressionAlgorithm::Zstd => "zstd",
        CompressionAlgorithm::None => "none",
    };
    writeln!(out, "compression = {{ algorithm = {}, level = {} }}", quote(algorithm), repository.compression.level)?;

    if let (Some(s3), RepositoryUrl::S3 { .. }) = (&repository.s3, &repository.url) {
        writeln!(out, "\n[repository.s3]")?;
        write_s3(out, s3)?;
    }

    let backup = &config.backup;
    writeln!(out, "\n[backup]")?;
    writeln!(out, "workers = {}", backup.workers)?;
    writeln!(out, "fast_checkpoint = {}", backup.fast_checkpoint)?;
    writeln!(out, "lock_wait = {}", quote(&super::format_duration(backup.lock_wait)))?;
    writeln!(out, "archive_timeout = {}", quote(&super::format_duration(backup.archive_timeout)))?;
    if backup.retention.is_empty() {
        writeln!(out, "# retention: not set (`lifeboat expire` keeps everything)")?;
    } else {
        writeln!(out, "retention = {}", backup.retention)?;
    }
    let schedule = &backup.schedule;
    let jobs = [
        ("full", &schedule.full),
        ("incremental", &schedule.incremental),
        ("dump", &schedule.dump),
        ("expire", &schedule.expire),
    ];
    let set: Vec<String> = jobs
        .iter()
        .filter_map(|(name, schedule)| {
            schedule.as_ref().map(|schedule| format!("{name} = {}", quote(schedule.as_str())))
        })
        .collect();
    if set.is_empty() {
        writeln!(out, "# schedule: not set (the daemon takes no backups or dumps of its own)")?;
    } else {
        writeln!(out, "schedule = {{ {} }}", set.join(", "))?;
    }
    if schedule.expire.is_none() {
        writeln!(
            out,
            "# schedule.expire: not set (with a retention policy, the daemon expires after each scheduled backup or dump)"
        )?;
    }

    let dump = &config.dump;
    writeln!(out, "\n[dump]")?;
    match &dump.databases {
        Some(databases) => {
            let list: Vec<String> = databases.iter().map(|name| quote(name)).collect();
            writeln!(out, "databases = [{}]", list.join(", "))?;
        }
        None => writeln!(out, "# databases: not set (every database that is not a template and allows connections)")?,
    }
    writeln!(out, "lock_wait = {}", quote(&super::format_duration(dump.lock_wait)))?;

    let wal = &config.wal;
    writeln!(out, "\n[wal]")?;
    writeln!(out, "prefetch = {}", wal.prefetch)?;
    match &wal.spool_dir {
        Some(dir) => writeln!(out, "spool_dir = {}", path(dir))?,
        None => writeln!(out, "# spool_dir: not set (.lifeboat-spool beside %p, i.e. pg_wal/.lifeboat-spool)")?,
    }
    match &wal.check_schedule {
        Some(schedule) => writeln!(out, "check_schedule = {}", quote(schedule.as_str()))?,
        None => writeln!(out, "# check_schedule: not set (the daemon does not run the WAL continuity check)")?,
    }
    writeln!(out, "push_ahead = {}", wal.push_ahead)?;
    writeln!(out, "compression_level = {}", wal.compression_level)?;

    writeln!(out, "\n[audit]")?;
    writeln!(out, "path = {}", path(&config.audit.path))?;

    let verify = &config.verify;
    writeln!(out, "\n[verify]")?;
    writeln!(out, "after_backup = {}", verify.after_backup)?;
    writeln!(out, "scratch_dir = {}", path(&verify.scratch_dir))?;
    match &verify.dump_server {
        Some(server) => writeln!(out, "dump_server = {}", quote(&server.redacted()))?,
        None => writeln!(out, "# dump_server: not set (dumps are verified in a scratch cluster lifeboat starts)")?,
    }
    writeln!(out, "amcheck = {}", quote(verify.amcheck.as_str()))?;
    writeln!(out, "timeout = {}", quote(&super::format_duration(verify.timeout)))?;
    if verify.checks.is_empty() {
        writeln!(out, "checks = []")?;
    } else {
        writeln!(out, "checks = [")?;
        for check in &verify.checks {
            match &check.database {
                None => writeln!(out, "  {},", quote(&check.query))?,
                Some(database) => {
                    writeln!(out, "  {{ database = {}, query = {} }},", quote(database), quote(&check.query))?
                }
            }
        }
        writeln!(out, "]")?;
    }
    match &verify.schedule {
        Some(schedule) => writeln!(out, "schedule = {}", quote(schedule.as_str()))?,
        None => writeln!(out, "# schedule: not set (the daemon verifies only after backups, with after_backup)")?,
    }
    super::copies::write_redacted(&config.copies, out)?;
    super::notify::write_redacted(&config.notify, out)?;
    super::migrate::write_redacted(&config.migrate, out)?;
    write_daemon(out, &config.daemon)
}

fn write_daemon(out: &mut String, daemon: &super::DaemonConfig) -> std::fmt::Result {
    writeln!(out, "\n[daemon]")?;
    match &daemon.listen {
        Some(address) => writeln!(out, "listen = {}", quote(&address.to_string()))?,
        None => writeln!(out, "# listen: not set (no /metrics, /healthz, /status or status page)")?,
    }
    writeln!(out, "timezone = {}", quote(daemon.timezone.name()))?;
    writeln!(out, "catch_up = {}", daemon.catch_up)?;
    writeln!(out, "jitter = {}", quote(&super::format_duration(daemon.jitter)))?;
    writeln!(out, "shutdown_timeout = {}", quote(&super::format_duration(daemon.shutdown_timeout)))?;
    writeln!(out, "state_dir = {}", path(&daemon.state_dir))?;
    writeln!(out, "watch_interval = {}", quote(&super::format_duration(daemon.watch_interval)))?;
    Ok(())
}

/// The keys of an S3 table (`[repository.s3]`, a copy's `[copies.s3]`), credentials redacted.
pub(super) fn write_s3(out: &mut String, s3: &S3Config) -> std::fmt::Result {
    match &s3.endpoint {
        Some(endpoint) => writeln!(out, "endpoint = {}", quote(endpoint))?,
        None => writeln!(out, "# endpoint: not set (AWS's regional endpoint)")?,
    }
    writeln!(out, "region = {}", quote(&s3.region))?;
    writeln!(out, "force_path_style = {}", s3.force_path_style)?;
    match &s3.storage_class {
        Some(class) => writeln!(out, "storage_class = {}", quote(class))?,
        None => writeln!(out, "# storage_class: not set (the bucket's default)")?,
    }
    match &s3.credentials {
        Some(_) => {
            writeln!(out, "access_key_id = {}", quote(REDACTED))?;
            writeln!(out, "secret_access_key = {}", quote(REDACTED))?;
        }
        None => writeln!(out, "# access_key_id, secret_access_key: not set (the standard AWS chain)")?,
    }
    writeln!(out, "part_size_mib = {}", s3.part_size_mib)?;
    writeln!(out, "max_attempts = {}", s3.max_attempts)?;
    match &s3.object_lock {
        Some(lock) => writeln!(out, "object_lock = {{ mode = {}, days = {} }}", quote(lock.mode.as_str()), lock.days),
        None => writeln!(out, "# object_lock: not set (objects can be deleted at any time)"),
    }
}
