//! Remote execution between cluster nodes in this process, over 127.0.0.1: a DAG spans
//! three nodes, each value travels only to the nodes that consume it (counted), once per
//! node, placement and collocation hold across nodes, codes are checked against what the
//! live nodes can run, remote failures are retried and reported, and a 10 MB result comes
//! back to the caller intact.

// Clusters need the `net` feature (on by default).
#![cfg(feature = "net")]

mod common;

use std::time::Duration;

use common::cluster::{address, start};

use bytes::Bytes;
use handoff::{
    AllocationStrategy, CallError, ClusterKey, ClusterNode, Dag, ExecuteError, ExecuteOptions,
    Function, NodeId, Problem, Registry, Resources,
};

const DEADLINE: Duration = Duration::from_secs(30);

fn registry() -> Registry {
    registry_where_moody_works(false)
}

/// The test registry, with `moody` failing (every node but one) or working.
fn registry_where_moody_works(works: bool) -> Registry {
    let mut registry = Registry::new();
    registry
        .register_fallible("moody", move |x: u64| -> Result<u64, String> {
            if works {
                Ok(x)
            } else {
                Err("not on this node".to_owned())
            }
        })
        .expect("moody");
    registry
        .register("make", |len: u64, fill: u8| {
            Bytes::from(vec![fill; len as usize])
        })
        .expect("make");
    registry
        .register("len", |bytes: Bytes| bytes.len() as u64)
        .expect("len");
    registry
        .register("add", |a: u64, b: u64| a + b)
        .expect("add");
    registry
        .register_fallible("fail", |x: u64| -> Result<u64, String> {
            Err(format!("refusing {x}"))
        })
        .expect("fail");
    registry
}

/// A coordinator `c` (no resources) and two workers: `a` (cpu 2) and `b` (cpu 2, gpu 1),
/// each seeing the other two.
struct Cluster {
    c: ClusterNode,
    a: ClusterNode,
    b: ClusterNode,
}

async fn cluster(b_registry: Registry) -> Cluster {
    let key = ClusterKey::generate();
    let c = start(&key, "c", registry(), Resources::new(), None).await;
    let at = address(&c).await;
    let a = start(
        &key,
        "a",
        registry(),
        Resources::new().cpu(2),
        Some(at.clone()),
    )
    .await;
    let b = start(
        &key,
        "b",
        b_registry,
        Resources::new().cpu(2).gpu(1),
        Some(at),
    )
    .await;
    for node in [&c, &a, &b] {
        let mut changes = node.peer_changes();
        tokio::time::timeout(DEADLINE, changes.wait_for(|peers| peers.len() == 2))
            .await
            .expect("every node sees the other two in time")
            .expect("bridge running");
    }
    // The coordinator's resource manager has the workers once their announcements are in.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let known = c.node().discover_nodes().await.expect("nodes");
        if known.len() == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "registered: {known:?}"
        );
        let mut changes = c.peer_changes();
        let _ = tokio::time::timeout(Duration::from_millis(200), changes.changed()).await;
    }
    Cluster { c, a, b }
}

fn cpu() -> Resources {
    Resources::new().cpu(1)
}

#[actix::test]
async fn a_dag_spans_three_nodes_and_values_travel_only_to_their_consumers() {
    let Cluster { c, a, b } = cluster(registry()).await;
    let (a_id, b_id) = (a.id().clone(), b.id().clone());
    let dag = Dag::new()
        // 100 kB: too big to come back inline, so it stays on `a`.
        .with(
            Function::new("src", "make")
                .extra_arg(100_000_u64)
                .extra_arg(7_u8)
                .pinned(a_id.clone())
                .with_cost(cpu()),
        )
        // Two consumers on `b`: `src` crosses to `b` once.
        .with(Function::new("left", "len").arg("src").pinned(b_id.clone()))
        .with(
            Function::new("left2", "len")
                .arg("src")
                .pinned(b_id.clone()),
        )
        // A consumer on `a` reads it where it is.
        .with(
            Function::new("right", "len")
                .arg("src")
                .pinned(a_id.clone()),
        )
        .with(
            Function::new("lr", "add")
                .args(["left", "left2"])
                .pinned(b_id.clone()),
        )
        // Small results come back inline; the sum runs on whichever worker has a cpu.
        .with(
            Function::new("sum", "add")
                .args(["lr", "right"])
                .with_cost(cpu()),
        )
        .validate()
        .expect("valid");
    let options = ExecuteOptions::default().free_intermediates(["sum"]);
    let done = tokio::time::timeout(DEADLINE, c.node().execute(dag, options))
        .await
        .expect("in time")
        .expect("executes");
    assert_eq!(done.results.get::<u64>("sum"), Ok(300_000));
    let allocations = done.allocations();
    assert_eq!(allocations["src"], a_id);
    assert_eq!(allocations["right"], a_id);
    assert_eq!(allocations["left"], b_id);
    assert_eq!(allocations["left2"], b_id);
    assert_eq!(allocations["lr"], b_id);
    assert_ne!(&allocations["sum"], c.id(), "c has no cpu");

    // `src` went to `b` once (100 kB and a few bytes of framing), and nowhere else; the
    // coordinator fetched nothing: the small results came back inline.
    let (ta, tb, tc) = (a.transfers(), b.transfers(), c.transfers());
    assert_eq!(tb.values_fetched, 1, "b: {tb:?}");
    assert!((100_000..100_100).contains(&tb.bytes_fetched), "b: {tb:?}");
    assert_eq!(ta.values_fetched, 0, "a: {ta:?}");
    assert_eq!(tc.values_fetched, 0, "c: {tc:?}");
    assert!(tc.inline_results >= 4, "c: {tc:?}");
}

#[actix::test]
async fn placement_costs_and_collocation_hold_across_nodes() {
    let Cluster { c, a, b } = cluster(registry()).await;
    let dag = Dag::new()
        .with(
            Function::new("gpu", "make")
                .extra_arg(10_u64)
                .extra_arg(1_u8)
                .with_cost(Resources::new().gpu(1)),
        )
        .with(
            Function::new("next", "len")
                .arg("gpu")
                .collocated_with("gpu"),
        )
        .with(
            Function::new("on_a", "make")
                .extra_arg(3_u64)
                .extra_arg(2_u8)
                .pinned(a.id().clone()),
        )
        .with(
            Function::new("with_a", "len")
                .arg("on_a")
                .collocated_with("on_a"),
        )
        .validate()
        .expect("valid");
    let done = tokio::time::timeout(DEADLINE, c.node().execute(dag, ExecuteOptions::default()))
        .await
        .expect("in time")
        .expect("executes");
    let allocations = done.allocations();
    assert_eq!(&allocations["gpu"], b.id(), "only b has a gpu");
    assert_eq!(&allocations["next"], b.id());
    assert_eq!(&allocations["on_a"], a.id());
    assert_eq!(&allocations["with_a"], a.id());
    assert_eq!(done.results.get::<u64>("next"), Ok(10));
    assert_eq!(done.results.get::<u64>("with_a"), Ok(3));
    // Every result is the caller's (none was freed), fetched or inline.
    assert_eq!(
        done.results.get::<Bytes>("on_a").expect("bytes"),
        vec![2_u8; 3]
    );
}

#[actix::test]
async fn code_only_some_nodes_have_runs_there_and_code_none_has_is_refused() {
    let mut only_b = registry();
    only_b
        .register("shout", |s: String| s.to_uppercase())
        .expect("shout");
    let Cluster { c, a, b } = cluster(only_b).await;

    let dag = Dag::new()
        .with(Function::new("loud", "shout").extra_arg("hi".to_owned()))
        .validate()
        .expect("valid");
    let done = tokio::time::timeout(DEADLINE, c.node().execute(dag, ExecuteOptions::default()))
        .await
        .expect("in time")
        .expect("executes on b, the one node with the code");
    assert_eq!(&done.allocations()["loud"], b.id());
    assert_eq!(done.results.get::<String>("loud"), Ok("HI".to_owned()));

    let dag = Dag::new()
        .with(Function::new("nobody", "whisper").extra_arg(1_u64))
        // A typo of a name only b has: suggested from the cluster's registries.
        .with(Function::new("typo", "shuot").extra_arg("x".to_owned()))
        .with(
            Function::new("wrong_node", "shout")
                .extra_arg("x".to_owned())
                .pinned(a.id().clone()),
        )
        .validate()
        .expect("valid");
    let err = c
        .node()
        .execute(dag, ExecuteOptions::default())
        .await
        .expect_err("refused");
    let ExecuteError::Rejected { problems, .. } = &err else {
        panic!("expected a rejection, got {err:?}");
    };
    assert!(
        problems.contains(&Problem::UnknownCode {
            function: "nobody".into(),
            code: "whisper".into(),
            nearest: None,
            registered_on: Vec::new(),
            registered_names: Vec::new(),
        }),
        "{problems:?}"
    );
    assert!(
        problems.contains(&Problem::UnknownCode {
            function: "wrong_node".into(),
            code: "shout".into(),
            nearest: None,
            // Where it is registered, by id and announced name.
            registered_on: vec![b.id().clone()],
            registered_names: vec!["b".to_owned()],
        }),
        "{problems:?}"
    );
    assert!(
        err.to_string()
            .contains(&format!("(it is registered on `b` ({}))", b.id())),
        "{err}"
    );
    assert!(
        problems.contains(&Problem::UnknownCode {
            function: "typo".into(),
            code: "shuot".into(),
            nearest: Some("shout".into()),
            registered_on: Vec::new(),
            registered_names: Vec::new(),
        }),
        "{problems:?}"
    );
}

#[actix::test]
async fn a_failing_remote_function_is_retried_then_reported() {
    let Cluster { c, a, .. } = cluster(registry()).await;
    let dag = Dag::new()
        .with(
            Function::new("bad", "fail")
                .extra_arg(5_u64)
                .pinned(a.id().clone())
                .max_retries(2),
        )
        .validate()
        .expect("valid");
    let options = ExecuteOptions::default().backoff(handoff::Backoff::None);
    let err = tokio::time::timeout(DEADLINE, c.node().execute(dag, options))
        .await
        .expect("in time")
        .expect_err("fails");
    match err {
        ExecuteError::FunctionFailed {
            function,
            attempts,
            last_error: CallError::Failed { message, .. },
        } => {
            assert_eq!(function.as_str(), "bad");
            assert_eq!(attempts, 3);
            assert!(message.contains("refusing 5"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[actix::test]
async fn a_10_mb_result_made_elsewhere_reaches_the_caller_intact() {
    let Cluster { c, b, .. } = cluster(registry()).await;
    let dag = Dag::new()
        .with(
            Function::new("big", "make")
                .extra_arg(10_000_000_u64)
                .extra_arg(42_u8)
                .pinned(b.id().clone()),
        )
        .validate()
        .expect("valid");
    let options = ExecuteOptions::default().allocation_strategy(AllocationStrategy::LoadBalanced);
    let done = tokio::time::timeout(DEADLINE, c.node().execute(dag, options))
        .await
        .expect("in time")
        .expect("executes");
    let big = done.results.get::<Bytes>("big").expect("bytes");
    assert_eq!(big.len(), 10_000_000);
    assert!(big.iter().all(|&x| x == 42));
    assert_eq!(c.transfers().values_fetched, 1);
    let _: &NodeId = b.id();
}

/// Picks a node other than `avoid` where the cost fits now, when there is one.
struct Avoid(NodeId);

impl handoff::Allocator for Avoid {
    fn choose(&self, cost: Option<&Resources>, nodes: &[handoff::NodeView<'_>]) -> Option<usize> {
        nodes
            .iter()
            .position(|n| *n.id != self.0 && n.fits_now(cost))
            .or_else(|| nodes.iter().position(|n| n.fits_now(cost)))
    }
}

#[actix::test]
async fn a_function_runs_where_its_input_bytes_are_before_the_allocators_pick() {
    let Cluster { c, a, b } = cluster(registry()).await;
    let dag = Dag::new()
        .with(
            Function::new("src", "make")
                .extra_arg(200_000_u64)
                .extra_arg(3_u8)
                .pinned(a.id().clone()),
        )
        // Fits on `a` and on `b`; the allocator would pick `b`.
        .with(Function::new("size", "len").arg("src").with_cost(cpu()))
        .validate()
        .expect("valid");
    let strategy = AllocationStrategy::Custom(std::sync::Arc::new(Avoid(a.id().clone())));
    let options = ExecuteOptions::default()
        .allocation_strategy(strategy)
        .free_intermediates(["size"]);
    let done = tokio::time::timeout(DEADLINE, c.node().execute(dag, options))
        .await
        .expect("in time")
        .expect("executes");
    assert_eq!(done.results.get::<u64>("size"), Ok(200_000));
    assert_eq!(
        &done.allocations()["size"],
        a.id(),
        "a holds its 200 kB input"
    );
    assert_eq!(b.transfers().values_fetched, 0);
    assert_eq!(a.transfers().values_fetched, 0);
}

static RUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static MOST: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts the calls running at once on the node running it, for a few milliseconds.
fn gauged(x: u64) -> u64 {
    use std::sync::atomic::Ordering::SeqCst;
    let now = RUNNING.fetch_add(1, SeqCst) + 1;
    MOST.fetch_max(now, SeqCst);
    let start = std::time::Instant::now();
    let mut spins = 0_u64;
    while start.elapsed() < Duration::from_millis(5) {
        spins = std::hint::black_box(spins + 1);
    }
    RUNNING.fetch_sub(1, SeqCst);
    x
}

#[actix::test]
async fn two_coordinators_never_run_more_on_a_worker_than_it_has() {
    let with_gauge = || {
        let mut r = registry();
        r.register("gauged", gauged).expect("gauged");
        r
    };
    let key = ClusterKey::generate();
    let worker = start(&key, "w", with_gauge(), Resources::new().cpu(1), None).await;
    let at = address(&worker).await;
    let c1 = start(&key, "c1", with_gauge(), Resources::new(), Some(at.clone())).await;
    let c2 = start(&key, "c2", with_gauge(), Resources::new(), Some(at)).await;
    for c in [&c1, &c2] {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !c
            .node()
            .discover_nodes()
            .await
            .expect("nodes")
            .iter()
            .any(|(n, _)| n == worker.id())
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "worker never registered"
            );
            let mut changes = c.peer_changes();
            let _ = tokio::time::timeout(Duration::from_millis(200), changes.changed()).await;
        }
    }
    let dag = |name: &str| {
        let mut dag = Dag::with_id(name);
        for i in 0..6_u64 {
            dag.add_function(
                Function::new(format!("g{i}"), "gauged")
                    .extra_arg(i)
                    .with_cost(cpu()),
            );
        }
        dag.validate().expect("valid")
    };
    // Each coordinator sees the worker's whole cpu free and sends one at a time; the
    // worker's own reservation makes the second wait.
    let (r1, r2) = futures::join!(
        c1.node().execute(dag("one"), ExecuteOptions::default()),
        c2.node().execute(dag("two"), ExecuteOptions::default()),
    );
    for done in [r1.expect("one runs"), r2.expect("two runs")] {
        assert!(done.allocations().values().all(|n| n == worker.id()));
        assert_eq!(done.results.get::<u64>("g5"), Ok(5));
    }
    assert_eq!(MOST.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[actix::test]
async fn get_result_waits_for_a_value_made_elsewhere_and_fetches_it() {
    let Cluster { c, a, .. } = cluster(registry()).await;
    let dag = Dag::new()
        .with(
            Function::new("src", "make")
                .extra_arg(50_000_u64)
                .extra_arg(9_u8)
                .pinned(a.id().clone()),
        )
        .validate()
        .expect("valid");
    let dag_id = dag.id().clone();
    let src = handoff::FunctionId::new("src");
    // Asked for before it runs: the wait ends when `a` reports it.
    let (result, done) = futures::join!(
        c.get_result(&dag_id, &src, DEADLINE),
        c.node()
            .execute(dag, ExecuteOptions::default().keep_values(true)),
    );
    let done = done.expect("executes");
    let value = result.expect("the result");
    assert_eq!(value.get::<Bytes>().expect("bytes"), vec![9_u8; 50_000]);
    assert_eq!(&done.allocations()["src"], a.id());

    let nothing = handoff::FunctionId::new("nothing");
    let missing = c
        .get_result(&dag_id, &nothing, Duration::from_millis(100))
        .await;
    assert!(
        matches!(
            missing,
            Err(handoff::net::GetValueError::Local {
                source: handoff::NodeError::Wait(handoff::WaitError::Timeout { .. })
            })
        ),
        "{missing:?}"
    );
    // Kept values stay on `a` until dropped everywhere.
    assert!(
        a.node()
            .get_local_value(dag_id.clone(), "src")
            .await
            .is_ok()
    );
    c.drop_dag(&dag_id).await.expect("dropped");
}

/// Calls of `spin` that have started, and those that saw their execution cancelled.
static SPINNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static STOPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs until its execution is cancelled (at most 60 s), then says so.
fn spin(x: u64) -> u64 {
    use std::sync::atomic::Ordering::SeqCst;
    SPINNING.fetch_add(1, SeqCst);
    let start = std::time::Instant::now();
    while !handoff::is_cancelled() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(1));
    }
    if handoff::is_cancelled() {
        STOPPED.fetch_add(1, SeqCst);
    }
    x
}

/// Waits, under the deadline, until `done` holds.
async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix::test]
async fn cancelling_stops_what_runs_on_other_nodes_and_frees_their_capacity() {
    use std::sync::atomic::Ordering::SeqCst;
    let with_spin = || {
        let mut r = registry();
        r.register("spin", spin).expect("spin");
        r
    };
    let Cluster { c, a, b } = cluster(with_spin()).await;
    // `a` lacks `spin`: both calls run on `b`, one cpu each, and never end by themselves.
    let dag = Dag::new()
        .with(
            Function::new("s1", "spin")
                .extra_arg(1_u64)
                .with_cost(cpu()),
        )
        .with(
            Function::new("s2", "spin")
                .extra_arg(2_u64)
                .with_cost(cpu()),
        )
        .validate()
        .expect("valid");
    let handle = c
        .node()
        .submit(dag, ExecuteOptions::default())
        .await
        .expect("submitted");
    until("both calls running on b", async || {
        SPINNING.load(SeqCst) == 2
    })
    .await;
    let b_id = b.id().clone();
    assert!(
        !b.node()
            .resources_available(b_id.clone(), cpu())
            .await
            .expect("asked"),
        "b's cpu is taken"
    );
    handle.cancel();
    let outcome = tokio::time::timeout(DEADLINE, handle)
        .await
        .expect("ends in time");
    assert!(
        matches!(outcome, Err(ExecuteError::Cancelled { .. })),
        "{outcome:?}"
    );
    until("both calls told to stop", async || {
        STOPPED.load(SeqCst) == 2
    })
    .await;
    until("b's cpu given back", async || {
        b.node()
            .resources_available(b_id.clone(), cpu().cpu(2))
            .await
            .expect("asked")
    })
    .await;
    let _: &NodeId = a.id();
}

/// Picks `prefer` when the cost fits there now, else the first node where it fits.
struct Prefer(NodeId);

impl handoff::Allocator for Prefer {
    fn choose(&self, cost: Option<&Resources>, nodes: &[handoff::NodeView<'_>]) -> Option<usize> {
        nodes
            .iter()
            .position(|n| *n.id == self.0 && n.fits_now(cost))
            .or_else(|| nodes.iter().position(|n| n.fits_now(cost)))
    }
}

#[actix::test]
async fn a_retry_after_the_functions_own_failure_goes_to_another_node() {
    // `moody` fails on `a` and works on `b`; the allocator prefers `a`.
    let Cluster { c, a, b } = cluster(registry_where_moody_works(true)).await;
    let dag = Dag::new()
        .with(
            Function::new("m", "moody")
                .extra_arg(7_u64)
                .with_cost(cpu())
                .max_retries(1),
        )
        .validate()
        .expect("valid");
    let strategy = AllocationStrategy::Custom(std::sync::Arc::new(Prefer(a.id().clone())));
    let options = ExecuteOptions::default()
        .allocation_strategy(strategy)
        .backoff(handoff::Backoff::None)
        .events(64);
    let mut handle = c.node().submit(dag, options).await.expect("submitted");
    let mut events = handle.events().expect("events");
    let done = tokio::time::timeout(DEADLINE, handle)
        .await
        .expect("in time")
        .expect("the retry succeeds");
    assert_eq!(done.results.get::<u64>("m"), Ok(7));
    assert_eq!(&done.allocations()["m"], b.id(), "the retry ran on b");
    // The first attempt failed on `a`.
    let mut failed_on = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(
        Duration::from_millis(500),
        futures::StreamExt::next(&mut events),
    )
    .await
    {
        if let handoff::EventKind::Failed { node, attempt, .. } = event.kind {
            failed_on.push((attempt, node));
        }
    }
    assert_eq!(failed_on, vec![(1, a.id().clone())]);
}

/// Calls of `hold` that have started; they return once `RELEASED` is set (or after 60 s).
static HOLDING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static RELEASED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn hold(x: u64) -> u64 {
    use std::sync::atomic::Ordering::SeqCst;
    HOLDING.fetch_add(1, SeqCst);
    let start = std::time::Instant::now();
    while !RELEASED.load(SeqCst) && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(1));
    }
    x
}

#[actix::test]
async fn quick_calls_queued_behind_blocked_ones_in_a_batch_still_run_and_report_first() {
    use futures::StreamExt;
    use std::sync::atomic::Ordering::SeqCst;
    let with_hold = || {
        let mut r = registry();
        r.register("hold", hold).expect("hold");
        r
    };
    let Cluster { c, a: _a, b } = cluster(with_hold()).await;
    // More blocked calls than the worker has shared jobs (one per core), ahead of the quick
    // ones in the same batches: the quick ones run only if calls that wait too long get
    // jobs of their own, and come back while the blocked ones still run (reported later).
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let blocked = cores + 2;
    let quick = 40_u64;
    let mut dag = Dag::new();
    for i in 0..blocked {
        dag.add_function(
            Function::new(format!("h{i}"), "hold")
                .extra_arg(i as u64)
                .pinned(b.id().clone()),
        );
    }
    for i in 0..quick {
        dag.add_function(
            Function::new(format!("q{i}"), "add")
                .extra_arg(i)
                .extra_arg(1_u64)
                .pinned(b.id().clone()),
        );
    }
    let dag = dag.validate().expect("valid");
    let mut handle = c
        .node()
        .submit(dag, ExecuteOptions::default().events(1024))
        .await
        .expect("submitted");
    let mut events = handle.events().expect("events asked for");
    let mut finished = 0;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while finished < quick {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("the quick calls finish while the others are blocked")
            .expect("the stream lasts until the end");
        if let handoff::EventKind::Finished { function, .. } = &event.kind {
            assert!(
                function.as_str().starts_with('q'),
                "{function} finished before the release"
            );
            finished += 1;
        }
    }
    assert!(!RELEASED.load(SeqCst));
    until("every blocked call running", async || {
        HOLDING.load(SeqCst) == blocked
    })
    .await;
    RELEASED.store(true, SeqCst);
    let done = tokio::time::timeout(DEADLINE, handle)
        .await
        .expect("ends in time")
        .expect("succeeds");
    for i in 0..quick {
        assert_eq!(done.results.get::<u64>(&format!("q{i}")), Ok(i + 1));
    }
    for i in 0..blocked {
        assert_eq!(done.results.get::<u64>(&format!("h{i}")), Ok(i as u64));
    }
    assert_eq!(&done.allocations()["h0"], b.id());
}

/// A collocation group is placed by what all its members need: `first` (cpu 1) would fit
/// `a`, which the allocator prefers, but `second` (gpu 1) goes where `first` does, and
/// only `b` holds both. The group runs on `b` (it used to land on `a` and fail there).
#[actix::test]
async fn a_collocation_group_goes_where_all_its_members_fit() {
    let Cluster { c, a, b } = cluster(registry()).await;
    let dag = Dag::new()
        .with(
            Function::new("first", "make")
                .extra_arg(4_u64)
                .extra_arg(1_u8)
                .with_cost(cpu()),
        )
        .with(
            Function::new("second", "len")
                .arg("first")
                .with_cost(Resources::new().gpu(1))
                .collocated_with("first"),
        )
        .validate()
        .expect("valid");
    let strategy = AllocationStrategy::Custom(std::sync::Arc::new(Prefer(a.id().clone())));
    let options = ExecuteOptions::default().allocation_strategy(strategy);
    let done = tokio::time::timeout(DEADLINE, c.node().execute(dag, options))
        .await
        .expect("in time")
        .expect("the group fits b");
    assert_eq!(&done.allocations()["first"], b.id());
    assert_eq!(&done.allocations()["second"], b.id());
    assert_eq!(done.results.get::<u64>("second"), Ok(4));

    // A group whose summed cost no node holds is refused before anything runs, naming
    // its root and the sum (each member alone fits `a` or `b`).
    let dag = Dag::new()
        .with(
            Function::new("big", "make")
                .extra_arg(1_u64)
                .extra_arg(1_u8)
                .with_cost(Resources::new().cpu(2)),
        )
        .with(
            Function::new("beside", "len")
                .arg("big")
                .with_cost(Resources::new().cpu(1))
                .collocated_with("big"),
        )
        .validate()
        .expect("valid");
    let err = c
        .node()
        .execute(dag, ExecuteOptions::default())
        .await
        .expect_err("cpu 3 fits no node");
    let ExecuteError::Rejected { problems, .. } = &err else {
        panic!("expected a rejection, got {err:?}");
    };
    assert!(
        problems.iter().any(|p| matches!(
            p,
            Problem::Allocation(handoff::AllocationError::Unsatisfiable { function, cost, .. })
                if function.as_str() == "big" && *cost == Resources::new().cpu(3)
        )),
        "{problems:?}"
    );
}

/// Set once `park` runs; `park` returns when told to stop or once `UNPARK` is set.
static PARKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static UNPARK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn park(x: u64) -> u64 {
    use std::sync::atomic::Ordering::SeqCst;
    PARKED.store(true, SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !UNPARK.load(SeqCst) && !handoff::is_cancelled() && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    x
}

/// Dropping the actor system while a cluster DAG runs (a value already made on a worker,
/// another call running there) stops everything without a panic: the executions told to
/// stop cannot reach the network any more, and say so quietly.
#[test]
fn dropping_the_system_with_a_live_cluster_dag_does_not_panic() {
    use std::sync::atomic::Ordering::SeqCst;
    // A panic in teardown may be caught on its way (by a task's harness), so panics on
    // this test's thread are counted by a hook.
    static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    const THREAD: &str = "system-drop";
    let previous = std::sync::Arc::new(std::panic::take_hook());
    let chained = std::sync::Arc::clone(&previous);
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some(THREAD) {
            PANICS.fetch_add(1, SeqCst);
        }
        chained(info);
    }));
    let ran = std::thread::Builder::new()
        .name(THREAD.to_owned())
        .spawn(|| {
            let system = actix::System::new();
            system.block_on(async {
                let mut with_park = registry();
                with_park.register("park", park).expect("park");
                let Cluster { c, b, .. } = cluster(with_park).await;
                let dag = Dag::new()
                    .with(
                        Function::new("made", "add")
                            .extra_arg(1_u64)
                            .extra_arg(2_u64)
                            .pinned(b.id().clone()),
                    )
                    .with(
                        Function::new("parked", "park")
                            .arg("made")
                            .pinned(b.id().clone()),
                    )
                    .validate()
                    .expect("valid");
                let handle = c
                    .node()
                    .submit(dag, ExecuteOptions::default())
                    .await
                    .expect("submitted");
                until("`park` runs on b", async || PARKED.load(SeqCst)).await;
                // Kept alive past the block_on: the system is dropped with the DAG running.
                std::mem::forget(handle);
                std::mem::forget((c, b));
            });
            UNPARK.store(true, SeqCst);
            drop(system);
        })
        .expect("thread starts")
        .join();
    assert!(ran.is_ok(), "the test's system ran");
    assert_eq!(PANICS.load(SeqCst), 0, "dropping the system panicked");
}

/// Gates for the isolation tests: `gated_len` (registered on `b`) says it runs, then
/// waits until its gate opens (at most 60 s) and returns the length.
static GATES: std::sync::Mutex<Vec<(u8, bool, bool)>> = std::sync::Mutex::new(Vec::new());

/// Gate `n`: (running, open).
fn gate(n: u8) -> (bool, bool) {
    let gates = GATES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    gates
        .iter()
        .find(|g| g.0 == n)
        .map_or((false, false), |g| (g.1, g.2))
}

fn set_gate(n: u8, running: bool, open: bool) {
    let mut gates = GATES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    gates.retain(|g| g.0 != n);
    gates.push((n, running, open));
}

fn gated_len(bytes: Bytes, n: u8) -> u64 {
    let open = gate(n).1;
    set_gate(n, true, open);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !gate(n).1 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    bytes.len() as u64
}

/// Like `gated_len`, but only the first call of gate `n` waits.
fn first_gated_len(bytes: Bytes, n: u8) -> u64 {
    let (running, open) = gate(n);
    if running || open {
        return bytes.len() as u64;
    }
    gated_len(bytes, n)
}

fn gated_registry() -> Registry {
    let mut registry = registry();
    registry
        .register("gated_len", gated_len)
        .expect("gated_len");
    registry
        .register("first_gated_len", first_gated_len)
        .expect("first_gated_len");
    registry
}

/// `src` (`len` bytes of `fill`) then `gated_len` of it behind gate `n`, both on `on`.
fn gated_dag(id: &str, on: &NodeId, len: u64, fill: u8, n: u8) -> handoff::ValidatedDag {
    Dag::with_id(id)
        .with(
            Function::new("src", "make")
                .extra_arg(len)
                .extra_arg(fill)
                .pinned(on.clone()),
        )
        .with(
            Function::new("n", "gated_len")
                .arg("src")
                .extra_arg(n)
                .pinned(on.clone()),
        )
        .validate()
        .expect("valid")
}

/// Two coordinators run a DAG of the same id on the same worker: the one that ends
/// first (and tells the worker to forget its DAG) does not touch the other's functions
/// or values; each gets its own results.
#[actix::test]
async fn two_coordinators_dags_of_the_same_id_never_meet() {
    const GATE: u8 = 1;
    let Cluster { c, a, b } = cluster(gated_registry()).await;
    let mine = gated_dag("nightly", b.id(), 10, 1, GATE);
    let handle = c
        .node()
        .submit(mine, ExecuteOptions::default())
        .await
        .expect("submitted");
    until("c's gated call runs on b", async || gate(GATE).0).await;
    // `a` coordinates its own `nightly` on `b`, to the end (b is told to forget it).
    let theirs = Dag::with_id("nightly")
        .with(
            Function::new("src", "make")
                .extra_arg(20_u64)
                .extra_arg(2_u8)
                .pinned(b.id().clone()),
        )
        .with(Function::new("n", "len").arg("src").pinned(b.id().clone()))
        .validate()
        .expect("valid");
    let done = tokio::time::timeout(
        DEADLINE,
        a.node().execute(theirs, ExecuteOptions::default()),
    )
    .await
    .expect("in time")
    .expect("a's nightly runs");
    assert_eq!(done.results.get::<u64>("n"), Ok(20));
    assert_eq!(
        done.results.get::<Bytes>("src").expect("bytes"),
        vec![2_u8; 20]
    );
    set_gate(GATE, true, true);
    let done = tokio::time::timeout(DEADLINE, handle)
        .await
        .expect("c's nightly ends in time")
        .expect("c's nightly was not disturbed");
    assert_eq!(done.results.get::<u64>("n"), Ok(10));
    assert_eq!(
        done.results.get::<Bytes>("src").expect("bytes"),
        vec![1_u8; 10]
    );
}

/// One DAG submitted twice by the same coordinator: the second execution ends (and its
/// worker is told to forget it) while the first still runs there; the first still gets
/// its own values.
#[actix::test]
async fn one_dag_submitted_twice_runs_twice() {
    const GATE: u8 = 3;
    let Cluster { c, b, .. } = cluster(gated_registry()).await;
    let dag = Dag::with_id("twice")
        .with(
            Function::new("src", "make")
                .extra_arg(30_000_u64)
                .extra_arg(5_u8)
                .pinned(b.id().clone()),
        )
        .with(
            Function::new("n", "first_gated_len")
                .arg("src")
                .extra_arg(GATE)
                .pinned(b.id().clone()),
        )
        .validate()
        .expect("valid");
    let first = c
        .node()
        .submit(dag.clone(), ExecuteOptions::default())
        .await
        .expect("submitted");
    until("the first execution waits on b", async || gate(GATE).0).await;
    let second = tokio::time::timeout(DEADLINE, c.node().execute(dag, ExecuteOptions::default()))
        .await
        .expect("in time")
        .expect("the second execution runs");
    assert_eq!(second.results.get::<u64>("n"), Ok(30_000));
    set_gate(GATE, true, true);
    let first = tokio::time::timeout(DEADLINE, first)
        .await
        .expect("in time")
        .expect("the first execution was not disturbed by the second's end");
    assert_eq!(first.results.get::<u64>("n"), Ok(30_000));
    assert_eq!(
        first.results.get::<Bytes>("src").expect("bytes"),
        vec![5_u8; 30_000]
    );
}

/// A keyed peer that does not coordinate a DAG can neither forget it, nor read its
/// values, nor set another node's capacity: the execution ends as if nothing happened.
#[actix::test]
async fn a_keyed_peer_cannot_forget_read_or_shrink_what_is_not_its_own() {
    use handoff_net::{FetchRequest, Request, RequestError, RpcError};
    // What the target refused with (an answer that is not a refusal is `None`).
    let refusal = |answer: Result<handoff_net::Response, RequestError>| match answer {
        Err(RequestError::Remote { error, .. }) => Some(error),
        Ok(handoff_net::Response::Error(error)) => Some(error),
        _ => None,
    };
    const GATE: u8 = 2;
    let Cluster { c, a, b } = cluster(gated_registry()).await;
    let handle = c
        .node()
        .submit(
            gated_dag("victim", b.id(), 8, 7, GATE),
            ExecuteOptions::default(),
        )
        .await
        .expect("submitted");
    until("the gated call runs on b", async || gate(GATE).0).await;
    let dag = handoff::DagId::new("victim");
    let attacker = a.client();
    for target in [b.id(), c.id()] {
        let forget = Request::Forget { dag: dag.clone() };
        let answer = refusal(attacker.request(target, forget).await);
        if target == c.id() {
            assert!(
                matches!(&answer, Some(RpcError::NotOwner { dag: d }) if *d == dag),
                "{answer:?}"
            );
        }
        let fetch = Request::Fetch(FetchRequest {
            dag: dag.clone(),
            function: handoff::FunctionId::new("src"),
            offset: 0,
            max_len: 1 << 16,
        });
        let answer = refusal(attacker.request(target, fetch).await);
        assert!(
            matches!(answer, Some(RpcError::NotFound { .. })),
            "{target}: {answer:?}"
        );
    }
    let register = Request::Register {
        capabilities: Resources::new().cpu(0),
    };
    let answer = refusal(attacker.request(b.id(), register).await);
    assert!(
        matches!(answer, Some(RpcError::RegistrationRefused)),
        "{answer:?}"
    );
    set_gate(GATE, true, true);
    let done = tokio::time::timeout(DEADLINE, handle)
        .await
        .expect("ends in time")
        .expect("undisturbed");
    assert_eq!(done.results.get::<u64>("n"), Ok(8));
    assert_eq!(
        done.results.get::<Bytes>("src").expect("bytes"),
        vec![7_u8; 8]
    );
    // `b` still offers its own capacity.
    let (capabilities, _) = c
        .node()
        .node_resources(b.id().clone())
        .await
        .expect("alive")
        .expect("known");
    assert_eq!(capabilities, Resources::new().cpu(2).gpu(1));
}

/// The plan a user asks `allocate` for, over the cluster's own list of nodes, is the plan
/// that runs when the DAG follows it: every function where planned (here a collocation
/// group placed by its summed cost, single functions, and a pinned one), with either
/// built-in strategy. (Without following it, a run places by the same rule, but a
/// reservation freed by a quick function is reused by the next call of its shape.)
#[actix::test]
async fn the_plan_allocate_makes_is_where_the_run_places() {
    // `a` stays alive (bound) for the whole test: it runs planned functions.
    let Cluster { c, a: _a, b } = cluster(registry()).await;
    let nodes = c.node().discover_nodes().await.expect("nodes");
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    let dag = || {
        let make = |id: &str, fill: u8| {
            Function::new(id, "make")
                .extra_arg(2_u64)
                .extra_arg(fill)
                .with_cost(cpu())
        };
        Dag::new()
            .with(make("group", 1))
            .with(make("member", 2).collocated_with("group"))
            .with(make("single", 3))
            .with(make("other", 4))
            .with(
                Function::new("pinned", "make")
                    .extra_arg(1_u64)
                    .extra_arg(5_u8)
                    .with_cost(Resources::new().gpu(1))
                    .pinned(b.id().clone()),
            )
            .validate()
            .expect("valid")
    };
    for strategy in [
        AllocationStrategy::FirstAvailable,
        AllocationStrategy::LoadBalanced,
    ] {
        let plan = handoff::allocate(&dag(), &nodes, &strategy).expect("plan");
        assert!(plan.waiting.is_empty(), "{strategy:?}: {plan:?}");
        assert_eq!(plan.nodes["group"], plan.nodes["member"]);
        let options = ExecuteOptions::default().allocation_strategy(strategy.clone());
        let following = dag().following(&plan);
        let done = tokio::time::timeout(DEADLINE, c.node().execute(following, options))
            .await
            .expect("in time")
            .expect("executes");
        let ran: std::collections::BTreeMap<_, _> = done
            .allocations()
            .iter()
            .map(|(f, n)| (f.clone(), n.clone()))
            .collect();
        assert_eq!(ran, plan.nodes, "{strategy:?}");
    }
}

/// A function built from a typed handle goes only to nodes whose registry has its code
/// with its types: `a` registers `double` over strings, `b` over integers, and the
/// integer DAG runs on `b` alone; with only `a` to run it, it is refused naming `a` and
/// the types each side has.
#[actix::test]
async fn a_typed_function_runs_only_where_its_code_has_its_types() {
    let key = ClusterKey::generate();
    let mut strings = registry();
    strings
        .register("double", |s: String| format!("{s}{s}"))
        .expect("double over strings");
    let mut numbers = registry();
    let double = numbers
        .register("double", |x: i64| x * 2)
        .expect("double over integers");
    let c = start(&key, "c", registry(), Resources::new(), None).await;
    let at = address(&c).await;
    let a = start(
        &key,
        "a",
        strings,
        Resources::new().cpu(2),
        Some(at.clone()),
    )
    .await;
    let b = start(&key, "b", numbers, Resources::new().cpu(2), Some(at)).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while c.node().discover_nodes().await.expect("nodes").len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "registered in time");
        let mut changes = c.peer_changes();
        let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
    }
    let typed = || {
        let mut dag = Dag::new();
        for i in 0..8_i64 {
            dag.add(handoff::Call::new(format!("d{i}"), &double, (i,)).with_cost(cpu()));
        }
        dag.validate().expect("valid")
    };
    // Spread over every node that may take them (both, if types did not count).
    let spread = ExecuteOptions::default().allocation_strategy(AllocationStrategy::LoadBalanced);
    let done = tokio::time::timeout(DEADLINE, c.node().execute(typed(), spread))
        .await
        .expect("in time")
        .expect("runs on b");
    for i in 0..8_i64 {
        assert_eq!(&done.allocations()[format!("d{i}").as_str()], b.id());
        assert_eq!(done.results.get::<i64>(&format!("d{i}")), Ok(2 * i));
    }
    drop(done);
    let b_id = b.id().clone();
    b.shutdown().await.expect("b stops");
    let mut changes = c.peer_changes();
    tokio::time::timeout(
        DEADLINE,
        changes.wait_for(|p| p.iter().all(|p| p.node != b_id)),
    )
    .await
    .expect("b seen gone")
    .expect("bridge");
    let err = tokio::time::timeout(
        DEADLINE,
        c.node().execute(typed(), ExecuteOptions::default()),
    )
    .await
    .expect("in time")
    .expect_err("only a, with other types");
    let ExecuteError::Rejected { problems, .. } = &err else {
        panic!("expected a rejection, got {err:?}");
    };
    assert!(
        problems.iter().any(|p| matches!(
            p,
            Problem::SignatureMismatch { function, found, .. }
                if function.as_str() == "d0" && found.len() == 1 && &found[0].0 == a.id()
                    && found[0].1.contains("String")
        )),
        "{problems:?}"
    );
}
