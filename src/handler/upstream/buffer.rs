//! Request bodies read whole before the upstream is asked (`buffer_requests`,
//! `buffer_chunked`): WSGI servers hand a chunked body to the app as empty,
//! and a slow upload streamed through would hold an app worker.
//!
//! A body up to `server.max_body_in_memory` is kept in memory, while all such
//! bodies together stay within `server.max_buffered`, whatever the number of
//! connections and streams. A larger body, or one that finds the budget
//! spent, goes to a temporary file (spill.rs): memory stays bounded and the
//! request is still served.

use super::spill::Spill;
use crate::body::BoxError;
use crate::error::ProxyError;
use crate::state::ServerSettings;
use crate::upstream::h1::SendBody;
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of request bodies read whole into memory and not yet done with, in
/// the whole process.
static BUFFERED: AtomicU64 = AtomicU64::new(0);

/// Bytes of bodies held in memory now, in the whole process (a metric).
pub(crate) fn in_memory() -> u64 {
    BUFFERED.load(Ordering::Relaxed)
}

/// A share of a process-wide budget, given back when dropped. Of
/// `BUFFERED`: while a body is read, and then with the bytes themselves, so
/// that it goes back when their last copy (a retry keeps one) is dropped.
/// Of the bytes in files (spill.rs): with the file.
pub(crate) struct Share {
    pool: &'static AtomicU64,
    n: u64,
}

impl Share {
    pub(super) fn new(pool: &'static AtomicU64) -> Share {
        Share { pool, n: 0 }
    }

    pub(crate) fn memory() -> Share {
        Share::new(&BUFFERED)
    }

    pub(crate) fn held(&self) -> u64 {
        self.n
    }

    pub(crate) fn grow(&mut self, n: u64, limit: u64) -> bool {
        if self.pool.fetch_add(n, Ordering::Relaxed) + n > limit {
            self.pool.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        self.n += n;
        true
    }

    /// Grow past the limit: for bytes held anyway (an answer's one piece
    /// read ahead), which still count against everyone else's.
    pub(crate) fn force(&mut self, n: u64) {
        self.pool.fetch_add(n, Ordering::Relaxed);
        self.n += n;
    }

    /// Give `n` of the share back (at most what is held).
    pub(crate) fn shrink(&mut self, n: u64) {
        let n = n.min(self.n);
        self.pool.fetch_sub(n, Ordering::Relaxed);
        self.n -= n;
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.pool.fetch_sub(self.n, Ordering::Relaxed);
    }
}

/// The owner of a whole body's bytes (`Bytes::from_owner`).
struct Held {
    bytes: Bytes,
    _share: Share,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// The whole body, up to `max` (the route's `max_body`, else 413), in memory
/// or in a temporary file (see the module's comment).
pub(super) async fn read_whole<B>(
    mut body: B,
    max: u64,
    server: &ServerSettings,
) -> Result<SendBody, ProxyError>
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Unpin,
{
    use http_body_util::BodyExt;
    let keep = server.max_body_in_memory;
    let mut share = Share::memory();
    let mut whole = BytesMut::new();
    let mut spill = None;
    // A declared length (past max_body it was answered 413 before) decides
    // at once: taken from the budget, with a buffer made that size (no copy
    // as it grows, and no room promised that the budget does not have), or
    // straight to a file.
    match http_body::Body::size_hint(&body).exact() {
        Some(n) if n > max => {}
        Some(n) if n <= keep && share.grow(n, server.max_buffered) => {
            whole.reserve(n as usize);
        }
        Some(_) => spill = Some(Spill::create(server)?),
        None => {}
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| super::client_body_error(&e))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers: not forwarded
        };
        // The one max_body check, wherever the body is kept. What the body
        // still promises counts too (the rest of a chunk whose size line
        // passes max_body): refused now, not once that much has arrived.
        let so_far = spill.as_ref().map_or(whole.len() as u64, Spill::total);
        let total = so_far + data.len() as u64;
        if total.saturating_add(http_body::Body::size_hint(&body).lower()) > max {
            return Err(ProxyError::BodyTooLarge);
        }
        if let Some(s) = &mut spill {
            s.write(&data).await?;
            continue;
        }
        if total > share.held()
            && (total > keep || !share.grow(total - share.held(), server.max_buffered))
        {
            // Too big for memory after all (a body without a length), or
            // the budget is spent: what came so far goes to the file first.
            // The held bytes themselves are the first write: no copy.
            let held = std::mem::take(&mut whole);
            share = Share::memory();
            let mut s = Spill::create(server)?;
            s.write_held(held).await?;
            s.write(&data).await?;
            spill = Some(s);
            continue;
        }
        whole.extend_from_slice(&data);
    }
    match spill {
        Some(s) => s.finish().await,
        None => Ok(SendBody::Full(Bytes::from_owner(Held {
            bytes: whole.freeze(),
            _share: share,
        }))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
    use http_body_util::{BodyExt, Full, StreamBody};

    /// The budgets are process-wide and tests run at once: each test here
    /// holds this while it runs, so that none sees another's bodies.
    static BUDGETS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    fn server(extra: &str) -> ServerSettings {
        let toml = format!("[server]\n{extra}\n[[listen]]\naddr = \"127.0.0.1:8080\"\n");
        let src = crate::config::Source {
            path: None,
            base_dir: std::env::temp_dir(),
        };
        let snap = crate::config::load_str(&toml, &src, None).unwrap_or_else(|e| panic!("{e}"));
        snap.server.clone()
    }

    /// A body with a Content-Length.
    fn sized(b: &[u8]) -> impl http_body::Body<Data = Bytes, Error = BoxError> + Unpin {
        Full::new(Bytes::copy_from_slice(b)).map_err(|e| match e {})
    }

    /// A body without one, in these pieces.
    fn lengthless(
        pieces: &[&[u8]],
    ) -> impl http_body::Body<Data = Bytes, Error = BoxError> + Unpin {
        let frames: Vec<Result<_, BoxError>> = pieces
            .iter()
            .map(|p| Ok(Frame::data(Bytes::copy_from_slice(p))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    /// Where the body ended up, and its bytes.
    fn contents(b: &SendBody) -> (&'static str, Vec<u8>) {
        match b {
            SendBody::Full(b) => ("memory", b.to_vec()),
            SendBody::File { file, len, .. } => {
                let mut v = vec![0; *len as usize];
                std::os::unix::fs::FileExt::read_exact_at(&**file, &mut v, 0).unwrap();
                // Nothing past len either.
                let mut more = [0u8; 1];
                let n = std::os::unix::fs::FileExt::read_at(&**file, &mut more, *len).unwrap();
                assert_eq!(n, 0, "the file is longer than the body");
                ("file", v)
            }
            _ => panic!("neither in memory nor in a file"),
        }
    }

    #[tokio::test]
    async fn a_small_body_stays_in_memory() {
        let _budgets = BUDGETS.lock().await;
        let s = server("max_body_in_memory = \"1KiB\"");
        let b = read_whole(sized(b"hello"), s.max_body, &s).await.unwrap();
        assert_eq!(contents(&b), ("memory", b"hello".to_vec()));
        let b = read_whole(lengthless(&[b"he", b"llo"]), s.max_body, &s)
            .await
            .unwrap();
        assert_eq!(contents(&b), ("memory", b"hello".to_vec()));
    }

    #[tokio::test]
    async fn a_body_over_max_body_in_memory_goes_to_a_file() {
        let _budgets = BUDGETS.lock().await;
        let s = server("max_body_in_memory = \"1KiB\"");
        // More than two stages' worth, so written in several writes.
        let big: Vec<u8> = (0..(2 * super::super::spill::STAGE + 5000) as u32)
            .map(|i| (i % 251) as u8)
            .collect();
        // Known from its length at once...
        let b = read_whole(sized(&big), s.max_body, &s).await.unwrap();
        assert_eq!(contents(&b), ("file", big.clone()));
        // ...or found out on the way: what was held goes to the file first;
        // pieces that straddle a stage's end are split across writes.
        let mut pieces: Vec<&[u8]> = vec![&big[..700], &big[700..1024]];
        pieces.extend(big[1024..].chunks(7777));
        let b = read_whole(lengthless(&pieces), s.max_body, &s)
            .await
            .unwrap();
        assert_eq!(contents(&b), ("file", big.clone()));
    }

    #[tokio::test]
    async fn a_spent_memory_budget_sends_bodies_to_files() {
        let _budgets = BUDGETS.lock().await;
        // No budget at all: every body is a file, none refused.
        let s = server("max_buffered = \"0\"");
        assert_eq!(s.max_body_in_memory, 0);
        let b = read_whole(sized(b"small"), s.max_body, &s).await.unwrap();
        assert_eq!(contents(&b), ("file", b"small".to_vec()));
        let b = read_whole(lengthless(&[b"sm", b"all"]), s.max_body, &s)
            .await
            .unwrap();
        assert_eq!(contents(&b), ("file", b"small".to_vec()));
    }

    #[tokio::test]
    async fn max_body_holds_wherever_the_body_is_kept() {
        let _budgets = BUDGETS.lock().await;
        let s = server("max_body = \"2KiB\"\nmax_body_in_memory = \"1KiB\"");
        let big = vec![b'x'; 3000];
        for body in [
            read_whole(sized(&big), s.max_body, &s).await,
            read_whole(lengthless(&[&big[..500], &big[500..]]), s.max_body, &s).await,
            read_whole(lengthless(&[&big[..1500], &big[1500..]]), s.max_body, &s).await,
        ] {
            assert!(matches!(body, Err(ProxyError::BodyTooLarge)));
        }
    }

    #[tokio::test]
    async fn bodies_in_files_stay_within_max_spilled() {
        let _budgets = BUDGETS.lock().await;
        let s =
            server("max_body = \"4KiB\"\nmax_body_in_memory = \"1KiB\"\nmax_spilled = \"4KiB\"");
        let body = vec![b's'; 3000];
        let first = read_whole(sized(&body), s.max_body, &s).await.unwrap();
        assert_eq!(contents(&first).0, "file");
        // 3000 bytes on disk of 4 KiB: another 3000 do not fit, in one piece...
        let e = read_whole(sized(&body), s.max_body, &s).await.err();
        assert!(matches!(e, Some(ProxyError::BodyStore)), "{e:?}");
        // ...or found out on the way.
        let e = read_whole(lengthless(&[&body[..1500], &body[1500..]]), s.max_body, &s)
            .await
            .err();
        assert!(matches!(e, Some(ProxyError::BodyStore)), "{e:?}");
        // Once the first file is closed its bytes are given back.
        drop(first);
        let again = read_whole(lengthless(&[&body[..1500], &body[1500..]]), s.max_body, &s)
            .await
            .unwrap();
        assert_eq!(contents(&again), ("file", body));
    }

    /// A body that declares its length (what is left of it) and sends what
    /// the test gives it.
    struct Declared(u64, tokio::sync::mpsc::UnboundedReceiver<Bytes>);

    impl http_body::Body for Declared {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            let frame = std::task::ready!(self.1.poll_recv(cx));
            if let Some(b) = &frame {
                self.0 -= b.len() as u64;
            }
            std::task::Poll::Ready(frame.map(|b| Ok(Frame::data(b))))
        }
        fn size_hint(&self) -> http_body::SizeHint {
            http_body::SizeHint::with_exact(self.0)
        }
    }

    #[tokio::test]
    async fn a_declared_length_alone_holds_no_disk() {
        let _budgets = BUDGETS.lock().await;
        let s =
            server("max_body = \"8KiB\"\nmax_body_in_memory = \"1KiB\"\nmax_spilled = \"8KiB\"");
        // A body that declares 8000 bytes and has sent none: it has its
        // file (the runtime has one thread: the task runs to its first
        // wait at the yield)...
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let server = s.clone();
        let first =
            tokio::spawn(
                async move { read_whole(Declared(8000, rx), server.max_body, &server).await },
            );
        tokio::task::yield_now().await;
        // ...but none of the disk budget: 6000 bytes of another fit.
        let second = read_whole(sized(&[b'x'; 6000]), s.max_body, &s)
            .await
            .unwrap();
        assert_eq!(contents(&second).0, "file");
        // Its bytes, once they come, do not.
        tx.send(Bytes::from(vec![b'y'; 8000])).unwrap();
        let e = first.await.unwrap().err();
        assert!(matches!(e, Some(ProxyError::BodyStore)), "{e:?}");
    }

    #[tokio::test]
    async fn a_temp_dir_gone_is_a_503_not_a_panic() {
        let _budgets = BUDGETS.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let s = server(&format!(
            "max_body_in_memory = \"4\"\nbody_temp_dir = \"{}\"",
            dir.path().display()
        ));
        drop(dir);
        let Err(e) = read_whole(sized(b"too big for memory"), s.max_body, &s).await else {
            panic!("kept with no directory to keep it in");
        };
        assert!(matches!(e, ProxyError::BodyStore), "{e}");
        assert_eq!(e.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        // A small one does not need the directory.
        let b = read_whole(sized(b"ok"), s.max_body, &s).await.unwrap();
        assert_eq!(contents(&b), ("memory", b"ok".to_vec()));
    }
}
