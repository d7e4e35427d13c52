//! dapr-spin-hello: the DACA "hello Dapr" message service as a Spin component.
//!
//! - `routes`: the HTTP API (a route table, handlers that read like the API docs).
//! - `openapi`: `GET /openapi.json`, the API described (src/openapi.json).
//! - `request`: reading a request's headers, query and JSON body.
//! - `messages`: the message domain: validation, the bounded per-user history.
//! - `delivery`: every stored message's event delivered, and acted on once: the POST
//!   publishes, then stores (`delivery/publish.rs`); the subscriber checks each delivery
//!   against the history (`delivery/subscribe.rs`) and claims it (`delivery/claims.rs`).
//! - `ids`: random ids from wasi:random.
//! - `dapr`: the Dapr sidecar's HTTP API (state with ETags, publish, health), one call per fn.
//! - `transport`: how a request reaches the sidecar (wasi:http), and what no answer means.
//! - `trace`: the W3C trace context passed on from each request to its Dapr calls.
//! - `config`: settings from Spin variables, with defaults for a Dapr sidecar.
//! - `error`: the one JSON error type every failure becomes.

pub mod config;
pub mod dapr;
pub mod delivery;
pub mod error;
pub mod ids;
pub mod messages;
pub mod openapi;
pub mod request;
pub mod routes;
pub mod trace;
pub mod transport;

/// The wasi:http entry point: every request goes through the router, which calls the
/// Dapr sidecar over wasi:http outgoing requests. Only on wasm: natively (`cargo test`)
/// the crate is a plain library, and the export's name would not link.
#[cfg(target_arch = "wasm32")]
#[spin_sdk::http_component]
fn handle(request: spin_sdk::http::Request) -> spin_sdk::http::Response {
    routes::router(transport::WasiHttp, config::Config::from_spin_variables).handle(request)
}
