//! Calendly's cursor pagination, as plain values: a page's shape and where the next one starts.
//!
//! Every list endpoint answers `{collection, pagination: {next_page, next_page_token, ...}}` and the
//! last page has `next_page: null`. The next request is built from the configured base URL plus the
//! token, never by following `next_page` itself: that URL is data from the network, and the
//! bearer token must not go wherever it points.

use serde::Deserialize;

/// Pages followed for one listing before giving up. With 100 items a page that is a million items;
/// reaching it means the server keeps answering with a next page.
pub const MAX_PAGES: u32 = 10_000;

#[derive(Debug, Deserialize)]
pub struct Page<T> {
    pub collection: Vec<T>,
    #[serde(default)]
    pub pagination: Pagination,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
pub struct Pagination {
    #[serde(default)]
    pub next_page: Option<String>,
    #[serde(default)]
    pub next_page_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaginationError {
    #[error("pagination.next_page has no page_token to continue with")]
    NoToken,
    #[error("the next page token repeats the current one, so the listing would never end")]
    Stuck,
    #[error("more than {MAX_PAGES} pages; stopped")]
    TooManyPages,
}

/// The `page_token` of the page after this one; `None` on the last page.
pub fn next_page_token(pagination: &Pagination) -> Result<Option<String>, PaginationError> {
    if let Some(token) = non_empty(pagination.next_page_token.as_deref()) {
        return Ok(Some(token.to_owned()));
    }
    let Some(next_page) = non_empty(pagination.next_page.as_deref()) else {
        return Ok(None);
    };
    // Older answers (and some proxies' rewrites) carry only the URL; its token is what counts.
    let url = reqwest::Url::parse(next_page).map_err(|_| PaginationError::NoToken)?;
    url.query_pairs()
        .find(|(name, value)| name == "page_token" && !value.is_empty())
        .map(|(_, value)| Some(value.into_owned()))
        .ok_or(PaginationError::NoToken)
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|value| !value.is_empty())
}

/// Where a listing is: which token to send next, and whether it is finished. Bounded by
/// [`MAX_PAGES`] and refusing a token that does not move, so a loop over it always ends.
#[derive(Debug, Default)]
pub struct Cursor {
    token: Option<String>,
    pages: u32,
    done: bool,
}

impl Cursor {
    pub fn new() -> Self {
        Self::default()
    }

    /// The `page_token` for the next request; `None` for the first page.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Moves past a page that answered with `pagination`.
    pub fn advance(&mut self, pagination: &Pagination) -> Result<(), PaginationError> {
        self.pages += 1;
        match next_page_token(pagination)? {
            None => self.done = true,
            Some(next) if self.token.as_deref() == Some(next.as_str()) => return Err(PaginationError::Stuck),
            Some(_) if self.pages >= MAX_PAGES => return Err(PaginationError::TooManyPages),
            Some(next) => self.token = Some(next),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pagination(next_page: Option<&str>, token: Option<&str>) -> Pagination {
        Pagination {
            next_page: next_page.map(str::to_owned),
            next_page_token: token.map(str::to_owned),
        }
    }

    #[test]
    fn the_last_page_has_no_next_page() {
        assert_eq!(next_page_token(&pagination(None, None)), Ok(None));
        assert_eq!(next_page_token(&pagination(Some(""), Some(" "))), Ok(None));
    }

    #[test]
    fn the_token_is_preferred_and_otherwise_read_from_next_page() {
        let next = "https://api.calendly.com/scheduled_events?count=100&page_token=abc%2B1&organization=o";
        assert_eq!(
            next_page_token(&pagination(Some(next), Some("tok"))),
            Ok(Some("tok".into()))
        );
        assert_eq!(
            next_page_token(&pagination(Some(next), None)),
            Ok(Some("abc+1".into()))
        );
        assert_eq!(
            next_page_token(&pagination(Some("https://api.calendly.com/x?count=1"), None)),
            Err(PaginationError::NoToken)
        );
        assert_eq!(
            next_page_token(&pagination(Some("not a url"), None)),
            Err(PaginationError::NoToken)
        );
    }

    #[test]
    fn a_page_parses_with_or_without_pagination() {
        let page: Page<u8> = serde_json::from_str(
            r#"{"collection":[1,2],"pagination":{"count":2,"next_page":null,"previous_page":null,
                "next_page_token":null,"previous_page_token":null}}"#,
        )
        .expect("page");
        assert_eq!(page.collection, vec![1, 2]);
        assert_eq!(page.pagination, Pagination::default());
        let page: Page<u8> = serde_json::from_str(r#"{"collection":[]}"#).expect("page");
        assert!(page.collection.is_empty());
    }

    #[test]
    fn a_cursor_walks_pages_until_the_last() {
        let mut cursor = Cursor::new();
        assert_eq!(cursor.token(), None);
        cursor.advance(&pagination(None, Some("p2"))).expect("advance");
        assert_eq!(cursor.token(), Some("p2"));
        assert!(!cursor.is_done());
        cursor.advance(&pagination(None, Some("p3"))).expect("advance");
        cursor.advance(&pagination(None, None)).expect("advance");
        assert!(cursor.is_done());
    }

    #[test]
    fn a_cursor_refuses_a_token_that_does_not_move() {
        let mut cursor = Cursor::new();
        cursor.advance(&pagination(None, Some("same"))).expect("advance");
        assert_eq!(
            cursor.advance(&pagination(None, Some("same"))),
            Err(PaginationError::Stuck)
        );
    }

    #[test]
    fn a_cursor_stops_after_the_page_limit() {
        let mut cursor = Cursor::new();
        let mut result = Ok(());
        for page in 0..=MAX_PAGES {
            result = cursor.advance(&pagination(None, Some(&page.to_string())));
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(PaginationError::TooManyPages));
    }
}
