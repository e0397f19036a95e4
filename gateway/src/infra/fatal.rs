//! Failures after which the process must stop: a journal write or fsync that failed.
//!
//! After a failed fsync the kernel may have dropped the dirty pages and marked them clean, so
//! a second fsync on the same file can succeed with the data gone; and fjall poisons a database
//! whose journal write or fsync failed, refusing every later write. Neither heals while the
//! process runs, so the one honest answer is to stop: what was in flight is answered as
//! unavailable, the gateway shuts down and exits with [`EXIT_CODE`], and its supervisor starts it
//! again, which recovers the stores from their journals (nothing acknowledged was acknowledged
//! before its fsync). A failed commit never becomes visible: fjall applies a batch to its
//! memtables only after the journal took it.
//!
//! The signal is process-wide, as what it signals is: the store's writer thread and the
//! ledger's commits raise it, the composition root waits for it beside SIGTERM.

use std::sync::OnceLock;
use tokio::sync::Notify;

/// The exit code after a fatal failure: EX_IOERR of sysexits.h.
pub const EXIT_CODE: u8 = 74;

struct Fatal {
    reason: OnceLock<String>,
    raised: Notify,
}

fn fatal() -> &'static Fatal {
    static FATAL: OnceLock<Fatal> = OnceLock::new();
    FATAL.get_or_init(|| Fatal {
        reason: OnceLock::new(),
        raised: Notify::new(),
    })
}

/// Says the process must stop, and why (the first reason is kept).
pub fn raise(reason: impl std::fmt::Display) {
    let reason = reason.to_string();
    tracing::error!("stopping: {reason}");
    let _ = fatal().reason.set(reason);
    fatal().raised.notify_waiters();
}

/// Why the process must stop, once [`raise`]d.
pub fn reason() -> Option<&'static str> {
    fatal().reason.get().map(String::as_str)
}

/// Resolves once [`raise`] was called (at once if it was already).
pub async fn raised() -> &'static str {
    loop {
        let notified = fatal().raised.notified();
        if let Some(reason) = reason() {
            return reason;
        }
        notified.await;
    }
}
