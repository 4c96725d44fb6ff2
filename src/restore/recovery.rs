//! The files that turn a restored copy into a recovering server: `backup_label` (where replay
//! starts), `tablespace_map` (where the tablespaces are), `recovery.signal`, and the recovery
//! settings, appended to `postgresql.auto.conf` as one marked block.
//!
//! Settings in `postgresql.auto.conf` override `postgresql.conf`. Lines of the restored
//! `postgresql.auto.conf` that set what the block sets (or an earlier lifeboat block) are
//! commented out, so each setting appears once and nothing is silently contradicted.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::RestoreError;
use super::files::Destination;
use crate::format::backup_manifest::BackupManifest;
use crate::postgres::cluster::format_setting;

pub const AUTO_CONF: &str = "postgresql.auto.conf";
const BLOCK_BEGIN: &str = "# lifeboat restore: begin";
const BLOCK_END: &str = "# lifeboat restore: end";
const COMMENTED: &str = "# replaced by lifeboat restore: ";

/// Settings that recovery reads; any earlier value of these is commented out.
const RECOVERY_SETTINGS: &[&str] = &[
    "restore_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_xid",
    "recovery_target_name",
    "recovery_target_timeline",
    "recovery_target_action",
    "recovery_target_inclusive",
];

/// Writes `backup_label`, `tablespace_map` (with the tablespaces' new locations), `recovery.signal`
/// and the settings block. `settings` come from [`super::target::RecoveryGoal::settings`] plus
/// any the caller adds (such as `archive_mode`).
pub fn write_recovery_files(
    manifest: &BackupManifest,
    destination: &Destination,
    settings: &[(&str, String)],
    header: &str,
) -> Result<(), RestoreError> {
    write_private(destination, "backup_label", manifest.backup_label.as_bytes())?;
    if !manifest.tablespaces.is_empty() {
        let mut map = String::new();
        for tablespace in &manifest.tablespaces {
            let location = destination
                .tablespaces
                .get(&tablespace.oid)
                .map_or_else(|| tablespace.location.clone(), |path| path.display().to_string());
            map.push_str(&format!("{} {}\n", tablespace.oid, escape_map_path(&location)));
        }
        write_private(destination, "tablespace_map", map.as_bytes())?;
    }
    write_private(destination, "recovery.signal", b"")?;

    let path = destination.path(AUTO_CONF);
    let existing = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(RestoreError::Write { path, action: "read", source }),
    };
    let names: Vec<&str> = settings.iter().map(|(name, _)| *name).chain(RECOVERY_SETTINGS.iter().copied()).collect();
    let mut text = without_settings(&existing, &names);
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(BLOCK_BEGIN);
    text.push('\n');
    text.push_str(&format!("# {header}\n"));
    for (name, value) in settings {
        let line = format_setting(name, value)
            .map_err(|error| RestoreError::BadManifest { detail: format!("setting {name}: {error}") })?;
        text.push_str(&line);
        text.push('\n');
    }
    text.push_str(BLOCK_END);
    text.push('\n');
    write_private(destination, AUTO_CONF, text.as_bytes())
}

/// `text` with earlier lifeboat blocks dropped and lines setting any of `names` commented out.
fn without_settings(text: &str, names: &[&str]) -> String {
    let mut out = String::new();
    let mut in_block = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed == BLOCK_BEGIN {
            in_block = true;
            continue;
        }
        if in_block {
            in_block = trimmed != BLOCK_END;
            continue;
        }
        let name = trimmed.split(['=', ' ', '\t']).next().unwrap_or("").to_ascii_lowercase();
        if !trimmed.starts_with('#') && names.contains(&name.as_str()) {
            out.push_str(COMMENTED);
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `tablespace_map` escapes backslashes and line breaks in paths with a backslash.
fn escape_map_path(path: &str) -> String {
    let mut escaped = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, '\\' | '\n' | '\r') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn write_private(destination: &Destination, name: &str, bytes: &[u8]) -> Result<(), RestoreError> {
    let path = destination.path(name);
    let write = || -> io::Result<()> {
        let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
        io::Write::write_all(&mut file, bytes)?;
        destination.chown(&path)
    };
    write().map_err(|source| RestoreError::Write { path: path.clone(), action: "write", source })
}

/// Whether the directory holds a `recovery.signal` (a restore not yet started).
pub fn recovery_pending(pgdata: &Path) -> bool {
    pgdata.join("recovery.signal").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earlier_settings_are_commented_out_and_blocks_replaced() {
        let existing = "# Do not edit this file manually!\nrestore_command = 'cp x %p'\nwork_mem = '8MB'\n\
                        # lifeboat restore: begin\nrecovery_target_xid = '5'\n# lifeboat restore: end\n\
                        Recovery_Target_Time='2026-01-01'\n";
        let text = without_settings(existing, &["restore_command", "recovery_target_time", "archive_mode"]);
        assert_eq!(
            text,
            "# Do not edit this file manually!\n# replaced by lifeboat restore: restore_command = 'cp x %p'\n\
             work_mem = '8MB'\n# replaced by lifeboat restore: Recovery_Target_Time='2026-01-01'\n"
        );
        assert_eq!(escape_map_path("/srv/a\\b"), "/srv/a\\\\b");
    }
}
