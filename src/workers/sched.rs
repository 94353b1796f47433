//! Where and how the worker threads run: which CPU each is bound to
//! (`server.cpu_affinity`), under which scheduling policy
//! (`server.scheduling_policy`) and at which nice value (`server.nice`).
//! What sets something sets it for the calling thread alone, so each
//! worker applies them to itself as it starts.

use crate::state::{Affinity, Nice, SchedPolicy};

/// Where `n` workers started now would be bound, on this process's CPUs:
/// what `start` does and `portcullis check` reports.
pub fn placement(affinity: &Affinity, n: usize) -> Option<Vec<usize>> {
    allowed_cpus().and_then(|allowed| plan(affinity, n, &allowed))
}

/// The CPU each of `n` workers is bound to, or `None`: leave them all to
/// the kernel.
pub fn plan(affinity: &Affinity, n: usize, allowed: &[usize]) -> Option<Vec<usize>> {
    match affinity {
        Affinity::Off => None,
        // Only one worker per usable CPU costs the process nothing: with
        // fewer workers, binding would keep them off the other CPUs (and
        // in a container whose CPU quota is smaller than its CPU set, on
        // the first ones); with more, two bound to one CPU could never
        // move apart.
        Affinity::Auto => (n == allowed.len()).then(|| allowed.to_vec()),
        Affinity::Cpus(cpus) if cpus.is_empty() => None,
        Affinity::Cpus(cpus) => Some((0..n).map(|i| cpus[i % cpus.len()]).collect()),
    }
}

/// The CPUs this thread may run on (at start: the process's), in order.
pub fn allowed_cpus() -> Option<Vec<usize>> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set,
    // and the kernel writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return None;
    }
    Some(
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect(),
    )
}

/// Bind the calling thread to `cpu`.
pub(super) fn bind(cpu: usize) -> std::io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: as in `allowed_cpus`; `cpu` is within the set's size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Say that worker `i` keeps the process's nice value: a warning when the
/// config asked for it, a note for the default, which an unprivileged run
/// (a developer's) cannot have and does not need.
pub(super) fn refused_nice(i: usize, nice: Nice, e: &std::io::Error) {
    let hint =
        "a nice value below the process's needs CAP_SYS_NICE or RLIMIT_NICE (systemd: LimitNICE=)";
    if nice.explicit {
        tracing::warn!(worker = i, nice = nice.value, error = %e, hint, "cannot set the worker's nice value; it keeps the process's");
    } else {
        tracing::info!(worker = i, nice = nice.value, error = %e, hint, "the worker keeps the process's nice value");
    }
}

/// Set the calling thread's nice value. On Linux a nice value belongs to a
/// thread, and `who = 0` names the calling one: the process's other threads
/// (accepting, reloading) keep theirs.
pub(super) fn set_nice(value: i32) -> std::io::Result<()> {
    // SAFETY: a plain system call on the calling thread; no memory passed.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, value) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Set the calling thread's scheduling policy. Between these two, an
/// unprivileged process may move either way.
pub(super) fn set_policy(policy: SchedPolicy) -> std::io::Result<()> {
    let policy = match policy {
        SchedPolicy::Batch => libc::SCHED_BATCH,
        SchedPolicy::Other => libc::SCHED_OTHER,
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: the kernel only reads `param`; pid 0 is the calling thread.
    let r = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_binds_only_one_worker_per_usable_cpu() {
        let allowed = [0, 1, 4, 5];
        assert_eq!(plan(&Affinity::Auto, 4, &allowed), Some(vec![0, 1, 4, 5]));
        // Fewer workers than CPUs (threads set by hand, or a CPU quota
        // below the set) and more: left to the kernel.
        assert_eq!(plan(&Affinity::Auto, 2, &allowed), None);
        assert_eq!(plan(&Affinity::Auto, 8, &allowed), None);
        assert_eq!(plan(&Affinity::Off, 4, &allowed), None);
    }

    #[test]
    fn a_list_is_used_round_robin() {
        let cpus = Affinity::Cpus(vec![2, 3]);
        assert_eq!(plan(&cpus, 1, &[0, 1, 2, 3]), Some(vec![2]));
        assert_eq!(plan(&cpus, 3, &[0, 1, 2, 3]), Some(vec![2, 3, 2]));
    }

    // SAFETY (both): a plain system call on the calling thread.
    fn own_nice() -> i32 {
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[test]
    fn a_nice_value_is_the_calling_threads_alone() {
        let before = own_nice();
        // A higher nice value than one's own is always allowed, privileged
        // or not; a lower one (the default -5) may not be, here.
        let want = (before + 3).min(19);
        let (set, err) = std::thread::spawn(move || {
            let r = set_nice(want);
            (own_nice(), r.err().map(|e| e.to_string()))
        })
        .join()
        .expect("the thread ran");
        assert_eq!(err, None);
        assert_eq!(set, want);
        assert_eq!(own_nice(), before, "another thread's nice value moved");
    }
}
