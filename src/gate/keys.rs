//! Keys and signature checks. Every key carries the algorithms it may be
//! used with, fixed when it is loaded from the config (its type, its curve,
//! the JWK's own `alg`), intersected with the policy's list: a token's
//! `alg` only picks among those.

use super::remote::Remote;
use super::token::Parsed;
use super::Rejection;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::Value;
use std::str::FromStr;
use std::sync::Arc;

pub struct Key {
    pub kid: Option<String>,
    pub key: DecodingKey,
    pub algs: Vec<Algorithm>,
}

#[derive(Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
}

/// Most keys a token without `kid` is tried against: a key set is small,
/// and a kid-less token must not buy many signature checks.
const MAX_KIDLESS_TRIES: usize = 3;

pub enum Lookup<'a> {
    Keys(Vec<&'a Key>),
    UnknownKid,
}

impl KeySet {
    pub fn lookup(&self, alg: Algorithm, kid: Option<&str>) -> Lookup<'_> {
        let fits = |k: &&Key| k.algs.contains(&alg);
        match kid {
            Some(kid) => {
                let named: Vec<&Key> = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .collect();
                if named.is_empty() {
                    Lookup::UnknownKid
                } else {
                    Lookup::Keys(named.into_iter().filter(fits).collect())
                }
            }
            None => Lookup::Keys(
                self.keys
                    .iter()
                    .filter(fits)
                    .take(MAX_KIDLESS_TRIES)
                    .collect(),
            ),
        }
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

pub enum KeySource {
    /// An HMAC secret or one PEM public key: `kid` is not consulted.
    Single(Key),
    /// A JWKS file.
    Set(KeySet),
    /// A JWKS URL, fetched and refreshed.
    Remote(Arc<Remote>),
}

impl KeySource {
    pub async fn verify(&self, t: &Parsed<'_>) -> Result<(), Rejection> {
        match self {
            KeySource::Single(k) => {
                if !k.algs.contains(&t.alg) {
                    return Err(Rejection::invalid("algorithm does not fit the key"));
                }
                check_signature(t, &[k])
            }
            KeySource::Set(set) => match set.lookup(t.alg, t.kid.as_deref()) {
                Lookup::Keys(keys) => check_signature(t, &keys),
                Lookup::UnknownKid => Err(Rejection::invalid("unknown kid")),
            },
            KeySource::Remote(r) => {
                let set = r.keys();
                match set.lookup(t.alg, t.kid.as_deref()) {
                    // An empty set: the first fetch is not done (or failed).
                    Lookup::Keys(keys) if !set.keys.is_empty() => return check_signature(t, &keys),
                    _ => {}
                }
                // A kid we do not know yet: the provider may have rotated.
                let kid = t.kid.as_deref().unwrap_or_default();
                let set = r.refetch_for(kid).await;
                match set.lookup(t.alg, t.kid.as_deref()) {
                    Lookup::Keys(keys) => check_signature(t, &keys),
                    Lookup::UnknownKid => Err(Rejection::invalid("unknown kid")),
                }
            }
        }
    }

    pub fn secret(&self) -> Option<&[u8]> {
        match self {
            KeySource::Single(k) if k.key.family() == AlgorithmFamily::Hmac => {
                k.key.try_get_as_bytes().ok()
            }
            _ => None,
        }
    }

    pub fn start(&self) {
        if let KeySource::Remote(r) = self {
            r.start();
        }
    }

    /// Changes whenever the key set is replaced (only a jwks_url's is).
    pub fn generation(&self) -> u64 {
        match self {
            KeySource::Remote(r) => r.generation(),
            _ => 0,
        }
    }

    pub fn fetches(&self) -> u64 {
        match self {
            KeySource::Remote(r) => r.fetches(),
            _ => 0,
        }
    }
}

fn check_signature(t: &Parsed<'_>, keys: &[&Key]) -> Result<(), Rejection> {
    if keys.is_empty() {
        return Err(Rejection::invalid("no key fits the algorithm"));
    }
    for k in keys {
        // The verifier itself also refuses a key of another family.
        if k.algs.contains(&t.alg)
            && matches!(
                jsonwebtoken::crypto::verify(t.signature, t.message, &k.key, t.alg),
                Ok(true)
            )
        {
            return Ok(());
        }
    }
    Err(Rejection::invalid("bad signature"))
}

/// The algorithms a public key PEM (key or certificate) can verify, and the
/// key. EC keys are told apart by their point's length.
pub fn from_pem(pem: &[u8]) -> Result<(DecodingKey, Vec<Algorithm>), String> {
    if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        return Ok((k, AlgorithmFamily::Rsa.algorithms().to_vec()));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        let alg = match k.try_get_as_bytes().map(<[u8]>::len) {
            Ok(65) => Algorithm::ES256,
            Ok(97) => Algorithm::ES384,
            _ => return Err("EC key on an unsupported curve (P-256 and P-384 are)".into()),
        };
        return Ok((k, vec![alg]));
    }
    if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        return Ok((k, vec![Algorithm::EdDSA]));
    }
    let text = String::from_utf8_lossy(pem);
    if text.contains("PRIVATE KEY") {
        return Err("this is a private key; give the public key or certificate".into());
    }
    Err("not a PEM public key or certificate (RSA, EC P-256/P-384 or Ed25519)".into())
}

/// Parse a JWKS document. Keys that cannot serve the policy (encryption
/// keys, symmetric keys, other curves, algorithms the policy does not list)
/// are skipped and named in the returned notes; no usable key is an error.
pub fn parse_jwks(bytes: &[u8], policy: &[Algorithm]) -> Result<(KeySet, Vec<String>), String> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let list = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no \"keys\" array")?;
    let mut set = KeySet::default();
    let mut notes = Vec::new();
    for (i, v) in list.iter().enumerate() {
        match jwk_key(v, policy) {
            Ok(k) => set.keys.push(k),
            Err(why) => notes.push(format!("keys[{i}] skipped: {why}")),
        }
    }
    if set.keys.is_empty() {
        let mut msg = "no usable key for the policy's algorithms".to_string();
        if !notes.is_empty() {
            msg.push_str(&format!(" ({})", notes.join("; ")));
        }
        return Err(msg);
    }
    Ok((set, notes))
}

fn jwk_key(v: &Value, policy: &[Algorithm]) -> Result<Key, String> {
    let jwk: Jwk = serde_json::from_value(v.clone()).map_err(|e| format!("not a JWK: {e}"))?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key (use = enc)".into());
    }
    let mut algs: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa.algorithms().to_vec(),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return Err("unsupported curve".into()),
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("a symmetric key; HMAC secrets go in `secret`".into())
        }
        _ => return Err("unsupported key type".into()),
    };
    // The JWK's own alg narrows further.
    if let Some(a) = v.get("alg").and_then(Value::as_str) {
        let a = Algorithm::from_str(a).map_err(|_| format!("unsupported alg {a:?}"))?;
        algs.retain(|x| *x == a);
    }
    algs.retain(|a| policy.contains(a));
    if algs.is_empty() {
        return Err("fits none of the policy's algorithms".into());
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("bad key material: {e}"))?;
    let kid = v.get("kid").and_then(Value::as_str).map(str::to_string);
    Ok(Key { kid, key, algs })
}
