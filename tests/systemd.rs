//! The real binary as systemd runs it: `NOTIFY_SOCKET` is a datagram socket
//! this test creates, signals are real signals. A child process keeps the
//! environment variable out of the other tests' way.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UnixDatagram;

const DEADLINE: Duration = Duration::from_secs(15);

struct Portcullis {
    child: Child,
    notify: UnixDatagram,
    log: PathBuf,
    _dir: tempfile::TempDir,
    config: PathBuf,
}

impl Portcullis {
    fn start(config_text: &str) -> Self {
        Self::start_with(config_text, |_| {})
    }

    /// Started as `start` does, the command adjusted first.
    fn start_with(config_text: &str, adjust: impl FnOnce(&mut Command)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("portcullis.toml");
        std::fs::write(&config, config_text).unwrap();
        let sock = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&sock).unwrap();
        let log = dir.path().join("stderr.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.args(["run", "-c"])
            .arg(&config)
            .env("NOTIFY_SOCKET", &sock)
            .env_remove("JOURNAL_STREAM")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        adjust(&mut cmd);
        let child = cmd.spawn().unwrap();
        Portcullis {
            child,
            notify,
            log,
            _dir: dir,
            config,
        }
    }

    /// The next notification: one datagram, its `KEY=value` lines.
    async fn next(&mut self) -> Vec<String> {
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(DEADLINE, self.notify.recv(&mut buf)).await {
            Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n])
                .lines()
                .map(str::to_string)
                .collect(),
            other => panic!("no notification ({other:?}); log:\n{}", self.log()),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Wait for the process to exit; its exit status.
    async fn exited(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "still running; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Portcullis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn has(msg: &[String], line: &str) -> bool {
    msg.iter().any(|l| l == line)
}

fn value<'a>(msg: &'a [String], key: &str) -> Option<&'a str> {
    msg.iter()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// READY=1's status line names the bound address: "serving on ADDR; ...".
fn served_addr(ready: &[String]) -> String {
    let status = value(ready, "STATUS").expect("READY=1 comes with a STATUS");
    status
        .strip_prefix("serving on ")
        .and_then(|s| s.split(';').next())
        .unwrap_or_else(|| panic!("unexpected status {status:?}"))
        .to_string()
}

fn config(routes: &str) -> String {
    format!(
        "[server]\nwatch = false\nshutdown_timeout = \"30s\"\n[log]\naccess = \"off\"\n\
         [[listen]]\naddr = \"127.0.0.1:0\"\n{routes}"
    )
}

fn respond(path: &str, body: &str) -> String {
    format!("[[route]]\npath = \"{path}\"\nrespond = {{ status = 200, body = \"{body}\" }}\n")
}

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

#[tokio::test]
async fn notifications_arrive_in_order_around_start_reload_and_stop() {
    let mut p = Portcullis::start(&config(&respond("/a", "a")));
    let ready = p.next().await;
    assert!(has(&ready, "READY=1"), "{ready:?}");
    let addr = served_addr(&ready);
    assert_eq!(get(&format!("http://{addr}/a")).await.2, "a");

    // SIGHUP with watch = false: the added route is served after READY=1.
    write(
        &p.config,
        &(config(&respond("/a", "a")) + &respond("/b", "b")),
    );
    p.signal("HUP");
    let reloading = p.next().await;
    assert!(has(&reloading, "RELOADING=1"), "{reloading:?}");
    let usec: u64 = value(&reloading, "MONOTONIC_USEC")
        .expect("RELOADING=1 carries MONOTONIC_USEC")
        .parse()
        .unwrap();
    assert!(usec > 0);
    let reloaded = p.next().await;
    assert!(has(&reloaded, "READY=1"), "{reloaded:?}");
    assert!(
        value(&reloaded, "STATUS").unwrap().contains("reloaded"),
        "{reloaded:?}"
    );
    assert_eq!(get(&format!("http://{addr}/b")).await.2, "b");

    // A broken file: still RELOADING then READY (systemd waits for it), the
    // status says it failed, the old config serves.
    write(&p.config, "[[route]]\npath = 1\n");
    p.signal("HUP");
    assert!(has(&p.next().await, "RELOADING=1"));
    let failed = p.next().await;
    assert!(has(&failed, "READY=1"), "{failed:?}");
    assert!(
        value(&failed, "STATUS").unwrap().contains("failed"),
        "{failed:?}"
    );
    assert_eq!(get(&format!("http://{addr}/b")).await.2, "b");

    p.signal("TERM");
    let stopping = p.next().await;
    assert!(has(&stopping, "STOPPING=1"), "{stopping:?}");
    assert!(p.exited().await.success());
    let log = p.log();
    assert!(log.contains("config reloaded"), "{log}");
    assert!(
        log.contains("routes 1->2"),
        "the reload line says what changed:\n{log}"
    );
    assert!(
        log.contains("route[0]"),
        "the failed reload's cause is logged:\n{log}"
    );
}

#[tokio::test]
async fn sigterm_drains_the_request_in_flight_and_refuses_new_ones() {
    // An upstream that holds its answer until the test lets it go.
    let release = Arc::new(tokio::sync::Notify::new());
    let r = release.clone();
    let app = upstream(move |_req| {
        let r = r.clone();
        async move {
            r.notified().await;
            hyper::Response::new(Body::from("finished"))
        }
    })
    .await;
    let text = config(&format!(
        "[upstream.app]\nservers = [\"{}\"]\n[[route]]\npath = \"/\"\nupstream = \"app\"\n",
        app.addr
    ));
    let mut p = Portcullis::start(&text);
    let addr = served_addr(&p.next().await);
    let url = format!("http://{addr}/slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    let start = Instant::now();
    while app.hits() == 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    p.signal("TERM");
    assert!(has(&p.next().await, "STOPPING=1"));
    // New connections are refused while the old request is still running.
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        assert!(
            start.elapsed() < DEADLINE,
            "{addr} still accepts after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );

    release.notify_one();
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "finished"));
    assert!(p.exited().await.success(), "{}", p.log());
    assert!(p.log().contains("all connections drained"), "{}", p.log());
}

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
async fn without_the_right_to_a_lower_nice_value_the_workers_keep_the_processs() {
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
