//! How a request reaches the sidecar: the `Transport` seam, its real implementation over
//! wasi:http with time limits, and what it means when no HTTP answer comes back. Unit tests
//! put a scripted sidecar behind the seam; the contract with the real daprd is in tests/.

use std::time::{Duration, Instant};

use http::{Request, Response};
use spin_sdk::http::conversions::TryIntoOutgoingRequest;
use spin_sdk::http::{ErrorCode, IncomingResponse, OutgoingBody};
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{http_error_code, RequestOptions};
use wasi::io::streams::StreamError;

/// Sends one request to the sidecar, within `limits`. `Err` means no HTTP answer came back
/// at all, which is different from Dapr answering an error.
pub trait Transport {
    fn send(&self, request: Request<Vec<u8>>, limits: &TimeLimits) -> Result<Response<Vec<u8>>, SendFailure>;
}

/// How long one sidecar call may wait, as wasi:http's request options: for the connection,
/// for the first byte of the answer, and between two bytes of its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeLimits {
    pub connect: Duration,
    pub first_byte: Duration,
    pub between_bytes: Duration,
}

/// Why no HTTP answer came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendFailure {
    /// The wasm host refused to make the call: under Spin, the address is not in the
    /// component's `allowed_outbound_hosts`. A deployment error, not an outage.
    Denied,
    /// A time limit ran out: no connection, no answer, or a body that stopped (the host's words).
    TimedOut(String),
    /// No connection: refused, a DNS failure, ... (the host's words). The request never arrived.
    Unreachable(String),
    /// The connection broke before the whole answer came: the sidecar may have acted on the
    /// request (the host's words).
    Broken(String),
}

impl SendFailure {
    /// Whether the sidecar may have acted on the request: it got there, or may have.
    pub fn may_have_arrived(&self) -> bool {
        matches!(self, SendFailure::TimedOut(_) | SendFailure::Broken(_))
    }
}

impl From<ErrorCode> for SendFailure {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::HttpRequestDenied => SendFailure::Denied,
            ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout
            | ErrorCode::HttpResponseTimeout => SendFailure::TimedOut(format!("{code:?}")),
            ErrorCode::ConnectionRefused
            | ErrorCode::DnsTimeout
            | ErrorCode::DnsError(_)
            | ErrorCode::DestinationNotFound
            | ErrorCode::DestinationUnavailable
            | ErrorCode::DestinationIpProhibited
            | ErrorCode::DestinationIpUnroutable
            | ErrorCode::ConnectionLimitReached => SendFailure::Unreachable(format!("{code:?}")),
            other => SendFailure::Broken(format!("{other:?}")),
        }
    }
}

/// A stream error: the wasi:http error code in it when there is one (a body that stalled
/// past the between-bytes limit is `ConnectionReadTimeout`), else the host's words.
fn stream_failure(error: StreamError) -> SendFailure {
    match error {
        StreamError::Closed => SendFailure::Broken("the connection closed".into()),
        StreamError::LastOperationFailed(error) => match http_error_code(&error) {
            Some(code) => SendFailure::from(code),
            None => SendFailure::Broken(error.to_debug_string()),
        },
    }
}

/// The real transport: a wasi:http outgoing request with its request options set, as Spin
/// and `wasmtime serve` provide it. (`spin_sdk::http::send` sets no options: no time limit.)
#[derive(Clone, Copy)]
pub struct WasiHttp;

impl Transport for WasiHttp {
    fn send(&self, request: Request<Vec<u8>>, limits: &TimeLimits) -> Result<Response<Vec<u8>>, SendFailure> {
        let (outgoing, body) = request
            .try_into_outgoing_request()
            .map_err(|e| SendFailure::Unreachable(e.to_string()))?;
        let outgoing_body = outgoing
            .body()
            .map_err(|()| SendFailure::Unreachable("the request body was taken".into()))?;
        let pending =
            outgoing_handler::handle(outgoing, Some(request_options(limits))).map_err(SendFailure::from)?;

        let stream = outgoing_body
            .write()
            .map_err(|()| SendFailure::Unreachable("the request body is not writable".into()))?;
        // wasi:io lets one blocking write carry at most 4096 bytes.
        for chunk in body.unwrap_or_default().chunks(4096) {
            stream.blocking_write_and_flush(chunk).map_err(stream_failure)?;
        }
        drop(stream);
        OutgoingBody::finish(outgoing_body, None).map_err(SendFailure::from)?;

        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(result)) => result.map_err(SendFailure::from)?,
            _ => return Err(SendFailure::Broken("the host lost the response".into())),
        };
        read_response(response, limits.between_bytes)
    }
}

fn request_options(limits: &TimeLimits) -> RequestOptions {
    let options = RequestOptions::new();
    let nanos = |d: Duration| Some(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    // A host that does not support an option refuses to set it; the call then goes without.
    let _ = options.set_connect_timeout(nanos(limits.connect));
    let _ = options.set_first_byte_timeout(nanos(limits.first_byte));
    let _ = options.set_between_bytes_timeout(nanos(limits.between_bytes));
    options
}

fn read_response(
    response: IncomingResponse,
    between_bytes: Duration,
) -> Result<Response<Vec<u8>>, SendFailure> {
    let mut reply = Response::builder().status(response.status());
    for (name, value) in response.headers().entries() {
        reply = reply.header(name, value);
    }
    let incoming_body = response
        .consume()
        .map_err(|()| SendFailure::Broken("the response body was taken".into()))?;
    let stream = incoming_body
        .stream()
        .map_err(|()| SendFailure::Broken("the response body is not readable".into()))?;
    let mut body = Vec::new();
    loop {
        let waiting = Instant::now();
        match stream.blocking_read(16 * 1024) {
            Ok(chunk) => body.extend(chunk),
            Err(StreamError::Closed) => break,
            Err(error) => {
                return Err(match stream_failure(error) {
                    // wasmtime 48 reports a stalled body as text ("connection read timeout"),
                    // without the error code: a read that failed after the whole limit timed out.
                    SendFailure::Broken(why) if waiting.elapsed() >= between_bytes => {
                        SendFailure::TimedOut(why)
                    }
                    failure => failure,
                });
            }
        }
    }
    reply.body(body).map_err(|e| SendFailure::Broken(e.to_string()))
}

/// A scripted sidecar for unit tests of pure logic: it answers from a list and records
/// what was sent.
#[cfg(test)]
pub(crate) mod scripted {
    use super::*;
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;

    type Answer = Box<dyn Fn(&[Request<Vec<u8>>]) -> Result<Response<Vec<u8>>, SendFailure>>;

    #[derive(Default)]
    pub struct Scripted {
        /// Each answer is made from the requests sent so far, this one last.
        answers: RefCell<VecDeque<Answer>>,
        pub sent: RefCell<Vec<Request<Vec<u8>>>>,
        /// The time limits each call was sent with.
        pub limits: RefCell<Vec<TimeLimits>>,
    }

    impl Scripted {
        pub fn new() -> Rc<Scripted> {
            Rc::new(Scripted::default())
        }

        pub fn answer(self: &Rc<Self>, status: u16, headers: &[(&str, &str)], body: &str) -> Rc<Self> {
            let response = response(status, headers, body);
            self.answers
                .borrow_mut()
                .push_back(Box::new(move |_| Ok(response.clone())));
            self.clone()
        }

        /// The next call gets no HTTP answer, for this reason.
        pub fn fail(self: &Rc<Self>, why: SendFailure) -> Rc<Self> {
            self.answers
                .borrow_mut()
                .push_back(Box::new(move |_| Err(why.clone())));
            self.clone()
        }

        /// The next call (a read) gets 200 with the value the last plain save sent, under
        /// `etag`: a save that landed although its answer was lost.
        pub fn answer_last_saved(self: &Rc<Self>, etag: &str) -> Rc<Self> {
            let etag = etag.to_string();
            self.answers.borrow_mut().push_back(Box::new(move |sent| {
                let saved = sent
                    .iter()
                    .rev()
                    .find(|r| {
                        let path = r.uri().path();
                        r.method() == http::Method::POST
                            && path.starts_with("/v1.0/state/")
                            && !path.ends_with("/transaction")
                    })
                    .expect("no save was sent");
                let body: serde_json::Value = serde_json::from_slice(saved.body()).unwrap();
                Ok(response(200, &[("etag", &etag)], &body[0]["value"].to_string()))
            }));
            self.clone()
        }

        /// The next call (a read) gets 200 with the value the last transaction sent wrote,
        /// under `etag`: a transaction that ran although its answer said otherwise.
        pub fn answer_last_written(self: &Rc<Self>, etag: &str) -> Rc<Self> {
            let etag = etag.to_string();
            self.answers.borrow_mut().push_back(Box::new(move |sent| {
                let written = sent
                    .iter()
                    .rev()
                    .find(|r| r.uri().path().ends_with("/transaction"))
                    .expect("no transaction was sent");
                let body: serde_json::Value = serde_json::from_slice(written.body()).unwrap();
                Ok(response(
                    200,
                    &[("etag", &etag)],
                    &body["operations"][0]["request"]["value"].to_string(),
                ))
            }));
            self.clone()
        }

        pub fn refuse(self: &Rc<Self>) -> Rc<Self> {
            self.fail(SendFailure::from(ErrorCode::ConnectionRefused))
        }

        /// The JSON body of the n-th request sent.
        pub fn json_sent(&self, n: usize) -> serde_json::Value {
            serde_json::from_slice(self.sent.borrow()[n].body()).unwrap()
        }

        pub fn calls(&self) -> Vec<String> {
            self.sent
                .borrow()
                .iter()
                .map(|r| format!("{} {}", r.method(), r.uri()))
                .collect()
        }
    }

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response<Vec<u8>> {
        let mut response = Response::builder().status(status);
        for (name, value) in headers {
            response = response.header(*name, *value);
        }
        response.body(body.as_bytes().to_vec()).unwrap()
    }

    impl Transport for Rc<Scripted> {
        fn send(
            &self,
            request: Request<Vec<u8>>,
            limits: &TimeLimits,
        ) -> Result<Response<Vec<u8>>, SendFailure> {
            let answer = self.answers.borrow_mut().pop_front();
            self.sent.borrow_mut().push(request);
            self.limits.borrow_mut().push(*limits);
            answer.expect("the test scripted fewer answers than the code made calls")(&self.sent.borrow())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_refusal_is_denied_not_unreachable() {
        // Spin answers a call outside allowed_outbound_hosts with this error code.
        assert_eq!(
            SendFailure::from(ErrorCode::HttpRequestDenied),
            SendFailure::Denied
        );
    }

    #[test]
    fn each_time_limit_running_out_is_timed_out() {
        // Spin and wasmtime: connect -> ConnectionTimeout; first byte and between bytes ->
        // ConnectionReadTimeout.
        for code in [
            ErrorCode::ConnectionTimeout,
            ErrorCode::ConnectionReadTimeout,
            ErrorCode::ConnectionWriteTimeout,
            ErrorCode::HttpResponseTimeout,
        ] {
            assert!(
                matches!(SendFailure::from(code.clone()), SendFailure::TimedOut(_)),
                "{code:?}"
            );
        }
    }

    #[test]
    fn no_connection_is_unreachable_in_the_hosts_words() {
        assert_eq!(
            SendFailure::from(ErrorCode::ConnectionRefused),
            SendFailure::Unreachable("ErrorCode::ConnectionRefused".into())
        );
        assert!(!SendFailure::from(ErrorCode::ConnectionRefused).may_have_arrived());
    }

    #[test]
    fn a_connection_that_broke_or_timed_out_may_have_delivered_the_request() {
        // daprd killed mid-call: the request may have run, so a write must be checked, not retried.
        for code in [
            ErrorCode::ConnectionTerminated,
            ErrorCode::HttpProtocolError,
            ErrorCode::ConnectionReadTimeout,
        ] {
            assert!(SendFailure::from(code.clone()).may_have_arrived(), "{code:?}");
        }
        assert!(!SendFailure::Denied.may_have_arrived());
    }
}
