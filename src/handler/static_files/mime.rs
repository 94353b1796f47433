//! Content-Type from the file name's extension. The types a web front end
//! ships are in a `match` of ready header values (no allocation per request,
//! and current types: `text/javascript` per RFC 9239, `font/woff2`,
//! `image/avif`); the long tail comes from `mime_guess`. Text types say
//! `charset=utf-8`, which is what collectstatic and bundlers write.

use http::HeaderValue;
use std::cell::RefCell;
use std::path::Path;

/// The types a web front end ships, by lower-cased extension: a `match`
/// compiles to a few comparisons, where scanning a table cost up to 700
/// instructions for an extension that is not in it.
fn known(ext: &[u8]) -> Option<&'static str> {
    Some(match ext {
        b"html" | b"htm" => "text/html; charset=utf-8",
        b"css" => "text/css; charset=utf-8",
        b"js" | b"mjs" | b"cjs" => "text/javascript; charset=utf-8",
        b"json" | b"map" => "application/json",
        b"webmanifest" => "application/manifest+json",
        b"txt" => "text/plain; charset=utf-8",
        b"csv" => "text/csv; charset=utf-8",
        b"md" => "text/markdown; charset=utf-8",
        b"xml" => "application/xml",
        b"svg" => "image/svg+xml",
        b"png" => "image/png",
        b"jpg" | b"jpeg" => "image/jpeg",
        b"gif" => "image/gif",
        b"webp" => "image/webp",
        b"avif" => "image/avif",
        b"ico" => "image/x-icon",
        b"wasm" => "application/wasm",
        b"woff2" => "font/woff2",
        b"woff" => "font/woff",
        b"ttf" => "font/ttf",
        b"otf" => "font/otf",
        b"eot" => "application/vnd.ms-fontobject",
        b"pdf" => "application/pdf",
        b"mp4" => "video/mp4",
        b"webm" => "video/webm",
        b"mp3" => "audio/mpeg",
        b"zip" => "application/zip",
        b"gz" => "application/gzip",
        _ => return None,
    })
}

const OCTET: HeaderValue = HeaderValue::from_static("application/octet-stream");

pub fn content_type(path: &Path) -> HeaderValue {
    let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
        return OCTET;
    };
    let mut lower = [0u8; 12];
    if let Some(l) = lower.get_mut(..ext.len()) {
        l.copy_from_slice(ext.as_bytes());
        l.make_ascii_lowercase();
        if let Some(t) = known(l) {
            return HeaderValue::from_static(t);
        }
    }
    // mime_guess searches a table of ~1,500 entries: each thread keeps what
    // it found for the few long-tail extensions a site really has, in a
    // short list that is cheaper to scan than a hash map is to hash.
    thread_local! {
        static FOUND: RefCell<Vec<(Box<str>, HeaderValue)>> = const { RefCell::new(Vec::new()) };
    }
    FOUND.with_borrow_mut(|found| {
        if let Some((_, v)) = found.iter().find(|(e, _)| e.eq_ignore_ascii_case(ext)) {
            return v.clone();
        }
        let v = guess(ext);
        // Bounded whatever names requests make up.
        if found.len() >= 32 {
            found.clear();
        }
        found.push((ext.into(), v.clone()));
        v
    })
}

fn guess(ext: &str) -> HeaderValue {
    match mime_guess::from_ext(ext).first_raw() {
        Some(t) if t.starts_with("text/") => {
            HeaderValue::from_str(&format!("{t}; charset=utf-8")).unwrap_or(OCTET)
        }
        Some(t) => HeaderValue::from_static(t),
        None => OCTET,
    }
}

/// Formats that are compressed already: no `.br`/`.gz` is looked for, which
/// spares two failed opens per image or font on a `precompressed` route.
pub fn already_compressed(path: &Path) -> bool {
    const SKIP: &[&str] = &[
        "png", "jpg", "jpeg", "gif", "webp", "avif", "woff", "woff2", "mp4", "webm", "mp3", "zip",
        "gz", "br",
    ];
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| SKIP.iter().any(|s| s.eq_ignore_ascii_case(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(name: &str) -> String {
        content_type(Path::new(name)).to_str().unwrap().to_string()
    }

    #[test]
    fn web_types() {
        assert_eq!(ct("app.css"), "text/css; charset=utf-8");
        assert_eq!(ct("app.3f9a.js"), "text/javascript; charset=utf-8");
        assert_eq!(ct("mod.mjs"), "text/javascript; charset=utf-8");
        assert_eq!(ct("data.json"), "application/json");
        assert_eq!(ct("logo.svg"), "image/svg+xml");
        assert_eq!(ct("app.wasm"), "application/wasm");
        assert_eq!(ct("font.woff2"), "font/woff2");
        assert_eq!(ct("pic.webp"), "image/webp");
        assert_eq!(ct("pic.avif"), "image/avif");
        assert_eq!(ct("app.js.map"), "application/json");
        assert_eq!(ct("robots.txt"), "text/plain; charset=utf-8");
        assert_eq!(ct("index.html"), "text/html; charset=utf-8");
        assert_eq!(ct("LOGO.PNG"), "image/png");
    }

    #[test]
    fn long_tail_and_unknown() {
        assert_eq!(ct("feed.rss"), "application/rss+xml");
        assert_eq!(ct("notes.rtx"), "text/richtext; charset=utf-8");
        assert_eq!(ct("blob.unknownext"), "application/octet-stream");
        assert_eq!(ct("Makefile"), "application/octet-stream");
    }

    #[test]
    fn compressed_formats_are_known() {
        assert!(already_compressed(Path::new("a.PNG")));
        assert!(already_compressed(Path::new("f.woff2")));
        assert!(!already_compressed(Path::new("a.css")));
        assert!(!already_compressed(Path::new("a.svg")));
        assert!(!already_compressed(Path::new("noext")));
    }
}
