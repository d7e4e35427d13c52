//! How a request reaches the sidecar: the `Transport` seam, its real implementation over
//! wasi:http, and what it means when no HTTP answer comes back. Unit tests put a scripted
//! sidecar behind the seam; the contract with the real daprd is tested in tests/.

use http::{Request, Response};
use spin_sdk::http::ErrorCode;

/// Sends one request to the sidecar. `Err` means no HTTP answer came back at all, which is
/// different from Dapr answering an error.
pub trait Transport {
    fn send(&self, request: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, SendFailure>;
}

/// Why no HTTP answer came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendFailure {
    /// The wasm host refused to make the call: under Spin, the address is not in the
    /// component's `allowed_outbound_hosts`. A deployment error, not an outage.
    Denied,
    /// No connection or no answer: refused, reset, a DNS failure, ... (the host's words).
    Unreachable(String),
}

impl From<ErrorCode> for SendFailure {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::HttpRequestDenied => SendFailure::Denied,
            other => SendFailure::Unreachable(format!("{other:?}")),
        }
    }
}

/// The real transport: a wasi:http outgoing request, as Spin and `wasmtime serve` provide.
#[derive(Clone, Copy)]
pub struct WasiHttp;

impl Transport for WasiHttp {
    fn send(&self, request: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, SendFailure> {
        let response: spin_sdk::http::Response =
            spin_sdk::http::run(spin_sdk::http::send(request)).map_err(|e| match e {
                spin_sdk::http::SendError::Http(code) => SendFailure::from(code),
                other => SendFailure::Unreachable(other.to_string()),
            })?;
        let mut reply = Response::builder().status(*response.status());
        for (name, value) in response.headers() {
            reply = reply.header(name, value.as_bytes());
        }
        reply.body(response.into_body()).map_err(|e| SendFailure::Unreachable(e.to_string()))
    }
}

/// A scripted sidecar for unit tests of pure logic: it answers from a list and records
/// what was sent.
#[cfg(test)]
pub(crate) mod scripted {
    use super::*;
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;

    #[derive(Default)]
    pub struct Scripted {
        answers: RefCell<VecDeque<Result<Response<Vec<u8>>, SendFailure>>>,
        pub sent: RefCell<Vec<Request<Vec<u8>>>>,
    }

    impl Scripted {
        pub fn new() -> Rc<Scripted> {
            Rc::new(Scripted::default())
        }

        pub fn answer(self: &Rc<Self>, status: u16, headers: &[(&str, &str)], body: &str) -> Rc<Self> {
            let mut response = Response::builder().status(status);
            for (name, value) in headers {
                response = response.header(*name, *value);
            }
            self.answers.borrow_mut().push_back(Ok(response.body(body.as_bytes().to_vec()).unwrap()));
            self.clone()
        }

        /// The next call gets no HTTP answer, for this reason.
        pub fn fail(self: &Rc<Self>, why: SendFailure) -> Rc<Self> {
            self.answers.borrow_mut().push_back(Err(why));
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
            self.sent.borrow().iter().map(|r| format!("{} {}", r.method(), r.uri())).collect()
        }
    }

    impl Transport for Rc<Scripted> {
        fn send(&self, request: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, SendFailure> {
            let answer = self.answers.borrow_mut().pop_front();
            self.sent.borrow_mut().push(request);
            answer.expect("the test scripted fewer answers than the code made calls")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_refusal_is_denied_not_unreachable() {
        // Spin answers a call outside allowed_outbound_hosts with this error code.
        assert_eq!(SendFailure::from(ErrorCode::HttpRequestDenied), SendFailure::Denied);
    }

    #[test]
    fn other_error_codes_are_unreachable_in_the_hosts_words() {
        assert_eq!(
            SendFailure::from(ErrorCode::ConnectionRefused),
            SendFailure::Unreachable("ErrorCode::ConnectionRefused".into())
        );
    }
}
