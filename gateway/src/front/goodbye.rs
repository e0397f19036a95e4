//! How long a connection the gateway ends goes on reading its client after saying why. A
//! socket closed with unread data is reset, and a client library stops at its first failed
//! write, before it reads the DISCONNECT or close frame that says why it was closed: so the
//! socket is drained a while first, on MQTT and on the JSON WebSocket alike.

use protocol::envelope::DisconnectReason;
use std::time::Duration;

/// How long a client told why it must go may go on sending before its socket closes.
pub const LINGER: Duration = Duration::from_secs(2);

/// How long to drain the socket of a connection the gateway ends for `reason`, if at all: when
/// the client was told why it must go and may still be sending. Not after a takeover or the
/// account's deletion: the new connection's handshake and the deletion wait for this
/// connection to end. At shutdown half the grace at most: the stores close in the rest.
pub fn linger(reason: DisconnectReason, shutdown_grace: Duration) -> Option<Duration> {
    match reason {
        DisconnectReason::Shutdown => Some(LINGER.min(shutdown_grace / 2)),
        DisconnectReason::Kicked
        | DisconnectReason::SlowConsumer
        | DisconnectReason::ApprovalDenied
        | DisconnectReason::ApprovalTimeout => Some(LINGER),
        _ => None,
    }
}
