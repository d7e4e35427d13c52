//! The Dapr sidecar's HTTP API, one function per call, each showing its method and URL
//! (like dapr/quickstarts). Requests and responses are plain `http` types behind the
//! `Transport` seam: the component sends them over wasi:http, unit tests script answers.

use http::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::json;

use crate::config::Config;
use crate::error::ApiError;

/// Sends one request to the sidecar. `Err` means no HTTP answer came back at all
/// (connection refused, reset, ...), which is different from Dapr answering an error.
pub trait Transport {
    fn send(&self, request: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, String>;
}

/// The real transport: a wasi:http outgoing request, as Spin and `wasmtime serve` provide.
#[derive(Clone, Copy)]
pub struct WasiHttp;

impl Transport for WasiHttp {
    fn send(&self, request: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, String> {
        let response: spin_sdk::http::Response =
            spin_sdk::http::run(spin_sdk::http::send(request)).map_err(|e| e.to_string())?;
        let mut reply = Response::builder().status(*response.status());
        for (name, value) in response.headers() {
            reply = reply.header(name, value.as_bytes());
        }
        reply.body(response.into_body()).map_err(|e| e.to_string())
    }
}

/// A value read from the state store, with the ETag that a conditional write must present.
#[derive(Debug, PartialEq)]
pub struct StateEntry {
    pub value: serde_json::Value,
    pub etag: Option<String>,
}

#[derive(Debug, PartialEq)]
pub enum SaveOutcome {
    Saved,
    /// Someone else wrote the key since we read it (Dapr's 409 on an ETag mismatch).
    Conflict,
}

pub struct DaprClient<T> {
    transport: T,
    base_url: String,
    api_token: Option<String>,
}

impl<T: Transport> DaprClient<T> {
    pub fn new(transport: T, config: &Config) -> Self {
        DaprClient { transport, base_url: config.dapr_url.clone(), api_token: config.dapr_api_token.clone() }
    }

    /// `GET /v1.0/state/{store}/{key}`: 200 with the value and an ETag, or 204 when the key is missing.
    pub fn get_state(&self, store: &str, key: &str) -> Result<Option<StateEntry>, ApiError> {
        let url = format!("{}/v1.0/state/{}/{}?consistency=strong", self.base_url, store, encode_path_segment(key));
        let response = self.call(Method::GET, &url, None)?;
        match response.status() {
            StatusCode::NO_CONTENT => Ok(None),
            StatusCode::OK => {
                let value = serde_json::from_slice(response.body()).map_err(|e| {
                    bad_gateway(format!("state store {store} returned a value for key {key:?} that is not JSON: {e}"))
                })?;
                let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_string);
                Ok(Some(StateEntry { value, etag }))
            }
            _ => Err(dapr_error(&response, &format!("reading key {key:?} from state store {store}"))),
        }
    }

    /// `POST /v1.0/state/{store}` with `concurrency: first-write`: the write lands only if the
    /// key still has `etag` (or, without one, does not exist yet), so no update is lost.
    /// With `ttl_seconds`, the store deletes the key after that long (`ttlInSeconds`).
    pub fn save_state_first_write(
        &self,
        store: &str,
        key: &str,
        value: &impl Serialize,
        etag: Option<&str>,
        ttl_seconds: Option<u32>,
    ) -> Result<SaveOutcome, ApiError> {
        let mut item = json!({
            "key": key,
            "value": value,
            "options": { "concurrency": "first-write", "consistency": "strong" },
        });
        if let Some(etag) = etag {
            item["etag"] = json!(etag);
        }
        if let Some(ttl) = ttl_seconds {
            item["metadata"] = json!({ "ttlInSeconds": ttl.to_string() });
        }
        let url = format!("{}/v1.0/state/{}", self.base_url, store);
        let response = self.call(Method::POST, &url, Some(json!([item])))?;
        match response.status() {
            s if s.is_success() => Ok(SaveOutcome::Saved),
            StatusCode::CONFLICT => Ok(SaveOutcome::Conflict),
            _ => Err(dapr_error(&response, &format!("saving key {key:?} to state store {store}"))),
        }
    }

    /// `POST /v1.0/state/{store}/transaction` on a store with Dapr's outbox: writes `value`
    /// under `key` if the key still has `etag`, and publishes `event` to the topic set in the
    /// store's `outboxPublishTopic`, through the outbox, only once the transaction has run.
    /// The `outbox.projection` operation is what is published instead of the stored value;
    /// without `contentType: application/json` Dapr would publish it as Go's text of a map.
    pub fn save_state_with_event(
        &self,
        store: &str,
        key: &str,
        value: &impl Serialize,
        etag: &str,
        event: &impl Serialize,
    ) -> Result<SaveOutcome, ApiError> {
        let operations = json!({ "operations": [
            { "operation": "upsert", "request": {
                "key": key,
                "value": value,
                "etag": etag,
                "options": { "concurrency": "first-write", "consistency": "strong" },
            }},
            { "operation": "upsert", "request": {
                "key": key,
                "value": event,
                "metadata": { "outbox.projection": "true", "contentType": "application/json" },
            }},
        ]});
        let url = format!("{}/v1.0/state/{}/transaction", self.base_url, store);
        let response = self.call(Method::POST, &url, Some(operations))?;
        match response.status() {
            s if s.is_success() => Ok(SaveOutcome::Saved),
            StatusCode::CONFLICT => Ok(SaveOutcome::Conflict),
            _ => Err(dapr_error(&response, &format!("saving key {key:?} with its event in state store {store}"))),
        }
    }

    /// `GET /v1.0/healthz/outbound`: 204 once the sidecar's components are ready for the app's calls.
    pub fn outbound_health(&self) -> Result<(), ApiError> {
        let url = format!("{}/v1.0/healthz/outbound", self.base_url);
        let response = self.call(Method::GET, &url, None)?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("Dapr sidecar at {} is not ready (healthz/outbound answered {})", self.base_url, response.status().as_u16()),
            ))
        }
    }

    fn call(&self, method: Method, url: &str, json_body: Option<serde_json::Value>) -> Result<Response<Vec<u8>>, ApiError> {
        let mut request = Request::builder().method(method).uri(url);
        if let Some(token) = &self.api_token {
            request = request.header("dapr-api-token", token);
        }
        let body = match json_body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                serde_json::to_vec(&body).unwrap_or_default()
            }
            None => Vec::new(),
        };
        let request = request
            .body(body)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot build the request to {url}: {e}")))?;
        self.transport.send(request).map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("Dapr sidecar at {} is unreachable: {e}", self.base_url),
            )
        })
    }
}

/// Dapr answered with an error: 502, passing on Dapr's `errorCode` and `message`.
fn dapr_error(response: &Response<Vec<u8>>, doing: &str) -> ApiError {
    let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap_or_default();
    let code = body["errorCode"].as_str().map(str::to_string);
    let detail = body["message"].as_str().map(str::to_string).unwrap_or_else(|| String::from_utf8_lossy(response.body()).into_owned());
    ApiError {
        dapr_error_code: code,
        ..bad_gateway(format!("Dapr failed {doing}: {} {}", response.status().as_u16(), detail.trim()))
    }
}

fn bad_gateway(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, message)
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so a key is one path segment.
pub fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A scripted sidecar for unit tests of pure logic: it answers from a list and records
/// what was sent. The contract with the real daprd is tested in tests/ against daprd.
#[cfg(test)]
pub(crate) mod scripted {
    use super::*;
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;

    #[derive(Default)]
    pub struct Scripted {
        answers: RefCell<VecDeque<Result<Response<Vec<u8>>, String>>>,
        pub sent: RefCell<Vec<Request<Vec<u8>>>>,
    }

    impl Scripted {
        pub fn new() -> Rc<Scripted> {
            Rc::new(Scripted::default())
        }

        pub fn answer(self: &Rc<Self>, status: u16, headers: &[(&str, &str)], body: &str) -> Rc<Self> {
            let mut response = Response::builder().status(status);
            for (name, value) in headers {
                response = response.header(*name, *value);
            }
            self.answers.borrow_mut().push_back(Ok(response.body(body.as_bytes().to_vec()).unwrap()));
            self.clone()
        }

        pub fn refuse(self: &Rc<Self>) -> Rc<Self> {
            self.answers.borrow_mut().push_back(Err("connection refused".into()));
            self.clone()
        }

        /// The JSON body of the n-th request sent.
        pub fn json_sent(&self, n: usize) -> serde_json::Value {
            serde_json::from_slice(self.sent.borrow()[n].body()).unwrap()
        }

        pub fn calls(&self) -> Vec<String> {
            self.sent.borrow().iter().map(|r| format!("{} {}", r.method(), r.uri())).collect()
        }
    }

    impl Transport for Rc<Scripted> {
        fn send(&self, request: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, String> {
            let answer = self.answers.borrow_mut().pop_front();
            self.sent.borrow_mut().push(request);
            answer.expect("the test scripted fewer answers than the code made calls")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::scripted::Scripted;
    use super::*;

    fn client(transport: std::rc::Rc<Scripted>, token: Option<&str>) -> DaprClient<std::rc::Rc<Scripted>> {
        let mut config = Config::from_lookup(|_| None).unwrap();
        config.dapr_api_token = token.map(str::to_string);
        DaprClient::new(transport, &config)
    }

    #[test]
    fn get_state_reads_value_and_etag() {
        let dapr = Scripted::new().answer(200, &[("etag", "7")], r#"{"next_id":1}"#);
        let entry = client(dapr.clone(), None).get_state("statestore", "ann").unwrap().unwrap();
        assert_eq!(entry, StateEntry { value: json!({"next_id": 1}), etag: Some("7".into()) });
        assert_eq!(dapr.calls(), ["GET http://localhost:3500/v1.0/state/statestore/ann?consistency=strong"]);
    }

    #[test]
    fn get_state_204_is_a_missing_key() {
        let dapr = Scripted::new().answer(204, &[], "");
        assert_eq!(client(dapr, None).get_state("statestore", "ann").unwrap(), None);
    }

    #[test]
    fn keys_are_one_encoded_path_segment() {
        let dapr = Scripted::new().answer(204, &[], "");
        client(dapr.clone(), None).get_state("statestore", "a b?c#d%").unwrap();
        assert!(dapr.calls()[0].ends_with("/statestore/a%20b%3Fc%23d%25?consistency=strong"));
    }

    #[test]
    fn save_sends_first_write_with_etag() {
        let dapr = Scripted::new().answer(204, &[], "");
        let outcome = client(dapr.clone(), None).save_state_first_write("statestore", "ann", &json!({"a": 1}), Some("3"), None);
        assert_eq!(outcome.unwrap(), SaveOutcome::Saved);
        assert_eq!(dapr.calls(), ["POST http://localhost:3500/v1.0/state/statestore"]);
        assert_eq!(
            dapr.json_sent(0),
            json!([{"key": "ann", "value": {"a": 1}, "etag": "3",
                    "options": {"concurrency": "first-write", "consistency": "strong"}}])
        );
        assert_eq!(dapr.sent.borrow()[0].headers()["content-type"], "application/json");
    }

    #[test]
    fn save_without_etag_sends_none() {
        let dapr = Scripted::new().answer(204, &[], "");
        client(dapr.clone(), None).save_state_first_write("statestore", "ann", &json!(1), None, None).unwrap();
        assert!(dapr.json_sent(0)[0].get("etag").is_none());
        assert!(dapr.json_sent(0)[0].get("metadata").is_none());
    }

    #[test]
    fn save_with_ttl_asks_the_store_to_expire_the_key() {
        let dapr = Scripted::new().answer(204, &[], "");
        client(dapr.clone(), None).save_state_first_write("statestore", "k", &json!(1), None, Some(60)).unwrap();
        assert_eq!(dapr.json_sent(0)[0]["metadata"], json!({"ttlInSeconds": "60"}));
    }

    #[test]
    fn save_with_event_is_one_transaction_with_an_outbox_projection() {
        let dapr = Scripted::new().answer(204, &[], "");
        let outcome = client(dapr.clone(), None).save_state_with_event("statestore", "ann", &json!({"a": 1}), "3", &json!({"id": 1}));
        assert_eq!(outcome.unwrap(), SaveOutcome::Saved);
        assert_eq!(dapr.calls(), ["POST http://localhost:3500/v1.0/state/statestore/transaction"]);
        assert_eq!(
            dapr.json_sent(0),
            json!({"operations": [
                {"operation": "upsert", "request": {"key": "ann", "value": {"a": 1}, "etag": "3",
                    "options": {"concurrency": "first-write", "consistency": "strong"}}},
                {"operation": "upsert", "request": {"key": "ann", "value": {"id": 1},
                    "metadata": {"outbox.projection": "true", "contentType": "application/json"}}},
            ]})
        );
    }

    #[test]
    fn save_with_event_passes_on_the_transaction_error() {
        let dapr = Scripted::new().answer(500, &[], r#"{"errorCode":"ERR_PUBLISH_OUTBOX","message":"connection refused"}"#);
        let err = client(dapr, None).save_state_with_event("statestore", "ann", &json!(1), "3", &json!(1)).unwrap_err();
        assert_eq!((err.status, err.dapr_error_code.as_deref()), (StatusCode::BAD_GATEWAY, Some("ERR_PUBLISH_OUTBOX")));
    }

    #[test]
    fn save_409_is_a_conflict_not_an_error() {
        let dapr = Scripted::new().answer(409, &[], r#"{"errorCode":"ERR_STATE_SAVE"}"#);
        let outcome = client(dapr, None).save_state_first_write("statestore", "ann", &json!(1), Some("1"), None);
        assert_eq!(outcome.unwrap(), SaveOutcome::Conflict);
    }

    #[test]
    fn dapr_errors_are_502_with_dapr_error_code() {
        let dapr = Scripted::new().answer(400, &[], r#"{"errorCode":"ERR_STATE_STORE_NOT_FOUND","message":"state store nope is not found"}"#);
        let err = client(dapr, None).get_state("nope", "ann").unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_GATEWAY);
        assert_eq!(err.dapr_error_code.as_deref(), Some("ERR_STATE_STORE_NOT_FOUND"));
        assert!(err.message.contains("state store nope is not found"), "{err}");
        assert_eq!(err.body()["dapr_error_code"], "ERR_STATE_STORE_NOT_FOUND");
    }

    #[test]
    fn unreachable_sidecar_is_503() {
        let err = client(Scripted::new().refuse(), None).get_state("statestore", "ann").unwrap_err();
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(err.message.contains("unreachable"), "{err}");
    }

    #[test]
    fn state_value_that_is_not_json_is_502() {
        let dapr = Scripted::new().answer(200, &[], "not json");
        assert_eq!(client(dapr, None).get_state("statestore", "ann").unwrap_err().status, StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn api_token_goes_on_every_call() {
        let dapr = Scripted::new().answer(204, &[], "").answer(204, &[], "").answer(204, &[], "");
        let client = client(dapr.clone(), Some("s3cret"));
        client.get_state("statestore", "ann").unwrap();
        client.save_state_with_event("statestore", "ann", &json!({}), "1", &json!({})).unwrap();
        client.outbound_health().unwrap();
        assert!(dapr.sent.borrow().iter().all(|r| r.headers()["dapr-api-token"] == "s3cret"));
    }

    #[test]
    fn outbound_health_not_ready_is_503() {
        let err = client(Scripted::new().answer(500, &[], ""), None).outbound_health().unwrap_err();
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
