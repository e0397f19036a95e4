//! Live signals (typing, game moves, call set-up): relayed at once to the devices of their
//! recipient that are online now, on this node and the others, and never stored. Devices send
//! them on `.../signal`, backends with `POST /v1/signals`; both go through [`relay`].

use crate::gateway::Gateway;
use crate::session_handle::SessionId;
use protocol::envelope::SignalMessage;
use protocol::topics;
use serde_json::value::RawValue;

/// Hands `signal` to the devices of user `to` online now; `exclude` is the sending session,
/// which does not get its own signal back. The body is passed on as the sender wrote it.
pub fn relay(
    gw: &Gateway,
    to: &str,
    signal: &SignalMessage<&RawValue>,
    exclude: Option<SessionId>,
) {
    let delivered = serde_json::to_vec(signal).expect("a signal serializes");
    gw.user_topics
        .publish(to, &topics::signal(to), delivered.into(), exclude);
    gw.metrics.signals.inc();
}
