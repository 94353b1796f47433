//! A route's `request_headers`: fields set on the request as it goes to the
//! app, after the proxy's own forwarding fields, as nginx's
//! `proxy_set_header`. A value may name what the proxy knows of the
//! request (`{client_ip}`, `{scheme}`, `{host}`, `{user}`); an empty one
//! removes the field.

use http::header::{self, HeaderName, HeaderValue};
use std::fmt::Write;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    /// The client's address, as `trusted_proxies` makes it.
    ClientIp,
    /// `http` or `https`: the client's connection to the proxy.
    Scheme,
    /// The Host the app would be sent without the list (which may set
    /// Host too: the list's order is not the file's).
    Host,
    /// The name the route's `basic_auth` let through.
    User,
}

#[derive(Debug, Clone)]
pub struct SetHeader {
    name: HeaderName,
    /// `None`: the field is removed.
    value: Option<Value>,
}

#[derive(Debug, Clone)]
enum Value {
    /// Without a variable, made once when the config is.
    Fixed(HeaderValue),
    Parts(Vec<Part>),
}

/// Fields that say how the message is framed or the connection kept: the
/// proxy's to set, or a request could be cut where the app does not expect.
const FRAMING: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

impl SetHeader {
    /// The error is for the config, about `name` or `value`.
    pub fn compile(name: &str, value: &str) -> Result<SetHeader, String> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{name:?} is not a valid header name"))?;
        if FRAMING.contains(&name.as_str()) {
            return Err(format!(
                "{name} is set by the proxy, which frames the request itself"
            ));
        }
        if value.is_empty() {
            return Ok(SetHeader { name, value: None });
        }
        let parts = parse(value)?;
        let value = match parts.as_slice() {
            [Part::Text(t)] => Value::Fixed(
                HeaderValue::from_str(t).map_err(|_| "not a valid header value".to_string())?,
            ),
            _ => {
                for p in &parts {
                    if let Part::Text(t) = p {
                        HeaderValue::from_str(t)
                            .map_err(|_| "not a valid header value".to_string())?;
                    }
                }
                Value::Parts(parts)
            }
        };
        Ok(SetHeader {
            name,
            value: Some(value),
        })
    }

    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// Whether the value names `{user}`, which only `basic_auth` knows.
    pub fn uses_user(&self) -> bool {
        matches!(&self.value, Some(Value::Parts(p)) if p.contains(&Part::User))
    }
}

fn parse(value: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('{') {
        let Some(len) = rest[open..].find('}') else {
            return Err(format!("{value:?}: a '{{' without its '}}'"));
        };
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_string()));
        }
        parts.push(match &rest[open + 1..open + len] {
            "client_ip" => Part::ClientIp,
            "scheme" => Part::Scheme,
            "host" => Part::Host,
            "user" => Part::User,
            other => {
                return Err(format!(
                    "{{{other}}} is not one of {{client_ip}}, {{scheme}}, {{host}}, {{user}}"
                ))
            }
        });
        rest = &rest[open + len + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Ok(parts)
}

/// Set (or remove) each field on a request whose forwarding fields and
/// Host are already the app's.
pub fn apply(list: &[SetHeader], parts: &mut http::request::Parts, client: IpAddr, tls: bool) {
    let user = parts.extensions.get::<crate::basic_auth::User>();
    let h = &mut parts.headers;
    let host = h.get(header::HOST).cloned();
    for s in list {
        match &s.value {
            None => {
                h.remove(&s.name);
            }
            Some(Value::Fixed(v)) => {
                h.insert(s.name.clone(), v.clone());
            }
            Some(Value::Parts(parts)) => {
                let mut out = String::new();
                for p in parts {
                    match p {
                        Part::Text(t) => out.push_str(t),
                        Part::ClientIp => {
                            // Writing to a String does not fail.
                            let _ = write!(out, "{client}");
                        }
                        Part::Scheme => out.push_str(if tls { "https" } else { "http" }),
                        Part::Host => {
                            let host = host.as_ref().and_then(|v| v.to_str().ok());
                            out.push_str(host.unwrap_or(""));
                        }
                        // The config allows {user} only beside basic_auth,
                        // which passed: the name is there.
                        Part::User => out.push_str(user.map_or("", |u| &u.0)),
                    }
                }
                // The pieces were checked at load, but a user's name comes
                // from a file: a value that cannot be made leaves no field,
                // never the client's own.
                match HeaderValue::try_from(out) {
                    Ok(v) => h.insert(s.name.clone(), v),
                    Err(_) => h.remove(&s.name),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderMap;

    fn set(list: &[(&str, &str)], h: &mut HeaderMap, tls: bool) {
        let list: Vec<SetHeader> = list
            .iter()
            .map(|(n, v)| SetHeader::compile(n, v).unwrap())
            .collect();
        let mut parts = http::Request::new(()).into_parts().0;
        parts.headers = std::mem::take(h);
        parts
            .extensions
            .insert(crate::basic_auth::User("alice".into()));
        apply(&list, &mut parts, "2001:db8::7".parse().unwrap(), tls);
        *h = parts.headers;
    }

    #[test]
    fn fields_are_set_from_what_the_proxy_knows_or_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("shop.example"));
        h.insert("x-powered-by", HeaderValue::from_static("client"));
        h.insert("x-real-ip", HeaderValue::from_static("1.2.3.4"));
        set(
            &[
                ("X-Real-IP", "{client_ip}"),
                ("X-Url", "{scheme}://{host}/"),
                ("X-Remote-User", "{user}"),
                ("X-Powered-By", ""),
                ("X-Secret", "s3cret"),
                ("Host", "app.internal"),
            ],
            &mut h,
            true,
        );
        assert_eq!(h["x-real-ip"], "2001:db8::7", "a client's own is replaced");
        assert_eq!(
            h["x-url"], "https://shop.example/",
            "the Host before the list"
        );
        assert!(!h.contains_key("x-powered-by"));
        assert_eq!(h["x-secret"], "s3cret");
        assert_eq!(h["x-remote-user"], "alice");
        assert_eq!(h["host"], "app.internal");
    }

    #[test]
    fn mistakes_are_refused_with_what_is_wrong() {
        let e = |n: &str, v: &str| SetHeader::compile(n, v).unwrap_err();
        assert!(e("X A", "1").contains("not a valid header name"));
        assert!(e("Transfer-Encoding", "chunked").contains("frames the request itself"));
        assert!(e("content-length", "").contains("frames the request itself"));
        assert!(e("X-A", "{remote_addr}").contains("{remote_addr} is not one of"));
        assert!(e("X-A", "{client_ip").contains("without its"));
        assert!(e("X-A", "a\nb").contains("not a valid header value"));
        assert!(e("X-A", "{host}\n").contains("not a valid header value"));
    }
}
