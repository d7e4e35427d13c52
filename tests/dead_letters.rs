//! Poison events on the real stack (tests/support): an event the subscriber can never take is
//! answered DROP, which Dapr moves at once to the dead-letter topic that /dapr/subscribe
//! declares; the dead-letter route logs it, and both streams acknowledge it in Redis, so it is
//! never delivered again (docs/delivery.md, "Dead letters").

mod support;

use std::time::Duration;

use serde_json::json;
use support::Stack;

fn publish(stack: &Stack, topic: &str, content_type: &str, body: &str) {
    let path = format!("/v1.0/publish/pubsub/{topic}");
    let reply = support::request(
        stack.dapr_http_port,
        "POST",
        &path,
        &[("content-type", content_type)],
        body,
    )
    .unwrap();
    assert_eq!(reply.status, 204, "{reply:?}");
}

fn lines_starting(stack: &Stack, prefix: &str) -> Vec<String> {
    stack
        .app_output_lines()
        .into_iter()
        .filter(|line| line.starts_with(prefix))
        .collect()
}

/// Whether the app's consumer group (the app id) has no entry of `stream` waiting for an
/// acknowledgement: an entry acknowledged is one pubsub.redis never delivers again.
fn nothing_pending(stack: &Stack, stream: &str) -> bool {
    // XPENDING's summary starts with the number of pending entries.
    stack
        .redis_command(&format!("XPENDING {stream} dapr-spin-hello"))
        .starts_with("*4\r\n:0\r\n")
}

/// The user's stored value is not a message history, so no event for that user can ever be
/// checked: a poison event, made with Dapr's own APIs.
#[test]
fn an_event_that_can_never_be_taken_is_dead_lettered_at_once_and_never_delivered_again() {
    let mut stack = Stack::start();
    let corrupt = json!([{"key": "poison", "value": {"messages": "not a list"}}]);
    let reply = support::request(
        stack.dapr_http_port,
        "POST",
        "/v1.0/state/statestore",
        &[("content-type", "application/json")],
        &corrupt.to_string(),
    )
    .unwrap();
    assert_eq!(reply.status, 204, "{reply:?}");
    let event = json!({
        "user_id": "poison", "message": "m", "id": 1, "created_at": "t", "write_id": "w-poison",
        "etag": "1", "published_ms": 1
    });
    publish(&stack, "message-updated", "application/json", &event.to_string());

    let dead_lettered = "Dead-lettered event: user_id=\"poison\" message=\"m\" id=1 write w-poison";
    stack.wait_for("the dead-letter route's line", Duration::from_secs(60), |s| {
        !lines_starting(s, dead_lettered).is_empty()
    });
    stack.wait_for("both streams acknowledged", Duration::from_secs(30), |s| {
        nothing_pending(s, "message-updated") && nothing_pending(s, "message-updated-dead-letter")
    });
    // Anything still to come would come within Dapr's retry window.
    std::thread::sleep(support::RETRY_WINDOW);

    let dropped = lines_starting(&stack, "Dropped event: user_id=\"poison\"");
    assert!(
        dropped.len() == 1 && dropped[0].contains("not a message history"),
        "delivered once, not retried: {dropped:#?}\n{}",
        stack.logs()
    );
    let dead = lines_starting(&stack, "Dead-lettered event:");
    assert!(
        dead.len() == 1 && dead[0].starts_with(dead_lettered) && dead[0].contains("not a message history"),
        "{dead:#?}\n{}",
        stack.logs()
    );
    assert!(lines_starting(&stack, "Received event:").is_empty());
    assert_eq!(
        stack.redis_command("XLEN message-updated-dead-letter"),
        ":1",
        "the dead letter stays in its stream"
    );
}
