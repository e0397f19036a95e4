//! A second stock client besides rumqttc: Eclipse Paho's Python client (paho-mqtt from PyPI,
//! installed by `scripts/test` into `target/python`), 3.1.1 and 5, keeps a persistent session,
//! misses 1,000 messages and gets them all, in order, without asking.

use e2e::TestGateway;
use futures_util::future::join_all;
use protocol::envelope::Platform;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;

/// The Python with paho-mqtt: `PAHO_PYTHON`, or the virtualenv `scripts/test` makes.
fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("PAHO_PYTHON") {
        return PathBuf::from(path);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = root.join("target/python/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: scripts/test installs paho-mqtt there (or set PAHO_PYTHON)",
        venv.display()
    );
    venv
}

/// Runs the Paho device script; returns what it printed as JSON, if anything.
fn paho(gw: &TestGateway, action: &str, version: u8, extra: &[&str]) -> Option<Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/paho_session.py");
    let token = gw.token("alice", "phone", Platform::Android);
    let output = Command::new(python())
        .arg(script)
        .arg(action)
        .args(["--port", &gw.mqtt.port().to_string()])
        .args(["--token", &token, "--user", "alice", "--device", "phone"])
        .args(["--version", &version.to_string()])
        .args(extra)
        .output()
        .expect("running python");
    assert!(
        output.status.success(),
        "paho {action}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .last()
        .map(|line| serde_json::from_str(line).unwrap())
}

async fn misses_1000_and_gets_them_all(version: u8) {
    let gw = TestGateway::start().await;
    paho(&gw, "subscribe", version, &[]);
    for chunk in (0..1000).collect::<Vec<_>>().chunks(50) {
        join_all(
            chunk
                .iter()
                .map(|n| gw.post_message("alice", json!({"n": n}))),
        )
        .await;
    }
    let (gw_ref, count) = (&gw, "1000");
    let received = tokio::task::block_in_place(|| {
        paho(gw_ref, "receive", version, &["--count", count]).expect("a result line")
    });
    assert_eq!(received["session_present"], true);
    let seqs: Vec<u64> = serde_json::from_value(received["seqs"].clone()).unwrap();
    assert_eq!(
        seqs,
        (1..=1000).collect::<Vec<u64>>(),
        "all, in order, once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paho_3_1_1_device_gets_what_it_missed() {
    misses_1000_and_gets_them_all(3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paho_5_device_gets_what_it_missed() {
    misses_1000_and_gets_them_all(5).await;
}
