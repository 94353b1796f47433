//! `ProxyError`: everything below the service returns it, and this file holds
//! the one table that turns an error into a status code.

use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches")]
    NoRoute,
    #[error("request body larger than max_body")]
    BodyTooLarge,
    #[error("request URI too long")]
    UriTooLong,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the client paused inside its request body")]
    BodyTimeout,
    #[error("no upstream server available")]
    NoServerAvailable,
    #[error("request body could not be stored in body_temp_dir")]
    BodyStore,
    #[error("connect to upstream failed: {0}")]
    Connect(String),
    #[error("upstream timed out")]
    UpstreamTimeout,
    #[error("upstream failed: {0}")]
    Upstream(String),
    #[error("not found")]
    NotFound,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute | ProxyError::NotFound => StatusCode::NOT_FOUND,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NoServerAvailable | ProxyError::BodyStore => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Connect(_) | ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The short, generic body sent to the client: never internal detail.
    pub fn public_message(&self) -> &'static str {
        match self.status() {
            StatusCode::NOT_FOUND => "not found\n",
            StatusCode::PAYLOAD_TOO_LARGE => "request body too large\n",
            StatusCode::URI_TOO_LONG => "request URI too long\n",
            StatusCode::BAD_REQUEST => "bad request\n",
            StatusCode::METHOD_NOT_ALLOWED => "method not allowed\n",
            StatusCode::REQUEST_TIMEOUT => "request timeout\n",
            StatusCode::SERVICE_UNAVAILABLE => "service unavailable\n",
            StatusCode::GATEWAY_TIMEOUT => "gateway timeout\n",
            StatusCode::INTERNAL_SERVER_ERROR => "internal server error\n",
            _ => "bad gateway\n",
        }
    }
}
