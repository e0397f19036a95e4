//! An MQTT 5 client on a bare socket, for what a client library hides: whether a write fails
//! because the gateway reset the connection before the client read why it was closed.

use crate::{TestGateway, PATIENCE};
use bytes::BytesMut;
use protocol::envelope::Platform;
use rumqttc::v5::mqttbytes::v5 as v5p;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct RawV5 {
    socket: TcpStream,
    /// Bytes read and not yet parsed into a packet.
    incoming: BytesMut,
}

impl RawV5 {
    /// Logs `user`'s `device` in over MQTT 5 on TCP, and asserts it was let in.
    pub async fn login(gw: &TestGateway, user: &str, device: &str, platform: Platform) -> Self {
        let token = gw.token(user, device, platform);
        let socket = TcpStream::connect(gw.mqtt).await.unwrap();
        let mut client = Self {
            socket,
            incoming: BytesMut::new(),
        };
        let connect = v5p::Connect {
            keep_alive: 60,
            client_id: format!("{user}-{device}"),
            clean_start: true,
            properties: None,
        };
        let login = v5p::Login::new("device", token);
        let mut out = BytesMut::new();
        v5p::Packet::Connect(connect, None, Some(login))
            .write(&mut out, None)
            .unwrap();
        client.socket.write_all(&out).await.unwrap();
        let connack = client.next_packet().await;
        assert!(
            matches!(&connack, v5p::Packet::ConnAck(ack) if ack.code == v5p::ConnectReturnCode::Success),
            "{connack:?}"
        );
        client
    }

    /// Goes on sending, ten PINGREQs a millisecond, reading only what is already there between
    /// them, until the gateway's DISCONNECT is read; returns its reason. Every write must go
    /// through until then: a failed one means the gateway reset the connection, and a client
    /// library, which stops at its first failed write, would never have read why.
    pub async fn disconnect_reason_while_sending(&mut self) -> v5p::DisconnectReasonCode {
        let mut pings = BytesMut::new();
        for _ in 0..10 {
            (v5p::Packet::PingReq(v5p::PingReq))
                .write(&mut pings, None)
                .unwrap();
        }
        tokio::time::timeout(PATIENCE, async {
            loop {
                self.socket.write_all(&pings).await.expect(
                    "a write before the DISCONNECT is read goes through: the socket is not reset",
                );
                while let Some(packet) = whole_packet(&mut self.incoming) {
                    if let v5p::Packet::Disconnect(d) = packet {
                        return d.reason_code;
                    }
                }
                match self.socket.try_read_buf(&mut self.incoming) {
                    Ok(0) => panic!("the socket closed before the DISCONNECT was read"),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("reading: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the DISCONNECT comes")
    }

    /// The next whole packet from the gateway.
    async fn next_packet(&mut self) -> v5p::Packet {
        tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(packet) = whole_packet(&mut self.incoming) {
                    return packet;
                }
                let read = self.socket.read_buf(&mut self.incoming).await;
                assert!(read.expect("reading") > 0, "the socket closed");
            }
        })
        .await
        .expect("a packet comes")
    }
}

/// The next packet in `incoming`, once it is there whole; a malformed one fails the test.
fn whole_packet(incoming: &mut BytesMut) -> Option<v5p::Packet> {
    match v5p::Packet::read(incoming, None) {
        Ok(packet) => Some(packet),
        Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => None,
        Err(e) => panic!("a malformed packet from the gateway: {e}"),
    }
}
