//! Node processes (`handoff-node run`) for the tests that need real processes: each is
//! killed and reaped when its guard drops (also on panic); its output is read on a thread
//! into a bounded channel, and every wait has a deadline.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::time::{Duration, Instant};

/// The longest any single wait may take before the test is declared hung.
pub const DEADLINE: Duration = Duration::from_secs(15);

pub const BIN: &str = env!("CARGO_BIN_EXE_handoff-node");

/// A temporary directory under `std::env::temp_dir()`, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "handoff-{what}-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a cluster key with `handoff-node keygen`.
pub fn keygen(dir: &TempDir, name: &str) -> PathBuf {
    let path = dir.file(name);
    let out = Command::new(BIN)
        .arg("keygen")
        .arg(&path)
        .output()
        .expect("run keygen");
    assert!(out.status.success(), "keygen failed: {out:?}");
    path
}

/// A running `handoff-node run`, killed and reaped on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub lines: Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Proc {
    pub fn spawn(name: &str, args: &[&str]) -> Proc {
        let mut command = Command::new(BIN);
        command.arg("run").args(["--name", name]).args(args);
        Proc::start(name, command)
    }

    /// Starts `command` (stdin and stdout piped, stderr shown with `RUST_LOG`).
    pub fn start(name: &str, mut command: Command) -> Proc {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("RUST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("spawn the process");
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, lines) = sync_channel(1024);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for the first line `pick` accepts.
    pub fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&str) -> Option<T>) -> T {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let picked = pick(&line);
                    self.seen.push(line);
                    if let Some(out) = picked {
                        return out;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no {what} within {DEADLINE:?}; output: {:#?}",
                    self.name, self.seen
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: exited before {what}; output: {:#?}",
                    self.name, self.seen
                ),
            }
        }
    }

    /// Its address, from the `listening` line.
    pub fn address(&mut self) -> String {
        self.wait_for("listening line", |line| {
            line.strip_prefix("listening ").map(str::to_owned)
        })
    }

    /// Waits for a `peers` line equal to `peers <n> <expected>`.
    pub fn wait_peers(&mut self, expected: &[&str]) {
        let want = format!("peers {} {}", expected.len(), expected.join(","));
        self.wait_for(&format!("`{want}`"), |line| (line == want).then_some(()));
    }

    /// Reads what is already there without waiting.
    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    /// Stops it with SIGTERM (its standard input closed first, which alone does not stop
    /// it) and waits for it to exit.
    pub fn finish(mut self) -> ExitStatus {
        drop(self.stdin.take());
        signal(self.child.id(), nix::sys::signal::Signal::SIGTERM);
        self.wait_exit()
    }

    /// Waits for it to exit (its standard output closes), then reaps it.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let end = Instant::now() + DEADLINE;
        // Its stdout closes when it exits.
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{} did not exit when told to stop", self.name)
                }
            }
        }
        self.child.wait().expect("wait")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn key_arg(path: &Path) -> String {
    path.to_str().expect("utf-8 temp path").to_owned()
}

/// Sends `signal` to process `pid` (with no `kill` program: a fresh machine may have none).
pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let target = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid fits an i32"));
    nix::sys::signal::kill(target, signal).unwrap_or_else(|e| panic!("kill -{signal} {pid}: {e}"));
}

/// A DAG for the demo registry of the node processes: `chains` chains of sleep
/// (`first_ms + i` ms) → ×1000 → that many bytes (40 kB and up: too big to travel inline,
/// so they stay where they were made) → their length, and a sum over every chain; every
/// function costs one cpu, and the first chain's sleep is pinned to `pin_first` if given.
/// Returns the DAG and its expected `total`.
pub fn chains_dag(
    id: &str,
    chains: usize,
    first_ms: u64,
    pin_first: Option<&handoff::NodeId>,
) -> (handoff::ValidatedDag, i64) {
    use handoff::{Dag, Function, Resources};
    let cpu = || Resources::new().cpu(1);
    let mut dag = Dag::with_id(id);
    let mut expected = 0;
    for i in 0..chains {
        let ms = first_ms + i as u64;
        expected += ms as i64 * 1000;
        let mut sleep = Function::new(format!("s{i}"), "sleep_ms")
            .extra_arg(ms)
            .with_cost(cpu());
        if let (0, Some(node)) = (i, pin_first) {
            sleep = sleep.pinned(node.clone());
        }
        dag.add_function(sleep);
        dag.add_function(
            Function::new(format!("m{i}"), "multiply")
                .arg(format!("s{i}"))
                .extra_arg(1000_i64)
                .with_cost(cpu()),
        );
        dag.add_function(
            Function::new(format!("b{i}"), "bytes")
                .arg(format!("m{i}"))
                .extra_arg(i as u8)
                .with_cost(cpu()),
        );
        dag.add_function(
            Function::new(format!("l{i}"), "len_of")
                .arg(format!("b{i}"))
                .with_cost(cpu()),
        );
    }
    dag.add_function(
        Function::new("total", "sum")
            .args((0..chains).map(|i| format!("l{i}")))
            .as_list()
            .with_cost(cpu()),
    );
    (dag.validate().expect("valid"), expected)
}

/// A process's resident memory in kB (Linux's `/proc/<pid>/status`), or `None` where it
/// cannot be read.
pub fn rss_kb(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
