//! From a new MQTT socket to a running connection: the CONNECT, authentication, taking up the
//! client's session, the CONNACK; and, when the connection ends, handing the session back and
//! the will.

use super::codec::{
    peek_connect_version, read_connect, Codec, ConnackCode, ConnackInfo, ConnectRequest,
    DecodeError, Version, Will,
};
use super::connection::{Connection, Ending};
use crate::auth::identity::{for_logs, Identity};
use crate::auth::{Credentials, Refusal};
use crate::front::client::{Client, Publication};
use crate::front::stream::MqttStream;
use crate::front::Front;
use crate::live::outbox::Outbox;
use crate::live::registry::Admission;
use crate::live::sessions::{session_key, ClaimError};
use crate::observe::metrics::{RejectReason, TransportLabel};
use bytes::BytesMut;
use protocol::envelope::Transport;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Reads the CONNECT, authenticates, takes up the session, answers CONNACK and runs the
/// connection; then hands the session back and sends the will. The caller bounds the handshake
/// by `handshake_deadline`.
pub async fn serve(
    front: Arc<Front>,
    stream: MqttStream,
    transport: Transport,
    handshake_deadline: Instant,
) {
    // The handshake's own state (the CONNECT among it) is gone before the connection runs: an
    // idle connection holds only what it needs. Boxed, so that its state is not also laid out
    // beside the connection's in the task (a task is as large as its largest state).
    let Some(Opened {
        connection,
        outbox,
        will,
    }) = Box::pin(open(&front, stream, transport, handshake_deadline)).await
    else {
        return;
    };
    let Ending {
        client,
        claim,
        state,
        moved,
        with_will,
        expiry,
        outbox,
    } = connection.run(outbox).await;
    if let (Some(will), true) = (will, with_will) {
        // The will waits for its delay, but not past the session's end (MQTT 5 3.1.3.2.2).
        let delay = Duration::from_secs(u64::from(will.delay.min(expiry)));
        let publication = Publication {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties: will.properties,
            expiry: will.expiry,
        };
        let (sessions, key, generation) =
            (front.sessions.clone(), claim.key.clone(), claim.generation);
        client.publish_will(publication, delay, move || {
            sessions.still_away(&key, generation)
        });
    }
    // The session is parked before the client's subscriptions go, so nothing published
    // meanwhile is lost; then the client is gone for presence and metrics.
    let identity = client.identity().clone();
    (front.sessions)
        .release(claim, state, &identity, outbox, moved)
        .await;
    drop(client);
}

/// A connection past its CONNACK, with its outbox and its will.
struct Opened {
    connection: Connection,
    outbox: Outbox,
    will: Option<Box<Will>>,
}

/// The handshake: `None` when the connection was refused or went away.
async fn open(
    front: &Arc<Front>,
    mut stream: MqttStream,
    transport: Transport,
    handshake_deadline: Instant,
) -> Option<Opened> {
    let max_packet = front.limits.max_packet_size;
    let mut rbuf = BytesMut::new();
    let connect = match tokio::time::timeout_at(
        handshake_deadline,
        read_first_connect(&mut stream, &mut rbuf, max_packet),
    )
    .await
    {
        Err(_) => {
            front.metrics.reject(RejectReason::handshake_timeout);
            return None;
        }
        Ok(Err(ConnectFailure::Closed)) => {
            front.metrics.reject(RejectReason::handshake_failed);
            return None;
        }
        Ok(Err(ConnectFailure::Decode(e))) => {
            tracing::debug!("refused CONNECT: {e}");
            if let DecodeError::UnsupportedVersion(_) = e {
                // Answered in 3.1.1 framing, which every MQTT client understands.
                let codec = Codec {
                    version: Version::V311,
                    max_packet_size: max_packet,
                    client_max_packet: None,
                };
                refuse(&mut stream, codec, ConnackCode::UnsupportedVersion, None).await;
            }
            front.metrics.reject(RejectReason::protocol_error);
            return None;
        }
        Ok(Ok(connect)) => connect,
    };
    let codec = Codec {
        version: connect.version,
        max_packet_size: max_packet,
        client_max_packet: connect.max_packet_size,
    };
    if connect.version == Version::V311 && connect.client_id.is_empty() && !connect.clean_start {
        // MQTT-3.1.3-8: a session cannot be kept for a client without an id.
        let reason = "an empty client id needs clean session";
        refuse(
            &mut stream,
            codec,
            ConnackCode::ClientIdRejected,
            Some(reason),
        )
        .await;
        front.metrics.reject(RejectReason::protocol_error);
        return None;
    }
    let (identity, admission) = match authenticate(front, &connect).await {
        Ok(admitted) => admitted,
        Err(refusal) => {
            let code = match refusal {
                Refusal::NotAuthorized(_) => {
                    front
                        .metrics
                        .auth_failures
                        .get_or_create(&TransportLabel::from(transport))
                        .inc();
                    ConnackCode::NotAuthorized
                }
                Refusal::Unavailable(_) => ConnackCode::Unavailable,
            };
            tracing::info!(client_id = %for_logs(&connect.client_id), transport = transport.as_str(), "CONNECT refused: {refusal}");
            refuse(&mut stream, codec, code, Some(&refusal.to_string())).await;
            return None;
        }
    };
    let assigned_client_id = connect.client_id.is_empty().then(|| match &identity {
        Identity::Device { device, .. } => device.clone(),
        Identity::Anonymous { client_id } | Identity::Backend { client_id, .. } => {
            client_id.clone()
        }
    });
    // 3.1.1 keeps a session as long as the gateway keeps any; v5 says how long it wants.
    let asked_expiry = match connect.version {
        Version::V311 if connect.clean_start => 0,
        Version::V311 => u32::MAX,
        Version::V5 => connect.session_expiry.unwrap_or(0),
    };
    let expiry = asked_expiry.min(front.sessions.max_expiry_secs());
    let key = session_key(&identity);
    // Opening the client closes an older connection of the same client, which then hands the
    // session back.
    let (client, outbox) = Client::open(front, identity, transport, admission);
    let wait = front.limits.handshake_timeout;
    let (mut claim, taken_up) = match front.sessions.claim(key, connect.clean_start, wait).await {
        Ok(claimed) => claimed,
        Err(e) => {
            tracing::warn!(link = client.link.id, "session not taken up: {e}");
            let reason = match e {
                ClaimError::Busy => "the session is still held by another connection",
                ClaimError::Store(_) => "the session store is unavailable",
            };
            refuse(&mut stream, codec, ConnackCode::Unavailable, Some(reason)).await;
            return None;
        }
    };
    if expiry == 0 {
        front.sessions.let_go(&mut claim);
    }
    let (keep_alive, server_keep_alive) = negotiate_keep_alive(
        connect.keep_alive,
        front.limits.max_keepalive,
        connect.version,
    );
    let mut wbuf = BytesMut::new();
    let info = ConnackInfo {
        session_present: taken_up.state.is_some(),
        server_keep_alive,
        max_packet_size: Some(max_packet),
        receive_maximum: Some(front.limits.receive_maximum),
        topic_alias_maximum: Some(front.limits.topic_alias_maximum),
        session_expiry: (connect.version == Version::V5 && expiry < asked_expiry).then_some(expiry),
        assigned_client_id,
        reason: None,
    };
    codec.connack(ConnackCode::Accepted, info, &mut wbuf);
    let connection = Connection::start(
        client, codec, stream, rbuf, wbuf, &connect, keep_alive, claim, taken_up, expiry,
    );
    Some(Opened {
        connection,
        outbox,
        will: connect.will.map(Box::new),
    })
}

/// Answers a CONNECT with a refusal and closes.
async fn refuse(stream: &mut MqttStream, codec: Codec, code: ConnackCode, reason: Option<&str>) {
    let mut out = BytesMut::new();
    let info = ConnackInfo {
        reason: reason.map(str::to_string),
        ..ConnackInfo::default()
    };
    codec.connack(code, info, &mut out);
    let _ = stream.write_all(&out).await;
    stream.shutdown().await;
}

enum ConnectFailure {
    Closed,
    Decode(DecodeError),
}

async fn read_first_connect(
    stream: &mut MqttStream,
    rbuf: &mut BytesMut,
    max_packet: u32,
) -> Result<ConnectRequest, ConnectFailure> {
    loop {
        if let Some(version) =
            peek_connect_version(rbuf, max_packet).map_err(ConnectFailure::Decode)?
        {
            if let Some(connect) =
                read_connect(version, rbuf, max_packet).map_err(ConnectFailure::Decode)?
            {
                return Ok(connect);
            }
        }
        match stream.read_into(rbuf).await {
            Ok(0) | Err(_) => return Err(ConnectFailure::Closed),
            Ok(_) => {}
        }
    }
}

/// The device token is the password (see [`crate::auth::Auth::connect`]).
/// Who the client is, and whether it starts approved (a device the user never used before may
/// wait for approval).
async fn authenticate(
    front: &Front,
    connect: &ConnectRequest,
) -> Result<(Identity, Admission), Refusal> {
    let credentials = Credentials {
        client_id: &connect.client_id,
        password: connect.password.as_deref(),
        will_topic: connect.will.as_ref().map(|will| will.topic.as_str()),
    };
    let assign_id = || format!("anonymous-{}", front.link_ids.next());
    let identity = front.auth.connect(&credentials, assign_id).await?;
    let admission = (front.registry.admission(&identity).await)
        .map_err(|e| Refusal::Unavailable(e.to_string()))?;
    Ok((identity, admission))
}

/// The keepalive to enforce and, for v5, the Server Keep Alive to announce. A client asking for
/// more than allowed (or for none) gets the maximum: dead devices must be noticed. 3.1.1 clients
/// cannot be told, so the maximum is enforced silently for them.
fn negotiate_keep_alive(
    requested: u16,
    max: Duration,
    version: Version,
) -> (Duration, Option<u16>) {
    let max_secs = max.as_secs().min(u16::MAX as u64) as u16;
    if requested == 0 || requested > max_secs {
        let announce = (version == Version::V5).then_some(max_secs);
        (Duration::from_secs(max_secs as u64), announce)
    } else {
        (Duration::from_secs(requested as u64), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(1200);

    #[test]
    fn keep_alive_is_capped_and_announced_to_v5() {
        assert_eq!(
            negotiate_keep_alive(60, MAX, Version::V5),
            (Duration::from_secs(60), None)
        );
        assert_eq!(
            negotiate_keep_alive(900, MAX, Version::V311),
            (Duration::from_secs(900), None),
            "15-minute mobile heartbeats are accepted"
        );
        assert_eq!(
            negotiate_keep_alive(3600, MAX, Version::V5),
            (MAX, Some(1200))
        );
        assert_eq!(negotiate_keep_alive(0, MAX, Version::V5), (MAX, Some(1200)));
        assert_eq!(negotiate_keep_alive(3600, MAX, Version::V311), (MAX, None));
    }
}
