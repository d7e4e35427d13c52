//! The POST's side: publish the message's event, then store the message under the ETag the
//! event names; after losing a race for the same user, mark the write as one that stored
//! nothing and retry with a new write id; settle a write whose answer was lost by reading
//! the history, so that a retry never stores twice.

use std::time::Duration;

use http::StatusCode;

use super::{unstored_key, DeliveryError, MessageEvent, RECORD_TTL_SECONDS};
use crate::dapr::{Precondition, SaveOutcome};
use crate::error::ApiError;
use crate::ids::{random_id, random_u64};
use crate::messages::{now_rfc3339, History, Messages, NewMessage, Stored, StoredMessage};
use crate::transport::Transport;

/// How often an append re-reads and retries after losing a race for the same user.
pub const MAX_SAVE_ATTEMPTS: u32 = 20;
/// How often settling reads the history, after a write that fenced nothing off (someone
/// else wrote) or a read that failed (the sidecar or Redis coming back), `SETTLE_PAUSE` apart.
const SETTLE_ROUNDS: u32 = 4;
const SETTLE_PAUSE: Duration = Duration::from_millis(500);

/// What became of a write whose answer did not say.
#[derive(Debug, PartialEq)]
enum Settled {
    /// It stored the message.
    Stored,
    /// Another write won the race: the write's ETag is stale for good.
    Lost,
    /// It had not run, and now never will: an unchanged write moved the ETag on.
    FencedOff,
}

impl<T: Transport> Messages<'_, T> {
    /// Publishes the message's event, then stores the message, so that a stored message
    /// always has its event out. Optimistic concurrency: read the history with its ETag,
    /// append, publish the event naming the write id and that ETag, then write only if the
    /// ETag still matches (`save_state_transaction`), or, for a user with no history yet,
    /// only if there still is none (`create_state`); after losing a race, mark the write as
    /// one that stored nothing, re-read and retry after a short random back-off, at most
    /// `MAX_SAVE_ATTEMPTS` times. The event of a write that never lands is a phantom, which
    /// the subscriber tells by the history (subscribe.rs).
    pub fn store_and_publish(&self, new: &NewMessage) -> Result<StoredMessage, DeliveryError> {
        let created_at = now_rfc3339();
        for attempt in 0..MAX_SAVE_ATTEMPTS {
            let (mut history, etag) = match self.history(&new.user_id)? {
                Some((history, Some(etag))) => (history, Some(etag)),
                Some((_, None)) => {
                    return Err(DeliveryError::Dapr(ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        format!("the state store returned no ETag for user {:?}", new.user_id),
                    )))
                }
                None => (History::default(), None),
            };
            let write_id = random_id();
            let stored = history.append(
                new.text.clone(),
                created_at.clone(),
                self.config.history_limit,
                write_id.clone(),
            );
            let event = MessageEvent::of(&new.user_id, &stored, write_id.clone(), etag.clone());
            if let Err(e) = self.dapr.publish(&self.config.pubsub, &self.config.topic, &event) {
                // Its answer may have been lost with the event out: the mark tells the
                // subscriber at once. Without it, the grace period does.
                let _ = self.mark_unstored(&new.user_id, &stored, &write_id);
                return Err(DeliveryError::NotStored(e));
            }
            let store = &self.config.state_store;
            let written = match etag.as_deref() {
                Some(etag) => self
                    .dapr
                    .save_state_transaction(store, &new.user_id, &history, etag),
                None => self.dapr.create_state(store, &new.user_id, &history),
            };
            let settled = match written {
                Ok(SaveOutcome::Saved) => return Ok(stored),
                Ok(SaveOutcome::Conflict) => Settled::Lost,
                Ok(SaveOutcome::Unknown(why)) => {
                    let failed = !may_have_run_anyway(&why);
                    self.settle(&new.user_id, &stored, &write_id, etag.as_deref(), failed)
                        .map_err(|e| DeliveryError::MaybeStored {
                            first: why,
                            settling: e.message,
                        })?
                }
                Err(e) => {
                    let _ = self.mark_unstored(&new.user_id, &stored, &write_id);
                    return Err(DeliveryError::NotStored(e));
                }
            };
            if settled == Settled::Stored {
                return Ok(stored);
            }
            self.mark_unstored(&new.user_id, &stored, &write_id)?;
            if settled == Settled::FencedOff {
                return Err(DeliveryError::NotStored(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "the state store did not run the write that stores the message for user {:?}",
                        new.user_id
                    ),
                )));
            }
            std::thread::sleep(backoff(attempt));
        }
        Err(DeliveryError::Contended {
            user_id: new.user_id.clone(),
        })
    }

    /// Decides what became of write `write_id`, conditional on `etag` (on there being no
    /// history when `None`), whose answer did not say. Read the history: the write is there,
    /// or another write is (ETags only grow, and the service never deletes a history, so the
    /// write's condition can never hold again). If the history is as the write found it, the write
    /// has not run yet, but may still (queued in the sidecar or the store): write that
    /// history back under the same condition, which moves the ETag on, so that the write can
    /// never run; if that write loses, something else landed: read again.
    /// `failed`: the write answered an error of its own (not a time-out), so it did not run,
    /// and a message id the history limit has dropped since was another write's.
    fn settle(
        &self,
        user_id: &str,
        stored: &StoredMessage,
        write_id: &str,
        etag: Option<&str>,
        failed: bool,
    ) -> Result<Settled, ApiError> {
        let mut failure = unsettled(user_id, "other writes kept landing");
        for round in 0..SETTLE_ROUNDS {
            if round > 0 {
                std::thread::sleep(SETTLE_PAUSE);
            }
            let (history, unchanged) = match self.history(user_id) {
                Ok(Some((history, now))) => (history, etag.is_some() && now.as_deref() == etag),
                Ok(None) => (History::default(), etag.is_none()),
                Err(e) => {
                    failure = e;
                    continue;
                }
            };
            match history.stored_by(stored.id, &stored.message, write_id) {
                Stored::Yes => return Ok(Settled::Stored),
                Stored::Forgotten if failed => return Ok(Settled::Lost),
                Stored::Forgotten => {
                    return Err(unsettled(
                        user_id,
                        "the history limit dropped its message id since",
                    ))
                }
                Stored::No if !unchanged => return Ok(Settled::Lost),
                Stored::No => {}
            }
            let condition = Precondition::as_read(etag);
            match self
                .dapr
                .save_state(&self.config.state_store, user_id, &history, condition, None)
            {
                Ok(SaveOutcome::Saved) => return Ok(Settled::FencedOff),
                Ok(_) => {}
                Err(e) => failure = e,
            }
        }
        Err(failure)
    }

    /// Marks write `write_id` as one that stored nothing, for the subscriber (`unstored_key`).
    fn mark_unstored(&self, user_id: &str, stored: &StoredMessage, write_id: &str) -> Result<(), ApiError> {
        let mark = serde_json::json!({ "user_id": user_id, "id": stored.id });
        self.dapr
            .save_state(
                &self.config.state_store,
                &unstored_key(write_id),
                &mark,
                Precondition::Missing,
                Some(RECORD_TTL_SECONDS),
            )
            .map(|_| ())
    }
}

/// Whether a write that answered `error` may still have run: anything but an error reply
/// from Redis itself (`ERR …`: a stale ETag), such as no answer in time, a broken
/// connection, or Dapr's own "EOF" or "i/o timeout" when Redis went away mid-write
/// (measured in tests/chaos.rs).
fn may_have_run_anyway(error: &ApiError) -> bool {
    !(error.dapr_error_code.as_deref() == Some("ERR_STATE_TRANSACTION") && error.message.contains(": ERR "))
}

fn unsettled(user_id: &str, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        format!("cannot tell whether the write for user {user_id:?} ran: {why}"),
    )
}

/// Up to 2^attempt ms (capped at 64 ms), chosen at random so that racing writers spread out.
fn backoff(attempt: u32) -> Duration {
    let ceiling_ms = 1u64 << attempt.min(6);
    Duration::from_millis(1 + random_u64() % ceiling_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dapr::DaprClient;
    use crate::delivery::fixtures::config;
    use crate::transport::scripted::Scripted;
    use crate::transport::SendFailure;
    use serde_json::json;

    fn history_json(texts: &[&str]) -> String {
        let mut history = History::default();
        for (n, text) in texts.iter().enumerate() {
            history.append(text.to_string(), "t".into(), 100, format!("w{n}"));
        }
        serde_json::to_string(&history).unwrap()
    }

    fn store(dapr: &std::rc::Rc<Scripted>, text: &str) -> Result<StoredMessage, DeliveryError> {
        let client = DaprClient::new(dapr.clone(), &config());
        let new = NewMessage {
            user_id: "ann".into(),
            text: text.into(),
        };
        Messages {
            dapr: &client,
            config: &config(),
        }
        .store_and_publish(&new)
    }

    /// daprd 1.18.1's answer on state.redis to a transaction with a stale ETag (measured).
    const STALE_ETAG: &str = concat!(
        r#"{"errorCode":"ERR_STATE_TRANSACTION","message":"error while executing state transaction: "#,
        r#"ERR user_script:14: failed to set key dapr-spin-hello||ann"}"#
    );
    const PUBLISH: &str = "POST http://localhost:3500/v1.0/publish/pubsub/message-updated";
    const TRANSACTION: &str = "POST http://localhost:3500/v1.0/state/statestore/transaction";

    fn not_stored(result: Result<StoredMessage, DeliveryError>) -> ApiError {
        match result {
            Err(DeliveryError::NotStored(e)) => e,
            other => panic!("not NotStored: {other:?}"),
        }
    }

    #[test]
    fn the_event_goes_out_first_then_the_message_is_written_under_the_etag_it_names() {
        let dapr = Scripted::new()
            .answer(200, &[("etag", "4")], &history_json(&["one"]))
            .answer(204, &[], "")
            .answer(204, &[], "");
        let stored = store(&dapr, "two").unwrap();
        assert_eq!(stored.id, 2);
        assert_eq!(dapr.calls()[1..], [PUBLISH, TRANSACTION]);
        let event = dapr.json_sent(1);
        let written = &dapr.json_sent(2)["operations"][0]["request"];
        assert_eq!(written["etag"], "4");
        assert_eq!(written["value"]["messages"][1]["message"], "two");
        let write_id = written["value"]["write_ids"]["2"].as_str().unwrap();
        assert_eq!(write_id.len(), 32);
        assert!(event["published_ms"].as_u64().unwrap() > 0);
        assert_eq!(
            event,
            json!({
                "user_id": "ann", "message": "two", "id": 2, "created_at": stored.created_at,
                "write_id": write_id, "etag": "4", "published_ms": event["published_ms"]
            })
        );
    }

    #[test]
    fn a_lost_race_is_marked_and_retried_with_a_new_write_id_and_event() {
        let dapr = Scripted::new()
            .answer(200, &[("etag", "1")], &history_json(&["one"]))
            .answer(204, &[], "")
            .answer(500, &[], STALE_ETAG)
            .answer(200, &[("etag", "2")], &history_json(&["one", "theirs"]))
            .answer(204, &[], "")
            .answer(200, &[("etag", "2")], &history_json(&["one", "theirs"]))
            .answer(204, &[], "")
            .answer(204, &[], "");
        assert_eq!(store(&dapr, "mine").unwrap().id, 3);
        let (lost, won) = (dapr.json_sent(1), dapr.json_sent(6));
        assert_eq!((lost["id"].clone(), won["id"].clone()), (json!(2), json!(3)));
        assert_ne!(lost["write_id"], won["write_id"]);
        assert_eq!(
            (lost["etag"].clone(), won["etag"].clone()),
            (json!("1"), json!("2"))
        );
        assert_eq!(dapr.json_sent(7)["operations"][0]["request"]["etag"], "2");
        // The losing write is marked, for the subscriber to tell its event once id 2 is forgotten.
        let unstored = format!("unstored/{}", lost["write_id"].as_str().unwrap());
        assert_eq!(dapr.json_sent(4)[0]["key"], unstored);
        assert_eq!(dapr.json_sent(4)[0]["value"], json!({"user_id": "ann", "id": 2}));
    }

    const CREATE: &str = "POST http://localhost:3500/v1.0/state/statestore";

    #[test]
    fn a_new_users_first_message_creates_the_history_after_the_event() {
        let dapr = Scripted::new()
            .answer(204, &[], "")
            .answer(204, &[], "")
            .answer(204, &[], "");
        let stored = store(&dapr, "first").unwrap();
        assert_eq!(stored.id, 1);
        assert_eq!(dapr.calls()[1..], [PUBLISH, CREATE]);
        let event = dapr.json_sent(1);
        assert_eq!(
            event["etag"],
            json!(null),
            "a create is conditional on no history"
        );
        let created = &dapr.json_sent(2)[0];
        assert!(created.get("etag").is_none());
        assert_eq!(created["options"]["concurrency"], "first-write");
        assert_eq!(created["value"]["messages"][0]["message"], "first");
        assert_eq!(created["value"]["write_ids"]["1"], event["write_id"]);
    }

    #[test]
    fn a_create_that_loses_to_another_writer_is_marked_and_retried_on_their_history() {
        let refused = r#"{"errorCode":"ERR_STATE_SAVE","message":"failed to set key"}"#;
        let dapr = Scripted::new()
            .answer(204, &[], "")
            .answer(204, &[], "")
            .answer(500, &[], refused)
            .answer(200, &[("etag", "1")], &history_json(&["theirs"]))
            .answer(204, &[], "")
            .answer(200, &[("etag", "1")], &history_json(&["theirs"]))
            .answer(204, &[], "")
            .answer(204, &[], "");
        assert_eq!(store(&dapr, "mine").unwrap().id, 2);
        let lost = dapr.json_sent(1);
        assert_eq!(
            dapr.json_sent(4)[0]["key"],
            format!("unstored/{}", lost["write_id"].as_str().unwrap())
        );
        assert_eq!(dapr.calls()[6..], [PUBLISH, TRANSACTION]);
        assert_eq!(dapr.json_sent(7)["operations"][0]["request"]["etag"], "1");
    }

    #[test]
    fn a_create_whose_answer_was_lost_but_landed_is_stored_once() {
        let dapr = Scripted::new()
            .answer(204, &[], "")
            .answer(204, &[], "")
            .fail(SendFailure::Broken("the connection closed".into()))
            .answer_last_saved("1");
        assert_eq!(store(&dapr, "first").unwrap().id, 1);
        assert_eq!(dapr.calls().len(), 4, "one read settles it: {:?}", dapr.calls());
    }

    #[test]
    fn a_failed_create_of_a_still_missing_history_is_fenced_off_by_creating_it_empty() {
        let dapr = Scripted::new()
            .answer(204, &[], "")
            .answer(204, &[], "")
            .answer(
                500,
                &[],
                r#"{"errorCode":"ERR_STATE_SAVE","message":"i/o timeout"}"#,
            )
            .answer(204, &[], "")
            .answer(204, &[], "")
            .answer(204, &[], "");
        let err = not_stored(store(&dapr, "first"));
        assert_eq!(err.status, StatusCode::BAD_GATEWAY);
        let fence = &dapr.json_sent(4)[0];
        assert_eq!((fence["key"].clone(), fence.get("etag")), (json!("ann"), None));
        assert_eq!(
            fence["value"],
            json!({"next_id": 0, "messages": [], "write_ids": {}}),
            "an empty history, so that the create can never run later"
        );
        assert!(dapr.json_sent(5)[0]["key"]
            .as_str()
            .unwrap()
            .starts_with("unstored/"));
        assert_eq!(dapr.calls().len(), 6, "no retry: {:?}", dapr.calls());
    }

    #[test]
    fn a_create_that_never_reached_the_sidecar_stored_nothing() {
        let dapr = Scripted::new()
            .answer(204, &[], "")
            .answer(204, &[], "")
            .refuse()
            .refuse();
        let err = not_stored(store(&dapr, "first"));
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            dapr.calls().len(),
            4,
            "the create, then the mark: {:?}",
            dapr.calls()
        );
    }

    #[test]
    fn a_refused_publish_stores_nothing_and_marks_the_write() {
        let dapr = Scripted::new()
            .answer(200, &[("etag", "1")], &history_json(&["one"]))
            .answer(
                500,
                &[],
                r#"{"errorCode":"ERR_PUBSUB_PUBLISH_MESSAGE","message":"connection refused"}"#,
            )
            .answer(204, &[], "");
        let err = not_stored(store(&dapr, "m"));
        assert_eq!(err.dapr_error_code.as_deref(), Some("ERR_PUBSUB_PUBLISH_MESSAGE"));
        assert!(!dapr.calls().iter().any(|c| c == TRANSACTION));
        assert!(dapr.json_sent(2)[0]["key"]
            .as_str()
            .unwrap()
            .starts_with("unstored/"));
    }

    #[test]
    fn a_failed_write_with_an_unchanged_etag_is_fenced_off_and_stored_nothing() {
        let dapr = Scripted::new()
            .answer(200, &[("etag", "1")], &history_json(&["one"]))
            .answer(204, &[], "")
            .answer(500, &[], STALE_ETAG)
            .answer(200, &[("etag", "1")], &history_json(&["one"]))
            .answer(204, &[], "")
            .answer(204, &[], "");
        let err = not_stored(store(&dapr, "m"));
        assert_eq!(err.status, StatusCode::BAD_GATEWAY);
        // The history read, written back unchanged under the write's ETag: that moves the
        // ETag on, so the write can never run later.
        let fence = &dapr.json_sent(4)[0];
        assert_eq!(
            (fence["key"].clone(), fence["etag"].clone()),
            (json!("ann"), json!("1"))
        );
        assert_eq!(
            fence["value"],
            serde_json::from_str::<serde_json::Value>(&history_json(&["one"])).unwrap()
        );
        assert_eq!(dapr.calls().len(), 6, "no retry: {:?}", dapr.calls());
    }

    #[test]
    fn a_write_that_ran_but_lost_its_answer_is_stored_once() {
        for lost in [
            SendFailure::TimedOut("ErrorCode::ConnectionReadTimeout".into()),
            SendFailure::Broken("the connection closed".into()),
        ] {
            let dapr = Scripted::new()
                .answer(200, &[("etag", "1")], &history_json(&["one"]))
                .answer(204, &[], "")
                .fail(lost.clone())
                .answer_last_written("2");
            assert_eq!(store(&dapr, "two").unwrap().id, 2, "{lost:?}");
            assert_eq!(
                dapr.calls().len(),
                4,
                "one read settles it, no retry: {:?}",
                dapr.calls()
            );
        }
    }

    #[test]
    fn settling_reads_again_while_the_sidecar_comes_back() {
        let dapr = Scripted::new()
            .answer(200, &[("etag", "1")], &history_json(&["one"]))
            .answer(204, &[], "")
            .fail(SendFailure::Broken("reset".into()))
            .refuse()
            .answer_last_written("2");
        assert_eq!(store(&dapr, "two").unwrap().id, 2);
    }

    #[test]
    fn a_redis_that_went_away_after_the_write_ran_is_stored_once() {
        // Dapr's words when Redis timed out or was killed mid-transaction: not Redis's `ERR`.
        for message in [
            "read tcp 127.0.0.1:1->127.0.0.1:6379: i/o timeout",
            "error while executing state transaction: EOF",
        ] {
            let answer = json!({"errorCode": "ERR_STATE_TRANSACTION", "message": message}).to_string();
            let dapr = Scripted::new()
                .answer(200, &[("etag", "1")], &history_json(&["one"]))
                .answer(204, &[], "")
                .answer(500, &[], &answer)
                .answer_last_written("2");
            assert_eq!(store(&dapr, "two").unwrap().id, 2, "{message}");
        }
    }

    #[test]
    fn a_lost_answer_whose_race_another_write_won_is_retried() {
        let dapr = Scripted::new()
            .answer(200, &[("etag", "1")], &history_json(&["one"]))
            .answer(204, &[], "")
            .fail(SendFailure::Broken("the connection closed".into()))
            .answer(200, &[("etag", "2")], &history_json(&["one", "theirs"]))
            .answer(204, &[], "")
            .answer(200, &[("etag", "2")], &history_json(&["one", "theirs"]))
            .answer(204, &[], "")
            .answer(204, &[], "");
        assert_eq!(store(&dapr, "mine").unwrap().id, 3);
    }

    #[test]
    fn a_write_whose_outcome_cannot_be_read_may_have_stored() {
        let dapr = Scripted::new()
            .answer(200, &[("etag", "1")], &history_json(&["one"]))
            .answer(204, &[], "")
            .fail(SendFailure::TimedOut("ErrorCode::ConnectionReadTimeout".into()));
        for _ in 0..SETTLE_ROUNDS {
            dapr.refuse();
        }
        let Err(DeliveryError::MaybeStored { first, settling }) = store(&dapr, "m") else {
            panic!()
        };
        assert_eq!(first.status, StatusCode::GATEWAY_TIMEOUT);
        assert!(settling.contains("unreachable"), "{settling}");
    }

    #[test]
    fn a_409_is_a_conflict_too() {
        let dapr = Scripted::new()
            .answer(200, &[("etag", "1")], &history_json(&["one"]))
            .answer(204, &[], "")
            .answer(409, &[], "")
            .answer(204, &[], "")
            .answer(200, &[("etag", "2")], &history_json(&["one", "two"]))
            .answer(204, &[], "")
            .answer(204, &[], "");
        assert_eq!(store(&dapr, "three").unwrap().id, 3);
    }

    #[test]
    fn store_gives_up_after_bounded_conflicts() {
        let dapr = Scripted::new();
        for _ in 0..MAX_SAVE_ATTEMPTS {
            dapr.answer(200, &[("etag", "1")], &history_json(&["one"]))
                .answer(204, &[], "")
                .answer(409, &[], "")
                .answer(204, &[], "");
        }
        assert_eq!(
            store(&dapr, "m").unwrap_err(),
            DeliveryError::Contended {
                user_id: "ann".into()
            }
        );
        assert_eq!(dapr.sent.borrow().len(), 4 * MAX_SAVE_ATTEMPTS as usize);
    }

    #[test]
    fn stored_value_that_is_not_a_history_is_502() {
        let dapr = Scripted::new().answer(200, &[], r#"{"message":"legacy"}"#);
        let client = DaprClient::new(dapr, &config());
        let err = Messages {
            dapr: &client,
            config: &config(),
        }
        .history("ann")
        .unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_GATEWAY);
    }
}
