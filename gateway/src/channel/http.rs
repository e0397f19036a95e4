//! One JSON call to a provider, and what a failure of the call itself (not an error code in
//! the answer) means for the push.

use super::Outcome;
use serde_json::Value;
use std::time::Duration;

/// The HTTP client of a channel. `timeout` bounds a whole call, reading the answer included: a
/// provider that hangs must not hold a worker longer than that.
pub(super) fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(timeout).build()?)
}

/// Sends `request` and reads its JSON answer. Both providers answer their errors as HTTP 200 with
/// a code in the body, so any other status means the call itself failed.
///
/// A call that timed out may have been carried out by the provider; it is still answered as
/// [`Outcome::Retry`], because the push's key makes the provider drop the repeat.
pub(super) async fn post_json(request: reqwest::RequestBuilder) -> Result<Value, Outcome> {
    let response = request.send().await.map_err(call_failed)?;
    let status = response.status();
    if !status.is_success() {
        let code = format!("http_{}", status.as_u16());
        let transient = status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT;
        return Err(if transient {
            Outcome::Retry { code, after: None }
        } else {
            Outcome::Failed {
                code,
                message: format!("the provider answered HTTP {status}"),
            }
        });
    }
    response.json().await.map_err(call_failed)
}

fn call_failed(error: reqwest::Error) -> Outcome {
    let code = if error.is_timeout() {
        "timeout"
    } else if error.is_decode() {
        // A proxy's error page or a cut answer: the provider itself may be fine a moment later.
        "bad_reply"
    } else {
        "network"
    };
    // Without the URL: WeChat's carries the access token.
    tracing::debug!("provider call failed: {}", error.without_url());
    Outcome::Retry {
        code: code.into(),
        after: None,
    }
}

/// The answer's numeric `field` (`errcode`, `code`), `missing` when absent (WeChat leaves
/// `errcode` out of a successful token answer). Read from text too, as some gateways of the
/// providers quote numbers; anything else is a reply the channel cannot trust.
pub(super) fn code(answer: &Value, field: &str, missing: Option<i64>) -> Result<i64, Outcome> {
    let code = match answer.get(field) {
        None => missing,
        Some(Value::Number(number)) => number.as_i64(),
        Some(Value::String(text)) => text.trim().parse().ok(),
        Some(_) => None,
    };
    code.ok_or_else(|| bad_reply(&format!("no numeric `{field}` in {answer}")))
}

/// An answer that parsed as JSON but not as what the provider promises.
pub(super) fn bad_reply(why: &str) -> Outcome {
    tracing::warn!("unexpected provider answer: {why}");
    Outcome::Retry {
        code: "bad_reply".into(),
        after: None,
    }
}

/// A number or text field as text (`msgid`, task ids, `expire_time`).
pub(super) fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}
