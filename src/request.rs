//! Reading a request: its text headers, its query, and the message fields of a POST, from
//! the query or from a JSON body.

use http::StatusCode;
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
            format!("body is {} bytes; at most {MAX_BODY_BYTES} are allowed", body.len()),
        ));
    }
    let content_type = header(request, "content-type").unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("a body must be JSON with Content-Type: application/json (got {content_type:?}); or send user_id and message in the query"),
        ));
    }
    if from_query.user_id.is_some() || from_query.message.is_some() {
        return Err(ApiError::bad_request("send user_id and message either in the query or in the JSON body, not both"));
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

/// Decodes `%XX` escapes (and `+` as a space in a query); bad escapes and bytes that are
/// not UTF-8 are the caller's error.
pub fn percent_decode(text: &str, plus_is_space: bool) -> Result<String, ApiError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or_else(|| {
                    ApiError::bad_request(format!("bad percent-escape in {text:?}"))
                })?;
                out.push(byte);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request(format!("{text:?} does not decode to UTF-8")))
}
