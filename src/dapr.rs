//! The Dapr sidecar's HTTP API, one function per call, each showing its method and URL
//! (like dapr/quickstarts). Requests and responses are plain `http` types sent through a
//! `Transport` (src/transport.rs).

use http::{Method, Request, Response, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Serialize;
use serde_json::json;

use crate::config::Config;
use crate::error::ApiError;
use crate::trace::TraceContext;
use crate::transport::{SendFailure, TimeLimits, Transport};

/// A value read from the state store, with the ETag that a conditional write must present.
#[derive(Debug, PartialEq)]
pub struct StateEntry {
    pub value: serde_json::Value,
    pub etag: Option<String>,
}

#[derive(Debug, PartialEq)]
pub enum SaveOutcome {
    Saved,
    /// Someone else wrote the key since we read it (Dapr's 409 on an ETag mismatch), or
    /// created it first.
    Conflict,
    /// The write may or may not have run: the answer was lost (a time limit, a connection
    /// that broke), or was an error that a store also gives after running it. Only
    /// `save_state_transaction` and `create_state` answer this; the caller reads the key to know.
    Unknown(ApiError),
}

/// What must hold for a `save_state` to write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Precondition<'a> {
    /// The key does not exist yet.
    Missing,
    /// The key still has this ETag.
    ETag(&'a str),
}

impl<'a> Precondition<'a> {
    /// The precondition of a write after a read that found the key with `etag`, or no key.
    pub fn as_read(etag: Option<&'a str>) -> Self {
        etag.map_or(Precondition::Missing, Precondition::ETag)
    }
}

pub struct DaprClient<T> {
    transport: T,
    base_url: String,
    api_token: Option<String>,
    time_limits: TimeLimits,
    /// The incoming request's W3C trace context, sent on with every call.
    trace: Option<TraceContext>,
}

impl<T: Transport> DaprClient<T> {
    pub fn new(transport: T, config: &Config) -> Self {
        DaprClient {
            transport,
            base_url: config.dapr_url.clone(),
            api_token: config.dapr_api_token.clone(),
            time_limits: config.time_limits,
            trace: None,
        }
    }

    /// Sends `trace` (the incoming request's trace context) with every call, so that Dapr
    /// links its spans for them into the caller's trace.
    pub fn with_trace(self, trace: Option<TraceContext>) -> Self {
        DaprClient { trace, ..self }
    }

    /// `GET /v1.0/state/{store}/{key}`: 200 with the value and an ETag, or 204 when the key is missing.
    pub fn get_state(&self, store: &str, key: &str) -> Result<Option<StateEntry>, ApiError> {
        let url = format!(
            "{}/v1.0/state/{}/{}?consistency=strong",
            self.base_url,
            store,
            encode_path_segment(key)
        );
        let response = self.call(Method::GET, &url, None)?;
        match response.status() {
            StatusCode::NO_CONTENT => Ok(None),
            StatusCode::OK => {
                let value = serde_json::from_slice(response.body()).map_err(|e| {
                    bad_gateway(format!(
                        "state store {store} returned a value for key {key:?} that is not JSON: {e}"
                    ))
                })?;
                let etag = response
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                Ok(Some(StateEntry { value, etag }))
            }
            _ => Err(dapr_error(
                &response,
                &format!("reading key {key:?} from state store {store}"),
            )),
        }
    }

    /// `POST /v1.0/state/{store}`: writes `value` under `key` if `precondition` holds
    /// (`concurrency: first-write`, with the ETag or without one for a create), else
    /// `Conflict`. Always conditional: on state.redis a key once written with first-write
    /// refuses every later write without an ETag, even `last-write` (measured, daprd 1.18.1).
    /// Stores refuse differently (Redis: 500 ERR_STATE_SAVE, not 409), so a refused conditional
    /// write is read back: a key that no longer meets the precondition is a conflict, anything
    /// else the store's error.
    /// With `ttl_seconds`, the store deletes the key after that long (`ttlInSeconds`).
    pub fn save_state(
        &self,
        store: &str,
        key: &str,
        value: &impl Serialize,
        precondition: Precondition,
        ttl_seconds: Option<u32>,
    ) -> Result<SaveOutcome, ApiError> {
        let url = format!("{}/v1.0/state/{}", self.base_url, store);
        let item = save_item(key, value, precondition, ttl_seconds);
        let response = self.call(Method::POST, &url, Some(json!([item])))?;
        let refused = || -> Result<bool, ApiError> {
            Ok(match precondition {
                Precondition::Missing => self.get_state(store, key)?.is_some(),
                Precondition::ETag(etag) => {
                    self.get_state(store, key)?
                        .and_then(|entry| entry.etag)
                        .as_deref()
                        != Some(etag)
                }
            })
        };
        match response.status() {
            s if s.is_success() => Ok(SaveOutcome::Saved),
            StatusCode::CONFLICT => Ok(SaveOutcome::Conflict),
            _ if refused()? => Ok(SaveOutcome::Conflict),
            _ => Err(dapr_error(
                &response,
                &format!("saving key {key:?} in state store {store}"),
            )),
        }
    }

    /// `POST /v1.0/state/{store}`: writes `value` under `key` if the key does not exist yet,
    /// for a caller that settles a doubt by reading the key, as with `save_state_transaction`.
    /// `Unknown` for a lost answer and for the store's error, since state.redis answers both a
    /// refusal (the key exists: maybe this very write, landed before Redis went away) and a
    /// failure (maybe a write still queued in a paused Redis) with ERR_STATE_SAVE.
    pub fn create_state(
        &self,
        store: &str,
        key: &str,
        value: &impl Serialize,
    ) -> Result<SaveOutcome, ApiError> {
        let url = format!("{}/v1.0/state/{}", self.base_url, store);
        let item = save_item(key, value, Precondition::Missing, None);
        let response = match self.send(Method::POST, &url, Some(json!([item])))? {
            Ok(response) => response,
            Err(failure) if failure.may_have_arrived() => {
                return Ok(SaveOutcome::Unknown(self.no_answer(failure)))
            }
            Err(failure) => return Err(self.no_answer(failure)),
        };
        if response.status().is_success() {
            return Ok(SaveOutcome::Saved);
        }
        let error = dapr_error(&response, &format!("creating key {key:?} in state store {store}"));
        if error.dapr_error_code.as_deref() == Some("ERR_STATE_SAVE")
            || response.status() == StatusCode::CONFLICT
        {
            Ok(SaveOutcome::Unknown(error))
        } else {
            Err(error)
        }
    }

    /// `POST /v1.0/state/{store}/transaction` with one operation: writes `value` under `key`
    /// if the key still has `etag`. A transaction rather than a plain save because its
    /// failures say whether it ran: state.redis answers ERR_STATE_TRANSACTION with Redis's
    /// own `ERR …` for a stale ETag (nothing written), and Dapr's words for a connection that
    /// broke or timed out after the write was sent (maybe written). `Unknown` when it may
    /// have run all the same: no answer, a broken connection, or ERR_STATE_TRANSACTION; the
    /// caller reads the key to know.
    pub fn save_state_transaction(
        &self,
        store: &str,
        key: &str,
        value: &impl Serialize,
        etag: &str,
    ) -> Result<SaveOutcome, ApiError> {
        let operations = json!({ "operations": [
            { "operation": "upsert", "request": {
                "key": key,
                "value": value,
                "etag": etag,
                "options": { "concurrency": "first-write", "consistency": "strong" },
            }},
        ]});
        let url = format!("{}/v1.0/state/{}/transaction", self.base_url, store);
        let response = match self.send(Method::POST, &url, Some(operations))? {
            Ok(response) => response,
            Err(failure) if failure.may_have_arrived() => {
                return Ok(SaveOutcome::Unknown(self.no_answer(failure)))
            }
            Err(failure) => return Err(self.no_answer(failure)),
        };
        match response.status() {
            s if s.is_success() => Ok(SaveOutcome::Saved),
            StatusCode::CONFLICT => Ok(SaveOutcome::Conflict),
            _ => {
                let error = dapr_error(
                    &response,
                    &format!("saving key {key:?} in a transaction in state store {store}"),
                );
                match error.dapr_error_code.as_deref() {
                    Some("ERR_STATE_TRANSACTION") => Ok(SaveOutcome::Unknown(error)),
                    _ => Err(error),
                }
            }
        }
    }

    /// `POST /v1.0/publish/{pubsub}/{topic}`: publishes `event` as JSON, which Dapr wraps in
    /// a CloudEvent carrying the caller's trace context. 204 once the broker has it.
    pub fn publish(&self, pubsub: &str, topic: &str, event: &impl Serialize) -> Result<(), ApiError> {
        let url = format!(
            "{}/v1.0/publish/{}/{}",
            self.base_url,
            pubsub,
            encode_path_segment(topic)
        );
        let event = serde_json::to_value(event).unwrap_or_default();
        let response = self.call(Method::POST, &url, Some(event))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(dapr_error(
                &response,
                &format!("publishing to topic {topic} of pub/sub {pubsub}"),
            ))
        }
    }

    /// `GET /v1.0/healthz/outbound`: 204 once the sidecar's components are ready for the app's calls.
    pub fn outbound_health(&self) -> Result<(), ApiError> {
        let url = format!("{}/v1.0/healthz/outbound", self.base_url);
        // Not ready, whatever the reason: readiness answers 503 and keeps the reason.
        let response = self.call(Method::GET, &url, None).map_err(|e| ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            ..e
        })?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "Dapr sidecar at {} is not ready (healthz/outbound answered {})",
                    self.base_url,
                    response.status().as_u16()
                ),
            ))
        }
    }

    fn call(
        &self,
        method: Method,
        url: &str,
        json_body: Option<serde_json::Value>,
    ) -> Result<Response<Vec<u8>>, ApiError> {
        self.send(method, url, json_body)?
            .map_err(|failure| self.no_answer(failure))
    }

    /// The sidecar's answer, or why none came (`Err` inside); the outer `Err` is a request
    /// that could not be built.
    fn send(
        &self,
        method: Method,
        url: &str,
        json_body: Option<serde_json::Value>,
    ) -> Result<Result<Response<Vec<u8>>, SendFailure>, ApiError> {
        let mut request = Request::builder().method(method).uri(url);
        if let Some(token) = &self.api_token {
            request = request.header("dapr-api-token", token);
        }
        for (name, value) in self.trace.iter().flat_map(TraceContext::headers) {
            request = request.header(name, value);
        }
        let body = match json_body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                serde_json::to_vec(&body).unwrap_or_default()
            }
            None => Vec::new(),
        };
        let request = request.body(body).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot build the request to {url}: {e}"),
            )
        })?;
        Ok(self.transport.send(request, &self.time_limits))
    }

    /// No HTTP answer: 503 for an outage (worth a retry); 504 when a time limit ran out; 500
    /// when the host refused the call, since that is the deployment's configuration and no
    /// retry will change it.
    fn no_answer(&self, failure: SendFailure) -> ApiError {
        let base = &self.base_url;
        match failure {
            SendFailure::Denied => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "the wasm host denied the call to the Dapr sidecar at {base}: it is not in the \
                     component's allowed_outbound_hosts (spin.toml). spin.toml allows the Spin variables \
                     dapr_http_host (default localhost) and 127.0.0.1, on dapr_http_port (default 3500; \
                     SPIN_VARIABLE_DAPR_HTTP_PORT or the SpinApp's variables move them): \
                     a dapr_http_endpoint elsewhere must be added to allowed_outbound_hosts"
                ),
            ),
            SendFailure::TimedOut(why) => {
                let TimeLimits {
                    connect,
                    first_byte,
                    between_bytes,
                } = self.time_limits;
                ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "Dapr sidecar at {base} did not answer in time ({why}; limits: connect {connect:?}, \
                         first byte {first_byte:?}, between bytes {between_bytes:?})"
                    ),
                )
            }
            SendFailure::Unreachable(why) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("Dapr sidecar at {base} is unreachable: {why}"),
            ),
            SendFailure::Broken(why) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the connection to the Dapr sidecar at {base} broke before its answer: {why}"),
            ),
        }
    }
}

/// One item of a first-write save (`save_state`, `create_state`): conditional on the ETag, or
/// on the key not existing yet when it has none.
fn save_item(
    key: &str,
    value: &impl Serialize,
    precondition: Precondition,
    ttl_seconds: Option<u32>,
) -> serde_json::Value {
    let mut item = json!({
        "key": key,
        "value": value,
        "options": { "concurrency": "first-write", "consistency": "strong" },
    });
    if let Precondition::ETag(etag) = precondition {
        item["etag"] = json!(etag);
    }
    if let Some(ttl) = ttl_seconds {
        item["metadata"] = json!({ "ttlInSeconds": ttl.to_string() });
    }
    item
}

/// Dapr answered with an error: 502, passing on Dapr's `errorCode` and `message`.
fn dapr_error(response: &Response<Vec<u8>>, doing: &str) -> ApiError {
    let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap_or_default();
    let code = body["errorCode"].as_str().map(str::to_string);
    let detail = body["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(response.body()).into_owned());
    ApiError {
        dapr_error_code: code,
        ..bad_gateway(format!(
            "Dapr failed {doing}: {} {}",
            response.status().as_u16(),
            detail.trim()
        ))
    }
}

fn bad_gateway(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, message)
}

/// Everything but RFC 3986's unreserved characters is escaped, so a key is one path segment.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub fn encode_path_segment(segment: &str) -> String {
    utf8_percent_encode(segment, PATH_SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::scripted::Scripted;

    fn client(transport: std::rc::Rc<Scripted>, token: Option<&str>) -> DaprClient<std::rc::Rc<Scripted>> {
        let mut config = Config::from_lookup(|_| None).unwrap();
        config.dapr_api_token = token.map(str::to_string);
        DaprClient::new(transport, &config)
    }

    #[test]
    fn get_state_reads_value_and_etag() {
        let dapr = Scripted::new().answer(200, &[("etag", "7")], r#"{"next_id":1}"#);
        let entry = client(dapr.clone(), None)
            .get_state("statestore", "ann")
            .unwrap()
            .unwrap();
        assert_eq!(
            entry,
            StateEntry {
                value: json!({"next_id": 1}),
                etag: Some("7".into())
            }
        );
        assert_eq!(
            dapr.calls(),
            ["GET http://localhost:3500/v1.0/state/statestore/ann?consistency=strong"]
        );
    }

    #[test]
    fn get_state_204_is_a_missing_key() {
        let dapr = Scripted::new().answer(204, &[], "");
        assert_eq!(client(dapr, None).get_state("statestore", "ann").unwrap(), None);
    }

    #[test]
    fn keys_are_one_encoded_path_segment() {
        let dapr = Scripted::new().answer(204, &[], "");
        client(dapr.clone(), None)
            .get_state("statestore", "a b?c#d%")
            .unwrap();
        assert!(dapr.calls()[0].ends_with("/statestore/a%20b%3Fc%23d%25?consistency=strong"));
    }

    #[test]
    fn create_sends_first_write_without_etag() {
        let dapr = Scripted::new().answer(204, &[], "").answer(204, &[], "");
        let client = client(dapr.clone(), None);
        let value = json!({"a": 1});
        let outcomes = [
            client.save_state("statestore", "ann", &value, Precondition::Missing, None),
            client.create_state("statestore", "ann", &value),
        ];
        for (n, outcome) in outcomes.into_iter().enumerate() {
            assert_eq!(outcome.unwrap(), SaveOutcome::Saved);
            assert_eq!(
                dapr.calls()[n],
                "POST http://localhost:3500/v1.0/state/statestore"
            );
            assert_eq!(
                dapr.json_sent(n),
                json!([{"key": "ann", "value": {"a": 1},
                        "options": {"concurrency": "first-write", "consistency": "strong"}}])
            );
            assert_eq!(
                dapr.sent.borrow()[n].headers()["content-type"],
                "application/json"
            );
        }
    }

    #[test]
    fn create_with_ttl_asks_the_store_to_expire_the_key() {
        let dapr = Scripted::new().answer(204, &[], "");
        client(dapr.clone(), None)
            .save_state("statestore", "k", &json!(1), Precondition::Missing, Some(60))
            .unwrap();
        assert_eq!(dapr.json_sent(0)[0]["metadata"], json!({"ttlInSeconds": "60"}));
    }

    #[test]
    fn a_refused_create_of_a_key_that_exists_is_a_conflict() {
        let dapr = Scripted::new()
            .answer(500, &[], r#"{"errorCode":"ERR_STATE_SAVE"}"#)
            .answer(200, &[("etag", "1")], "{}");
        let outcome = client(dapr.clone(), None).save_state(
            "statestore",
            "ann",
            &json!(1),
            Precondition::Missing,
            None,
        );
        assert_eq!(outcome.unwrap(), SaveOutcome::Conflict);
        assert_eq!(
            dapr.calls()[1],
            "GET http://localhost:3500/v1.0/state/statestore/ann?consistency=strong"
        );
    }

    #[test]
    fn a_refused_create_of_a_key_still_missing_is_the_stores_error() {
        let dapr = Scripted::new()
            .answer(500, &[], r#"{"errorCode":"ERR_STATE_SAVE"}"#)
            .answer(204, &[], "");
        let err = client(dapr, None)
            .save_state("statestore", "ann", &json!(1), Precondition::Missing, None)
            .unwrap_err();
        assert_eq!(
            (err.status, err.dapr_error_code.as_deref()),
            (StatusCode::BAD_GATEWAY, Some("ERR_STATE_SAVE"))
        );
    }

    #[test]
    fn a_create_refused_or_unanswered_is_unknown_unless_it_never_reached_the_sidecar() {
        let dapr = Scripted::new()
            .answer(
                500,
                &[],
                r#"{"errorCode":"ERR_STATE_SAVE","message":"failed to set key"}"#,
            )
            .answer(409, &[], "")
            .fail(SendFailure::Broken("the connection closed".into()))
            .refuse()
            .answer(
                400,
                &[],
                r#"{"errorCode":"ERR_STATE_STORE_NOT_FOUND","message":"state store nope is not found"}"#,
            );
        let client = client(dapr.clone(), None);
        for expected in [
            StatusCode::BAD_GATEWAY,
            StatusCode::BAD_GATEWAY,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            match client.create_state("statestore", "ann", &json!(1)).unwrap() {
                SaveOutcome::Unknown(why) => assert_eq!(why.status, expected, "{why}"),
                other => panic!("{other:?}"),
            }
        }
        for expected in [StatusCode::SERVICE_UNAVAILABLE, StatusCode::BAD_GATEWAY] {
            let err = client.create_state("statestore", "ann", &json!(1)).unwrap_err();
            assert_eq!(err.status, expected, "{err}");
        }
        assert_eq!(dapr.calls().len(), 5, "nothing read back: {:?}", dapr.calls());
    }

    #[test]
    fn a_transaction_is_one_upsert_under_the_etag() {
        let dapr = Scripted::new().answer(204, &[], "");
        let outcome =
            client(dapr.clone(), None).save_state_transaction("statestore", "ann", &json!({"a": 1}), "3");
        assert_eq!(outcome.unwrap(), SaveOutcome::Saved);
        assert_eq!(
            dapr.calls(),
            ["POST http://localhost:3500/v1.0/state/statestore/transaction"]
        );
        assert_eq!(
            dapr.json_sent(0),
            json!({"operations": [
                {"operation": "upsert", "request": {"key": "ann", "value": {"a": 1}, "etag": "3",
                    "options": {"concurrency": "first-write", "consistency": "strong"}}},
            ]})
        );
    }

    #[test]
    fn publish_posts_the_event_to_the_topic() {
        let dapr = Scripted::new().answer(204, &[], "");
        client(dapr.clone(), None)
            .publish("pubsub", "message-updated", &json!({"id": 1}))
            .unwrap();
        assert_eq!(
            dapr.calls(),
            ["POST http://localhost:3500/v1.0/publish/pubsub/message-updated"]
        );
        assert_eq!(dapr.json_sent(0), json!({"id": 1}));
    }

    #[test]
    fn a_refused_publish_is_502_with_dapr_error_code() {
        let dapr = Scripted::new().answer(
            404,
            &[],
            r#"{"errorCode":"ERR_PUBSUB_NOT_FOUND","message":"pubsub nope is not found"}"#,
        );
        let err = client(dapr, None)
            .publish("nope", "message-updated", &json!({}))
            .unwrap_err();
        assert_eq!(
            (err.status, err.dapr_error_code.as_deref()),
            (StatusCode::BAD_GATEWAY, Some("ERR_PUBSUB_NOT_FOUND"))
        );
        assert!(err.message.contains("pubsub nope is not found"), "{err}");
    }

    #[test]
    fn a_write_with_an_etag_sends_it_and_a_refused_one_whose_etag_changed_is_a_conflict() {
        let dapr = Scripted::new()
            .answer(500, &[], r#"{"errorCode":"ERR_STATE_SAVE"}"#)
            .answer(200, &[("etag", "4")], "{}");
        let outcome = client(dapr.clone(), None).save_state(
            "statestore",
            "ann",
            &json!(1),
            Precondition::ETag("3"),
            None,
        );
        assert_eq!(outcome.unwrap(), SaveOutcome::Conflict);
        assert_eq!(dapr.json_sent(0)[0]["etag"], "3");
        assert_eq!(dapr.json_sent(0)[0]["options"]["concurrency"], "first-write");
    }

    #[test]
    fn a_refused_write_whose_etag_is_unchanged_is_the_stores_error() {
        let dapr = Scripted::new()
            .answer(500, &[], r#"{"errorCode":"ERR_STATE_SAVE"}"#)
            .answer(200, &[("etag", "3")], "{}");
        let err = client(dapr, None)
            .save_state("statestore", "ann", &json!(1), Precondition::ETag("3"), None)
            .unwrap_err();
        assert_eq!(err.dapr_error_code.as_deref(), Some("ERR_STATE_SAVE"));
    }

    #[test]
    fn a_transaction_that_may_have_run_is_unknown_not_an_error() {
        let stale_or_slow =
            r#"{"errorCode":"ERR_STATE_TRANSACTION","message":"ERR user_script:14: failed to set key"}"#;
        let dapr = Scripted::new()
            .answer(500, &[], stale_or_slow)
            .fail(SendFailure::TimedOut("ErrorCode::ConnectionReadTimeout".into()))
            .fail(SendFailure::Broken("the connection closed".into()));
        let client = client(dapr, None);
        for expected in [
            StatusCode::BAD_GATEWAY,
            StatusCode::GATEWAY_TIMEOUT,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            match client
                .save_state_transaction("statestore", "ann", &json!(1), "3")
                .unwrap()
            {
                SaveOutcome::Unknown(why) => assert_eq!(why.status, expected, "{why}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_transaction_that_never_reached_the_sidecar_is_an_error() {
        let err = client(Scripted::new().refuse(), None)
            .save_state_transaction("statestore", "ann", &json!(1), "3")
            .unwrap_err();
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn a_transaction_refused_for_another_reason_is_an_error() {
        let dapr = Scripted::new().answer(
            400,
            &[],
            r#"{"errorCode":"ERR_STATE_STORE_NOT_FOUND","message":"state store nope is not found"}"#,
        );
        let err = client(dapr, None)
            .save_state_transaction("nope", "ann", &json!(1), "3")
            .unwrap_err();
        assert_eq!(
            (err.status, err.dapr_error_code.as_deref()),
            (StatusCode::BAD_GATEWAY, Some("ERR_STATE_STORE_NOT_FOUND"))
        );
    }

    #[test]
    fn create_409_is_a_conflict_not_an_error() {
        let dapr = Scripted::new().answer(409, &[], r#"{"errorCode":"ERR_STATE_SAVE"}"#);
        let outcome =
            client(dapr, None).save_state("statestore", "ann", &json!(1), Precondition::Missing, None);
        assert_eq!(outcome.unwrap(), SaveOutcome::Conflict);
    }

    #[test]
    fn dapr_errors_are_502_with_dapr_error_code() {
        let dapr = Scripted::new().answer(
            400,
            &[],
            r#"{"errorCode":"ERR_STATE_STORE_NOT_FOUND","message":"state store nope is not found"}"#,
        );
        let err = client(dapr, None).get_state("nope", "ann").unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_GATEWAY);
        assert_eq!(err.dapr_error_code.as_deref(), Some("ERR_STATE_STORE_NOT_FOUND"));
        assert!(err.message.contains("state store nope is not found"), "{err}");
        assert_eq!(err.body()["dapr_error_code"], "ERR_STATE_STORE_NOT_FOUND");
    }

    #[test]
    fn unreachable_sidecar_is_503() {
        let err = client(Scripted::new().refuse(), None)
            .get_state("statestore", "ann")
            .unwrap_err();
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(err.message.contains("unreachable"), "{err}");
    }

    #[test]
    fn a_call_the_host_denied_is_500_naming_the_fix() {
        let dapr = Scripted::new().fail(SendFailure::Denied);
        let err = client(dapr, None).get_state("statestore", "ann").unwrap_err();
        assert_eq!(err.status, StatusCode::INTERNAL_SERVER_ERROR);
        for says in [
            "denied",
            "http://localhost:3500",
            "allowed_outbound_hosts",
            "SPIN_VARIABLE_DAPR_HTTP_PORT",
            "dapr_http_endpoint",
        ] {
            assert!(err.message.contains(says), "{err} should say {says}");
        }
        assert!(!err.message.contains("unreachable"), "{err}");
    }

    #[test]
    fn a_sidecar_that_does_not_answer_in_time_is_504() {
        let dapr = Scripted::new().fail(SendFailure::TimedOut("ErrorCode::ConnectionReadTimeout".into()));
        let err = client(dapr, None).get_state("statestore", "ann").unwrap_err();
        assert_eq!(err.status, StatusCode::GATEWAY_TIMEOUT);
        assert!(
            err.message.contains(
                "did not answer in time (ErrorCode::ConnectionReadTimeout; limits: connect 2s, first byte 5s"
            ),
            "{err}"
        );
    }

    #[test]
    fn every_call_carries_the_configured_time_limits() {
        let dapr = Scripted::new().answer(204, &[], "").answer(204, &[], "");
        let config =
            Config::from_lookup(|name| (name == "dapr_first_byte_timeout_ms").then(|| "750".to_string()))
                .unwrap();
        let client = DaprClient::new(dapr.clone(), &config);
        client.get_state("statestore", "ann").unwrap();
        client.outbound_health().unwrap();
        assert_eq!(*dapr.limits.borrow(), [config.time_limits; 2]);
        assert_eq!(
            config.time_limits.first_byte,
            std::time::Duration::from_millis(750)
        );
    }

    #[test]
    fn readiness_is_503_whatever_kept_the_sidecar_from_answering() {
        for failure in [
            SendFailure::Denied,
            SendFailure::TimedOut("ErrorCode::ConnectionReadTimeout".into()),
        ] {
            let err = client(Scripted::new().fail(failure.clone()), None)
                .outbound_health()
                .unwrap_err();
            assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE, "{failure:?}");
        }
    }

    #[test]
    fn state_value_that_is_not_json_is_502() {
        let dapr = Scripted::new().answer(200, &[], "not json");
        assert_eq!(
            client(dapr, None)
                .get_state("statestore", "ann")
                .unwrap_err()
                .status,
            StatusCode::BAD_GATEWAY
        );
    }

    #[test]
    fn api_token_goes_on_every_call() {
        let dapr = Scripted::new()
            .answer(204, &[], "")
            .answer(204, &[], "")
            .answer(204, &[], "");
        let client = client(dapr.clone(), Some("s3cret"));
        client.get_state("statestore", "ann").unwrap();
        client.publish("pubsub", "message-updated", &json!({})).unwrap();
        client.outbound_health().unwrap();
        assert!(dapr
            .sent
            .borrow()
            .iter()
            .all(|r| r.headers()["dapr-api-token"] == "s3cret"));
    }

    #[test]
    fn the_trace_context_goes_on_every_call() {
        let dapr = Scripted::new()
            .answer(204, &[], "")
            .answer(204, &[], "")
            .answer(204, &[], "");
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let trace = TraceContext::from_headers(|name| match name {
            "traceparent" => Some(parent),
            "tracestate" => Some("congo=t61rcWkgMzE"),
            _ => None,
        });
        let client = client(dapr.clone(), None).with_trace(trace);
        client.get_state("statestore", "ann").unwrap();
        client
            .save_state("statestore", "ann", &json!(1), Precondition::Missing, None)
            .unwrap();
        client.publish("pubsub", "message-updated", &json!({})).unwrap();
        for request in dapr.sent.borrow().iter() {
            assert_eq!(request.headers()["traceparent"], parent, "{}", request.uri());
            assert_eq!(
                request.headers()["tracestate"],
                "congo=t61rcWkgMzE",
                "{}",
                request.uri()
            );
        }
    }

    #[test]
    fn outbound_health_not_ready_is_503() {
        let err = client(Scripted::new().answer(500, &[], ""), None)
            .outbound_health()
            .unwrap_err();
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
