//! `GET /openapi.json`: the API as an OpenAPI 3.1 document, a static file in the binary
//! (src/openapi.json). The tests below keep it true: its operations are exactly the
//! router's routes, and every status it documents is one that some request produces.

use http::StatusCode;
use spin_sdk::http::Response;

/// The document, as written in src/openapi.json.
pub const DOCUMENT: &str = include_str!("openapi.json");

pub fn document() -> Response {
    Response::builder()
        .status(StatusCode::OK.as_u16())
        .header("content-type", "application/json")
        .body(DOCUMENT)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::error::ApiError;
    use crate::routes::{router, ROUTES};
    use crate::transport::scripted::Scripted;
    use crate::transport::SendFailure;
    use serde_json::Value;
    use spin_sdk::http::{Method, Request};
    use std::collections::BTreeSet;
    use std::rc::Rc;

    fn document_json() -> Value {
        serde_json::from_str(DOCUMENT).expect("src/openapi.json is not JSON")
    }

    /// (method, path as the router writes it, status) for every documented response.
    fn documented() -> BTreeSet<(String, String, u16)> {
        let mut all = BTreeSet::new();
        for (path, operations) in document_json()["paths"].as_object().unwrap() {
            let route = path.replace('{', ":").replace('}', "");
            for (method, operation) in operations.as_object().unwrap() {
                for status in operation["responses"].as_object().unwrap().keys() {
                    all.insert((method.to_uppercase(), route.clone(), status.parse().unwrap()));
                }
            }
        }
        all
    }

    #[test]
    fn it_is_openapi_3_1_with_every_route_and_no_other() {
        assert_eq!(document_json()["openapi"], "3.1.0");
        let in_document: BTreeSet<(String, String)> = documented()
            .into_iter()
            .map(|(method, path, _)| (method, path))
            .collect();
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(method, path, _)| (method.to_string(), path.to_string()))
            .collect();
        assert_eq!(in_document, served);
    }

    #[test]
    fn every_reference_resolves() {
        let document = document_json();
        let text = DOCUMENT;
        for reference in text
            .split("\"$ref\": \"#/")
            .skip(1)
            .map(|rest| &rest[..rest.find('"').unwrap()])
        {
            assert!(
                document.pointer(&format!("/{reference}")).is_some(),
                "unresolved $ref #/{reference}"
            );
        }
    }

    /// A request through the real router with a scripted sidecar, and what the router answered.
    struct Case {
        method: Method,
        route: &'static str,
        uri: &'static str,
        headers: Vec<(&'static str, &'static str)>,
        body: String,
        dapr: Rc<Scripted>,
        config: Result<Config, ApiError>,
    }

    fn case(method: Method, route: &'static str, uri: &'static str) -> Case {
        Case {
            method,
            route,
            uri,
            headers: vec![],
            body: String::new(),
            dapr: Scripted::new(),
            config: Config::from_lookup(|_| None),
        }
    }

    impl Case {
        fn sidecar(self, dapr: Rc<Scripted>) -> Case {
            Case { dapr, ..self }
        }
        fn body(self, content_type: &'static str, body: impl Into<String>) -> Case {
            Case {
                headers: vec![("content-type", content_type)],
                body: body.into(),
                ..self
            }
        }
        fn setting(self, name: &'static str, value: &'static str) -> Case {
            Case {
                config: Config::from_lookup(move |n| (n == name).then(|| value.to_string())),
                ..self
            }
        }
        fn answer(self) -> (String, String, u16) {
            let mut request = Request::builder();
            request
                .method(self.method.clone())
                .uri(self.uri)
                .body(self.body.as_bytes().to_vec());
            for (name, value) in &self.headers {
                request.header(*name, *value);
            }
            let config = self.config;
            let response = router(self.dapr, move || config.clone()).handle(request.build());
            assert_eq!(
                response.header("content-type").and_then(|v| v.as_str()),
                Some("application/json"),
                "{}",
                self.uri
            );
            (
                self.method.to_string(),
                self.route.to_string(),
                *response.status(),
            )
        }
    }

    #[test]
    fn every_documented_status_is_produced_and_none_other() {
        let history =
            r#"{"next_id":1,"messages":[{"id":1,"message":"hi","created_at":"t"}],"write_ids":{"1":"w1"}}"#;
        // The event's message is stored, by the write it names, its claim is taken and marked done.
        let holding_the_event = || {
            Scripted::new()
                .answer(200, &[("etag", "2")], history)
                .answer(204, &[], "")
                .answer(204, &[], "")
        };
        let dapr_error = r#"{"errorCode":"ERR_STATE_GET","message":"boom"}"#;
        let timed_out = || SendFailure::TimedOut("ErrorCode::ConnectionReadTimeout".into());
        let event = r#"{"data":{"user_id":"ann","message":"hi","id":1,"created_at":"t","write_id":"w1","etag":"1","published_ms":1}}"#;
        // A new user's POST: no history, the event published, the history created.
        let new_users_post = Scripted::new()
            .answer(204, &[], "")
            .answer(204, &[], "")
            .answer(204, &[], "");
        let (get, post) = (Method::Get, Method::Post);
        let messages = "/messages/:user_id";
        let produced: BTreeSet<_> = [
            case(get.clone(), "/", "/"),
            case(post.clone(), "/messages", "/messages?user_id=ann&message=hi").sidecar(new_users_post),
            case(post.clone(), "/messages", "/messages?message=hi"),
            case(post.clone(), "/messages", "/messages").body(
                "application/json",
                format!(r#"{{"user_id":"ann","message":"{}"}}"#, "m".repeat(4097)),
            ),
            case(post.clone(), "/messages", "/messages?user_id=ann").body("text/plain", "hi"),
            case(post.clone(), "/messages", "/messages?user_id=ann&message=hi")
                .sidecar(Scripted::new().fail(SendFailure::Denied)),
            case(post.clone(), "/messages", "/messages?user_id=ann&message=hi")
                .sidecar(Scripted::new().answer(500, &[], dapr_error)),
            case(post.clone(), "/messages", "/messages?user_id=ann&message=hi")
                .sidecar(Scripted::new().refuse()),
            case(post.clone(), "/messages", "/messages?user_id=ann&message=hi")
                .sidecar(Scripted::new().fail(timed_out())),
            case(get.clone(), messages, "/messages/ann").sidecar(Scripted::new().answer(200, &[], history)),
            case(get.clone(), messages, "/messages/a%2Fb"),
            case(get.clone(), messages, "/messages/ann").sidecar(Scripted::new().answer(204, &[], "")),
            case(get.clone(), messages, "/messages/ann").setting("statestore_name", "no/slash"),
            case(get.clone(), messages, "/messages/ann").sidecar(Scripted::new().answer(
                500,
                &[],
                dapr_error,
            )),
            case(get.clone(), messages, "/messages/ann").sidecar(Scripted::new().refuse()),
            case(get.clone(), messages, "/messages/ann").sidecar(Scripted::new().fail(timed_out())),
            case(get.clone(), "/dapr/subscribe", "/dapr/subscribe"),
            case(get.clone(), "/dapr/subscribe", "/dapr/subscribe").setting("pubsub_name", "no/slash"),
            case(post.clone(), "/events/message-updated", "/events/message-updated")
                .body("application/cloudevents+json", event)
                .sidecar(holding_the_event()),
            case(post.clone(), "/events/message-updated", "/events/message-updated")
                .body("application/cloudevents+json", event)
                .setting("app_api_token", "secret"),
            case(post.clone(), "/events/message-updated", "/events/message-updated")
                .setting("pubsub_topic", "no/slash"),
            case(post.clone(), "/events/message-updated", "/events/message-updated")
                .body("application/cloudevents+json", event)
                .sidecar(Scripted::new().answer(500, &[], dapr_error)),
            case(post.clone(), "/events/message-updated", "/events/message-updated")
                .body("application/cloudevents+json", event)
                .sidecar(Scripted::new().refuse()),
            case(post.clone(), "/events/message-updated", "/events/message-updated")
                .body("application/cloudevents+json", event)
                .sidecar(Scripted::new().fail(timed_out())),
            case(post.clone(), "/events/dead-letter", "/events/dead-letter")
                .body("application/cloudevents+json", event)
                .sidecar(holding_the_event()),
            case(post.clone(), "/events/dead-letter", "/events/dead-letter")
                .body("application/cloudevents+json", event)
                .sidecar(Scripted::new().refuse()),
            case(post.clone(), "/events/dead-letter", "/events/dead-letter")
                .body("application/cloudevents+json", event)
                .sidecar(Scripted::new().answer(500, &[], dapr_error)),
            case(post.clone(), "/events/dead-letter", "/events/dead-letter")
                .body("application/cloudevents+json", event)
                .sidecar(Scripted::new().fail(timed_out())),
            case(post.clone(), "/events/dead-letter", "/events/dead-letter")
                .body("application/cloudevents+json", event)
                .setting("app_api_token", "secret"),
            case(post.clone(), "/events/dead-letter", "/events/dead-letter")
                .setting("pubsub_topic", "no/slash"),
            case(get.clone(), "/healthz", "/healthz"),
            case(get.clone(), "/readyz", "/readyz").sidecar(Scripted::new().answer(204, &[], "")),
            case(get.clone(), "/readyz", "/readyz").sidecar(Scripted::new().fail(timed_out())),
            case(get.clone(), "/readyz", "/readyz").setting("dapr_http_port", "none"),
            case(get, "/openapi.json", "/openapi.json"),
        ]
        .into_iter()
        .map(Case::answer)
        .collect();
        assert_eq!(
            produced,
            documented(),
            "left: produced by the requests above; right: documented in src/openapi.json"
        );
    }
}
