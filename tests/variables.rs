//! The settings as Spin variables, against a real daprd and Redis (tests/support): the port
//! alone moves the sidecar, and the API tokens work both ways, with daprd given its own
//! (`APP_API_TOKEN`, `DAPR_API_TOKEN`, as Dapr's injector sets them from the Secret) and the
//! component the same values as `SPIN_VARIABLE_APP_API_TOKEN` / `SPIN_VARIABLE_DAPR_API_TOKEN`.
//! The component runs under `wasmtime serve` composed with scripts/wasmtime-adapter, which
//! answers `fermyon:spin/variables` from that environment as Spin's own provider does.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{request, Component, Options, Stack};

const JSON: (&str, &str) = ("content-type", "application/json");
const CLOUD_EVENT: (&str, &str) = ("content-type", "application/cloudevents+json");

fn with_tokens(app_env: &[(&str, &str)]) -> Stack {
    Stack::start_with(Options {
        app_env,
        dapr_env: &[("APP_API_TOKEN", "app-secret"), ("DAPR_API_TOKEN", "dapr-secret")],
        ..Options::default()
    })
}

#[test]
fn spin_variable_dapr_http_port_alone_moves_the_sidecar() {
    // The stack gives its component SPIN_VARIABLE_DAPR_HTTP_PORT and nothing else.
    let stack = Stack::start();
    assert_eq!(
        stack
            .call("POST", "/messages?user_id=ann&message=hi", &[JSON], "")
            .status,
        201,
        "{}",
        stack.logs()
    );
    let port = stack.dapr_http_port.to_string();
    let elsewhere = support::free_port().to_string();
    assert_eq!(
        Component::start(&[("SPIN_VARIABLE_DAPR_HTTP_PORT", &port)])
            .call("GET", "/readyz")
            .status,
        200
    );
    assert_eq!(
        Component::start(&[("SPIN_VARIABLE_DAPR_HTTP_PORT", &elsewhere)])
            .call("GET", "/readyz")
            .status,
        503
    );
}

#[test]
fn a_bad_variable_is_a_500_naming_it() {
    let app = Component::start(&[("SPIN_VARIABLE_MESSAGE_HISTORY_LIMIT", "lots")]);
    let reply = app.call("GET", "/messages/ann");
    assert_eq!(reply.status, 500);
    assert!(
        reply.json()["error"]
            .as_str()
            .unwrap()
            .contains("message_history_limit"),
        "{reply:?}"
    );
    assert_eq!(app.call("GET", "/healthz").status, 200);
}

#[test]
fn tokens_both_ways() {
    let mut stack = with_tokens(&[
        ("SPIN_VARIABLE_APP_API_TOKEN", "app-secret"),
        ("SPIN_VARIABLE_DAPR_API_TOKEN", "dapr-secret"),
    ]);

    // daprd refuses a call without its token; the component sends it on each of its calls.
    let state = "/v1.0/state/statestore/ann";
    assert_eq!(
        request(stack.dapr_http_port, "GET", state, &[], "")
            .unwrap()
            .status,
        401
    );
    assert_eq!(
        request(
            stack.dapr_http_port,
            "GET",
            state,
            &[("dapr-api-token", "dapr-secret")],
            ""
        )
        .unwrap()
        .status,
        204
    );
    assert_eq!(
        stack
            .call("POST", "/messages?user_id=ann&message=hi", &[JSON], "")
            .status,
        201,
        "{}",
        stack.logs()
    );

    // daprd delivers the event with the app's token, and the component takes it.
    stack.wait_for("the event's delivery", Duration::from_secs(15), |s| {
        s.app_output_lines()
            .iter()
            .any(|l| l.starts_with("Received event: user_id=\"ann\""))
    });

    // Anyone else gets a 401 on the event route.
    let event =
        json!({"data": {"user_id": "ann", "message": "hi", "id": 1, "created_at": "t", "write_id": "w1", "etag": "1", "published_ms": 1}})
            .to_string();
    assert_eq!(
        stack
            .call("POST", "/events/message-updated", &[CLOUD_EVENT], &event)
            .status,
        401
    );
    assert_eq!(
        stack
            .call(
                "POST",
                "/events/message-updated",
                &[CLOUD_EVENT, ("dapr-api-token", "wrong")],
                &event
            )
            .status,
        401
    );
    let allowed = stack.call(
        "POST",
        "/events/message-updated",
        &[CLOUD_EVENT, ("dapr-api-token", "app-secret")],
        &event,
    );
    assert_eq!(
        (allowed.status, allowed.json()),
        (200, json!({"status": "SUCCESS"}))
    );
}

#[test]
fn a_component_without_the_dapr_token_is_refused_by_daprd() {
    let stack = with_tokens(&[("SPIN_VARIABLE_APP_API_TOKEN", "app-secret")]);
    let reply = stack.call("POST", "/messages?user_id=ann&message=hi", &[JSON], "");
    assert_eq!(reply.status, 502, "{reply:?}");
    assert!(
        reply.json()["error"]
            .as_str()
            .unwrap()
            .contains("401 invalid api token"),
        "{reply:?}"
    );
}
