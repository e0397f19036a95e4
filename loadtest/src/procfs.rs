//! Facts read from `/proc`: which process listens on a port, its CPU time and resident memory,
//! and our own open-file limit.
//!
//! Memory per idle connection is the broker's RSS growth while holding N connections, divided
//! by N; RSS (`VmRSS`) is what the kernel actually backs with RAM, which is what capacity
//! planning needs. The open-file limit is checked up front because running into it half-way
//! through a 100k-connection run looks like broker failures.

use anyhow::{anyhow, Context, Result};
use serde::Serialize;
use std::time::Instant;

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`): 100 on every Linux this runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// Resident set size of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&status).ok_or_else(|| anyhow!("no VmRSS line in {path}"))
}

/// The process that listens on TCP `port` (IPv4 or IPv6), found through the socket's inode in
/// `/proc/net/tcp*` and the descriptors in `/proc/<pid>/fd`; `None` when not found (e.g. the
/// listener belongs to another user and we are not root).
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let inodes: Vec<u64> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| listening_inodes(&table, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let fds = std::fs::read_dir(entry.path().join("fd")).ok()?;
            fds.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .any(|target| wanted.iter().any(|w| target.as_os_str() == w.as_str()))
                .then_some(pid)
        })
}

/// Inodes of the sockets listening (state `0A`) on `port` in a `/proc/net/tcp` table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit(':').next()?;
            let listening = fields.get(3)? == &"0A";
            (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| fields.get(9)?.parse().ok())
                .flatten()
        })
        .collect()
}

/// User plus system CPU time of process `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / TICKS_PER_SECOND)
        .ok_or_else(|| anyhow!("no CPU times in {path}"))
}

/// `utime + stime` from a `/proc/<pid>/stat` line; the command name in parentheses may hold
/// spaces, so fields are counted from its closing parenthesis.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3 of the line, utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Peak resident set size (`VmHWM`) of process `pid`, in bytes.
pub fn peak_rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_kb_line(&status, "VmHWM:").ok_or_else(|| anyhow!("no VmHWM line in {path}"))
}

/// How much CPU and memory one process used over a run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Usage {
    pub pid: u32,
    pub cpu_seconds: f64,
    /// CPU time over wall time: 1.0 is one core busy all the time.
    pub cpu_cores: f64,
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

/// Watches one process from the start of a run to its end.
pub struct UsageWatch {
    pid: u32,
    started: Instant,
    cpu_at_start: f64,
}

impl UsageWatch {
    pub fn start(pid: u32) -> Result<Self> {
        Ok(Self {
            pid,
            started: Instant::now(),
            cpu_at_start: cpu_seconds(pid)?,
        })
    }

    pub fn finish(&self) -> Result<Usage> {
        let cpu = cpu_seconds(self.pid)? - self.cpu_at_start;
        Ok(Usage {
            pid: self.pid,
            cpu_seconds: cpu,
            cpu_cores: cpu / self.started.elapsed().as_secs_f64().max(1e-9),
            rss_bytes: rss_bytes(self.pid)?,
            peak_rss_bytes: peak_rss_bytes(self.pid)?,
        })
    }
}

/// The soft limit on open files of this process, `None` when unlimited or unreadable.
pub fn open_files_limit() -> Option<u64> {
    parse_open_files(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    parse_kb_line(status, "VmRSS:")
}

/// A `Name:   123 kB` line of `/proc/<pid>/status`, in bytes.
fn parse_kb_line(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    let mut fields = line[name.len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next()? {
        "kB" => Some(value * 1024),
        _ => None,
    }
}

fn parse_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tmosquitto\nVmPeak:\t   20000 kB\nVmRSS:\t    6712 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(status), Some(6712 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn parses_open_files_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            20000                1048576              files\n";
        assert_eq!(parse_open_files(limits), Some(20_000));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_files(unlimited), None);
    }

    #[test]
    fn reads_own_rss() {
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
        assert!(peak_rss_bytes(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn parses_cpu_ticks_even_with_spaces_in_the_name() {
        let stat = "4242 (my broker) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert!(cpu_seconds(std::process::id()).is_ok());
    }

    #[test]
    fn finds_the_listening_socket_of_a_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:075B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1401100 1 0\n\
           1: 0100007F:075B 0100007F:A259 01 00000000:00000000 00:00000000 00000000     0        0 1401101 1 0\n";
        assert_eq!(listening_inodes(table, 1883), vec![1401100]);
        assert!(listening_inodes(table, 1884).is_empty());
    }

    #[test]
    fn finds_our_own_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(pid_listening_on(port), Some(std::process::id()));
    }
}
