//! A full disk: the gateway's data dir on a small tmpfs, filled while messages pour in. The
//! write that finds no room is answered `503 unavailable`, the gateway stops by itself (exit
//! code 74: a failed journal write does not heal while it runs), and once there is room again
//! a restart finds every acknowledged message, in order, nothing else, and goes on.
//!
//! Mounting the tmpfs needs root, or sudo without a password (CI runs as root).

use e2e::{Options, TestGateway};
use reqwest::Method;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `megabytes`, unmounted when dropped.
struct SmallDisk {
    mountpoint: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Self {
        let mountpoint = tempfile::tempdir().unwrap();
        let mounted = as_root("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(mountpoint.path())
            .status()
            .expect("running mount");
        assert!(
            mounted.success(),
            "mounting a tmpfs needs root or sudo (the CI runs the suite as root)"
        );
        Self { mountpoint }
    }

    fn path(&self) -> &Path {
        self.mountpoint.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = as_root("umount")
            .arg("-l")
            .arg(self.mountpoint.path())
            .status();
    }
}

/// `program`, through `sudo` unless this is root already (as `scripts/test` installs packages).
fn as_root(program: &str) -> Command {
    let id = Command::new("id").arg("-u").output().expect("running id");
    if String::from_utf8_lossy(&id.stdout).trim() == "0" {
        Command::new(program)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", program]);
        sudo
    }
}

/// Fills the disk with a file, then frees `leave` bytes of it: writes beyond those fail.
fn fill_leaving(disk: &SmallDisk, leave: u64) -> PathBuf {
    let path = disk.path().join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0x5a; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.flush();
    let written = std::fs::metadata(&path).unwrap().len();
    file.set_len(written.saturating_sub(leave)).unwrap();
    path
}

#[tokio::test]
async fn a_full_disk_is_answered_unavailable_stops_the_gateway_and_loses_nothing_acknowledged() {
    let disk = SmallDisk::mount(48);
    let data_dir = tempfile::tempdir_in(disk.path()).unwrap();
    let options = || Options::default().with("LIMITS__SHUTDOWN_GRACE", "2s");
    let gw = TestGateway::try_start(options(), data_dir).await.unwrap();
    let filler = fill_leaving(&disk, 2 << 20);

    let text = "x".repeat(16 * 1024);
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for i in 0..2_000 {
        let (status, body) = gw
            .api(
                Method::POST,
                "/v1/messages",
                Some(json!({"to": "fay", "body": {"n": i, "text": text}})),
            )
            .await;
        match status {
            202 => acknowledged.push((body["seq"].as_u64().unwrap(), i)),
            _ => {
                refused = Some((status, body));
                break;
            }
        }
    }
    let (status, body) = refused.expect("the disk never filled up");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    assert!(
        !acknowledged.is_empty(),
        "some messages fit before the disk was full"
    );

    let exited = gw.exited().await;
    assert_eq!(
        exited.status.code(),
        Some(74),
        "stopped as after a failed disk write"
    );

    std::fs::remove_file(filler).unwrap();
    let gw = TestGateway::try_start(options(), exited.data_dir)
        .await
        .expect("a restart once there is room again");
    let (status, page) = gw
        .api(Method::GET, "/v1/users/fay/messages?limit=1000", None)
        .await;
    assert_eq!(status, 200, "{page}");
    let stored: Vec<(u64, u64)> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["seq"].as_u64().unwrap(), m["body"]["n"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        stored, acknowledged,
        "every acknowledged message, in order, and nothing else"
    );
    let (status, body) = gw
        .api(
            Method::POST,
            "/v1/messages",
            Some(json!({"to": "fay", "body": {}})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["seq"].as_u64(),
        Some(acknowledged.last().unwrap().0 + 1)
    );
}
