//! Access log: one line per request, formatted on the thread that served
//! it and written by a dedicated thread (writer.rs), so that a request
//! pays for its line's bytes and nothing else: no allocation handed over,
//! no thread woken, no write waited for.

mod dest;
mod format;
mod writer;

pub use format::clf_time;

use crate::state::{AccessFormat, AccessTarget, LogSettings};
use http::HeaderValue;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

pub struct Entry {
    pub time: SystemTime,
    pub start: Instant,
    pub client: IpAddr,
    pub method: http::Method,
    /// The target as the client sent it (its path and query).
    pub target: Option<http::uri::PathAndQuery>,
    pub version: http::Version,
    pub status: u16,
    pub bytes: u64,
    pub referer: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    /// The request's host, for the JSON format only (empty otherwise).
    pub host: String,
    pub request_id: Option<HeaderValue>,
    /// The answering server's label (`upstream::Server::label`).
    pub upstream: Option<Arc<str>>,
    pub attempts: u32,
    /// From the first attempt's start to the answering upstream's
    /// response head (nginx's `$upstream_header_time`): the app's own time
    /// next to `rt`, the whole request's.
    pub upstream_head: Option<Duration>,
    /// The name a route's `basic_auth` let through (nginx's `$remote_user`).
    pub user: Option<Arc<str>>,
    /// Why a request was refused (JWT gate), for the log only.
    pub reason: Option<&'static str>,
    /// For a head refused before it could be parsed: its first line as
    /// received (escaped), logged in place of method, target and protocol.
    pub raw_line: Option<String>,
    /// Query parameters whose values the log must not show: the names a
    /// JWT policy reads tokens from (`query:NAME`), on every line, whatever
    /// the route, since a token is a credential wherever it was sent.
    pub hidden: Option<Arc<[String]>>,
    pub logger: Arc<Logger>,
}

impl Entry {
    fn target(&self) -> &str {
        self.target.as_ref().map_or("/", |t| t.as_str())
    }

    /// Format the finished entry into this thread's slot for the writer.
    pub fn emit(self: Box<Self>) {
        let micros = self.start.elapsed().as_micros() as u64;
        let format = self.logger.settings.1;
        self.logger.shared.push(|slot| {
            match format {
                AccessFormat::Combined => {
                    format::combined(&mut slot.buf, &mut slot.clf, &self, micros)
                }
                AccessFormat::Json => format::json(&mut slot.buf, &self, micros),
            }
            slot.buf.push(b'\n');
        });
    }
}

/// One access log destination with its writer thread. It belongs to the
/// running server's snapshot; a reload with the same `[log]` keeps it.
pub struct Logger {
    settings: (AccessTarget, AccessFormat),
    shared: Arc<writer::Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Logger {
    /// The logger for `s`: `prev` when it already writes there, a new one
    /// otherwise, none when the access log is off.
    pub fn for_settings(
        s: &LogSettings,
        prev: Option<&Arc<Logger>>,
    ) -> std::io::Result<Option<Arc<Logger>>> {
        let want = (s.access.clone(), s.format);
        if let Some(cur) = prev {
            if cur.settings == want {
                return Ok(Some(cur.clone()));
            }
        }
        let out: Box<dyn dest::Destination> = match &s.access {
            AccessTarget::Off => return Ok(None),
            AccessTarget::Stdout => Box::new(std::io::stdout()),
            AccessTarget::File(p) => Box::new(dest::LogFile::open(p.clone())?),
        };
        let shared = Arc::new(writer::Shared::default());
        // The writer ends when the logger is dropped (a reload changed
        // `[log]` and the last entry made under the old one was written)
        // or finished. It says when it runs under the workers' policy, so
        // that the server is not announced ready before.
        let (set_tx, set) = std::sync::mpsc::channel::<()>();
        let w = shared.clone();
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                if let Err(e) = crate::workers::join_policy() {
                    tracing::debug!(error = %e, "the access log's writer keeps the process's scheduling policy or nice value");
                }
                let _ = set_tx.send(());
                writer::run(&w, out)
            })?;
        // An error only if the thread died before sending: nothing to wait for.
        let _ = set.recv();
        Ok(Some(Arc::new(Logger {
            settings: want,
            shared,
            thread: Mutex::new(Some(thread)),
        })))
    }

    /// Whether lines need the request's host (only JSON shows it).
    pub fn wants_host(&self) -> bool {
        self.settings.1 == AccessFormat::Json
    }

    /// Open the log file again (SIGUSR1, after a rotation); nothing for
    /// stdout.
    pub fn reopen(&self) {
        self.shared.reopen();
    }

    /// Write every line so far and stop the writer: at the process's end,
    /// so that the last requests' lines are not lost with it.
    pub fn finish(&self) {
        self.shared.close();
        let t = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

impl Drop for Logger {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// `text` with the value of each query parameter named in `hidden`
/// replaced by `REDACTED`. A parameter starts after the first `?` or an
/// `&`; its value ends at `&`, `#`, a space (in a request line) or the end.
pub fn redact<'a>(text: &'a str, hidden: &[String]) -> Cow<'a, str> {
    let Some(q) = text.find('?') else {
        return Cow::Borrowed(text);
    };
    let b = text.as_bytes();
    let mut out = String::new();
    let mut done = 0;
    let mut i = q;
    while i < b.len() {
        if b[i] == b'?' || b[i] == b'&' {
            // After an ASCII byte: a char boundary.
            let at = &text[i + 1..];
            let named = hidden
                .iter()
                .find(|n| at.starts_with(n.as_str()) && at.as_bytes().get(n.len()) == Some(&b'='));
            if let Some(n) = named {
                let value = i + 1 + n.len() + 1;
                let end = text[value..]
                    .find(['&', '#', ' '])
                    .map_or(b.len(), |e| value + e);
                out.push_str(&text[done..value]);
                out.push_str("REDACTED");
                done = end;
                i = end;
                continue;
            }
        }
        i += 1;
    }
    if done == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[done..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests;
