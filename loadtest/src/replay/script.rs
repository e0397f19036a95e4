//! A recording read into what the replay does: each session's connect and steps, and the API
//! calls, with every user renamed and every time in the recording's milliseconds.
//!
//! Everything that could make a replay meaningless is refused here, before anything is sent,
//! with the line it is on: a malformed line, an unknown version, an event of a session that was
//! never connected, a payload recorded only as its size, an API call that is not traffic.

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use protocol::envelope::{Platform, Transport};
use protocol::recording::{Event, Header, Line, Payload};
use protocol::topics::{is_valid_id, USER_PREFIX};
use serde_json::Value;
use std::collections::HashMap;
use std::io::BufRead;
use std::time::Duration;

/// The API calls a replay sends: the ones the gateway records.
pub const REPLAYED_CALLS: [&str; 3] = [
    "/v1/messages",
    "/v1/notifications",
    "/v1/notifications/batch",
];

/// Top-level fields of a JSON payload or API body that hold a user id.
const USER_FIELDS: [&str; 3] = ["user", "to", "from"];

/// A recording, ready to play.
#[derive(Debug)]
pub struct Script {
    pub sessions: Vec<SessionScript>,
    pub api_calls: Vec<ApiCall>,
    /// Events read, header excluded.
    pub events: usize,
    /// The time of the last event, in the recording's milliseconds.
    pub span_ms: u64,
}

/// One recorded device session.
#[derive(Debug)]
pub struct SessionScript {
    /// The session's number in the recording, to name it in failures.
    pub recorded_as: u64,
    pub user: String,
    pub device: String,
    pub platform: Platform,
    pub transport: Transport,
    pub connect_ms: u64,
    pub steps: Vec<Step>,
    /// When the session ended; `None` when it was still open as the recording ended.
    pub disconnect_ms: Option<u64>,
    /// A newer connection of the same device connected while this one was open, so the gateway
    /// closed this one.
    pub taken_over: bool,
}

impl SessionScript {
    /// How failures name the session.
    pub fn name(&self) -> String {
        format!(
            "session {} ({}/{} over {})",
            self.recorded_as,
            self.user,
            self.device,
            self.transport.as_str()
        )
    }
}

/// Something a session does after connecting.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub at_ms: u64,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Subscribe { topic: String, qos: u8 },
    Unsubscribe { topic: String },
    Publish { topic: String, qos: u8, body: Body },
}

/// Content to send again.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Json(Value),
    Bytes(Vec<u8>),
}

impl Body {
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Json(value) => serde_json::to_vec(value).expect("JSON values serialize"),
            Self::Bytes(bytes) => bytes.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiCall {
    pub at_ms: u64,
    pub path: String,
    pub body: Body,
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe { .. } => "unsubscribe",
            Self::Publish { .. } => "publish",
        }
    }
}

/// Renames every user `X` to `prefix + X`: in logins, in topics under `u/`, and in the
/// top-level `user`, `to` and `from` fields of JSON bodies, so that a replay's users are its own
/// and never collide with another run's logs.
#[derive(Debug, Clone)]
pub struct Renamer {
    prefix: String,
}

impl Renamer {
    pub fn new(prefix: &str) -> Result<Self> {
        // The prefix must itself be made of id characters; its length is checked per user.
        if !prefix.is_empty() && !is_valid_id(prefix) {
            bail!("--user-prefix {prefix:?}: use letters, digits, '_', '-' and '.' only");
        }
        Ok(Self {
            prefix: prefix.to_string(),
        })
    }

    pub fn user(&self, user: &str) -> Result<String> {
        let renamed = format!("{}{user}", self.prefix);
        if !is_valid_id(&renamed) {
            bail!("user {user:?} renamed to {renamed:?} is not a valid user id (at most 64 letters, digits, '_', '-', '.')");
        }
        Ok(renamed)
    }

    /// `u/{user}/…` gets the renamed user; other topics stay as they are.
    pub fn topic(&self, topic: &str) -> Result<String> {
        let Some(rest) = topic.strip_prefix(USER_PREFIX) else {
            return Ok(topic.to_string());
        };
        let (user, tail) = match rest.split_once('/') {
            Some((user, tail)) => (user, Some(tail)),
            None => (rest, None),
        };
        let user = self.user(user)?;
        Ok(match tail {
            Some(tail) => format!("{USER_PREFIX}{user}/{tail}"),
            None => format!("{USER_PREFIX}{user}"),
        })
    }

    /// Renames the user fields at the top of a JSON object, and of each object in a batch's
    /// `notifications`; other values stay as they are.
    pub fn body(&self, mut body: Value) -> Result<Value> {
        if let Some(object) = body.as_object_mut() {
            for field in USER_FIELDS {
                if let Some(Value::String(user)) = object.get_mut(field) {
                    *user = self.user(user)?;
                }
            }
            if let Some(Value::Array(batch)) = object.get_mut("notifications") {
                for item in batch {
                    *item = self.body(item.take())?;
                }
            }
        }
        Ok(body)
    }
}

/// The time `at_ms` into the recording comes `at_ms / speed` into the replay.
pub fn scaled(at_ms: u64, speed: f64) -> Duration {
    Duration::from_secs_f64(at_ms as f64 / 1e3 / speed)
}

impl Script {
    /// Reads a recording of at most `max_events` events, renaming users with `rename`.
    pub fn read(input: impl BufRead, rename: &Renamer, max_events: usize) -> Result<Self> {
        let mut lines = input.lines();
        let header = lines
            .next()
            .ok_or_else(|| anyhow!("the file is empty: expected a recording header"))?
            .context("reading line 1")?;
        check_header(&header)?;
        let mut reader = Reader {
            rename,
            sessions: Vec::new(),
            open: HashMap::new(),
            api_calls: Vec::new(),
            last_ms: 0,
        };
        let mut events = 0;
        for (index, line) in lines.enumerate() {
            let number = index + 2;
            let line = line.with_context(|| format!("reading line {number}"))?;
            if line.trim().is_empty() {
                continue;
            }
            events += 1;
            if events > max_events {
                bail!("the recording holds more than --max-events {max_events} events");
            }
            reader
                .add(&line)
                .with_context(|| format!("line {number}"))?;
        }
        Ok(Self {
            span_ms: reader.last_ms,
            sessions: reader.sessions,
            api_calls: reader.api_calls,
            events,
        })
    }
}

fn check_header(line: &str) -> Result<()> {
    let header: Header = serde_json::from_str(line).with_context(|| {
        format!("line 1 is not a recording header ({{\"recording\": \"gateway\", \"version\": 1, …}}): {line:.200}")
    })?;
    if header.recording != protocol::recording::KIND {
        bail!(
            "line 1: a {:?} recording, expected {:?}",
            header.recording,
            protocol::recording::KIND
        );
    }
    if header.version != protocol::recording::VERSION {
        bail!(
            "line 1: recording format version {}, this replay reads version {}",
            header.version,
            protocol::recording::VERSION
        );
    }
    Ok(())
}

/// The state of reading: the sessions so far, and which are open.
struct Reader<'a> {
    rename: &'a Renamer,
    sessions: Vec<SessionScript>,
    /// Recorded session number → index in `sessions`, while the session is open.
    open: HashMap<u64, usize>,
    api_calls: Vec<ApiCall>,
    last_ms: u64,
}

impl Reader<'_> {
    fn add(&mut self, text: &str) -> Result<()> {
        let line: Line = serde_json::from_str(text)
            .with_context(|| format!("not a recorded event: {text:.200}"))?;
        if line.t_ms < self.last_ms {
            bail!(
                "t_ms {} goes back in time (the line before is at {})",
                line.t_ms,
                self.last_ms
            );
        }
        self.last_ms = line.t_ms;
        let at_ms = line.t_ms;
        match line.event {
            Event::Connect {
                session,
                user,
                device,
                transport,
                platform,
            } => {
                if self.open.contains_key(&session) {
                    bail!("session {session} connects twice");
                }
                let user = self.rename.user(&user)?;
                for &index in self.open.values() {
                    let older = &mut self.sessions[index];
                    if older.user == user && older.device == device {
                        older.taken_over = true;
                    }
                }
                self.open.insert(session, self.sessions.len());
                self.sessions.push(SessionScript {
                    recorded_as: session,
                    user,
                    device,
                    platform,
                    transport,
                    connect_ms: at_ms,
                    steps: Vec::new(),
                    disconnect_ms: None,
                    taken_over: false,
                });
            }
            Event::Subscribe {
                session,
                topic,
                qos,
            } => {
                let topic = self.rename.topic(&topic)?;
                self.step(session, at_ms, Action::Subscribe { topic, qos })?;
            }
            Event::Unsubscribe { session, topic } => {
                let topic = self.rename.topic(&topic)?;
                self.step(session, at_ms, Action::Unsubscribe { topic })?;
            }
            Event::Publish {
                session,
                topic,
                qos,
                payload,
            } => {
                let topic = self.rename.topic(&topic)?;
                let body = self.body(payload)?;
                if let (Body::Bytes(_), Some(&index)) = (&body, self.open.get(&session)) {
                    if self.sessions[index].transport == Transport::JsonWs {
                        bail!("a JSON WebSocket session cannot publish a payload that is not JSON");
                    }
                }
                self.step(session, at_ms, Action::Publish { topic, qos, body })?;
            }
            Event::Disconnect { session } => {
                let index = self
                    .open
                    .remove(&session)
                    .ok_or_else(|| anyhow!("session {session} disconnects but is not connected"))?;
                self.sessions[index].disconnect_ms = Some(at_ms);
            }
            Event::Api { method, path, body } => {
                if method != "POST" || !REPLAYED_CALLS.contains(&path.as_str()) {
                    bail!(
                        "API call {method} {path} is not replayed (only POST {})",
                        REPLAYED_CALLS.join(" and POST ")
                    );
                }
                let body = self.body(body)?;
                self.api_calls.push(ApiCall { at_ms, path, body });
            }
        }
        Ok(())
    }

    fn step(&mut self, session: u64, at_ms: u64, action: Action) -> Result<()> {
        let index = *self.open.get(&session).ok_or_else(|| {
            anyhow!(
                "{} of session {session}, which is not connected",
                action.kind()
            )
        })?;
        self.sessions[index].steps.push(Step { at_ms, action });
        Ok(())
    }

    fn body(&self, payload: Payload) -> Result<Body> {
        match payload {
            Payload::Json(value) => Ok(Body::Json(self.rename.body(value)?)),
            Payload::Base64(text) => base64::engine::general_purpose::STANDARD
                .decode(&text)
                .map(Body::Bytes)
                .context("payload_base64 is not base64"),
            Payload::Size(_) => bail!(
                "the recording kept only the payload's size (record.payloads = false): it cannot be replayed"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HEADER: &str =
        r#"{"recording":"gateway","version":1,"started_at":"2026-01-01T00:00:00.000Z"}"#;

    fn read(lines: &[Value]) -> Result<Script> {
        let mut text = format!("{HEADER}\n");
        for line in lines {
            text.push_str(&format!("{line}\n"));
        }
        Script::read(text.as_bytes(), &Renamer::new("rp1-").unwrap(), 100)
    }

    fn error(lines: &[Value]) -> String {
        format!("{:#}", read(lines).unwrap_err())
    }

    #[test]
    fn sessions_steps_and_calls_are_read_and_renamed() {
        let script = read(&[
            json!({"t_ms": 0, "event": "connect", "session": 4, "user": "alice", "device": "phone", "transport": "mqtt", "platform": "ios"}),
            json!({"t_ms": 5, "event": "subscribe", "session": 4, "topic": "u/alice/inbox", "qos": 1}),
            json!({"t_ms": 9, "event": "publish", "session": 4, "topic": "u/alice/d/phone/send", "qos": 1, "payload": {"to": "bob", "body": {"to": "x"}}}),
            json!({"t_ms": 12, "event": "api", "method": "POST", "path": "/v1/notifications", "payload": {"user": "bob", "kind": "friend_request"}}),
            json!({"t_ms": 15, "event": "api", "method": "POST", "path": "/v1/notifications/batch", "payload": {"notifications": [{"user": "carol", "kind": "x"}, {"user": "dan", "kind": "y"}]}}),
            json!({"t_ms": 20, "event": "disconnect", "session": 4}),
        ])
        .unwrap();
        assert_eq!(script.events, 6);
        assert_eq!(script.span_ms, 20);
        let session = &script.sessions[0];
        assert_eq!(
            (session.user.as_str(), session.device.as_str()),
            ("rp1-alice", "phone")
        );
        assert_eq!(session.disconnect_ms, Some(20));
        assert_eq!(
            session.steps,
            [
                Step {
                    at_ms: 5,
                    action: Action::Subscribe {
                        topic: "u/rp1-alice/inbox".into(),
                        qos: 1
                    }
                },
                Step {
                    at_ms: 9,
                    action: Action::Publish {
                        topic: "u/rp1-alice/d/phone/send".into(),
                        qos: 1,
                        // Only the top level names users: the body is the application's.
                        body: Body::Json(json!({"to": "rp1-bob", "body": {"to": "x"}})),
                    }
                },
            ]
        );
        assert_eq!(
            script.api_calls[0].body,
            Body::Json(json!({"user": "rp1-bob", "kind": "friend_request"}))
        );
        assert_eq!(
            script.api_calls[1].body,
            Body::Json(
                json!({"notifications": [{"user": "rp1-carol", "kind": "x"}, {"user": "rp1-dan", "kind": "y"}]})
            )
        );
    }

    #[test]
    fn a_session_open_when_its_device_connects_again_is_taken_over() {
        let connect = |session, device| json!({"t_ms": 0, "event": "connect", "session": session, "user": "a", "device": device, "transport": "mqtt", "platform": "ios"});
        let script = read(&[
            connect(1, "phone"),
            connect(2, "laptop"),
            connect(3, "phone"),
            json!({"t_ms": 1, "event": "disconnect", "session": 1}),
        ])
        .unwrap();
        let taken_over: Vec<bool> = script.sessions.iter().map(|s| s.taken_over).collect();
        assert_eq!(taken_over, [true, false, false]);
    }

    #[test]
    fn topics_outside_users_keep_their_names() {
        let rename = Renamer::new("p-").unwrap();
        assert_eq!(rename.topic("pub/news").unwrap(), "pub/news");
        assert_eq!(rename.topic("u/a").unwrap(), "u/p-a");
        assert_eq!(rename.topic("u/a/d/b/sync").unwrap(), "u/p-a/d/b/sync");
        assert!(rename.user(&"a".repeat(63)).is_err());
        assert!(Renamer::new("bad/prefix").is_err());
        assert_eq!(
            rename.body(json!({"from": "shop", "n": 1})).unwrap(),
            json!({"from": "p-shop", "n": 1})
        );
        assert_eq!(rename.body(json!([1])).unwrap(), json!([1]));
    }

    #[test]
    fn times_scale_by_the_speed() {
        assert_eq!(scaled(1000, 1.0), Duration::from_secs(1));
        assert_eq!(scaled(1000, 2.0), Duration::from_millis(500));
        assert_eq!(scaled(1000, 0.5), Duration::from_secs(2));
    }

    #[test]
    fn what_cannot_be_replayed_is_refused_with_its_line() {
        let connect = json!({"t_ms": 0, "event": "connect", "session": 1, "user": "a", "device": "d", "transport": "json_ws", "platform": "web"});
        assert!(error(&[
            json!({"t_ms": 1, "event": "subscribe", "session": 9, "topic": "u/a/inbox", "qos": 1})
        ])
        .contains("line 2: subscribe of session 9, which is not connected"));
        assert!(error(&[connect.clone(), json!({"t_ms": 1, "event": "publish", "session": 1, "topic": "pub/x", "qos": 0, "bytes": 3})])
            .contains("line 3: the recording kept only the payload's size"));
        assert!(error(&[connect.clone(), json!({"t_ms": 1, "event": "publish", "session": 1, "topic": "pub/x", "qos": 0, "payload_base64": "AAE="})])
            .contains("not JSON"));
        assert!(error(&[json!({"t_ms": 1, "event": "api", "method": "DELETE", "path": "/v1/users/a", "payload": {}})])
            .contains("DELETE /v1/users/a is not replayed"));
        assert!(
            error(&[json!({"t_ms": 5, "event": "disconnect", "session": 1})])
                .contains("disconnects but is not connected")
        );
        assert!(
            error(&[connect.clone(), json!({"t_ms": 0, "event": "bogus"})])
                .contains("line 3: not a recorded event")
        );
        let late = json!({"t_ms": 9, "event": "connect", "session": 2, "user": "b", "device": "d", "transport": "mqtt", "platform": "ios"});
        assert!(error(&[late, connect]).contains("goes back in time"));
    }

    #[test]
    fn headers_and_limits_are_checked() {
        let rename = Renamer::new("").unwrap();
        let fails = |text: &str, max| {
            format!(
                "{:#}",
                Script::read(text.as_bytes(), &rename, max).unwrap_err()
            )
        };
        assert!(fails("", 10).contains("empty"));
        assert!(fails("{\"t_ms\": 0}\n", 10).contains("not a recording header"));
        assert!(
            fails(r#"{"recording":"gateway","version":2,"started_at":""}"#, 10)
                .contains("version 2")
        );
        let two = format!(
            "{HEADER}\n{}\n{}\n",
            json!({"t_ms": 0, "event": "api", "method": "POST", "path": "/v1/messages", "payload": {"to": "a", "body": {}}}),
            json!({"t_ms": 1, "event": "api", "method": "POST", "path": "/v1/messages", "payload": {"to": "a", "body": {}}}),
        );
        assert_eq!(
            Script::read(two.as_bytes(), &rename, 2)
                .unwrap()
                .api_calls
                .len(),
            2
        );
        assert!(fails(&two, 1).contains("more than --max-events 1"));
    }
}
