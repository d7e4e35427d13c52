//! The subscriber's side: reading what Dapr delivers, and deciding whether to act on it.
//! A POST publishes its event before its write, so an event may come before its write
//! lands, or for a write that never lands (a phantom). So before acting, the subscriber
//! checks the event against the history (did its write land, or may it still?), then claims
//! it (claims.rs: was it handled before, by this replica or another?).

use std::time::Duration;

use super::{now_ms, unstored_key, DeliveryError, MessageEvent, PENDING_GRACE, RECORD_TTL_SECONDS};
use crate::dapr::{Precondition, SaveOutcome};
use crate::error::ApiError;
use crate::messages::{validate_user_id, Messages, Stored};
use crate::transport::Transport;

/// The pauses between reads of the history while an event's write may still land: its POST
/// writes a moment after its publish, and its event often comes first. About 0.3 s in all;
/// then Dapr delivers again.
const PENDING_PAUSES_MS: [u64; 6] = [5, 10, 20, 40, 80, 160];

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
    /// Checks that the event's write landed, then claims the event for this delivery
    /// (claims.rs). A write that may still land, or a claim held by a delivery that may still
    /// be at work, is `NotYet`, so that Dapr delivers again.
    pub fn verdict(&self, event: &MessageEvent) -> Result<Verdict, DeliveryError> {
        if let Some(why) = self.phantom(event)? {
            return Ok(Verdict::Phantom(why));
        }
        self.claim(event)
    }

    /// Why the event is a phantom, if it is. Its write is in the history: not one. The
    /// history has moved past the ETag the write was conditional on (or exists, for a write
    /// that was to create it) without it, or the write was marked as one that stored
    /// nothing: one. The history has forgotten which
    /// write stored that message id (`MIN_WRITE_IDS` later messages) and the write is not
    /// marked: not one, once its POST has had `PENDING_GRACE` to mark it. Otherwise
    /// the write may still land: read again for a moment (`PENDING_PAUSES_MS`), then, within
    /// `PENDING_GRACE` of its publish, `NotYet`; past it, fence the write off by writing the
    /// history back unchanged under its ETag (or creating it empty), which moves the ETag on.
    fn phantom(&self, event: &MessageEvent) -> Result<Option<String>, DeliveryError> {
        let missing = || {
            format!(
                "user {:?} has no message {} stored by write {}",
                event.user_id, event.id, event.write_id
            )
        };
        let mut pauses = PENDING_PAUSES_MS.iter();
        let history = loop {
            let (history, etag) = self.history(&event.user_id)?.unwrap_or_default();
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
                Stored::No if etag != event.etag => {
                    if !self.marked_unstored(&event.write_id)? {
                        self.mark_phantom(event)?;
                    }
                    return Ok(Some(format!("{}, and its history has moved on", missing())));
                }
                Stored::No => {}
            }
            match pauses.next() {
                Some(pause) => std::thread::sleep(Duration::from_millis(*pause)),
                None => break history,
            }
        };
        if self.marked_unstored(&event.write_id)? {
            return Ok(Some(missing()));
        }
        let waited_ms = waited(event).as_millis();
        if waited_ms < PENDING_GRACE.as_millis() {
            return Err(not_yet(
                event,
                &format!("its write may still land ({waited_ms} ms after its publish)"),
            ));
        }
        let fence = self.dapr.save_state(
            &self.config.state_store,
            &event.user_id,
            &history,
            Precondition::as_read(event.etag.as_deref()),
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
}

/// How long ago the event was published, by this host's clock. A publish time further ahead
/// than the grace is no clock skew but a bad event, whose wait would never end: it counts as
/// past the grace.
fn waited(event: &MessageEvent) -> Duration {
    let now = now_ms();
    if event.published_ms > now + PENDING_GRACE.as_millis() as u64 {
        return PENDING_GRACE;
    }
    Duration::from_millis(now.saturating_sub(event.published_ms))
}

pub(super) fn not_yet(event: &MessageEvent, why: &str) -> DeliveryError {
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
    use crate::dapr::DaprClient;
    use crate::delivery::fixtures::{config, event};
    use crate::messages::History;
    use crate::transport::scripted::Scripted;
    use serde_json::json;

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

        let from_the_future = MessageEvent {
            published_ms: now_ms() + 10 * PENDING_GRACE.as_millis() as u64,
            ..event(3, "three", "w3")
        };
        assert_eq!(
            waited(&from_the_future),
            PENDING_GRACE,
            "its wait would never end"
        );

        let raced = pending();
        for _ in PENDING_PAUSES_MS {
            raced.answer(200, &[("etag", "2")], &ann_history());
        }
        raced.answer(204, &[], "").answer(409, &[], "");
        assert!(matches!(verdict(&raced, &stale), Err(DeliveryError::NotYet(_))));
    }

    #[test]
    fn the_event_of_a_create_waits_while_there_is_no_history_and_is_a_phantom_beside_another() {
        let create = |published_ms| MessageEvent {
            etag: None,
            published_ms,
            ..event(1, "first", "w-first")
        };
        let no_history = || {
            let dapr = Scripted::new();
            for _ in 0..=PENDING_PAUSES_MS.len() {
                dapr.answer(204, &[], "");
            }
            dapr.answer(204, &[], "")
        };
        assert!(matches!(
            verdict(&no_history(), &create(now_ms())),
            Err(DeliveryError::NotYet(_))
        ));

        let fenced = no_history().answer(204, &[], "").answer(204, &[], "");
        let stale = create(now_ms() - PENDING_GRACE.as_millis() as u64 - 1);
        assert!(
            matches!(verdict(&fenced, &stale).unwrap(), Verdict::Phantom(why) if why.contains("fenced off"))
        );
        let fence = &fenced.json_sent(PENDING_PAUSES_MS.len() + 2)[0];
        assert_eq!(
            (
                fence["key"].clone(),
                fence.get("etag"),
                fence["value"]["next_id"].clone()
            ),
            (json!("ann"), None, json!(0)),
            "an empty history created, so that the create can never run"
        );

        let created_by_another = Scripted::new()
            .answer(200, &[("etag", "1")], &ann_history())
            .answer(204, &[], "")
            .answer(204, &[], "");
        let got = verdict(&created_by_another, &create(now_ms())).unwrap();
        assert!(
            matches!(&got, Verdict::Phantom(why) if why.contains("moved on")),
            "{got:?}"
        );
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
}
