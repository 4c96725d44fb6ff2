//! `lifeboat notify test [--json]`: sends one message of each kind (failure, recovery, success,
//! stale) to each configured sink of `[notify]`, and says what reached where.

use std::path::Path;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::QuietExit;
use crate::notify::{Delivery, DeliveryStatus, Notifier};
use crate::report::{self, Document};

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send one test message of each kind (failure, recovery, success, stale) to each configured
    /// sink, ignoring notify.on and notify.min_interval; exits 1 if one was not delivered
    Test(TestArgs),
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Print the result as JSON (schema notify-test/1, docs/notifications.md) instead of text
    #[arg(long)]
    pub json: bool,
}

/// What `notify test` reports.
#[derive(Debug, Serialize)]
struct TestView {
    cluster: String,
    deliveries: Vec<Delivery>,
}

impl Document for TestView {
    fn schema(&self) -> &'static str {
        "notify-test/1"
    }
}

pub async fn run(config_path: Option<&Path>, command: NotifyCommand) -> anyhow::Result<()> {
    let NotifyCommand::Test(args) = command;
    let config = super::load_config(config_path)?;
    let notifier = Notifier::new(&config.notify, config.cluster.name.as_str());
    if !notifier.has_sinks() {
        anyhow::bail!(
            "{} configures no notification sink: add a [notify] table with webhook = \"https://...\" (and \
             format = \"slack\" for Slack), or desktop = true on a desktop machine; see config/lifeboat.example.toml",
            config.origin().display()
        );
    }
    let view = TestView { cluster: config.cluster.name.as_str().to_string(), deliveries: notifier.send_test().await };
    let failed = view.deliveries.iter().filter(|delivery| matches!(delivery.status, DeliveryStatus::Failed(_))).count();
    let delivered = view.deliveries.iter().filter(|delivery| delivery.status == DeliveryStatus::Delivered).count();
    if args.json {
        println!("{}", report::to_json(&view));
    } else {
        for delivery in &view.deliveries {
            let (mark, detail) = match &delivery.status {
                DeliveryStatus::Delivered => ("ok  ", String::new()),
                DeliveryStatus::Skipped(reason) => ("--  ", format!(": skipped, {reason}")),
                DeliveryStatus::Failed(reason) => ("FAIL", format!(": {reason}")),
            };
            println!("{mark} {:<8} -> {}{detail}", delivery.event.as_str(), delivery.sink);
        }
    }
    if failed > 0 {
        if args.json {
            return Err(QuietExit { code: 1 }.into());
        }
        anyhow::bail!(
            "{failed} test message(s) were not delivered (above); check [notify] in {}",
            config.origin().display()
        );
    }
    if delivered == 0 {
        if args.json {
            return Err(QuietExit { code: 1 }.into());
        }
        anyhow::bail!(
            "no test message could be delivered: desktop notifications need a session bus, which this host has not; \
             set notify.webhook = \"https://...\" in {}",
            config.origin().display()
        );
    }
    Ok(())
}
