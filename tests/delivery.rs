//! Delivery, on the real stack (tests/support): a POST publishes its event,
//! then stores its message (src/delivery/); the subscriber acts once per stored message and
//! ignores phantoms (events of writes that never landed) and duplicates.
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

/// How long Dapr may take to deliver: an event pubsub.redis could not hand over comes again
/// after its `processingTimeout` (60 s, scripts/dapr/pubsub.yaml).
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

/// Publishes `event` to the topic straight through Dapr, as a POST would.
fn publish(stack: &Stack, event: &serde_json::Value) {
    let reply = support::request(
        stack.dapr_http_port,
        "POST",
        "/v1.0/publish/pubsub/message-updated",
        &[("content-type", "application/json")],
        &event.to_string(),
    )
    .unwrap();
    assert_eq!(reply.status, 204, "{reply:?}");
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
    let (during, background) = std::thread::scope(|scope| {
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
        stack.start_pubsub_redis();
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::SeqCst);
        (during, background.join().unwrap())
    });
    for (text, reply) in &during {
        assert_eq!(reply.status, 502, "{text}: {reply:?}");
        assert_eq!(
            reply.json()["dapr_error_code"],
            "ERR_PUBSUB_PUBLISH_MESSAGE",
            "{reply:?}"
        );
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
        "{} POSTs all along: {} answered 201, {refused} refused; {} messages stored, each with one event; filtered: {} phantom, {} duplicate deliveries",
        background.len(), background.len() - refused, stored.len(), handled.phantoms, handled.duplicates
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
/// the claim (src/delivery/claims.rs) keeps this to one `Received event` line per message. The messages
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
            let event = json!({"data": {"user_id": "twice", "message": format!("m{id}"), "id": id, "created_at": "t", "write_id": format!("w-twice-{id}"), "etag": "1", "published_ms": 1}}).to_string();
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

/// With a history of one message, most events arrive after their message has been dropped
/// from the history: the subscriber must still act on each stored message once, and on no
/// phantom of the many lost races, which it tells apart by the write ids the history keeps
/// past its limit (`MIN_WRITE_IDS`).
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

/// The course's own components (tests/fixtures/course: no outbox settings, as `dapr init`'s),
/// with only their Redis address changed: every POST answers 201, and each stored message's
/// event is acted on once, over two replicas.
#[test]
fn the_courses_own_components_work() {
    let mut stack = Stack::start_with(Options {
        course_components: true,
        ..Options::default()
    });
    let ports = [stack.app_port, stack.start_replica().app_port];
    let replies: Vec<Reply> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|n| scope.spawn(move || post(ports[n % 2], "course", &format!("m{n}"))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let failed: Vec<_> = replies.iter().filter(|r| r.status != 201).collect();
    assert!(failed.is_empty(), "{} of 20 failed: {failed:#?}", failed.len());
    let both = |s: &Stack| [s.app_output_lines(), s.replica().app_output_lines()].concat();
    let (stored, handled) = wait_for_events(&mut stack, "course", both);
    assert_eq!(
        texts(&stored),
        (0..20).map(|n| format!("m{n}")).collect(),
        "lost updates"
    );
    assert_one_event_per_stored_message(&stored, &handled.received, &stack.logs());
    report(
        "course components",
        format!(
            "20 POSTs over two replicas: 20 stored, 20 events acted on; filtered: {} phantom, {} duplicate deliveries",
            handled.phantoms, handled.duplicates
        ),
    );
}

/// Phantoms made on purpose, published straight to Dapr as a POST that lost its race, or
/// died between its publish and its write, would leave them: one conditional on an ETag the
/// history has moved past, ignored at once; one on the history's current ETag, whose write
/// may still land until the grace period has passed, then fenced off and ignored. The next
/// POST stores as usual.
#[test]
fn events_whose_writes_never_land_are_ignored() {
    let mut stack = Stack::start();
    assert_eq!(post(stack.app_port, "ann", "real").status, 201);
    let etag = stack.redis_command("HGET dapr-spin-hello||ann version");
    let etag = etag
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("no version in {etag:?}"));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for (write_id, etag) in [("w-lost-race", "0"), ("w-died", etag)] {
        let event = json!({
            "user_id": "ann", "message": "never stored", "id": 2, "created_at": "t",
            "write_id": write_id, "etag": etag, "published_ms": now_ms
        });
        publish(&stack, &event);
    }
    stack.wait_for("both phantoms' deliveries", DELIVERY, |s| {
        handled(&s.app_output_lines(), "ann").phantoms == 2
    });
    let lines = stack.app_output_lines();
    let fenced = lines
        .iter()
        .find(|l| l.starts_with("Ignored phantom event:") && l.contains("fenced off"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    // What Dapr did meanwhile: each delivery before the fence answered 503.
    let waits = lines
        .iter()
        .filter(|l| l.contains("not handled now: its write may still land"))
        .count();
    assert!(waits > 0, "fenced at its first delivery: {lines:#?}");
    report(
        "pending write",
        format!("an event whose write never landed: {waits} deliveries answered 503, then {fenced}"),
    );
    assert_eq!(post(stack.app_port, "ann", "after").status, 201);
    let (stored, handled) = wait_for_events(&mut stack, "ann", Stack::app_output_lines);
    assert_eq!(
        stored,
        BTreeSet::from([(1, "real".to_string()), (2, "after".to_string())])
    );
    assert_eq!(
        (handled.received, handled.phantoms),
        (vec![(1, "real".to_string()), (2, "after".to_string())], 2)
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
    let event = json!({
        "user_id": "ann", "message": "once", "id": 1, "created_at": "t", "write_id": write_id,
        "etag": "1", "published_ms": 1
    });
    publish(&stack, &event);

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

/// A benchmark, not a test (it asserts no speed): the time from each 201 to its `Received
/// event` line, for POSTs one after another on a quiet stack. Run by hand:
/// `cargo test --release --test delivery event_latency -- --ignored --nocapture`.
#[test]
#[ignore]
fn event_latency() {
    let stack = Stack::start();
    let mut latencies = Vec::new();
    for n in 0..200 {
        let text = format!("m{n}");
        assert_eq!(post(stack.app_port, "latency", &text).status, 201);
        let answered = Instant::now();
        let deadline = answered + DELIVERY;
        while !support::received(&stack.app_output_lines())
            .iter()
            .any(|r| r.user_id == "latency" && r.message == text)
        {
            assert!(Instant::now() < deadline, "no event for {text}\n{}", stack.logs());
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(answered.elapsed());
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    report(
        "event latency",
        format!(
            "{} POSTs one after another: from the 201 to the Received event line p50 {:.1} ms, p90 {:.1} ms, \
             p99 {:.1} ms, max {:.1} ms",
            latencies.len(),
            ms(latencies[latencies.len() / 2]),
            ms(latencies[latencies.len() * 9 / 10]),
            ms(latencies[latencies.len() * 99 / 100]),
            ms(latencies[latencies.len() - 1])
        ),
    );
}
