//! W3C trace context end to end: the real daprd traces every call (sampling 1) to a Zipkin
//! endpoint that this test runs, and the spans of one POST's calls (its publish and its
//! write among them) carry the trace id of the POST's `traceparent`. The event route
//! logs the trace id of the delivery Dapr makes: the POST's.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Stack;

/// A Zipkin-compatible collector: records the spans of every `POST /api/v2/spans`.
struct Zipkin {
    port: u16,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Zipkin {
    fn start() -> Zipkin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let recorded = spans.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let recorded = recorded.clone();
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().unwrap();
                    let mut reader = BufReader::new(stream);
                    // One connection carries many POSTs (Go's client keeps it alive).
                    while let Some(body) = read_post(&mut reader) {
                        if let Ok(Value::Array(batch)) = serde_json::from_slice(&body) {
                            recorded.lock().unwrap().extend(batch);
                        }
                        if writer
                            .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Zipkin { port, spans }
    }

    fn spans_of_trace(&self, trace_id: &str) -> Vec<Value> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s["traceId"] == trace_id)
            .cloned()
            .collect()
    }
}

/// Reads one request from the connection and returns its body (None at the end).
fn read_post(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        head.push(line.trim_end().to_ascii_lowercase());
    }
    let header = |name: &str| {
        head.iter()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    if header("transfer-encoding:").is_some_and(|v| v == "chunked") {
        let mut raw = Vec::new();
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            raw.extend_from_slice(size.as_bytes());
            let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).ok()?;
            raw.extend_from_slice(&chunk);
            if n == 0 {
                return support::dechunk(&raw);
            }
        }
    }
    let mut body = vec![
        0;
        header("content-length:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    ];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}

#[test]
fn one_posts_state_spans_carry_its_trace_id_and_the_event_route_logs_the_delivered_one() {
    let zipkin = Zipkin::start();
    let mut stack = Stack::start_traced(zipkin.port);
    let trace_id = "5e0c63257de34c92bf9efcd03927272e";
    let parent_span_id = "a0a0a0a0a0a0a0a0";
    let traceparent = format!("00-{trace_id}-{parent_span_id}-01");
    let reply = stack.call(
        "POST",
        "/messages?user_id=traced&message=hi",
        &[("traceparent", &traceparent), ("tracestate", "test=1")],
        "",
    );
    assert_eq!(reply.status, 201, "{reply:?}");

    // daprd exports in batches, every few seconds. Its span for each API call names the call
    // (tag dapr.api) and, when the call carried a traceparent, has that trace and parent.
    // A new user's POST: the read, the event's publish, and the save that creates the history
    // holding the message.
    let calls = [
        "GET /v1.0/state/statestore/traced",
        "POST /v1.0/publish/pubsub/message-updated",
        "POST /v1.0/state/statestore",
    ];
    let carried = |spans: &[Value]| -> Vec<String> {
        spans
            .iter()
            .filter(|s| s["parentId"] == parent_span_id)
            .filter_map(|s| s["tags"]["dapr.api"].as_str().map(str::to_string))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = zipkin.spans_of_trace(trace_id);
        if calls.iter().all(|call| carried(&spans).iter().any(|c| c == call)) || Instant::now() > deadline {
            break spans;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let carried = carried(&spans);
    for call in calls {
        assert!(
            carried.iter().any(|c| c == call),
            "no span of {call} in trace {trace_id} under {parent_span_id}: {spans:#?}\nall spans: {:#?}",
            zipkin.spans.lock().unwrap()
        );
    }

    let received = {
        stack.wait_for("the event's delivery", Duration::from_secs(15), |s| {
            s.app_output_lines()
                .iter()
                .any(|l| l.starts_with("Received event:"))
        });
        stack
            .app_output_lines()
            .into_iter()
            .find(|l| l.starts_with("Received event:"))
            .unwrap()
    };
    // The event route logs the trace Dapr delivers the event in: the POST's, whose publish
    // put it in the CloudEvent, with daprd's delivery span in it.
    let logged = received
        .rsplit_once("trace_id=")
        .map(|(_, id)| id.to_string())
        .unwrap_or_else(|| panic!("no trace id logged: {received}"));
    assert_eq!(logged, trace_id, "{received}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while zipkin
        .spans_of_trace(&logged)
        .iter()
        .all(|s| s["name"] != "pubsub/message-updated")
    {
        assert!(
            Instant::now() < deadline,
            "no delivery span in the logged trace {logged}: {:#?}",
            zipkin.spans.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
