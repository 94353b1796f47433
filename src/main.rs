//! The `portcullis` command: CLI parsing, tracing set-up, the runtime. No
//! proxy logic lives here.

use clap::{Parser, Subcommand};
use portcullis::config;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "A reverse proxy with TLS, static files, load balancing and a JWT gate"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Config file (for the default `run`).
    #[arg(
        short,
        long,
        env = "PORTCULLIS_CONFIG",
        default_value = "/etc/portcullis/portcullis.toml",
        global = true
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the proxy (the default).
    Run,
    /// Compile the config and report every problem with its place; exit 1 on any.
    Check,
    /// Write a self-signed development certificate and key (not for production).
    Cert {
        /// DNS names and IP addresses, comma-separated: localhost,127.0.0.1
        #[arg(long, value_delimiter = ',', required = true)]
        names: Vec<String>,
        /// Directory for NAME.crt and NAME.key (NAME: the first name).
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Mint a token that a [jwt.NAME] policy accepts, for testing a deployment.
    Token(portcullis::gate::mint::TokenArgs),
    /// Print a `basic_auth` users-file line for NAME, the password read from
    /// standard input (as `htpasswd -nB`, without apache2-utils).
    Htpasswd {
        name: String,
        /// bcrypt's cost: each step doubles the work of a check and of a guess.
        #[arg(long, default_value_t = 10)]
        cost: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cmd = cli.cmd.unwrap_or(Cmd::Run);
    if !matches!(cmd, Cmd::Run) {
        // A report piped into `head` ends quietly, as other tools' do, not
        // with a panic on EPIPE. The server keeps Rust's ignored SIGPIPE: a
        // client gone is an error to handle, not a reason to die.
        // SAFETY: no other thread runs yet; SIG_DFL is a valid disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cmd {
        Cmd::Run => run(&cli.config),
        Cmd::Check => check(&cli.config),
        Cmd::Cert { names, out, force } => {
            match portcullis::tls::write_dev_cert(&names, &out, force) {
                Ok((cert, key)) => {
                    println!("wrote {} and {} (self-signed, not for production)\n\n[[tls.cert]]\ncert = {:?}\nkey = {:?}", cert.display(), key.display(), cert.display().to_string(), key.display().to_string());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("portcullis cert: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Token(args) => portcullis::gate::mint::run(&cli.config, &args),
        Cmd::Htpasswd { name, cost } => {
            let mut password = String::new();
            let read = std::io::stdin().read_line(&mut password);
            let password = password.trim_end_matches(['\r', '\n']);
            match read
                .map_err(|e| e.to_string())
                .and_then(|_| portcullis::basic_auth::htpasswd_line(&name, password, cost))
            {
                Ok(line) => {
                    println!("{line}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("portcullis htpasswd: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match config::load_file(path, None) {
        Ok(snap) => {
            println!("{}: ok (hash {:016x})", path.display(), snap.hash);
            let s = &snap.server;
            // What `run` would do here, on this machine's CPUs.
            match portcullis::workers::placement(&s.cpu_affinity, s.threads) {
                Some(cpus) => print!("  workers  {}, bound to CPUs {cpus:?}", s.threads),
                None => print!("  workers  {}, not bound to CPUs", s.threads),
            }
            println!(
                ", scheduling policy {}, nice {}",
                s.scheduling_policy.name(),
                s.nice.value
            );
            let size = config::units::format_size;
            println!(
                "  bodies   up to {}; read whole, up to {} each in memory ({} in all), larger in {} ({} in all)",
                size(s.max_body),
                size(s.max_body_in_memory),
                size(s.max_buffered),
                s.body_temp_dir.display(),
                size(s.max_spilled)
            );
            for l in &snap.listeners {
                println!("  listen   {} ({:?})", l.addr, l.kind);
            }
            portcullis::tls::summary(&snap)
                .iter()
                .for_each(|l| println!("{l}"));
            for (name, u) in &snap.upstreams {
                let servers: Vec<String> = u
                    .servers
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        if u.is_backup(i) {
                            format!("{} (backup)", s.label)
                        } else {
                            s.label.to_string()
                        }
                    })
                    .collect();
                let answers = match (u.settings.buffer_responses, u.settings.max_read_ahead) {
                    (false, _) => "answers at the client's pace".to_string(),
                    (true, 0) => "answers read ahead of slow clients, in memory only".to_string(),
                    (true, n) => format!(
                        "answers read ahead of slow clients, up to {} each in a file",
                        config::units::format_size(n)
                    ),
                };
                println!(
                    "  upstream {name}: {} ({:?}), {answers}",
                    servers.join(", "),
                    u.settings.balance
                );
            }
            let pages = |p: &portcullis::handler::error_page::ErrorPages| {
                let each: Vec<String> =
                    p.0.iter()
                        .map(|(st, pg)| format!("{st}={}", pg.path.display()))
                        .collect();
                each.join(",")
            };
            if let Some(p) = &snap.error_pages {
                println!("  errors   {}", pages(p));
            }
            for name in snap.policies.keys() {
                println!("  jwt      {name}");
            }
            for r in snap.router.routes() {
                let host = match &r.host {
                    portcullis::router::HostMatch::Any => "*".to_string(),
                    portcullis::router::HostMatch::Exact(h) => h.clone(),
                    portcullis::router::HostMatch::Suffix(s) => format!("*{s}"),
                };
                let action = match &r.action {
                    portcullis::router::Action::Upstream(u) => format!("upstream {}", u.name),
                    portcullis::router::Action::Static(_) => "static".to_string(),
                    portcullis::router::Action::Redirect { to, status } => {
                        format!("redirect {} {to}", status.as_u16())
                    }
                    portcullis::router::Action::Respond { status, .. } => {
                        format!("respond {}", status.as_u16())
                    }
                    portcullis::router::Action::Metrics => "metrics".to_string(),
                };
                let jwt = r
                    .jwt
                    .as_ref()
                    .map(|p| format!(" jwt={}", p.name))
                    .unwrap_or_default();
                let addrs = r.addrs.as_ref().map(|a| a.to_string()).unwrap_or_default();
                let limit = r
                    .rate_limit
                    .as_ref()
                    .map(|l| match &l.zone {
                        Some(z) => format!(" rate={} burst={} zone={z}", l.rate, l.burst),
                        None => format!(" rate={} burst={}", l.rate, l.burst),
                    })
                    .unwrap_or_default();
                // Only a route's own: the server's is on the bodies line.
                let body = if r.max_body == s.max_body {
                    String::new()
                } else {
                    format!(" max_body={}", size(r.max_body))
                };
                let gzip = if r.compress { " compress" } else { "" };
                let strip = if r.strip_prefix { " strip_prefix" } else { "" };
                let internal = if r.internal { " internal" } else { "" };
                let timeout = r
                    .timeout
                    .map(|t| format!(" timeout={t:?}"))
                    .unwrap_or_default();
                let basic = r
                    .basic_auth
                    .as_ref()
                    .map(|a| {
                        let cost = match a.costs() {
                            (lo, hi) if lo == hi => lo.to_string(),
                            (lo, hi) => format!("{lo}..{hi}(mixed)"),
                        };
                        format!(" basic_auth={} users cost={cost}", a.users())
                    })
                    .unwrap_or_default();
                // Names only: a value may be a secret the app checks.
                let set: Vec<&str> = r
                    .request_headers
                    .iter()
                    .map(|s| s.name().as_str())
                    .collect();
                let set = if set.is_empty() {
                    String::new()
                } else {
                    format!(" request_headers={}", set.join(","))
                };
                // Only where a route's differ from the server's.
                let errs = match (&r.error_pages, &snap.error_pages) {
                    (Some(a), Some(b)) if std::sync::Arc::ptr_eq(a, b) => String::new(),
                    (Some(a), _) => format!(" error_pages={}", pages(a)),
                    (None, _) => String::new(),
                };
                println!(
                    "  route[{}] {host}{} -> {action}{internal}{jwt}{basic}{addrs}{limit}{strip}{set}{body}{timeout}{gzip}{errs}",
                    r.index, r.prefix
                );
            }
            ExitCode::SUCCESS
        }
        Err(errs) => {
            eprintln!("{}: {} problem(s)", path.display(), errs.0.len());
            for e in &errs.0 {
                eprintln!("  {e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Libraries that log what a client sent as it came: at debug, h2 writes
/// a malformed request's `:path` and `:authority` (a token in the query
/// string, a password in the authority). hyper logs nothing as built here
/// (its tracing is an unstable opt-in); it is held too should that change.
const QUIET: &[&str] = &["h2", "hyper"];

/// `spec` (RUST_LOG or the config's level) with `QUIET` crates held at info
/// when it turns on debug or trace for everything, unless it names them:
/// `debug` alone means debug for everything else, `debug,h2=debug` still
/// gets h2's debug lines (and `debug,h2::proto=debug` that module's: the
/// more specific directive wins).
fn filter_spec(spec: &str) -> String {
    let directives: Vec<&str> = spec.split(',').map(str::trim).collect();
    let global_verbose = directives
        .iter()
        .any(|d| d.eq_ignore_ascii_case("debug") || d.eq_ignore_ascii_case("trace"));
    let mut out = spec.to_string();
    if !global_verbose {
        return out;
    }
    for name in QUIET {
        let named = directives.iter().any(|d| {
            let target = d.split(['=', '[']).next().unwrap_or("");
            target == *name
        });
        if !named {
            out.push_str(&format!(",{name}=info"));
        }
    }
    out
}

fn log_filter(level: &str, rust_log: Option<&str>) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    rust_log
        .and_then(|s| EnvFilter::try_new(filter_spec(s)).ok())
        .unwrap_or_else(|| EnvFilter::new(filter_spec(level)))
}

fn init_tracing(level: &str) {
    let filter = log_filter(level, std::env::var("RUST_LOG").ok().as_deref());
    // Under systemd, journald adds its own timestamps and shows no colours.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if journald {
        builder.with_ansi(false).without_time().init();
    } else {
        builder.init();
    }
}

fn run(path: &Path) -> ExitCode {
    let snap = match config::load_file(path, None) {
        Ok(s) => s,
        Err(errs) => {
            eprintln!("{}: {} problem(s)", path.display(), errs.0.len());
            for e in &errs.0 {
                eprintln!("  {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    init_tracing(&snap.log.level);
    // Connections are served on `threads` worker threads (workers.rs); this
    // runtime only accepts them, handles signals and reloads.
    let s = &snap.server;
    if let Err(e) =
        portcullis::workers::start(s.threads, &s.cpu_affinity, s.scheduling_policy, s.nice)
    {
        tracing::error!(error = %e, "cannot start the worker threads");
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let server = match portcullis::Server::start(snap, Some(path.to_path_buf())).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(config = %path.display(), version = env!("CARGO_PKG_VERSION"), "portcullis started");
        // Runs for the process's life; idle while `server.watch = false`.
        let _watcher = portcullis::reload::watch(server.clone())
            .map_err(|e| tracing::error!(error = %e, "cannot watch the config file; SIGHUP still reloads"));
        portcullis::server::run_until_signalled(server).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Which of a set of events `level` and `rust_log` let through.
    fn logged(level: &str, rust_log: Option<&str>) -> String {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(log_filter(level, rust_log))
            .with_ansi(false)
            .without_time()
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "h2::server", "h2-debug");
            tracing::info!(target: "h2::server", "h2-info");
            tracing::debug!(target: "hyper::proto", "hyper-debug");
            tracing::debug!(target: "portcullis::gate", "ours-debug");
        });
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let mut seen: Vec<&str> = ["h2-debug", "h2-info", "hyper-debug", "ours-debug"]
            .into_iter()
            .filter(|m| text.contains(m))
            .collect();
        seen.sort();
        seen.join(" ")
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn debug_for_everything_keeps_h2_and_hyper_at_info_unless_named() {
        assert_eq!(logged("debug", None), "h2-info ours-debug");
        assert_eq!(logged("trace", None), "h2-info ours-debug");
        assert_eq!(logged("info", Some("debug")), "h2-info ours-debug");
        assert_eq!(
            logged("info", Some("debug,h2=debug")),
            "h2-debug h2-info ours-debug"
        );
        assert_eq!(logged("info", Some("h2=debug")), "h2-debug h2-info");
        assert_eq!(
            logged("info", Some("debug,h2::server=debug,hyper=trace")),
            "h2-debug h2-info hyper-debug ours-debug"
        );
        // A quieter level is not raised to info for them.
        assert_eq!(logged("warn", None), "");
        assert_eq!(logged("info", None), "h2-info");
        // An unusable RUST_LOG falls back to the config's level, as before.
        assert_eq!(logged("debug", Some("h2=loud")), "h2-info ours-debug");
    }
}
