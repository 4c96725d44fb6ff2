//! SCAFFOLD (not committed): stands in for helper G's module until it merges.
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{Environment, GateBackup};
use crate::ops::OpContext;

pub struct GateRequest {
    pub max_age: Duration,
    pub take: bool,
}
pub struct GatePass {
    pub backup: String,
    pub kind: GateBackup,
    pub verified_at: DateTime<Utc>,
    pub age: Duration,
    pub taken: bool,
    pub archived_segment: Option<String>,
}
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("scaffold refusal")]
    Refused,
}
pub async fn check(
    _context: &OpContext,
    _environment: &Environment,
    _request: &GateRequest,
) -> Result<GatePass, GateError> {
    Err(GateError::Refused)
}
