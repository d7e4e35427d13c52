//! Schema-driven fuzzing: schemathesis (scripts/requirements.txt) generates requests from
//! the component's own /openapi.json and checks every answer against it, with the built
//! component in `wasmtime serve` beside the real daprd and Redis (tests/support). Settings:
//! tests/fuzz/schemathesis.toml (fixed seed, bounded examples, the checks). Then the state
//! is compared with the answers: every stored message and published event comes from a POST
//! answered 201, so no refused (malformed) request changed anything.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;
use support::Stack;

/// Runs schemathesis in `mode` against the stack and fails with its report if any check
/// failed. Returns every request it sent, with its answer (its HAR log's entries).
fn schemathesis(stack: &Stack, mode: &str) -> Vec<Value> {
    let base = format!("http://127.0.0.1:{}", stack.app_port);
    let har = stack.dir.join(format!("schemathesis-{mode}.har"));
    let output = Command::new("schemathesis")
        .arg("--config-file")
        .arg(support::repo().join("tests/fuzz/schemathesis.toml"))
        .args(["--no-color", "run", "--mode", mode, "--url", &base, "--report", "har", "--report-har-path"])
        .arg(&har)
        .arg(format!("{base}/openapi.json"))
        .output()
        .expect("schemathesis not found: scripts/tools.sh python installs it; eval \"$(scripts/tools.sh env)\" puts it on PATH");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis ({mode}) found failures:\n{report}\n{}",
        stack.logs()
    );
    let log: Value = serde_json::from_slice(&std::fs::read(&har).unwrap()).unwrap();
    log["log"]["entries"].as_array().unwrap().clone()
}

/// How many messages each user got through POSTs answered 201, checking that each answer
/// gave the user's next id.
fn stored_per_user(exchanges: &[Value]) -> BTreeMap<String, u64> {
    let mut stored = BTreeMap::new();
    for exchange in exchanges {
        let posted = exchange["request"]["method"] == "POST"
            && exchange["request"]["url"].as_str().unwrap().contains("/messages");
        if !posted || exchange["response"]["status"] != 201 {
            continue;
        }
        let answer: Value =
            serde_json::from_str(exchange["response"]["content"]["text"].as_str().unwrap()).unwrap();
        let count = stored
            .entry(answer["user_id"].as_str().unwrap().to_string())
            .or_insert(0);
        *count += 1;
        assert_eq!(
            answer["message"]["id"], *count,
            "ids per user go 1, 2, 3, ...: {answer}"
        );
    }
    stored
}

#[test]
#[ignore = "scripts/test.sh runs it on its own, to show its counts: cargo test --test fuzz -- --ignored --nocapture"]
fn fuzzing_finds_no_undocumented_answer_and_refused_input_changes_nothing() {
    let mut stack = Stack::start();
    let malformed = schemathesis(&stack, "negative");
    let well_formed = schemathesis(&stack, "positive");
    let exchanges: Vec<Value> = malformed.iter().chain(&well_formed).cloned().collect();

    let stored = stored_per_user(&exchanges);
    let total: u64 = stored.values().sum();
    // State keys are "<app-id>||<user_id>", beside the subscriber's claims "<app-id>||handled/<write id>"
    // and the marks of writes that stored nothing "<app-id>||unstored/<write id>" (a user id
    // has no '/'). Each stored message's event was published to the topic's stream by its POST.
    let histories = r#"EVAL "local n = 0 for _, k in ipairs(redis.call('KEYS', 'dapr-spin-hello||*')) do if not string.find(k, '||handled/', 1, true) then n = n + 1 end end return n" 0"#;
    assert_eq!(
        stack.redis_command(histories),
        format!(":{}", stored.len()),
        "users with state"
    );
    let published = format!(":{total}");
    stack.wait_for(
        "every stored message's event on the topic",
        std::time::Duration::from_secs(60),
        |s| s.redis_command("XLEN message-updated") == published,
    );
    for (user_id, count) in &stored {
        let history = stack
            .get(&format!(
                "/messages/{}",
                utf8_percent_encode(user_id, NON_ALPHANUMERIC)
            ))
            .json();
        assert_eq!(
            history["messages"].as_array().unwrap().last().unwrap()["id"],
            *count,
            "{user_id:?}: {history}"
        );
    }
    println!(
        "fuzz: {} cases ({} malformed, {} well-formed), every answer as documented; {total} messages of {} users stored and published, each from a 201",
        exchanges.len(),
        malformed.len(),
        well_formed.len(),
        stored.len()
    );
}
