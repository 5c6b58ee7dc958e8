//! A running `mesh` command for the CLI tests: its stdout arrives line by
//! line on a channel, its stderr is collected whole, and it is killed on
//! drop if still running, so a failing test leaves nothing behind. Every
//! wait is bounded by [`DEADLINE`].

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::sync::mpsc;

/// How long any bounded wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// A running `mesh` process.
pub struct Mesh {
    child: Child,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Mesh {
    /// Starts `mesh ARGS...`.
    pub fn spawn(args: &[&str]) -> Mesh {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mesh"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mesh runs");
        let (tx, stdout) = mpsc::unbounded_channel();
        let out = child.stdout.take().unwrap();
        // Blocking pipe reads live on their own threads; they end at EOF,
        // when the process exits.
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        Mesh {
            child,
            stdout,
            stderr: Some(stderr),
        }
    }

    /// The next stdout line, or `None` at EOF; fails after the deadline.
    pub async fn next_line(&mut self) -> Option<String> {
        tokio::time::timeout(DEADLINE, self.stdout.recv())
            .await
            .expect("timed out waiting for a line on mesh's stdout")
    }

    /// Reads the `NAME listening on ADDR` lines up to and including the
    /// admin listener's (printed last), each on 127.0.0.1 with a real port,
    /// and returns the addresses by name.
    pub async fn listening(&mut self) -> BTreeMap<String, SocketAddr> {
        let mut out = BTreeMap::new();
        loop {
            let Some(line) = self.next_line().await else {
                let status = self.wait_exit().await;
                panic!("mesh exited ({status}) before listening: {}", self.stderr());
            };
            let (name, addr) = line
                .split_once(" listening on ")
                .unwrap_or_else(|| panic!("unexpected stdout line {line:?}"));
            let addr: SocketAddr = addr
                .parse()
                .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
            assert_eq!(addr.ip().to_string(), "127.0.0.1", "{line}");
            assert_ne!(addr.port(), 0, "{line}");
            out.insert(name.to_owned(), addr);
            if name == "admin" {
                return out;
            }
        }
    }

    /// Sends SIGTERM with the `kill` command.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// The exit status if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits (bounded) for the process to exit.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "mesh did not exit in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the process wrote on stderr; call once it has exited.
    pub fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|t| t.join().unwrap())
            .unwrap_or_default()
    }

    /// Whatever is left on stdout; call once it has exited.
    pub async fn rest_of_stdout(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(line) = self.next_line().await {
            lines.push(line);
        }
        lines
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
