//! The view of a `verify` run (`verify --json`): the reports it stored and what it found wrong
//! with the repository. A report is the stored verification report (docs/format.md section 11)
//! with its key.

use serde::Serialize;

use super::Document;
use crate::catalog::audit::Problem;
use crate::catalog::layout::ClusterLayout;
use crate::format::verify_report::VerifyReport;

#[derive(Debug, Clone, Serialize)]
pub struct VerifyRunView {
    pub cluster: String,
    /// One per backup or dump verified, in the order they were verified.
    pub reports: Vec<ReportView>,
    /// Objects missing, altered or not recorded, found while choosing what to verify.
    pub problems: Vec<Problem>,
    /// Whether every verification passed and no problem was found.
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReportView {
    /// Where the report is stored.
    pub key: String,
    #[serde(flatten)]
    pub report: VerifyReport,
}

impl Document for VerifyRunView {
    fn schema(&self) -> &'static str {
        "verify/1"
    }
}

impl VerifyRunView {
    pub fn new(layout: &ClusterLayout, reports: &[VerifyReport], problems: &[Problem]) -> VerifyRunView {
        VerifyRunView {
            cluster: layout.name().to_string(),
            reports: reports
                .iter()
                .map(|report| ReportView { key: report.key(layout).to_string(), report: report.clone() })
                .collect(),
            problems: problems.to_vec(),
            passed: problems.is_empty() && reports.iter().all(|report| report.passed),
        }
    }
}
