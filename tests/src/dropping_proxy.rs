//! A TCP proxy in front of an MQTT broker that deliberately loses one message: it forwards
//! everything both ways, except the `nth` PUBLISH packet the broker sends to any client, which
//! it swallows. The clients and the broker see nothing wrong, so only an end-to-end check can
//! notice the loss, which is what the load tester's loss detection is tested with.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// MQTT control packet type 3, in the fixed header's high nibble.
const PUBLISH: u8 = 3;

pub struct DroppingProxy {
    pub addr: SocketAddr,
    /// PUBLISH packets from the broker seen so far, across all connections.
    pub publishes: Arc<AtomicU64>,
}

impl DroppingProxy {
    /// Listens on a free loopback port and forwards each connection to `broker`, dropping the
    /// broker's `nth` PUBLISH (1-based).
    pub async fn start(broker: SocketAddr, nth: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let publishes = Arc::new(AtomicU64::new(0));
        let counted = publishes.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = TcpStream::connect(broker).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (broker_read, mut broker_write) = upstream.into_split();
                let mut client_read = client_read;
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut broker_write).await;
                });
                tokio::spawn(forward_dropping(
                    broker_read,
                    client_write,
                    nth,
                    counted.clone(),
                ));
            }
        });
        Self { addr, publishes }
    }
}

/// Copies whole MQTT packets from `from` to `to`, leaving out the `nth` PUBLISH.
async fn forward_dropping(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    nth: u64,
    publishes: Arc<AtomicU64>,
) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match from.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
        while let Some(len) = packet_len(&buffer) {
            let packet: Vec<u8> = buffer.drain(..len).collect();
            let is_publish = packet[0] >> 4 == PUBLISH;
            if is_publish && publishes.fetch_add(1, Ordering::SeqCst) + 1 == nth {
                continue;
            }
            if to.write_all(&packet).await.is_err() {
                return;
            }
        }
    }
}

/// The length of the first complete packet in `buffer`: the fixed header byte, the remaining
/// length (a variable byte integer of up to four bytes) and that many bytes.
fn packet_len(buffer: &[u8]) -> Option<usize> {
    let mut remaining = 0usize;
    for (i, &byte) in buffer.iter().enumerate().skip(1).take(4) {
        remaining |= usize::from(byte & 0x7f) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            let total = 1 + i + remaining;
            return (buffer.len() >= total).then_some(total);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::packet_len;

    #[test]
    fn packet_lengths() {
        assert_eq!(packet_len(&[0xd0, 0x00]), Some(2));
        assert_eq!(packet_len(&[0x30, 0x02, 1]), None);
        assert_eq!(packet_len(&[0x30, 0x02, 1, 2, 9]), Some(4));
        let mut long = vec![0x30, 0x80, 0x01];
        long.extend(std::iter::repeat_n(0, 128));
        assert_eq!(packet_len(&long), Some(131));
        assert_eq!(packet_len(&[0x30]), None);
    }
}
