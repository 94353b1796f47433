//! A route's `basic_auth`: HTTP Basic authentication against an htpasswd
//! file of bcrypt hashes, as nginx's `auth_basic_user_file` (a staging
//! site, a metrics page). bcrypt is slow on purpose (tens of milliseconds
//! at `htpasswd -B`'s cost), so:
//! - credentials that passed are remembered, as the SHA-256 of the field
//!   (never the password), until the config is reloaded, so a browser
//!   that sends them with every request pays bcrypt once;
//! - the hashing runs off the worker threads, at most `max(1, cores / 2)`
//!   at a time, so a client guessing passwords cannot take every core
//!   (pair the route with `rate_limit` to bound its guesses too);
//! - a name not in the file is checked against a hash all the same, one of
//!   the file's costliest, so the time of a refusal does not tell which
//!   names exist. That holds whole when the file's hashes share one cost,
//!   as one `htpasswd -B -C N` run gives; a file that mixes costs is
//!   accepted (files grow over years) and reported at load and by `check`,
//!   since there a name's time tells its hash's cost.

use crate::gate::Rejection;
use base64::Engine;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use http::StatusCode;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// The name a request's credentials passed for: the access log's user, and
/// `{user}` in the route's `request_headers`.
#[derive(Clone, Debug)]
pub struct User(pub Arc<str>);

/// Credentials remembered per route: past it, the set starts again.
const REMEMBERED: usize = 1024;
/// A longer Authorization field is not a name and a password.
const MAX_FIELD: usize = 4096;
/// bcrypt's least cost (the crate does not export it).
const MIN_COST: u32 = 4;
/// The costliest hash accepted: about 4 s a check on one core of the
/// machines measured (cost 10 took 60 ms; each step doubles it).
const MAX_COST: u32 = 16;

pub struct BasicAuth {
    /// `Basic realm="...", charset="UTF-8"`, sent with each 401.
    challenge: HeaderValue,
    /// Name -> hash; the name's `Arc` is what a request that passed carries.
    users: HashMap<Arc<str>, Arc<str>>,
    /// Checked for a name not in the file: a real hash of the highest cost,
    /// so at least any name's work, and a match on it still refuses.
    decoy: Arc<str>,
    /// The lowest and highest bcrypt cost in the file.
    costs: (u32, u32),
    passed: Mutex<HashSet<[u8; 32]>>,
}

/// The bcrypt checks running at once, in the whole process: every route and
/// every config still draining after a reload share it.
fn hashing() -> Arc<Semaphore> {
    static HASHING: std::sync::OnceLock<Arc<Semaphore>> = std::sync::OnceLock::new();
    HASHING
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            Arc::new(Semaphore::new((cores / 2).max(1)))
        })
        .clone()
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names and hashes stay out of any debug output.
        f.debug_struct("BasicAuth")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl BasicAuth {
    /// From an htpasswd file's text: `name:hash` lines, `#` comments. The
    /// error names the line, never a hash.
    pub fn new(realm: &str, htpasswd: &str) -> Result<BasicAuth, String> {
        if realm.contains(['"', '\\']) || realm.chars().any(char::is_control) {
            return Err(format!(
                "realm {realm:?}: no quotes, backslashes or control characters"
            ));
        }
        let challenge =
            HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\""))
                .map_err(|_| format!("realm {realm:?} is not a valid header value"))?;
        let mut users = HashMap::new();
        let mut costliest: Option<(u32, Arc<str>)> = None;
        let mut lowest = u32::MAX;
        for (i, line) in htpasswd.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            let Some((name, hash)) = line.split_once(':') else {
                return Err(format!("line {n}: not name:hash"));
            };
            if !["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
                return Err(format!(
                    "line {n} ({name}): only bcrypt hashes are accepted (htpasswd -B); MD5, SHA-1 and crypt ones are too quick to guess"
                ));
            }
            let Ok(parts) = hash.parse::<bcrypt::HashParts>() else {
                return Err(format!("line {n} ({name}): not a whole bcrypt hash"));
            };
            let cost = parts.get_cost();
            // bcrypt computes 4 to 31. Above MAX_COST one check takes
            // minutes while holding a hashing place, and the costliest
            // hash is what every unknown name is checked against.
            if !(MIN_COST..=MAX_COST).contains(&cost) {
                return Err(format!(
                    "line {n} ({name}): bcrypt cost {cost} is outside {MIN_COST}..={MAX_COST} (htpasswd -B -C N)"
                ));
            }
            let hash: Arc<str> = Arc::from(hash);
            lowest = lowest.min(cost);
            if costliest.as_ref().is_none_or(|(c, _)| cost > *c) {
                costliest = Some((cost, hash.clone()));
            }
            if users.insert(Arc::from(name), hash).is_some() {
                return Err(format!("line {n}: {name} is listed twice"));
            }
        }
        let Some((highest, decoy)) = costliest else {
            return Err("no users in the file".into());
        };
        Ok(BasicAuth {
            challenge,
            users,
            decoy,
            costs: (lowest, highest),
            passed: Mutex::new(HashSet::new()),
        })
    }

    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// The lowest and highest bcrypt cost among the users' hashes: unequal,
    /// a refusal's time can tell a cheap user's name from the others.
    pub fn costs(&self) -> (u32, u32) {
        self.costs
    }

    fn refuse(&self, reason: &'static str) -> Rejection {
        Rejection {
            status: StatusCode::UNAUTHORIZED,
            www_authenticate: Some(self.challenge.clone()),
            reason,
        }
    }

    /// What can be decided without bcrypt: `Some(Ok)` for credentials that
    /// passed before, `Some(Err)` for none or malformed ones; `None` when
    /// `verify` must decide.
    pub fn quick(&self, headers: &HeaderMap) -> Option<Result<User, Rejection>> {
        let Some(field) = headers.get(AUTHORIZATION) else {
            return Some(Err(self.refuse("no credentials")));
        };
        let Some((name, _)) = credentials(field) else {
            return Some(Err(self.refuse("malformed basic credentials")));
        };
        let remembered = {
            // A poisoned lock only means a panic elsewhere mid-insert: the
            // set is still a set.
            let passed = self.passed.lock().unwrap_or_else(|e| e.into_inner());
            passed.contains(&digest(field))
        };
        // Remembered credentials were checked against a name in the file.
        remembered
            .then(|| self.users.get_key_value(name.as_str()))
            .flatten()
            .map(|(n, _)| Ok(User(n.clone())))
    }

    /// The bcrypt check, off the worker threads.
    pub async fn verify(&self, headers: &HeaderMap) -> Result<User, Rejection> {
        self.verify_with(headers, hashing(), |p: &str, h: &str| {
            bcrypt::verify(p, h).unwrap_or(false)
        })
        .await
    }

    /// `verify` with the limit and the check given, so that a test can hold
    /// a check mid-way.
    async fn verify_with(
        &self,
        headers: &HeaderMap,
        limit: Arc<Semaphore>,
        check: impl FnOnce(&str, &str) -> bool + Send + 'static,
    ) -> Result<User, Rejection> {
        let field = headers
            .get(AUTHORIZATION)
            .ok_or_else(|| self.refuse("no credentials"))?;
        let (name, password) =
            credentials(field).ok_or_else(|| self.refuse("malformed basic credentials"))?;
        let known = self.users.get_key_value(name.as_str());
        let hash = known.map_or_else(|| self.decoy.clone(), |(_, h)| h.clone());
        // The semaphore is never closed. The permit goes with the hashing,
        // not with this future: a client that hangs up mid-check would
        // otherwise free its place while its bcrypt still runs, and a
        // client that hangs up again and again would run any number.
        let permit = limit.acquire_owned().await;
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            check(&password, &hash)
        })
        .await
        .unwrap_or(false);
        let Some((name, _)) = known.filter(|_| ok) else {
            return Err(self.refuse("wrong name or password"));
        };
        let mut passed = self.passed.lock().unwrap_or_else(|e| e.into_inner());
        if passed.len() >= REMEMBERED {
            passed.clear();
        }
        passed.insert(digest(field));
        Ok(User(name.clone()))
    }
}

/// A users-file line, `name:$2y$...` as `htpasswd -nbB` prints it.
pub fn htpasswd_line(name: &str, password: &str, cost: u32) -> Result<String, String> {
    if name.is_empty() || name.contains([':', '\n', '\r']) || name.starts_with('#') {
        return Err(format!(
            "{name:?}: a name is not empty, has no ':' and no line break"
        ));
    }
    if password.is_empty() {
        return Err("an empty password (read from standard input)".into());
    }
    if !(MIN_COST..=MAX_COST).contains(&cost) {
        return Err(format!(
            "cost {cost}: from {MIN_COST} to {MAX_COST}, as the users file takes"
        ));
    }
    let parts = bcrypt::hash_with_result(password, cost).map_err(|e| e.to_string())?;
    Ok(format!(
        "{name}:{}",
        parts.format_for_version(bcrypt::Version::TwoY)
    ))
}

fn digest(field: &HeaderValue) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, field.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// `Basic base64(name:password)`, the scheme in any case (RFC 9110 §11.1).
fn credentials(field: &HeaderValue) -> Option<(String, String)> {
    let b = field.as_bytes();
    if b.len() > MAX_FIELD || b.len() < 6 || !b[..6].eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b[6..].trim_ascii())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(user_pass: &str) -> HeaderMap {
        let b64 = base64::engine::general_purpose::STANDARD.encode(user_pass);
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("basic {b64}")).unwrap(),
        );
        h
    }

    fn auth() -> BasicAuth {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        BasicAuth::new("Staging", &format!("# staff\n\nalice:{hash}\n")).unwrap()
    }

    #[tokio::test]
    async fn the_right_password_passes_once_by_bcrypt_then_from_memory() {
        let a = auth();
        let h = field("alice:s3cret");
        assert!(a.quick(&h).is_none(), "not known yet: bcrypt decides");
        assert!(a.verify(&h).await.is_ok());
        assert!(matches!(a.quick(&h), Some(Ok(User(n))) if &*n == "alice"));
        for wrong in ["alice:S3cret", "bob:s3cret", "alice:"] {
            let h = field(wrong);
            assert!(a.quick(&h).is_none(), "{wrong}");
            let rej = a.verify(&h).await.unwrap_err();
            assert_eq!(rej.status, StatusCode::UNAUTHORIZED);
            assert_eq!(
                rej.www_authenticate.unwrap(),
                "Basic realm=\"Staging\", charset=\"UTF-8\""
            );
        }
    }

    #[tokio::test]
    async fn a_line_it_prints_is_one_it_accepts() {
        let line = htpasswd_line("carol", "pa:ss word", 4).unwrap();
        assert!(line.starts_with("carol:$2y$04$"), "{line}");
        let a = BasicAuth::new("r", &line).unwrap();
        assert!(a.verify(&field("carol:pa:ss word")).await.is_ok());
        assert!(htpasswd_line("a:b", "x", 4).is_err());
        assert!(htpasswd_line("dave", "", 4).is_err());
        assert!(
            htpasswd_line("dave", "x", 3).is_err(),
            "below bcrypt's least cost"
        );
        assert!(htpasswd_line("dave", "x", 17).is_err(), "past MAX_COST");
    }

    #[test]
    fn missing_or_malformed_credentials_are_refused_without_bcrypt() {
        let a = auth();
        assert!(matches!(a.quick(&HeaderMap::new()), Some(Err(_))));
        for bad in [
            "Bearer abc",
            "Basic !!!",
            "Basic bm9jb2xvbg==", /* nocolon */
        ] {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, HeaderValue::from_static(bad));
            assert!(matches!(a.quick(&h), Some(Err(_))), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_name_not_in_the_file_is_checked_against_the_costliest_hash() {
        let cheap = bcrypt::hash("a", 4).unwrap();
        let dear = bcrypt::hash("b", 6).unwrap();
        let a = BasicAuth::new("r", &format!("ann:{cheap}\nbea:{dear}\ncal:{cheap}\n")).unwrap();
        assert_eq!(a.costs(), (4, 6));
        assert_eq!(&*a.decoy, &*dear);
        // The decoy's own password still refuses a name not in the file.
        assert!(a.verify(&field("zed:b")).await.is_err());
        assert!(a.verify(&field("bea:b")).await.is_ok());
        let one = BasicAuth::new("r", &format!("ann:{cheap}\n")).unwrap();
        assert_eq!(one.costs(), (4, 4));
    }

    #[tokio::test]
    async fn a_check_abandoned_by_its_client_keeps_its_place_until_bcrypt_ends() {
        let a = Arc::new(auth());
        let limit = Arc::new(Semaphore::new(1));
        let (started_tx, started) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let check = {
            let (a, limit) = (a.clone(), limit.clone());
            tokio::spawn(async move {
                let check = move |_: &str, _: &str| {
                    started_tx.send(()).unwrap();
                    released.recv().is_ok()
                };
                a.verify_with(&field("alice:guess"), limit, check).await
            })
        };
        // The check is hashing, with the one place taken.
        tokio::task::spawn_blocking(move || started.recv().unwrap())
            .await
            .unwrap();
        // The client hangs up: its request future is dropped.
        check.abort();
        assert!(check.await.unwrap_err().is_cancelled());
        assert_eq!(
            limit.available_permits(),
            0,
            "the hashing still runs, so its place is still taken"
        );
        release.send(()).unwrap();
        // Given back when the hashing ends, not before.
        drop(limit.acquire().await.unwrap());
    }

    #[test]
    fn a_file_with_anything_but_bcrypt_is_refused_by_line() {
        let e = |text: &str| BasicAuth::new("r", text).unwrap_err();
        assert!(e("bob:$apr1$abc$def\n").starts_with("line 1 (bob): only bcrypt"));
        assert!(e("# none\n").contains("no users"));
        assert!(e("\njust-a-name\n").starts_with("line 2: not name:hash"));
        assert!(e("bob:$2y$05$short\n").contains("not a whole bcrypt hash"));
        // A cost bcrypt cannot compute, or one that would hold a hashing
        // place for minutes: the costliest is every unknown name's decoy.
        let h = bcrypt::hash("x", 4).unwrap();
        for cost in ["03", "17", "31", "99"] {
            let line = format!("bob:{}{cost}{}\n", &h[..4], &h[6..]);
            assert!(
                e(&line).contains(&format!("bcrypt cost {}", cost.trim_start_matches('0'))),
                "{cost}"
            );
        }
        assert!(e(&format!("bob:{h}\nbob:{h}\n")).contains("bob is listed twice"));
        assert!(BasicAuth::new("a \"quoted\" realm", &format!("bob:{h}")).is_err());
        // The message never carries a hash.
        assert!(!e("bob:{SHA}secrethash=\n").contains("secrethash"));
    }
}
