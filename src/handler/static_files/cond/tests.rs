use super::*;
use http::HeaderValue;

const TAG: &str = "\"5f1.0-10\"";

fn hm(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn eval(pairs: &[(&'static str, &str)]) -> Precondition {
    // Modified at 1_700_000_000 (Tue, 14 Nov 2023 22:13:20 GMT) plus a fraction.
    let v = Validators {
        etag: TAG,
        modified: Some(at(1_700_000_000) + Duration::from_millis(400)),
    };
    evaluate(&hm(pairs), &v)
}

const LM: &str = "Tue, 14 Nov 2023 22:13:20 GMT";
const BEFORE: &str = "Tue, 14 Nov 2023 22:13:19 GMT";

#[test]
fn etag_is_strong_and_changes_with_time_length_and_coding() {
    let a = etag(Some(at(100)), 10, None);
    assert!(a.starts_with('"') && a.ends_with('"') && !a.starts_with("W/"));
    assert_ne!(a, etag(Some(at(101)), 10, None));
    assert_ne!(a, etag(Some(at(100) + Duration::from_nanos(1)), 10, None));
    assert_ne!(a, etag(Some(at(100)), 11, None));
    assert_ne!(a, etag(Some(at(100)), 10, Some("br")));
    assert!(HeaderValue::from_str(&etag(Some(at(100)), 10, Some("gzip"))).is_ok());
}

#[test]
fn if_none_match() {
    assert_eq!(eval(&[("if-none-match", TAG)]), Precondition::NotModified);
    assert_eq!(
        eval(&[("if-none-match", "W/\"5f1.0-10\"")]),
        Precondition::NotModified
    );
    assert_eq!(
        eval(&[("if-none-match", "\"a,b\", \"5f1.0-10\"")]),
        Precondition::NotModified
    );
    assert_eq!(eval(&[("if-none-match", "*")]), Precondition::NotModified);
    assert_eq!(
        eval(&[("if-none-match", "\"other\"")]),
        Precondition::Proceed
    );
    assert_eq!(
        eval(&[("if-none-match", "5f1.0-10")]),
        Precondition::Proceed
    );
    // If-None-Match wins over If-Modified-Since.
    assert_eq!(
        eval(&[("if-none-match", "\"other\""), ("if-modified-since", LM)]),
        Precondition::Proceed
    );
}

#[test]
fn if_modified_since() {
    assert_eq!(
        eval(&[("if-modified-since", LM)]),
        Precondition::NotModified
    );
    assert_eq!(
        eval(&[("if-modified-since", BEFORE)]),
        Precondition::Proceed
    );
    assert_eq!(
        eval(&[("if-modified-since", "yesterday")]),
        Precondition::Proceed
    );
}

#[test]
fn if_match_and_if_unmodified_since() {
    assert_eq!(eval(&[("if-match", TAG)]), Precondition::Proceed);
    assert_eq!(eval(&[("if-match", "*")]), Precondition::Proceed);
    assert_eq!(
        eval(&[("if-match", "W/\"5f1.0-10\"")]),
        Precondition::Failed
    );
    assert_eq!(eval(&[("if-match", "\"other\"")]), Precondition::Failed);
    assert_eq!(eval(&[("if-unmodified-since", LM)]), Precondition::Proceed);
    assert_eq!(
        eval(&[("if-unmodified-since", BEFORE)]),
        Precondition::Failed
    );
}

#[test]
fn if_range() {
    let v = Validators {
        etag: TAG,
        modified: Some(at(1_700_000_000)),
    };
    assert!(if_range_holds(&hm(&[]), &v));
    assert!(if_range_holds(&hm(&[("if-range", TAG)]), &v));
    assert!(!if_range_holds(&hm(&[("if-range", "W/\"5f1.0-10\"")]), &v));
    assert!(!if_range_holds(&hm(&[("if-range", "\"old\"")]), &v));
    assert!(if_range_holds(&hm(&[("if-range", LM)]), &v));
    assert!(!if_range_holds(&hm(&[("if-range", BEFORE)]), &v));
}

#[test]
fn ranges() {
    use Range::*;
    assert_eq!(range("bytes=0-4", 10), Partial(0, 4));
    assert_eq!(range("bytes=5-", 10), Partial(5, 9));
    assert_eq!(range("bytes=-3", 10), Partial(7, 9));
    assert_eq!(range("bytes=-30", 10), Partial(0, 9));
    assert_eq!(range("bytes=8-100", 10), Partial(8, 9));
    assert_eq!(range("Bytes = 9-9", 10), Partial(9, 9));
    assert_eq!(range("bytes=10-", 10), Unsatisfiable);
    assert_eq!(range("bytes=10-20", 10), Unsatisfiable);
    assert_eq!(range("bytes=-0", 10), Unsatisfiable);
    assert_eq!(range("bytes=0-", 0), Unsatisfiable);
    // Ignored: several ranges, reversed, other units, junk.
    assert_eq!(range("bytes=0-1,3-4", 10), Full);
    assert_eq!(range("bytes=5-2", 10), Full);
    assert_eq!(range("items=0-1", 10), Full);
    assert_eq!(range("bytes=+1-2", 10), Full);
    assert_eq!(range("bytes=a-b", 10), Full);
    assert_eq!(range("bytes=", 10), Full);
    assert_eq!(range("0-4", 10), Full);
}

fn acc(s: &str) -> [Option<Coding>; 2] {
    accepted(Some(&HeaderValue::from_str(s).unwrap()))
}

#[test]
fn accept_encoding_with_q_values() {
    use Coding::*;
    assert_eq!(accepted(None), [None, None]);
    assert_eq!(acc("gzip, deflate, br"), [Some(Br), Some(Gzip)]);
    assert_eq!(acc("gzip"), [Some(Gzip), None]);
    assert_eq!(acc("br"), [Some(Br), None]);
    assert_eq!(acc("br;q=0, gzip"), [Some(Gzip), None]);
    assert_eq!(acc("gzip;q=0.5, br;q=0.4"), [Some(Gzip), Some(Br)]);
    assert_eq!(acc("gzip;q=0.5, br;q=0.500"), [Some(Br), Some(Gzip)]);
    assert_eq!(acc("BR;Q=1.0"), [Some(Br), None]);
    assert_eq!(acc("*"), [Some(Br), Some(Gzip)]);
    assert_eq!(acc("*;q=0.1, gzip;q=0"), [Some(Br), None]);
    assert_eq!(acc("identity"), [None, None]);
    assert_eq!(acc("deflate, x-gzip"), [Some(Gzip), None]);
    assert_eq!(acc("br;q=2"), [None, None]);
    assert_eq!(acc("br;q=0.0001"), [None, None]);
}
