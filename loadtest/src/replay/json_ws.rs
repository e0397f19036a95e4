//! A replayed session over the JSON WebSocket (`/ws`): each step a frame with an `id`, answered
//! `ok` or `error` with the same `id`.

use super::script::{Action, Body};
use super::session::{Ended, Link, Pending};
use super::tally::Tally;
use futures_util::{SinkExt, StreamExt};
use protocol::frames::{ClientFrame, RequestId, ServerFrame};
use std::collections::HashMap;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct JsonWsLink {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Requests sent, by their `id`, waiting for `ok` or `error`.
    awaiting: HashMap<String, Pending>,
}

impl JsonWsLink {
    /// Connects to `url` (`/ws` with `?token=`) and waits up to `patience` for the `ok` that
    /// says the token was accepted.
    pub async fn connect(url: &reqwest::Url, patience: Duration) -> Result<Self, String> {
        let handshake = async {
            let (mut ws, _) = tokio_tungstenite::connect_async_with_config(
                url.as_str(),
                Some(crate::device::lean_websocket()),
                false,
            )
            .await
            .map_err(|e| format!("WebSocket handshake: {e}"))?;
            loop {
                match read_frame(&mut ws).await.map_err(|e| e.to_string())? {
                    ServerFrame::Ok { .. } => return Ok(ws),
                    ServerFrame::Error { code, message, .. } => {
                        return Err(format!("auth refused: {code:?}: {message}"))
                    }
                    _ => {}
                }
            }
        };
        let ws = timeout(patience, handshake)
            .await
            .map_err(|_| format!("no auth answer within {patience:?}"))??;
        Ok(Self {
            ws,
            next_id: 0,
            awaiting: HashMap::new(),
        })
    }
}

impl Link for JsonWsLink {
    async fn send(&mut self, action: &Action) -> Result<(), String> {
        self.next_id += 1;
        let id = Some(RequestId::from(self.next_id));
        let frame = match action {
            Action::Subscribe { topic, .. } => ClientFrame::Sub {
                id: id.clone(),
                topic: topic.clone(),
                resume: false,
            },
            Action::Unsubscribe { topic } => ClientFrame::Unsub {
                id: id.clone(),
                topic: topic.clone(),
            },
            Action::Publish {
                topic,
                body: Body::Json(payload),
                ..
            } => ClientFrame::Pub {
                id: id.clone(),
                topic: topic.clone(),
                payload: payload.clone(),
            },
            Action::Publish {
                body: Body::Bytes(_),
                ..
            } => return Err("a payload that is not JSON cannot go over the JSON WebSocket".into()),
        };
        let text = serde_json::to_string(&frame).expect("frames serialize");
        self.awaiting
            .insert(self.next_id.to_string(), Pending::of(action));
        self.ws
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| format!("{}: {e}", Pending::of(action).what))
    }

    async fn receive(&mut self, tally: &Tally) -> Result<(), Ended> {
        match read_frame(&mut self.ws).await? {
            ServerFrame::Ok { id: Some(id), .. } => {
                self.answered(&id.to_string())?;
            }
            ServerFrame::Error {
                id: Some(id),
                code,
                message,
                ..
            } => {
                let pending = self.answered(&id.to_string())?;
                tally.fail(
                    pending.kind,
                    format!("{}: error {code:?}: {message}", pending.what),
                );
            }
            ServerFrame::Error { code, message, .. } => {
                return Err(Ended::Lost(format!(
                    "error frame without an id: {code:?}: {message}"
                )))
            }
            ServerFrame::Msg { .. } => tally.received.add(1),
            ServerFrame::Ok { id: None, .. }
            | ServerFrame::Ping { .. }
            | ServerFrame::Pong { .. } => {}
        }
        Ok(())
    }

    fn outstanding(&self) -> Vec<Pending> {
        self.awaiting.values().cloned().collect()
    }

    async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = timeout(Duration::from_secs(1), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

impl JsonWsLink {
    fn answered(&mut self, id: &str) -> Result<Pending, String> {
        self.awaiting
            .remove(id)
            .ok_or_else(|| format!("an answer to request {id:?}, which was never sent"))
    }
}

/// The gateway's close code for a session logged out: kicked, or taken over by a newer
/// connection of the device (the only cause of the two a replay can meet).
const LOGGED_OUT: u16 = 4001;

/// The next JSON frame; `Err` when the socket closed or sent something that is not a frame.
async fn read_frame(
    ws: &mut WebSocketStream<MaybeTlsStream<TcpStream>>,
) -> Result<ServerFrame, Ended> {
    loop {
        let why = match ws.next().await {
            Some(Ok(Message::Text(text))) => match serde_json::from_str(&text) {
                Ok(frame) => return Ok(frame),
                Err(e) => format!("not a frame ({e}): {:.200}", text.as_str()),
            },
            Some(Ok(Message::Close(Some(frame)))) if u16::from(frame.code) == LOGGED_OUT => {
                return Err(Ended::TakenOver)
            }
            Some(Ok(Message::Close(Some(frame)))) => {
                format!("closed by the gateway: {} {}", frame.code, frame.reason)
            }
            Some(Ok(Message::Close(None))) => "closed by the gateway".to_string(),
            Some(Ok(_)) => continue,
            Some(Err(e)) => format!("WebSocket: {e}"),
            None => "the socket closed".to_string(),
        };
        return Err(Ended::Lost(why));
    }
}
