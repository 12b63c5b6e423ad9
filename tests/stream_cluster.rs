//! Streams across nodes (two cluster nodes in this process, over 127.0.0.1): a costed
//! stage's workers are placed by the allocator, one of them on the other node, whose
//! items travel there through request-response in bounded batches; results keep push
//! order; a stage pinned to the other node runs its init there, once per worker; the
//! workers placed elsewhere are closed when the stream stops.

// Clusters need the `net` feature (on by default).
#![cfg(feature = "net")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::guarded;
use futures::StreamExt;
use handoff::{
    ClusterKey, ClusterNode, Dag, Function, NetConfig, NodeConfig, NodeId, Registry, Resources,
    StartStreamError, StreamOptions, StreamOutput,
};

const DEADLINE: Duration = Duration::from_secs(30);

/// Calls of `square` on each node, and `load` (an init) on each node.
static SQUARED: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
static LOADED: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// The registry of node `k` (0 or 1): the same codes, counting where they ran.
fn registry(k: usize) -> Registry {
    let mut registry = Registry::new();
    registry
        .register("square", move |x: i64| {
            SQUARED[k].fetch_add(1, Ordering::SeqCst);
            x * x
        })
        .expect("square");
    registry.register("inc", |x: i64| x + 1).expect("inc");
    registry.register("double", |x: i64| 2 * x).expect("double");
    registry
        .register_init("load", move || {
            LOADED[k].fetch_add(1, Ordering::SeqCst);
            (k as i64) * 1000
        })
        .expect("load");
    registry
        .register_stateful("offset", |offset: &mut i64, x: i64| *offset + x)
        .expect("offset");
    registry
        .register_batch("sum_pairs", |xs: Vec<i64>| {
            xs.iter().map(|x| x + 1).collect::<Vec<i64>>()
        })
        .expect("sum_pairs");
    if k == 0 {
        // An init code only the first node has.
        registry
            .register_init("only_here", || 5_i64)
            .expect("only_here");
    }
    registry
}

async fn start(
    key: &ClusterKey,
    k: usize,
    bootstrap: Option<handoff::net::Multiaddr>,
) -> ClusterNode {
    let mut net = NetConfig::builder(key.clone())
        .name(format!("n{k}"))
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"));
    if let Some(address) = bootstrap {
        net = net.bootstrap(address);
    }
    let net = net.build().expect("config");
    let node = NodeConfig::new(net.node_id(), registry(k)).capabilities(Resources::new().cpu(1));
    guarded("start", ClusterNode::start(node, net))
        .await
        .expect("starts")
}

/// Two nodes of cpu 1 each, each registered with the other.
async fn pair() -> (ClusterNode, ClusterNode) {
    let key = ClusterKey::generate();
    let a = start(&key, 0, None).await;
    let at = a
        .client()
        .listen_addresses()
        .await
        .expect("addresses")
        .into_iter()
        .next()
        .expect("an address");
    let b = start(&key, 1, Some(at)).await;
    for node in [&a, &b] {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while node.node().discover_nodes().await.expect("nodes").len() < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not registered in time"
            );
            let mut changes = node.peer_changes();
            let _ = tokio::time::timeout(Duration::from_millis(200), changes.changed()).await;
        }
    }
    (a, b)
}

fn cpu() -> Resources {
    Resources::new().cpu(1)
}

/// The stage workers of `a`'s streams open on `b`, as `b` reports them.
async fn open_on(a: &ClusterNode, b: &NodeId) -> u64 {
    a.node_stats(b).await.expect("stats").stages
}

/// What `b` has free, as it reports it.
async fn free_on(a: &ClusterNode, b: &NodeId) -> Resources {
    a.node_stats(b).await.expect("stats").free
}

#[actix::test]
async fn a_stage_spread_over_two_nodes_keeps_push_order_and_closes_its_remote_worker() {
    let (a, b) = pair().await;
    // Two workers of cpu 1: one fits on `a`, the other goes to `b`.
    let dag = Dag::new()
        .with(Function::input("x"))
        .with(
            Function::new("square", "square")
                .arg("x")
                .with_cost(cpu())
                .parallelism(2),
        )
        .with(Function::new("inc", "inc").arg("square"))
        .validate()
        .expect("valid");
    let before = [
        SQUARED[0].load(Ordering::SeqCst),
        SQUARED[1].load(Ordering::SeqCst),
    ];
    let mut stream = guarded(
        "start",
        a.node().stream(dag, StreamOptions::new().chunk(16)),
    )
    .await
    .expect("start");
    let stats = stream.stats();
    let mut placed = stats.stages[0].nodes.clone();
    placed.sort();
    let mut both = vec![a.id().clone(), b.id().clone()];
    both.sort();
    assert_eq!(placed, both, "one worker on each node");
    assert_eq!(stats.stages[1].nodes, vec![a.id().clone()]);
    assert_eq!(open_on(&a, b.id()).await, 1);
    // b holds the worker's cpu on its own tracker too.
    assert_eq!(free_on(&a, b.id()).await, Resources::new().cpu(0));

    let mut results = stream.results().expect("results");
    let n = 3000_i64;
    let pushing = stream.push_all(0..n);
    let reading = async {
        let mut out = Vec::with_capacity(n as usize);
        while out.len() < n as usize {
            let next = results.next().await.expect("a result for every item");
            out.push(next.expect("no item error"));
        }
        out
    };
    let (pushed, out) = guarded("push and read", async { futures::join!(pushing, reading) }).await;
    pushed.expect("pushed");
    let seqs: Vec<u64> = out.iter().map(StreamOutput::seq).collect();
    assert_eq!(seqs, (0..n as u64).collect::<Vec<_>>(), "push order");
    let got: Vec<i64> = out
        .iter()
        .map(|o| o.get::<i64>().expect("an i64"))
        .collect();
    assert_eq!(got, (0..n).map(|x| x * x + 1).collect::<Vec<_>>());
    let ran = [
        SQUARED[0].load(Ordering::SeqCst) - before[0],
        SQUARED[1].load(Ordering::SeqCst) - before[1],
    ];
    assert_eq!(ran[0] + ran[1], n as usize);
    assert!(ran[0] > 0 && ran[1] > 0, "items ran on both nodes: {ran:?}");

    let stats = guarded("stop", stream.stop()).await;
    assert_eq!(stats.stages[0].items, n as u64);
    // The worker on `b` is closed and its cpu given back there, and `a` has its cpu back.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while open_on(&a, b.id()).await != 0 || free_on(&a, b.id()).await != cpu() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b's worker not closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        a.node()
            .resources_available(a.id().clone(), cpu())
            .await
            .expect("asked")
    );
}

#[actix::test]
async fn a_stage_pinned_to_the_other_node_runs_its_init_there_once_per_worker() {
    let (a, b) = pair().await;
    let dag = Dag::new()
        .with(Function::input("x"))
        // An inline function, evaluated where the stage runs.
        .with(Function::new("twice", "double").arg("x").inline())
        .with(
            Function::new("offset", "offset")
                .arg("twice")
                .init("load")
                .pinned(b.id().clone())
                .parallelism(2),
        )
        .with(
            Function::new("pairs", "sum_pairs")
                .arg("offset")
                .pinned(b.id().clone())
                .batch(10, Duration::from_millis(5)),
        )
        .validate()
        .expect("valid");
    let loaded_before = [
        LOADED[0].load(Ordering::SeqCst),
        LOADED[1].load(Ordering::SeqCst),
    ];
    let mut stream = guarded("start", a.node().stream(dag, StreamOptions::new()))
        .await
        .expect("start");
    assert_eq!(
        [
            LOADED[0].load(Ordering::SeqCst) - loaded_before[0],
            LOADED[1].load(Ordering::SeqCst) - loaded_before[1],
        ],
        [0, 2],
        "init ran on b, once per worker, when the stream started"
    );
    let mut results = stream.results().expect("results");
    guarded("push", stream.push_all(0..100_i64))
        .await
        .expect("pushed");
    let mut got = Vec::new();
    while got.len() < 100 {
        let next = guarded("next", results.next()).await.expect("a result");
        got.push(next.expect("no item error").get::<i64>().expect("an i64"));
    }
    // b's state is 1000: 2x + 1000, then + 1 in the batched stage.
    assert_eq!(got, (0..100).map(|x| 2 * x + 1001).collect::<Vec<_>>());
    let stats = guarded("stop", stream.stop()).await;
    assert_eq!(stats.stages[0].nodes, vec![b.id().clone(), b.id().clone()]);
    assert_eq!(stats.stages[1].nodes, vec![b.id().clone()]);
}

#[actix::test]
async fn a_remote_worker_that_cannot_open_stops_the_start() {
    let (a, b) = pair().await;
    let dag = Dag::new()
        .with(Function::input("x"))
        // `a` has the init code `only_here`; `b`, where the stage is pinned, does not.
        .with(
            Function::new("offset", "offset")
                .arg("x")
                .init("only_here")
                .pinned(b.id().clone()),
        )
        .validate()
        .expect("valid");
    let err = guarded("start", a.node().stream(dag, StreamOptions::new()))
        .await
        .expect_err("refused");
    match &err {
        StartStreamError::Init {
            function,
            worker: 0,
            error: handoff::CallError::UnknownCode { code },
        } => {
            assert_eq!(function.as_str(), "offset");
            assert_eq!(code.as_str(), "only_here");
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(open_on(&a, b.id()).await, 0, "nothing left open on b");
}
