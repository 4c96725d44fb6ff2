//! The view of a cluster's audit trail (`audit --json`): the stored records (docs/format.md
//! section 13), oldest first.

use serde::Serialize;

use super::Document;
use crate::ops::audit::AuditRecord;

#[derive(Debug, Clone, Serialize)]
pub struct AuditView {
    pub cluster: String,
    /// `--since`, when given.
    pub since: Option<String>,
    pub records: Vec<AuditRecord>,
}

impl Document for AuditView {
    fn schema(&self) -> &'static str {
        "audit/1"
    }
}
