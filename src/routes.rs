//! The HTTP API. The course's routes, kept so its curl calls work unchanged, plus the
//! subscription Dapr asks for and the health checks Kubernetes probes.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /` | 200 `{"message": GREETING}` |
//! | `POST /messages?user_id=U&message=M` (or a JSON body) | 201, after storing and publishing |
//! | `GET /messages/{user_id}` | 200 the history, oldest first; 404 for a user with none |
//! | `GET /dapr/subscribe` | the programmatic subscriptions Dapr reads at start-up |
//! | `POST /events/message-updated` | Dapr delivers each event here |
//! | `POST /events/dead-letter` | and here each event that route did not take |
//! | `GET /healthz`, `GET /readyz` | liveness; readiness = the sidecar answers |
//! | `GET /openapi.json` | the OpenAPI 3.1 document of all this (src/openapi.json) |

use http::StatusCode;
use serde_json::json;
use spin_sdk::http::{IntoResponse, Request, Response};

use crate::config::Config;
use crate::dapr::DaprClient;
use crate::delivery::{parse_cloud_event, DeliveryError, MessageEvent, Verdict, MAX_SAVE_ATTEMPTS};
use crate::error::{json_response, ApiError};
use crate::messages::{validate_user_id, Messages, NewMessage};
use crate::openapi;
use crate::request::{header, message_fields, percent_decode};
use crate::trace::{trace_id, TraceContext};
use crate::transport::Transport;

/// Edit this and save: `tilt up` puts the new text on `GET /` in seconds.
pub const GREETING: &str = "Hello from Dapr Spin!";
/// Where Dapr delivers the topic's events (declared in `GET /dapr/subscribe`).
pub const EVENT_ROUTE: &str = "/events/message-updated";
/// Where Dapr delivers the dead-letter topic's events (`dead_letter_topic`).
pub const DEAD_LETTER_ROUTE: &str = "/events/dead-letter";

/// What answers a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Greeting,
    PostMessage,
    GetMessages,
    DaprSubscribe,
    ReceiveEvent,
    ReceiveDeadLetter,
    Healthz,
    Readyz,
    OpenApi,
}

/// Every route: its one method, its path (`:user_id` matches one path segment) and what
/// answers it. A known path with another method gets 405 and `Allow`, any other path a
/// JSON 404. The test that keeps /openapi.json true checks the document against this list.
pub const ROUTES: [(&str, &str, Endpoint); 9] = [
    ("GET", "/", Endpoint::Greeting),
    ("POST", "/messages", Endpoint::PostMessage),
    ("GET", "/messages/:user_id", Endpoint::GetMessages),
    ("GET", "/dapr/subscribe", Endpoint::DaprSubscribe),
    ("POST", EVENT_ROUTE, Endpoint::ReceiveEvent),
    ("POST", DEAD_LETTER_ROUTE, Endpoint::ReceiveDeadLetter),
    ("GET", "/healthz", Endpoint::Healthz),
    ("GET", "/readyz", Endpoint::Readyz),
    ("GET", "/openapi.json", Endpoint::OpenApi),
];

/// What one request needs: its settings and a client for the sidecar.
pub struct App<T> {
    pub config: Config,
    pub dapr: DaprClient<T>,
}

impl<T: Transport> App<T> {
    fn messages(&self) -> Messages<'_, T> {
        Messages {
            dapr: &self.dapr,
            config: &self.config,
        }
    }
}

/// Answers each request from ROUTES. Each request is a fresh instance, so nothing here is
/// built ahead: matching is a walk over the list, and `load_config` runs only for the
/// routes that need settings, so a bad setting is a clear 500 there while `/healthz` and
/// `GET /` keep answering.
pub struct Router<T, C> {
    transport: T,
    load_config: C,
}

pub fn router<T, C>(transport: T, load_config: C) -> Router<T, C>
where
    T: Transport + Clone,
    C: Fn() -> Result<Config, ApiError>,
{
    Router {
        transport,
        load_config,
    }
}

impl<T, C> Router<T, C>
where
    T: Transport + Clone,
    C: Fn() -> Result<Config, ApiError>,
{
    pub fn handle(&self, request: Request) -> Response {
        self.answer(&request).unwrap_or_else(IntoResponse::into_response)
    }

    fn answer(&self, request: &Request) -> Result<Response, ApiError> {
        let path = request.path();
        let Some((method, endpoint, user_id)) = ROUTES
            .iter()
            .find_map(|&(method, pattern, endpoint)| Some((method, endpoint, match_path(pattern, path)?)))
        else {
            return Err(ApiError::not_found(format!("no route for {path}")));
        };
        if request.method().to_string() != method {
            return Err(ApiError::method_not_allowed(method));
        }
        match endpoint {
            Endpoint::Greeting => Ok(greeting()),
            Endpoint::PostMessage => post_message(&self.app(request)?, request),
            Endpoint::GetMessages => get_messages(&self.app(request)?, user_id.unwrap_or_default()),
            Endpoint::DaprSubscribe => dapr_subscribe(&self.app(request)?),
            Endpoint::ReceiveEvent => receive_event(&self.app(request)?, request),
            Endpoint::ReceiveDeadLetter => receive_dead_letter(&self.app(request)?, request),
            Endpoint::Healthz => Ok(healthz()),
            Endpoint::Readyz => readyz(&self.app(request)?),
            Endpoint::OpenApi => Ok(openapi::document()),
        }
    }

    /// The request's App: the settings, and a client that passes the request's trace
    /// context on to its Dapr calls.
    fn app(&self, request: &Request) -> Result<App<T>, ApiError> {
        let config = (self.load_config)()?;
        let trace = TraceContext::from_headers(|name| header(request, name));
        Ok(App {
            dapr: DaprClient::new(self.transport.clone(), &config).with_trace(trace),
            config,
        })
    }
}

/// `Some(the :user_id segment, if the pattern has one)` when `path` matches `pattern`:
/// segment by segment, a `:name` segment matching any one. Empty segments do not count, so
/// `/healthz/` is `/healthz` (as spin-sdk's router, which this replaced, matched them).
fn match_path<'a>(pattern: &str, path: &'a str) -> Option<Option<&'a str>> {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let mut captured = None;
    for expected in pattern.split('/').filter(|s| !s.is_empty()) {
        let segment = segments.next()?;
        if expected.starts_with(':') {
            captured = Some(segment);
        } else if expected != segment {
            return None;
        }
    }
    segments.next().is_none().then_some(captured)
}

fn greeting() -> Response {
    json_response(StatusCode::OK, &json!({ "message": GREETING }))
}

fn healthz() -> Response {
    json_response(StatusCode::OK, &json!({ "status": "ok" }))
}

fn readyz<T: Transport>(app: &App<T>) -> Result<Response, ApiError> {
    app.dapr.outbound_health()?;
    Ok(json_response(StatusCode::OK, &json!({ "status": "ready" })))
}

fn post_message<T: Transport>(app: &App<T>, request: &Request) -> Result<Response, ApiError> {
    let fields = message_fields(request)?;
    let new = NewMessage::parse(fields.user_id, fields.message)?;
    let stored = app.messages().store_and_publish(&new).map_err(delivery_error)?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({
            "status": format!("Stored and published message for {}", new.user_id),
            "user_id": new.user_id,
            "message": stored,
        }),
    ))
}

fn get_messages<T: Transport>(app: &App<T>, user_id_segment: &str) -> Result<Response, ApiError> {
    let user_id = percent_decode(user_id_segment, false)?;
    let user_id = validate_user_id(Some(&user_id))?;
    let history = app
        .messages()
        .history(user_id)?
        .map(|(history, _)| history)
        .unwrap_or_default();
    let Some(latest) = history.messages.last() else {
        return Err(ApiError::not_found(format!("no messages for user {user_id:?}")));
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({ "user_id": user_id, "message": latest.message, "messages": history.messages }),
    ))
}

/// The topic Dapr moves an event to when the event route has not taken it: after the
/// retries of scripts/dapr/resiliency.yaml, or at once when it answered DROP.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}-dead-letter")
}

/// The topic's events go to the event route, with a dead-letter topic so that an event the
/// route keeps failing on ends somewhere visible instead of being dropped by Dapr; that
/// topic's events go to the dead-letter route.
fn dapr_subscribe<T: Transport>(app: &App<T>) -> Result<Response, ApiError> {
    let config = &app.config;
    let dead_letters = dead_letter_topic(&config.topic);
    Ok(json_response(
        StatusCode::OK,
        &json!([
            {
                "pubsubname": config.pubsub, "topic": config.topic,
                "route": EVENT_ROUTE, "deadLetterTopic": dead_letters
            },
            { "pubsubname": config.pubsub, "topic": dead_letters, "route": DEAD_LETTER_ROUTE },
        ]),
    ))
}

/// With the Spin variable `app_api_token` set, only Dapr (which sends it as `dapr-api-token`) may deliver.
fn check_app_token<T: Transport>(app: &App<T>, request: &Request) -> Result<(), ApiError> {
    match &app.config.app_api_token {
        Some(token) if header(request, "dapr-api-token") != Some(token.as_str()) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong dapr-api-token",
        )),
        _ => Ok(()),
    }
}

/// What each way a POST or a delivery can fail answers: the one place delivery's outcomes
/// become HTTP.
fn delivery_error(error: DeliveryError) -> ApiError {
    match error {
        DeliveryError::Dapr(e) => e,
        DeliveryError::NotStored(e) => ApiError {
            message: format!("{}; nothing was stored", e.message),
            ..e
        },
        DeliveryError::MaybeStored { first, settling } => ApiError {
            message: format!(
                "{}; then, reading the history to settle it: {}; the message may have been stored: \
                 read the history before you retry",
                first.message, settling
            ),
            ..first
        },
        DeliveryError::Contended { user_id } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many concurrent writes for user {user_id:?}: gave up after {MAX_SAVE_ATTEMPTS} attempts; \
                 nothing was stored, try again"
            ),
        ),
        DeliveryError::NotYet(why) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

/// Which subscription delivered an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subscription {
    Topic,
    DeadLetters,
}

fn receive_event<T: Transport>(app: &App<T>, request: &Request) -> Result<Response, ApiError> {
    receive(app, request, Subscription::Topic)
}

fn receive_dead_letter<T: Transport>(app: &App<T>, request: &Request) -> Result<Response, ApiError> {
    receive(app, request, Subscription::DeadLetters)
}

/// Dapr retries an event unless the answer is 2xx with status SUCCESS or DROP, and after the
/// retries of scripts/dapr/resiliency.yaml moves it to the dead-letter topic, whose route
/// decides by the same rule (src/delivery/): act on a stored message's event once, ignore a
/// phantom or a duplicate, and answer 503 while its write may still land or the sidecar
/// fails, so that Dapr delivers it again. An event that can never be taken (it does not
/// parse, or the state holds a value this service cannot read) is logged and answered DROP,
/// which moves it to the dead-letter topic at once; there it is logged and taken, so that it
/// is not retried forever, and stays in that topic's Redis stream (up to its
/// `maxLenApprox`), to read or replay.
fn receive<T: Transport>(app: &App<T>, request: &Request, from: Subscription) -> Result<Response, ApiError> {
    check_app_token(app, request)?;
    let event = match parse_cloud_event(request.body()) {
        Ok(event) => event,
        Err(why) if from == Subscription::DeadLetters => {
            println!("Dead-lettered event: not a message event ({why})");
            return Ok(event_status("SUCCESS"));
        }
        Err(why) => {
            println!("Dropped event: {why}");
            return Ok(event_status("DROP"));
        }
    };
    // The trace Dapr delivers the event in: the POST's, which published it.
    let trace = header(request, "traceparent")
        .and_then(trace_id)
        .map(|id| format!(" trace_id={id}"))
        .unwrap_or_default();
    let messages = app.messages();
    match messages.verdict(&event) {
        Ok(Verdict::Act { delivery, replaces }) => {
            let replaced = if replaces.is_empty() {
                String::new()
            } else {
                format!(" replaces={}", replaces.join(","))
            };
            println!(
                "Received event: user_id={:?} message={:?} id={} delivery={delivery}{replaced}{trace}",
                event.user_id, event.message, event.id
            );
            // The line is out: a failure to record that is no reason for Dapr to deliver
            // again. A later delivery then finds the claim not done and, past the lease,
            // acts again, naming this delivery (src/delivery/claims.rs).
            if let Err(e) = messages.complete(&event, &delivery) {
                eprintln!(
                    "warning: event of message {} of user {:?} handled by delivery {delivery}, \
                     but not recorded as done: {e}",
                    event.id, event.user_id
                );
            }
        }
        Ok(Verdict::Phantom(why)) => println!("Ignored phantom event: {why}{trace}"),
        Ok(Verdict::Duplicate { delivery }) => println!(
            "Ignored duplicate event: user_id={:?} id={} write {} (handled by delivery {delivery}){trace}",
            event.user_id, event.id, event.write_id
        ),
        Err(e) if !e.is_transient() => {
            let why = delivery_error(e).message;
            if from == Subscription::DeadLetters {
                println!("Dead-lettered event: {}: {why}", describe(&event));
            } else {
                println!("Dropped event: {}: {why}", describe(&event));
                return Ok(event_status("DROP"));
            }
        }
        Err(e) => return Err(delivery_error(e)),
    }
    Ok(event_status("SUCCESS"))
}

fn describe(event: &MessageEvent) -> String {
    format!(
        "user_id={:?} message={:?} id={} write {}",
        event.user_id, event.message, event.id, event.write_id
    )
}

fn event_status(status: &str) -> Response {
    json_response(StatusCode::OK, &json!({ "status": status }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::scripted::Scripted;
    use spin_sdk::http::Method;
    use std::rc::Rc;

    fn send(
        dapr: &Rc<Scripted>,
        config: Config,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, serde_json::Value, Response) {
        let mut request = Request::builder();
        request.method(method).uri(uri).body(body.as_bytes().to_vec());
        for (name, value) in headers {
            request.header(*name, *value);
        }
        let response = router(dapr.clone(), move || Ok(config.clone())).handle(request.build());
        let json = serde_json::from_slice(response.body()).unwrap_or(serde_json::Value::Null);
        (*response.status(), json, response)
    }

    fn call(
        dapr: &Rc<Scripted>,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, serde_json::Value) {
        let (status, json, response) = send(dapr, config(), method, uri, headers, body);
        assert_eq!(
            response.header("content-type").and_then(|v| v.as_str()),
            Some("application/json")
        );
        (status, json)
    }

    fn config() -> Config {
        Config::from_lookup(|_| None).unwrap()
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    /// A sidecar that stores a new user's first message with its event: the history is
    /// missing, the event published, then the history created holding the message.
    fn accepting() -> Rc<Scripted> {
        Scripted::new()
            .answer(204, &[], "")
            .answer(204, &[], "")
            .answer(204, &[], "")
    }

    /// A sidecar whose state holds ann's message 1 by write w1, and which takes the claim.
    fn holding_ann_w1() -> Rc<Scripted> {
        let mut history = crate::messages::History::default();
        history.append("hi".into(), "t".into(), 100, "w1".into());
        Scripted::new()
            .answer(200, &[("etag", "2")], &serde_json::to_string(&history).unwrap())
            .answer(204, &[], "")
            .answer(204, &[], "")
    }

    fn ann_w1_event() -> String {
        json!({
            "type": "com.dapr.event.sent",
            "data": {
                "user_id": "ann", "message": "hi", "id": 1, "created_at": "t", "write_id": "w1",
                "etag": "1", "published_ms": 1
            }
        })
        .to_string()
    }

    #[test]
    fn greeting() {
        assert_eq!(
            call(&Scripted::new(), Method::Get, "/", &[], ""),
            (200, json!({"message": "Hello from Dapr Spin!"}))
        );
    }

    #[test]
    fn course_curl_query_with_empty_json_body() {
        let dapr = accepting();
        let (status, body) = call(
            &dapr,
            Method::Post,
            "/messages?user_id=junaid&message=Hello%20Dapr%21",
            &[JSON],
            "",
        );
        assert_eq!(status, 201);
        assert_eq!(body["status"], "Stored and published message for junaid");
        assert_eq!(body["message"]["message"], "Hello Dapr!");
        assert_eq!(body["message"]["id"], 1);
        assert_eq!(
            dapr.calls()[1..],
            [
                "POST http://localhost:3500/v1.0/publish/pubsub/message-updated",
                "POST http://localhost:3500/v1.0/state/statestore"
            ]
        );
        let event = &dapr.json_sent(1);
        assert_eq!(
            (
                event["user_id"].clone(),
                event["message"].clone(),
                event["id"].clone()
            ),
            (json!("junaid"), json!("Hello Dapr!"), json!(1))
        );
        assert_eq!(event["created_at"], body["message"]["created_at"]);
    }

    #[test]
    fn the_requests_trace_context_goes_on_each_of_its_dapr_calls() {
        let dapr = accepting();
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (status, _) = call(
            &dapr,
            Method::Post,
            "/messages?user_id=ann&message=m",
            &[("traceparent", parent), ("tracestate", "a=1")],
            "",
        );
        assert_eq!(status, 201);
        // A new user's POST: read, publish, then create the history.
        assert_eq!(dapr.sent.borrow().len(), 3);
        assert!(dapr
            .sent
            .borrow()
            .iter()
            .all(|r| r.headers()["traceparent"] == parent && r.headers()["tracestate"] == "a=1"));
    }

    #[test]
    fn post_by_json_body() {
        let dapr = accepting();
        let (status, body) = call(
            &dapr,
            Method::Post,
            "/messages",
            &[("content-type", "application/json; charset=utf-8")],
            r#"{"user_id":"ann","message":"hi"}"#,
        );
        assert_eq!((status, body["user_id"].clone()), (201, json!("ann")));
    }

    #[test]
    fn plus_is_a_space_in_the_query() {
        let dapr = accepting();
        let (_, body) = call(&dapr, Method::Post, "/messages?user_id=ann&message=a+b", &[], "");
        assert_eq!(body["message"]["message"], "a b");
    }

    #[test]
    fn bad_posts_get_their_error_and_call_no_dapr() {
        let big = format!(
            r#"{{"user_id":"ann","message":"{}"}}"#,
            "x".repeat(crate::request::MAX_BODY_BYTES)
        );
        for (uri, headers, body, status, says) in [
            ("/messages", vec![JSON], "", 400, "user_id is required"),
            (
                "/messages?user_id=ann",
                vec![JSON],
                "",
                400,
                "message is required",
            ),
            ("/messages?user_id=a%2Fb&message=m", vec![], "", 400, "'/'"),
            (
                "/messages?user_id=ann&message=m&user_id=bob",
                vec![],
                "",
                400,
                "more than once",
            ),
            (
                "/messages?user_id=%zz&message=m",
                vec![],
                "",
                400,
                "percent-escape",
            ),
            ("/messages?user_id=%ff&message=m", vec![], "", 400, "UTF-8"),
            ("/messages", vec![JSON], "{oops", 400, "malformed JSON"),
            (
                "/messages",
                vec![JSON],
                r#"{"user_id":7,"message":"m"}"#,
                400,
                "malformed JSON",
            ),
            (
                "/messages",
                vec![("content-type", "text/plain")],
                "user_id=ann",
                415,
                "Content-Type",
            ),
            (
                "/messages",
                vec![],
                r#"{"user_id":"ann","message":"m"}"#,
                415,
                "Content-Type",
            ),
            (
                "/messages?user_id=ann",
                vec![JSON],
                r#"{"message":"m"}"#,
                400,
                "not both",
            ),
            ("/messages", vec![JSON], big.as_str(), 413, "at most"),
        ] {
            let dapr = Scripted::new();
            let (got, body) = call(&dapr, Method::Post, uri, &headers, body);
            assert_eq!(got, status, "{uri}: {body}");
            assert!(body["error"].as_str().unwrap().contains(says), "{uri}: {body}");
            assert!(dapr.calls().is_empty(), "{uri} called Dapr");
        }
    }

    #[test]
    fn history_latest_and_oldest_first() {
        let mut history = crate::messages::History::default();
        history.append("one".into(), "t1".into(), 100, "w1".into());
        history.append("two".into(), "t2".into(), 100, "w2".into());
        let dapr = Scripted::new().answer(200, &[("etag", "2")], &serde_json::to_string(&history).unwrap());
        let (status, body) = call(&dapr, Method::Get, "/messages/ann", &[], "");
        assert_eq!(status, 200);
        assert_eq!(body["user_id"], "ann");
        assert_eq!(body["message"], "two");
        assert_eq!(
            body["messages"],
            json!([
                {"id": 1, "message": "one", "created_at": "t1"},
                {"id": 2, "message": "two", "created_at": "t2"}
            ])
        );
    }

    #[test]
    fn unknown_user_is_404_not_500() {
        let (status, body) = call(
            &Scripted::new().answer(204, &[], ""),
            Method::Get,
            "/messages/nobody",
            &[],
            "",
        );
        assert_eq!(status, 404);
        assert_eq!(body["error"], "no messages for user \"nobody\"");
    }

    #[test]
    fn path_user_id_is_decoded_and_validated() {
        let dapr = Scripted::new().answer(204, &[], "");
        call(&dapr, Method::Get, "/messages/a%20b", &[], "");
        assert!(dapr.calls()[0].contains("/statestore/a%20b?"));
        let (status, _) = call(&Scripted::new(), Method::Get, "/messages/a%7C%7Cb", &[], "");
        assert_eq!(status, 400);
    }

    #[test]
    fn dot_segments_as_user_ids_are_400_before_any_dapr_call() {
        for (method, uri) in [
            (Method::Get, "/messages/."),
            (Method::Get, "/messages/.."),
            (Method::Get, "/messages/%2E%2E"),
            (Method::Get, "/messages/%2e"),
            (Method::Post, "/messages?user_id=..&message=m"),
            (Method::Post, "/messages?user_id=%2E&message=m"),
        ] {
            let dapr = Scripted::new();
            let (status, body) = call(&dapr, method, uri, &[], "");
            assert_eq!(status, 400, "{uri}: {body}");
            assert!(
                body["error"].as_str().unwrap().contains("'.' or '..'"),
                "{uri}: {body}"
            );
            assert!(dapr.calls().is_empty(), "{uri} called Dapr");
        }
    }

    #[test]
    fn dapr_down_is_503_and_dapr_error_is_502() {
        assert_eq!(
            call(
                &Scripted::new().refuse(),
                Method::Post,
                "/messages?user_id=a&message=m",
                &[],
                ""
            )
            .0,
            503
        );
        let dapr = Scripted::new().answer(500, &[], r#"{"errorCode":"ERR_STATE_GET","message":"boom"}"#);
        let (status, body) = call(&dapr, Method::Get, "/messages/ann", &[], "");
        assert_eq!(
            (status, body["dapr_error_code"].clone()),
            (502, json!("ERR_STATE_GET"))
        );
    }

    #[test]
    fn subscription_is_declared_programmatically() {
        let (status, body) = call(&Scripted::new(), Method::Get, "/dapr/subscribe", &[], "");
        assert_eq!(
            (status, body),
            (
                200,
                json!([
                    {
                        "pubsubname": "pubsub", "topic": "message-updated", "route": EVENT_ROUTE,
                        "deadLetterTopic": "message-updated-dead-letter"
                    },
                    {
                        "pubsubname": "pubsub", "topic": "message-updated-dead-letter",
                        "route": DEAD_LETTER_ROUTE
                    },
                ])
            )
        );
    }

    #[test]
    fn a_dead_letter_that_is_no_message_event_is_taken_without_a_dapr_call() {
        let ce = ("content-type", "application/cloudevents+json");
        for body in ["garbage", ""] {
            let dapr = Scripted::new();
            assert_eq!(
                call(&dapr, Method::Post, DEAD_LETTER_ROUTE, &[ce], body),
                (200, json!({"status": "SUCCESS"})),
                "{body:?}"
            );
            assert!(dapr.calls().is_empty());
        }
    }

    #[test]
    fn a_dead_letter_is_judged_by_the_same_rule() {
        let ce = ("content-type", "application/cloudevents+json");
        let stored = holding_ann_w1();
        assert_eq!(
            call(&stored, Method::Post, DEAD_LETTER_ROUTE, &[ce], &ann_w1_event()),
            (200, json!({"status": "SUCCESS"}))
        );
        assert_eq!(
            stored.calls()[1],
            "POST http://localhost:3500/v1.0/state/statestore",
            "claimed, to act on it"
        );
        // Dapr's own failure may pass: not 2xx, so that Dapr delivers it again.
        let unreachable =
            Scripted::new().answer(500, &[], r#"{"errorCode":"ERR_STATE_GET","message":"boom"}"#);
        let (status, _) = call(
            &unreachable,
            Method::Post,
            DEAD_LETTER_ROUTE,
            &[ce],
            &ann_w1_event(),
        );
        assert_eq!(status, 502);
        // A history this service cannot read stays so: taken, not retried forever.
        let corrupt = Scripted::new().answer(200, &[("etag", "1")], r#"{"messages":"not a list"}"#);
        assert_eq!(
            call(&corrupt, Method::Post, DEAD_LETTER_ROUTE, &[ce], &ann_w1_event()),
            (200, json!({"status": "SUCCESS"}))
        );
    }

    #[test]
    fn event_success_and_drop() {
        let ce = ("content-type", "application/cloudevents+json");
        let dapr = holding_ann_w1();
        assert_eq!(
            call(&dapr, Method::Post, EVENT_ROUTE, &[ce], &ann_w1_event()),
            (200, json!({"status": "SUCCESS"}))
        );
        assert_eq!(
            dapr.calls().len(),
            3,
            "checked against the history, claimed, the claim read back to mark it done"
        );
        assert_eq!(
            call(&Scripted::new(), Method::Post, EVENT_ROUTE, &[ce], "garbage"),
            (200, json!({"status": "DROP"}))
        );
    }

    #[test]
    fn a_phantom_event_is_ignored_not_retried() {
        let ce = ("content-type", "application/cloudevents+json");
        let dapr = Scripted::new()
            .answer(204, &[], "")
            .answer(200, &[("etag", "1")], "{}");
        assert_eq!(
            call(&dapr, Method::Post, EVENT_ROUTE, &[ce], &ann_w1_event()),
            (200, json!({"status": "SUCCESS"}))
        );
    }

    #[test]
    fn an_event_that_can_never_be_taken_is_dropped_to_the_dead_letter_topic() {
        let ce = ("content-type", "application/cloudevents+json");
        let corrupt = Scripted::new().answer(200, &[("etag", "1")], r#"{"messages":"not a list"}"#);
        assert_eq!(
            call(&corrupt, Method::Post, EVENT_ROUTE, &[ce], &ann_w1_event()),
            (200, json!({"status": "DROP"}))
        );
    }

    #[test]
    fn an_event_the_state_store_cannot_check_is_retried() {
        let dapr = Scripted::new().answer(500, &[], r#"{"errorCode":"ERR_STATE_GET","message":"boom"}"#);
        let (status, _) = call(&dapr, Method::Post, EVENT_ROUTE, &[], &ann_w1_event());
        assert_eq!(status, 502, "not 2xx, so Dapr delivers it again");
    }

    #[test]
    fn app_api_token_guards_the_event_route() {
        let mut config = config();
        config.app_api_token = Some("app-secret".into());
        let event = ann_w1_event();
        let (status, ..) = send(
            &Scripted::new(),
            config.clone(),
            Method::Post,
            EVENT_ROUTE,
            &[],
            &event,
        );
        assert_eq!(status, 401);
        let (status, ..) = send(
            &Scripted::new(),
            config.clone(),
            Method::Post,
            EVENT_ROUTE,
            &[("dapr-api-token", "wrong")],
            &event,
        );
        assert_eq!(status, 401);
        let (status, body, _) = send(
            &holding_ann_w1(),
            config.clone(),
            Method::Post,
            EVENT_ROUTE,
            &[("dapr-api-token", "app-secret")],
            &event,
        );
        assert_eq!((status, body), (200, json!({"status": "SUCCESS"})));
        let (status, ..) = send(
            &Scripted::new(),
            config.clone(),
            Method::Post,
            DEAD_LETTER_ROUTE,
            &[("dapr-api-token", "wrong")],
            &event,
        );
        assert_eq!(status, 401, "the dead-letter route too");
        let (status, ..) = send(
            &holding_ann_w1(),
            config,
            Method::Post,
            DEAD_LETTER_ROUTE,
            &[("dapr-api-token", "app-secret")],
            &event,
        );
        assert_eq!(status, 200);
    }

    #[test]
    fn health_and_readiness() {
        assert_eq!(call(&Scripted::new(), Method::Get, "/healthz", &[], "").0, 200);
        assert_eq!(
            call(
                &Scripted::new().answer(204, &[], ""),
                Method::Get,
                "/readyz",
                &[],
                ""
            )
            .0,
            200
        );
        assert_eq!(
            call(&Scripted::new().refuse(), Method::Get, "/readyz", &[], "").0,
            503
        );
    }

    #[test]
    fn wrong_method_is_405_with_allow() {
        for (method, uri, allow) in [
            (Method::Get, "/messages", "POST"),
            (Method::Delete, "/messages/ann", "GET"),
            (Method::Post, "/", "GET"),
        ] {
            let (status, body, response) = send(&Scripted::new(), config(), method, uri, &[], "");
            assert_eq!(status, 405, "{uri}");
            assert_eq!(response.header("allow").and_then(|v| v.as_str()), Some(allow));
            assert!(body["error"].is_string());
        }
    }

    #[test]
    fn unknown_path_is_json_404() {
        for uri in ["/nope", "/messages/ann/extra"] {
            let (status, body) = call(&Scripted::new(), Method::Get, uri, &[], "");
            assert_eq!(status, 404, "{uri}");
            assert!(body["error"].as_str().unwrap().contains("no route"));
        }
    }

    #[test]
    fn empty_path_segments_do_not_count() {
        assert_eq!(call(&Scripted::new(), Method::Get, "//healthz/", &[], "").0, 200);
        assert_eq!(
            call(&Scripted::new(), Method::Get, "//", &[], ""),
            (200, json!({"message": GREETING}))
        );
        let dapr = Scripted::new().answer(204, &[], "");
        assert_eq!(
            call(&dapr, Method::Get, "/messages//ann/", &[], "").0,
            404,
            "ann has no messages"
        );
        assert_eq!(dapr.calls().len(), 1, "read ann's history");
    }

    #[test]
    fn a_bad_setting_is_a_clear_500_but_liveness_holds() {
        let broken =
            || Config::from_lookup(|name| (name == "message_history_limit").then(|| "lots".to_string()));
        let request = || Request::builder().method(Method::Get).uri("/readyz").build();
        let response = router(Scripted::new(), broken).handle(request());
        assert_eq!(*response.status(), 500);
        assert!(String::from_utf8_lossy(response.body()).contains("message_history_limit"));
        let live = router(Scripted::new(), broken)
            .handle(Request::builder().method(Method::Get).uri("/healthz").build());
        assert_eq!(*live.status(), 200);
    }
}
