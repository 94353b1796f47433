//! Where and how the worker threads run, read from the kernel's view of
//! the real binary's threads: the CPUs they are bound to, their scheduling
//! policy, their nice value, and what happens without the right to a lower
//! one. A child process, because these settings are process-wide.

mod common;

use common::child::*;
use common::*;
use std::path::Path;
use std::process::Command;

/// A process's or thread's CPUs as the kernel writes them in its `status`
/// (`taskset -p` shows the same).
fn cpus_allowed(dir: &Path) -> String {
    let status = std::fs::read_to_string(dir.join("status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("status has Cpus_allowed_list")
        .trim()
        .to_string()
}

/// A thread's scheduling policy (SCHED_OTHER 0, SCHED_BATCH 3); `chrt -p`
/// shows the same.
fn policy(dir: &Path) -> i32 {
    stat_field(dir, 41)
}

/// One value per worker thread ("portcullis-worker-N").
fn each_worker<T: Ord>(pid: u32, read: impl Fn(&Path) -> T) -> Vec<T> {
    each_thread(pid, "portcullis-work", read)
}

/// Each worker thread's CPUs, sorted.
fn worker_cpus(pid: u32) -> Vec<String> {
    each_worker(pid, cpus_allowed)
}

#[tokio::test]
async fn worker_threads_are_bound_to_cpus_as_configured() {
    let allowed = portcullis::workers::allowed_cpus().unwrap();
    // The child may run where this test may.
    let all = cpus_allowed(Path::new("/proc/self"));
    let with = |server: &str| {
        config(&respond("/", "ok")).replacen("[server]\n", &format!("[server]\n{server}\n"), 1)
    };

    // A list: both workers on the one CPU named.
    let first = allowed[0];
    let mut p = Portcullis::start(&with(&format!("threads = 2\ncpu_affinity = [{first}]")));
    assert!(has(&p.next().await, "READY=1"));
    assert_eq!(worker_cpus(p.child.id()), vec![first.to_string(); 2]);
    let log = p.log();
    assert!(log.contains("worker threads bound to CPUs"), "{log}");

    // The default with one worker per CPU: each on a CPU of its own.
    let mut p = Portcullis::start(&with(&format!("threads = {}", allowed.len())));
    assert!(has(&p.next().await, "READY=1"));
    let mut each: Vec<String> = allowed.iter().map(|c| c.to_string()).collect();
    each.sort();
    assert_eq!(worker_cpus(p.child.id()), each);

    // "off": every worker may run wherever the process may.
    let mut p = Portcullis::start(&with("threads = 2\ncpu_affinity = \"off\""));
    assert!(has(&p.next().await, "READY=1"));
    assert_eq!(worker_cpus(p.child.id()), vec![all; 2]);
    assert!(
        p.log().contains("worker threads not bound to CPUs"),
        "{}",
        p.log()
    );
}

#[tokio::test]
async fn worker_threads_run_under_the_configured_scheduling_policy() {
    let with = |server: &str| {
        config(&respond("/", "ok")).replacen("[server]\n", &format!("[server]\n{server}\n"), 1)
    };
    // Whatever this test runs under, the child's main thread inherits.
    let ours = policy(Path::new("/proc/thread-self"));

    // The default: the workers under SCHED_BATCH, the rest as started.
    let mut p = Portcullis::start(&with("threads = 2"));
    let ready = p.next().await;
    assert!(has(&ready, "READY=1"));
    let pid = p.child.id();
    assert_eq!(each_worker(pid, policy), vec![libc::SCHED_BATCH; 2]);
    assert_eq!(policy(Path::new(&format!("/proc/{pid}"))), ours);
    // The start-up line names it (as `policy="batch"`, maybe coloured).
    assert!(p.log().contains("\"batch\""), "{}", p.log());
    // And they serve.
    let addr = served_addr(&ready);
    assert_eq!(get(&format!("http://{addr}/")).await.2, "ok");

    // The access log's writer, woken for each burst of lines, takes the
    // workers' policy.
    let logged = |server: &str| with(server).replacen("access = \"off\"", "access = \"stdout\"", 1);
    let mut p = Portcullis::start(&logged("threads = 2"));
    assert!(has(&p.next().await, "READY=1"));
    let pid = p.child.id();
    assert_eq!(each_worker(pid, policy), vec![libc::SCHED_BATCH; 2]);
    assert_eq!(
        each_thread(pid, "access-log", policy),
        vec![libc::SCHED_BATCH]
    );

    // "other": the kernel's default, set even when started under another.
    let mut p = Portcullis::start(&logged("threads = 2\nscheduling_policy = \"other\""));
    assert!(has(&p.next().await, "READY=1"));
    let pid = p.child.id();
    assert_eq!(each_worker(pid, policy), vec![libc::SCHED_OTHER; 2]);
    assert_eq!(
        each_thread(pid, "access-log", policy),
        vec![libc::SCHED_OTHER]
    );
}

/// A thread's nice value; `ps -L -o ni` shows the same.
fn nice(dir: &Path) -> i32 {
    stat_field(dir, 19)
}

/// Whether a thread of this process may take nice value `v`: tried on a
/// thread of its own, which ends with it.
fn may_take(v: i32) -> bool {
    // SAFETY: a plain system call on the calling (scratch) thread.
    std::thread::spawn(move || unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, v) } == 0)
        .join()
        .unwrap()
}

#[tokio::test]
async fn worker_threads_take_the_configured_nice_value() {
    let with = |server: &str| {
        config(&respond("/", "ok"))
            .replacen("[server]\n", &format!("[server]\n{server}\n"), 1)
            .replacen("access = \"off\"", "access = \"stdout\"", 1)
    };
    // The child's main thread starts at this thread's value and keeps it.
    let ours = nice(Path::new("/proc/thread-self"));

    // Given, and above our own (so allowed to anyone): the workers and the
    // access log's writer take it, the other threads do not.
    let given = (ours + 2).min(19);
    let mut p = Portcullis::start(&with(&format!("threads = 2\nnice = {given}")));
    let ready = p.next().await;
    assert!(has(&ready, "READY=1"));
    let pid = p.child.id();
    assert_eq!(each_worker(pid, nice), vec![given; 2]);
    assert_eq!(each_thread(pid, "access-log", nice), vec![given]);
    assert_eq!(nice(Path::new(&format!("/proc/{pid}"))), ours);
    assert_eq!(
        get(&format!("http://{}/", served_addr(&ready))).await.2,
        "ok"
    );

    // The default under SCHED_BATCH: -3 where allowed (root, CAP_SYS_NICE,
    // RLIMIT_NICE); elsewhere the process's, with a note saying why.
    let mut p = Portcullis::start(&with("threads = 2"));
    assert!(has(&p.next().await, "READY=1"));
    let pid = p.child.id();
    if may_take(-3) {
        assert_eq!(each_worker(pid, nice), vec![-3; 2]);
    } else {
        assert_eq!(each_worker(pid, nice), vec![ours; 2]);
        let log = p.log();
        assert!(log.contains("keeps the process's nice value"), "{log}");
    }

    // Under SCHED_OTHER none is asked: 0.
    let mut p = Portcullis::start(&with("threads = 2\nscheduling_policy = \"other\""));
    assert!(has(&p.next().await, "READY=1"));
    let want = if may_take(0) { 0 } else { ours };
    assert_eq!(each_worker(p.child.id(), nice), vec![want; 2]);
}

/// CAP_SYS_NICE (linux/capability.h).
const CAP_SYS_NICE: libc::c_int = 23;

/// The child loses CAP_SYS_NICE: root's capabilities after `execve` are
/// its bounding set, which this narrows. Needs CAP_SETPCAP (root has it).
fn without_sys_nice(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is a plain system call, safe between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_NICE, 0, 0, 0) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// As a service without `CAP_SYS_NICE` and without `LimitNICE=` runs it:
/// the workers keep the process's nice value and serve; the log says why,
/// as a note for the default and as a warning for a value the file asked
/// for. Where this test's own process may not go below 0 (not root), the
/// test above already sees this path, and this one has nothing to drop.
#[tokio::test]
async fn without_the_right_to_a_lower_nice_value_the_workers_keep_their_own() {
    // The hard limit is as far as a process without CAP_SYS_RESOURCE can
    // raise its own.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NICE, &mut lim) }, 0);
    let ours = nice(Path::new("/proc/thread-self"));
    // RLIMIT_NICE lets a process go down to 20 - limit.
    let floor = 20 - lim.rlim_max.min(40) as i32;
    if !may_take(-3) || floor <= -3 {
        eprintln!("skipped: not root, or RLIMIT_NICE allows -3 (covered above)");
        return;
    }
    let with = |server: &str| {
        config(&respond("/", "ok")).replacen("[server]\n", &format!("[server]\n{server}\n"), 1)
    };
    for (server, says) in [
        ("threads = 2", "the worker keeps the process's nice value"),
        (
            "threads = 2\nnice = -3",
            "cannot set the worker's nice value; it keeps the process's",
        ),
    ] {
        let mut p = Portcullis::start_with(&with(server), without_sys_nice);
        let ready = p.next().await;
        assert!(has(&ready, "READY=1"), "{}", p.log());
        assert_eq!(each_worker(p.child.id(), nice), vec![ours; 2], "{server}");
        let log = p.log();
        assert!(log.contains(says), "{server}: {log}");
        assert!(
            log.contains("LimitNICE="),
            "{server}: the hint is missing: {log}"
        );
        assert_eq!(
            get(&format!("http://{}/", served_addr(&ready))).await.2,
            "ok"
        );
    }
}
