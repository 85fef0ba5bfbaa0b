//! One error type, answered as HTTP status plus JSON, or as an SSE `error`
//! event once a stream has started.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use worker_common::ErrorCode;

/// One violated constraint of a request field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field.
    pub field: String,
    /// The constraint, e.g. `1..=64 of [A-Za-z0-9._-]`.
    pub constraint: String,
    /// What is wrong.
    pub message: String,
}

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// Error code (decides the status).
    pub code: ErrorCode,
    /// What went wrong and what to do.
    pub message: String,
    /// Per-field violations, for `INVALID_REQUEST`.
    pub details: Vec<FieldError>,
    /// Seconds a client should wait before retrying (429, 503).
    pub retry_after: Option<u64>,
    /// Overrides the code's retriable flag (the shutdown case).
    pub retriable: Option<bool>,
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
            retriable: None,
        }
    }

    /// `INVALID_REQUEST` listing every violated field.
    pub fn invalid(details: Vec<FieldError>) -> Self {
        let fields: Vec<&str> = details.iter().map(|d| d.field.as_str()).collect();
        let message = format!("invalid request: {}", fields.join(", "));
        ApiError {
            details,
            ..ApiError::new(ErrorCode::InvalidRequest, message)
        }
    }

    /// The JSON body: `{"error": {code, message, retriable, details?}}`.
    pub fn body(&self) -> serde_json::Value {
        let mut e = json!({
            "code": self.code,
            "message": self.message,
            "retriable": self.retriable.unwrap_or(self.code.retriable()),
        });
        if !self.details.is_empty() {
            e["details"] = json!(self.details);
        }
        json!({ "error": e })
    }

    /// The SSE `error` event payload: `{type, code, message, retriable}`.
    pub fn event_data(&self) -> serde_json::Value {
        json!({
            "type": "error",
            "code": self.code,
            "message": self.message,
            "retriable": self.retriable.unwrap_or(self.code.retriable()),
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(mut self) -> Response {
        let mut status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if self.code == ErrorCode::Cancelled && self.retriable == Some(true) {
            // Cut off by shutdown, not by the client: a status that clients
            // and proxies retry elsewhere (499 is for a client that left).
            status = StatusCode::SERVICE_UNAVAILABLE;
            self.retry_after.get_or_insert(1);
        }
        let mut resp = (status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_cut_off_by_shutdown_is_a_503_to_retry() {
        let mut e = ApiError::new(ErrorCode::Cancelled, "the worker is shutting down");
        e.retriable = Some(true);
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            r.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        // Cancelled by the client: the code's own status.
        let r = ApiError::new(ErrorCode::Cancelled, "cancelled").into_response();
        assert_eq!(r.status().as_u16(), ErrorCode::Cancelled.http_status());
    }
}
