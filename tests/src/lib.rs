//! Harness for cross-process tests: helper processes driven line by line over pipes, so
//! tests synchronise on explicit replies, never on sleeps.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};

use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

/// Longest wait for one reply; a helper that hangs fails the test instead of hanging it.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// A helper process speaking the line protocol of `flow-helper`.
pub struct Helper {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Helper {
    /// Starts a prepared command (e.g. with another uid) and waits for `ready`.
    pub fn spawn_with(cmd: &mut Command) -> (Self, String) {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn flow-helper");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut h = Self {
            child,
            stdin,
            lines: rx,
        };
        let ready = h.reply();
        assert!(ready.starts_with("ready"), "helper did not start: {ready}");
        (h, ready)
    }

    /// The next line the helper prints.
    pub fn reply(&mut self) -> String {
        self.lines
            .recv_timeout(REPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("no reply from helper: {e}"))
    }

    /// Sends one command and returns the reply line.
    pub fn cmd(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().expect("helper stdin open");
        writeln!(stdin, "{line}").expect("write to helper");
        stdin.flush().expect("flush helper stdin");
        self.reply()
    }

    /// Closes stdin and waits for the helper to exit.
    pub fn finish(mut self) -> std::process::ExitStatus {
        self.stdin.take();
        self.child.wait().expect("wait helper")
    }

    /// SIGKILLs the helper and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A fresh domain directory on tmpfs (or /tmp), removed when dropped.
pub fn temp_domain() -> tempfile::TempDir {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    tempfile::Builder::new()
        .prefix("mcm-xproc-")
        .tempdir_in(base)
        .expect("temp domain")
}
