//! Where the writer's lines go, and a log file that logrotate moved.
//!
//! logrotate renames the file (and may make an empty one in its place);
//! a process that keeps its descriptor goes on writing into the renamed,
//! soon compressed or deleted, file. nginx needs `kill -USR1` in every
//! rotation script for that. The writer instead looks at the path before
//! each batch, at most a few dozen times a second: when it no longer
//! names the file being written, the path is opened again (made if
//! missing). SIGUSR1 asks for the same at once, so nginx's scripts work
//! unchanged (without a handler, SIGUSR1 would end the process).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A destination for the writer. Only a file can be reopened.
pub(super) trait Destination: Write + Send {
    /// Before a batch: follow the path if the file was moved away, or
    /// open it again anyway when `asked`.
    fn follow(&mut self, _asked: bool) {}
}

impl Destination for std::io::Stdout {}

pub(super) struct LogFile {
    path: PathBuf,
    file: File,
    /// The open file's device and inode, to compare with the path's.
    id: (u64, u64),
    reported: Option<Instant>,
}

fn open(path: &Path) -> std::io::Result<(File, (u64, u64))> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let m = file.metadata()?;
    Ok((file, (m.dev(), m.ino())))
}

impl LogFile {
    pub fn open(path: PathBuf) -> std::io::Result<LogFile> {
        let (file, id) = open(&path)?;
        Ok(LogFile {
            path,
            file,
            id,
            reported: None,
        })
    }
}

impl Destination for LogFile {
    fn follow(&mut self, asked: bool) {
        let moved = match std::fs::metadata(&self.path) {
            Ok(m) => (m.dev(), m.ino()) != self.id,
            Err(_) => true,
        };
        if !moved && !asked {
            return;
        }
        match open(&self.path) {
            Ok((file, id)) => {
                self.file = file;
                self.id = id;
                self.reported = None;
                let why = if asked {
                    "asked by SIGUSR1"
                } else {
                    "the file was moved or removed"
                };
                tracing::info!(path = %self.path.display(), why, "access log reopened");
            }
            // Lines go on into the old file, which is better than none:
            // the directory may have lost its permissions for a moment.
            Err(e) => {
                if self
                    .reported
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
                {
                    tracing::warn!(path = %self.path.display(), error = %e,
                        "cannot reopen the access log; writing on to the file already open");
                    self.reported = Some(Instant::now());
                }
            }
        }
    }
}

impl Write for LogFile {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.file.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}
