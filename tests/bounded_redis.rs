//! A full Redis on the real stack (tests/support), set as kubernetes/base/redis.yaml sets it: at
//! its maxmemory with the noeviction policy, Redis refuses writes, so a POST fails with a
//! clear error and stores nothing, reads keep working, and no history is evicted
//! (docs/delivery.md, "Bounded Redis").

mod support;

use support::{Reply, Stack};

fn post(stack: &Stack, user_id: &str, message: &str) -> Reply {
    stack.call(
        "POST",
        &format!("/messages?user_id={user_id}&message={message}"),
        &[("content-type", "application/json")],
        "",
    )
}

fn texts(stack: &Stack, user_id: &str) -> Vec<String> {
    let reply = stack.get(&format!("/messages/{user_id}"));
    assert_eq!(reply.status, 200, "{user_id}'s history is gone: {reply:?}");
    reply.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_full_redis_refuses_posts_and_evicts_no_history() {
    let stack = Stack::start();
    assert_eq!(post(&stack, "ann", "kept").status, 201);

    // Full at once: a maxmemory of 1 byte, which any data set is over.
    assert_eq!(
        stack.redis_command("CONFIG SET maxmemory-policy noeviction"),
        "+OK"
    );
    assert_eq!(stack.redis_command("CONFIG SET maxmemory 1"), "+OK");
    for (user_id, message) in [("ann", "refused"), ("bob", "refused")] {
        let reply = post(&stack, user_id, message);
        assert_eq!(reply.status, 502, "{reply:?}\n{}", stack.logs());
        assert!(
            reply.json()["error"].as_str().unwrap().contains("OOM"),
            "Redis's own words are passed on: {reply:?}"
        );
    }
    assert_eq!(
        texts(&stack, "ann"),
        ["kept"],
        "read while full, nothing evicted, nothing added"
    );
    assert_eq!(stack.get("/messages/bob").status, 404);

    assert_eq!(stack.redis_command("CONFIG SET maxmemory 0"), "+OK");
    assert_eq!(
        post(&stack, "ann", "again").status,
        201,
        "writes work again once there is room"
    );
    assert_eq!(texts(&stack, "ann"), ["kept", "again"]);
}
