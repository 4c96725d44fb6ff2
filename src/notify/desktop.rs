//! The desktop sink: a notification through the freedesktop notification service on the D-Bus
//! session bus (notify-rust over zbus). Only a desktop session has one; on a server there is no
//! session bus, and the sink is skipped, saying so in one log line for the whole process.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the "no session bus" line was already logged by this process.
static NO_BUS_LOGGED: AtomicBool = AtomicBool::new(false);

/// What became of one desktop notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DesktopOutcome {
    Shown,
    /// No session bus here: nothing to show it on (not an error on a server).
    NoSessionBus,
    Failed(String),
}

/// Where the session bus would be, when the environment says there is one: the address
/// D-Bus clients are given, or the per-user socket systemd creates for a login session.
fn session_bus() -> Option<String> {
    if let Some(address) = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").filter(|address| !address.is_empty()) {
        return Some(address.to_string_lossy().into_owned());
    }
    let socket = PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR")?).join("bus");
    socket.exists().then(|| format!("unix:path={}", socket.display()))
}

/// Shows `title` and `body`, or returns at once when there is no session bus.
pub async fn show(title: &str, body: &str) -> DesktopOutcome {
    if session_bus().is_none() {
        if !NO_BUS_LOGGED.swap(true, Ordering::SeqCst) {
            tracing::info!(
                "desktop notifications skipped: no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is unset and there is no \
                 $XDG_RUNTIME_DIR/bus); set notify.desktop = false to stop trying"
            );
        }
        return DesktopOutcome::NoSessionBus;
    }
    let shown = notify_rust::Notification::new().appname("lifeboat").summary(title).body(body).show_async().await;
    match shown {
        Ok(_) => DesktopOutcome::Shown,
        Err(error) => DesktopOutcome::Failed(error.to_string()),
    }
}
