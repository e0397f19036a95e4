//! Traffic recording (`[record] path`): device sessions' connects, subscribes, publishes and
//! disconnects, and the backend's traffic-carrying API calls, with their timing, one JSON object
//! a line in the format of `protocol::recording`, for `loadtest replay` to play back.
//!
//! A publish is recorded once accepted ([`PendingPublish`]), every other event as it happens.
//! Recording must never stall or slow a client, so [`Recorder::record`] only stamps the event
//! and tries to queue it; a writer thread owns the file. When the queue is full the event is
//! dropped and counted (`gateway_record_events_total{status="dropped"}`), and when the file
//! reaches `record.max_bytes` (or cannot be written) recording stops with one warning and later
//! events are counted as `stopped`. The writer flushes every `record.flush_interval` and when
//! the gateway shuts down ([`Recorder::finish`]).

use super::metrics::{RecordLabel, RecordStatus};
use crate::auth::identity::Identity;
use crate::live::link::{LinkId, Qos};
use anyhow::{Context, Result};
use base64::Engine;
use broker_config::Record;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use protocol::envelope::Transport;
use protocol::recording::{Event, Header, Line, Payload};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest wait at shutdown for the writer to write out what is queued.
const FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// What the writer thread is handed.
enum Command {
    Write(Line),
    /// Write out everything queued before this, then say so and end.
    Finish(mpsc::Sender<()>),
}

/// The recording's handle, shared by every session and the API; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Inner>,
}

struct Inner {
    started: Instant,
    /// Held while an event is stamped and queued, so that times never go backwards along the
    /// file even when sessions on several threads record at once.
    queue: Mutex<SyncSender<Command>>,
    stopped: Arc<AtomicBool>,
    payloads: bool,
    events: Family<RecordLabel, Counter>,
}

impl Recorder {
    /// Creates (or truncates) the file at `config.path`, writes the header and starts the
    /// writer thread; `None` when recording is off.
    pub fn start(config: &Record, events: Family<RecordLabel, Counter>) -> Result<Option<Self>> {
        let Some(path) = &config.path else {
            return Ok(None);
        };
        // Only the gateway's user may read it: it holds who talked to whom, and with
        // `record.payloads` what they said.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot create record.path {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict record.path {}", path.display()))?;
        let mut out = BufWriter::new(file);
        let header = Header {
            recording: protocol::recording::KIND.into(),
            version: protocol::recording::VERSION,
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        let written = write_line(&mut out, &header)
            .and_then(|n| out.flush().map(|()| n))
            .with_context(|| format!("cannot write record.path {}", path.display()))?;
        let (queue, commands) = mpsc::sync_channel(config.queue);
        let stopped = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            out,
            written,
            max_bytes: config.max_bytes,
            flush_interval: config.flush_interval,
            stopped: stopped.clone(),
            events: events.clone(),
            path: path.display().to_string(),
        };
        std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || writer.run(commands))
            .context("starting the recorder thread")?;
        tracing::warn!(
            path = %path.display(),
            payloads = config.payloads,
            "recording traffic: the file holds user and device ids, topics and times (and, with \
             record.payloads, message bodies); deleting a user does not remove them from it, so \
             delete the file when done"
        );
        Ok(Some(Self {
            inner: Arc::new(Inner {
                started: Instant::now(),
                queue: Mutex::new(queue),
                stopped,
                payloads: config.payloads,
                events,
            }),
        }))
    }

    /// Stamps `event` with the time since the recording started and queues it, without ever
    /// waiting: a full queue drops it.
    pub fn record(&self, event: Event) {
        let inner = &self.inner;
        if inner.stopped.load(Ordering::Relaxed) {
            return self.count(RecordStatus::stopped);
        }
        let sent = {
            let queue = inner.queue.lock().expect("recorder queue lock");
            let t_ms = inner.started.elapsed().as_millis() as u64;
            queue.try_send(Command::Write(Line { t_ms, event }))
        };
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.count(RecordStatus::dropped),
            Err(TrySendError::Disconnected(_)) => self.count(RecordStatus::stopped),
        }
    }

    /// A publish's payload or an API body as recorded: itself, or only its size when
    /// `record.payloads` is off.
    pub fn payload(&self, content: &[u8]) -> Payload {
        if !self.inner.payloads {
            return Payload::Size(content.len());
        }
        match json_or_base64(content) {
            JsonOrBase64::Json(value) => Payload::Json(value),
            JsonOrBase64::Base64(text) => Payload::Base64(text),
        }
    }

    /// Starts recording a session, with its connect; `None` for sessions that are not a
    /// device's (dev-mode anonymous clients and backends hold no token a replay could mint).
    pub fn session(
        &self,
        session: LinkId,
        identity: &Identity,
        transport: Transport,
    ) -> Option<SessionRecording> {
        let Identity::Device {
            user,
            device,
            platform,
        } = identity
        else {
            return None;
        };
        self.record(Event::Connect {
            session,
            user: user.clone(),
            device: device.clone(),
            transport,
            platform: *platform,
        });
        Some(SessionRecording {
            recorder: self.clone(),
            session,
        })
    }

    /// Writes out everything recorded so far and stops the writer; for shutdown. Blocks for at
    /// most a few seconds.
    pub fn finish(&self) {
        let (done, finished) = mpsc::channel();
        let queue = self
            .inner
            .queue
            .lock()
            .expect("recorder queue lock")
            .clone();
        // A blocking send: at shutdown, waiting for room behind what is queued is what we want.
        if queue.send(Command::Finish(done)).is_ok()
            && finished.recv_timeout(FINISH_TIMEOUT).is_err()
        {
            tracing::warn!("the recording was not written out within {FINISH_TIMEOUT:?}");
        }
    }

    fn count(&self, status: RecordStatus) {
        self.inner
            .events
            .get_or_create(&RecordLabel { status })
            .inc();
    }
}

/// One device session's part of the recording; its drop records the disconnect.
pub struct SessionRecording {
    recorder: Recorder,
    session: LinkId,
}

impl SessionRecording {
    pub fn subscribed(&self, topic: &str, qos: Qos) {
        self.recorder.record(Event::Subscribe {
            session: self.session,
            topic: topic.to_string(),
            qos: qos.level(),
        });
    }

    pub fn unsubscribed(&self, topic: &str) {
        self.recorder.record(Event::Unsubscribe {
            session: self.session,
            topic: topic.to_string(),
        });
    }

    /// A publish to record once the gateway has accepted it (see [`PendingPublish`]).
    pub fn publish(&self, topic: &str, payload: Bytes, qos: Qos) -> PendingPublish {
        PendingPublish {
            recorder: self.recorder.clone(),
            session: self.session,
            topic: topic.to_string(),
            payload,
            qos,
        }
    }
}

/// A publish authorization allowed, waiting for the gateway's answer: it is recorded (at that
/// time) only if accepted — a device's message once durable, a request once done — so that a
/// replay sends nothing the gateway refused, such as a malformed payload.
pub struct PendingPublish {
    recorder: Recorder,
    session: LinkId,
    topic: String,
    payload: Bytes,
    qos: Qos,
}

impl PendingPublish {
    pub fn accepted(self) {
        self.recorder.record(Event::Publish {
            session: self.session,
            topic: self.topic,
            qos: self.qos.level(),
            payload: self.recorder.payload(&self.payload),
        });
    }
}

impl Drop for SessionRecording {
    fn drop(&mut self) {
        self.recorder.record(Event::Disconnect {
            session: self.session,
        });
    }
}

/// Content as JSON when it is JSON, else base64: how the JSON WebSocket delivers a payload and
/// how a recording keeps one.
pub enum JsonOrBase64 {
    Json(serde_json::Value),
    Base64(String),
}

pub fn json_or_base64(content: &[u8]) -> JsonOrBase64 {
    match serde_json::from_slice(content) {
        Ok(value) => JsonOrBase64::Json(value),
        Err(_) => JsonOrBase64::Base64(base64::engine::general_purpose::STANDARD.encode(content)),
    }
}

/// The thread that owns the file.
struct Writer {
    out: BufWriter<File>,
    /// Bytes in the file so far.
    written: u64,
    max_bytes: u64,
    flush_interval: Duration,
    stopped: Arc<AtomicBool>,
    events: Family<RecordLabel, Counter>,
    path: String,
}

impl Writer {
    fn run(mut self, commands: mpsc::Receiver<Command>) {
        let mut last_flush = Instant::now();
        let mut dirty = false;
        loop {
            match commands.recv_timeout(self.flush_interval) {
                Ok(Command::Write(line)) => dirty |= self.write(&line),
                Ok(Command::Finish(done)) => {
                    self.flush();
                    let _ = done.send(());
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.flush(),
            }
            if dirty && last_flush.elapsed() >= self.flush_interval {
                self.flush();
                dirty = false;
                last_flush = Instant::now();
            }
        }
    }

    /// Writes one event unless recording has stopped, and counts it; whether it was written.
    fn write(&mut self, line: &Line) -> bool {
        let wrote = !self.stopped.load(Ordering::Relaxed) && self.append(line);
        self.count(match wrote {
            true => RecordStatus::written,
            false => RecordStatus::stopped,
        });
        wrote
    }

    fn append(&mut self, line: &Line) -> bool {
        let text = serde_json::to_string(line).expect("recorded events serialize");
        let size = text.len() as u64 + 1;
        if self.written + size > self.max_bytes {
            self.stop(format_args!(
                "the file reached record.max_bytes ({} bytes)",
                self.max_bytes
            ));
            return false;
        }
        if let Err(e) = writeln!(self.out, "{text}") {
            self.stop(format_args!("cannot write: {e}"));
            return false;
        }
        self.written += size;
        true
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            self.stop(format_args!("cannot write: {e}"));
        }
    }

    /// Stops recording for good, with the one warning that says why.
    fn stop(&self, why: std::fmt::Arguments) {
        tracing::warn!(path = %self.path, "recording stopped: {why}");
        self.stopped.store(true, Ordering::Relaxed);
    }

    fn count(&self, status: RecordStatus) {
        self.events.get_or_create(&RecordLabel { status }).inc();
    }
}

fn write_line(out: &mut impl Write, value: &impl serde::Serialize) -> std::io::Result<u64> {
    let text = serde_json::to_string(value).expect("a header serializes");
    writeln!(out, "{text}")?;
    Ok(text.len() as u64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::envelope::Platform;
    use serde_json::json;

    fn config(path: &std::path::Path) -> Record {
        Record {
            path: Some(path.to_path_buf()),
            flush_interval: Duration::from_millis(10),
            payloads: true,
            ..Record::default()
        }
    }

    /// A recorder keeping payloads into `t.jsonl` in `dir`, and that path.
    fn started(dir: &tempfile::TempDir) -> (Recorder, std::path::PathBuf) {
        let path = dir.path().join("t.jsonl");
        let recorder = Recorder::start(&config(&path), Family::default())
            .unwrap()
            .unwrap();
        (recorder, path)
    }

    fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_session_is_recorded_from_connect_to_disconnect() {
        let dir = tempfile::tempdir().unwrap();
        let (recorder, path) = started(&dir);
        let identity = Identity::Device {
            user: "alice".into(),
            device: "phone".into(),
            platform: Platform::Ios,
        };
        let session = recorder.session(7, &identity, Transport::Mqtt).unwrap();
        session.subscribed("u/alice/inbox", Qos::AtLeastOnce);
        let send = br#"{"to":"bob"}"#;
        let refused = session.publish(
            "u/alice/d/phone/send",
            Bytes::from_static(b"x"),
            Qos::AtLeastOnce,
        );
        session
            .publish(
                "u/alice/d/phone/send",
                Bytes::from_static(send),
                Qos::AtLeastOnce,
            )
            .accepted();
        session
            .publish("pub/raw", Bytes::from_static(&[0, 1]), Qos::AtMostOnce)
            .accepted();
        drop(refused);
        session.unsubscribed("u/alice/inbox");
        drop(session);
        recorder.finish();

        let lines = lines(&path);
        assert_eq!(lines[0]["recording"], "gateway");
        assert_eq!(lines[0]["version"], 1);
        let events: Vec<&str> = lines[1..]
            .iter()
            .map(|l| l["event"].as_str().unwrap())
            .collect();
        assert_eq!(
            events,
            [
                "connect",
                "subscribe",
                "publish",
                "publish",
                "unsubscribe",
                "disconnect"
            ]
        );
        assert_eq!(lines[1]["platform"], "ios");
        assert_eq!(lines[3]["payload"], json!({"to": "bob"}));
        assert_eq!(lines[4]["payload_base64"], "AAE=");
        let times: Vec<u64> = lines[1..]
            .iter()
            .map(|l| l["t_ms"].as_u64().unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    }

    #[test]
    fn only_sizes_without_payloads_and_nothing_past_max_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let events = Family::<RecordLabel, Counter>::default();
        let record = Record {
            payloads: false,
            max_bytes: 4096,
            ..config(&path)
        };
        let recorder = Recorder::start(&record, events.clone()).unwrap().unwrap();
        for _ in 0..100 {
            recorder.record(Event::Api {
                method: "POST".into(),
                path: "/v1/messages".into(),
                body: recorder.payload(br#"{"to":"alice","body":{}}"#),
            });
        }
        recorder.finish();
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size <= 4096, "{size}");
        let lines = lines(&path);
        assert_eq!(lines[1]["bytes"], 24);
        let count = |status| events.get_or_create(&RecordLabel { status }).get();
        assert_eq!(count(RecordStatus::written) as usize, lines.len() - 1);
        assert!(count(RecordStatus::stopped) >= 1);
        assert_eq!(
            count(RecordStatus::written) + count(RecordStatus::stopped),
            100
        );
    }

    #[test]
    fn anonymous_and_backend_sessions_are_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let (recorder, path) = started(&dir);
        let anonymous = Identity::Anonymous {
            client_id: "c".into(),
        };
        let backend = Identity::Backend {
            client_id: "b".into(),
            notify_topic: "svc/notifications".into(),
        };
        assert!(recorder.session(1, &anonymous, Transport::Mqtt).is_none());
        assert!(recorder.session(2, &backend, Transport::Mqtt).is_none());
        recorder.finish();
        assert_eq!(lines(&path).len(), 1);
    }
}
