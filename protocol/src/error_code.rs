//! Machine-readable error codes, the same on every transport: JSON WebSocket `error` frames,
//! HTTP error bodies, and error replies on a device's reply topic.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame or body is not valid JSON, or not the expected shape.
    BadJson,
    /// The frame's `op` is not one the server knows.
    UnknownOp,
    /// A required field is missing or has a wrong value.
    InvalidRequest,
    /// The token is missing, malformed, forged or expired.
    Unauthorized,
    /// The operation needs an authenticated session.
    NotAuthenticated,
    /// The session is authenticated but may not touch this topic or resource.
    Forbidden,
    /// The topic or filter is not well formed.
    InvalidTopic,
    /// The session holds the configured maximum of subscriptions.
    TooManySubscriptions,
    /// The named user, device or resource does not exist.
    NotFound,
    /// The session waits for approval from one of the user's other devices.
    ApprovalPending,
    /// The request body or frame exceeds a configured limit.
    TooLarge,
    /// The server is temporarily unable to take the request; retry later.
    Unavailable,
    /// Too many requests of this kind from this device (or API key): retry after the time
    /// given (`retry_after_ms`, HTTP `Retry-After`).
    RateLimited,
    /// The same request of this device is still being answered (a sync: its last page has
    /// `more: false`); ask again once it is.
    Busy,
    /// The request, its body included, did not arrive in time.
    Timeout,
    /// An unexpected server-side failure.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadJson => "bad_json",
            Self::UnknownOp => "unknown_op",
            Self::InvalidRequest => "invalid_request",
            Self::Unauthorized => "unauthorized",
            Self::NotAuthenticated => "not_authenticated",
            Self::Forbidden => "forbidden",
            Self::InvalidTopic => "invalid_topic",
            Self::TooManySubscriptions => "too_many_subscriptions",
            Self::NotFound => "not_found",
            Self::ApprovalPending => "approval_pending",
            Self::TooLarge => "too_large",
            Self::Unavailable => "unavailable",
            Self::RateLimited => "rate_limited",
            Self::Busy => "busy",
            Self::Timeout => "timeout",
            Self::Internal => "internal",
        }
    }
}

/// The body of an HTTP error and of an error reply on a device's reply topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// For `rate_limited`: when the request may succeed again, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
                retry_after_ms: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_name_is_as_str() {
        for code in [
            ErrorCode::BadJson,
            ErrorCode::TooManySubscriptions,
            ErrorCode::ApprovalPending,
            ErrorCode::RateLimited,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
