//! The events: what is published for each stored message, and how the subscriber decides
//! whether to act on what Dapr delivers. Dapr delivers at least once, and on state.redis its
//! outbox also publishes the event of a transaction that failed (a phantom; messages.rs). So
//! before acting, the subscriber checks the event against the state (did its write land?)
//! and claims it (was it handled before, by this replica or another?).

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::dapr::SaveOutcome;
use crate::error::ApiError;
use crate::messages::{validate_user_id, Messages, StoredMessage};
use crate::transport::Transport;

/// How long the claim of a handled event is kept: far longer than any redelivery, which
/// comes within seconds (the resiliency policy) or minutes (pubsub.redis `processingTimeout`).
pub const CLAIM_TTL_SECONDS: u32 = 24 * 3600;

/// The event published to the topic for each stored message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageEvent {
    pub user_id: String,
    pub message: String,
    pub id: u64,
    pub created_at: String,
    /// The write that stored the message (messages.rs `History::write_ids`).
    pub write_id: String,
}

impl MessageEvent {
    pub fn of(user_id: &str, stored: &StoredMessage, write_id: String) -> MessageEvent {
        MessageEvent {
            user_id: user_id.to_string(),
            message: stored.message.clone(),
            id: stored.id,
            created_at: stored.created_at.clone(),
            write_id,
        }
    }
}

/// What the subscriber does with a delivered event.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Stored, and claimed by this delivery: act on it.
    Act,
    /// Its write is not in the user's history: the event of a failed transaction, or of a
    /// message already dropped from the history by the limit. Says which message.
    Phantom(String),
    /// Claimed before: a redelivery that was handled already, here or by another replica.
    Duplicate,
}

impl<T: Transport> Messages<'_, T> {
    /// Checks the event against the user's history, then claims it with a first-write create
    /// of a key of its own, which only one delivery can win.
    pub fn verdict(&self, event: &MessageEvent) -> Result<Verdict, ApiError> {
        let history = self.history(&event.user_id)?.map(|(history, _)| history).unwrap_or_default();
        if !history.holds(event.id, &event.message, &event.write_id) {
            return Ok(Verdict::Phantom(format!(
                "user {:?} has no message {} stored by write {}",
                event.user_id, event.id, event.write_id
            )));
        }
        let store = &self.config.state_store;
        let claim = claim_key(&event.write_id);
        let value = json!({ "user_id": event.user_id, "id": event.id });
        Ok(match self.dapr.create_state(store, &claim, &value, Some(CLAIM_TTL_SECONDS))? {
            SaveOutcome::Saved => Verdict::Act,
            SaveOutcome::Conflict => Verdict::Duplicate,
        })
    }
}

/// The key that claims an event. User ids cannot contain '/', so no history has this key.
fn claim_key(write_id: &str) -> String {
    format!("handled/{write_id}")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::transport::scripted::Scripted;
    use crate::dapr::DaprClient;
    use crate::messages::History;

    fn config() -> Config {
        Config::from_lookup(|_| None).unwrap()
    }

    fn event(id: u64, message: &str, write_id: &str) -> MessageEvent {
        MessageEvent { user_id: "ann".into(), message: message.into(), id, created_at: "t".into(), write_id: write_id.into() }
    }

    fn data(id: u64) -> serde_json::Value {
        json!({"user_id": "ann", "message": "hi", "id": id, "created_at": "t", "write_id": "w1"})
    }

    #[test]
    fn cloud_event_with_json_data_parses() {
        let body = json!({"specversion": "1.0", "type": "com.dapr.event.sent", "datacontenttype": "application/json", "data": data(3)});
        assert_eq!(parse_cloud_event(body.to_string().as_bytes()).unwrap(), event(3, "hi", "w1"));
    }

    #[test]
    fn cloud_event_type_does_not_matter() {
        // The original routed on type == "update", which Dapr's events never have.
        let body = json!({"type": "anything", "data": data(1)});
        assert!(parse_cloud_event(body.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn cloud_event_with_string_data_parses() {
        assert!(parse_cloud_event(json!({ "data": data(1).to_string() }).to_string().as_bytes()).is_ok());
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
            (r#"{"data":{"user_id":"ann","message":"m","id":1,"created_at":"t"}}"#, "missing field `write_id`"),
            (r#"{"data":{"user_id":"","message":"m","id":1,"created_at":"t","write_id":"w"}}"#, "user_id is required"),
        ] {
            let why = parse_cloud_event(body.as_bytes()).unwrap_err();
            assert!(why.contains(says), "{body}: {why}");
        }
    }

    /// Ann's history: "one" by write w1, "two" by write w2.
    fn ann_history() -> String {
        let mut history = History::default();
        history.append("one".into(), "t".into(), 100, "w1".into());
        history.append("two".into(), "t".into(), 100, "w2".into());
        serde_json::to_string(&history).unwrap()
    }

    fn verdict(dapr: &std::rc::Rc<Scripted>, event: &MessageEvent) -> Result<Verdict, ApiError> {
        let client = DaprClient::new(dapr.clone(), &config());
        Messages { dapr: &client, config: &config() }.verdict(event)
    }

    #[test]
    fn a_stored_event_is_claimed_then_acted_on() {
        let dapr = Scripted::new().answer(200, &[("etag", "3")], &ann_history()).answer(204, &[], "");
        assert_eq!(verdict(&dapr, &event(2, "two", "w2")).unwrap(), Verdict::Act);
        assert_eq!(dapr.calls()[1], "POST http://localhost:3500/v1.0/state/statestore");
        let claim = &dapr.json_sent(1)[0];
        assert_eq!((claim["key"].clone(), claim["value"].clone()), (json!("handled/w2"), json!({"user_id": "ann", "id": 2})));
        assert!(claim.get("etag").is_none(), "a claim is a create: first-write without an ETag");
        assert_eq!(claim["metadata"]["ttlInSeconds"], CLAIM_TTL_SECONDS.to_string());
    }

    #[test]
    fn an_event_whose_write_is_not_stored_is_a_phantom_and_claims_nothing() {
        for phantom in [event(2, "two", "w-lost-race"), event(2, "other text", "w2"), event(7, "seven", "w7")] {
            let dapr = Scripted::new().answer(200, &[("etag", "3")], &ann_history());
            let got = verdict(&dapr, &phantom).unwrap();
            assert!(matches!(&got, Verdict::Phantom(why) if why.contains(&format!("no message {}", phantom.id))), "{got:?}");
            assert_eq!(dapr.calls().len(), 1, "only the history was read");
        }
        let no_history = Scripted::new().answer(204, &[], "");
        assert!(matches!(verdict(&no_history, &event(1, "one", "w1")).unwrap(), Verdict::Phantom(_)));
    }

    #[test]
    fn a_claim_that_exists_is_a_duplicate() {
        let dapr = Scripted::new()
            .answer(200, &[("etag", "3")], &ann_history())
            .answer(500, &[], r#"{"errorCode":"ERR_STATE_SAVE","message":"failed to set key"}"#)
            .answer(200, &[("etag", "1")], r#"{"user_id":"ann","id":1}"#);
        assert_eq!(verdict(&dapr, &event(1, "one", "w1")).unwrap(), Verdict::Duplicate);
        assert_eq!(dapr.calls()[2], "GET http://localhost:3500/v1.0/state/statestore/handled%2Fw1?consistency=strong");
    }

    #[test]
    fn a_failed_claim_that_does_not_exist_is_an_error_so_dapr_retries() {
        let dapr = Scripted::new()
            .answer(200, &[("etag", "3")], &ann_history())
            .answer(500, &[], r#"{"errorCode":"ERR_STATE_SAVE","message":"connection refused"}"#)
            .answer(204, &[], "");
        let err = verdict(&dapr, &event(1, "one", "w1")).unwrap_err();
        assert_eq!(err.dapr_error_code.as_deref(), Some("ERR_STATE_SAVE"));
    }
}
