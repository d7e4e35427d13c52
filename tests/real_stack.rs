//! End-to-end: the built component in `wasmtime serve`, beside a real daprd and a real
//! Redis (tests/support). Nothing in here is a fake: these tests are about the contract
//! with Dapr's state and pub/sub APIs and with the wasm host.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::Stack;

const JSON: (&str, &str) = ("content-type", "application/json");

/// The course's own curl: fields in the query, `Content-Type: application/json`, no body.
fn post(stack: &Stack, user_id: &str, message: &str) -> support::Reply {
    stack.call(
        "POST",
        &format!("/messages?user_id={user_id}&message={message}"),
        &[JSON],
        "",
    )
}

/// Waits until the component has printed `count` lines starting with `prefix`, then a
/// little longer, and returns them all: a retried delivery would show up as an extra line.
fn app_lines(stack: &mut Stack, prefix: &str, count: usize) -> Vec<String> {
    let lines = |s: &Stack| -> Vec<String> {
        s.app_output_lines()
            .into_iter()
            .filter(|l| l.starts_with(prefix))
            .collect()
    };
    stack.wait_for(
        &format!("{count} '{prefix}' lines"),
        Duration::from_secs(15),
        |s| lines(s).len() >= count,
    );
    std::thread::sleep(support::RETRY_WINDOW);
    lines(stack)
}

#[test]
fn greeting_health_and_http_errors() {
    let stack = Stack::start();
    let reply = stack.get("/");
    assert_eq!(
        (reply.status, reply.json()),
        (200, json!({"message": "Hello from Dapr Spin!"}))
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(stack.get("/healthz").status, 200);
    assert_eq!(stack.get("/readyz").json(), json!({"status": "ready"}));

    let missing = stack.get("/nope");
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].is_string());
    let wrong = stack.call("DELETE", "/messages", &[], "");
    assert_eq!((wrong.status, wrong.header("allow")), (405, Some("POST")));
}

#[test]
fn course_curls_store_and_read_back() {
    let stack = Stack::start();
    let reply = post(&stack, "junaid", "Hello%20Dapr");
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(reply.json()["status"], "Stored and published message for junaid");

    let history = stack.get("/messages/junaid");
    assert_eq!(history.status, 200);
    assert_eq!(history.json()["user_id"], "junaid");
    assert_eq!(history.json()["message"], "Hello Dapr");
}

#[test]
fn json_body_and_history_order() {
    let stack = Stack::start();
    assert_eq!(post(&stack, "ann", "first").status, 201);
    let by_body = stack.call(
        "POST",
        "/messages",
        &[JSON],
        r#"{"user_id": "ann", "message": "second"}"#,
    );
    assert_eq!(by_body.status, 201, "{by_body:?}");
    assert_eq!(post(&stack, "ann", "third").status, 201);

    let history = stack.get("/messages/ann").json();
    assert_eq!(history["message"], "third");
    let messages = history["messages"].as_array().unwrap();
    let texts: Vec<_> = messages.iter().map(|m| m["message"].as_str().unwrap()).collect();
    let ids: Vec<_> = messages.iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!((texts, ids), (vec!["first", "second", "third"], vec![1, 2, 3]));
    assert!(messages
        .iter()
        .all(|m| m["created_at"].as_str().unwrap().ends_with('Z')));
}

#[test]
fn unknown_user_is_404() {
    let stack = Stack::start();
    let reply = stack.get("/messages/nobody");
    assert_eq!(reply.status, 404, "the original answered 500 here");
    assert_eq!(reply.json()["error"], "no messages for user \"nobody\"");
}

#[test]
fn subscription_handshake_and_one_delivery_per_publish() {
    let mut stack = Stack::start();
    let declared = stack.get("/dapr/subscribe").json();
    assert_eq!(
        declared,
        json!([
            {"pubsubname": "pubsub", "topic": "message-updated", "route": "/events/message-updated", "deadLetterTopic": "message-updated-dead-letter"},
            {"pubsubname": "pubsub", "topic": "message-updated-dead-letter", "route": "/events/dead-letter"},
        ])
    );

    for n in 1..=3 {
        assert_eq!(post(&stack, "sub", &format!("event{n}")).status, 201);
    }
    let received = app_lines(&mut stack, "Received event:", 3);
    assert_eq!(
        received.len(),
        3,
        "one line per publish, no redelivery: {received:#?}\n{}",
        stack.logs()
    );
    for n in 1..=3 {
        let line = received
            .iter()
            .find(|l| l.contains(&format!("\"event{n}\"")))
            .unwrap_or_else(|| panic!("event{n} missing: {received:#?}"));
        assert!(line.contains("user_id=\"sub\""), "{line}");
    }
}

#[test]
fn an_event_that_cannot_be_parsed_is_dropped_once_and_dead_lettered() {
    let mut stack = Stack::start();
    // Published straight to Dapr, not through the app: text that is no message event.
    let reply = support::request(
        stack.dapr_http_port,
        "POST",
        "/v1.0/publish/pubsub/message-updated",
        &[("content-type", "text/plain")],
        "not a message",
    )
    .unwrap();
    assert_eq!(reply.status, 204, "{reply:?}");
    let dropped = app_lines(&mut stack, "Dropped event:", 1);
    assert_eq!(dropped.len(), 1, "dropped once, not retried: {dropped:#?}");
    // Dapr moves a dropped event to the dead-letter topic at once.
    let dead = app_lines(&mut stack, "Dead-lettered event:", 1);
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert!(
        dead[0].starts_with("Dead-lettered event: not a message event ("),
        "{dead:#?}"
    );
    assert!(stack
        .app_output_lines()
        .iter()
        .all(|l| !l.starts_with("Received event:")));
}

/// A bad request and the error status it must get: path, headers, body, status.
type BadRequest = (String, Vec<(&'static str, &'static str)>, String, u16);

#[test]
fn bad_inputs_get_their_error_and_write_nothing() {
    let stack = Stack::start();
    let long_id = "u".repeat(129);
    let long_message = "m".repeat(4097);
    let cases: Vec<BadRequest> = vec![
        ("/messages?message=hi".into(), vec![JSON], String::new(), 400),
        (
            "/messages?user_id=&message=hi".into(),
            vec![JSON],
            String::new(),
            400,
        ),
        ("/messages?user_id=ann".into(), vec![JSON], String::new(), 400),
        (
            "/messages?user_id=ann&message=".into(),
            vec![JSON],
            String::new(),
            400,
        ),
        (
            format!("/messages?user_id={long_id}&message=hi"),
            vec![],
            String::new(),
            400,
        ),
        (
            "/messages?user_id=a%7C%7Cb&message=hi".into(),
            vec![],
            String::new(),
            400,
        ),
        (
            "/messages?user_id=a%2Fb&message=hi".into(),
            vec![],
            String::new(),
            400,
        ),
        (
            "/messages?user_id=a%0Ab&message=hi".into(),
            vec![],
            String::new(),
            400,
        ),
        (
            format!("/messages?user_id=ann&message={long_message}"),
            vec![],
            String::new(),
            413,
        ),
        ("/messages".into(), vec![JSON], "{not json".into(), 400),
        (
            "/messages".into(),
            vec![("content-type", "text/plain")],
            r#"{"user_id":"ann","message":"hi"}"#.into(),
            415,
        ),
        // Dot-segments: Dapr's HTTP server would remove them from the state URL (was a 502).
        (
            "/messages?user_id=.&message=hi".into(),
            vec![],
            String::new(),
            400,
        ),
        (
            "/messages?user_id=..&message=hi".into(),
            vec![],
            String::new(),
            400,
        ),
        (
            "/messages?user_id=%2E%2E&message=hi".into(),
            vec![],
            String::new(),
            400,
        ),
        (
            "/messages".into(),
            vec![JSON],
            r#"{"user_id":"..","message":"hi"}"#.into(),
            400,
        ),
    ];
    for (path, headers, body, status) in &cases {
        let reply = stack.call("POST", path, headers, body);
        assert_eq!(reply.status, *status, "{path}: {reply:?}");
        assert!(
            reply.json()["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}: {reply:?}"
        );
    }
    // State keys are "<app-id>||<user_id>"; the only other key is the topic's stream.
    assert_eq!(
        stack.redis_command("KEYS dapr-spin-hello*"),
        "*0",
        "a bad request wrote state to Redis"
    );
    for path in [
        "/messages/a%2Fb",
        "/messages/.",
        "/messages/..",
        "/messages/%2E%2E",
    ] {
        let reply = stack.get(path);
        assert_eq!(reply.status, 400, "{path}: {reply:?}");
    }
    // Other dotted ids are plain keys, stored and read back.
    for user_id in ["a.b", "...", ".hidden"] {
        assert_eq!(post(&stack, user_id, "dotted").status, 201, "{user_id}");
        assert_eq!(
            stack.get(&format!("/messages/{user_id}")).json()["message"],
            "dotted",
            "{user_id}"
        );
    }
}

#[test]
fn daprd_stopped_gives_503_then_recovers() {
    let mut stack = Stack::start();
    assert_eq!(post(&stack, "ann", "before").status, 201);
    stack.stop_daprd();

    let ready = stack.get("/readyz");
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(ready.json()["error"].as_str().unwrap().contains("unreachable"));
    let refused = post(&stack, "ann", "while-down");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(stack.get("/messages/ann").status, 503);
    assert_eq!(
        stack.get("/healthz").status,
        200,
        "liveness must not depend on the sidecar"
    );

    stack.start_daprd();
    stack.wait_until_ready();
    assert_eq!(post(&stack, "ann", "after").status, 201);
    let texts: Vec<_> = stack.get("/messages/ann").json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].clone())
        .collect();
    assert_eq!(
        texts,
        [json!("before"), json!("after")],
        "nothing from the outage was stored"
    );
}

/// Redis here (as in kubernetes/base/redis.yaml) keeps data in memory only. Stated behaviour:
/// after a Redis restart every history is gone (404), the service answers again without
/// any restart of its own, and new messages are stored and delivered.
#[test]
fn redis_restart_loses_history_but_not_the_service() {
    let mut stack = Stack::start();
    assert_eq!(post(&stack, "ann", "before").status, 201);
    app_lines(&mut stack, "Received event:", 1);
    stack.restart_redis();

    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let reply = post(&stack, "ann", "after");
        if reply.status == 201 || Instant::now() > deadline {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(
        after.status,
        201,
        "no recovery after the Redis restart: {after:?}\n{}",
        stack.logs()
    );
    let history = stack.get("/messages/ann").json();
    assert_eq!(
        history["messages"].as_array().unwrap().len(),
        1,
        "the old history should be gone: {history}"
    );
    assert_eq!(
        history["messages"][0]["id"], 1,
        "ids start again for a new history"
    );
    let received = app_lines(&mut stack, "Received event:", 2);
    assert!(
        received.iter().any(|l| l.contains("\"after\"")),
        "the event after the restart was not delivered: {received:#?}\n{}",
        stack.logs()
    );
}
