//! Stored means published, on the real stack (tests/support): a message is stored together
//! with its event through Dapr's outbox, or not at all; the subscriber acts once per stored
//! message and ignores phantoms (events of failed transactions) and duplicates.
//! Each test writes what it filtered to stderr, uncaptured, so that the counts show in CI.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Options, Reply, Stack};

/// The message's (id, text), as stored and as logged.
type Message = (u64, String);

/// How long Dapr may take to deliver: the outbox waits 1 s per event, and after a pub/sub
/// outage takes a failed hand-over up again after 30 s (scripts/dapr/outbox.yaml).
const DELIVERY: Duration = Duration::from_secs(90);

fn post(port: u16, user_id: &str, message: &str) -> Reply {
    support::request(
        port,
        "POST",
        &format!("/messages?user_id={user_id}&message={message}"),
        &[("content-type", "application/json")],
        "",
    )
    .unwrap_or_else(|e| panic!("POST {message}: {e}"))
}

/// The user's stored messages; none for a 404.
fn stored(stack: &Stack, user_id: &str) -> BTreeSet<Message> {
    let reply = stack.get(&format!("/messages/{user_id}"));
    if reply.status == 404 {
        return BTreeSet::new();
    }
    assert_eq!(reply.status, 200, "{reply:?}");
    let history = reply.json();
    history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().unwrap(),
                m["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// What the subscriber did, read from the lines the component printed.
#[derive(Debug, Default)]
struct Handled {
    /// `Received event` lines for the user, in order.
    received: Vec<Message>,
    phantoms: usize,
    duplicates: usize,
}

fn handled(lines: &[String], user_id: &str) -> Handled {
    let received = support::received(lines)
        .into_iter()
        .filter(|r| r.user_id == user_id)
        .map(|r| (r.id, r.message))
        .collect();
    let count = |prefix: &str| lines.iter().filter(|l| l.starts_with(prefix)).count();
    Handled {
        received,
        phantoms: count("Ignored phantom event:"),
        duplicates: count("Ignored duplicate event:"),
    }
}

/// Waits until every stored message has a `Received event` line (or `DELIVERY` passes),
/// then for Dapr's retry window, so that a redelivery would show too.
fn wait_for_events(
    stack: &mut Stack,
    user_id: &str,
    lines: impl Fn(&Stack) -> Vec<String>,
) -> (BTreeSet<Message>, Handled) {
    let expected = stored(stack, user_id);
    stack.wait_for(
        &format!("an event for each of {} stored messages", expected.len()),
        DELIVERY,
        |s| {
            let got: BTreeSet<Message> = handled(&lines(s), user_id).received.into_iter().collect();
            expected.is_subset(&got)
        },
    );
    std::thread::sleep(support::RETRY_WINDOW);
    (stored(stack, user_id), handled(&lines(stack), user_id))
}

/// Every `Received event` line is a stored message, and each stored message has exactly one.
fn assert_one_event_per_stored_message(stored: &BTreeSet<Message>, received: &[Message], logs: &str) {
    let mut counts: BTreeMap<&Message, usize> = BTreeMap::new();
    for message in received {
        assert!(
            stored.contains(message),
            "an event for a message that is not stored: {message:?}\nstored: {stored:?}\n{logs}"
        );
        *counts.entry(message).or_default() += 1;
    }
    for message in stored {
        assert_eq!(
            counts.get(message),
            Some(&1),
            "message {message:?}: events {counts:?}\n{logs}"
        );
    }
}

fn report(test: &str, what: String) {
    let _ = writeln!(std::io::stderr(), "{test}: {what}");
}

fn texts(messages: &BTreeSet<Message>) -> BTreeSet<String> {
    messages.iter().map(|(_, text)| text.clone()).collect()
}

#[test]
fn fifty_concurrent_posts_each_get_one_event() {
    let mut stack = Stack::start();
    let started = Instant::now();
    let replies: Vec<Reply> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50)
            .map(|n| {
                scope.spawn({
                    let port = stack.app_port;
                    move || post(port, "storm", &format!("m{n}"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let took = started.elapsed();
    let failed: Vec<_> = replies.iter().filter(|r| r.status != 201).collect();
    assert!(failed.is_empty(), "{} of 50 failed: {failed:#?}", failed.len());

    let (stored, handled) = wait_for_events(&mut stack, "storm", Stack::app_output_lines);
    assert_eq!(
        texts(&stored),
        (0..50).map(|n| format!("m{n}")).collect(),
        "lost updates"
    );
    assert_eq!(
        stored.iter().map(|(id, _)| *id).collect::<BTreeSet<_>>(),
        (1..=50).collect()
    );
    assert_one_event_per_stored_message(&stored, &handled.received, &stack.logs());
    report(
        "storm",
        format!(
        "50 POSTs in {:.2} s; 50 stored, 50 events acted on; filtered: {} phantom, {} duplicate deliveries",
        took.as_secs_f64(), handled.phantoms, handled.duplicates
    ),
    );
}

/// The pub/sub's Redis goes down and comes back, with POSTs before, during and after, and
/// one client posting all along. Each POST either stored nothing, or stored its message and
/// the event arrived (after the recovery). Never stored without an event.
#[test]
fn pub_sub_down_never_stores_without_an_event() {
    let mut stack = Stack::start_with(Options {
        own_pubsub_redis: true,
        ..Options::default()
    });
    assert_eq!(post(stack.app_port, "ann", "before").status, 201);

    let port = stack.app_port;
    let stop = AtomicBool::new(false);
    let (during, background, pending_in_outage) = std::thread::scope(|scope| {
        let background = scope.spawn(|| {
            let mut replies = Vec::new();
            for n in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                replies.push((
                    format!("all-along-{n}"),
                    post(port, "ann", &format!("all-along-{n}")).status,
                ));
                std::thread::sleep(Duration::from_millis(50));
            }
            replies
        });
        std::thread::sleep(Duration::from_millis(500));
        stack.stop_pubsub_redis();
        let during: Vec<(String, Reply)> = (0..3)
            .map(|n| (format!("during-{n}"), post(port, "ann", &format!("during-{n}"))))
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        // Stored, but not delivered yet: the outbox hands an event on 1 s after its
        // transaction, so the last second's messages before the outage are among these.
        let received: BTreeSet<Message> = handled(&stack.app_output_lines(), "ann")
            .received
            .into_iter()
            .collect();
        let pending: BTreeSet<Message> = stored(&stack, "ann").difference(&received).cloned().collect();
        stack.start_pubsub_redis();
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::SeqCst);
        (during, background.join().unwrap(), pending)
    });
    assert!(
        !pending_in_outage.is_empty(),
        "no stored message waited for its event through the outage: the test missed its case"
    );
    for (text, reply) in &during {
        assert_eq!(reply.status, 502, "{text}: {reply:?}");
        assert_eq!(reply.json()["dapr_error_code"], "ERR_PUBLISH_OUTBOX", "{reply:?}");
        assert!(
            reply.json()["error"]
                .as_str()
                .unwrap()
                .contains("nothing was stored"),
            "{reply:?}"
        );
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let reply = post(stack.app_port, "ann", "after");
        if reply.status == 201 || Instant::now() > deadline {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        after.status,
        201,
        "no recovery after the pub/sub came back: {after:?}\n{}",
        stack.logs()
    );

    let (stored, handled) = wait_for_events(&mut stack, "ann", Stack::app_output_lines);
    let stored_texts = texts(&stored);
    for (text, _) in &during {
        assert!(
            !stored_texts.contains(text),
            "{text} was refused but stored: {stored:?}"
        );
    }
    for (text, status) in &background {
        assert!(
            *status != 201 || stored_texts.contains(text),
            "{text} got 201 but is not stored: {stored:?}"
        );
    }
    assert!(
        stored_texts.contains("before") && stored_texts.contains("after"),
        "{stored:?}"
    );
    assert_one_event_per_stored_message(&stored, &handled.received, &stack.logs());
    let refused = background.iter().filter(|(_, status)| *status != 201).count();
    report("pub/sub down", format!(
        "{} POSTs all along: {} answered 201, {refused} refused; {} messages stored, each with one event, {} of them delivered only after the recovery; filtered: {} phantom, {} duplicate deliveries",
        background.len(), background.len() - refused, stored.len(), pending_in_outage.len(), handled.phantoms, handled.duplicates
    ));
}

#[test]
fn two_replicas_lose_no_update_and_handle_each_event_once() {
    let mut stack = Stack::start();
    let ports = [stack.app_port, stack.start_replica().app_port];
    let replies: Vec<Reply> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50)
            .map(|n| scope.spawn(move || post(ports[n % 2], "pair", &format!("m{n}"))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let failed: Vec<_> = replies.iter().filter(|r| r.status != 201).collect();
    assert!(failed.is_empty(), "{} of 50 failed: {failed:#?}", failed.len());

    let both = |s: &Stack| [s.app_output_lines(), s.replica().app_output_lines()].concat();
    let (stored, handled) = wait_for_events(&mut stack, "pair", both);
    assert_eq!(
        texts(&stored),
        (0..50).map(|n| format!("m{n}")).collect(),
        "lost updates"
    );
    assert_one_event_per_stored_message(&stored, &handled.received, &stack.logs());
    let first = crate::handled(&stack.app_output_lines(), "pair");
    let second = crate::handled(&stack.replica().app_output_lines(), "pair");
    report("two replicas", format!(
        "50 POSTs over both; 50 stored; events acted on: {} by the first, {} by the second; filtered: {} phantom, {} duplicate deliveries",
        first.received.len(), second.received.len(), handled.phantoms, handled.duplicates
    ));
}

/// The same delivery reaches both replicas at once, twice each, as a redelivery after a lost
/// answer can: one consumer group alone would never hand an event to two replicas, so only
/// the claim (events.rs) keeps this to one `Received event` line per message. The messages
/// are stored straight through Dapr's state API, so Dapr itself publishes no event for them.
#[test]
fn both_replicas_given_the_same_delivery_act_on_it_once() {
    let mut stack = Stack::start();
    let ports = [stack.app_port, stack.start_replica().app_port];
    let count = 10u64;
    let history = json!({
        "next_id": count,
        "messages": (1..=count).map(|id| json!({"id": id, "message": format!("m{id}"), "created_at": "t"})).collect::<Vec<_>>(),
        "write_ids": (1..=count).map(|id| (id.to_string(), json!(format!("w-twice-{id}")))).collect::<serde_json::Map<_, _>>(),
    });
    let saved = support::request(
        stack.dapr_http_port,
        "POST",
        "/v1.0/state/statestore",
        &[("content-type", "application/json")],
        &json!([{"key": "twice", "value": history}]).to_string(),
    )
    .unwrap();
    assert_eq!(saved.status, 204, "{saved:?}");

    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..=count).flat_map(|id| (0..4).map(move |copy| (id, copy))).map(|(id, copy)| scope.spawn(move || {
            let event = json!({"data": {"user_id": "twice", "message": format!("m{id}"), "id": id, "created_at": "t", "write_id": format!("w-twice-{id}")}}).to_string();
            // A 503 means another delivery holds the claim and may be at work: Dapr would deliver again, so do we.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let reply = support::request(ports[copy % 2], "POST", "/events/message-updated", &[("content-type", "application/cloudevents+json")], &event).unwrap();
                if reply.status != 503 || Instant::now() > deadline {
                    break reply.status;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{statuses:?}\n{}",
        stack.logs()
    );

    let lines = [stack.app_output_lines(), stack.replica().app_output_lines()].concat();
    let handled = handled(&lines, "twice");
    let expected: BTreeSet<Message> = (1..=count).map(|id| (id, format!("m{id}"))).collect();
    assert_one_event_per_stored_message(&expected, &handled.received, &stack.logs());
    assert_eq!(
        handled.duplicates,
        3 * count as usize,
        "each of the other three copies is a duplicate"
    );
    let by_first = crate::handled(&stack.app_output_lines(), "twice").received.len();
    report("same delivery to both replicas", format!(
        "{count} messages, 4 copies each over both: each acted on once ({by_first} by the first replica, {} by the second), {} duplicates",
        count as usize - by_first, handled.duplicates
    ));
}

/// With a history of one message, every event arrives after its message has been dropped
/// from the history: the subscriber must still act on each stored message once, and on no
/// phantom of the many lost races, which it tells apart by the `unstored/` marks (append.rs).
#[test]
fn the_history_limit_neither_loses_events_nor_lets_phantoms_through() {
    let mut stack = Stack::start_with_env(&[("SPIN_VARIABLE_MESSAGE_HISTORY_LIMIT", "1")]);
    let port = stack.app_port;
    let replies: Vec<Reply> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|n| scope.spawn(move || post(port, "tiny", &format!("m{n}"))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let expected: BTreeSet<Message> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 201, "{r:?}");
            let stored = &r.json()["message"];
            (
                stored["id"].as_u64().unwrap(),
                stored["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    stack.wait_for("an event for each of the 20 messages", DELIVERY, |s| {
        let got: BTreeSet<Message> = handled(&s.app_output_lines(), "tiny")
            .received
            .into_iter()
            .collect();
        expected.is_subset(&got)
    });
    std::thread::sleep(support::RETRY_WINDOW);
    let handled = handled(&stack.app_output_lines(), "tiny");
    assert_one_event_per_stored_message(&expected, &handled.received, &stack.logs());
    assert!(
        handled.phantoms > 0,
        "no race was lost, so no phantom came: the test missed its case"
    );
    report("history of one", format!(
        "20 concurrent POSTs, each event after its message left the history: 20 acted on; filtered: {} phantom, {} duplicate deliveries",
        handled.phantoms, handled.duplicates
    ));
}

/// The course's state store (and `dapr init`'s) has no outbox settings. Measured with daprd
/// 1.18.1: the transaction then fails (500 ERR_STATE_TRANSACTION: state.redis runs the
/// projection as a RedisJSON command that Redis lacks), yet the history write has landed.
/// The POST must say what is missing, store one copy, and not retry.
#[test]
fn a_state_store_without_the_outbox_gets_a_clear_500_and_one_copy() {
    let stack = Stack::start_with(Options {
        statestore_without_outbox: true,
        ..Options::default()
    });
    let started = Instant::now();
    let reply = post(stack.app_port, "course", "hello");
    let took = started.elapsed();
    assert_eq!(reply.status, 500, "{reply:?}");
    let error = reply.json()["error"].as_str().unwrap().to_string();
    for says in ["outboxPublishPubsub", "outboxPublishTopic", "no outbox"] {
        assert!(error.contains(says), "{error} should say {says}");
    }
    assert_eq!(
        stored(&stack, "course"),
        BTreeSet::from([(1, "hello".to_string())]),
        "one copy, not one per attempt"
    );
    report(
        "no outbox",
        format!(
            "POST answered 500 in {:.0} ms: {error}",
            took.as_secs_f64() * 1000.0
        ),
    );
}

/// A phantom made on purpose: the transaction the component sends, with a stale ETag, sent
/// straight to Dapr. Nothing is stored, Dapr still publishes the event, the subscriber
/// ignores it.
#[test]
fn the_event_of_a_failed_transaction_is_ignored() {
    let mut stack = Stack::start();
    assert_eq!(post(stack.app_port, "ann", "real").status, 201);
    let stale = json!({"operations": [
        {"operation": "upsert", "request": {"key": "ann", "etag": "999", "options": {"concurrency": "first-write"},
            "value": {"next_id": 2, "messages": [{"id": 2, "message": "never stored", "created_at": "t"}], "write_ids": {"2": "w-phantom"}}}},
        {"operation": "upsert", "request": {"key": "ann", "metadata": {"outbox.projection": "true", "contentType": "application/json"},
            "value": {"user_id": "ann", "message": "never stored", "id": 2, "created_at": "t", "write_id": "w-phantom"}}},
    ]});
    let reply = support::request(
        stack.dapr_http_port,
        "POST",
        "/v1.0/state/statestore/transaction",
        &[("content-type", "application/json")],
        &stale.to_string(),
    )
    .unwrap();
    assert_eq!(reply.status, 500, "{reply:?}");
    assert!(reply.body.contains("ERR_STATE_TRANSACTION"), "{reply:?}");

    stack.wait_for("the phantom's delivery", DELIVERY, |s| {
        handled(&s.app_output_lines(), "ann").phantoms == 1
    });
    let (stored, handled) = wait_for_events(&mut stack, "ann", Stack::app_output_lines);
    assert_eq!(stored, BTreeSet::from([(1, "real".to_string())]));
    assert_eq!(
        (handled.received, handled.phantoms),
        (vec![(1, "real".to_string())], 1)
    );
}

/// A redelivery made on purpose: the stored message's event published again, straight to
/// Dapr. The subscriber's claim is taken, so it ignores the copy.
#[test]
fn a_second_delivery_of_an_event_is_ignored() {
    let mut stack = Stack::start();
    assert_eq!(post(stack.app_port, "ann", "once").status, 201);
    wait_for_events(&mut stack, "ann", Stack::app_output_lines);
    let write_id = stack.redis_command("HGET dapr-spin-hello||ann data");
    let write_id = write_id
        .split("\"write_ids\":{\"1\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no write id in {write_id}"));
    let event =
        json!({"user_id": "ann", "message": "once", "id": 1, "created_at": "t", "write_id": write_id});
    let reply = support::request(
        stack.dapr_http_port,
        "POST",
        "/v1.0/publish/pubsub/message-updated",
        &[("content-type", "application/json")],
        &event.to_string(),
    )
    .unwrap();
    assert_eq!(reply.status, 204, "{reply:?}");

    stack.wait_for("the copy's delivery", DELIVERY, |s| {
        handled(&s.app_output_lines(), "ann").duplicates == 1
    });
    let handled = handled(&stack.app_output_lines(), "ann");
    assert_eq!(handled.received, [(1, "once".to_string())]);
}

/// The counts above read the component's lines from wasmtime's output, where two instances
/// printing at once can share a line (seen in CI); a lost `Received event` would fail a test.
#[test]
fn lines_printed_at_once_by_two_instances_are_read_whole() {
    let output = "stdout [89] :: Received event: id=3\n\
                  stdout [93] :: stdout [91] :: Received event: id=7\n\
                  Received event: id=9\n\
                  stderr [4] :: error: 502: a :: b\n\
                  stdout [x] :: not a prefix\n";
    assert_eq!(
        support::without_host_prefixes(output),
        [
            "Received event: id=3",
            "Received event: id=7",
            "Received event: id=9",
            "error: 502: a :: b",
            "stdout [x] :: not a prefix"
        ]
    );
}
