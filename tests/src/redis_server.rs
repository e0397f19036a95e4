//! A real `redis-server` for a test, on a free loopback port, with its files in a temporary
//! directory. It can be killed and started again on the same port, to simulate an outage.
//!
//! Everything here blocks (std processes and sockets, for a few milliseconds at a time), so it
//! serves plain tests and `#[tokio::test]`s alike.

use crate::PATIENCE;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How many free ports are tried: another process may take a port between our probe and the
/// server binding it.
const PORT_ATTEMPTS: usize = 5;

pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// What runs and how, kept for a restart.
    launch: Launch,
}

/// The server program and more arguments for it (TLS, ACL users, settings).
struct Launch {
    program: &'static str,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server (append-only file, fsync on every write) and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(Vec::new())
    }

    /// As [`start`](Self::start), and also listening with TLS on a port of its own (see
    /// [`tls_port`](Self::tls_port)) with `cert` and `key`, and with the ACL user `user` who has
    /// `password` and may do everything. The plain port stays open to the default user, for the
    /// test's own checks.
    pub fn start_tls(cert: &Path, key: &Path, user: &str, password: &str) -> (Self, u16) {
        let tls_port = free_port();
        let extra = [
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
            // The rule's words are arguments of their own on the command line.
            "--user",
            user,
            "on",
            &format!(">{password}"),
            "~*",
            "&*",
            "+@all",
        ];
        (
            Self::start_with(extra.map(str::to_string).to_vec()),
            tls_port,
        )
    }

    /// As [`start`](Self::start), with more arguments for `redis-server`.
    pub fn start_with(extra: Vec<String>) -> Self {
        Self::launched(Launch {
            program: "redis-server",
            extra,
        })
    }

    /// As [`start_with`](Self::start_with), but Valkey (Debian's `valkey-server`, from
    /// bookworm-backports: Redis 7.2's commands, `WAITAOF` among them, which Debian 12's Redis
    /// 7.0 lacks).
    pub fn start_valkey(extra: Vec<String>) -> Self {
        Self::launched(Launch {
            program: "valkey-server",
            extra,
        })
    }

    fn launched(launch: Launch) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory for the server");
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match start_server(&launch, port, dir.path()) {
                Ok(child) => {
                    return Self {
                        port,
                        dir,
                        child: Some(child),
                        launch,
                    }
                }
                Err(e) => failures.push(e),
            }
        }
        panic!("{} did not start: {}", launch.program, failures.join("; "));
    }

    /// `redis://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs one command on the server with `redis-cli` (which comes with redis-server) and
    /// returns its answer; panics when the server refuses it.
    pub fn command(&self, args: &[&str]) -> String {
        let output = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("running redis-cli");
        let answer = String::from_utf8_lossy(&output.stdout).trim().to_string();
        assert!(
            output.status.success() && !answer.starts_with("ERR"),
            "redis-cli {args:?}: {answer} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        answer
    }

    /// Whether the server runs (it was not [`stop`](Self::stop)ped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server at once (no shutdown, as in a crash); it stays down until
    /// [`start_again`](Self::start_again).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same directory, after [`stop`](Self::stop).
    pub fn start_again(&mut self) {
        self.stop();
        let child = start_server(&self.launch, self.port, self.dir.path())
            .unwrap_or_else(|e| panic!("{} did not start again: {e}", self.launch.program));
        self.child = Some(child);
    }
}

impl RedisServer {
    /// Starts the server again on the same port with nothing it had: no data, and none of the
    /// scripts it had loaded (as a server replaced by an empty one).
    pub fn restart_empty(&mut self) {
        self.stop();
        for entry in std::fs::read_dir(self.dir.path()).expect("the server's directory") {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_none_or(|ext| ext != "log") {
                let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
            }
        }
        self.start_again();
    }

    /// Freezes the server (SIGSTOP): it holds its connections and answers nothing, as a
    /// server that hangs, until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .expect("the server runs")
            .id()
            .to_string();
        let sent = Command::new("kill").args([signal, &pid]).status();
        assert!(
            sent.is_ok_and(|status| status.success()),
            "kill {signal} {pid}"
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nothing listens on now (the OS picks it; it is released for the server to take).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Starts the server on `port` and waits until it answers PING. On failure the server is
/// killed and the reason (with the end of its log) returned.
fn start_server(launch: &Launch, port: u16, dir: &Path) -> Result<Child, String> {
    let log = dir.join(format!("redis-{port}.log"));
    let mut child = Command::new(launch.program)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        // Durable as the gateway needs it: every write in the append-only file before the
        // answer, so a killed and restarted server has lost nothing acknowledged.
        .args([
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&log)
        .args(&launch.extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => panic!(
                "{0} is not installed: run scripts/test, which installs it (Debian package {0})",
                launch.program
            ),
            _ => panic!("cannot run {}: {e}", launch.program),
        });
    let log_tail = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    };
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("port {port}: exited with {status}: {}", log_tail()));
        }
        if answers_ping(port) {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "port {port}: no answer to PING within {PATIENCE:?}: {}",
                log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}
