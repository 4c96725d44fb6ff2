//! Servers that tests start on restored data directories (`lifeboat restore --start`), stopped
//! by their data directory when dropped, and the ports they listen on.

use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Command;

use lifeboat::postgres::binaries::PgBinaries;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use super::archiving::Setup;
use super::output::assert_success;

/// A server started by `restore --start` with its socket in `socket_dir`, stopped (immediately)
/// when dropped, as the data directory's owner, with the `pg_ctl` of its major.
pub struct Restored {
    pub pgdata: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    /// The programs of the source cluster, whose major the restored server has.
    binaries: PgBinaries,
}

impl Restored {
    /// The server `restore --start --port <port>` started on `pgdata` for `setup`: its socket is
    /// beside the source cluster's.
    pub fn of(setup: &Setup, pgdata: PathBuf, port: u16) -> Restored {
        Restored {
            pgdata,
            socket_dir: setup.cluster.socket_dir().to_path_buf(),
            port,
            binaries: setup.cluster.binaries().clone(),
        }
    }

    pub async fn connect(&self) -> PgConnection {
        let options =
            PgConnectOptions::new().socket(&self.socket_dir).port(self.port).username("postgres").database("postgres");
        PgConnection::connect_with(&options)
            .await
            .unwrap_or_else(|error| panic!("connect to the restored server: {error}"))
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        if !self.pgdata.join("postmaster.pid").exists() {
            return;
        }
        let mut command = Command::new(self.binaries.path("pg_ctl"));
        command.args(["stop", "--wait", "--mode", "immediate", "--pgdata"]).arg(&self.pgdata);
        if let Ok(meta) = std::fs::metadata(&self.pgdata)
            // SAFETY: geteuid has no preconditions.
            && meta.uid() != unsafe { libc::geteuid() }
        {
            command.uid(meta.uid()).gid(meta.gid()).current_dir(&self.pgdata);
        }
        let _ = command.output();
    }
}

/// A TCP port for a server restored from `setup`, which puts its socket in the source cluster's
/// socket directory: a port whose socket lock file exists there is taken, even though TCP says
/// it is free.
pub fn free_port(setup: &Setup) -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if !setup.cluster.socket_dir().join(format!(".s.PGSQL.{port}.lock")).exists() {
            return port;
        }
    }
}

/// Restores into a fresh directory with `--start` and returns the running server.
pub fn restore_and_start(setup: &Setup, name: &str, args: &[&str]) -> (Restored, String) {
    let pgdata = setup.restore_dir(name);
    let port = free_port(setup);
    let port_text = port.to_string();
    let mut all = vec!["--archive-mode", "off", "--start", "--port", port_text.as_str()];
    all.extend_from_slice(args);
    let output = setup.restore(&pgdata, &all);
    let restored = Restored::of(setup, pgdata, port);
    assert_success(&output);
    (restored, String::from_utf8_lossy(&output.stdout).into_owned())
}
