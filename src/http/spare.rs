//! Response header maps kept per thread for the next response. A map is
//! two allocations (its index table and its entries); an HTTP/1 answer's
//! map is done with once its head is encoded, and the next answer on the
//! thread takes it back, cleared, with its room.

use http::HeaderMap;
use std::cell::RefCell;

/// Room every map is made with: what the static handler sets (about ten
/// fields) plus what the proxy adds (X-Request-Id, HSTS).
const ROOM: usize = 12;
/// More spares than this are dropped: a thread rarely has more answers
/// being encoded at once.
const KEEP: usize = 16;
/// A map grown past this (a route with many `headers`, a long answer) is
/// not kept, so that spares stay small.
const MAX_ROOM: usize = 48;

thread_local! {
    static MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map for a response's own fields.
pub fn map() -> HeaderMap {
    MAPS.try_with(|m| m.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| HeaderMap::with_capacity(ROOM))
}

/// Keep `h` for a later `map()`; its fields are dropped now.
pub fn recycle(mut h: HeaderMap) {
    if h.capacity() == 0 || h.capacity() > MAX_ROOM {
        return;
    }
    h.clear();
    let _ = MAPS.try_with(|m| {
        let mut m = m.borrow_mut();
        if m.len() < KEEP {
            m.push(h);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HeaderValue, ETAG};

    #[test]
    fn a_recycled_map_comes_back_empty_with_its_room() {
        let mut h = map();
        h.insert(ETAG, HeaderValue::from_static("\"x\""));
        let room = h.capacity();
        assert!(room >= ROOM);
        recycle(h);
        let again = map();
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(again.capacity(), room);
    }

    #[test]
    fn grown_maps_are_not_kept() {
        while MAPS.with_borrow(Vec::len) > 0 {
            drop(map());
        }
        let mut big = HeaderMap::with_capacity(MAX_ROOM * 2);
        big.insert(ETAG, HeaderValue::from_static("\"x\""));
        recycle(big);
        assert_eq!(MAPS.with_borrow(Vec::len), 0);
    }
}
