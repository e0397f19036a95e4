//! A failed fsync: the gateway runs with a shim (`tests/shims/fail_fsync.c`, through
//! `LD_PRELOAD`) that makes fsync fail with EIO once a trigger file exists. The message whose
//! fsync failed is answered `503 unavailable`, the gateway stops by itself (exit code 74: a
//! second fsync of a file whose first one failed may report success with the data gone), and a
//! restart without the shim finds every acknowledged message, in order, and goes on.
//!
//! Building the shim needs a C compiler, which the Rust toolchain links with.

use e2e::{Options, TestGateway};
use reqwest::Method;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The shim, compiled into `dir`.
fn fail_fsync_shim(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("shims/fail_fsync.c");
    let shim = dir.join("fail_fsync.so");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&shim)
        .arg(&source)
        .status()
        .expect("running cc (the C compiler the Rust toolchain links with)");
    assert!(built.success(), "compiling {}", source.display());
    shim
}

#[tokio::test]
async fn a_failed_fsync_is_answered_unavailable_stops_the_gateway_and_loses_nothing_acknowledged() {
    let scratch = tempfile::tempdir().unwrap();
    let shim = fail_fsync_shim(scratch.path());
    let trigger = scratch.path().join("fail-fsync-now");
    let options = || Options::default().with("LIMITS__SHUTDOWN_GRACE", "2s");
    let failing = options()
        .with_process_env("LD_PRELOAD", &shim)
        .with_process_env("FAIL_FSYNC_WHEN", &trigger);
    let gw = TestGateway::try_start(failing, tempfile::tempdir().unwrap())
        .await
        .unwrap();
    let post = |n: u64| {
        gw.api(
            Method::POST,
            "/v1/messages",
            Some(json!({"to": "gus", "body": {"n": n}})),
        )
    };
    let mut acknowledged = Vec::new();
    for n in 0..20 {
        let (status, body) = post(n).await;
        assert_eq!(status, 202, "{body}");
        acknowledged.push((body["seq"].as_u64().unwrap(), n));
    }

    std::fs::write(&trigger, b"").unwrap();
    let (status, body) = post(20).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    let exited = gw.exited().await;
    assert_eq!(
        exited.status.code(),
        Some(74),
        "stopped as after a failed disk write"
    );

    let gw = TestGateway::try_start(options(), exited.data_dir)
        .await
        .expect("a restart on a disk that works");
    let (status, page) = gw
        .api(Method::GET, "/v1/users/gus/messages?limit=100", None)
        .await;
    assert_eq!(status, 200, "{page}");
    let stored: Vec<(u64, u64)> = (page["messages"].as_array().unwrap().iter())
        .map(|m| (m["seq"].as_u64().unwrap(), m["body"]["n"].as_u64().unwrap()))
        .collect();
    // The refused message reached the journal before its fsync failed; the kernel kept it
    // (only the fsync failed, not the disk), so it may be there after the acknowledged ones.
    assert_eq!(
        stored[..acknowledged.len().min(stored.len())],
        acknowledged[..],
        "every acknowledged message, in order"
    );
    assert!(
        stored.len() == acknowledged.len()
            || stored[acknowledged.len()..] == [(acknowledged.len() as u64 + 1, 20)],
        "nothing but the refused message besides: {stored:?}"
    );
    let posted = gw.post_message("gus", json!({})).await;
    assert_eq!(posted["seq"].as_u64(), Some(stored.len() as u64 + 1));
}
