//! Static files. Not built yet: a `static` route is refused by the compiler.

use crate::error::ProxyError;
use crate::handler::Resp;
use crate::router::Route;

pub struct Site {}

pub async fn serve(
    _site: &Site,
    _route: &Route,
    _parts: &http::request::Parts,
) -> Result<Resp, ProxyError> {
    Err(ProxyError::NotFound)
}
