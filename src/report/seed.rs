//! The views of `lifeboat seed` (`--json`): `seed-status/1` and `seed-run/1` (run, rollback,
//! clear). docs/json.md documents them.

use serde::Serialize;

use super::Document;
use crate::seed::load::{Done, Entry};

/// `seed status`: each seed file and its state, then the loaded files that are gone.
#[derive(Debug, Serialize)]
pub struct SeedStatusView {
    pub environment: String,
    pub directory: String,
    pub history_table: String,
    pub seeds: Vec<Entry>,
}

impl Document for SeedStatusView {
    fn schema(&self) -> &'static str {
        "seed-status/1"
    }
}

/// `seed run`, `rollback`, `clear`: what was done to each file (for clear, the tables emptied).
#[derive(Debug, Serialize)]
pub struct SeedRunView {
    pub environment: String,
    /// `run`, `rollback` or `clear`.
    pub command: &'static str,
    pub seeds: Vec<Done>,
    pub emptied: Vec<String>,
    pub duration_ms: u64,
}

impl Document for SeedRunView {
    fn schema(&self) -> &'static str {
        "seed-run/1"
    }
}
