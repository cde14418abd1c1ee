//! Running the real `sellsync` binary from tests. Each test file uses its own part.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_sellsync");

/// Kills a long-running process (hub, serving device) when dropped, however the test ends.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a command to its end: success, stdout, stderr.
pub(crate) fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a command that must succeed; its stdout.
pub(crate) fn ok(args: &[&str]) -> String {
    let (success, stdout, stderr) = run(args);
    assert!(success, "sellsync {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// Runs a command that must succeed and print JSON.
pub(crate) fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).unwrap()
}

/// Starts a long-running command and returns it with the URL of its first stdout line,
/// `listening on URL`.
pub(crate) fn start(args: &[&str], stderr: Stdio) -> (Running, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stderr(stderr);
    start_command(cmd)
}

/// [`start`] for a command built by the caller (environment, working directory).
pub(crate) fn start_command(mut cmd: Command) -> (Running, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    // Generous: a hub running its bridge imports before it listens.
    let line = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the process prints its address");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected output {line:?}"))
        .to_owned();
    (running, url)
}

/// The dashboard link a hub started with `--ui` and a piped stderr prints (`dashboard on
/// LINK`). The rest of its stderr is read and dropped, so that the hub never blocks on it.
pub(crate) fn dashboard_link(hub: &mut Running) -> String {
    let err = hub.0.stderr.take().expect("the hub's stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if let Some(link) = line.strip_prefix("dashboard on ") {
                let _ = tx.send(link.to_owned());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("the hub prints its dashboard link")
}
