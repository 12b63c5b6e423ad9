//! Surviving the loss of a node, with cluster nodes in this process over 127.0.0.1: a
//! node is "lost" when its network layer shuts down (its connections close, as when its
//! process dies). What it was running runs again elsewhere, values that lived only there
//! and are still needed are recomputed (two levels deep here), a function that must run
//! on it waits for it for the grace period and then fails naming it, and a node that comes
//! back with the same identity is used again.

// Clusters need the `net` feature (on by default).
#![cfg(feature = "net")]

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use handoff::net::Keypair;
use handoff::{
    AllocationError, AllocationStrategy, ClusterKey, ClusterNode, Dag, Event, EventKind,
    ExecuteError, ExecuteOptions, Function, NetConfig, NodeConfig, NodeId, Registry, Resources,
};

const DEADLINE: Duration = Duration::from_secs(30);

/// A gate functions wait at until the test opens it (or a deadline passes).
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn open(&self) {
        let (open, changed) = &*self.0;
        *open.lock().expect("gate") = true;
        changed.notify_all();
    }

    fn wait(&self) -> bool {
        let (open, changed) = &*self.0;
        let guard = open.lock().expect("gate");
        let (guard, _) = changed
            .wait_timeout_while(guard, DEADLINE, |open| !*open)
            .expect("gate");
        *guard
    }
}

fn registry(gate: &Gate) -> Registry {
    let mut registry = Registry::new();
    registry
        .register("make", |len: u64, fill: u8| {
            Bytes::from(vec![fill; len as usize])
        })
        .expect("make");
    registry
        .register("copy", |bytes: Bytes| Bytes::from(bytes.to_vec()))
        .expect("copy");
    registry
        .register("len", |bytes: Bytes| bytes.len() as u64)
        .expect("len");
    registry.register("inc", |x: u64| x + 1).expect("inc");
    registry
        .register("join", |bytes: Bytes, gate: u64| bytes.len() as u64 + gate)
        .expect("join");
    let gate = gate.clone();
    registry
        .register_fallible("gate", move || {
            if gate.wait() {
                Ok(1_u64)
            } else {
                Err("the gate never opened")
            }
        })
        .expect("gate");
    registry
}

struct Node {
    cluster: ClusterNode,
    keypair: Keypair,
}

async fn start_with(
    key: &ClusterKey,
    name: &str,
    keypair: Keypair,
    registry: Registry,
    capabilities: Resources,
    bootstrap: Option<handoff::net::Multiaddr>,
    grace: Duration,
) -> Node {
    let mut net = NetConfig::builder(key.clone())
        .name(name)
        .keypair(keypair.clone())
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"));
    if let Some(address) = bootstrap {
        net = net.bootstrap(address);
    }
    let net = net.build().expect("config");
    let node = NodeConfig::new(net.node_id(), registry)
        .capabilities(capabilities)
        .node_grace(grace);
    let cluster = tokio::time::timeout(DEADLINE, ClusterNode::start(node, net))
        .await
        .expect("starts in time")
        .expect("starts");
    Node { cluster, keypair }
}

/// A coordinator `c` offering nothing and two nodes joined through it, each with the
/// registry of `gate`, its name and its capabilities, all with `grace` for lost nodes.
async fn coordinator_and_two(
    key: &ClusterKey,
    gate: &Gate,
    grace: Duration,
    first: (&str, Resources),
    second: (&str, Resources),
) -> (Node, Node, Node) {
    let new = Keypair::generate_ed25519;
    let c = start_with(
        key,
        "c",
        new(),
        registry(gate),
        Resources::new(),
        None,
        grace,
    )
    .await;
    let at = address(&c.cluster).await;
    let (name, capabilities) = first;
    let a = start_with(
        key,
        name,
        new(),
        registry(gate),
        capabilities,
        Some(at.clone()),
        grace,
    )
    .await;
    let (name, capabilities) = second;
    let b = start_with(
        key,
        name,
        new(),
        registry(gate),
        capabilities,
        Some(at),
        grace,
    )
    .await;
    (c, a, b)
}

async fn address(node: &ClusterNode) -> handoff::net::Multiaddr {
    node.client()
        .listen_addresses()
        .await
        .expect("addresses")
        .into_iter()
        .next()
        .expect("one address")
}

/// Waits until `c`'s resource manager can run functions on every node in `nodes`.
async fn wait_executable(c: &ClusterNode, nodes: &[&NodeId]) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut changes = c.peer_changes();
    loop {
        let known = c.node().discover_nodes().await.expect("nodes");
        let peers = c.discover_nodes().await.expect("peers");
        if nodes
            .iter()
            .all(|n| known.iter().any(|(k, _)| k == *n) && peers.iter().any(|p| p.node == **n))
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never saw {nodes:?}: {known:?}"
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), changes.changed()).await;
    }
}

/// Picks `prefer` whenever the cost fits there now, else any node where it does.
struct Prefer(NodeId);

impl handoff::Allocator for Prefer {
    fn choose(&self, cost: Option<&Resources>, nodes: &[handoff::NodeView<'_>]) -> Option<usize> {
        nodes
            .iter()
            .position(|n| *n.id == self.0 && n.fits_now(cost))
            .or_else(|| nodes.iter().position(|n| n.fits_now(cost)))
    }
}

/// Reads events until one satisfies `pick`.
async fn until(events: &mut handoff::EventStream, what: &str, pick: impl Fn(&Event) -> bool) {
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(event) = events.next().await {
            if pick(&event) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no {what}");
}

fn cpu() -> Resources {
    Resources::new().cpu(1)
}

#[actix::test]
async fn values_lost_with_a_node_are_recomputed_two_levels_deep() {
    let gate = Gate::default();
    let key = ClusterKey::generate();
    let grace = Duration::from_secs(10);
    let (c, victim, survivor) = coordinator_and_two(
        &key,
        &gate,
        grace,
        ("victim", Resources::new().cpu(2)),
        ("survivor", Resources::new().cpu(2)),
    )
    .await;
    let (v, s) = (victim.cluster.id().clone(), survivor.cluster.id().clone());
    wait_executable(&c.cluster, &[&v, &s]).await;

    // l1 → l2 on the victim (100 kB each: they stay there); `hold` waits at the gate on
    // the survivor; `sink` needs l2 and `hold`.
    let dag = Dag::new()
        .with(
            Function::new("l1", "make")
                .extra_arg(100_000_u64)
                .extra_arg(4_u8)
                .with_cost(cpu()),
        )
        .with(Function::new("l2", "copy").arg("l1").with_cost(cpu()))
        .with(Function::new("hold", "gate").pinned(s.clone()))
        .with(
            Function::new("sink", "join")
                .args(["l2", "hold"])
                .with_cost(cpu()),
        )
        .validate()
        .expect("valid");
    let options = ExecuteOptions::default()
        .allocation_strategy(AllocationStrategy::Custom(Arc::new(Prefer(v.clone()))))
        .free_intermediates(["sink"])
        .events(4096);
    let mut handle = c
        .cluster
        .node()
        .submit(dag, options)
        .await
        .expect("submitted");
    let mut events = handle.events().expect("events");
    until(&mut events, "l2 stored on the victim", |e| {
        matches!(&e.kind, EventKind::Stored { function, node } if function.as_str() == "l2" && *node == v)
    })
    .await;

    // The victim goes away with l1 and l2; then `hold` finishes.
    victim.cluster.shutdown().await.expect("victim stops");
    until(
        &mut events,
        "the victim reported lost",
        |e| matches!(&e.kind, EventKind::NodeLost { node } if *node == v),
    )
    .await;
    gate.open();

    let mut recomputed = Vec::new();
    while let Some(event) = tokio::time::timeout(DEADLINE, events.next())
        .await
        .expect("events in time")
    {
        if let EventKind::Recomputing { function, node } = &event.kind {
            assert_eq!(node, &v);
            recomputed.push(function.as_str().to_owned());
        }
    }
    recomputed.sort();
    assert_eq!(recomputed, ["l1", "l2"]);
    let done = tokio::time::timeout(DEADLINE, handle)
        .await
        .expect("in time")
        .expect("completes");
    assert_eq!(done.results.get::<u64>("sink"), Ok(100_001));
    for f in ["l1", "l2", "sink"] {
        assert_eq!(done.allocations()[f], s, "{f} ran again on the survivor");
    }
}

#[actix::test]
async fn a_function_pinned_to_a_lost_node_fails_after_the_grace_period_naming_it() {
    let gate = Gate::default();
    let key = ClusterKey::generate();
    let grace = Duration::from_millis(300);
    let (c, gone, stays) = coordinator_and_two(
        &key,
        &gate,
        grace,
        ("gone", Resources::new().cpu(1)),
        ("stays", Resources::new().cpu(1)),
    )
    .await;
    let (g, s) = (gone.cluster.id().clone(), stays.cluster.id().clone());
    wait_executable(&c.cluster, &[&g, &s]).await;
    let dag = Dag::new()
        .with(Function::new("hold", "gate").pinned(s.clone()))
        .with(Function::new("there", "inc").arg("hold").pinned(g.clone()))
        .validate()
        .expect("valid");
    let err = fails_once_gone(&c, dag, gone, &gate).await;
    match err {
        ExecuteError::Allocation(AllocationError::NodeDown {
            function,
            node,
            grace: waited,
        }) => {
            assert_eq!(function.as_str(), "there");
            assert_eq!(node, g);
            assert_eq!(waited, grace);
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// The only node with a GPU leaves while a function that needs one waits: it fails
/// saying that the node that could hold it left, not that its cost is too large.
#[actix::test]
async fn a_cost_only_a_lost_node_could_hold_fails_naming_that_node() {
    let gate = Gate::default();
    let key = ClusterKey::generate();
    let grace = Duration::from_millis(300);
    let (c, gpu, stays) = coordinator_and_two(
        &key,
        &gate,
        grace,
        ("gpu", Resources::new().cpu(1).gpu(1)),
        ("stays", Resources::new().cpu(1)),
    )
    .await;
    let (g, s) = (gpu.cluster.id().clone(), stays.cluster.id().clone());
    wait_executable(&c.cluster, &[&g, &s]).await;
    let dag = Dag::new()
        .with(Function::new("hold", "gate").pinned(s.clone()))
        .with(
            Function::new("render", "inc")
                .arg("hold")
                .with_cost(Resources::new().gpu(1)),
        )
        .validate()
        .expect("valid");
    let err = fails_once_gone(&c, dag, gpu, &gate).await;
    match &err {
        ExecuteError::Allocation(AllocationError::NodesLeft {
            function,
            cost,
            nodes,
            names,
        }) => {
            assert_eq!(function.as_str(), "render");
            assert_eq!(cost, &Resources::new().gpu(1));
            assert_eq!(nodes, std::slice::from_ref(&g));
            assert_eq!(names, &["gpu".to_owned()], "named as it announced itself");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("only nodes that left the cluster could hold"),
        "{err}"
    );
}

#[actix::test]
async fn a_node_that_comes_back_within_the_grace_period_gets_its_work() {
    let gate = Gate::default();
    let key = ClusterKey::generate();
    let grace = Duration::from_secs(20);
    let c = start_with(
        &key,
        "c",
        Keypair::generate_ed25519(),
        registry(&gate),
        Resources::new(),
        None,
        grace,
    )
    .await;
    let at = address(&c.cluster).await;
    let keypair = Keypair::generate_ed25519();
    let first = start_with(
        &key,
        "back",
        keypair,
        registry(&gate),
        Resources::new().cpu(1),
        Some(at.clone()),
        grace,
    )
    .await;
    let stays = start_with(
        &key,
        "stays",
        Keypair::generate_ed25519(),
        registry(&gate),
        Resources::new().cpu(1),
        Some(at.clone()),
        grace,
    )
    .await;
    let (b, s) = (first.cluster.id().clone(), stays.cluster.id().clone());
    wait_executable(&c.cluster, &[&b, &s]).await;
    let dag = Dag::new()
        .with(Function::new("hold", "gate").pinned(s.clone()))
        .with(Function::new("there", "inc").arg("hold").pinned(b.clone()))
        .validate()
        .expect("valid");
    let handle = c
        .cluster
        .node()
        .submit(dag, ExecuteOptions::default())
        .await
        .expect("submitted");
    let keypair = first.keypair.clone();
    first.cluster.shutdown().await.expect("stops");
    let mut changes = c.cluster.peer_changes();
    tokio::time::timeout(
        DEADLINE,
        changes.wait_for(|peers| peers.iter().all(|p| p.node != b)),
    )
    .await
    .expect("seen gone in time")
    .expect("bridge");
    // `there` waits for its node; the node comes back (same identity, new address).
    let again = start_with(
        &key,
        "back",
        keypair,
        registry(&gate),
        Resources::new().cpu(1),
        Some(at),
        grace,
    )
    .await;
    assert_eq!(again.cluster.id(), &b);
    wait_executable(&c.cluster, &[&b]).await;
    gate.open();
    let err_or_done = tokio::time::timeout(DEADLINE, handle)
        .await
        .expect("in time");
    let done = err_or_done.expect("runs on the node that came back");
    assert_eq!(done.allocations()["there"], b);
    assert_eq!(done.results.get::<u64>("there"), Ok(2));
}

/// Polls `check` until it holds or the deadline passes (nothing tells the test when a
/// worker has cleaned up, so it looks).
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix::test]
async fn a_worker_drops_the_work_and_values_of_a_coordinator_that_died() {
    let gate = Gate::default();
    let key = ClusterKey::generate();
    let grace = Duration::from_millis(300);
    let c = start_with(
        &key,
        "c",
        Keypair::generate_ed25519(),
        registry(&gate),
        Resources::new(),
        None,
        grace,
    )
    .await;
    let at = address(&c.cluster).await;
    let w = start_with(
        &key,
        "w",
        Keypair::generate_ed25519(),
        registry(&gate),
        Resources::new().cpu(2),
        Some(at),
        grace,
    )
    .await;
    let wid = w.cluster.id().clone();
    wait_executable(&c.cluster, &[&wid]).await;
    // A value stored on the worker, a call held at the gate there, and one waiting for
    // the cpu the others hold.
    let dag = Dag::new()
        .with(
            Function::new("big", "make")
                .extra_arg(100_000_u64)
                .extra_arg(1_u8)
                .pinned(wid.clone()),
        )
        .with(
            Function::new("held", "gate")
                .with_cost(cpu())
                .pinned(wid.clone()),
        )
        .with(
            Function::new("also", "gate")
                .with_cost(cpu())
                .pinned(wid.clone()),
        )
        .with(
            Function::new("queued", "len")
                .arg("big")
                .with_cost(Resources::new().cpu(2))
                .pinned(wid.clone()),
        )
        .validate()
        .expect("valid");
    let mut handle = c
        .cluster
        .node()
        .submit(dag, ExecuteOptions::default().events(1024))
        .await
        .expect("submitted");
    let mut events = handle.events().expect("events");
    until(
        &mut events,
        "big stored on the worker",
        |e| matches!(&e.kind, EventKind::Stored { function, .. } if function.as_str() == "big"),
    )
    .await;
    let worker = w.cluster.node().clone();
    eventually("both gated calls hold the worker's cpu", async || {
        let (_, free) = worker
            .node_resources(wid.clone())
            .await
            .expect("resources")
            .expect("known");
        free.get("cpu") == handoff::Amount::ZERO
    })
    .await;
    assert_eq!(worker.stored_values().await.expect("count"), 1);

    // The coordinator dies; after the grace period the worker drops everything of it.
    drop(handle);
    c.cluster.shutdown().await.expect("coordinator stops");
    eventually(
        "the worker dropped the dead coordinator's value",
        async || worker.stored_values().await.expect("count") == 0,
    )
    .await;
    // The gated calls end; what they return is not stored, and the cpu comes back, the
    // queued call's wait withdrawn.
    gate.open();
    eventually("the worker's cpu is all free again", async || {
        let (capacity, free) = worker
            .node_resources(wid.clone())
            .await
            .expect("resources")
            .expect("known");
        free == capacity
    })
    .await;
    assert_eq!(worker.stored_values().await.expect("count"), 0);
}

/// Submits `dag` on `c` while `gone` is there, stops `gone`, waits until `c` has seen it
/// leave, opens `gate` (the DAG's first function waits on it) and returns the DAG's error.
async fn fails_once_gone(
    c: &Node,
    dag: handoff::ValidatedDag,
    gone: Node,
    gate: &Gate,
) -> ExecuteError {
    let handle = c
        .cluster
        .node()
        .submit(dag, ExecuteOptions::default())
        .await
        .expect("submitted while the node is there");
    let g = gone.cluster.id().clone();
    gone.cluster.shutdown().await.expect("stops");
    let mut changes = c.cluster.peer_changes();
    tokio::time::timeout(
        DEADLINE,
        changes.wait_for(|peers| peers.iter().all(|p| p.node != g)),
    )
    .await
    .expect("seen gone in time")
    .expect("bridge");
    gate.open();
    tokio::time::timeout(DEADLINE, handle)
        .await
        .expect("in time")
        .expect_err("fails")
}
