//! `portcullis token`: mint a token that a policy accepts, for testing a
//! deployment (`curl -H "Authorization: Bearer $(portcullis token ...)"`).
//!
//! The token carries what the policy asks for (first `issuer`, first
//! `audience`, the `require` claims, the `scopes` as `scope`), `iat` and
//! `exp`; `--sub` and `--claim` add or override claims.

use super::Policy;
use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

#[derive(clap::Args, Debug, Default)]
pub struct TokenArgs {
    /// The [jwt.NAME] policy the token is for.
    #[arg(long)]
    pub policy: String,
    /// PEM private key to sign with, for policies with public keys (HS*
    /// policies sign with their own secret).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Algorithm; default: the policy's first.
    #[arg(long)]
    pub alg: Option<String>,
    /// `kid` header, to pick a key of a JWKS.
    #[arg(long)]
    pub kid: Option<String>,
    /// The `sub` claim.
    #[arg(long)]
    pub sub: Option<String>,
    /// A claim NAME=VALUE, repeatable; VALUE is JSON if it parses as JSON
    /// (42, true, ["a","b"]), else a string.
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    pub claims: Vec<String>,
    /// Lifetime, e.g. 15m, 1h, 30d.
    #[arg(long, default_value = "15m")]
    pub exp: String,
}

/// The subcommand: compile the config, mint, print.
pub fn run(config: &Path, args: &TokenArgs) -> ExitCode {
    let snap = match crate::config::load_file(config, None) {
        Ok(s) => s,
        Err(errs) => {
            eprintln!("{}: {} problem(s)", config.display(), errs.0.len());
            for e in &errs.0 {
                eprintln!("  {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let Some(policy) = snap.policies.get(&args.policy) else {
        let known: Vec<&str> = snap.policies.keys().map(String::as_str).collect();
        eprintln!(
            "no jwt policy named {:?} in {} (defined: {})",
            args.policy,
            config.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
        return ExitCode::FAILURE;
    };
    match mint(policy, args) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portcullis token: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn mint(policy: &Policy, args: &TokenArgs) -> Result<String, String> {
    let alg = match &args.alg {
        Some(a) => Algorithm::from_str(a).map_err(|_| format!("unknown algorithm {a:?}"))?,
        None => *policy
            .algorithms
            .first()
            .ok_or("the policy lists no algorithm")?,
    };
    if !policy.algorithms.contains(&alg) {
        return Err(format!("policy {:?} does not accept {alg:?}", policy.name));
    }
    let key = match (alg.family(), &args.key) {
        (AlgorithmFamily::Hmac, None) => EncodingKey::from_secret(
            policy
                .secret()
                .ok_or("this policy has no secret; give --key")?,
        ),
        (AlgorithmFamily::Hmac, Some(_)) => {
            return Err("an HS* policy signs with its own secret; leave out --key".into())
        }
        (_, None) => return Err(format!("{alg:?} needs --key PRIVATE_KEY.pem")),
        (family, Some(p)) => {
            let pem = std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            let k = match family {
                AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(&pem),
                AlgorithmFamily::Ec => EncodingKey::from_ec_pem(&pem),
                _ => EncodingKey::from_ed_pem(&pem),
            };
            k.map_err(|e| format!("{}: not a {family:?} private key: {e}", p.display()))?
        }
    };
    let lifetime =
        crate::config::units::parse_duration(&args.exp).map_err(|e| format!("--exp: {e}"))?;
    let now = super::claims::now() as i64;
    let mut claims = Map::new();
    claims.insert("iat".into(), now.into());
    let secs = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
    claims.insert("exp".into(), now.saturating_add(secs).into());
    if let Some(iss) = policy.rules.issuer.first() {
        claims.insert("iss".into(), iss.clone().into());
    }
    if let Some(aud) = policy.rules.audience.first() {
        claims.insert("aud".into(), aud.clone().into());
    }
    for (k, v) in &policy.rules.require {
        claims.insert(k.clone(), v.clone());
    }
    if !policy.rules.scopes.is_empty() {
        claims.insert("scope".into(), policy.rules.scopes.join(" ").into());
    }
    if let Some(sub) = &args.sub {
        claims.insert("sub".into(), sub.clone().into());
    }
    for c in &args.claims {
        let (k, v) = c
            .split_once('=')
            .ok_or_else(|| format!("--claim {c:?}: expected NAME=VALUE"))?;
        let v = serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.into()));
        claims.insert(k.to_string(), v);
    }
    let mut header = Header::new(alg);
    header.kid = args.kid.clone();
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| format!("signing failed: {e}"))
}
