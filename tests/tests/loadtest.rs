//! The benchmark tool stays working: a small `loadtest compare` against the real gateway and a
//! real mosquitto, in one run, with every loss check on.

use e2e::gateway::binary;
use e2e::{Options, TestGateway};
use std::process::Command;

#[tokio::test]
async fn compare_runs_against_the_gateway_and_mosquitto() {
    // As in the README's benchmark: an outbox as deep as mosquitto's queue, because the tool's
    // publisher is not slowed by its subscriber and a QoS 1 subscriber that falls a full outbox
    // behind is disconnected (see the README).
    let gw = TestGateway::start_with(Options::default().with("LIMITS__OUTBOX_CAPACITY", "1000000"))
        .await;
    let loadtest = binary().with_file_name("loadtest");
    let json = gw.data_dir.path().join("compare.json");
    let output = Command::new(&loadtest)
        .args([
            "compare",
            "--rounds",
            "1",
            "--messages",
            "2000",
            "--start-mosquitto",
        ])
        .args(["--connect", "--connections", "200", "--hold", "1s"])
        .arg("--mqtt")
        .arg(gw.mqtt.to_string())
        .arg("--http")
        .arg(gw.url(""))
        .arg("--api-key")
        .arg(&gw.api_key)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("running loadtest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("gateway/mosquitto"), "{stdout}");
    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(result.is_object(), "{result}");
}

/// Runs `loadtest` with `args` and asserts it passed; returns its stdout.
fn loadtest_passes(args: &[&str]) -> String {
    let output = Command::new(binary().with_file_name("loadtest"))
        .args(args)
        .output()
        .expect("running loadtest");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "loadtest {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn notify_bursts_through_both_channel_doubles_at_the_configured_rate() {
    let gateway = binary();
    let stdout = loadtest_passes(&[
        "notify",
        "--start-gateway",
        gateway.to_str().unwrap(),
        "--mode",
        "burst",
        "--count",
        "300",
        "--rate",
        "200",
        "--users",
        "20",
        // A debug build beside other tests: pushes may reach the double late.
        "--jitter",
        "500ms",
    ]);
    assert!(stdout.contains("result: PASS"), "{stdout}");
}

#[tokio::test]
async fn store_and_catchup_benchmarks_run_and_check_their_results() {
    loadtest_passes(&[
        "store",
        "--backend",
        "embedded",
        "--writers",
        "1,16",
        "--duration",
        "300ms",
        "--rounds",
        "1",
    ]);
    let gw = TestGateway::start().await;
    loadtest_passes(&[
        "catchup",
        "--http",
        &gw.url(""),
        "--mqtt",
        &gw.mqtt.to_string(),
        "--api-key",
        &gw.api_key,
        "--missed",
        "300",
        "--rounds",
        "2",
    ]);
}
