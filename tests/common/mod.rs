//! Helpers shared by the integration tests: a hang guard, a concurrency gauge and a
//! rendezvous that proves functions really run at the same time.
//!
//! Nothing here waits on the clock to synchronise: the only timeouts are hang guards,
//! which turn a deadlock into a failed test instead of a stuck one.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use handoff::{NodeConfig, NodeHandle, Registry, Resources, start_node};

#[cfg(feature = "net")]
pub mod cluster;
#[cfg(feature = "net")]
pub mod procs;
#[cfg(feature = "net")]
pub mod raw;

/// How long any single await may take before the test is declared hung.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

/// Awaits `fut`, failing the test if it does not finish within [`HANG_GUARD`].
pub async fn guarded<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(HANG_GUARD, fut).await {
        Ok(out) => out,
        Err(_) => panic!("hang guard: `{what}` did not finish within {HANG_GUARD:?}"),
    }
}

/// The seed README's registry: `identity`, `multiply` and `format_output`.
pub fn seed_registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register("identity", |x: i64| x)
        .expect("register identity");
    registry
        .register("multiply", |x: i64, y: i64| x * y)
        .expect("register multiply");
    registry
        .register("format_output", |value: i64| {
            format!("The final answer is: {value}")
        })
        .expect("register format_output");
    registry
}

/// Starts a node called `local` with this registry and capacity.
pub async fn start_local(registry: Registry, capabilities: Resources) -> NodeHandle {
    guarded(
        "start_node",
        start_node(NodeConfig::new("local", registry).capabilities(capabilities)),
    )
    .await
    .expect("start the node")
}

/// Counts functions running right now and remembers the most seen at once.
#[derive(Debug, Default)]
pub struct Gauge {
    running: AtomicUsize,
    max: AtomicUsize,
    finished: AtomicUsize,
}

impl Gauge {
    /// Marks one function running for as long as the closure runs; the closure should
    /// take a little while (yielding) so that overlapping runs would be seen.
    pub fn run<T>(&self, work: impl FnOnce() -> T) -> T {
        self.run_weighted(1, work)
    }

    /// Like [`run`](Self::run), counting `weight` units instead of one (e.g. a cost in
    /// hundredths of a cpu).
    pub fn run_weighted<T>(&self, weight: usize, work: impl FnOnce() -> T) -> T {
        let now = self.running.fetch_add(weight, Ordering::SeqCst) + weight;
        self.max.fetch_max(now, Ordering::SeqCst);
        let out = work();
        self.running.fetch_sub(weight, Ordering::SeqCst);
        self.finished.fetch_add(1, Ordering::SeqCst);
        out
    }

    /// The most functions seen running at once.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }

    /// How many functions finished.
    pub fn finished(&self) -> usize {
        self.finished.load(Ordering::SeqCst)
    }

    /// How many run right now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }
}

/// Some work that gives other threads a chance to run meanwhile.
pub fn busy_work() {
    for _ in 0..200 {
        std::thread::yield_now();
    }
}

/// A one-shot meeting point for `target` functions: each one that arrives waits until
/// all `target` have arrived. It returns `true` when they met, `false` if the hang
/// guard expired first (the runtime never ran `target` of them at once).
#[derive(Debug)]
pub struct Rendezvous {
    arrived: Mutex<usize>,
    all_here: Condvar,
    target: usize,
}

impl Rendezvous {
    pub fn new(target: usize) -> Self {
        Rendezvous {
            arrived: Mutex::new(0),
            all_here: Condvar::new(),
            target,
        }
    }

    pub fn arrive(&self) -> bool {
        let mut arrived = self.arrived.lock().expect("rendezvous lock");
        *arrived += 1;
        self.all_here.notify_all();
        let (arrived, _) = self
            .all_here
            .wait_timeout_while(arrived, HANG_GUARD, |n| *n < self.target)
            .expect("rendezvous lock");
        *arrived >= self.target
    }
}

/// The one problem of a rejected execution (panics on anything else).
#[allow(dead_code)]
pub fn only_problem(err: &handoff::ExecuteError) -> handoff::Problem {
    match err {
        handoff::ExecuteError::Rejected { problems, .. } if problems.len() == 1 => {
            problems[0].clone()
        }
        other => panic!("expected a rejection with one problem, got {other:?}"),
    }
}

/// A gate that functions wait at until the test opens it. Waiting gives up after
/// [`HANG_GUARD`], so a gate the test never opens cannot hang the test run.
#[derive(Debug, Default)]
pub struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens the gate for every waiter, now and later.
    pub fn open(&self) {
        *self.open.lock().expect("gate lock") = true;
        self.opened.notify_all();
    }

    /// True once opened.
    pub fn is_open(&self) -> bool {
        *self.open.lock().expect("gate lock")
    }

    /// Waits until the gate is open: `true`, or `false` if the hang guard expired first.
    pub fn wait(&self) -> bool {
        let open = self.open.lock().expect("gate lock");
        let (open, _) = self
            .opened
            .wait_timeout_while(open, HANG_GUARD, |open| !*open)
            .expect("gate lock");
        *open
    }
}

/// Spins (yielding) until `cond` holds: `true`, or `false` if the hang guard expired
/// first. For functions polling a flag such as `handoff::is_cancelled()`.
pub fn spin_until(cond: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while !cond() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::yield_now();
    }
    true
}
