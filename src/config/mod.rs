//! Reading the TOML file and compiling it into a runtime `Snapshot`.
//!
//! Every problem is collected with its place (`route[2].upstream: ...`), so
//! `portcullis check` and a failed reload report them all at once.

pub mod compile;
pub mod raw;
pub mod units;

use crate::state::Snapshot;
use raw::RawConfig;
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub place: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.place.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.place, self.message)
        }
    }
}

#[derive(Debug, Default)]
pub struct Errors(pub Vec<ConfigError>);

impl Errors {
    pub fn add(&mut self, place: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            place: place.into(),
            message: message.into(),
        });
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

/// Where the config came from: relative paths in it are resolved against the
/// directory of the file.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: Option<PathBuf>,
    pub base_dir: PathBuf,
}

impl Source {
    pub fn file(path: &Path) -> Self {
        let base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Source {
            path: Some(path.to_path_buf()),
            base_dir,
        }
    }

    pub fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

/// Read and compile a config file. `prev` is the running snapshot, whose
/// upstream pools are carried over where their servers did not change.
pub fn load_file(path: &Path, prev: Option<&Snapshot>) -> Result<Snapshot, Errors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let mut errs = Errors::default();
        errs.add(
            path.display().to_string(),
            format!("cannot read config file: {e}"),
        );
        errs
    })?;
    load_str(&text, &Source::file(path), prev)
}

pub fn load_str(text: &str, src: &Source, prev: Option<&Snapshot>) -> Result<Snapshot, Errors> {
    let (raw, broken, mut errs) = parse(text)?;
    match compile::compile(raw, &broken, src, prev, hash(text)) {
        Ok(snap) if errs.is_empty() => Ok(snap),
        Ok(_) => Err(errs),
        Err(more) => {
            errs.0.extend(more.0);
            Err(errs)
        }
    }
}

/// Entries that failed to deserialize: compiled as absent, and not the
/// subject of follow-on errors (a route naming a broken upstream).
#[derive(Debug, Default)]
pub struct Broken {
    pub listen: Vec<usize>,
    pub route: Vec<usize>,
    pub upstream: Vec<String>,
    pub jwt: Vec<String>,
    pub tls: bool,
}

/// 1-based line and column (in characters) of byte `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    // The parser's spans fall on character boundaries; the whole text
    // stands in for one that would not.
    let before = text.get(..at).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

fn hash(text: &str) -> u64 {
    // FNV-1a: stable across runs, so the reload log line can be compared
    // with `portcullis check` output.
    text.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Deserialize section by section so that one bad key does not hide the
/// problems in the other sections.
pub fn parse(text: &str) -> Result<(RawConfig, Broken, Errors), Errors> {
    let mut errs = Errors::default();
    let mut broken = Broken::default();
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            // Not `e.to_string()`: it draws the offending line, which may
            // hold a secret (`secret = { value = ... }`).
            let (line, col) = line_col(text, e.span().map_or(0, |s| s.start));
            errs.add(
                "",
                format!(
                    "TOML syntax at line {line}, column {col}: {}",
                    e.message().trim_end()
                ),
            );
            return Err(errs);
        }
    };
    let mut raw = RawConfig::default();
    for (key, value) in table {
        match key.as_str() {
            "server" => section(value, "server", &mut errs, |v| raw.server = v),
            "log" => section(value, "log", &mut errs, |v| raw.log = v),
            "tls" => {
                let n = errs.0.len();
                section(value, "tls", &mut errs, |v| raw.tls = Some(v));
                broken.tls = errs.0.len() > n;
            }
            "listen" => broken.listen = list(value, "listen", &mut errs, &mut raw.listen),
            "route" => broken.route = list(value, "route", &mut errs, &mut raw.route),
            "upstream" => broken.upstream = named(value, "upstream", &mut errs, &mut raw.upstream),
            "jwt" => broken.jwt = named(value, "jwt", &mut errs, &mut raw.jwt),
            other => errs.add(
                other,
                "unknown section; expected server, log, listen, tls, upstream, jwt or route",
            ),
        }
    }
    Ok((raw, broken, errs))
}

fn section<T: DeserializeOwned>(
    v: toml::Value,
    place: &str,
    errs: &mut Errors,
    put: impl FnOnce(T),
) {
    if !v.is_table() {
        errs.add(place, format!("must be a table: [{place}]"));
        return;
    }
    match from_value::<T>(v, place) {
        Ok(t) => put(t),
        Err((at, msg)) => errs.add(at, msg),
    }
}

/// Returns the indexes of broken entries. Indexes stay aligned with the
/// file: a broken entry is replaced by a default that the compiler skips.
fn list<T: DeserializeOwned + Default>(
    v: toml::Value,
    place: &str,
    errs: &mut Errors,
    out: &mut Vec<T>,
) -> Vec<usize> {
    let toml::Value::Array(items) = v else {
        errs.add(place, format!("must be an array of tables: [[{place}]]"));
        return Vec::new();
    };
    let mut broken = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        if !item.is_table() {
            errs.add(
                format!("{place}[{i}]"),
                format!("must be a table: [[{place}]] (the value given is not shown)"),
            );
            out.push(T::default());
            broken.push(i);
            continue;
        }
        match from_value::<T>(item, &format!("{place}[{i}]")) {
            Ok(t) => out.push(t),
            Err((at, msg)) => {
                errs.add(at, msg);
                out.push(T::default());
                broken.push(i);
            }
        }
    }
    broken
}

fn named<T: DeserializeOwned>(
    v: toml::Value,
    place: &str,
    errs: &mut Errors,
    out: &mut std::collections::BTreeMap<String, T>,
) -> Vec<String> {
    let toml::Value::Table(items) = v else {
        errs.add(
            place,
            format!("must be a table of named entries: [{place}.NAME]"),
        );
        return Vec::new();
    };
    let mut broken = Vec::new();
    for (name, item) in items {
        // `[jwt]` then `secret = "..."` makes an entry named "secret" whose
        // value is the secret: serde's "invalid type" message would quote it.
        if !item.is_table() {
            errs.add(
                format!("{place}.{name}"),
                format!(
                    "must be a table: each entry of [{place}] is a [{place}.NAME] table, \
                     with its settings under that header (the value given is not shown)"
                ),
            );
            broken.push(name);
            continue;
        }
        match from_value::<T>(item, &format!("{place}.{name}")) {
            Ok(t) => {
                out.insert(name, t);
            }
            Err((at, msg)) => {
                errs.add(at, msg);
                broken.push(name);
            }
        }
    }
    broken
}

/// Deserialize the table at `place`; an error is placed at the key inside
/// it that failed (`server.threads`, `upstream.app.servers[1]`), not just
/// at the table.
fn from_value<T: DeserializeOwned>(v: toml::Value, place: &str) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            place.to_string()
        } else {
            format!("{place}.{path}")
        };
        (at, clean(e.into_inner()))
    })
}

fn clean(e: toml::de::Error) -> String {
    e.message().trim_end().to_string()
}

#[cfg(test)]
mod tests;
