//! Delivery: every stored message's event reaches the subscriber, which acts once per stored
//! message, on any Dapr state store and pub/sub. Publish first, then store, with the history
//! as the marker:
//!
//! - a POST (`publish.rs`) reads the user's history with its ETag, publishes the event
//!   (naming its write id and that ETag), then writes the history under the ETag, or creates
//!   it if there was none; a write that lands therefore always has its event out. A lost race
//!   leaves an event whose write never lands: a phantom;
//! - the subscriber (`subscribe.rs`) acts on an event only once the history holds its write
//!   id. While the history is still as the event's POST read it, the write may yet land: it
//!   waits a moment, then asks Dapr to deliver again, and past `PENDING_GRACE` writes the
//!   history itself, so that the write never lands and the event is a phantom for good;
//! - a claim per write (`claims.rs`) keeps redeliveries and replicas to one action.
//!
//! Dapr's outbox is not used: on state.redis it loses events, spins, and publishes phantoms of
//! its own (docs/delivery.md). What the HTTP layer must tell apart is `DeliveryError`.

mod claims;
mod publish;
mod subscribe;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::messages::StoredMessage;

pub use claims::CLAIM_LEASE_MS;
pub use publish::MAX_SAVE_ATTEMPTS;
pub use subscribe::{parse_cloud_event, Verdict};

/// How long after its publish an event's write may still land: the POST writes within
/// moments of publishing, unless its sidecar or store is failing. After that the subscriber
/// fences the write off. Dapr's retries of the event route (about 45 s of them:
/// scripts/dapr/resiliency.yaml) reach well past it.
pub const PENDING_GRACE: Duration = Duration::from_secs(5);

/// How long the subscriber's records of a write (its claim, the mark of a write that stored
/// nothing) are kept: far longer than any redelivery, which comes within seconds (the
/// resiliency policy) or minutes (pubsub.redis `processingTimeout`).
pub const RECORD_TTL_SECONDS: u32 = 24 * 3600;

/// The event published to the topic for each message a POST stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageEvent {
    pub user_id: String,
    pub message: String,
    pub id: u64,
    pub created_at: String,
    /// The write that stores the message (`History::write_ids`).
    pub write_id: String,
    /// The ETag of the history that write is conditional on; none when the write creates the
    /// history. Required all the same: an event without it is not one of ours.
    #[serde(deserialize_with = "Option::deserialize")]
    pub etag: Option<String>,
    /// When the POST published it, in ms since the Unix epoch (its host's clock).
    pub published_ms: u64,
}

impl MessageEvent {
    pub fn of(user_id: &str, stored: &StoredMessage, write_id: String, etag: Option<String>) -> MessageEvent {
        MessageEvent {
            user_id: user_id.to_string(),
            message: stored.message.clone(),
            id: stored.id,
            created_at: stored.created_at.clone(),
            write_id,
            etag,
            published_ms: now_ms(),
        }
    }
}

/// Why a POST or a delivery did not complete; routes.rs maps each to its HTTP answer.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryError {
    /// A call to the sidecar failed, or it held something unreadable, before any write.
    Dapr(ApiError),
    /// The message's write did not land, and never will: nothing was stored.
    NotStored(ApiError),
    /// The write's answer was lost, and reading the history could not settle it: the
    /// message may have been stored.
    MaybeStored { first: ApiError, settling: String },
    /// Every attempt lost the race for the user's history to other writes.
    Contended { user_id: String },
    /// A delivered event cannot be decided yet: Dapr should deliver it again.
    NotYet(String),
}

impl From<ApiError> for DeliveryError {
    fn from(error: ApiError) -> Self {
        DeliveryError::Dapr(error)
    }
}

impl DeliveryError {
    /// Whether delivering the event again may go otherwise: the sidecar did not answer, or
    /// answered an error of its own store or broker. Not so for a value this service
    /// cannot read, which stays what it is.
    pub fn is_transient(&self) -> bool {
        match self {
            DeliveryError::Dapr(e) => e.dapr_error_code.is_some() || e.status.as_u16() >= 503,
            _ => true,
        }
    }
}

/// The key that marks a write that stored nothing, for the subscriber to tell its event (a
/// phantom) once the history has forgotten that message id. User ids cannot contain '/',
/// so no history has this key.
fn unstored_key(write_id: &str) -> String {
    format!("unstored/{write_id}")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the unit tests of publish.rs, subscribe.rs and claims.rs share.
#[cfg(test)]
mod fixtures {
    use super::{now_ms, MessageEvent};
    use crate::config::Config;

    pub fn config() -> Config {
        Config::from_lookup(|_| None).unwrap()
    }

    /// Ann's message `id`, by write `write_id`, conditional on the history's ETag "2", just published.
    pub fn event(id: u64, message: &str, write_id: &str) -> MessageEvent {
        MessageEvent {
            user_id: "ann".into(),
            message: message.into(),
            id,
            created_at: "t".into(),
            write_id: write_id.into(),
            etag: Some("2".into()),
            published_ms: now_ms(),
        }
    }
}
