//! `error_pages`, in `[server]` and on a route: status -> a file, read when
//! the config is (and again when the file changes: it is watched as the
//! config is), so that the app being down costs no disk read.

use super::Compiler;
use crate::handler::error_page::{content_type, ErrorPages, Page};
use http::HeaderValue;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A page is a page, not a download: larger is a mistake in the config.
const MAX_PAGE: u64 = 1 << 20;

impl Compiler<'_> {
    /// The pages at `place` over those of `base` (a route's over the
    /// server's); `None` when there are none at all.
    pub(super) fn error_pages(
        &mut self,
        raw: Option<&BTreeMap<String, String>>,
        place: &str,
        base: Option<&Arc<ErrorPages>>,
    ) -> Option<Arc<ErrorPages>> {
        let Some(raw) = raw.filter(|r| !r.is_empty()) else {
            return base.cloned();
        };
        let mut pages = base.map(|b| (**b).clone()).unwrap_or_default();
        for (status, file) in raw {
            let here = format!("{place}.error_pages.{status}");
            let Some(code) = status
                .parse::<u16>()
                .ok()
                .filter(|c| (400..=599).contains(c))
            else {
                self.errs
                    .add(&here, format!("{status:?} is not a status from 400 to 599"));
                continue;
            };
            if let Some(page) = self.page(file, &here) {
                pages.0.insert(code, page);
            }
        }
        Some(Arc::new(pages))
    }

    fn page(&mut self, file: &str, place: &str) -> Option<Page> {
        let path = self.src.resolve(file);
        let Some(ct) = content_type(&path) else {
            self.errs.add(
                place,
                format!("{file:?}: name a .html, .htm, .json, .txt or .xml file (its type is sent with it)"),
            );
            return None;
        };
        if !self.files.contains(&path) {
            self.files.push(path.clone());
        }
        let read = std::fs::metadata(&path).and_then(|m| {
            if m.len() > MAX_PAGE {
                Err(std::io::Error::other("larger than 1 MiB"))
            } else {
                std::fs::read(&path)
            }
        });
        match read {
            Ok(body) => Some(Page {
                body: body.into(),
                content_type: HeaderValue::from_static(ct),
                path,
            }),
            Err(e) => {
                self.errs
                    .add(place, format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }
}
