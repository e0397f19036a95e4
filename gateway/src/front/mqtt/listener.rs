//! The MQTT listeners (TCP, TLS, WebSocket, secure WebSocket): every handshake (TLS, WebSocket
//! upgrade, CONNECT) runs in the connection's own task under the handshake timeout.

use super::handshake;
use crate::front::accept::accept_loop;
use crate::front::stream::{BoxStream, MqttStream};
use crate::front::Front;
use crate::observe::metrics::RejectReason;
use protocol::envelope::Transport;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The WebSocket path and subprotocol of MQTT over WebSocket.
pub const MQTT_WS_PATH: &str = "/mqtt";
pub const MQTT_WS_PROTOCOL: &str = "mqtt";

#[derive(Clone)]
pub enum MqttListenerKind {
    Tcp,
    Tls(TlsAcceptor),
    WebSocket,
    SecureWebSocket(TlsAcceptor),
}

impl MqttListenerKind {
    fn transport(&self) -> Transport {
        match self {
            Self::Tcp => Transport::Mqtt,
            Self::Tls(_) => Transport::MqttTls,
            Self::WebSocket => Transport::MqttWs,
            Self::SecureWebSocket(_) => Transport::MqttWss,
        }
    }
}

pub async fn run(front: Arc<Front>, listener: TcpListener, kind: MqttListenerKind) {
    let shutdown = &front.shutdown;
    accept_loop(
        listener,
        front.limits.max_connections,
        &front.metrics,
        shutdown,
        |socket, peer, permit| {
            let (front, kind) = (front.clone(), kind.clone());
            shutdown.spawn(async move {
                let _permit = permit;
                let deadline = Instant::now() + front.limits.handshake_timeout;
                let transport = kind.transport();
                // Boxed, like the MQTT handshake after it: the TLS and WebSocket handshakes'
                // state is freed once they are done, instead of widening every connection's
                // task for its whole life.
                let handshake = Box::pin(handshake(&front, socket, kind));
                match tokio::time::timeout_at(deadline, handshake).await {
                    Ok(Ok(stream)) => handshake::serve(front, stream, transport, deadline).await,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, transport = transport.as_str(), "handshake failed: {e}");
                        front.metrics.reject(RejectReason::handshake_failed);
                    }
                    Err(_) => front.metrics.reject(RejectReason::handshake_timeout),
                }
            });
        },
    )
    .await;
}

async fn handshake(
    front: &Front,
    socket: tokio::net::TcpStream,
    kind: MqttListenerKind,
) -> anyhow::Result<MqttStream> {
    Ok(match kind {
        MqttListenerKind::Tcp => MqttStream::Raw(Box::new(socket)),
        MqttListenerKind::Tls(acceptor) => {
            MqttStream::Raw(Box::new(acceptor.accept(socket).await?))
        }
        MqttListenerKind::WebSocket => upgrade(front, Box::new(socket)).await?,
        MqttListenerKind::SecureWebSocket(acceptor) => {
            upgrade(front, Box::new(acceptor.accept(socket).await?)).await?
        }
    })
}

/// Accepts the WebSocket upgrade on `/mqtt`, answering with the `mqtt` subprotocol.
async fn upgrade(front: &Front, stream: BoxStream) -> anyhow::Result<MqttStream> {
    let max = front.limits.max_packet_size as usize + 16;
    // tungstenite allocates its read buffer eagerly (128 KiB by default): keep it small so an
    // idle MQTT-over-WebSocket connection stays cheap.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(stream, accept_mqtt_path, Some(config))
            .await?;
    Ok(MqttStream::WebSocket(Box::new(ws)))
}

/// The upgrade must ask for `/mqtt`; a client offering the `mqtt` subprotocol gets it back.
// The signature is tungstenite's handshake `Callback`, large error type included.
#[allow(clippy::result_large_err)]
fn accept_mqtt_path(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    if request.uri().path() != MQTT_WS_PATH {
        let mut refusal = ErrorResponse::new(Some(format!(
            "MQTT over WebSocket is served on {MQTT_WS_PATH}"
        )));
        *refusal.status_mut() = StatusCode::NOT_FOUND;
        return Err(refusal);
    }
    let offers_mqtt = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == MQTT_WS_PROTOCOL);
    if offers_mqtt {
        response.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(MQTT_WS_PROTOCOL),
        );
    }
    Ok(response)
}
