//! The ceiling of `GET /` on a host: a spin-sdk component that does nothing but answer the
//! service's greeting, with the same headers. The service's throughput ÷ this one's is the
//! share of the host's limit that the service reaches; the rest is the service's own work.

use spin_sdk::http::{Request, Response};

#[spin_sdk::http_component]
fn handle(_: Request) -> Response {
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(r#"{"message":"Hello from Dapr Spin!"}"#)
        .build()
}
