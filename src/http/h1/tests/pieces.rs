//! Requests in arbitrary pieces and arbitrary bytes: the connection may
//! receive anything, split anywhere.

use super::super::request::parse;
use super::MAX;
use bytes::BytesMut;

/// Hostile bytes never panic the parser, and a head split anywhere parses
/// the same as whole: the connection may receive it in any pieces.
#[test]
fn any_bytes_in_any_pieces_parse_or_are_refused_without_panic() {
    let pieces: &[&[u8]] = &[
        b"GET ",
        b"POST ",
        b"/a?b=c",
        b"http://h/x",
        b"*",
        b" HTTP/1.1",
        b" HTTP/1.0",
        b" HTTP/9.9",
        b"\r\n",
        b"\n",
        b"Host: x",
        b"Content-Length: 5",
        b"Content-Length: 99999999999999999999",
        b"Transfer-Encoding: chunked",
        b"Connection: close, upgrade",
        b"Upgrade: websocket",
        b"Expect: 100-continue",
        b": ",
        b" ",
        b"\0",
        b"\xff\xfe",
        b"\t",
    ];
    let mut rng = fastrand::Rng::with_seed(8);
    for _ in 0..20_000 {
        let mut input = Vec::new();
        for _ in 0..rng.usize(1..16) {
            if rng.u8(..) < 20 {
                input.push(rng.u8(..));
            } else {
                input.extend_from_slice(pieces[rng.usize(..pieces.len())]);
            }
        }
        if rng.bool() {
            input.extend_from_slice(b"\r\n\r\n");
        }
        let whole = parse(&mut BytesMut::from(&input[..]), MAX).map(|h| h.map(|h| h.parts.uri));
        // Fed in two pieces: incomplete until the end, then the same answer.
        let cut = rng.usize(..=input.len());
        let mut buf = BytesMut::from(&input[..cut]);
        let early = parse(&mut buf, MAX);
        if let Ok(None) = early {
            buf.extend_from_slice(&input[cut..]);
            let later = parse(&mut buf, MAX).map(|h| h.map(|h| h.parts.uri));
            assert_eq!(
                later.is_ok(),
                whole.is_ok(),
                "{:?} cut at {cut}",
                String::from_utf8_lossy(&input)
            );
            if let (Ok(a), Ok(b)) = (&later, &whole) {
                assert_eq!(a, b, "{:?}", String::from_utf8_lossy(&input));
            }
        }
    }
}

/// A chunked body decodes the same in any pieces, and garbage is an error,
/// never a panic or a loop.
#[test]
fn chunked_bodies_decode_the_same_in_any_pieces() {
    use crate::http::decode::{Decoder, Step};
    let body =
        b"5\r\nhello\r\n1;ext=1\r\n \r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\nNEXT";
    let mut rng = fastrand::Rng::with_seed(9);
    for _ in 0..2_000 {
        let mut d = Decoder::chunked();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match d.step(&mut buf, true).expect("valid body") {
                Step::Data(b) => out.extend_from_slice(&b),
                Step::Done => break,
                Step::NeedMore => {
                    assert!(fed < body.len(), "needs more than the body");
                    let n = rng.usize(1..=(body.len() - fed).min(7));
                    buf.extend_from_slice(&body[fed..fed + n]);
                    fed += n;
                }
            }
        }
        assert_eq!(out, b"hello 0123456789abcdef");
        // What follows the body is left for the next request.
        buf.extend_from_slice(&body[fed..]);
        assert_eq!(&buf[..], b"NEXT");
    }
    for _ in 0..5_000 {
        let junk: Vec<u8> = (0..rng.usize(1..40)).map(|_| rng.u8(..)).collect();
        let mut d = Decoder::chunked();
        let mut buf = BytesMut::from(&junk[..]);
        for _ in 0..100 {
            match d.step(&mut buf, true) {
                Ok(Step::Data(_)) => {}
                Ok(Step::NeedMore) | Ok(Step::Done) | Err(_) => break,
            }
        }
    }
}

/// Chunk framing another server could read differently is refused: a bare
/// LF or another control byte in a chunk extension, and trailers that are
/// not plain field lines.
#[test]
fn chunk_extensions_and_trailers_that_could_be_read_two_ways_are_refused() {
    use crate::http::decode::{Decoder, Step};
    let run = |body: &[u8]| {
        let mut d = Decoder::chunked();
        let mut buf = BytesMut::from(body);
        let mut out = Vec::new();
        loop {
            match d.step(&mut buf, true) {
                Ok(Step::Data(b)) => out.extend_from_slice(&b),
                Ok(Step::Done) => return Ok(out),
                Ok(Step::NeedMore) => panic!("{:?} is whole", String::from_utf8_lossy(body)),
                Err(e) => return Err(e.0),
            }
        }
    };
    for bad in [
        &b"3;x=\nXYZ\r\nabc\r\n0\r\n\r\n"[..],
        b"3;x=\x00\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabc\r\n0;a\nb\r\n\r\n",
    ] {
        assert_eq!(
            run(bad),
            Err("control byte in a chunk extension"),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    for bad in [
        &b"3\r\nabc\r\n0\r\nX-T: a\r\n b\r\n\r\n"[..],
        b"3\r\nabc\r\n0\r\nno colon\r\n\r\n",
        b"3\r\nabc\r\n0\r\n: empty name\r\n\r\n",
        b"3\r\nabc\r\n0\r\nX-T: a\nGET / HTTP/1.1\r\n\r\n",
        b"3\r\nabc\r\n0\r\nX T: a\r\n\r\n",
    ] {
        assert_eq!(
            run(bad),
            Err("bad trailer field"),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // What stays accepted: extensions with tabs and quoted strings, and
    // ordinary trailers.
    let ok = b"3;a=1;b=\"x y\"\t\r\nabc\r\n0\r\nX-T: a\tb\r\nEtag: \"1\"\r\n\r\n";
    assert_eq!(run(ok), Ok(b"abc".to_vec()));
}

/// What a body promises still to come: the rest of a length, or of the
/// chunk under way once its size line is read.
#[test]
fn a_body_promises_the_rest_of_its_length_or_chunk() {
    use crate::http::decode::{Decoder, Step};
    let mut d = Decoder::chunked();
    assert_eq!(d.at_least(), 0, "no size line yet");
    let mut buf = BytesMut::from(&b"100000\r\nabc"[..]);
    match d.step(&mut buf, true).unwrap() {
        Step::Data(b) => assert_eq!(&b[..], b"abc"),
        _ => panic!("the three bytes sent"),
    }
    assert_eq!(d.at_least(), 0x100000 - 3);
    let mut d = Decoder::length(10);
    let mut buf = BytesMut::from(&b"0123"[..]);
    d.step(&mut buf, true).unwrap();
    assert_eq!(d.at_least(), 6);
}
