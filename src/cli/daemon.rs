//! `lifeboat daemon`: runs in the foreground under systemd (systemd/lifeboat.service) until
//! SIGTERM; see [`crate::daemon`] for what it does and docs/daemon.md for the operator's view.

use std::path::Path;

use crate::daemon::{Daemon, reporting};

pub async fn run(config_path: Option<&Path>) -> anyhow::Result<()> {
    let daemon = Daemon::start(config_path).await?;
    let reporting = reporting::start(&daemon).await?;
    daemon.run().await?;
    reporting.finish().await;
    Ok(())
}
