//! The Eclipse Paho MQTT interoperability suites against the gateway in dev mode (anonymous
//! clients, as the suites' are): upstream's `client_test.py` (MQTT 3.1.1) and `client_test5.py`
//! (MQTT 5), unmodified in `tests/paho/upstream`, run by `tests/paho/run.py` (needs `python3`,
//! which `scripts/test` installs). `scripts/paho` runs the same against mosquitto beside it.
//!
//! Every test must pass but one: `test_server_keep_alive` expects a Server Keep Alive of 60 s
//! for a client that asks for 120 s, and the gateway never cuts a keep alive below its
//! `limits.max_keepalive`, which is at least 15 minutes by design (mobile heartbeats).
//! `test_subscribe_failure` (both suites) needs the server to refuse a SUBSCRIBE to the filter
//! they hard-code, `test/nosubscribe`, with reason 0x80 exactly (the MQTT 5 suite's client takes
//! any other failure code, 0x87 included, for a malformed SUBACK): the gateway withholds it from
//! anonymous clients (`auth.anonymous_withheld`), which it refuses with 0x80.
//!
//! Each suite test runs in a process of its own (run.py kills it after 60 s: some spin forever
//! when a feature is missing), one after the other: they all use the same client ids and clear
//! the server's retained messages, so two cannot share a server at once. To keep the run short
//! the MQTT 5 suite is split over two gateways side by side, and the MQTT 3.1.1 test runs beside
//! it on a third.

use e2e::{Options, TestGateway};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tokio::process::Command;

/// Over how many gateways, side by side, the MQTT 5 suite is split.
const V5_GATEWAYS: usize = 2;

/// MQTT 5 tests that race their own clients: B subscribes, then the test waits for A's SUBACK,
/// which it already has, instead of B's, and A publishes at once. The gateway handles packets
/// that reach two connections at once in the order they came (a publisher yields first), but two
/// connections are two tasks on two cores, and a busy machine can still run A's before B's
/// (mosquitto, one thread reading sockets in turn, always wins that race). A test of these that
/// fails is run once more; a second failure fails.
const RACY: [&str; 2] = ["test_request_response", "test_subscribe_options"];

fn runner() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("paho/run.py")
}

fn python3() -> Command {
    let mut command = Command::new("python3");
    command.arg(runner()).kill_on_drop(true);
    command
}

/// The suite's test names (`run.py SUITE --list`).
async fn test_names(suite: &str) -> Vec<String> {
    let output = python3()
        .args([suite, "--list"])
        .output()
        .await
        .expect("running python3 (scripts/test installs it)");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// One run of run.py: each test's result (`pass`, `fail` or `timeout`) and what it printed, one
/// line per test with the reason of each failure.
struct Run {
    results: BTreeMap<String, String>,
    report: String,
}

/// Runs `tests` of `suite` against a gateway of their own.
async fn run(suite: &str, tests: &[String]) -> Run {
    // The filter the suites expect refused, as a production ACL would (see the module doc).
    let options = Options::default()
        .with("AUTH__ALLOW_ANONYMOUS", "true")
        .with("AUTH__ANONYMOUS_WITHHELD", r#"["test/nosubscribe"]"#);
    let gw = TestGateway::start_with(options).await;
    let json = gw.data_dir.path().join(format!("paho-{suite}.json"));
    let output = python3()
        .args([
            suite,
            &gw.mqtt.ip().to_string(),
            &gw.mqtt.port().to_string(),
        ])
        .arg("--json")
        .arg(&json)
        .args(tests)
        .output()
        .await
        .expect("running python3 (scripts/test installs it)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // 0: all passed, 1: some did not; anything else: it could not run them.
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "run.py {suite}: {}\n{report}",
        output.status
    );
    let results = serde_json::from_slice(&std::fs::read(&json).expect("run.py's --json file"))
        .expect("run.py's JSON");
    Run { results, report }
}

/// The tests that did not pass.
fn not_passed(results: &BTreeMap<String, String>) -> Vec<&str> {
    results
        .iter()
        .filter(|(_, result)| *result != "pass")
        .map(|(test, _)| test.as_str())
        .collect()
}

/// The runners' lines of each test (`PASS  test_x  5.1s  why`), aligned and in the order of the
/// names, then the runners' whole output when a test has no line (it could not run).
fn table(results: &BTreeMap<String, String>, reports: &str) -> String {
    let width = results.keys().map(String::len).max().unwrap_or(0);
    let mut lines = BTreeMap::new();
    for line in reports.lines() {
        let mut words = line.split_whitespace();
        let (Some(outcome), Some(test)) = (words.next(), words.next()) else {
            continue;
        };
        if results.contains_key(test) {
            let seconds = words.next().unwrap_or_default();
            let why = words.collect::<Vec<_>>().join(" ");
            let line = format!("{outcome:<8} {test:<width$} {seconds:>6}  {why}");
            lines.insert(test, line.trim_end().to_owned());
        }
    }
    let passed = results.values().filter(|result| *result == "pass").count();
    let mut table: Vec<String> = lines.into_values().collect();
    let complete = table.len() == results.len();
    table.push(format!("passed {passed} of {}", results.len()));
    if !complete {
        table.push(reports.to_owned());
    }
    table.join("\n")
}

#[tokio::test]
async fn paho_mqtt_3_1_1_interoperability_suite_passes_entirely() {
    let run = run("v311", &[]).await;
    assert_eq!(run.results.len(), 10, "{}", run.report);
    assert_eq!(
        not_passed(&run.results),
        Vec::<&str>::new(),
        "{}",
        run.report
    );
}

#[tokio::test]
async fn paho_mqtt_5_interoperability_suite_passes_but_for_the_server_keep_alive() {
    let names = test_names("v5").await;
    assert_eq!(names.len(), 27, "{names:?}");
    // Every other test (in name order) to each gateway: the halves take about as long.
    let parts: Vec<Vec<String>> = (0..V5_GATEWAYS)
        .map(|part| {
            names
                .iter()
                .skip(part)
                .step_by(V5_GATEWAYS)
                .cloned()
                .collect()
        })
        .collect();
    let runs = futures_util::future::join_all(parts.iter().map(|tests| run("v5", tests))).await;
    let mut results = BTreeMap::new();
    let mut reports = String::new();
    for run in runs {
        results.extend(run.results);
        reports.push_str(&run.report);
    }
    assert_eq!(results.len(), names.len(), "{}", table(&results, &reports));
    // The tests that race their own clients get a second chance, on a gateway of their own.
    let again: Vec<String> = not_passed(&results)
        .into_iter()
        .filter(|test| RACY.contains(test))
        .map(str::to_owned)
        .collect();
    if !again.is_empty() {
        let rerun = run("v5", &again).await;
        reports.push_str(&rerun.report);
        eprintln!("run again, racing their own clients:\n{}", rerun.report);
        results.extend(rerun.results);
    }
    let report = table(&results, &reports);
    assert_eq!(
        not_passed(&results),
        ["test_server_keep_alive"],
        "every MQTT 5 test but test_server_keep_alive must pass:\n{report}"
    );
}
