//! Every sidecar call is bounded in time (wasi:http request options): the built component
//! in `wasmtime serve`, with a real socket where the sidecar would be that accepts each
//! connection and then stalls, before or in the middle of its answer.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use support::Component;

/// A "sidecar" that accepts, reads the request, writes `answer_start` (maybe nothing) and
/// then never writes again, holding every connection open until the test ends.
fn stalled_sidecar(answer_start: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut stream in listener.incoming().flatten() {
            let _ = stream.read(&mut [0u8; 4096]);
            let _ = stream.write_all(answer_start.as_bytes());
            held.push(stream);
        }
    });
    url
}

/// Calls the component and checks the answer's status, its JSON error, and that it came
/// after the limit ran out but well before a second limit would have.
fn assert_bounded(app: &Component, method: &str, path: &str, status: u16, says: &str, limit: Duration) {
    let start = Instant::now();
    let reply = app.call(method, path);
    let took = start.elapsed();
    assert_eq!(reply.status, status, "{method} {path}: {reply:?}");
    let error = reply.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains(says), "{method} {path}: {error}");
    assert!(
        took >= limit && took < limit + Duration::from_secs(3),
        "{method} {path} answered after {took:?}; the limit is {limit:?}"
    );
}

#[test]
fn a_sidecar_that_accepts_and_never_answers_is_504_within_the_first_byte_limit() {
    let limit = Duration::from_millis(1500);
    let app = Component::start(&[
        ("SPIN_VARIABLE_DAPR_HTTP_ENDPOINT", &stalled_sidecar("")),
        ("SPIN_VARIABLE_DAPR_FIRST_BYTE_TIMEOUT_MS", "1500"),
    ]);
    assert_bounded(
        &app,
        "POST",
        "/messages?user_id=ann&message=hi",
        504,
        "did not answer in time",
        limit,
    );
    assert_bounded(&app, "GET", "/messages/ann", 504, "did not answer in time", limit);
    assert_bounded(&app, "GET", "/readyz", 503, "did not answer in time", limit);
    assert_eq!(
        app.call("GET", "/healthz").status,
        200,
        "liveness does not wait for the sidecar"
    );
}

#[test]
fn a_sidecar_that_stops_in_the_middle_of_its_answer_is_504_within_the_between_bytes_limit() {
    let limit = Duration::from_millis(1500);
    let half_an_answer =
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"next_id\":";
    let app = Component::start(&[
        (
            "SPIN_VARIABLE_DAPR_HTTP_ENDPOINT",
            &stalled_sidecar(half_an_answer),
        ),
        ("SPIN_VARIABLE_DAPR_BETWEEN_BYTES_TIMEOUT_MS", "1500"),
        ("SPIN_VARIABLE_DAPR_FIRST_BYTE_TIMEOUT_MS", "10000"),
    ]);
    assert_bounded(&app, "GET", "/messages/ann", 504, "did not answer in time", limit);
}
