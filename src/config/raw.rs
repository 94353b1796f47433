//! The TOML file as serde sees it: one struct per table, no logic.
//!
//! Durations and sizes stay strings here so that the compiler can report a bad
//! value with its place (`server.idle_timeout: "6o s" is not a duration`)
//! instead of serde stopping at the first one.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub listen: Vec<RawListen>,
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub upstream: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    pub jwt: BTreeMap<String, RawJwt>,
    #[serde(default)]
    pub route: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub threads: Option<usize>,
    /// `"auto"`, `"off"` or a list of CPU numbers: checked by the compiler,
    /// which can say which.
    pub cpu_affinity: Option<toml::Value>,
    pub scheduling_policy: Option<String>,
    pub nice: Option<i64>,
    pub shutdown_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub header_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_body: Option<String>,
    /// All bodies held in memory at once (`buffer_requests`,
    /// `buffer_chunked`, `buffer_responses`).
    pub max_buffered: Option<String>,
    /// Larger bodies read whole, and what an answer read ahead holds past
    /// this, go to a temporary file instead.
    pub max_body_in_memory: Option<String>,
    pub body_temp_dir: Option<String>,
    /// All request bodies in temporary files at once, on disk; answers
    /// read ahead have as much again.
    pub max_spilled: Option<String>,
    /// Largest request head (request line + headers) accepted; larger: 431.
    pub max_header_size: Option<String>,
    /// HTTP/2 streams a client may have open at once on one connection.
    pub max_concurrent_streams: Option<u32>,
    pub trusted_proxies: Option<Vec<String>>,
    pub watch: Option<bool>,
    /// Status -> file: the proxy's own error answers as a page.
    pub error_pages: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<String>,
    pub access: Option<String>,
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub addr: String,
    pub tls: Option<bool>,
    pub redirect_https: Option<bool>,
    pub defer_accept: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub min_version: Option<String>,
    #[serde(default)]
    pub cert: Vec<RawCert>,
    pub hsts: Option<String>,
    pub client_ca: Option<String>,
    pub client_auth: Option<String>,
    pub handshake_timeout: Option<String>,
}

/// Either a PEM pair on disk or a dev certificate made in memory.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCert {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub names: Option<Vec<String>>,
    pub self_signed: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    #[serde(default, deserialize_with = "server_list")]
    pub servers: Vec<RawServerEntry>,
    pub balance: Option<String>,
    pub connect_timeout: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<u32>,
    pub max_fails: Option<u32>,
    pub fail_timeout: Option<String>,
    pub fail_on_status: Option<bool>,
    pub keepalive: Option<usize>,
    /// Requests one upstream connection carries before it is closed
    /// (default 1000, nginx's).
    pub keepalive_requests: Option<u32>,
    /// Idle pooled connections older than this are not reused (default 2s,
    /// gunicorn's own keep-alive timeout).
    pub keepalive_timeout: Option<String>,
    /// Read request bodies that come without a Content-Length whole (up to
    /// max_body) and send them with one (default true): WSGI apps such as
    /// Django under gunicorn read a chunked body as empty.
    pub buffer_chunked: Option<bool>,
    /// Read request bodies with a Content-Length whole (up to max_body)
    /// before asking the upstream (default true, like nginx): a slow upload
    /// then holds no upstream connection, nor a gunicorn sync worker.
    pub buffer_requests: Option<bool>,
    /// Read an answer's body ahead of a slow client, as fast as the server
    /// sends it (default true, nginx's `proxy_buffering`): a slow download
    /// then holds no gunicorn sync worker.
    pub buffer_responses: Option<bool>,
    /// The most an answer read ahead keeps in its temporary file (default
    /// 1GiB, nginx's proxy_max_temp_file_size); "0": memory only.
    pub max_read_ahead: Option<String>,
    pub health: Option<RawHealth>,
}

#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "expected an address (\"127.0.0.1:8001\", \"unix:/path/app.sock\") or { addr = \"...\", weight = N, backup = true }"
)]
pub enum RawServerEntry {
    Addr(String),
    Detailed(RawServerDetailed),
}

/// `servers = [...]`, by hand for one case: `servers = "http://u:p@app"`
/// (one address, not in a list) would be quoted by serde's "invalid type"
/// message, password and all. A list is read element by element, so an
/// error keeps its place (`servers[1]`).
fn server_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<RawServerEntry>, D::Error> {
    struct Servers;
    impl<'de> serde::de::Visitor<'de> for Servers {
        type Value = Vec<RawServerEntry>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of servers")
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(E::custom(
                "expected a list of servers: [\"127.0.0.1:8001\", ...] (the value given is not shown)",
            ))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element()? {
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Servers)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerDetailed {
    pub addr: String,
    pub weight: Option<u32>,
    /// Sent requests only while no primary server is in service.
    pub backup: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub path: Option<String>,
    /// Host header of the probes (Django's ALLOWED_HOSTS must accept it).
    pub host: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub unhealthy: Option<u32>,
    pub healthy: Option<u32>,
    /// Status codes that count as healthy, e.g. ["2xx", "3xx"] or [200, 204].
    pub expect: Option<Vec<toml::Value>>,
    pub start_unhealthy: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    #[serde(default)]
    pub algorithms: Vec<String>,
    pub secret: Option<RawSecret>,
    pub public_key: Option<String>,
    pub jwks: Option<String>,
    pub jwks_url: Option<String>,
    pub issuer: Option<StringOrList>,
    pub audience: Option<StringOrList>,
    pub leeway: Option<String>,
    pub require: Option<toml::Table>,
    pub scopes: Option<Vec<String>>,
    pub from: Option<Vec<String>>,
    pub forward_claims: Option<BTreeMap<String, String>>,
    pub strip_token: Option<bool>,
    /// Tokens longer than this are rejected before any parsing (default 8KiB).
    pub max_token_size: Option<String>,
    /// Verified tokens remembered per policy (default 10000; 0 disables).
    pub cache_size: Option<usize>,
    /// How often a `jwks_url` is fetched again (default 5m).
    pub jwks_refresh: Option<String>,
}

/// `{ env = "NAME" }`, `{ file = "path" }` or `{ value = "..." }`.
/// Deserialized by hand: serde's own errors quote the value they did not
/// expect, and a secret written as `secret = "..."` would then be printed
/// by `check` and logged by a failed reload.
#[derive(Default)]
pub struct RawSecret {
    pub env: Option<String>,
    pub file: Option<String>,
    pub value: Option<String>,
}

impl std::fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSecret")
            .field("env", &self.env)
            .field("file", &self.file)
            .field("value", &self.value.as_ref().map(|_| "(hidden)"))
            .finish()
    }
}

impl<'de> Deserialize<'de> for RawSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        const SHAPE: &str =
            "expected { env = \"NAME\" }, { file = \"path\" } or { value = \"...\" } (the value given is not shown)";
        let toml::Value::Table(table) = toml::Value::deserialize(d)? else {
            return Err(D::Error::custom(SHAPE));
        };
        let mut out = RawSecret::default();
        for (key, v) in table {
            let slot = match key.as_str() {
                "env" => &mut out.env,
                "file" => &mut out.file,
                "value" => &mut out.value,
                _ => return Err(D::Error::custom(format!("unknown key `{key}`; {SHAPE}"))),
            };
            let toml::Value::String(s) = v else {
                return Err(D::Error::custom(format!(
                    "{key} must be a string (the value given is not shown)"
                )));
            };
            *slot = Some(s);
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "expected a string or a list of strings")]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s],
            StringOrList::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub host: Option<String>,
    pub path: Option<String>,
    pub upstream: Option<String>,
    #[serde(rename = "static")]
    pub static_files: Option<RawStatic>,
    pub redirect: Option<String>,
    pub status: Option<u16>,
    pub respond: Option<RawRespond>,
    pub metrics: Option<bool>,
    pub jwt: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
    pub rate_limit: Option<RawRateLimit>,
    pub compress: Option<bool>,
    pub max_body: Option<String>,
    pub error_pages: Option<BTreeMap<String, String>>,
    pub strip_prefix: Option<bool>,
    pub request_headers: Option<BTreeMap<String, String>>,
    pub basic_auth: Option<RawBasicAuth>,
    pub internal: Option<bool>,
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    /// An htpasswd file of bcrypt hashes.
    pub users: String,
    pub realm: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub rate: String,
    pub burst: Option<u32>,
    /// Routes that name one zone share one limit (nginx's limit_req_zone).
    pub zone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "expected a directory (\"/srv/static\") or { root = \"...\", index, precompressed, fallback, follow_symlinks }"
)]
pub enum RawStatic {
    Root(String),
    Detailed(RawStaticDetailed),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStaticDetailed {
    pub root: String,
    pub index: Option<Vec<String>>,
    pub precompressed: Option<bool>,
    pub fallback: Option<String>,
    pub follow_symlinks: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRespond {
    pub status: Option<u16>,
    pub body: Option<String>,
    pub content_type: Option<String>,
}
