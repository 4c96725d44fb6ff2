//! `daemon-state.json` in `[daemon] state_dir`: per job, the time up to which its schedule has
//! been dealt with (a run started, or skipped, or deliberately not caught up). What catch-up
//! reads at start: a job whose schedule fired after that time, while the daemon was down, missed
//! a run. Written atomically (a temporary file, synced, renamed over the old one), so a crash
//! leaves the old file or the new one.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const FILE_NAME: &str = "daemon-state.json";

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error(
        "cannot write the daemon's state file {path}: {source}; [daemon] state_dir must be a directory the daemon's \
         user can write (systemd: ReadWritePaths= or StateDirectory=)"
    )]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read the daemon's state file {path}: {detail}")]
    Read { path: PathBuf, detail: String },
}

/// The file's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    /// By job name: until when its schedule was dealt with.
    pub handled_until: BTreeMap<String, DateTime<Utc>>,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// The saved state; `None` when there is no file yet (the daemon's first start).
pub fn load(state_dir: &Path) -> Result<Option<SavedState>, StateFileError> {
    let path = path(state_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StateFileError::Read { path, detail: error.to_string() }),
    };
    serde_json::from_str(&text).map(Some).map_err(|error| StateFileError::Read { path, detail: error.to_string() })
}

/// Replaces the file with `state` (creating `state_dir` if needed).
pub fn save(state_dir: &Path, state: &SavedState) -> Result<(), StateFileError> {
    let path = path(state_dir);
    let temporary = state_dir.join(format!(".{FILE_NAME}.tmp"));
    let text = serde_json::to_string_pretty(state).expect("the state serialises");
    let written = std::fs::create_dir_all(state_dir)
        .and_then(|()| std::fs::File::create(&temporary))
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temporary, &path))
        .and_then(|()| std::fs::File::open(state_dir)?.sync_all());
    written.map_err(|source| StateFileError::Write { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_state_reads_back_and_no_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        assert_eq!(load(&state_dir).unwrap(), None);
        let state = SavedState { handled_until: BTreeMap::from([("backup".to_owned(), Utc::now())]) };
        save(&state_dir, &state).unwrap();
        assert_eq!(load(&state_dir).unwrap(), Some(state));
        std::fs::write(path(&state_dir), "{").unwrap();
        assert!(load(&state_dir).unwrap_err().to_string().contains("daemon-state.json"));
    }
}
