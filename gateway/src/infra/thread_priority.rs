//! A thread's scheduling priority (its nice value, -20 the highest to 19 the lowest).
//!
//! Linux keeps a nice value per thread, not per process, and `setpriority(PRIO_PROCESS, tid)`
//! sets one thread's. Raising it (a negative value) needs `CAP_SYS_NICE`, or an `RLIMIT_NICE`
//! that allows it (systemd's `LimitNICE=`); lowering it needs nothing.

use std::io;

/// Gives the calling thread the nice value `nice`.
#[cfg(target_os = "linux")]
pub fn set_current_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: `gettid` has no preconditions, and `setpriority` only reads its arguments.
    let set = unsafe {
        let tid = libc::gettid() as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice)
    };
    if set == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Gives the calling thread the nice value `nice`: only on Linux, where a thread has its own.
#[cfg(not(target_os = "linux"))]
pub fn set_current_thread_nice(_nice: i32) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "a thread's own nice value is set on Linux only",
    ))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn sets_only_the_calling_threads_nice_value() {
        let nice =
            || unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        let before = nice();
        let (set, inside) = std::thread::spawn(move || {
            // Lowering the priority is allowed without privileges.
            let set = set_current_thread_nice(before + 1);
            (set, nice())
        })
        .join()
        .unwrap();
        set.unwrap();
        assert_eq!(inside, before + 1);
        assert_eq!(nice(), before, "the other threads keep theirs");
    }
}
