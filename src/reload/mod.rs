//! Reloads seen from outside: what triggers them (`watcher`: the config
//! file and every file it names), the one log line each reload writes, and
//! the systemd notifications around start, reload and stop.
//!
//! A reload itself (compile on a blocking thread, swap, rebind listeners)
//! is `Server::reload` in `server.rs`.

mod watcher;

pub use watcher::{watch, WatchHandle, DEBOUNCE};

use crate::config::ConfigError;
use crate::server::{ReloadSummary, Server};

/// The outcome of the latest reload, published by the server so the watcher
/// can re-sync its watches and tests can wait for a reload without sleeping.
#[derive(Debug, Clone, Default)]
pub struct ReloadOutcome {
    /// Counts reloads attempted since start; 0 = none yet.
    pub seq: u64,
    pub result: Option<Result<ReloadSummary, Vec<ConfigError>>>,
}

/// Log the reload's one line, tell systemd the reload is over and publish
/// the outcome.
pub(crate) fn finished(
    trigger: &str,
    prev_hash: u64,
    result: &Result<ReloadSummary, crate::config::Errors>,
) -> Option<Result<ReloadSummary, Vec<ConfigError>>> {
    match result {
        Ok(s) => {
            tracing::info!(
                trigger,
                hash = %format_args!("{:016x}", s.hash),
                changed = %s,
                "config reloaded"
            );
            notify(&[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status(&format!(
                    "serving; config {:016x} reloaded",
                    s.hash
                )),
            ]);
            Some(Ok(s.clone()))
        }
        Err(errs) => {
            let causes: Vec<String> = errs.0.iter().map(one_line).collect();
            tracing::error!(
                trigger,
                hash = %format_args!("{prev_hash:016x}"),
                problems = causes.len(),
                errors = %causes.join("; "),
                "config reload failed; still serving the running config"
            );
            notify(&[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status(&format!(
                    "serving config {prev_hash:016x}; last reload failed ({} problem(s))",
                    causes.len()
                )),
            ]);
            Some(Err(errs.0.clone()))
        }
    }
}

/// An error on one line (a parser's message may span several), so each
/// reload is one log line.
fn one_line(e: &ConfigError) -> String {
    let text = e.to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    parts.join(" ")
}

impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.hash == self.previous_hash {
            f.write_str("nothing (same config); ")?;
        }
        let pairs = [
            ("routes", self.before.routes, self.now.routes),
            ("upstreams", self.before.upstreams, self.now.upstreams),
            ("listeners", self.before.listeners, self.now.listeners),
            ("policies", self.before.policies, self.now.policies),
        ];
        for (i, (name, before, now)) in pairs.into_iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if before == now {
                write!(f, "{name} {now}")?;
            } else {
                write!(f, "{name} {before}->{now}")?;
            }
        }
        write!(f, "; previous hash {:016x}", self.previous_hash)
    }
}

/// Send to systemd's `NOTIFY_SOCKET`, if any. A failure is logged, never
/// fatal: a proxy must not stop because its supervisor went away.
pub fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// READY=1 once every listener is bound.
pub fn notify_ready(server: &Server) {
    let addrs: Vec<String> = server
        .local_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    let status = format!(
        "serving on {}; config {:016x}",
        addrs.join(" "),
        server.state().load().hash
    );
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
}

/// RELOADING=1 with the monotonic time systemd wants alongside it.
pub fn notify_reloading() {
    let mut states = vec![
        sd_notify::NotifyState::Reloading,
        sd_notify::NotifyState::Status("reloading the config"),
    ];
    if let Ok(t) = sd_notify::NotifyState::monotonic_usec_now() {
        states.push(t);
    }
    notify(&states);
}

pub fn notify_stopping() {
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping: draining connections"),
    ]);
}
