//! Where the signing threads run: while the pool is busy, each on a CPU of
//! its own, when the pool has a thread for every CPU this process may use.
//!
//! Left to the scheduler, the signing threads of a busy pool often queue
//! on one CPU while another idles: the kernel skips pulling work to a CPU
//! whose idle spells are short, and between requests they are. Measured on
//! a 2-core machine at 16 keep-alive connections: 10-12% of the machine
//! idle with signing work waiting; with one CPU per signing thread, 4-6%
//! (ARCHITECTURE.md, Decisions).
//!
//! A signing thread binds itself to its CPU when it takes a job while the
//! pool is saturated (as many jobs still waiting as there are threads),
//! and lets itself run anywhere again when it finds nothing to do: under
//! light or bursty load (a fleet of new TLS connections, say) the
//! scheduler places it next to the work that woke it. Binding needs a
//! thread for every CPU the process may use (its affinity mask): a bound
//! thread cannot move to an idle CPU, but with one on every allowed CPU no
//! allowed CPU idles while signing waits. Jobs come from one shared queue,
//! so a thread whose CPU is busy with other work takes fewer of them and
//! the others more. A process held back by a CPU quota rather than a CPU
//! set (a container with a CPU limit on a larger host) has fewer threads
//! than allowed CPUs, and is never bound.

/// The CPUs this process may run on (its affinity mask), in ascending
/// order; empty if the mask cannot be read.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is plain data (all zeroes is the empty set), and
    // sched_getaffinity writes at most `size_of::<cpu_set_t>()` bytes into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let read =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if read != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the set's capacity.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// The CPU for each of `threads` signing threads to bind to while busy:
/// thread `i` on the `i`-th allowed CPU (round again when there are more
/// threads), if there is a thread for every allowed CPU; otherwise none.
pub fn placement(threads: usize, allowed: &[usize]) -> Vec<Option<usize>> {
    if allowed.is_empty() || threads < allowed.len() {
        return vec![None; threads];
    }
    (0..threads)
        .map(|i| Some(allowed[i % allowed.len()]))
        .collect()
}

/// Bind the calling thread to `cpu`.
pub fn bind_current_thread(cpu: usize) -> std::io::Result<()> {
    bind_current_thread_to(&[cpu])
}

/// Let the calling thread run on any of `cpus` (and no other).
pub fn bind_current_thread_to(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: as in `allowed_cpus`; every CPU is checked against the capacity.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
        }
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The CPU the calling thread last ran on.
#[cfg(test)]
fn current_cpu() -> Option<usize> {
    // SAFETY: no arguments; returns -1 on error.
    usize::try_from(unsafe { libc::sched_getcpu() }).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_bound_only_when_there_is_one_for_every_allowed_cpu() {
        // A quota-limited container on a larger host: fewer threads than CPUs.
        assert_eq!(placement(2, &[0, 1, 2, 3]), vec![None, None]);
        // One thread per allowed CPU, in the mask's order (a CPU set need
        // not start at 0).
        assert_eq!(placement(2, &[4, 6]), vec![Some(4), Some(6)]);
        // More threads than CPUs (a network HSM's latency): round again.
        assert_eq!(
            placement(5, &[0, 1]),
            vec![Some(0), Some(1), Some(0), Some(1), Some(0)]
        );
        // The mask could not be read: nothing is bound.
        assert_eq!(placement(2, &[]), vec![None, None]);
        assert_eq!(placement(0, &[0]), Vec::<Option<usize>>::new());
    }

    #[test]
    fn a_bound_thread_runs_on_its_cpu_and_nowhere_else() {
        let allowed = allowed_cpus();
        assert!(!allowed.is_empty(), "this process's CPUs are readable");
        let last = *allowed.last().expect("at least one CPU");
        let seen = std::thread::spawn(move || {
            bind_current_thread(last).expect("bound to an allowed CPU");
            let mine = allowed_cpus();
            // Work a little so that the scheduler had chances to move us.
            let mut x = 0u64;
            for i in 0..2_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
            (mine, current_cpu())
        })
        .join()
        .expect("thread ran");
        assert_eq!(seen.0, vec![last]);
        assert_eq!(seen.1, Some(last));
        // Binding one thread leaves the process's other threads alone.
        assert_eq!(allowed_cpus(), allowed);
        // A CPU beyond any set is refused, not wrapped.
        assert!(bind_current_thread(libc::CPU_SETSIZE as usize).is_err());
    }
}
