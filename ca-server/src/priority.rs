//! CPU priority of the server's background threads (the log readers, the
//! inventory and the console's findings): nice 19, so that what they do
//! uses what signing leaves. On Linux a thread has its own nice value, and
//! lowering one's own needs no privilege. `SCHED_IDLE` is not used: a
//! thread that holds a lock others wait for (the inventory's index, the
//! allocator's) could then wait indefinitely under load (see ARCHITECTURE.md,
//! "Log reads never starve signing"); it was measured again for the
//! inventory and gave no throughput over nice 19.

/// Nice 19 for the calling thread; `what` names it in the warning when the
/// kernel refuses.
pub fn nice(what: &str) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a plain system call on the calling thread.
        let niced = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19)
        };
        if niced != 0 {
            tracing::warn!(
                event = "thread_priority",
                thread = what,
                "could not lower the CPU priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = what;
}
