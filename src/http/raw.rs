//! An upstream answer's header fields as they came, kept as one block of
//! `name: value\r\n` lines instead of a header map.
//!
//! Building a `HeaderMap` (a name parsed and hashed, a value sliced, two
//! allocations per map) only to write the same fields out again was a fifth
//! of a proxied request's instructions. An HTTP/1 client gets the block
//! written as it is, minus the fields the proxy sets itself (X-Request-Id,
//! HSTS, a route's headers), which replace the upstream's, as they do in a
//! map. An HTTP/2 client gets a map made from it (`into_map`).

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue, DATE};

#[derive(Clone, Default, Debug)]
pub struct RawFields {
    block: Bytes,
    has_date: bool,
    /// One bit per name present (`bit`): when none of the names the proxy
    /// sets is among them, the block goes out in one copy.
    names: u64,
}

/// A bit for a header name, the same whatever its case.
fn bit(name: &[u8]) -> u64 {
    // FNV-1a over the lower-cased bytes: a few instructions a byte.
    let mut h: u32 = 0x811c_9dc5;
    for &b in name {
        h = (h ^ u32::from(b.to_ascii_lowercase())).wrapping_mul(0x0100_0193);
    }
    1 << (h % 64)
}

/// Builds a block from fields a parser has already checked.
pub struct Builder {
    block: BytesMut,
    has_date: bool,
    names: u64,
}

impl Builder {
    pub fn with_capacity(n: usize) -> Self {
        Builder {
            block: BytesMut::with_capacity(n),
            has_date: false,
            names: 0,
        }
    }

    /// Add a field. The caller's parser has checked it: the name is a
    /// token, the value holds no control byte but tab (httparse's rules,
    /// the same as a header map's).
    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.has_date |= name.eq_ignore_ascii_case("date");
        self.names |= bit(name.as_bytes());
        self.block.put_slice(name.as_bytes());
        self.block.put_slice(b": ");
        self.block.put_slice(value);
        self.block.put_slice(b"\r\n");
    }

    pub fn finish(self) -> RawFields {
        RawFields {
            block: self.block.freeze(),
            has_date: self.has_date,
            names: self.names,
        }
    }
}

impl RawFields {
    pub fn has_date(&self) -> bool {
        self.has_date
    }

    /// The first value of the field `name` (lower case), if there is one;
    /// one bit test when there is not.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        if bit(name.as_bytes()) & self.names == 0 {
            return None;
        }
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Each field's name and value.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.block
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let l = l.strip_suffix(b"\r").unwrap_or(l);
                // Every line was written by `Builder::push` as `name: value`.
                let at = l.iter().position(|&b| b == b':').unwrap_or(l.len());
                (&l[..at], l.get(at + 2..).unwrap_or_default())
            })
    }

    /// Write the lines whose names the map `set` has no field for.
    pub fn write_to(&self, out: &mut Vec<u8>, set: &HeaderMap) {
        if set
            .keys()
            .all(|k| bit(k.as_str().as_bytes()) & self.names == 0)
        {
            out.extend_from_slice(&self.block);
            return;
        }
        let mut rest: &[u8] = &self.block;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(end + 1);
            rest = tail;
            let name = &line[..line.iter().position(|&b| b == b':').unwrap_or(0)];
            if !set
                .keys()
                .any(|k| k.as_str().as_bytes().eq_ignore_ascii_case(name))
            {
                out.extend_from_slice(line);
            }
        }
    }

    /// The fields as a header map, under those of `set`, which replace
    /// fields of the same name.
    pub fn into_map(self, set: HeaderMap) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(set.len() + 8);
        for (name, value) in self.iter() {
            let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name),
                HeaderValue::from_maybe_shared(self.block.slice_ref(value)),
            ) else {
                // Checked when the block was built; unreachable.
                continue;
            };
            if !set.contains_key(&n) {
                map.append(n, v);
            }
        }
        let mut last = None;
        for (name, value) in set {
            // `None`: another value of the name before.
            let name = name.or_else(|| last.clone());
            if let Some(n) = name {
                map.append(n.clone(), value);
                last = Some(n);
            }
        }
        map
    }
}

/// A Date field is written by the HTTP/1 server when the answer has none.
pub fn needs_date(set: &HeaderMap, raw: Option<&RawFields>) -> bool {
    !set.contains_key(DATE) && !raw.is_some_and(RawFields::has_date)
}

/// `content-length: N` and its line end, for a head being written (to a
/// client or to an upstream); without `fmt`'s machinery, as this runs once
/// per proxied answer.
pub fn push_content_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(fields: &[(&str, &str)]) -> RawFields {
        let mut b = Builder::with_capacity(64);
        for (n, v) in fields {
            b.push(n, v.as_bytes());
        }
        b.finish()
    }

    #[test]
    fn fields_set_by_the_proxy_replace_the_upstreams() {
        let r = raw(&[
            ("Server", "app"),
            ("X-Request-Id", "up"),
            ("x-a", "1"),
            ("X-A", "2"),
        ]);
        let mut set = HeaderMap::new();
        set.insert("x-request-id", HeaderValue::from_static("ours"));
        let mut out = Vec::new();
        r.write_to(&mut out, &set);
        assert_eq!(out, b"Server: app\r\nx-a: 1\r\nX-A: 2\r\n");
        let m = r.clone().into_map(set);
        assert_eq!(m["x-request-id"], "ours");
        assert_eq!(m.get_all("x-a").iter().count(), 2);
        assert_eq!(m["server"], "app");
        let mut all = Vec::new();
        r.write_to(&mut all, &HeaderMap::new());
        assert_eq!(all.len(), r.block.len());
    }

    #[test]
    fn a_date_is_noticed_in_any_case() {
        assert!(!raw(&[("x-date", "x")]).has_date());
        assert!(raw(&[("DATE", "x")]).has_date());
    }

    #[test]
    fn names_differing_only_in_case_share_their_bit() {
        assert_eq!(bit(b"X-Request-Id"), bit(b"x-request-id"));
        // A field whose bit the proxy's names miss goes out in one copy;
        // one they hit is still written unless really replaced.
        let r = raw(&[("Cache-Control", "private")]);
        let mut set = HeaderMap::new();
        set.insert("cache-control", HeaderValue::from_static("public"));
        let mut out = Vec::new();
        r.write_to(&mut out, &set);
        assert!(out.is_empty());
    }

    #[test]
    fn empty_values_survive_the_round_trip() {
        let r = raw(&[("x-empty", ""), ("x-b", "b")]);
        let pairs: Vec<_> = r.iter().collect();
        assert_eq!(
            pairs,
            [(&b"x-empty"[..], &b""[..]), (&b"x-b"[..], &b"b"[..])]
        );
    }
}
