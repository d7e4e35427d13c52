//! The claim of an event: which delivery acts on it. Dapr delivers at least once, to any
//! replica, so each stored message's event is claimed under a key of its own, which only one
//! delivery can create.
//!
//! The action (the `Received event` line) and the record that it was done cannot be one
//! atomic step. So a claim records which delivery holds it and since when, and is marked
//! done only after the action: a delivery that finds a done claim ignores the event; one
//! that finds a claim held past `CLAIM_LEASE_MS` by a delivery that never completed (its
//! host or sidecar died) takes it over and acts again, naming the deliveries it replaces.
//! The action is thus at least once; twice only when a crash falls between the line and
//! the done mark, and then the second line names the first (docs/delivery.md).

use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::subscribe::not_yet;
use super::{now_ms, DeliveryError, MessageEvent, Verdict, RECORD_TTL_SECONDS};
use crate::dapr::{Precondition, SaveOutcome};
use crate::error::ApiError;
use crate::ids::random_id;
use crate::messages::Messages;
use crate::transport::Transport;

/// How long a delivery's claim keeps other deliveries of the same event away while it has
/// not completed. A live delivery completes within moments of its claim (one line, one
/// state write); Dapr retries a failed delivery within seconds (scripts/dapr/resiliency.yaml),
/// so a claim left by a delivery whose host or sidecar died is taken over within those retries.
pub const CLAIM_LEASE_MS: u64 = 2_000;

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

impl<T: Transport> Messages<'_, T> {
    /// Claims the event for a new delivery with a first-write create of its key; a claim
    /// left by a delivery that never completed is taken over (`CLAIM_LEASE_MS`). A claim held
    /// by a delivery that may still be at work is `NotYet`.
    pub(super) fn claim(&self, event: &MessageEvent) -> Result<Verdict, DeliveryError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dapr::DaprClient;
    use crate::delivery::fixtures::{config, event};
    use crate::transport::scripted::Scripted;
    use serde_json::json;

    fn claim_for(dapr: &std::rc::Rc<Scripted>, event: &MessageEvent) -> Result<Verdict, DeliveryError> {
        let client = DaprClient::new(dapr.clone(), &config());
        Messages {
            dapr: &client,
            config: &config(),
        }
        .claim(event)
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
        let dapr = Scripted::new().answer(204, &[], "");
        let Verdict::Act { delivery, replaces } = claim_for(&dapr, &event(2, "two", "w2")).unwrap() else {
            panic!()
        };
        assert!(replaces.is_empty());
        assert_eq!(
            dapr.calls()[0],
            "POST http://localhost:3500/v1.0/state/statestore"
        );
        let claim = &dapr.json_sent(0)[0];
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
    fn a_done_claim_is_a_duplicate() {
        let dapr = Scripted::new()
            .answer(500, &[], EXISTS)
            .answer(200, &[("etag", "1")], &claim("d1", 1, true))
            .answer(200, &[("etag", "1")], &claim("d1", 1, true));
        assert_eq!(
            claim_for(&dapr, &event(1, "one", "w1")).unwrap(),
            Verdict::Duplicate {
                delivery: "d1".into()
            }
        );
        assert_eq!(
            dapr.calls()[1],
            "GET http://localhost:3500/v1.0/state/statestore/handled%2Fw1?consistency=strong"
        );
    }

    #[test]
    fn a_claim_held_moments_ago_is_a_503_so_that_dapr_delivers_again() {
        let dapr =
            Scripted::new()
                .answer(409, &[], "")
                .answer(200, &[("etag", "1")], &claim("d1", now_ms(), false));
        let Err(DeliveryError::NotYet(why)) = claim_for(&dapr, &event(1, "one", "w1")) else {
            panic!()
        };
        assert!(why.contains("delivery d1 has held its claim"), "{why}");
    }

    /// A claim held by d1 (after d0) past the lease, never done.
    fn held_past_the_lease() -> std::rc::Rc<Scripted> {
        Scripted::new().answer(409, &[], "").answer(
            200,
            &[("etag", "7")],
            &claim("d1", now_ms() - CLAIM_LEASE_MS - 1, false),
        )
    }

    #[test]
    fn a_claim_left_by_a_delivery_that_never_completed_is_taken_over() {
        let dapr = held_past_the_lease().answer(204, &[], "");
        let Verdict::Act { delivery, replaces } = claim_for(&dapr, &event(1, "one", "w1")).unwrap() else {
            panic!()
        };
        assert_eq!(
            replaces,
            ["d0", "d1"],
            "every delivery that held it and never completed"
        );
        let takeover = &dapr.json_sent(2)[0];
        assert_eq!(
            (takeover["etag"].clone(), takeover["value"]["delivery"].clone()),
            (json!("7"), json!(delivery))
        );
    }

    #[test]
    fn a_takeover_that_loses_to_another_is_a_503() {
        let dapr = held_past_the_lease().answer(409, &[], "");
        assert!(matches!(
            claim_for(&dapr, &event(1, "one", "w1")),
            Err(DeliveryError::NotYet(_))
        ));
    }

    #[test]
    fn a_claim_whose_answer_was_lost_is_read_back_and_acted_on_if_it_landed() {
        use crate::transport::SendFailure;
        let dapr = Scripted::new().fail(SendFailure::Broken("reset".into()));
        // The read-back answers with the claim that was sent: it landed.
        dapr.answer_last_saved("1");
        assert!(matches!(
            claim_for(&dapr, &event(1, "one", "w1")).unwrap(),
            Verdict::Act { .. }
        ));
        let lost = Scripted::new().fail(SendFailure::Broken("reset".into())).refuse();
        assert!(matches!(
            claim_for(&lost, &event(1, "one", "w1")),
            Err(DeliveryError::Dapr(e)) if e.status == StatusCode::SERVICE_UNAVAILABLE
        ));
    }

    #[test]
    fn a_failed_claim_that_does_not_exist_is_an_error_so_dapr_retries() {
        let dapr = Scripted::new()
            .answer(
                500,
                &[],
                r#"{"errorCode":"ERR_STATE_SAVE","message":"connection refused"}"#,
            )
            .answer(204, &[], "");
        let Err(DeliveryError::Dapr(err)) = claim_for(&dapr, &event(1, "one", "w1")) else {
            panic!()
        };
        assert_eq!(err.dapr_error_code.as_deref(), Some("ERR_STATE_SAVE"));
    }
}
