//! The view of `lifeboat schema check` (`--json`): `schema-check/1`. docs/json.md documents it.

use serde::Serialize;

use super::Document;
use crate::schema::check::{Problem, Severity};

/// `schema check`: the problems found in one environment's database, errors first.
#[derive(Debug, Serialize)]
pub struct SchemaCheckView {
    pub environment: String,
    pub database: String,
    pub errors: usize,
    pub warnings: usize,
    pub problems: Vec<Problem>,
}

impl SchemaCheckView {
    pub fn new(environment: String, database: String, mut problems: Vec<Problem>) -> SchemaCheckView {
        problems.sort_by(|a, b| (a.severity, a.kind, &a.object).cmp(&(b.severity, b.kind, &b.object)));
        let errors = problems.iter().filter(|problem| problem.severity == Severity::Error).count();
        SchemaCheckView { environment, database, errors, warnings: problems.len() - errors, problems }
    }
}

impl Document for SchemaCheckView {
    fn schema(&self) -> &'static str {
        "schema-check/1"
    }
}
