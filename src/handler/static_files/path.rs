//! From the request path to a path under the root. Percent-decoding happens
//! here, once; anything that could climb out of the root or that no file
//! name can hold is refused before the filesystem is asked.

use std::path::{Path, PathBuf};

/// A request path made safe, joined onto the root.
#[derive(Debug, PartialEq, Eq)]
pub struct RelPath {
    /// The base, then only plain name components: no `..`, no root, no
    /// prefix. Exactly the base when the request named the route's root.
    pub path: PathBuf,
    /// The request named a directory (`/static/css/`): index files apply
    /// rather than a redirect.
    pub trailing_slash: bool,
}

/// `rest` is the request path after the route prefix (starts with `/`).
/// None: the path must not be served (traversal, NUL, backslash, bad UTF-8
/// on systems whose file names are not bytes).
/// The result is under `base` (the site's root), built in one allocation.
pub fn sanitize_under(base: &Path, rest: &str) -> Option<RelPath> {
    // Borrowed, without a copy, when there is no `%` at all.
    let decoded: std::borrow::Cow<[u8]> = percent_encoding::percent_decode_str(rest).into();
    let mut path = PathBuf::with_capacity(base.as_os_str().len() + 1 + decoded.len());
    path.push(base);
    for seg in decoded.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => continue,
            // Refused rather than resolved: a `..` in a static URL is
            // never a real link, and refusing leaves nothing to get wrong.
            b".." => return None,
            _ => {}
        }
        // A backslash is a separator on Windows and a classic way around
        // `..` checks; NUL ends a C string early. Neither is in a
        // collectstatic file name.
        if seg.iter().any(|&b| b == 0 || b == b'\\') {
            return None;
        }
        // Never a separator in `seg` (split on them): a push adds, never
        // replaces.
        path.push(os_str(seg)?);
    }
    Some(RelPath {
        path,
        trailing_slash: decoded.last() == Some(&b'/'),
    })
}

/// The request path alone, as a relative path (the tests' view).
#[cfg(test)]
pub fn sanitize(rest: &str) -> Option<RelPath> {
    sanitize_under(Path::new(""), rest)
}

#[cfg(unix)]
fn os_str(b: &[u8]) -> Option<&std::ffi::OsStr> {
    use std::os::unix::ffi::OsStrExt;
    Some(std::ffi::OsStr::from_bytes(b))
}

#[cfg(not(unix))]
fn os_str(b: &[u8]) -> Option<&std::ffi::OsStr> {
    let s = std::str::from_utf8(b).ok()?;
    // A drive letter or an alternate data stream is not a file name here.
    if s.contains(':') {
        return None;
    }
    Some(std::ffi::OsStr::new(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> Option<String> {
        sanitize(s).map(|r| r.path.to_string_lossy().into_owned())
    }

    #[test]
    fn plain_paths_map_below_the_root() {
        assert_eq!(rel("/css/app.css").as_deref(), Some("css/app.css"));
        assert_eq!(rel("/").as_deref(), Some(""));
        assert_eq!(rel("//etc/passwd").as_deref(), Some("etc/passwd"));
        assert_eq!(rel("/./a/./b").as_deref(), Some("a/b"));
        assert_eq!(rel("/a%20b.txt").as_deref(), Some("a b.txt"));
        assert_eq!(rel("/...").as_deref(), Some("..."));
    }

    #[test]
    fn decoding_happens_once() {
        // %252e decodes to the literal name "%2e%2e", not to "..".
        assert_eq!(rel("/%252e%252e/x").as_deref(), Some("%2e%2e/x"));
    }

    #[test]
    fn traversal_and_odd_bytes_are_refused() {
        for p in [
            "/../secret",
            "/a/../../secret",
            "/%2e%2e/secret",
            "/%2E%2E%2Fsecret",
            "/..%2fsecret",
            "/a/%2e%2e%2f%2e%2e%2fsecret",
            "/..%5csecret",
            "/a%5c..%5c..%5csecret",
            "/a%00.txt",
            "/%00",
        ] {
            assert_eq!(sanitize(p), None, "{p}");
        }
    }

    #[test]
    fn trailing_slash_is_seen_after_decoding() {
        assert!(sanitize("/css/").unwrap().trailing_slash);
        assert!(sanitize("/css%2f").unwrap().trailing_slash);
        assert!(!sanitize("/css").unwrap().trailing_slash);
        assert!(sanitize("/").unwrap().trailing_slash);
    }
}
