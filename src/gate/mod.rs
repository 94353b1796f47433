//! JWT gatekeeping: per-route token policies. Not built yet: a config that
//! names a policy is refused by the compiler, never silently ignored.

use http::{HeaderValue, StatusCode};

pub struct Policy {
    pub name: String,
}

/// Why a request was turned away, and how to answer it.
#[derive(Debug)]
pub struct Rejection {
    pub status: StatusCode,
    pub www_authenticate: Option<HeaderValue>,
    /// For the log line only (never sent to the client).
    pub reason: &'static str,
}

impl Policy {
    pub fn check(&self, _parts: &mut http::request::Parts) -> Result<(), Rejection> {
        Err(Rejection {
            status: StatusCode::UNAUTHORIZED,
            www_authenticate: Some(HeaderValue::from_static("Bearer realm=\"portcullis\"")),
            reason: "jwt policies are not supported yet",
        })
    }
}
