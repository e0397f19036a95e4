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
    assert!(stdout.contains("qos1 broker cpu cores"), "{stdout}");
    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    // The gateway's own account of where a stored message's time went, read from its
    // `/metrics` around each run: every stage, for QoS 0 and QoS 1.
    let stages: Vec<&str> = (result["gateway_stages"].as_array().unwrap().iter())
        .map(|row| row["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "queued",
            "sealed",
            "written",
            "fsynced",
            "delivered",
            "acknowledged"
        ],
        "{stdout}"
    );
    let queued = &result["gateway_stages"][0]["p99_us"];
    assert!(
        queued[0].as_f64() > Some(0.0) && queued[1].as_f64() > Some(0.0),
        "{queued}"
    );
    assert!(stdout.contains("p99 per stage"), "{stdout}");
}

/// Live signals through the batching publishers, paced (a write per burst) and at full speed
/// (a write per full batch), QoS 0 and 1, several publishers to fewer subscribers: every signal
/// arrives once and in order.
#[tokio::test]
async fn pubsub_checks_every_live_signal_paced_and_at_full_speed() {
    // Nothing slows a publisher of signals down to its subscriber: at full speed the subscriber
    // needs an outbox as deep as the run (see the compare test).
    let gw =
        TestGateway::start_with(Options::default().with("LIMITS__OUTBOX_CAPACITY", "100000")).await;
    let json = gw.data_dir.path().join("signals.json");
    let json = json.to_str().unwrap();
    for (qos, rate) in [("0", "2000"), ("1", "0")] {
        let output = loadtest_against(
            &gw,
            &gw.mqtt.to_string(),
            &[
                "pubsub",
                "--signals",
                "--qos",
                qos,
                "--rate",
                rate,
                "--publishers",
                "4",
                "--subscribers",
                "2",
                "--messages",
                "1500",
                "--json",
                json,
            ],
        );
        assert_passed(&output);
        let result = json_result(std::path::Path::new(json));
        assert_eq!(result["path"], "signals", "{result}");
        assert_eq!(result["delivered"], 6000, "{result}");
    }
}

/// Runs `loadtest` with `args` and asserts it passed; returns its stdout.
fn loadtest_passes(args: &[&str]) -> String {
    let output = Command::new(binary().with_file_name("loadtest"))
        .args(args)
        .output()
        .expect("running loadtest");
    assert_passed(&output);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `loadtest notify` with `args` on a gateway it starts, and asserts it passed.
fn notify_passes(args: &[&str]) -> String {
    let gateway = binary();
    let mut all = vec!["notify", "--start-gateway", gateway.to_str().unwrap()];
    all.extend_from_slice(args);
    let stdout = loadtest_passes(&all);
    assert!(stdout.contains("result: PASS"), "{stdout}");
    stdout
}

#[tokio::test]
async fn notify_bursts_through_both_channel_doubles_at_the_configured_rate() {
    notify_passes(&[
        "--mode", "burst", "--count", "300", "--rate", "200", "--users", "20",
        // A debug build beside other tests: pushes may reach the double late.
        "--jitter", "500ms",
    ]);
}

#[tokio::test]
async fn notify_decisions_in_batches_are_routed_and_pushed_once() {
    let stdout = notify_passes(&[
        "--mode",
        "decisions",
        "--batch",
        "25",
        "--concurrency",
        "4",
        "--duration",
        "1s",
        "--users",
        "20",
        "--drain-idle",
        "2s",
    ]);
    assert!(
        stdout.contains("4 requests in flight of 25 notifications"),
        "{stdout}"
    );
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

/// Runs `loadtest` against `gw` with `args` (the gateway's endpoints are added); returns the
/// process output.
fn loadtest_against(gw: &TestGateway, mqtt: &str, args: &[&str]) -> std::process::Output {
    Command::new(binary().with_file_name("loadtest"))
        .args(args)
        .args([
            "--http",
            &gw.url(""),
            "--mqtt",
            mqtt,
            "--api-key",
            &gw.api_key,
        ])
        .output()
        .expect("running loadtest")
}

/// Asserts that a loadtest run passed; shows its output when not.
fn assert_passed(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn json_result(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("the --json file")).expect("JSON")
}

#[tokio::test]
async fn fanout_reaches_every_device_of_every_user() {
    let gw = TestGateway::start().await;
    let json = gw.data_dir.path().join("fanout.json");
    let output = loadtest_against(
        &gw,
        &gw.mqtt.to_string(),
        &[
            "fanout",
            "--users",
            "100",
            "--devices",
            "3",
            "--ws-devices",
            "1",
            "--messages",
            "6",
            "--senders",
            "4",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert_passed(&output);
    let result = json_result(&json);
    assert_eq!(result["devices_connected"], 300, "{result}");
    assert_eq!(result["accepted"], 600, "{result}");
    assert_eq!(result["delivered"], 1800, "{result}");
    assert_eq!(result["losses"]["missing"], 0, "{result}");
}

#[tokio::test]
async fn roam_storm_catches_every_device_up_with_nothing_missing() {
    let gw = TestGateway::start().await;
    let json = gw.data_dir.path().join("roam.json");
    let plot = gw.data_dir.path().join("roam.svg");
    let output = loadtest_against(
        &gw,
        &gw.mqtt.to_string(),
        &[
            "roam",
            "--devices",
            "300",
            "--devices-per-user",
            "3",
            "--ws-devices",
            "1",
            "--missed",
            "30",
            "--json",
            json.to_str().unwrap(),
            "--plot",
            plot.to_str().unwrap(),
        ],
    );
    assert_passed(&output);
    let result = json_result(&json);
    assert_eq!(result["caught_up"], 300, "{result}");
    assert_eq!(result["synced"], 300 * 30, "{result}");
    let svg = std::fs::read_to_string(&plot).expect("the plot");
    assert!(svg.contains("latency by percentile"), "{svg:.200}");
}

#[tokio::test]
async fn roam_storm_with_persistent_sessions_delivers_what_each_device_missed() {
    let gw = TestGateway::start().await;
    for version in ["3.1.1", "5"] {
        let json = gw
            .data_dir
            .path()
            .join(format!("roam-sessions-{version}.json"));
        let output = loadtest_against(
            &gw,
            &gw.mqtt.to_string(),
            &[
                "roam",
                "--sessions",
                "--mqtt-version",
                version,
                "--devices",
                "200",
                "--missed",
                "30",
                "--linger",
                "300ms",
                "--json",
                json.to_str().unwrap(),
            ],
        );
        assert_passed(&output);
        let result = json_result(&json);
        assert_eq!(
            result["catch_up"],
            format!("mqtt-session-{version}"),
            "{result}"
        );
        assert_eq!(result["caught_up"], 200, "{result}");
        assert_eq!(result["session_present"], 200, "{result}");
        assert_eq!(result["synced"], 200 * 30, "{result}");
        assert_eq!(result["missing"], 0, "{result}");
        assert_eq!(result["repeated"], 0, "{result}");
    }
}

#[tokio::test]
async fn connect_holds_connections_with_persistent_sessions() {
    let gw = TestGateway::start().await;
    for transport in ["mqtt", "mqtt-ws"] {
        let json = gw
            .data_dir
            .path()
            .join(format!("connect-sessions-{transport}.json"));
        let output = loadtest_against(
            &gw,
            &gw.mqtt.to_string(),
            &[
                "connect",
                "--sessions",
                "--transport",
                transport,
                "--mqtt-ws",
                &gw.mqtt_ws.to_string(),
                "--user-prefix",
                &format!("{transport}-u"),
                "--connections",
                "200",
                "--hold",
                "1s",
                "--json",
                json.to_str().unwrap(),
            ],
        );
        assert_passed(&output);
        let result = json_result(&json);
        assert_eq!(result["established"], 200, "{result}");
        assert_eq!(result["sessions"], true, "{result}");
    }
}

/// The tool's loss detection is real: a proxy between the gateway and the clients swallows one
/// delivered message, and the run fails naming it. Multi-threaded: the proxy runs while this
/// test's thread waits for the loadtest process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_lost_on_the_way_fails_the_run_and_is_named() {
    let gw = TestGateway::start().await;
    let proxy = e2e::dropping_proxy::DroppingProxy::start(gw.mqtt, 5).await;
    let output = loadtest_against(
        &gw,
        &proxy.addr.to_string(),
        &[
            "pubsub",
            "--qos",
            "1",
            "--messages",
            "40",
            "--drain-timeout",
            "2s",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("result: FAIL"), "{stdout}");
    assert!(
        stdout.contains("1 messages lost, first missing: publisher 0 seq 4"),
        "{stdout}"
    );
}

#[tokio::test]
async fn connect_holds_tls_and_websocket_connections() {
    let gw = TestGateway::start_with(Options::default().tls()).await;
    let mqtt_tls = gw.mqtt_tls.expect("TLS listener").to_string();
    let ca = gw.data_dir.path().join("cert.pem");
    for transport in ["mqtt-tls", "mqtt-ws", "json-ws"] {
        let json = gw.data_dir.path().join(format!("connect-{transport}.json"));
        let output = loadtest_against(
            &gw,
            &gw.mqtt.to_string(),
            &[
                "connect",
                "--transport",
                transport,
                "--mqtt-ws",
                &gw.mqtt_ws.to_string(),
                "--mqtt-tls",
                &mqtt_tls,
                "--ca",
                ca.to_str().unwrap(),
                "--connections",
                "200",
                "--hold",
                "1s",
                "--json",
                json.to_str().unwrap(),
            ],
        );
        assert_passed(&output);
        let result = json_result(&json);
        assert_eq!(result["established"], 200, "{result}");
        assert_eq!(result["transport"], transport, "{result}");
        assert!(
            result["resources"]["broker"]["rss_bytes"].as_u64() > Some(0),
            "{result}"
        );
    }
}
