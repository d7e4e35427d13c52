//! The subscriber's side: reading what Dapr delivers, and deciding whether to act on it.
//! Dapr delivers at least once, and a POST publishes its event before its write, so an event
//! may come before its write lands, or for a write that never lands (a phantom). So before
//! acting, the subscriber checks the event against the history (did its write land, or may
//! it still?) and claims it (was it handled before, by this replica or another?).
//!
//! The action (the `Received event` line) and the record that it was done cannot be one
//! atomic step. So a claim records which delivery holds it and since when, and is marked
//! done only after the action: a delivery that finds a done claim ignores the event; one
//! that finds a claim held past `CLAIM_LEASE_MS` by a delivery that never completed (its
//! host or sidecar died) takes it over and acts again, naming the deliveries it replaces.
//! The action is thus at least once; twice only when a crash falls between the line and
//! the done mark, and then the second line names the first (docs/delivery.md).

use std::time::Duration;

use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{now_ms, unstored_key, DeliveryError, MessageEvent, PENDING_GRACE, RECORD_TTL_SECONDS};
use crate::dapr::{Precondition, SaveOutcome};
use crate::error::ApiError;
use crate::ids::random_id;
use crate::messages::{validate_user_id, History, Messages, Stored};
use crate::transport::Transport;

/// How long a delivery's claim keeps other deliveries of the same event away while it has
/// not completed. A live delivery completes within moments of its claim (one line, one
/// state write); Dapr retries a failed delivery after 1 s, 3 times (scripts/dapr/resiliency.yaml),
/// so a claim left by a delivery whose host or sidecar died is taken over within those retries.
pub const CLAIM_LEASE_MS: u64 = 2_000;

/// The pauses between reads of the history while an event's write may still land: its POST
/// writes a moment after its publish, and its event often comes first. About 0.3 s in all;
/// then Dapr delivers again.
const PENDING_PAUSES_MS: [u64; 6] = [5, 10, 20, 40, 80, 160];

/// The claim of an event, under `handled/<write_id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Claim {
    user_id: String,
    id: u64,
    /// The delivery that holds it.
    delivery: String,
    /// When that delivery took it, in ms since the Unix epoch (its host's clock).
    since_ms: u64,
    /// Whether that delivery completed the action.
    done: bool,
    /// Deliveries that held it before and never completed.
    #[serde(default)]
    replaces: Vec<String>,
}

/// What the subscriber does with a delivered event.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Stored, and claimed by this delivery: act on it, then `complete` it. `replaces` are
    /// the deliveries that claimed it before and never completed.
    Act { delivery: String, replaces: Vec<String> },
    /// Its write never landed, and never will. Says which message.
    Phantom(String),
    /// Completed before, by this delivery: a redelivery, here or at another replica.
    Duplicate { delivery: String },
}

impl<T: Transport> Messages<'_, T> {
    /// Checks that the event's write landed, then claims the event for a new delivery with a
    /// first-write create of a key of its own, which only one delivery can win; a claim left
    /// by a delivery that never completed is taken over (`CLAIM_LEASE_MS`). A write that may
    /// still land, or a claim held by a delivery that may still be at work, is `NotYet`, so
    /// that Dapr delivers again.
    pub fn verdict(&self, event: &MessageEvent) -> Result<Verdict, DeliveryError> {
        if let Some(why) = self.phantom(event)? {
            return Ok(Verdict::Phantom(why));
        }
        let store = &self.config.state_store;
        let key = claim_key(&event.write_id);
        let mine = Claim {
            user_id: event.user_id.clone(),
            id: event.id,
            delivery: random_id(),
            since_ms: now_ms(),
            done: false,
            replaces: Vec::new(),
        };
        let created = self.dapr.save_state(
            store,
            &key,
            &mine,
            Precondition::Missing,
            Some(RECORD_TTL_SECONDS),
        );
        if self.won(&key, &mine, created)? {
            return Ok(Verdict::Act {
                delivery: mine.delivery,
                replaces: mine.replaces,
            });
        }
        let entry = self
            .dapr
            .get_state(store, &key)?
            .ok_or_else(|| not_yet(event, "its claim was just released"))?;
        let held = parse_claim(&key, entry.value)?;
        if held.done {
            return Ok(Verdict::Duplicate {
                delivery: held.delivery,
            });
        }
        let held_ms = mine.since_ms.saturating_sub(held.since_ms);
        if held_ms < CLAIM_LEASE_MS {
            return Err(not_yet(
                event,
                &format!(
                    "delivery {} has held its claim for {held_ms} ms and may still be at work",
                    held.delivery
                ),
            ));
        }
        let etag = entry
            .etag
            .ok_or_else(|| not_yet(event, "its claim has no ETag"))?;
        let replaces = [held.replaces, vec![held.delivery]].concat();
        let takeover = Claim { replaces, ..mine };
        let taken = self.dapr.save_state(
            store,
            &key,
            &takeover,
            Precondition::ETag(&etag),
            Some(RECORD_TTL_SECONDS),
        );
        if self.won(&key, &takeover, taken)? {
            return Ok(Verdict::Act {
                delivery: takeover.delivery,
                replaces: takeover.replaces,
            });
        }
        Err(not_yet(event, "another delivery took its claim over just now"))
    }

    /// Why the event is a phantom, if it is. Its write is in the history: not one. The
    /// history has moved past the ETag the write was conditional on without it, or the
    /// write was marked as one that stored nothing: one. The history has forgotten which
    /// write stored that message id (`MIN_WRITE_IDS` later messages) and the write is not
    /// marked: not one, once its POST has had `PENDING_GRACE` to mark it. Otherwise
    /// the write may still land: read again for a moment (`PENDING_PAUSES_MS`), then, within
    /// `PENDING_GRACE` of its publish, `NotYet`; past it, fence the write off by writing the
    /// history back unchanged under its ETag, which moves the ETag on.
    fn phantom(&self, event: &MessageEvent) -> Result<Option<String>, DeliveryError> {
        let missing = || {
            format!(
                "user {:?} has no message {} stored by write {}",
                event.user_id, event.id, event.write_id
            )
        };
        let mut pauses = PENDING_PAUSES_MS.iter();
        let (history, etag) = loop {
            let (history, etag) = match self.history(&event.user_id)? {
                Some((history, etag)) => (history, etag),
                None => (History::default(), None),
            };
            match history.stored_by(event.id, &event.message, &event.write_id) {
                Stored::Yes => return Ok(None),
                Stored::Forgotten if self.marked_unstored(&event.write_id)? => return Ok(Some(missing())),
                Stored::Forgotten if waited(event) < PENDING_GRACE => {
                    return Err(not_yet(
                        event,
                        "its POST may still mark its write as one that stored nothing",
                    ))
                }
                Stored::Forgotten => return Ok(None),
                Stored::No if etag.as_deref() != Some(event.etag.as_str()) => {
                    if !self.marked_unstored(&event.write_id)? {
                        self.mark_phantom(event)?;
                    }
                    return Ok(Some(format!("{}, and its history has moved on", missing())));
                }
                Stored::No => {}
            }
            match pauses.next() {
                Some(pause) => std::thread::sleep(Duration::from_millis(*pause)),
                None => break (history, event.etag.clone()),
            }
        };
        if self.marked_unstored(&event.write_id)? {
            return Ok(Some(missing()));
        }
        let waited_ms = waited(event).as_millis();
        if waited(event) < PENDING_GRACE {
            return Err(not_yet(
                event,
                &format!("its write may still land ({waited_ms} ms after its publish)"),
            ));
        }
        let fence = self.dapr.save_state(
            &self.config.state_store,
            &event.user_id,
            &history,
            Precondition::ETag(&etag),
            None,
        )?;
        if fence != SaveOutcome::Saved {
            return Err(not_yet(
                event,
                "its history changed while its write was fenced off",
            ));
        }
        self.mark_phantom(event)?;
        Ok(Some(format!(
            "{}: fenced off {waited_ms} ms after its publish",
            missing()
        )))
    }

    /// Marks the event's write as one that stored nothing (`unstored_key`), so that a later
    /// delivery still knows once the history limit has dropped its message id.
    fn mark_phantom(&self, event: &MessageEvent) -> Result<(), ApiError> {
        let mark = serde_json::json!({ "user_id": event.user_id, "id": event.id });
        self.dapr
            .save_state(
                &self.config.state_store,
                &unstored_key(&event.write_id),
                &mark,
                Precondition::Missing,
                Some(RECORD_TTL_SECONDS),
            )
            .map(|_| ())
    }

    /// Whether write `write_id` was marked as one that stored nothing (`unstored_key`).
    fn marked_unstored(&self, write_id: &str) -> Result<bool, ApiError> {
        Ok(self
            .dapr
            .get_state(&self.config.state_store, &unstored_key(write_id))?
            .is_some())
    }

    /// Whether a write of claim `mine` won. A write whose answer was lost (a time-out, a
    /// broken connection) may have landed: then the claim read back names this delivery.
    /// Without that read, a claim whose answer was lost would keep every delivery away
    /// until its lease ran out, and a takeover's lost answer would start that again.
    fn won(&self, key: &str, mine: &Claim, written: Result<SaveOutcome, ApiError>) -> Result<bool, ApiError> {
        match written {
            Ok(outcome) => Ok(outcome == SaveOutcome::Saved),
            Err(e) if e.dapr_error_code.is_none() => match self.dapr.get_state(&self.config.state_store, key)
            {
                Ok(Some(entry)) => Ok(parse_claim(key, entry.value)?.delivery == mine.delivery),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Marks the event's claim done by `delivery`, after the action: later deliveries are
    /// duplicates. Under the claim's ETag: on state.redis a key created with first-write
    /// refuses every later write without one (measured, daprd 1.18.1). A claim another
    /// delivery has taken over meanwhile is theirs to mark.
    pub fn complete(&self, event: &MessageEvent, delivery: &str) -> Result<(), ApiError> {
        let store = &self.config.state_store;
        let key = claim_key(&event.write_id);
        let entry = self
            .dapr
            .get_state(store, &key)?
            .ok_or_else(|| ApiError::new(StatusCode::BAD_GATEWAY, format!("the claim {key:?} is gone")))?;
        let held = parse_claim(&key, entry.value)?;
        let etag = entry.etag.ok_or_else(|| {
            ApiError::new(StatusCode::BAD_GATEWAY, format!("the claim {key:?} has no ETag"))
        })?;
        if held.delivery != delivery {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("delivery {} took the claim {key:?} over meanwhile", held.delivery),
            ));
        }
        match self.dapr.save_state(
            store,
            &key,
            &Claim { done: true, ..held },
            Precondition::ETag(&etag),
            Some(RECORD_TTL_SECONDS),
        )? {
            SaveOutcome::Saved => Ok(()),
            _ => Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("another delivery took the claim {key:?} over meanwhile"),
            )),
        }
    }
}

fn parse_claim(key: &str, value: serde_json::Value) -> Result<Claim, ApiError> {
    serde_json::from_value(value).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("the state store holds a claim {key:?} that is not one: {e}"),
        )
    })
}

/// The key that claims an event. User ids cannot contain '/', so no history has this key.
fn claim_key(write_id: &str) -> String {
    format!("handled/{write_id}")
}

/// How long ago the event was published, by this host's clock.
fn waited(event: &MessageEvent) -> Duration {
    Duration::from_millis(now_ms().saturating_sub(event.published_ms))
}

fn not_yet(event: &MessageEvent, why: &str) -> DeliveryError {
    DeliveryError::NotYet(format!(
        "event of message {} of user {:?} not handled now: {why}; Dapr delivers it again",
        event.id, event.user_id
    ))
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
        None if envelope.get("data_base64").is_some() => {
            return Err("binary data (data_base64) is not a message event".to_string())
        }
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
    use crate::dapr::DaprClient;
    use crate::transport::scripted::Scripted;
    use serde_json::json;

    fn config() -> Config {
        Config::from_lookup(|_| None).unwrap()
    }

    fn event(id: u64, message: &str, write_id: &str) -> MessageEvent {
        MessageEvent {
            user_id: "ann".into(),
            message: message.into(),
            id,
            created_at: "t".into(),
            write_id: write_id.into(),
            etag: "2".into(),
            published_ms: now_ms(),
        }
    }

    fn data(id: u64) -> serde_json::Value {
        json!({
            "user_id": "ann", "message": "hi", "id": id, "created_at": "t", "write_id": "w1",
            "etag": "2", "published_ms": 7
        })
    }

    #[test]
    fn cloud_event_with_json_data_parses() {
        let body = json!({
            "specversion": "1.0", "type": "com.dapr.event.sent",
            "datacontenttype": "application/json", "data": data(3)
        });
        assert_eq!(
            parse_cloud_event(body.to_string().as_bytes()).unwrap(),
            MessageEvent {
                published_ms: 7,
                ..event(3, "hi", "w1")
            }
        );
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
            (
                r#"{"data":{"user_id":"ann","message":"m","id":1,"created_at":"t"}}"#,
                "missing field `write_id`",
            ),
            (
                r#"{"data":{"user_id":"ann","message":"m","id":1,"created_at":"t","write_id":"w"}}"#,
                "missing field `etag`",
            ),
            (
                r#"{"data":{"user_id":"","message":"m","id":1,"created_at":"t","write_id":"w","etag":"1","published_ms":1}}"#,
                "user_id is required",
            ),
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

    fn verdict(dapr: &std::rc::Rc<Scripted>, event: &MessageEvent) -> Result<Verdict, DeliveryError> {
        let client = DaprClient::new(dapr.clone(), &config());
        Messages {
            dapr: &client,
            config: &config(),
        }
        .verdict(event)
    }

    const EXISTS: &str = r#"{"errorCode":"ERR_STATE_SAVE","message":"failed to set key"}"#;

    fn claim(delivery: &str, since_ms: u64, done: bool) -> String {
        json!({
            "user_id": "ann", "id": 1, "delivery": delivery,
            "since_ms": since_ms, "done": done, "replaces": ["d0"]
        })
        .to_string()
    }

    #[test]
    fn a_stored_event_is_claimed_for_this_delivery_then_acted_on() {
        let dapr = Scripted::new()
            .answer(200, &[("etag", "3")], &ann_history())
            .answer(204, &[], "");
        let Verdict::Act { delivery, replaces } = verdict(&dapr, &event(2, "two", "w2")).unwrap() else {
            panic!()
        };
        assert!(replaces.is_empty());
        assert_eq!(
            dapr.calls()[1],
            "POST http://localhost:3500/v1.0/state/statestore"
        );
        let claim = &dapr.json_sent(1)[0];
        assert_eq!(claim["key"], "handled/w2");
        assert_eq!(
            (
                claim["value"]["delivery"].as_str(),
                claim["value"]["done"].clone()
            ),
            (Some(delivery.as_str()), json!(false))
        );
        assert!(
            claim.get("etag").is_none(),
            "a claim is a create: first-write without an ETag"
        );
        assert_eq!(claim["metadata"]["ttlInSeconds"], RECORD_TTL_SECONDS.to_string());
    }

    fn complete(dapr: &std::rc::Rc<Scripted>, delivery: &str) -> Result<(), ApiError> {
        let client = DaprClient::new(dapr.clone(), &config());
        Messages {
            dapr: &client,
            config: &config(),
        }
        .complete(&event(1, "one", "w1"), delivery)
    }

    #[test]
    fn completing_marks_the_claim_done_under_its_etag() {
        let dapr = Scripted::new()
            .answer(200, &[("etag", "4")], &claim("d1", 1, false))
            .answer(204, &[], "");
        complete(&dapr, "d1").unwrap();
        let done = &dapr.json_sent(1)[0];
        assert_eq!(
            (done["key"].clone(), done["etag"].clone()),
            (json!("handled/w1"), json!("4"))
        );
        assert_eq!(
            (
                done["value"]["delivery"].clone(),
                done["value"]["done"].clone(),
                done["value"]["replaces"].clone()
            ),
            (json!("d1"), json!(true), json!(["d0"]))
        );
    }

    #[test]
    fn a_claim_taken_over_meanwhile_is_not_marked() {
        let dapr = Scripted::new().answer(200, &[("etag", "4")], &claim("d2", 1, false));
        assert_eq!(complete(&dapr, "d1").unwrap_err().status, StatusCode::CONFLICT);
        assert_eq!(dapr.calls().len(), 1);
    }

    #[test]
    fn an_event_whose_history_moved_on_without_its_write_is_a_phantom_marked_and_claims_nothing() {
        for phantom in [
            event(2, "two", "w-lost-race"),
            event(2, "other text", "w2"),
            event(7, "seven", "w7"),
        ] {
            let dapr = Scripted::new()
                .answer(200, &[("etag", "3")], &ann_history())
                .answer(204, &[], "")
                .answer(204, &[], "");
            let got = verdict(&dapr, &phantom).unwrap();
            assert!(
                matches!(&got, Verdict::Phantom(why) if why.contains(&format!("no message {}", phantom.id))),
                "{got:?}"
            );
            assert_eq!(
                dapr.calls().len(),
                3,
                "the history, the mark read and written: {:?}",
                dapr.calls()
            );
            assert_eq!(
                dapr.json_sent(2)[0]["key"],
                format!("unstored/{}", phantom.write_id)
            );
        }
        let no_history = Scripted::new()
            .answer(204, &[], "")
            .answer(200, &[("etag", "1")], "{}");
        assert!(matches!(
            verdict(&no_history, &event(1, "one", "w1")).unwrap(),
            Verdict::Phantom(_)
        ));
        assert_eq!(no_history.calls().len(), 2, "already marked");
    }

    /// Ann's history as `ann_history`, under the ETag the event names ("2").
    fn pending() -> std::rc::Rc<Scripted> {
        Scripted::new().answer(200, &[("etag", "2")], &ann_history())
    }

    #[test]
    fn an_event_that_came_before_its_write_is_acted_on_once_the_write_lands() {
        let mut with_three = History::default();
        for (text, write) in [("one", "w1"), ("two", "w2"), ("three", "w3")] {
            with_three.append(text.into(), "t".into(), 100, write.into());
        }
        let dapr = pending()
            .answer(200, &[("etag", "2")], &ann_history())
            .answer(
                200,
                &[("etag", "3")],
                &serde_json::to_string(&with_three).unwrap(),
            )
            .answer(204, &[], "");
        assert!(matches!(
            verdict(&dapr, &event(3, "three", "w3")).unwrap(),
            Verdict::Act { .. }
        ));
    }

    #[test]
    fn a_write_that_may_still_land_is_not_yet_within_the_grace() {
        let dapr = pending();
        for _ in PENDING_PAUSES_MS {
            dapr.answer(200, &[("etag", "2")], &ann_history());
        }
        dapr.answer(204, &[], "");
        let Err(DeliveryError::NotYet(why)) = verdict(&dapr, &event(3, "three", "w3")) else {
            panic!()
        };
        assert!(why.contains("may still land"), "{why}");
        assert!(
            dapr.calls().iter().all(|c| c.starts_with("GET")),
            "nothing written: {:?}",
            dapr.calls()
        );
    }

    #[test]
    fn past_the_grace_a_write_that_never_landed_is_fenced_off_and_a_phantom() {
        let stale = MessageEvent {
            published_ms: now_ms() - PENDING_GRACE.as_millis() as u64 - 1,
            ..event(3, "three", "w3")
        };
        let fenced = pending();
        for _ in PENDING_PAUSES_MS {
            fenced.answer(200, &[("etag", "2")], &ann_history());
        }
        fenced
            .answer(204, &[], "")
            .answer(204, &[], "")
            .answer(204, &[], "");
        let got = verdict(&fenced, &stale).unwrap();
        assert!(
            matches!(&got, Verdict::Phantom(why) if why.contains("fenced off")),
            "{got:?}"
        );
        let fence = &fenced.json_sent(PENDING_PAUSES_MS.len() + 2)[0];
        assert_eq!(
            (fence["key"].clone(), fence["etag"].clone()),
            (json!("ann"), json!("2")),
            "the history written back unchanged under the event's ETag"
        );

        let raced = pending();
        for _ in PENDING_PAUSES_MS {
            raced.answer(200, &[("etag", "2")], &ann_history());
        }
        raced.answer(204, &[], "").answer(409, &[], "");
        assert!(matches!(verdict(&raced, &stale), Err(DeliveryError::NotYet(_))));
    }

    /// Ann's history with messages 1 and 2 forgotten, write ids included, and 3 kept.
    fn forgetful_history() -> String {
        let mut history = History::default();
        for n in 1..=3 {
            history.append(format!("m{n}"), "t".into(), 1, format!("w{n}"));
        }
        history.write_ids.retain(|&id, _| id == 3);
        serde_json::to_string(&history).unwrap()
    }

    #[test]
    fn a_forgotten_message_is_judged_by_the_mark_of_a_write_that_stored_nothing() {
        let marked = Scripted::new()
            .answer(200, &[("etag", "3")], &forgetful_history())
            .answer(200, &[("etag", "1")], r#"{"user_id":"ann","id":1}"#);
        assert!(matches!(
            verdict(&marked, &event(1, "m1", "w-lost")).unwrap(),
            Verdict::Phantom(_)
        ));
        assert_eq!(
            marked.calls()[1],
            "GET http://localhost:3500/v1.0/state/statestore/unstored%2Fw-lost?consistency=strong"
        );

        let unmarked = || {
            Scripted::new()
                .answer(200, &[("etag", "3")], &forgetful_history())
                .answer(204, &[], "")
                .answer(204, &[], "")
        };
        assert!(
            matches!(
                verdict(&unmarked(), &event(1, "m1", "w1")),
                Err(DeliveryError::NotYet(_))
            ),
            "its POST may still mark it"
        );
        let old = MessageEvent {
            published_ms: now_ms() - PENDING_GRACE.as_millis() as u64 - 1,
            ..event(1, "m1", "w1")
        };
        assert!(
            matches!(verdict(&unmarked(), &old).unwrap(), Verdict::Act { .. }),
            "the limit does not make an event a phantom"
        );
    }

    #[test]
    fn a_done_claim_is_a_duplicate() {
        let dapr = Scripted::new()
            .answer(200, &[("etag", "3")], &ann_history())
            .answer(500, &[], EXISTS)
            .answer(200, &[("etag", "1")], &claim("d1", 1, true))
            .answer(200, &[("etag", "1")], &claim("d1", 1, true));
        assert_eq!(
            verdict(&dapr, &event(1, "one", "w1")).unwrap(),
            Verdict::Duplicate {
                delivery: "d1".into()
            }
        );
        assert_eq!(
            dapr.calls()[2],
            "GET http://localhost:3500/v1.0/state/statestore/handled%2Fw1?consistency=strong"
        );
    }

    #[test]
    fn a_claim_held_moments_ago_is_a_503_so_that_dapr_delivers_again() {
        let dapr = Scripted::new()
            .answer(200, &[("etag", "3")], &ann_history())
            .answer(409, &[], "")
            .answer(200, &[("etag", "1")], &claim("d1", now_ms(), false));
        let Err(DeliveryError::NotYet(why)) = verdict(&dapr, &event(1, "one", "w1")) else {
            panic!()
        };
        assert!(why.contains("delivery d1 has held its claim"), "{why}");
    }

    /// Ann's message 1 stored, and its claim held by d1 (after d0) past the lease, never done.
    fn held_past_the_lease() -> std::rc::Rc<Scripted> {
        Scripted::new()
            .answer(200, &[("etag", "3")], &ann_history())
            .answer(409, &[], "")
            .answer(
                200,
                &[("etag", "7")],
                &claim("d1", now_ms() - CLAIM_LEASE_MS - 1, false),
            )
    }

    #[test]
    fn a_claim_left_by_a_delivery_that_never_completed_is_taken_over() {
        let dapr = held_past_the_lease().answer(204, &[], "");
        let Verdict::Act { delivery, replaces } = verdict(&dapr, &event(1, "one", "w1")).unwrap() else {
            panic!()
        };
        assert_eq!(
            replaces,
            ["d0", "d1"],
            "every delivery that held it and never completed"
        );
        let takeover = &dapr.json_sent(3)[0];
        assert_eq!(
            (takeover["etag"].clone(), takeover["value"]["delivery"].clone()),
            (json!("7"), json!(delivery))
        );
    }

    #[test]
    fn a_takeover_that_loses_to_another_is_a_503() {
        let dapr = held_past_the_lease().answer(409, &[], "");
        assert!(matches!(
            verdict(&dapr, &event(1, "one", "w1")),
            Err(DeliveryError::NotYet(_))
        ));
    }

    #[test]
    fn a_claim_whose_answer_was_lost_is_read_back_and_acted_on_if_it_landed() {
        use crate::transport::SendFailure;
        let dapr = Scripted::new()
            .answer(200, &[("etag", "3")], &ann_history())
            .fail(SendFailure::Broken("reset".into()));
        // The read-back answers with the claim that was sent: it landed.
        dapr.answer_last_saved("1");
        assert!(matches!(
            verdict(&dapr, &event(1, "one", "w1")).unwrap(),
            Verdict::Act { .. }
        ));
        let lost = Scripted::new()
            .answer(200, &[("etag", "3")], &ann_history())
            .fail(SendFailure::Broken("reset".into()))
            .refuse();
        assert!(matches!(
            verdict(&lost, &event(1, "one", "w1")),
            Err(DeliveryError::Dapr(e)) if e.status == StatusCode::SERVICE_UNAVAILABLE
        ));
    }

    #[test]
    fn a_failed_claim_that_does_not_exist_is_an_error_so_dapr_retries() {
        let dapr = Scripted::new()
            .answer(200, &[("etag", "3")], &ann_history())
            .answer(
                500,
                &[],
                r#"{"errorCode":"ERR_STATE_SAVE","message":"connection refused"}"#,
            )
            .answer(204, &[], "");
        let Err(DeliveryError::Dapr(err)) = verdict(&dapr, &event(1, "one", "w1")) else {
            panic!()
        };
        assert_eq!(err.dapr_error_code.as_deref(), Some("ERR_STATE_SAVE"));
    }
}
