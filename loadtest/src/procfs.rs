//! Facts read from `/proc`: the broker's resident memory, and our own open-file limit.
//!
//! Memory per idle connection is the broker's RSS growth while holding N connections, divided
//! by N; RSS (`VmRSS`) is what the kernel actually backs with RAM, which is what capacity
//! planning needs. The open-file limit is checked up front because running into it half-way
//! through a 100k-connection run looks like broker failures.

use anyhow::{anyhow, Context, Result};

/// Resident set size of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&status).ok_or_else(|| anyhow!("no VmRSS line in {path}"))
}

/// The soft limit on open files of this process, `None` when unlimited or unreadable.
pub fn open_files_limit() -> Option<u64> {
    parse_open_files(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut fields = line["VmRSS:".len()..].split_whitespace();
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
    }
}
