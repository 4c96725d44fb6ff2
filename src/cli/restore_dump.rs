//! `lifeboat restore --dump ID --db NAME --into URL [--table T ...]`: a logical restore of one
//! database, or some of its tables, from a dump into a running server.
//!
//! The work is [`crate::restore::dump`]; this file resolves the dump, reports the plan on stderr
//! and prints the summary (or JSON) on stdout.

use std::path::Path;

use crate::config::ConnectionString;
use crate::format::dump_manifest::DumpManifest;
use crate::report::{self, restore::DumpRestoreView};
use crate::restore::dump::{Ownership, Plan, RestoreRequest, display_table};
use crate::util::{format_bytes, group_thousands};

/// What the command line asked for (see [`super::restore::RestoreArgs`]).
#[derive(Debug, Clone)]
pub struct DumpRestoreRequest {
    /// A dump id as `lifeboat list` shows it, or `latest` (the newest dump).
    pub dump: String,
    /// The database of the dump to restore.
    pub database: String,
    /// A libpq connection URL of the database to restore into.
    pub into: String,
    /// Only these tables (`name` or `schema.name`); empty: the whole database.
    pub tables: Vec<String>,
    /// Drop the objects being restored before recreating them.
    pub clean: bool,
    /// Print the result as JSON (schema dump-restore/1) on stdout.
    pub json: bool,
}

pub async fn run(config_path: Option<&Path>, request: DumpRestoreRequest) -> anyhow::Result<()> {
    // The URL may hold a password: the parse error never quotes it.
    let into = ConnectionString::parse(&request.into).map_err(|error| anyhow::anyhow!("--into {error}"))?;
    let context = super::operation_context(config_path).await?;
    let restore_request = RestoreRequest {
        database: request.database.clone(),
        into,
        tables: request.tables.clone(),
        clean: request.clean,
        // Owners and grants as dumped: a restored table stays usable by the roles that used it.
        ownership: Ownership::Keep,
    };
    let redacted = restore_request.into.redacted();
    let mut on_plan =
        |manifest: &DumpManifest, plan: &Plan| print_plan(&manifest.id.to_string(), &request.database, &redacted, plan);
    let report = crate::ops::restore_dump(&context, &request.dump, &restore_request, &mut on_plan).await?;

    let view = DumpRestoreView::new(&report);
    if request.json {
        println!("{}", report::to_json(&view));
    } else {
        print_summary(&view);
    }
    Ok(())
}

/// What is about to happen, on stderr (stdout is for the summary or the JSON).
fn print_plan(id: &str, database: &str, into: &str, plan: &Plan) {
    let what = if plan.whole_database {
        format!("database {database:?}")
    } else {
        let names: Vec<String> = plan.tables.iter().map(|table| display_table(&table.schema, &table.table)).collect();
        format!("{} of database {database:?}", names.join(", "))
    };
    eprintln!("restoring {what} from dump {id} into {into}");
    if !plan.left_out.is_empty() {
        eprintln!("not restored with the chosen tables:");
        for left_out in &plan.left_out {
            eprintln!("  {}: {}", left_out.entry, left_out.reason);
        }
    }
}

fn print_summary(view: &DumpRestoreView) {
    let report = &view.report;
    if !report.whole_database {
        for table in &report.tables {
            println!("  {:<40} {:>14} rows", display_table(&table.schema, &table.table), group_thousands(table.rows));
        }
    }
    println!(
        "restored {} table(s) of database {:?} from dump {}: {} rows, every table's count as in the dump; \
         {} read in {:.1}s",
        report.tables.len(),
        report.database,
        report.dump,
        group_thousands(report.rows),
        format_bytes(report.bytes),
        report.seconds
    );
}
