//! The external push channels against the providers' test doubles (`loadtest::mock_channels`):
//! real HTTP, the providers' answers and error codes, token caching and refresh, and that a
//! retried push is delivered once.
//!
//! One file of tests per provider.

mod qiuqiu;
mod wechat;

use gateway::channel::Outcome;
use std::time::Duration;

/// How long a channel waits for a provider's answer in these tests.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The code of a send that failed for good; any other outcome fails the test.
fn failed_code(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Failed { code, .. } => code,
        other => panic!("not failed: {other:?}"),
    }
}

/// Whether the provider took the push.
fn is_sent(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Sent { .. })
}
