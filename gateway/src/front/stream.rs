//! The byte stream under an MQTT connection: TCP, TLS, or MQTT packets carried in binary
//! WebSocket messages (plain or over TLS).

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
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

/// The most a read takes from a socket at once.
pub const READ_CHUNK: usize = 64 * 1024;

thread_local! {
    /// Where a socket's bytes land first: one buffer per runtime thread, so that a connection's
    /// own buffer holds only what it has not handled yet and an idle connection none at all
    /// (it held 2 KB of spare room before, a fifth of an idle connection's memory).
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// Reads what the stream has into this thread's scratch buffer and appends it to `buf`. When
/// nothing has come and `buf` holds nothing unhandled, its room is given back.
fn poll_read_through_scratch(
    stream: &mut BoxStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    SCRATCH.with_borrow_mut(|scratch| {
        let mut read = ReadBuf::new(scratch);
        match Pin::new(stream).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                buf.extend_from_slice(read.filled());
                Poll::Ready(Ok(read.filled().len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if buf.is_empty() && buf.capacity() > 0 {
                    *buf = BytesMut::new();
                }
                Poll::Pending
            }
        }
    })
}

impl MqttStream {
    /// Appends what arrives to `buf`. `Ok(0)`: the peer closed. Cancel-safe.
    pub async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Self::Raw(stream) => poll_fn(|cx| poll_read_through_scratch(stream, cx, buf)).await,
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
            while let Ok(1..) = self.read_into(&mut sink).await {
                sink.clear();
            }
        })
        .await;
    }
}
