//! A JSON WebSocket client (tokio-tungstenite) for the bridge on `/ws`.

use crate::{TestGateway, PATIENCE, QUIET};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct JsonClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    held: Vec<Value>,
    next_id: u64,
}

/// How the server ended the socket.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    pub code: Option<u16>,
    pub reason: String,
}

impl JsonClient {
    /// Connects to `/ws`, with `?token=` when given.
    pub async fn connect(gw: &TestGateway, token: Option<&str>) -> Self {
        let url = match token {
            Some(token) => format!("ws://{}/ws?token={token}", gw.http),
            None => format!("ws://{}/ws", gw.http),
        };
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("WebSocket connect");
        Self {
            ws,
            held: Vec::new(),
            next_id: 0,
        }
    }

    /// Connects with `?token=` and waits for the `ok` that says who the session is.
    pub async fn authenticated(gw: &TestGateway, token: &str) -> Self {
        let mut client = Self::connect(gw, Some(token)).await;
        let ok = client
            .frame_where(|f| f["op"] == "ok" || f["op"] == "error")
            .await;
        assert_eq!(ok["op"], "ok", "auth failed: {ok}");
        client
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// Sends a request frame with a fresh `id` and returns the answer with that id.
    pub async fn request(&mut self, mut frame: Value) -> Value {
        self.next_id += 1;
        let id = format!("r{}", self.next_id);
        frame["id"] = json!(id);
        self.send_text(&frame.to_string()).await;
        self.frame_where(|f| f["id"] == id.as_str()).await
    }

    /// The next frame (held or arriving) that `accept` likes.
    pub async fn frame_where(&mut self, accept: impl Fn(&Value) -> bool) -> Value {
        if let Some(pos) = self.held.iter().position(&accept) {
            return self.held.remove(pos);
        }
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.next_frame())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for a frame; held {:?}", self.held))
                .unwrap_or_else(|closed| {
                    panic!(
                        "closed while waiting for a frame: {closed:?}; held {:?}",
                        self.held
                    )
                });
            if accept(&frame) {
                return frame;
            }
            self.held.push(frame);
        }
    }

    /// The next `msg` frame on `topic`; returns its payload.
    pub async fn message_on(&mut self, topic: &str) -> Value {
        let frame = self
            .frame_where(|f| f["op"] == "msg" && f["topic"] == topic)
            .await;
        frame["payload"].clone()
    }

    /// Asserts that no `msg` arrives within [`QUIET`].
    pub async fn no_message(&mut self) {
        assert!(
            !self.held.iter().any(|f| f["op"] == "msg"),
            "unexpected {:?}",
            self.held
        );
        if let Ok(Ok(frame)) = tokio::time::timeout(QUIET, self.next_frame()).await {
            assert_ne!(frame["op"], "msg", "unexpected message {frame}");
            self.held.push(frame);
        }
    }

    async fn next_frame(&mut self) -> Result<Value, Closed> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    return Ok(serde_json::from_str(&text).expect("server frames are JSON"))
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(Closed {
                        code: frame.as_ref().map(|f| u16::from(f.code)),
                        reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    })
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    return Err(Closed {
                        code: None,
                        reason: e.to_string(),
                    })
                }
                None => {
                    return Err(Closed {
                        code: None,
                        reason: "stream ended".into(),
                    })
                }
            }
        }
    }

    /// Reads until the server closes; returns the close code and reason.
    pub async fn closed(&mut self) -> Closed {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.next_frame()).await {
                Ok(Ok(frame)) => self.held.push(frame),
                Ok(Err(closed)) => return closed,
                Err(_) => panic!("server did not close the socket"),
            }
        }
    }

    /// Goes on sending, ten WebSocket pings a millisecond, reading only what is already there
    /// between them, until the server's close frame is read; returns it. Every send must go
    /// through until then: a failed one means the server reset the connection, and a client
    /// library, which stops at its first failed write, would never have read why it was closed.
    pub async fn closed_while_sending(&mut self) -> Closed {
        tokio::time::timeout(PATIENCE, async {
            loop {
                for _ in 0..10 {
                    self.ws.send(Message::Ping(Default::default())).await.expect(
                        "a send before the close frame is read goes through: the socket is not reset",
                    );
                }
                while let Some(next) = futures_util::FutureExt::now_or_never(self.next_frame()) {
                    match next {
                        Ok(frame) => self.held.push(frame),
                        Err(closed) => return closed,
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the server closes the socket")
    }

    pub async fn send_binary_of(&mut self, len: usize) {
        let _ = self.ws.send(Message::Binary(vec![b'x'; len].into())).await;
    }
}

/// The close code the bridge uses when a message is too big.
pub const TOO_BIG: u16 = 1009;
