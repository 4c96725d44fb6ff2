//! `lifeboat dump [--db NAME ... | --all] [--json]`: logical dumps of the cluster's databases.

use std::io::Write as _;
use std::path::Path;

use clap::Args;

use crate::dump::{DumpRequest, Progress, Selection};
use crate::format::dump_manifest::DumpObject;
use crate::report::{self, backup::DumpView};
use crate::util::{format_bytes, group_thousands, seconds_between};

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Dump this database; repeat for several. Default: [dump] databases, else every database
    /// that is not a template and allows connections
    #[arg(long = "db", value_name = "NAME", conflicts_with = "all")]
    pub databases: Vec<String>,
    /// Dump every database that is not a template and allows connections, whatever [dump]
    /// databases says
    #[arg(long)]
    pub all: bool,
    /// Verify the dump by restoring it into a scratch server right after taking it (as
    /// `lifeboat verify ID`); the default when verify.after_backup is true
    #[arg(long, conflicts_with = "no_verify")]
    pub verify: bool,
    /// Do not verify, whatever verify.after_backup says
    #[arg(long)]
    pub no_verify: bool,
    /// Print the dump as JSON (schema dump/1, docs/json.md) on stdout when done; progress goes
    /// to stderr
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config_path: Option<&Path>, args: DumpArgs) -> anyhow::Result<()> {
    let context = super::operation_context(config_path).await?;
    let config = &context.config;
    let selection = if args.all {
        Selection::All
    } else if !args.databases.is_empty() {
        Selection::Databases(args.databases.clone())
    } else {
        config.dump.databases.clone().map_or(Selection::All, Selection::Databases)
    };
    let request = DumpRequest { selection, lock_wait: config.dump.lock_wait };

    // With --json, stdout holds only the document; the progress lines go to stderr.
    let json = args.json;
    let mut progress = |event: Progress<'_>| {
        let line = match event {
            Progress::Started { id, databases } => {
                format!("dump {id} of cluster {}: {} database(s) and the globals", config.cluster.name, databases.len())
            }
            Progress::GlobalsDone(globals) => object_line("(globals)", &globals.object, None, None),
            Progress::DatabaseDone(database) => object_line(
                &database.name,
                &database.object,
                Some((database.tables.len(), database.total_rows())),
                Some(seconds_between(database.started_at, database.finished_at)),
            ),
        };
        super::progress::above_bars(|| {
            if json {
                eprintln!("{line}");
            } else {
                println!("{line}");
                let _ = std::io::stdout().flush();
            }
        });
    };
    let verify = super::verify::after_taking(config, args.verify, args.no_verify);
    let taken = crate::ops::dump_then_verify(&context, &request, &mut progress, verify.as_ref()).await?;
    let view = DumpView::taken(&taken.manifest, &context.layout, taken.verification.as_ref());
    if json {
        println!("{}", report::to_json(&view));
    } else {
        print_summary(&view);
        if let Some(report) = &taken.verification {
            super::verify::print_report(report, &context.layout);
        }
    }
    match &taken.verification {
        Some(report) => super::verify::failure_error(report),
        None => Ok(()),
    }
}

fn object_line(name: &str, object: &DumpObject, tables: Option<(usize, u64)>, seconds: Option<f64>) -> String {
    let mut line = format!(
        "  {name:<24} {:>10} -> {:>10} ({:>3.0}%)",
        format_bytes(object.size),
        format_bytes(object.stored_size),
        object.ratio() * 100.0
    );
    if let Some((tables, rows)) = tables {
        line.push_str(&format!("  {tables:>5} tables {:>14} rows", group_thousands(rows)));
    }
    if let Some(seconds) = seconds {
        line.push_str(&format!("  {seconds:>7.1}s"));
    }
    line
}

fn print_summary(view: &DumpView) {
    let rows: u64 = view.databases.iter().map(|database| database.total_rows).sum();
    let ratio = if view.size == 0 { 100.0 } else { view.stored_size as f64 / view.size as f64 * 100.0 };
    println!(
        "dump {} complete: {} database(s), {} -> {} ({ratio:.0}%), {} rows in {:.1}s",
        view.id,
        view.databases.len(),
        format_bytes(view.size),
        format_bytes(view.stored_size),
        group_thousands(rows),
        view.duration_seconds
    );
}
