//! The real binary as a child process, as systemd runs it: its
//! `NOTIFY_SOCKET` a datagram socket the test creates, its signals real
//! signals, its stderr in a file. A child keeps the environment variable
//! and process-wide settings (scheduling, capabilities) out of the other
//! tests' way.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::UnixDatagram;

pub const DEADLINE: Duration = Duration::from_secs(15);

pub struct Portcullis {
    pub child: Child,
    notify: UnixDatagram,
    log: PathBuf,
    _dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Portcullis {
    pub fn start(config_text: &str) -> Self {
        Self::start_with(config_text, |_| {})
    }

    /// Started as `start` does, the command adjusted first.
    pub fn start_with(config_text: &str, adjust: impl FnOnce(&mut Command)) -> Self {
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
    pub async fn next(&mut self) -> Vec<String> {
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(DEADLINE, self.notify.recv(&mut buf)).await {
            Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n])
                .lines()
                .map(str::to_string)
                .collect(),
            other => panic!("no notification ({other:?}); log:\n{}", self.log()),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Wait for the process to exit; its exit status.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
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

pub fn has(msg: &[String], line: &str) -> bool {
    msg.iter().any(|l| l == line)
}

pub fn value<'a>(msg: &'a [String], key: &str) -> Option<&'a str> {
    msg.iter()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// READY=1's status line names the bound address: "serving on ADDR; ...".
pub fn served_addr(ready: &[String]) -> String {
    let status = value(ready, "STATUS").expect("READY=1 comes with a STATUS");
    status
        .strip_prefix("serving on ")
        .and_then(|s| s.split(';').next())
        .unwrap_or_else(|| panic!("unexpected status {status:?}"))
        .to_string()
}

pub fn config(routes: &str) -> String {
    format!(
        "[server]\nwatch = false\nshutdown_timeout = \"30s\"\n[log]\naccess = \"off\"\n\
         [[listen]]\naddr = \"127.0.0.1:0\"\n{routes}"
    )
}

pub fn respond(path: &str, body: &str) -> String {
    format!("[[route]]\npath = \"{path}\"\nrespond = {{ status = 200, body = \"{body}\" }}\n")
}
