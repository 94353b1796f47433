//! A running portcullis: listeners bound, the live snapshot, reload and
//! shutdown. `main` and the integration tests both start it through here.

use crate::config::{self, Errors};
use crate::listener::{self, Listener, Shared};
use crate::reload::ReloadOutcome;
use crate::state::{ListenSpec, Snapshot, State};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

pub struct Server {
    shared: Arc<Shared>,
    listeners: Mutex<Vec<Listener>>,
    config_path: Option<PathBuf>,
    /// Serialises reloads (file watcher and SIGHUP may both fire).
    reload_lock: tokio::sync::Mutex<()>,
    /// Active health checks, kept in step with the live snapshot.
    health: crate::upstream::health::Checker,
    /// The latest reload's outcome (see `reload.rs`).
    outcomes: watch::Sender<ReloadOutcome>,
}

/// What a reload changed, for its log line (`Display` in `reload.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    pub hash: u64,
    pub previous_hash: u64,
    pub now: Counts,
    pub before: Counts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub routes: usize,
    pub upstreams: usize,
    pub listeners: usize,
    pub policies: usize,
}

impl Counts {
    fn of(s: &Snapshot) -> Self {
        Counts {
            routes: s.router.len(),
            upstreams: s.upstreams.len(),
            listeners: s.listeners.len(),
            policies: s.policies.len(),
        }
    }
}

impl Server {
    /// Bind every listener of `snap` and start serving. Must run inside a
    /// tokio runtime.
    pub async fn start(
        mut snap: Snapshot,
        config_path: Option<PathBuf>,
    ) -> io::Result<Arc<Server>> {
        snap.access_log = crate::access_log::Logger::for_settings(&snap.log, None)?;
        crate::tls::log_warnings(&snap);
        crate::gate::start(&snap);
        let specs = snap.listeners.clone();
        let limit = listener::limit::ConnLimit::new(snap.server.max_connections);
        let (shutdown, _) = watch::channel(false);
        let state = Arc::new(State::new(snap));
        state.metrics.set_connection_limit(limit.clone());
        let shared = Arc::new(Shared {
            state,
            limit,
            shutdown,
        });
        // Bind all before serving any, so a port conflict fails the start whole.
        let mut bound = Vec::new();
        for spec in specs {
            let l = listener::bind(&spec).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {}: {e}", spec.addr))
            })?;
            bound.push((spec, l));
        }
        let mut listeners = Vec::new();
        for (spec, l) in bound {
            listeners.push(listener::start(spec, l, shared.clone())?);
        }
        shared.state.set_bound_https_port(https_port(&listeners));
        let health = crate::upstream::health::Checker::default();
        health.sync(&shared.state.load());
        tokio::spawn(crate::upstream::pool::sweep(Arc::downgrade(&shared.state)));
        crate::memory::start();
        Ok(Arc::new(Server {
            shared,
            listeners: Mutex::new(listeners),
            config_path,
            reload_lock: tokio::sync::Mutex::new(()),
            health,
            outcomes: watch::Sender::new(ReloadOutcome::default()),
        }))
    }

    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// Changes after each reload attempt (file watcher or SIGHUP).
    pub fn subscribe_reloads(&self) -> watch::Receiver<ReloadOutcome> {
        self.outcomes.subscribe()
    }

    pub fn state(&self) -> &Arc<State> {
        &self.shared.state
    }

    /// The bound addresses, in the order of the config's `[[listen]]`
    /// entries (port 0 resolved to the real port).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .lock()
            .map(|l| l.iter().map(|l| l.local_addr).collect())
            .unwrap_or_default()
    }

    pub fn listener_specs(&self) -> Vec<(ListenSpec, SocketAddr)> {
        self.listeners
            .lock()
            .map(|l| l.iter().map(|l| (l.spec.clone(), l.local_addr)).collect())
            .unwrap_or_default()
    }

    /// Compile the config file again and swap it in; on any error the
    /// running config stays and the errors are returned.
    pub async fn reload(&self) -> Result<ReloadSummary, Errors> {
        self.reload_by("request").await
    }

    /// `reload`, with what triggered it for the log line.
    pub async fn reload_by(&self, trigger: &str) -> Result<ReloadSummary, Errors> {
        let _g = self.reload_lock.lock().await;
        crate::reload::notify_reloading();
        let prev_hash = self.shared.state.load().hash;
        let result = self.compile_and_apply().await;
        let published = crate::reload::finished(trigger, prev_hash, &result);
        self.shared.state.metrics.reloaded(result.is_ok());
        self.outcomes.send_modify(|o| {
            o.seq += 1;
            o.result = published;
        });
        result
    }

    async fn compile_and_apply(&self) -> Result<ReloadSummary, Errors> {
        let Some(path) = self.config_path.clone() else {
            let mut e = Errors::default();
            e.add("", "no config file to reload from");
            return Err(e);
        };
        let prev = self.shared.state.load();
        let compiled = tokio::task::spawn_blocking(move || config::load_file(&path, Some(&prev)))
            .await
            .unwrap_or_else(|e| {
                let mut errs = Errors::default();
                errs.add("", format!("config compiler failed: {e}"));
                Err(errs)
            });
        let snap = match compiled {
            Ok(s) => s,
            Err(errs) => return Err(errs),
        };
        self.apply(snap).await
    }

    /// Swap in an already compiled snapshot.
    pub async fn apply(&self, mut snap: Snapshot) -> Result<ReloadSummary, Errors> {
        let current = self.shared.state.load();
        match crate::access_log::Logger::for_settings(&snap.log, current.access_log.as_ref()) {
            Ok(l) => snap.access_log = l,
            Err(e) => {
                let mut errs = Errors::default();
                errs.add("log.access", format!("cannot open: {e}"));
                return Err(errs);
            }
        }
        drop(current);
        crate::tls::log_warnings(&snap);
        crate::gate::start(&snap);
        let old = self.shared.state.swap(snap);
        let new = self.shared.state.load();
        self.health.sync(&new);
        let summary = ReloadSummary {
            hash: new.hash,
            previous_hash: old.hash,
            now: Counts::of(&new),
            before: Counts::of(&old),
        };
        if old.server.threads != new.server.threads {
            tracing::warn!("server.threads changed: takes effect at the next restart");
        }
        if old.server.cpu_affinity != new.server.cpu_affinity {
            tracing::warn!("server.cpu_affinity changed: takes effect at the next restart");
        }
        if old.server.scheduling_policy != new.server.scheduling_policy {
            tracing::warn!("server.scheduling_policy changed: takes effect at the next restart");
        }
        if old.server.nice != new.server.nice {
            tracing::warn!("server.nice changed: takes effect at the next restart");
        }
        self.shared
            .limit
            .resize(old.server.max_connections, new.server.max_connections);
        self.rebind(&new.listeners);
        Ok(summary)
    }

    /// Keep listeners whose address and kind are unchanged, stop removed ones,
    /// bind new ones. A new address that cannot be bound is logged and
    /// skipped; the others still apply.
    fn rebind(&self, specs: &[ListenSpec]) {
        let Ok(mut current) = self.listeners.lock() else {
            return;
        };
        let mut kept = Vec::new();
        for l in current.drain(..) {
            if specs.iter().any(|s| s.same_socket(&l.spec)) {
                kept.push(l);
            } else {
                tracing::info!(addr = %l.local_addr, "listener removed; draining");
                l.stop();
            }
        }
        let mut next = Vec::new();
        for spec in specs {
            if let Some(pos) = kept.iter().position(|l| l.spec.same_socket(spec)) {
                let mut l = kept.remove(pos);
                l.update(spec);
                next.push(l);
                continue;
            }
            match listener::bind(spec)
                .and_then(|l| listener::start(spec.clone(), l, self.shared.clone()))
            {
                Ok(l) => next.push(l),
                Err(e) => {
                    tracing::error!(addr = %spec.addr, error = %e, "cannot bind new listener")
                }
            }
        }
        self.shared.state.set_bound_https_port(https_port(&next));
        *current = next;
    }

    /// Stop accepting, let requests in flight finish within
    /// `shutdown_timeout`, then return. Returns false if the timeout cut
    /// some connections short.
    pub async fn shutdown(&self) -> bool {
        let timeout = self.shared.state.load().server.shutdown_timeout;
        if let Ok(l) = self.listeners.lock() {
            l.iter().for_each(Listener::stop);
        }
        let _ = self.shared.shutdown.send(true);
        self.shared.state.idle.wake_all();
        // Parked connections are idle: closed now, as idle ones are.
        self.shared.state.parked.close_all();
        tokio::time::timeout(timeout, self.shared.shutdown.closed())
            .await
            .is_ok()
    }
}

/// The first TLS listener's bound port, for the redirect listener.
fn https_port(listeners: &[Listener]) -> Option<u16> {
    listeners
        .iter()
        .find(|l| l.spec.kind == crate::state::ListenKind::Tls)
        .map(|l| l.local_addr.port())
}

/// Tell systemd we are ready, then serve until SIGTERM or SIGINT (then
/// drain and exit 0); SIGHUP reloads; SIGUSR1 opens the access log file
/// again (nginx's signal for it, which logrotate scripts send).
pub async fn run_until_signalled(server: Arc<Server>) -> std::process::ExitCode {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return std::process::ExitCode::FAILURE;
    };
    // Only now: a reload systemd sends right after READY=1 must find the
    // SIGHUP handler in place (the default action would end the process;
    // SIGUSR1's too).
    crate::reload::notify_ready(&server);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let _ = server.reload_by("SIGHUP").await;
            }
            _ = usr1.recv() => match server.state().load().access_log.as_deref() {
                Some(log) => log.reopen(),
                None => tracing::info!("SIGUSR1: no access log file to reopen"),
            },
        }
    }
    tracing::info!("shutting down: no new connections, draining requests in flight");
    crate::reload::notify_stopping();
    if server.shutdown().await {
        tracing::info!("all connections drained");
    } else {
        tracing::warn!("shutdown_timeout reached; closing remaining connections");
    }
    // The process ends on return: the last requests' lines first. This
    // blocks the accepting runtime, which has nothing left to do.
    if let Some(log) = server.state().load().access_log.clone() {
        log.finish();
    }
    std::process::ExitCode::SUCCESS
}
