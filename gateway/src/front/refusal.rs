//! Why a client's subscribe or publish was refused, whatever refused it (the topic rules, a
//! limit, a bad payload, the store); each transport turns it into its own code.

use crate::auth::acl::Denied;
use crate::infra::token_bucket::millis_up;
use crate::live::retained::RetainError;
use crate::store::StoreError;
use protocol::ErrorCode;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not allowed for this session")]
    Forbidden,
    #[error("malformed topic or filter")]
    InvalidTopic,
    #[error("subscription limit reached")]
    TooManySubscriptions,
    /// A dev-mode client touched a topic withheld from it (`auth.anonymous_withheld`).
    #[error("refused")]
    Withheld,
    /// A limit other than the subscriptions' was reached (retained messages).
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("this device waits for approval from another device of the user")]
    ApprovalPending,
    #[error("bad request payload: {0}")]
    BadPayload(String),
    /// The store cannot take the request now; nothing was changed and it may be retried.
    #[error("{0}; retry later")]
    StoreUnavailable(String),
    /// The device used up its bucket for this action (`[rate_limits]`); nothing was done.
    #[error("too many {action} requests from this device; retry in {} ms", millis_up(*.retry_after))]
    RateLimited {
        action: &'static str,
        retry_after: Duration,
    },
    /// A sync of this device is still being answered.
    #[error("a sync of this device is still being answered; ask again after its last page")]
    SyncInFlight,
}

impl From<Denied> for Refusal {
    fn from(denied: Denied) -> Self {
        match denied {
            Denied::Forbidden => Self::Forbidden,
            Denied::InvalidTopic => Self::InvalidTopic,
        }
    }
}

impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Self {
        Self::StoreUnavailable(error.to_string())
    }
}

impl From<RetainError> for Refusal {
    fn from(error: RetainError) -> Self {
        match error {
            RetainError::Full(_) => Self::QuotaExceeded(error.to_string()),
            RetainError::Store(e) => e.into(),
        }
    }
}

impl Refusal {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::Forbidden => ErrorCode::Forbidden,
            Self::InvalidTopic => ErrorCode::InvalidTopic,
            Self::TooManySubscriptions => ErrorCode::TooManySubscriptions,
            Self::Withheld => ErrorCode::Forbidden,
            Self::QuotaExceeded(_) => ErrorCode::Unavailable,
            Self::ApprovalPending => ErrorCode::ApprovalPending,
            Self::BadPayload(_) => ErrorCode::InvalidRequest,
            Self::StoreUnavailable(_) => ErrorCode::Unavailable,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::SyncInFlight => ErrorCode::Busy,
        }
    }

    /// When the request may succeed again, in milliseconds, for a rate-limited one.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after, .. } => Some(millis_up(*retry_after)),
            _ => None,
        }
    }
}
