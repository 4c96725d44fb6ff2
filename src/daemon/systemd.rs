//! Telling systemd how the daemon stands (`Type=notify`): READY once the configuration is valid
//! and the repository open, RELOADING/READY around a SIGHUP reload, STOPPING on shutdown,
//! `STATUS=` lines, and `WATCHDOG=1` pings at half of `WATCHDOG_USEC`, sent by the scheduler loop
//! so that a hung loop stops them and systemd restarts the daemon. Outside systemd
//! (`NOTIFY_SOCKET` unset) every call does nothing.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

pub struct Notifier {
    /// Half of the watchdog interval systemd asks for; `None`: no watchdog.
    ping_every: Option<Duration>,
    last_ping: Option<Instant>,
    last_status: String,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        Notifier {
            ping_every: sd_notify::watchdog_enabled().map(|usec| usec / 2),
            last_ping: None,
            last_status: String::new(),
        }
    }

    /// How long the scheduler loop may sleep for its next ping to be on time; `None`: no watchdog.
    pub fn until_next_ping(&self) -> Option<Duration> {
        let every = self.ping_every?;
        Some(self.last_ping.map_or(Duration::ZERO, |last| every.saturating_sub(last.elapsed())))
    }

    pub fn ready(&self) {
        send(&[NotifyState::Ready]);
    }

    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => send(&[NotifyState::Reloading, now]),
            Err(_) => send(&[NotifyState::Reloading]),
        }
    }

    pub fn stopping(&self) {
        send(&[NotifyState::Stopping]);
    }

    /// Sends `STATUS=text` when it differs from the last one sent.
    pub fn status(&mut self, text: &str) {
        if text != self.last_status {
            send(&[NotifyState::Status(text)]);
            self.last_status = text.to_owned();
        }
    }

    /// Pings the watchdog if half its interval has passed since the last ping.
    pub fn ping_if_due(&mut self) {
        let Some(every) = self.ping_every else {
            return;
        };
        if self.last_ping.is_none_or(|last| last.elapsed() >= every) {
            send(&[NotifyState::Watchdog]);
            self.last_ping = Some(Instant::now());
        }
    }
}

fn send(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot notify systemd through NOTIFY_SOCKET");
    }
}
