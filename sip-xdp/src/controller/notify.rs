//! The systemd service protocol (`sd_notify`): READY once the filter is
//! attached and the first database round has answered (or failed: the
//! filter works without the database), STATUS lines with the state,
//! WATCHDOG pings from the controller's main loop so that a stalled loop is
//! restarted, RELOADING on SIGHUP and STOPPING on exit. Without
//! `NOTIFY_SOCKET` (not run by systemd) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

pub struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
    ready: bool,
    status: String,
}

impl Notifier {
    pub fn from_env() -> Self {
        Self {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog: sd_notify::watchdog_enabled(),
            ready: false,
            status: String::new(),
        }
    }

    fn send(&self, state: &[NotifyState]) {
        if self.enabled {
            if let Err(e) = sd_notify::notify(state) {
                tracing::debug!(error = %e, "sd_notify failed");
            }
        }
    }

    /// How often the main loop pings: three times per watchdog period.
    pub fn ping_every(&self) -> Option<Duration> {
        self.watchdog
            .map(|w| (w / 3).max(Duration::from_millis(100)))
    }

    pub fn ping(&self) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }

    /// Sends READY the first time, and the status whenever it changes.
    pub fn state(&mut self, status: String) {
        if !self.ready {
            self.ready = true;
            self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        } else if status != self.status {
            self.send(&[NotifyState::Status(&status)]);
        }
        self.status = status;
    }

    pub fn reloading(&self) {
        self.send(&[NotifyState::Reloading]);
    }

    pub fn reloaded(&self) {
        self.send(&[NotifyState::Ready, NotifyState::Status(&self.status)]);
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}
