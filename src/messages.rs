//! The message domain: what a valid message is, the bounded per-user history kept in the
//! state store, and the append that loses no write and publishes its event with it.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::dapr::{DaprClient, SaveOutcome};
use crate::error::ApiError;
use crate::transport::Transport;
use crate::events::MessageEvent;

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
    /// The write that stored each kept message, by message id: a random id per attempt,
    /// which the message's event carries too, so that the subscriber can tell the event of a
    /// write that landed from one whose transaction failed (events.rs). Not part of the API.
    #[serde(default)]
    pub write_ids: BTreeMap<u64, String>,
}

impl History {
    /// Appends a message stored by write `write_id` and drops the oldest beyond `limit`.
    pub fn append(&mut self, text: String, created_at: String, limit: usize, write_id: String) -> StoredMessage {
        self.next_id += 1;
        let id = self.next_id;
        let stored = StoredMessage { id, message: text, created_at };
        self.messages.push(stored.clone());
        self.write_ids.insert(id, write_id);
        let excess = self.messages.len().saturating_sub(limit);
        for dropped in self.messages.drain(..excess) {
            self.write_ids.remove(&dropped.id);
        }
        stored
    }

    /// Whether message `id` is kept, with this text, as stored by write `write_id`.
    pub fn holds(&self, id: u64, text: &str, write_id: &str) -> bool {
        let kept = self.messages.iter().any(|m| m.id == id && m.message == text);
        kept && self.write_ids.get(&id).is_some_and(|w| w == write_id)
    }
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
    /// The user's history with its ETag, or `None` when the key does not exist.
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

    /// Stores the message and publishes its event, both or neither: one state transaction
    /// through Dapr's outbox (`save_state_with_event`). Optimistic concurrency as before: read
    /// the history with its ETag, append, write only if the ETag still matches; on a conflict
    /// re-read and retry after a short random back-off, at most `MAX_SAVE_ATTEMPTS` times.
    ///
    /// Two sharp edges of the outbox on state.redis (README, "Stored means published"):
    /// - a transaction without an ETag overwrites an existing key, so a new user's history is
    ///   first created empty outside any transaction, where first-write refuses an existing key;
    /// - a stale ETag fails the transaction with 500 ERR_STATE_TRANSACTION (not 409), stores
    ///   nothing, and still publishes the event: a phantom, which the subscriber recognises
    ///   by its write id (events.rs). A changed ETag after that error is how a conflict shows.
    pub fn store_and_publish(&self, new: &NewMessage) -> Result<StoredMessage, ApiError> {
        let created_at = now_rfc3339();
        for attempt in 0..MAX_SAVE_ATTEMPTS {
            let Some((mut history, etag)) = self.history(&new.user_id)? else {
                self.create_history(&new.user_id)?;
                continue;
            };
            let etag = etag.ok_or_else(|| {
                ApiError::new(StatusCode::BAD_GATEWAY, format!("the state store returned no ETag for user {:?}", new.user_id))
            })?;
            let write_id = random_write_id();
            let stored = history.append(new.text.clone(), created_at.clone(), self.config.history_limit, write_id.clone());
            let event = MessageEvent::of(&new.user_id, &stored, write_id);
            let outcome = match self.dapr.save_state_with_event(&self.config.state_store, &new.user_id, &history, &etag, &event) {
                Err(e) if e.dapr_error_code.as_deref() == Some("ERR_STATE_TRANSACTION") && self.etag(&new.user_id)? != Some(etag) => {
                    SaveOutcome::Conflict
                }
                other => other.map_err(|e| {
                    // Without an answer in time the transaction may still have run.
                    let stored = if e.status == StatusCode::GATEWAY_TIMEOUT {
                        "the message may have been stored: read the history before you retry"
                    } else {
                        "nothing was stored"
                    };
                    ApiError { message: format!("{}; {stored}", e.message), ..e }
                })?,
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

    /// Creates an empty history, unless one exists (then another writer just created it).
    fn create_history(&self, user_id: &str) -> Result<(), ApiError> {
        self.dapr.create_state(&self.config.state_store, user_id, &History::default(), None).map(|_| ())
    }

    fn etag(&self, user_id: &str) -> Result<Option<String>, ApiError> {
        Ok(self.history(user_id)?.and_then(|(_, etag)| etag))
    }
}

/// A random 128-bit id, as 32 hex digits.
fn random_write_id() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}

/// std's RandomState is seeded from the host's random source (wasi:random on wasm), and
/// each new one differs from the last.
fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

/// Up to 2^attempt ms (capped at 64 ms), chosen at random so that racing writers spread out.
fn backoff(attempt: u32) -> Duration {
    let ceiling_ms = 1u64 << attempt.min(6);
    Duration::from_millis(1 + random_u64() % ceiling_ms)
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
    use crate::transport::SendFailure;
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
            let stored = history.append(format!("m{n}"), "t".into(), 3, format!("w{n}"));
            assert_eq!(stored.id, n);
        }
        let texts: Vec<_> = history.messages.iter().map(|m| m.message.as_str()).collect();
        assert_eq!(texts, ["m3", "m4", "m5"]);
        assert_eq!(history.next_id, 5);
        assert_eq!(history.write_ids.keys().copied().collect::<Vec<_>>(), [3, 4, 5], "write ids are dropped with their messages");
    }

    #[test]
    fn ids_never_repeat_after_the_limit_drops_messages() {
        let mut history = History::default();
        history.append("a".into(), "t".into(), 1, "w1".into());
        assert_eq!(history.append("b".into(), "t".into(), 1, "w2".into()).id, 2);
    }

    #[test]
    fn a_history_holds_a_message_only_with_its_text_and_write() {
        let mut history = History::default();
        history.append("a".into(), "t".into(), 100, "w1".into());
        assert!(history.holds(1, "a", "w1"));
        assert!(!history.holds(1, "a", "w2"));
        assert!(!history.holds(1, "b", "w1"));
        assert!(!history.holds(2, "a", "w1"));
    }

    #[test]
    fn a_history_stored_before_write_ids_still_reads() {
        let history: History = serde_json::from_value(json!({"next_id": 1, "messages": [{"id": 1, "message": "a", "created_at": "t"}]})).unwrap();
        assert!(history.write_ids.is_empty());
    }

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339_utc(Duration::ZERO), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(Duration::from_millis(951_782_400_123)), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_utc(Duration::from_secs(1_795_737_599)), "2026-11-26T23:59:59.000Z");
    }

    fn history_json(texts: &[&str]) -> String {
        let mut history = History::default();
        for (n, text) in texts.iter().enumerate() {
            history.append(text.to_string(), "t".into(), 100, format!("w{n}"));
        }
        serde_json::to_string(&history).unwrap()
    }

    fn store(dapr: &std::rc::Rc<Scripted>, text: &str) -> Result<StoredMessage, ApiError> {
        let client = DaprClient::new(dapr.clone(), &config());
        let new = NewMessage { user_id: "ann".into(), text: text.into() };
        Messages { dapr: &client, config: &config() }.store_and_publish(&new)
    }

    const STALE_ETAG: &str = r#"{"errorCode":"ERR_STATE_TRANSACTION","message":"ERR user_script:14: failed to set key"}"#;

    #[test]
    fn the_message_and_its_event_go_in_one_transaction_with_the_etag() {
        let dapr = Scripted::new().answer(200, &[("etag", "4")], &history_json(&["one"])).answer(204, &[], "");
        let stored = store(&dapr, "two").unwrap();
        assert_eq!(stored.id, 2);
        assert_eq!(dapr.calls()[1], "POST http://localhost:3500/v1.0/state/statestore/transaction");
        let operations = &dapr.json_sent(1)["operations"];
        let (written, event) = (&operations[0]["request"], &operations[1]["request"]["value"]);
        assert_eq!(written["etag"], "4");
        assert_eq!(written["value"]["messages"][1]["message"], "two");
        let write_id = written["value"]["write_ids"]["2"].as_str().unwrap();
        assert_eq!(write_id.len(), 32);
        assert_eq!(
            event,
            &json!({"user_id": "ann", "message": "two", "id": 2, "created_at": stored.created_at, "write_id": write_id})
        );
    }

    #[test]
    fn each_attempt_has_its_own_write_id() {
        let dapr = Scripted::new()
            .answer(200, &[("etag", "1")], &history_json(&["one"]))
            .answer(500, &[], STALE_ETAG)
            .answer(200, &[("etag", "2")], &history_json(&["one", "theirs"]))
            .answer(200, &[("etag", "2")], &history_json(&["one", "theirs"]))
            .answer(204, &[], "");
        assert_eq!(store(&dapr, "mine").unwrap().id, 3);
        let lost = &dapr.json_sent(1)["operations"][1]["request"]["value"];
        let won = &dapr.json_sent(4)["operations"][1]["request"]["value"];
        assert_eq!((lost["id"].clone(), won["id"].clone()), (json!(2), json!(3)));
        assert_ne!(lost["write_id"], won["write_id"]);
        assert_eq!(dapr.json_sent(4)["operations"][0]["request"]["etag"], "2");
    }

    #[test]
    fn a_new_user_gets_an_empty_history_first_outside_the_transaction() {
        let dapr = Scripted::new()
            .answer(204, &[], "")
            .answer(204, &[], "")
            .answer(200, &[("etag", "1")], &history_json(&[]))
            .answer(204, &[], "");
        assert_eq!(store(&dapr, "first").unwrap().id, 1);
        assert_eq!(dapr.calls()[1], "POST http://localhost:3500/v1.0/state/statestore");
        let created = &dapr.json_sent(1)[0];
        assert_eq!(created["value"], json!({"next_id": 0, "messages": [], "write_ids": {}}));
        assert!(created.get("etag").is_none());
        assert_eq!(dapr.json_sent(3)["operations"][0]["request"]["etag"], "1");
    }

    #[test]
    fn a_history_created_meanwhile_by_another_writer_is_used() {
        let dapr = Scripted::new()
            .answer(204, &[], "")
            .answer(500, &[], r#"{"errorCode":"ERR_STATE_SAVE","message":"failed to set key"}"#)
            .answer(200, &[("etag", "2")], &history_json(&["theirs"]))
            .answer(200, &[("etag", "2")], &history_json(&["theirs"]))
            .answer(204, &[], "");
        assert_eq!(store(&dapr, "mine").unwrap().id, 2);
    }

    #[test]
    fn a_failed_create_of_a_still_missing_history_is_an_error() {
        let dapr = Scripted::new()
            .answer(204, &[], "")
            .answer(500, &[], r#"{"errorCode":"ERR_STATE_SAVE","message":"disk full"}"#)
            .answer(204, &[], "");
        let err = store(&dapr, "mine").unwrap_err();
        assert_eq!((err.status, err.dapr_error_code.as_deref()), (StatusCode::BAD_GATEWAY, Some("ERR_STATE_SAVE")));
    }

    #[test]
    fn a_failed_transaction_with_an_unchanged_etag_is_an_error_that_stored_nothing() {
        let dapr = Scripted::new()
            .answer(200, &[("etag", "1")], &history_json(&["one"]))
            .answer(500, &[], STALE_ETAG)
            .answer(200, &[("etag", "1")], &history_json(&["one"]));
        let err = store(&dapr, "m").unwrap_err();
        assert_eq!((err.status, err.dapr_error_code.as_deref()), (StatusCode::BAD_GATEWAY, Some("ERR_STATE_TRANSACTION")));
        assert!(err.message.ends_with("nothing was stored"), "{err}");
    }

    #[test]
    fn pub_sub_down_stores_nothing_and_says_so() {
        let dapr = Scripted::new()
            .answer(200, &[("etag", "1")], &history_json(&["one"]))
            .answer(500, &[], r#"{"errorCode":"ERR_PUBLISH_OUTBOX","message":"connection refused"}"#);
        let err = store(&dapr, "m").unwrap_err();
        assert_eq!(err.dapr_error_code.as_deref(), Some("ERR_PUBLISH_OUTBOX"));
        assert!(err.message.contains("connection refused; nothing was stored"), "{err}");
    }

    #[test]
    fn a_transaction_without_an_answer_in_time_may_have_stored() {
        let dapr = Scripted::new()
            .answer(200, &[("etag", "1")], &history_json(&["one"]))
            .fail(SendFailure::TimedOut("ErrorCode::ConnectionReadTimeout".into()));
        let err = store(&dapr, "m").unwrap_err();
        assert_eq!(err.status, StatusCode::GATEWAY_TIMEOUT);
        assert!(err.message.ends_with("the message may have been stored: read the history before you retry"), "{err}");
    }

    #[test]
    fn a_409_is_a_conflict_too() {
        let dapr = Scripted::new()
            .answer(200, &[("etag", "1")], &history_json(&["one"]))
            .answer(409, &[], "")
            .answer(200, &[("etag", "2")], &history_json(&["one", "two"]))
            .answer(204, &[], "");
        assert_eq!(store(&dapr, "three").unwrap().id, 3);
    }

    #[test]
    fn store_gives_up_with_503_after_bounded_conflicts() {
        let dapr = Scripted::new();
        for _ in 0..MAX_SAVE_ATTEMPTS {
            dapr.answer(200, &[("etag", "1")], &history_json(&["one"])).answer(409, &[], "");
        }
        let err = store(&dapr, "m").unwrap_err();
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
}
