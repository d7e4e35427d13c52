//! The message domain: what a valid message is, and the bounded per-user history kept in the
//! state store. Storing a message and delivering its event build on this (src/delivery/).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::dapr::DaprClient;
use crate::error::ApiError;
use crate::transport::Transport;

pub const MAX_USER_ID_BYTES: usize = 128;
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// For how many of the newest messages a history keeps the write that stored each, whatever
/// its limit: about 45 bytes each.
pub const MIN_WRITE_IDS: usize = 100;

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
    /// The write that stored each of the newest messages, by message id: a random id per
    /// attempt, which the message's event carries too, so that the subscriber can tell the
    /// event of a write that landed from one whose write never did (src/delivery/). Kept for
    /// at least `MIN_WRITE_IDS` messages, past a smaller limit, since an event may come after
    /// its message has left the history. Not part of the API.
    #[serde(default)]
    pub write_ids: BTreeMap<u64, String>,
}

impl History {
    /// Appends a message stored by write `write_id` and drops the oldest beyond `limit`.
    pub fn append(
        &mut self,
        text: String,
        created_at: String,
        limit: usize,
        write_id: String,
    ) -> StoredMessage {
        self.next_id += 1;
        let id = self.next_id;
        let stored = StoredMessage {
            id,
            message: text,
            created_at,
        };
        self.messages.push(stored.clone());
        self.write_ids.insert(id, write_id);
        let excess = self.messages.len().saturating_sub(limit);
        self.messages.drain(..excess);
        let oldest_write = id.saturating_sub(limit.max(MIN_WRITE_IDS) as u64);
        self.write_ids.retain(|&kept, _| kept > oldest_write);
        stored
    }

    /// Whether write `write_id` stored message `id` with `text`, as far as this history can
    /// tell: for a message the limit dropped, by its write id while the history keeps it
    /// (`MIN_WRITE_IDS`); past that the message is `Forgotten`, whoever stored it.
    pub fn stored_by(&self, id: u64, text: &str, write_id: &str) -> Stored {
        if id > self.next_id {
            return Stored::No;
        }
        let Some(stored_by) = self.write_ids.get(&id) else {
            let first_kept = self.messages.first().map_or(self.next_id + 1, |m| m.id);
            return if id < first_kept {
                Stored::Forgotten
            } else {
                Stored::No
            };
        };
        let text_kept = self.messages.iter().all(|m| m.id != id || m.message == text);
        if stored_by == write_id && text_kept {
            Stored::Yes
        } else {
            Stored::No
        }
    }
}

/// What a history says about one write (`History::stored_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Yes,
    No,
    /// The message with that id was stored and then dropped by the limit, long enough ago
    /// that the history no longer knows by which write.
    Forgotten,
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
                format!(
                    "message is {} bytes; at most {MAX_MESSAGE_BYTES} are allowed",
                    text.len()
                ),
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
        return Err(ApiError::bad_request(
            "user_id must not contain '||' (Dapr reserves it in state keys)",
        ));
    }
    if user_id.contains('/') || user_id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "user_id must not contain '/' or control characters",
        ));
    }
    if user_id == "." || user_id == ".." {
        return Err(ApiError::bad_request(
            "user_id must not be '.' or '..': Dapr's HTTP API takes the key as a URL path segment \
             and removes those",
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
    /// The user's history with its ETag, or `None` when the key does not exist.
    pub fn history(&self, user_id: &str) -> Result<Option<(History, Option<String>)>, ApiError> {
        let Some(entry) = self.dapr.get_state(&self.config.state_store, user_id)? else {
            return Ok(None);
        };
        let history = serde_json::from_value(entry.value).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!(
                    "the state store holds a value for user {user_id:?} that is not a message history: {e}"
                ),
            )
        })?;
        Ok(Some((history, entry.etag)))
    }
}

pub fn now_rfc3339() -> String {
    rfc3339_utc(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default())
}

/// Formats time since the Unix epoch as RFC 3339 in UTC with milliseconds
/// (days-to-civil after Howard Hinnant's algorithm). chrono, which spin-sdk compiles in,
/// would do it in two lines but adds 7.4 KB to the .wasm (measured, issue 19).
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
    use serde_json::json;

    #[test]
    fn valid_message_parses() {
        let new = NewMessage::parse(Some("ann".into()), Some("hi there".into())).unwrap();
        assert_eq!(
            new,
            NewMessage {
                user_id: "ann".into(),
                text: "hi there".into()
            }
        );
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
            let stored = history.append(format!("m{n}"), "t".into(), 3, format!("w{n}"));
            assert_eq!(stored.id, n);
        }
        let texts: Vec<_> = history.messages.iter().map(|m| m.message.as_str()).collect();
        assert_eq!(texts, ["m3", "m4", "m5"]);
        assert_eq!(history.next_id, 5);
        assert_eq!(
            history.write_ids.keys().copied().collect::<Vec<_>>(),
            [1, 2, 3, 4, 5],
            "the writes of the newest MIN_WRITE_IDS messages are kept beyond the limit"
        );
    }

    #[test]
    fn write_ids_are_kept_for_the_newest_min_write_ids_messages_or_the_limit() {
        for limit in [1, MIN_WRITE_IDS + 20] {
            let mut history = History::default();
            for n in 1..=MIN_WRITE_IDS as u64 + 50 {
                history.append(format!("m{n}"), "t".into(), limit, format!("w{n}"));
            }
            assert_eq!(history.write_ids.len(), limit.max(MIN_WRITE_IDS), "limit {limit}");
            assert_eq!(
                history.write_ids.keys().last(),
                Some(&(MIN_WRITE_IDS as u64 + 50))
            );
        }
    }

    #[test]
    fn ids_never_repeat_after_the_limit_drops_messages() {
        let mut history = History::default();
        history.append("a".into(), "t".into(), 1, "w1".into());
        assert_eq!(history.append("b".into(), "t".into(), 1, "w2".into()).id, 2);
    }

    #[test]
    fn a_history_knows_a_kept_message_only_with_its_text_and_write() {
        let mut history = History::default();
        history.append("a".into(), "t".into(), 100, "w1".into());
        assert_eq!(history.stored_by(1, "a", "w1"), Stored::Yes);
        assert_eq!(history.stored_by(1, "a", "w2"), Stored::No);
        assert_eq!(history.stored_by(1, "b", "w1"), Stored::No);
        assert_eq!(history.stored_by(2, "a", "w1"), Stored::No);
    }

    #[test]
    fn a_message_the_limit_dropped_is_judged_by_its_write_then_forgotten() {
        let mut history = History::default();
        for n in 1..=3 {
            history.append(format!("m{n}"), "t".into(), 1, format!("w{n}"));
        }
        assert_eq!(history.stored_by(1, "m1", "w1"), Stored::Yes);
        assert_eq!(history.stored_by(2, "m2", "w-other"), Stored::No);
        assert_eq!(history.stored_by(3, "m3", "w3"), Stored::Yes);
        assert_eq!(history.stored_by(4, "m4", "w4"), Stored::No);
        assert_eq!(History::default().stored_by(1, "m", "w"), Stored::No);
        history.write_ids.clear();
        assert_eq!(history.stored_by(1, "m1", "w1"), Stored::Forgotten);
        assert_eq!(
            history.stored_by(3, "m3", "w3"),
            Stored::No,
            "kept, but not by that write"
        );
    }

    #[test]
    fn a_history_stored_before_write_ids_still_reads() {
        let history: History = serde_json::from_value(
            json!({"next_id": 1, "messages": [{"id": 1, "message": "a", "created_at": "t"}]}),
        )
        .unwrap();
        assert!(history.write_ids.is_empty());
    }

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339_utc(Duration::ZERO), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_utc(Duration::from_millis(951_782_400_123)),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            rfc3339_utc(Duration::from_secs(1_795_737_599)),
            "2026-11-26T23:59:59.000Z"
        );
    }
}
