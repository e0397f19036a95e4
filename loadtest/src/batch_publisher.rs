//! A publishing MQTT 3.1.1 client that writes publishes in batches.
//!
//! rumqttc writes and flushes every request on its own: one `send` system call, and mostly a task
//! switch, per message. Against a broker relaying 170,000 msg/s on a 2-core machine that made the
//! load tool the limit (it took 1.3 of the 2 cores, the broker under test 0.7). This client
//! encodes publishes with rumqttc's own codec into a buffer that goes out in one write once it
//! holds [`BATCH_BYTES`], or when the sender has nothing more ready (a paced sender flushes after
//! each burst, so paced messages still leave at their time). Subscribers stay rumqttc clients,
//! which already read many packets per system call.
//!
//! One task owns the socket: it writes the batches, reads the acknowledgements and sends the
//! keep-alive pings. QoS 1 keeps at most `inflight` publishes unacknowledged, like rumqttc's
//! `inflight`; brokers acknowledge in order, so packet ids cycling through 1..=65535 never
//! collide.

use crate::stop::stopped;
use crate::target::Credentials;
use anyhow::{anyhow, bail, Context, Result};
use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::{Connect, ConnectReturnCode, Packet, PingReq, Publish, QoS};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

/// A batch is written once it holds this much.
pub const BATCH_BYTES: usize = 64 * 1024;
/// Batches encoded ahead of the socket: enough to keep it busy while the next one is built.
const BATCHES_AHEAD: usize = 4;

/// What the connection task reports.
pub trait PublisherEvents: Send + Sync + 'static {
    /// `publishes` QoS 0 publishes were written to the socket (not called for QoS 1).
    fn written(&self, publishes: u64);
    /// The broker acknowledged a QoS 1 publish.
    fn acked(&self);
    /// The connection failed; nothing more will be written or acknowledged.
    fn failed(&self, error: String);
}

/// The sending side: encodes publishes and hands full batches to the connection task.
pub struct BatchPublisher {
    batches: mpsc::Sender<(Bytes, u64)>,
    buffer: BytesMut,
    /// Publishes in `buffer`.
    queued: u64,
    topic: String,
    qos: QoS,
    /// QoS 1 publishes that may still go out unacknowledged.
    window: Arc<Semaphore>,
    next_pkid: u16,
}

/// How the publisher connects.
pub struct PublisherOptions {
    pub addr: SocketAddr,
    pub credentials: Credentials,
    pub topic: String,
    pub qos: QoS,
    pub keep_alive: Duration,
    pub inflight: u16,
    /// Largest packet read from the broker.
    pub max_packet: usize,
}

impl BatchPublisher {
    /// Connects, waits for a successful CONNACK and starts the connection task, which runs
    /// until `stop` or until the connection fails.
    pub async fn connect(
        options: PublisherOptions,
        events: Arc<dyn PublisherEvents>,
        stop: watch::Receiver<bool>,
    ) -> Result<(Self, JoinHandle<()>)> {
        let stream = TcpStream::connect(options.addr)
            .await
            .with_context(|| format!("connecting to {}", options.addr))?;
        stream.set_nodelay(true)?;
        let (mut reader, mut writer) = stream.into_split();
        let mut connect = Connect::new(options.credentials.client_id);
        connect.keep_alive = u16::try_from(options.keep_alive.as_secs()).unwrap_or(u16::MAX);
        if let Some((user, password)) = options.credentials.login {
            connect.set_login(user, password);
        }
        let mut buffer = BytesMut::new();
        connect.write(&mut buffer)?;
        writer.write_all(&buffer).await?;
        buffer.clear();
        match next_packet(&mut reader, &mut buffer, options.max_packet).await? {
            Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => {}
            Packet::ConnAck(ack) => bail!("connection refused: {:?}", ack.code),
            other => bail!("expected CONNACK, got {other:?}"),
        }
        let window = Arc::new(Semaphore::new(usize::from(options.inflight)));
        let (batches, batches_rx) = mpsc::channel(BATCHES_AHEAD);
        let connection = Connection {
            counts_writes: options.qos == QoS::AtMostOnce,
            reader,
            writer,
            read_buffer: buffer,
            max_packet: options.max_packet,
            window: window.clone(),
            events,
        };
        let task = tokio::spawn(connection.run(batches_rx, options.keep_alive, stop));
        let publisher = Self {
            batches,
            buffer: BytesMut::with_capacity(BATCH_BYTES * 2),
            queued: 0,
            topic: options.topic,
            qos: options.qos,
            window,
            next_pkid: 0,
        };
        Ok((publisher, task))
    }

    /// Queues one publish, writing the batch when it is full. A QoS 1 publish first waits for
    /// room in the window, writing what is queued so the broker can acknowledge it.
    pub async fn publish(&mut self, payload: Vec<u8>) -> Result<()> {
        let mut publish = Publish::new(self.topic.as_str(), self.qos, payload);
        if self.qos != QoS::AtMostOnce {
            let window = self.window.clone();
            match window.try_acquire() {
                Ok(permit) => permit.forget(),
                Err(_) => {
                    self.flush().await?;
                    window.acquire().await?.forget();
                }
            }
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            publish.pkid = self.next_pkid;
        }
        publish.write(&mut self.buffer)?;
        self.queued += 1;
        if self.buffer.len() >= BATCH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Hands what is queued to the connection task.
    pub async fn flush(&mut self) -> Result<()> {
        if self.queued == 0 {
            return Ok(());
        }
        let batch = (self.buffer.split().freeze(), self.queued);
        self.queued = 0;
        self.batches
            .send(batch)
            .await
            .map_err(|_| anyhow!("the connection is closed"))
    }
}

/// Reads until one whole packet is buffered and returns it.
async fn next_packet(
    reader: &mut OwnedReadHalf,
    buffer: &mut BytesMut,
    max_packet: usize,
) -> Result<Packet> {
    loop {
        match Packet::read(buffer, max_packet) {
            Ok(packet) => return Ok(packet),
            Err(CodecError::InsufficientBytes(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if reader.read_buf(buffer).await? == 0 {
            bail!("connection closed by the broker");
        }
    }
}

/// The socket and what the connection task reports to.
struct Connection {
    /// QoS 0 publishes are done once written; QoS 1 ones once acknowledged.
    counts_writes: bool,
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    read_buffer: BytesMut,
    max_packet: usize,
    window: Arc<Semaphore>,
    events: Arc<dyn PublisherEvents>,
}

impl Connection {
    async fn run(
        mut self,
        mut batches: mpsc::Receiver<(Bytes, u64)>,
        keep_alive: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut ping = tokio::time::interval(keep_alive / 2);
        ping.tick().await;
        let mut sending = true;
        loop {
            let outcome = tokio::select! {
                biased;
                _ = stopped(&mut stop) => return,
                read = self.reader.read_buf(&mut self.read_buffer) => self.on_read(read),
                batch = batches.recv(), if sending => match batch {
                    Some((bytes, publishes)) => self.write(&bytes, publishes).await,
                    None => {
                        sending = false;
                        Ok(())
                    }
                },
                _ = ping.tick() => self.write(&ping_packet(), 0).await,
            };
            if let Err(error) = outcome {
                if !*stop.borrow() {
                    self.events.failed(format!("{error:#}"));
                }
                return;
            }
        }
    }

    async fn write(&mut self, bytes: &[u8], publishes: u64) -> Result<()> {
        self.writer.write_all(bytes).await?;
        if self.counts_writes && publishes > 0 {
            self.events.written(publishes);
        }
        Ok(())
    }

    /// Handles every whole packet read: acknowledgements open the window.
    fn on_read(&mut self, read: std::io::Result<usize>) -> Result<()> {
        if read? == 0 {
            bail!("connection closed by the broker");
        }
        loop {
            match Packet::read(&mut self.read_buffer, self.max_packet) {
                Ok(Packet::PubAck(_)) => {
                    self.window.add_permits(1);
                    self.events.acked();
                }
                Ok(Packet::PingResp) => {}
                Ok(other) => bail!("unexpected packet from the broker: {other:?}"),
                Err(CodecError::InsufficientBytes(_)) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn ping_packet() -> Vec<u8> {
    let mut buffer = BytesMut::new();
    PingReq
        .write(&mut buffer)
        .expect("a PINGREQ always encodes");
    buffer.to_vec()
}
