//! A policy's key material: exactly one of `secret`, `public_key`, `jwks`
//! or `jwks_url`, checked against the policy's algorithms and loaded now,
//! so that a bad key is an error at its place and a secret never appears
//! in one.

use super::PolicyCompiler;
use crate::config::raw::RawJwt;
use crate::gate::fetch;
use crate::gate::keys::{self, Key, KeySource};
use crate::gate::remote::Remote;
use crate::gate::DEFAULT_REFRESH;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use std::time::Duration;

impl PolicyCompiler<'_> {
    pub(super) fn keys(&mut self, name: &str, r: &RawJwt, algs: &[Algorithm]) -> Option<KeySource> {
        let given = [
            r.secret.is_some(),
            r.public_key.is_some(),
            r.jwks.is_some(),
            r.jwks_url.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            self.err("", "set exactly one of secret, public_key, jwks, jwks_url");
            return None;
        }
        let hmac: Vec<&Algorithm> = algs
            .iter()
            .filter(|a| a.family() == AlgorithmFamily::Hmac)
            .collect();
        let public: Vec<&Algorithm> = algs
            .iter()
            .filter(|a| a.family() != AlgorithmFamily::Hmac)
            .collect();
        if r.secret.is_some() {
            if let Some(a) = public.first() {
                self.err("algorithms", format!("{a:?} needs public_key, jwks or jwks_url; a secret is for HS256, HS384, HS512 only"));
                return None;
            }
            let secret = self.secret(r)?;
            return Some(KeySource::Single(Key {
                kid: None,
                key: DecodingKey::from_secret(&secret),
                algs: algs.to_vec(),
            }));
        }
        if let Some(a) = hmac.first() {
            self.err(
                "algorithms",
                format!("{a:?} needs a secret; an HMAC algorithm never uses a public key"),
            );
            return None;
        }
        if let Some(p) = &r.public_key {
            let pem = self.read("public_key", p)?;
            let (key, key_algs) = match keys::from_pem(&pem) {
                Ok(k) => k,
                Err(e) => {
                    self.err("public_key", format!("{p}: {e}"));
                    return None;
                }
            };
            for a in algs {
                if !key_algs.contains(a) {
                    self.err(
                        "algorithms",
                        format!("{a:?} does not fit the public key (it fits {key_algs:?})"),
                    );
                }
            }
            return Some(KeySource::Single(Key {
                kid: None,
                key,
                algs: algs.to_vec(),
            }));
        }
        if let Some(p) = &r.jwks {
            let bytes = self.read("jwks", p)?;
            return match keys::parse_jwks(&bytes, algs) {
                Ok((set, notes)) => {
                    for n in notes {
                        tracing::warn!("jwt.{name}.jwks: {p}: {n}");
                    }
                    Some(KeySource::Set(set))
                }
                Err(e) => {
                    self.err("jwks", format!("{p}: {e}"));
                    None
                }
            };
        }
        let url = r.jwks_url.as_deref().unwrap_or_default();
        let uri = match fetch::check_url(url) {
            Ok(u) => u,
            Err(e) => {
                self.err("jwks_url", e);
                return None;
            }
        };
        let refresh = self.duration(&r.jwks_refresh, "jwks_refresh", DEFAULT_REFRESH);
        if refresh < Duration::from_secs(1) {
            self.err("jwks_refresh", "must be at least 1s");
        }
        Some(KeySource::Remote(Remote::new(
            name,
            uri,
            algs.to_vec(),
            refresh,
        )))
    }

    fn secret(&mut self, r: &RawJwt) -> Option<Vec<u8>> {
        let s = r.secret.as_ref()?;
        let n = [s.env.is_some(), s.file.is_some(), s.value.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if n != 1 {
            self.err("secret", "set exactly one of env, file, value");
            return None;
        }
        let bytes = if let Some(var) = &s.env {
            match std::env::var_os(var) {
                Some(v) => v.into_encoded_bytes(),
                None => {
                    // `env = "<the secret>"` is an easy slip: only a name
                    // that looks like one is repeated.
                    let msg = if looks_like_a_variable_name(var) {
                        format!("environment variable {var} is not set")
                    } else {
                        "the environment variable named here is not set (the name is not shown: it does not look like one; env takes a variable's name, value the secret)".to_string()
                    };
                    self.err("secret.env", msg);
                    return None;
                }
            }
        } else if let Some(p) = &s.file {
            let mut b = self.read("secret.file", p)?;
            // Files made with `echo` end with a newline that is not meant
            // to be part of the secret.
            if b.ends_with(b"\n") {
                b.pop();
                if b.ends_with(b"\r") {
                    b.pop();
                }
            }
            b
        } else {
            s.value.clone().unwrap_or_default().into_bytes()
        };
        if bytes.is_empty() {
            self.err("secret", "the secret is empty");
            return None;
        }
        if bytes.starts_with(b"-----BEGIN") {
            self.err(
                "secret",
                "this looks like a PEM key; a public key goes in public_key",
            );
            return None;
        }
        self.fingerprint.extend_from_slice(&bytes);
        Some(bytes)
    }

    fn read(&mut self, key: &str, p: &str) -> Option<Vec<u8>> {
        let path = self.src.resolve(p);
        self.files.push(path.clone());
        match std::fs::read(&path) {
            Ok(b) => {
                self.fingerprint.extend_from_slice(&b);
                Some(b)
            }
            Err(e) => {
                self.err(key, format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }
}

/// `SOME_NAME`: upper case by convention. A secret is rarely all capitals,
/// digits and underscores, beginning with a letter or `_`.
fn looks_like_a_variable_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}
