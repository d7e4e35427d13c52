//! The message domain: what a valid message is, the bounded per-user history kept in the
//! state store, the event published for each message, and the append that loses no write.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::dapr::{DaprClient, SaveOutcome};
use crate::error::ApiError;
use crate::transport::Transport;

pub const MAX_USER_ID_BYTES: usize = 128;
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// How often an append re-reads and retries after losing a race for the same user.
pub const MAX_SAVE_ATTEMPTS: u32 = 20;

/// A message as stored in a user's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Per user, increasing from 1; never reused, even after old messages are dropped.
    pub id: u64,
    pub message: String,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// The state store value under a user's key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub next_id: u64,
    /// Oldest first, at most the configured limit.
    pub messages: Vec<StoredMessage>,
}

impl History {
    /// Appends a message and drops the oldest beyond `limit`.
    pub fn append(&mut self, text: String, created_at: String, limit: usize) -> StoredMessage {
        self.next_id += 1;
        let id = self.next_id;
        let stored = StoredMessage { id, message: text, created_at };
        self.messages.push(stored.clone());
        let excess = self.messages.len().saturating_sub(limit);
        self.messages.drain(..excess);
        stored
    }
}

/// The event published to the topic for each stored message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageEvent {
    pub user_id: String,
    pub message: String,
    pub id: u64,
    pub created_at: String,
}

/// A validated request to store a message.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub user_id: String,
    pub text: String,
}

impl NewMessage {
    pub fn parse(user_id: Option<String>, message: Option<String>) -> Result<NewMessage, ApiError> {
        let user_id = validate_user_id(user_id.as_deref())?.to_string();
        let text = match message {
            Some(text) if !text.trim().is_empty() => text,
            _ => return Err(ApiError::bad_request("message is required and must not be empty")),
        };
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("message is {} bytes; at most {MAX_MESSAGE_BYTES} are allowed", text.len()),
            ));
        }
        Ok(NewMessage { user_id, text })
    }
}

/// A user id is a state store key: non-empty, at most 128 bytes, no `||` (Dapr's key
/// separator), no `/` and no control characters, and not `.` or `..`: the key is a path
/// segment of the sidecar's URL, and Dapr's HTTP server removes those two as dot-segments
/// (`/v1.0/state/statestore/..` never reaches the state API), so they could not be stored.
pub fn validate_user_id(user_id: Option<&str>) -> Result<&str, ApiError> {
    let user_id = match user_id {
        Some(id) if !id.trim().is_empty() => id,
        _ => return Err(ApiError::bad_request("user_id is required and must not be empty")),
    };
    if user_id.len() > MAX_USER_ID_BYTES {
        return Err(ApiError::bad_request(format!(
            "user_id is {} bytes; at most {MAX_USER_ID_BYTES} are allowed",
            user_id.len()
        )));
    }
    if user_id.contains("||") {
        return Err(ApiError::bad_request("user_id must not contain '||' (Dapr reserves it in state keys)"));
    }
    if user_id.contains('/') || user_id.chars().any(char::is_control) {
        return Err(ApiError::bad_request("user_id must not contain '/' or control characters"));
    }
    if user_id == "." || user_id == ".." {
        return Err(ApiError::bad_request(
            "user_id must not be '.' or '..': Dapr's HTTP API takes the key as a URL path segment and removes those",
        ));
    }
    Ok(user_id)
}

/// The message store: a user's history lives under the key `user_id` in the state store.
pub struct Messages<'a, T> {
    pub dapr: &'a DaprClient<T>,
    pub config: &'a Config,
}

impl<T: Transport> Messages<'_, T> {
    /// The user's history, or `None` for a user with no messages.
    pub fn history(&self, user_id: &str) -> Result<Option<(History, Option<String>)>, ApiError> {
        let Some(entry) = self.dapr.get_state(&self.config.state_store, user_id)? else {
            return Ok(None);
        };
        let history = serde_json::from_value(entry.value).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("the state store holds a value for user {user_id:?} that is not a message history: {e}"),
            )
        })?;
        Ok(Some((history, entry.etag)))
    }

    /// Appends with optimistic concurrency: read the history and its ETag, append, write
    /// back only if the ETag still matches; on a conflict re-read and retry, with a short
    /// random back-off so racing writers spread out. Gives up with 503 after
    /// `MAX_SAVE_ATTEMPTS`, having written nothing of its own.
    pub fn append(&self, new: &NewMessage, created_at: &str) -> Result<StoredMessage, ApiError> {
        for attempt in 0..MAX_SAVE_ATTEMPTS {
            let (mut history, etag) = self.history(&new.user_id)?.unwrap_or_default();
            let stored = history.append(new.text.clone(), created_at.to_string(), self.config.history_limit);
            let outcome = match self.dapr.save_state_first_write(&self.config.state_store, &new.user_id, &history, etag.as_deref()) {
                // Creating the key raced another writer. Stores say so differently (Redis:
                // 500 ERR_STATE_SAVE, not 409), but a key that exists now means a conflict.
                Err(_) if etag.is_none() && self.history(&new.user_id)?.is_some() => SaveOutcome::Conflict,
                other => other?,
            };
            match outcome {
                SaveOutcome::Saved => return Ok(stored),
                SaveOutcome::Conflict => std::thread::sleep(backoff(attempt)),
            }
        }
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many concurrent writes for user {:?}: gave up after {MAX_SAVE_ATTEMPTS} attempts; nothing was stored, try again",
                new.user_id
            ),
        ))
    }

    /// Stores the message, then publishes its event.
    pub fn store_and_publish(&self, new: &NewMessage) -> Result<StoredMessage, ApiError> {
        let stored = self.append(new, &now_rfc3339())?;
        let event = MessageEvent {
            user_id: new.user_id.clone(),
            message: stored.message.clone(),
            id: stored.id,
            created_at: stored.created_at.clone(),
        };
        self.dapr.publish(&self.config.pubsub, &self.config.topic, &event).map_err(|e| ApiError {
            message: format!("message {} was stored, but its event was not published: {}", stored.id, e.message),
            ..e
        })?;
        Ok(stored)
    }
}

/// Up to 2^attempt ms (capped at 64 ms), chosen at random so that racing writers spread out.
fn backoff(attempt: u32) -> Duration {
    let ceiling_ms = 1u64 << attempt.min(6);
    // std's RandomState is seeded from the host's random source (wasi:random on wasm).
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    Duration::from_millis(1 + random % ceiling_ms)
}

/// Why a delivered event cannot be processed; the subscription answers DROP with it.
pub type EventError = String;

/// Reads the message event out of a CloudEvent that Dapr delivers. The payload is in
/// `data`, as JSON, or as a string of JSON when the publisher sent text.
pub fn parse_cloud_event(body: &[u8]) -> Result<MessageEvent, EventError> {
    let envelope: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let data = match envelope.get("data") {
        Some(serde_json::Value::String(text)) => {
            serde_json::from_str(text).map_err(|e| format!("data is a string that is not JSON: {e}"))?
        }
        Some(data) if data.is_object() => data.clone(),
        Some(_) => return Err("data is not a JSON object".to_string()),
        None if envelope.get("data_base64").is_some() => return Err("binary data (data_base64) is not a message event".to_string()),
        None => return Err("CloudEvent has no data".to_string()),
    };
    let event: MessageEvent =
        serde_json::from_value(data).map_err(|e| format!("data is not a message event: {e}"))?;
    validate_user_id(Some(&event.user_id)).map_err(|e| e.message)?;
    Ok(event)
}

pub fn now_rfc3339() -> String {
    rfc3339_utc(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default())
}

/// Formats time since the Unix epoch as RFC 3339 in UTC with milliseconds
/// (days-to-civil after Howard Hinnant's algorithm; no date crate needed).
pub fn rfc3339_utc(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let days = (secs / 86_400) as i64;
    let (hour, minute, second) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{:03}Z",
        since_epoch.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::scripted::Scripted;
    use serde_json::json;

    fn config() -> Config {
        Config::from_lookup(|_| None).unwrap()
    }

    #[test]
    fn valid_message_parses() {
        let new = NewMessage::parse(Some("ann".into()), Some("hi there".into())).unwrap();
        assert_eq!(new, NewMessage { user_id: "ann".into(), text: "hi there".into() });
    }

    #[test]
    fn each_bad_input_has_its_error() {
        let long_id = "u".repeat(MAX_USER_ID_BYTES + 1);
        let long_text = "m".repeat(MAX_MESSAGE_BYTES + 1);
        let cases: [(Option<&str>, Option<&str>, u16, &str); 12] = [
            (None, Some("hi"), 400, "user_id is required"),
            (Some("  "), Some("hi"), 400, "user_id is required"),
            (Some("ann"), None, 400, "message is required"),
            (Some("ann"), Some(""), 400, "message is required"),
            (Some(&long_id), Some("hi"), 400, "at most 128"),
            (Some("a||b"), Some("hi"), 400, "'||'"),
            (Some("a/b"), Some("hi"), 400, "'/'"),
            (Some("a\nb"), Some("hi"), 400, "control"),
            (Some("ann"), Some(&long_text), 413, "at most 4096"),
            (Some("a\u{7f}b"), Some("hi"), 400, "control"),
            (Some("."), Some("hi"), 400, "'.' or '..'"),
            (Some(".."), Some("hi"), 400, "'.' or '..'"),
        ];
        for (user_id, message, status, says) in cases {
            let err = NewMessage::parse(user_id.map(Into::into), message.map(Into::into)).unwrap_err();
            assert_eq!(err.status.as_u16(), status, "{user_id:?} {message:?}");
            assert!(err.message.contains(says), "{err} should say {says}");
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let id = "u".repeat(MAX_USER_ID_BYTES);
        assert!(NewMessage::parse(Some(id), Some("m".repeat(MAX_MESSAGE_BYTES))).is_ok());
    }

    #[test]
    fn history_appends_oldest_first_and_keeps_the_newest() {
        let mut history = History::default();
        for n in 1..=5 {
            let stored = history.append(format!("m{n}"), "t".into(), 3);
            assert_eq!(stored.id, n);
        }
        let texts: Vec<_> = history.messages.iter().map(|m| m.message.as_str()).collect();
        assert_eq!(texts, ["m3", "m4", "m5"]);
        assert_eq!(history.next_id, 5);
    }

    #[test]
    fn ids_never_repeat_after_the_limit_drops_messages() {
        let mut history = History::default();
        history.append("a".into(), "t".into(), 1);
        assert_eq!(history.append("b".into(), "t".into(), 1).id, 2);
    }

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339_utc(Duration::ZERO), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(Duration::from_millis(951_782_400_123)), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_utc(Duration::from_secs(1_795_737_599)), "2026-11-26T23:59:59.000Z");
    }

    #[test]
    fn cloud_event_with_json_data_parses() {
        let body = json!({"specversion": "1.0", "type": "com.dapr.event.sent", "datacontenttype": "application/json",
                          "data": {"user_id": "ann", "message": "hi", "id": 3, "created_at": "t"}});
        let event = parse_cloud_event(body.to_string().as_bytes()).unwrap();
        assert_eq!(event, MessageEvent { user_id: "ann".into(), message: "hi".into(), id: 3, created_at: "t".into() });
    }

    #[test]
    fn cloud_event_type_does_not_matter() {
        // The original routed on type == "update", which Dapr's events never have.
        let body = json!({"type": "anything", "data": {"user_id": "ann", "message": "hi", "id": 1, "created_at": "t"}});
        assert!(parse_cloud_event(body.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn cloud_event_with_string_data_parses() {
        let data = json!({"user_id": "ann", "message": "hi", "id": 1, "created_at": "t"}).to_string();
        assert!(parse_cloud_event(json!({ "data": data }).to_string().as_bytes()).is_ok());
    }

    #[test]
    fn unusable_events_say_why() {
        for (body, says) in [
            ("nope", "not JSON"),
            (r#"{"type":"x"}"#, "no data"),
            (r#"{"data_base64":"AAAA"}"#, "binary"),
            (r#"{"data":42}"#, "not a JSON object"),
            (r#"{"data":"{oops"}"#, "string that is not JSON"),
            (r#"{"data":{"user_id":"ann"}}"#, "not a message event"),
            (r#"{"data":{"user_id":"","message":"m","id":1,"created_at":"t"}}"#, "user_id is required"),
        ] {
            let why = parse_cloud_event(body.as_bytes()).unwrap_err();
            assert!(why.contains(says), "{body}: {why}");
        }
    }

    fn history_json(texts: &[&str]) -> String {
        let mut history = History::default();
        for text in texts {
            history.append(text.to_string(), "t".into(), 100);
        }
        serde_json::to_string(&history).unwrap()
    }

    #[test]
    fn append_reads_then_writes_with_the_etag() {
        let dapr = Scripted::new().answer(200, &[("etag", "4")], &history_json(&["one"])).answer(204, &[], "");
        let client = DaprClient::new(dapr.clone(), &config());
        let new = NewMessage { user_id: "ann".into(), text: "two".into() };
        let stored = Messages { dapr: &client, config: &config() }.append(&new, "t").unwrap();
        assert_eq!(stored.id, 2);
        let written = dapr.json_sent(1);
        assert_eq!(written[0]["etag"], "4");
        assert_eq!(written[0]["value"]["messages"][1]["message"], "two");
    }

    #[test]
    fn append_retries_after_a_conflict_on_fresh_data() {
        let dapr = Scripted::new()
            .answer(204, &[], "")
            .answer(409, &[], "")
            .answer(200, &[("etag", "1")], &history_json(&["theirs"]))
            .answer(204, &[], "");
        let client = DaprClient::new(dapr.clone(), &config());
        let new = NewMessage { user_id: "ann".into(), text: "mine".into() };
        let stored = Messages { dapr: &client, config: &config() }.append(&new, "t").unwrap();
        assert_eq!(stored.id, 2);
        let texts: Vec<_> = dapr.json_sent(3)[0]["value"]["messages"].as_array().unwrap().iter().map(|m| m["message"].clone()).collect();
        assert_eq!(texts, [json!("theirs"), json!("mine")]);
    }

    #[test]
    fn a_failed_first_write_of_a_key_that_now_exists_is_a_conflict() {
        let dapr = Scripted::new()
            .answer(204, &[], "")
            .answer(500, &[], r#"{"errorCode":"ERR_STATE_SAVE","message":"failed to set key"}"#)
            .answer(200, &[("etag", "1")], &history_json(&["theirs"]))
            .answer(200, &[("etag", "1")], &history_json(&["theirs"]))
            .answer(204, &[], "");
        let client = DaprClient::new(dapr.clone(), &config());
        let new = NewMessage { user_id: "ann".into(), text: "mine".into() };
        assert_eq!(Messages { dapr: &client, config: &config() }.append(&new, "t").unwrap().id, 2);
    }

    #[test]
    fn a_failed_first_write_of_a_still_missing_key_is_an_error() {
        let dapr = Scripted::new()
            .answer(204, &[], "")
            .answer(500, &[], r#"{"errorCode":"ERR_STATE_SAVE","message":"disk full"}"#)
            .answer(204, &[], "");
        let client = DaprClient::new(dapr.clone(), &config());
        let new = NewMessage { user_id: "ann".into(), text: "mine".into() };
        let err = Messages { dapr: &client, config: &config() }.append(&new, "t").unwrap_err();
        assert_eq!((err.status, err.dapr_error_code.as_deref()), (StatusCode::BAD_GATEWAY, Some("ERR_STATE_SAVE")));
    }

    #[test]
    fn append_gives_up_with_503_after_bounded_conflicts() {
        let dapr = Scripted::new();
        for _ in 0..MAX_SAVE_ATTEMPTS {
            dapr.answer(204, &[], "").answer(409, &[], "");
        }
        let client = DaprClient::new(dapr.clone(), &config());
        let new = NewMessage { user_id: "ann".into(), text: "m".into() };
        let err = Messages { dapr: &client, config: &config() }.append(&new, "t").unwrap_err();
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(dapr.sent.borrow().len(), 2 * MAX_SAVE_ATTEMPTS as usize);
    }

    #[test]
    fn stored_value_that_is_not_a_history_is_502() {
        let dapr = Scripted::new().answer(200, &[], r#"{"message":"legacy"}"#);
        let client = DaprClient::new(dapr, &config());
        let err = Messages { dapr: &client, config: &config() }.history("ann").unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn a_failed_publish_says_the_message_was_stored() {
        let dapr = Scripted::new().answer(204, &[], "").answer(204, &[], "").answer(500, &[], r#"{"errorCode":"ERR_PUBSUB_PUBLISH_MESSAGE"}"#);
        let client = DaprClient::new(dapr, &config());
        let new = NewMessage { user_id: "ann".into(), text: "m".into() };
        let err = Messages { dapr: &client, config: &config() }.store_and_publish(&new).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_GATEWAY);
        assert!(err.message.contains("message 1 was stored"), "{err}");
        assert_eq!(err.dapr_error_code.as_deref(), Some("ERR_PUBSUB_PUBLISH_MESSAGE"));
    }
}
