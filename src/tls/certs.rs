//! Certificates and keys: reading PEM files, checking that a key belongs to
//! its certificate, reading names and validity, making dev certificates.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// What the compiler reports about a certificate; none of it is secret.
#[derive(Debug, Clone)]
pub struct Facts {
    /// DNS names in the subjectAltName extension, lowercased.
    pub dns_names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Where a pair failed: the certificate file or the key file.
#[derive(Debug)]
pub enum PairError {
    Cert(String),
    Key(String),
}

/// Read a PEM chain and its key and check that they belong together. Error
/// messages name the file, never the key's content.
pub fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, Facts), PairError> {
    let chain = read_chain(cert_path).map_err(PairError::Cert)?;
    let facts =
        facts(&chain[0]).map_err(|e| PairError::Cert(format!("{}: {e}", cert_path.display())))?;
    let key = read_key(key_path).map_err(PairError::Key)?;
    let ck = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        PairError::Key(match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "{} does not belong to the certificate in {}",
                key_path.display(),
                cert_path.display()
            ),
            // The message says which key type is not supported; it does not
            // contain key material.
            e => format!("{}: unusable key: {e}", key_path.display()),
        })
    })?;
    Ok((ck, facts))
}

/// Every certificate in a PEM file, in order (leaf first for a chain).
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: bad PEM: {}", path.display(), pem_problem(&e)))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no \"BEGIN CERTIFICATE\" block found",
            path.display()
        ));
    }
    Ok(certs)
}

/// A PKCS#8, PKCS#1 (RSA) or SEC1 (EC) PEM key.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{}: no private key found (expected a PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block)",
            path.display()
        ),
        e => format!("{}: bad PEM key: {}", path.display(), pem_problem(&e)),
    })
}

/// Fixed wording for a PEM error, never its Display: `MissingSectionEnd`
/// and `IllegalSectionStart` carry bytes of the file, and when a file's
/// line breaks were lost those bytes are its body, a private key's
/// included (the whole body is taken for the BEGIN line's label). A
/// certificate file may hold the key too, so chains get the same wording.
fn pem_problem(e: &rustls::pki_types::pem::Error) -> &'static str {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { .. } => {
            "a BEGIN line has no matching END line (were the line breaks lost?)"
        }
        Error::IllegalSectionStart { .. } => {
            "a BEGIN line is malformed (were the line breaks lost?)"
        }
        Error::Base64Decode(_) => "the body of a block is not valid base64",
        Error::SectionTooLarge => "a block is larger than 256 MB",
        Error::NoItemsFound => "no block of the expected type",
        // Io cannot come from a slice; a variant added later may carry
        // bytes too.
        _ => "unreadable",
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

pub fn facts(der: &CertificateDer<'_>) -> Result<Facts, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                dns_names.push(d.to_ascii_lowercase());
            }
        }
    }
    let v = cert.validity();
    Ok(Facts {
        dns_names,
        not_before: unix(v.not_before.timestamp()),
        not_after: unix(v.not_after.timestamp()),
    })
}

fn unix(secs: i64) -> SystemTime {
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// `2027-01-31` for messages.
pub fn day(t: SystemTime) -> String {
    let mut s = humantime::format_rfc3339_seconds(t).to_string();
    s.truncate(10);
    s
}

/// The subject of a client certificate as RFC 4514 text, most specific
/// part first (`CN=alice,O=Example`), the form nginx passes as
/// `$ssl_client_s_dn`.
pub fn subject(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = cert
        .subject()
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let ty = x509_parser::objects::oid2abbrev(atv.attr_type(), registry)
                        .map(str::to_string)
                        .unwrap_or_else(|_| atv.attr_type().to_id_string());
                    let value = match atv.as_str() {
                        Ok(s) => escape_dn_value(s),
                        Err(_) => {
                            // Not a string type: RFC 4514 writes it as #hex.
                            let mut h = String::from("#");
                            for b in atv.as_slice() {
                                h.push_str(&format!("{b:02x}"));
                            }
                            h
                        }
                    };
                    format!("{ty}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    let mut rdns = rdns;
    rdns.reverse();
    Some(rdns.join(","))
}

fn escape_dn_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            // Control characters cannot go into a header; RFC 4514 allows
            // any character as \hex.
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// A dev certificate for `names` (DNS names or IP addresses), made in memory.
pub struct DevCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub key_der: PrivateKeyDer<'static>,
}

pub fn self_signed(names: &[String]) -> Result<DevCert, String> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| format!("cannot make a certificate for these names: {e}"))?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(
        rcgen::DnType::CommonName,
        "portcullis development certificate",
    );
    params.distinguished_name = dn;
    // Some clients (Apple's) refuse certificates valid for years; rcgen's
    // default runs to the year 4096.
    let now = SystemTime::now();
    let (y, m, d) = ymd(now - Duration::from_secs(86400));
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = ymd(now + Duration::from_secs(365 * 86400));
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let key = rcgen::KeyPair::generate().map_err(|e| format!("cannot generate a key pair: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("cannot sign the certificate: {e}"))?;
    Ok(DevCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert_der: cert.der().clone(),
        key_der: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    })
}

fn ymd(t: SystemTime) -> (i32, u8, u8) {
    // `day` gives YYYY-MM-DD; the parts are digits by construction.
    let d = day(t);
    let n = |r: std::ops::Range<usize>| d.get(r).and_then(|p| p.parse::<i32>().ok()).unwrap_or(1);
    (n(0..4), n(5..7) as u8, n(8..10) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_values_are_escaped() {
        assert_eq!(escape_dn_value("Doe, John"), "Doe\\, John");
        assert_eq!(escape_dn_value("#1 "), "\\#1\\ ");
        assert_eq!(escape_dn_value("a\nb"), "a\\0ab");
        assert_eq!(escape_dn_value("plain"), "plain");
    }

    #[test]
    fn dev_certificate_names_and_subject() {
        let dev = self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        let f = facts(&dev.cert_der).unwrap();
        assert_eq!(f.dns_names, vec!["localhost"]);
        assert!(f.not_after > SystemTime::now() + Duration::from_secs(300 * 86400));
        assert_eq!(
            subject(&dev.cert_der).unwrap(),
            "CN=portcullis development certificate"
        );
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let ck = CertifiedKey::from_der(vec![dev.cert_der], dev.key_der, &provider).unwrap();
        ck.keys_match().unwrap();
    }

    #[test]
    fn a_utf8_client_subject_is_a_header_value() {
        let ca = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "José Müller");
        let cert = p.self_signed(&ca).unwrap();
        let s = subject(cert.der()).unwrap();
        assert_eq!(s, "CN=José Müller");
        assert!(http::HeaderValue::from_bytes(s.as_bytes()).is_ok());
    }

    /// True when `msg` shows 8 characters in a row of `body`, as text or as
    /// the list of byte values that a `Vec<u8>`'s Debug writes.
    fn shows(msg: &str, body: &str) -> bool {
        body.as_bytes().windows(8).any(|w| {
            let list = format!("{w:?}");
            msg.contains(std::str::from_utf8(w).unwrap()) || msg.contains(&list[1..list.len() - 1])
        })
    }

    #[test]
    fn a_key_file_that_lost_its_line_breaks_is_reported_without_its_content() {
        let dev = self_signed(&["localhost".into()]).unwrap();
        let body: String = dev
            .key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, &dev.cert_pem).unwrap();
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let (begin, rest) = dev.key_pem.split_once('\n').unwrap();
        let mut bad_base64 = dev.key_pem.clone();
        bad_base64.insert(begin.len() + 10, '*');
        for (damaged, expected) in [
            (dev.key_pem.replace('\n', ""), "no matching END line"),
            (format!("{begin}{rest}"), "BEGIN line is malformed"),
            (bad_base64, "not valid base64"),
        ] {
            std::fs::write(&key, &damaged).unwrap();
            let Err(PairError::Key(e)) = load_pair(&cert, &key, &provider) else {
                panic!("a damaged key was accepted ({expected})");
            };
            assert!(!shows(&e, &body), "{e}");
            assert!(e.contains(expected), "{e}");
        }

        // A certificate file that holds the key as well.
        let both = dir.path().join("both.pem");
        std::fs::write(
            &both,
            format!("{}{}", dev.cert_pem, dev.key_pem.replace('\n', "")),
        )
        .unwrap();
        let e = read_chain(&both).unwrap_err();
        assert!(!shows(&e, &body), "{e}");
        assert!(e.contains("no matching END line"), "{e}");
    }
}
