//! Reading a request: its text headers, its query, and the message fields of a POST, from
//! the query or from a JSON body.

use std::borrow::Cow;

use http::StatusCode;
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use spin_sdk::http::Request;

use crate::error::ApiError;

/// A body larger than this is refused before it is parsed.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

#[derive(Debug, Default, Deserialize)]
pub struct MessageFields {
    pub user_id: Option<String>,
    pub message: Option<String>,
}

/// The fields come from the query (the course's curl: `Content-Type: application/json`
/// and an empty body) or from a JSON body, never from both.
pub fn message_fields(request: &Request) -> Result<MessageFields, ApiError> {
    let mut from_query = MessageFields::default();
    for (name, value) in parse_query(request.query())? {
        let slot = match name.as_str() {
            "user_id" => &mut from_query.user_id,
            "message" => &mut from_query.message,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(ApiError::bad_request(format!("{name} is given more than once")));
        }
    }

    let body = request.body();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(from_query);
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "body is {} bytes; at most {MAX_BODY_BYTES} are allowed",
                body.len()
            ),
        ));
    }
    let content_type = header(request, "content-type").unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "a body must be JSON with Content-Type: application/json (got {content_type:?}); \
                 or send user_id and message in the query"
            ),
        ));
    }
    if from_query.user_id.is_some() || from_query.message.is_some() {
        return Err(ApiError::bad_request(
            "send user_id and message either in the query or in the JSON body, not both",
        ));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
}

/// A request header's value, when it is text.
pub fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request.header(name).and_then(|v| v.as_str())
}

/// Splits an `application/x-www-form-urlencoded` query into decoded pairs.
fn parse_query(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(name, true)?, percent_decode(value, true)?))
        })
        .collect()
}

/// Decodes `%XX` escapes (and `+` as a space in a query) with the percent-encoding crate
/// spin-sdk already compiles in; a `%` without two hex digits after it, and bytes that are
/// not UTF-8, are the caller's error (the crate would pass both through).
pub fn percent_decode(text: &str, plus_is_space: bool) -> Result<String, ApiError> {
    let bad_escape = text.split('%').skip(1).any(|rest| {
        !rest
            .as_bytes()
            .get(..2)
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if bad_escape {
        return Err(ApiError::bad_request(format!("bad percent-escape in {text:?}")));
    }
    let text = if plus_is_space {
        Cow::Owned(text.replace('+', " "))
    } else {
        Cow::Borrowed(text)
    };
    percent_decode_str(&text)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| ApiError::bad_request(format!("{text:?} does not decode to UTF-8")))
}
