//! Request bodies read whole before the upstream is asked (`buffer_requests`,
//! `buffer_chunked`): WSGI servers hand a chunked body to the app as empty,
//! and a slow upload streamed through would hold an app worker. All such
//! bodies share one memory budget, `server.max_buffered`, whatever the
//! number of connections and streams.

use crate::body::ReqBody;
use crate::error::ProxyError;
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of request bodies read whole and not yet done with, in the whole
/// process.
static BUFFERED: AtomicU64 = AtomicU64::new(0);

/// A share of `BUFFERED`, given back when dropped: while a body is read, and
/// then with the bytes themselves, so that it goes back when their last
/// copy (a retry keeps one) is dropped.
struct Share(u64);

impl Share {
    fn grow(&mut self, n: u64, limit: u64) -> bool {
        if BUFFERED.fetch_add(n, Ordering::Relaxed) + n > limit {
            BUFFERED.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        self.0 += n;
        true
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        BUFFERED.fetch_sub(self.0, Ordering::Relaxed);
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

/// The whole body, up to `max` (else 413), while all bodies held so far
/// leave room under `limit` (else 503); it counts against `limit` until
/// the bytes are dropped.
pub(super) async fn read_whole(
    mut body: ReqBody,
    max: u64,
    limit: u64,
) -> Result<Bytes, ProxyError> {
    use http_body_util::BodyExt;
    let busy = || {
        tracing::warn!(
            max_buffered = limit,
            "request bodies in memory at max_buffered; refusing with 503"
        );
        ProxyError::Busy
    };
    let mut share = Share(0);
    // A declared length (past max_body it was answered 413 before) is taken
    // from the budget at once and the buffer made that size: no copy as it
    // grows, and no room promised that the budget does not have.
    let declared = http_body::Body::size_hint(&body)
        .exact()
        .filter(|&n| n <= max);
    let mut whole = match declared {
        Some(n) if !share.grow(n, limit) => return Err(busy()),
        Some(n) => BytesMut::with_capacity(n as usize),
        None => BytesMut::new(),
    };
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| super::client_body_error(&e))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers: not forwarded
        };
        let total = whole.len() as u64 + data.len() as u64;
        if total > max {
            return Err(ProxyError::BodyTooLarge);
        }
        if total > share.0 && !share.grow(total - share.0, limit) {
            return Err(busy());
        }
        whole.extend_from_slice(&data);
    }
    Ok(Bytes::from_owner(Held {
        bytes: whole.freeze(),
        _share: share,
    }))
}
