//! The byte stream under an MQTT connection: TCP, TLS, or MQTT packets carried in binary
//! WebSocket messages (plain or over TLS).

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Any socket-like stream (TCP or TLS over TCP).
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}

pub type BoxStream = Box<dyn AsyncStream>;

pub enum MqttStream {
    Raw(BoxStream),
    WebSocket(Box<WebSocketStream<BoxStream>>),
}

/// Spare room kept in the read buffer of a connection that sends little; small, so idle
/// connections stay cheap.
pub const READ_CHUNK: usize = 2048;

/// Most spare room a connection that sends a lot reads into at once: fewer reads (and wake-ups)
/// per packet.
pub const MAX_READ_CHUNK: usize = 64 * 1024;

/// The room for the next read after one of `read` bytes into `room`: doubled while reads fill
/// half of it or more, halved when they use less than an eighth, within
/// [`READ_CHUNK`]..=[`MAX_READ_CHUNK`].
pub fn next_read_room(room: usize, read: usize) -> usize {
    if read >= room / 2 {
        (room * 2).min(MAX_READ_CHUNK)
    } else if read < room / 8 {
        (room / 2).max(READ_CHUNK)
    } else {
        room
    }
}

impl MqttStream {
    /// Appends what arrives to `buf`, with at least half of `room` spare for it. `Ok(0)`: the
    /// peer closed. Cancel-safe.
    pub async fn read_into(&mut self, buf: &mut BytesMut, room: usize) -> io::Result<usize> {
        match self {
            Self::Raw(stream) => {
                if buf.capacity() - buf.len() < room / 2 {
                    buf.reserve(room);
                }
                stream.read_buf(buf).await
            }
            Self::WebSocket(ws) => loop {
                match ws.next().await {
                    None => return Ok(0),
                    Some(Err(e)) => return Err(io::Error::other(e)),
                    Some(Ok(Message::Binary(data))) => {
                        buf.extend_from_slice(&data);
                        return Ok(data.len().max(1));
                    }
                    Some(Ok(Message::Close(_))) => return Ok(0),
                    Some(Ok(Message::Text(_))) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "MQTT over WebSocket must use binary messages",
                        ))
                    }
                    // Pings are answered by tungstenite itself.
                    Some(Ok(_)) => continue,
                }
            },
        }
    }

    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Self::Raw(stream) => stream.write_all(data).await,
            Self::WebSocket(ws) => ws
                .send(Message::Binary(bytes::Bytes::copy_from_slice(data)))
                .await
                .map_err(io::Error::other),
        }
    }

    pub async fn shutdown(&mut self) {
        let _ = match self {
            Self::Raw(stream) => stream.shutdown().await,
            Self::WebSocket(ws) => ws.as_mut().close(None).await.map_err(io::Error::other),
        };
    }

    /// Closes our side, then reads and drops what the peer still sends until it closes too, all
    /// in at most `linger`. Closing a socket with unread data resets it, and a reset can destroy
    /// what the peer had not read yet: the DISCONNECT that says why, or the last answers.
    pub async fn close_gracefully(&mut self, linger: Duration) {
        let mut sink = BytesMut::new();
        let _ = tokio::time::timeout(linger, async {
            // Within the linger too: closing TLS or a WebSocket writes to the peer.
            self.shutdown().await;
            while let Ok(1..) = self.read_into(&mut sink, READ_CHUNK).await {
                sink.clear();
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_room_grows_for_busy_connections_and_shrinks_back() {
        assert_eq!(next_read_room(READ_CHUNK, READ_CHUNK), 2 * READ_CHUNK);
        assert_eq!(
            next_read_room(MAX_READ_CHUNK, MAX_READ_CHUNK),
            MAX_READ_CHUNK
        );
        assert_eq!(next_read_room(8192, 3000), 8192);
        assert_eq!(next_read_room(8192, 100), 4096);
        assert_eq!(next_read_room(READ_CHUNK, 2), READ_CHUNK);
    }
}
