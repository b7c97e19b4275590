//! CPU priority of the server's background threads, so that what they do
//! uses only what signing leaves.
//!
//! Two levels: [`nice`] (nice 19, for threads that answer requests, such as
//! the log readers, which must make progress under load) and [`idle`]
//! (`SCHED_IDLE`, for derived work that may lag, such as the inventory and
//! the console's findings). The difference matters under load: the kernel
//! lets a running nice-19 thread finish its time slice before a woken
//! signing thread gets the core, while a `SCHED_IDLE` thread is preempted
//! at once.
//! On Linux a thread has its own nice value and policy, and lowering one's
//! own needs no privilege.

/// Nice 19 for the calling thread.
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

/// `SCHED_IDLE` for the calling thread (nice 19 where that is refused).
pub fn idle(what: &str) {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: a plain system call on the calling thread (pid 0), with a
        // parameter block that lives across the call.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
            return;
        }
    }
    nice(what);
}
