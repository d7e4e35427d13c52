//! The one error type: every failure becomes `{"error": "..."}` with a status that says
//! whose fault it is (4xx: the caller's, 502/503: the Dapr sidecar's).

use http::StatusCode;
use serde_json::json;
use spin_sdk::http::{IntoResponse, Response};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Dapr's own `errorCode` (e.g. `ERR_STATE_STORE_NOT_FOUND`), passed on when Dapr failed.
    pub dapr_error_code: Option<String>,
    /// For 405: the methods the path does allow.
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            dapr_error_code: None,
            allow: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        ApiError {
            allow: Some(allow),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method not allowed here; use {allow}"),
            )
        }
    }

    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({ "error": self.message });
        if let Some(code) = &self.dapr_error_code {
            body["dapr_error_code"] = json!(code);
        }
        body
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status.as_u16(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            // Server-side failures are the operator's to see in the logs, not only the caller's.
            eprintln!("error: {self}");
        }
        let mut response = json_response(self.status, &self.body());
        if let Some(allow) = self.allow {
            response.set_header("allow", allow);
        }
        response
    }
}

/// A JSON response; every answer of this service, good or bad, is JSON.
pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status.as_u16())
        .header("content-type", "application/json")
        .body(body)
        .build()
}
