//! Writing a response: the head (with the framing and connection fields
//! this hop owns), then the body as the handler's body yields it. A small
//! body that is ready with the head goes out in the same write.

use super::io::{lock, Shared};
use crate::body::ProxyBody;
use crate::http::decode::Length;
use crate::http::Io;
use crate::http::RawFields;
use http::header;
use http::{StatusCode, Version};
use http_body::Body;
use std::future::poll_fn;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::Poll;

/// A body chunk this small is copied behind the head (or its chunk header)
/// and sent in one write; a larger one goes out as a second buffer.
const COPY_BELOW: usize = 16 * 1024;

/// How the body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// No body bytes (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// HTTP/1.0 without a length: the body ends with the connection.
    UntilClose,
}

/// Encode the status line and header fields into `out`; decides the body's
/// framing and may turn `keep_alive` off (a body without a length for an
/// HTTP/1.0 client).
pub fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    raw: Option<&RawFields>,
    hint: &http_body::SizeHint,
    head_request: bool,
    version: Version,
    keep_alive: &mut bool,
) -> Wire {
    let status = parts.status;
    let h = &parts.headers;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    // An upstream's fields as they came, less those the proxy set itself.
    if let Some(raw) = raw {
        raw.write_to(out, h);
    }
    for (name, value) in h {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if crate::http::raw::needs_date(h, raw) {
        out.extend_from_slice(b"date: ");
        date(out);
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let wire = if bodiless || head_request {
        // A HEAD answer's length (if any) is the GET's, set by the handler.
        Wire::None
    } else if let Some(Length::Is(n)) = h
        .get(header::CONTENT_LENGTH)
        .map(|v| Length::Absent.with(v.as_bytes()))
    {
        Wire::Length(n)
    } else if let Some(n) = hint.exact() {
        crate::http::raw::push_content_length(out, n);
        Wire::Length(n)
    } else if version == Version::HTTP_11 {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Wire::Chunked
    } else {
        *keep_alive = false;
        Wire::UntilClose
    };
    if status == StatusCode::SWITCHING_PROTOCOLS {
        // Its Connection and Upgrade fields came from the upstream.
    } else if !*keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    wire
}

/// The `Date` value, formatted once per second per thread.
fn date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    thread_local! {
        static CACHE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }
    let secs = crate::upstream::coarse_unix_secs();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            let s = httpdate::fmt_http_date(now);
            // An IMF-fixdate is always 29 bytes.
            if s.len() == 29 {
                c.1.copy_from_slice(s.as_bytes());
                c.0 = secs;
            } else {
                out.extend_from_slice(s.as_bytes());
                return;
            }
        }
        out.extend_from_slice(&c.1);
    });
}

/// Send the encoded head and the body. `Ok(true)`: the whole message went
/// out as framed, so the connection can carry another.
pub async fn send<T: Io>(
    io: &Mutex<Shared<T>>,
    mut head: Vec<u8>,
    mut body: ProxyBody,
    wire: Wire,
) -> io::Result<bool> {
    if let Wire::Length(n) = wire {
        if body.as_file().is_some() && lock(io).io.can_send_file() {
            return send_file(io, &head, &mut body, n).await;
        }
    }
    let mut head_sent = false;
    let mut sent: u64 = 0;
    if wire != Wire::None {
        loop {
            // Ready now (an upstream body already buffered, a file chunk in
            // the page cache): it joins the head. Otherwise the head goes
            // first, so the client is not kept waiting for it.
            let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(f) => f,
                Poll::Pending => {
                    if !head_sent {
                        write(io, &head, &[], &mut body).await?;
                        head_sent = true;
                    }
                    flush(io, &mut body).await?;
                    poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                }
            };
            let data = match frame {
                None => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "response body failed");
                    return Ok(false);
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(d) if !d.is_empty() => d,
                    _ => continue,
                },
            };
            if head_sent {
                head.clear();
            }
            let end = body.is_end_stream();
            let len = data.len() as u64;
            if let Wire::Length(n) = wire {
                if sent + len > n {
                    // More than the length said: the rest cannot be framed.
                    return Ok(false);
                }
            }
            sent += len;
            if wire == Wire::Chunked {
                let _ = write!(head, "{len:x}\r\n");
            }
            let tail: &[u8] = match (wire, end) {
                (Wire::Chunked, true) => b"\r\n0\r\n\r\n",
                (Wire::Chunked, false) => b"\r\n",
                _ => b"",
            };
            if data.len() < COPY_BELOW {
                head.extend_from_slice(&data);
                head.extend_from_slice(tail);
                write(io, &head, &[], &mut body).await?;
            } else {
                write(io, &head, &data, &mut body).await?;
                if !tail.is_empty() {
                    write(io, tail, &[], &mut body).await?;
                }
            }
            head_sent = true;
            if end {
                flush(io, &mut body).await?;
                return Ok(wire != Wire::UntilClose && length_met(wire, sent));
            }
        }
    }
    if !head_sent {
        write(io, &head, &[], &mut body).await?;
    } else if wire == Wire::Chunked {
        write(io, b"0\r\n\r\n", &[], &mut body).await?;
    }
    flush(io, &mut body).await?;
    Ok(wire != Wire::UntilClose && length_met(wire, sent))
}

/// How much of a file one send may take: the socket takes what fits anyway;
/// this bounds what one page-cache check vouches for.
const STRETCH: u64 = 4 << 20;

/// A static file over plain TCP: the head, then the file's bytes straight
/// from the page cache to the socket (sendfile), as nginx does. A stretch
/// not all in the cache is read through the body instead (off the runtime's
/// thread when it must wait for the disk).
async fn send_file<T: Io>(
    io: &Mutex<Shared<T>>,
    head: &[u8],
    body: &mut ProxyBody,
    len: u64,
) -> io::Result<bool> {
    // The head waits for the file's first bytes (`MSG_MORE`) only when they
    // go out by the very next call; a stretch read through the body may
    // wait for the disk, and the client should have the head meanwhile.
    let mut head_at = 0;
    let mut sent = 0;
    while sent < len {
        let Some(file) = body.as_file() else {
            break;
        };
        let n = match file.cached_stretch(STRETCH) {
            Some((f, off, n)) => {
                if head_at < head.len() {
                    poll_fn(|cx| lock(io).poll_write_all(cx, head, &mut head_at, true)).await?;
                }
                let n = n.min(len - sent);
                let put = poll_fn(|cx| lock(io).poll_send_file(cx, f, off, n)).await? as u64;
                if put == 0 {
                    // The file shrank under us: the length cannot be kept.
                    return Ok(false);
                }
                file.sent(put);
                body.count_sent(put);
                put
            }
            None => {
                if head_at < head.len() {
                    write(io, &head[head_at..], &[], body).await?;
                    head_at = head.len();
                }
                match poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
                    Some(Ok(frame)) => {
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        if sent + data.len() as u64 > len {
                            return Ok(false);
                        }
                        write(io, &data, &[], body).await?;
                        data.len() as u64
                    }
                    None => break,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "file body failed");
                        return Ok(false);
                    }
                }
            }
        };
        sent += n;
    }
    if head_at < head.len() {
        write(io, &head[head_at..], &[], body).await?;
    }
    flush(io, body).await?;
    Ok(sent == len)
}

fn length_met(wire: Wire, sent: u64) -> bool {
    match wire {
        Wire::Length(n) => n == sent,
        _ => true,
    }
}

/// Write `a` then `b`. A socket that cannot take them at once means the
/// client is slower than the body's source: the body is told, so that an
/// app's answer is read ahead of the client (`UpstreamBody::client_stalled`).
async fn write<T: Io>(
    io: &Mutex<Shared<T>>,
    a: &[u8],
    b: &[u8],
    body: &mut ProxyBody,
) -> io::Result<()> {
    let mut at = 0;
    poll_fn(|cx| {
        let mut s = lock(io);
        let r = if b.is_empty() {
            s.poll_write_from(cx, a, &mut at)
        } else {
            s.poll_write2_from(cx, a, b, &mut at)
        };
        if r.is_pending() {
            body.client_stalled();
        }
        r
    })
    .await
}

async fn flush<T: Io>(io: &Mutex<Shared<T>>, body: &mut ProxyBody) -> io::Result<()> {
    poll_fn(|cx| {
        let r = Pin::new(&mut lock(io).io).poll_flush(cx);
        if r.is_pending() {
            body.client_stalled();
        }
        r
    })
    .await
}
