//! Resource-aware scheduling through the `handoff` facade: never above capacity, the
//! capacity really used, fractional costs, worker-slot parallelism, placement errors,
//! custom trackers and allocators, and every reservation given back.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{Gauge, Rendezvous, busy_work, guarded, seed_registry, start_local};
use handoff::{
    AllocationError, AllocationStrategy, Allocator, Dag, ExecuteOptions, Function, NodeConfig,
    NodeHandle, NodeId, NodeView, Problem, RegisterNodeError, Registry, ReleaseError, RequestError,
    ResourceTracker, Resources, SimpleResourceTracker, ValidatedDag, start_node,
};

fn local() -> NodeId {
    NodeId::new("local")
}

/// A registry with `gauged`, which runs a little busy work under `gauge`, and `meet`,
/// which waits at `rendezvous` and returns whether everyone met.
fn gauged_registry(gauge: &Arc<Gauge>, rendezvous: &Arc<Rendezvous>) -> Registry {
    let mut registry = Registry::new();
    let g = Arc::clone(gauge);
    registry
        .register("gauged", move |i: i64| {
            g.run(|| {
                busy_work();
                i
            })
        })
        .expect("register");
    let (g, r) = (Arc::clone(gauge), Arc::clone(rendezvous));
    registry
        .register("meet", move |i: i64| g.run(|| (i, r.arrive())))
        .expect("register");
    registry
}

/// `n` independent functions running `code`, each with `cost` if given.
fn independent(n: i64, code: &str, cost: Option<Resources>) -> ValidatedDag {
    let mut dag = Dag::new();
    for i in 0..n {
        let mut f = Function::new(format!("f{i}"), code).extra_arg(i);
        if let Some(cost) = &cost {
            f = f.with_cost(cost.clone());
        }
        dag.add_function(f);
    }
    dag.validate().expect("valid DAG")
}

async fn assert_all_released(node: &NodeHandle) {
    let (capacity, available) = guarded("node_resources", node.node_resources(local()))
        .await
        .expect("node alive")
        .expect("the local node is registered");
    assert_eq!(available, capacity, "every reservation was given back");
}

#[actix::test]
async fn costed_functions_never_run_above_capacity() {
    let gauge = Arc::new(Gauge::default());
    let registry = gauged_registry(&gauge, &Arc::new(Rendezvous::new(1)));
    let node = start_local(registry, Resources::new().cpu(4)).await;
    let dag = independent(100, "gauged", Some(Resources::new().cpu(1)));
    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
    assert_eq!(done.results.len(), 100);
    assert_eq!(gauge.finished(), 100, "every function ran");
    assert!(gauge.max() <= 4, "{} ran at once on 4 cpus", gauge.max());
    assert!(gauge.max() >= 1);
    assert_all_released(&node).await;
}

#[actix::test]
async fn mixed_costs_and_chains_never_exceed_capacity() {
    // The gauge counts hundredths of a cpu; chains of equal cost run back to back
    // under one reservation, and must still count against the capacity.
    let gauge = Arc::new(Gauge::default());
    let mut registry = Registry::new();
    let g = Arc::clone(&gauge);
    registry
        .register("weighted", move |hundredths: usize| {
            g.run_weighted(hundredths, busy_work);
            hundredths
        })
        .expect("register");
    let g = Arc::clone(&gauge);
    registry
        .register("next", move |hundredths: usize| {
            g.run_weighted(hundredths, busy_work);
            hundredths
        })
        .expect("register");
    let node = start_local(registry, Resources::new().cpu(3)).await;
    let mut dag = Dag::new();
    for i in 0..30_usize {
        let hundredths = [100, 50, 200, 25, 300][i % 5];
        let cost = Resources::new().cpu(hundredths as f64 / 100.0);
        let root = format!("root{i}");
        dag.add_function(
            Function::new(root.as_str(), "weighted")
                .extra_arg(hundredths)
                .with_cost(cost.clone()),
        );
        let mut previous = root;
        for step in 0..3 {
            let id = format!("chain{i}_{step}");
            dag.add_function(
                Function::new(id.as_str(), "next")
                    .arg(previous.as_str())
                    .with_cost(cost.clone()),
            );
            previous = id;
        }
    }
    let dag = dag.validate().expect("valid DAG");
    let done = guarded("execute", start_and_run(&node, dag)).await;
    assert_eq!(done, 120);
    assert_eq!(gauge.finished(), 120, "every function ran");
    assert!(
        gauge.max() <= 300,
        "{} hundredths of a cpu in use on a 3-cpu node",
        gauge.max()
    );
    assert_all_released(&node).await;
}

async fn start_and_run(node: &NodeHandle, dag: ValidatedDag) -> usize {
    node.execute(dag, ExecuteOptions::default())
        .await
        .expect("runs")
        .results
        .len()
}

#[actix::test]
async fn costed_functions_use_the_whole_capacity_at_once() {
    // Four functions of cpu 1 on a node with cpu 4 must all be running at the same
    // time: each waits until all four have started.
    let gauge = Arc::new(Gauge::default());
    let rendezvous = Arc::new(Rendezvous::new(4));
    let node = start_local(
        gauged_registry(&gauge, &rendezvous),
        Resources::new().cpu(4),
    )
    .await;
    let dag = independent(4, "meet", Some(Resources::new().cpu(1)));
    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
    for i in 0..4 {
        let (_, met) = done
            .results
            .get::<(i64, bool)>(&format!("f{i}"))
            .expect("a result");
        assert!(met, "f{i} never saw four functions running at once");
    }
    assert_eq!(gauge.max(), 4);
}

#[actix::test]
async fn fractional_costs_share_a_cpu() {
    let gauge = Arc::new(Gauge::default());
    let rendezvous = Arc::new(Rendezvous::new(2));
    let node = start_local(
        gauged_registry(&gauge, &rendezvous),
        Resources::new().cpu(1),
    )
    .await;
    let half = Resources::new().cpu(0.5);

    let dag = independent(2, "meet", Some(half.clone()));
    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
    for i in 0..2 {
        let (_, met) = done
            .results
            .get::<(i64, bool)>(&format!("f{i}"))
            .expect("a result");
        assert!(met, "two halves of a cpu run at once");
    }

    let gauge_many = Arc::new(Gauge::default());
    let node = node_with_gauge(&gauge_many, Resources::new().cpu(1)).await;
    let dag = independent(40, "gauged", Some(half));
    guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
    assert_eq!(gauge_many.finished(), 40);
    assert!(
        gauge_many.max() <= 2,
        "{} halves on one cpu",
        gauge_many.max()
    );
    assert_all_released(&node).await;
}

async fn node_with_gauge(gauge: &Arc<Gauge>, capabilities: Resources) -> NodeHandle {
    start_local(
        gauged_registry(gauge, &Arc::new(Rendezvous::new(1))),
        capabilities,
    )
    .await
}

#[actix::test]
async fn uncosted_functions_respect_the_executions_parallelism() {
    let gauge = Arc::new(Gauge::default());
    let node = node_with_gauge(&gauge, Resources::new().cpu(64)).await;
    let dag = independent(100, "gauged", None);
    guarded(
        "execute",
        node.execute(dag, ExecuteOptions::default().parallelism(2)),
    )
    .await
    .expect("runs");
    assert_eq!(gauge.finished(), 100);
    assert!(
        gauge.max() <= 2,
        "{} ran at once with parallelism 2",
        gauge.max()
    );

    // And two of them really do run at once.
    let gauge = Arc::new(Gauge::default());
    let rendezvous = Arc::new(Rendezvous::new(2));
    let node = start_local(gauged_registry(&gauge, &rendezvous), Resources::new()).await;
    let done = guarded(
        "execute",
        node.execute(
            independent(2, "meet", None),
            ExecuteOptions::default().parallelism(2),
        ),
    )
    .await
    .expect("runs");
    for i in 0..2 {
        let (_, met) = done
            .results
            .get::<(i64, bool)>(&format!("f{i}"))
            .expect("a result");
        assert!(met, "parallelism 2 runs two functions at once");
    }
}

#[actix::test]
async fn the_nodes_parallelism_is_the_default_and_options_override_it() {
    let gauge = Arc::new(Gauge::default());
    let registry = gauged_registry(&gauge, &Arc::new(Rendezvous::new(1)));
    let node = guarded(
        "start_node",
        start_node(NodeConfig::new("local", registry).parallelism(3)),
    )
    .await
    .expect("node starts");
    guarded(
        "execute",
        node.execute(independent(60, "gauged", None), ExecuteOptions::default()),
    )
    .await
    .expect("runs");
    assert_eq!(gauge.finished(), 60);
    assert!(
        gauge.max() <= 3,
        "{} ran at once on a node of parallelism 3",
        gauge.max()
    );

    // A node of parallelism 1 runs two at once when the execution asks for 2.
    let rendezvous = Arc::new(Rendezvous::new(2));
    let registry = gauged_registry(&Arc::new(Gauge::default()), &rendezvous);
    let node = guarded(
        "start_node",
        start_node(NodeConfig::new("serial", registry).parallelism(1)),
    )
    .await
    .expect("node starts");
    let done = guarded(
        "execute",
        node.execute(
            independent(2, "meet", None),
            ExecuteOptions::default().parallelism(2),
        ),
    )
    .await
    .expect("runs");
    for i in 0..2 {
        let (_, met) = done
            .results
            .get::<(i64, bool)>(&format!("f{i}"))
            .expect("a result");
        assert!(met, "the execution's parallelism overrides the node's");
    }
}

#[actix::test]
async fn parallelism_one_runs_uncosted_functions_one_at_a_time() {
    let gauge = Arc::new(Gauge::default());
    let node = node_with_gauge(&gauge, Resources::new()).await;
    guarded(
        "execute",
        node.execute(
            independent(50, "gauged", None),
            ExecuteOptions::default().parallelism(1),
        ),
    )
    .await
    .expect("runs");
    assert_eq!(gauge.finished(), 50);
    assert_eq!(gauge.max(), 1);
}

#[actix::test]
async fn a_cost_no_node_can_hold_is_refused_before_anything_runs() {
    let gauge = Arc::new(Gauge::default());
    let node = node_with_gauge(&gauge, Resources::new().cpu(2).memory(512)).await;
    let dag = Dag::new()
        .with(Function::new("cheap", "gauged").extra_arg(1_i64))
        .with(
            Function::new("heavy", "gauged")
                .extra_arg(2_i64)
                .with_cost(Resources::new().cpu(3).memory(100)),
        )
        .validate()
        .expect("valid DAG");
    let err = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect_err("cpu 3 fits no node");
    assert_eq!(
        common::only_problem(&err),
        Problem::Allocation(AllocationError::Unsatisfiable {
            function: "heavy".into(),
            cost: Resources::new().cpu(3).memory(100),
            best_node: Some(local()),
            best_capacity: Some(Resources::new().cpu(2).memory(512)),
            best_name: None,
        })
    );
    assert!(err.to_string().contains("heavy"), "{err}");
    assert_eq!(gauge.finished(), 0, "nothing ran");
    assert_all_released(&node).await;
}

#[actix::test]
async fn a_resource_the_node_lacks_is_unsatisfiable() {
    let gauge = Arc::new(Gauge::default());
    let node = node_with_gauge(&gauge, Resources::new().cpu(8)).await;
    let dag = Dag::new()
        .with(
            Function::new("trainer", "gauged")
                .extra_arg(1_i64)
                .with_cost(Resources::new().cpu(1).gpu(1)),
        )
        .validate()
        .expect("valid DAG");
    let err = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect_err("no gpu anywhere");
    match common::only_problem(&err) {
        Problem::Allocation(AllocationError::Unsatisfiable {
            function,
            best_node,
            ..
        }) => {
            assert_eq!(function.as_str(), "trainer");
            assert_eq!(best_node, Some(local()));
        }
        other => panic!("expected Unsatisfiable, got {other:?}"),
    }
    assert_eq!(gauge.finished(), 0);
}

#[actix::test]
async fn unknown_code_and_wrong_arity_are_typed_errors() {
    let gauge = Arc::new(Gauge::default());
    let node = node_with_gauge(&gauge, Resources::new().cpu(1)).await;

    let dag = Dag::new()
        .with(Function::new("ok", "gauged").extra_arg(1_i64))
        .with(Function::new("mystery", "no_such_code").arg("ok"))
        .validate()
        .expect("valid DAG");
    let err = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect_err("unknown code");
    assert_eq!(
        common::only_problem(&err),
        Problem::UnknownCode {
            function: "mystery".into(),
            code: "no_such_code".into(),
            nearest: None,
            registered_on: Vec::new(),
            registered_names: Vec::new(),
        }
    );

    let dag = Dag::new()
        .with(Function::new("ok", "gauged").extra_arg(1_i64))
        .with(
            Function::new("too_many", "gauged")
                .arg("ok")
                .extra_arg(2_i64),
        )
        .validate()
        .expect("valid DAG");
    let err = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect_err("wrong arity");
    assert_eq!(
        common::only_problem(&err),
        Problem::ArityMismatch {
            function: "too_many".into(),
            code: "gauged".into(),
            expected: 1,
            given: 2,
        }
    );

    let dag = Dag::new()
        .with(Function::new("a", "gauged").extra_arg(1_i64))
        .with(Function::new("b", "gauged").extra_arg(2_i64))
        .with(
            Function::new("list", "gauged")
                .args(["a", "b"])
                .as_list()
                .extra_arg(3_i64),
        )
        .validate()
        .expect("valid DAG");
    let err = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect_err("one list plus one extra arg is two arguments");
    assert!(
        matches!(common::only_problem(&err), Problem::ArityMismatch { ref function, expected: 1, given: 2, .. } if function.as_str() == "list"),
        "{err:?}"
    );
    assert_eq!(gauge.finished(), 0, "nothing ran");
}

#[actix::test]
async fn pinning_to_an_unknown_node_is_a_typed_error() {
    let gauge = Arc::new(Gauge::default());
    let node = node_with_gauge(&gauge, Resources::new().cpu(2)).await;
    let dag = Dag::new()
        .with(Function::new("first", "gauged").extra_arg(1_i64))
        .with(
            Function::new("lost", "gauged")
                .extra_arg(2_i64)
                .pinned("ghost"),
        )
        .validate()
        .expect("valid DAG");
    let err = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect_err("no node `ghost`");
    assert_eq!(
        common::only_problem(&err),
        Problem::Allocation(AllocationError::UnknownNode {
            function: "lost".into(),
            node: "ghost".into(),
        })
    );
    assert_eq!(gauge.finished(), 0, "nothing ran");
}

#[actix::test]
async fn pinning_to_a_node_that_cannot_run_functions_here_is_a_typed_error() {
    // `remote` is registered (its capacity is known) but this node has no way to send
    // it work: the execution must fail with a typed error rather than wait forever.
    let gauge = Arc::new(Gauge::default());
    let node = node_with_gauge(&gauge, Resources::new().cpu(2)).await;
    guarded(
        "register_node",
        node.register_node("remote", Resources::new().cpu(16)),
    )
    .await
    .expect("registered");
    let dag = Dag::new()
        .with(
            Function::new("there", "gauged")
                .extra_arg(1_i64)
                .with_cost(Resources::new().cpu(1))
                .pinned("remote"),
        )
        .validate()
        .expect("valid DAG");
    let err = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect_err("remote cannot run functions for this node");
    assert!(
        matches!(
            common::only_problem(&err),
            Problem::Allocation(AllocationError::UnknownNode { ref function, ref node })
                if function.as_str() == "there" && node.as_str() == "remote"
        ),
        "{err:?}"
    );
    assert_eq!(gauge.finished(), 0);
}

#[actix::test]
async fn pinned_to_the_local_node_and_collocated_functions_run_here() {
    let node = start_local(seed_registry(), Resources::new().cpu(2)).await;
    let dag = Dag::new()
        .with(
            Function::new("source", "identity")
                .extra_arg(42_i64)
                .pinned("local")
                .with_cost(Resources::new().cpu(1)),
        )
        .with(
            Function::new("transform", "multiply")
                .arg("source")
                .extra_arg(2_i64)
                .collocated_with("source")
                .with_cost(Resources::new().cpu(1)),
        )
        .with(
            Function::new("sink", "format_output")
                .arg("transform")
                .collocated_with("transform"),
        )
        .with(
            Function::new("free", "identity")
                .extra_arg(1_i64)
                .pinned("local"),
        )
        .validate()
        .expect("valid DAG");
    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
    assert_eq!(
        done.results.get::<String>("sink").as_deref(),
        Ok("The final answer is: 84")
    );
    let allocations = done.allocations();
    assert_eq!(allocations.get("source"), Some(&local()));
    assert_eq!(allocations.get("transform"), allocations.get("source"));
    assert_eq!(allocations.get("sink"), allocations.get("source"));
    assert_eq!(allocations.get("free"), Some(&local()));
    assert_all_released(&node).await;
}

#[actix::test]
async fn a_function_collocated_with_a_ghost_pinned_function_is_refused() {
    let gauge = Arc::new(Gauge::default());
    let node = node_with_gauge(&gauge, Resources::new().cpu(2)).await;
    let dag = Dag::new()
        .with(
            Function::new("anchor", "gauged")
                .extra_arg(1_i64)
                .pinned("ghost"),
        )
        .with(
            Function::new("follower", "gauged")
                .extra_arg(2_i64)
                .collocated_with("anchor"),
        )
        .validate()
        .expect("valid DAG");
    let err = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect_err("the group is pinned to a ghost");
    assert!(
        matches!(common::only_problem(&err), Problem::Allocation(AllocationError::UnknownNode { ref node, .. }) if node.as_str() == "ghost"),
        "{err:?}"
    );
    assert_eq!(gauge.finished(), 0);
}

#[actix::test]
async fn resources_are_released_after_a_mixed_execution() {
    let node = start_local(seed_registry(), Resources::new().cpu(3).memory(300)).await;
    let mut dag = Dag::new().with(Function::new("root", "identity").extra_arg(1_i64));
    for i in 0..30_i64 {
        let cost = match i % 3 {
            0 => Resources::new().cpu(1),
            1 => Resources::new().cpu(0.25).memory(100),
            _ => Resources::new().memory(300),
        };
        dag.add_function(
            Function::new(format!("f{i}"), "multiply")
                .arg("root")
                .extra_arg(i)
                .with_cost(cost),
        );
    }
    let dag = dag.validate().expect("valid DAG");
    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
    assert_eq!(done.results.get::<i64>("f29"), Ok(29));
    assert_all_released(&node).await;
    assert_eq!(
        guarded(
            "resources_available",
            node.resources_available("local", Resources::new().cpu(3).memory(300))
        )
        .await,
        Ok(true)
    );
}

/// Counts the reservations made and given back through it.
struct CountingTracker {
    inner: SimpleResourceTracker,
    requests: Arc<AtomicUsize>,
    releases: Arc<AtomicUsize>,
}

impl ResourceTracker for CountingTracker {
    fn register(&mut self, node: NodeId, capabilities: Resources) -> Result<(), RegisterNodeError> {
        self.inner.register(node, capabilities)
    }
    fn capabilities(&self, node: &NodeId) -> Option<Resources> {
        self.inner.capabilities(node)
    }
    fn available(&self, node: &NodeId) -> Option<Resources> {
        self.inner.available(node)
    }
    fn request(&mut self, node: &NodeId, cost: &Resources) -> Result<(), RequestError> {
        self.inner.request(node, cost)?;
        self.requests.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn release(&mut self, node: &NodeId, cost: &Resources) -> Result<(), ReleaseError> {
        self.inner.release(node, cost)?;
        self.releases.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn nodes(&self) -> Vec<NodeId> {
        self.inner.nodes()
    }
}

#[actix::test]
async fn a_custom_tracker_is_used_for_every_reservation() {
    let requests = Arc::new(AtomicUsize::new(0));
    let releases = Arc::new(AtomicUsize::new(0));
    let tracker = CountingTracker {
        inner: SimpleResourceTracker::new(),
        requests: Arc::clone(&requests),
        releases: Arc::clone(&releases),
    };
    let gauge = Arc::new(Gauge::default());
    let registry = gauged_registry(&gauge, &Arc::new(Rendezvous::new(1)));
    let node = guarded(
        "start_node",
        start_node(
            NodeConfig::new("local", registry)
                .capabilities(Resources::new().cpu(2))
                .tracker(tracker),
        ),
    )
    .await
    .expect("node starts");

    let dag = independent(10, "gauged", Some(Resources::new().cpu(1)));
    guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
    assert_eq!(gauge.finished(), 10);
    let (requested, released) = (
        requests.load(Ordering::SeqCst),
        releases.load(Ordering::SeqCst),
    );
    assert!(
        requested > 0,
        "the custom tracker was asked for reservations"
    );
    assert_eq!(requested, released, "every reservation was given back");
    // A reservation runs the waiting calls of its shape too: at most one per call.
    assert!(
        requested <= 10,
        "{requested} reservations for 10 costed functions"
    );
    assert!(gauge.max() <= 2);
    assert_all_released(&node).await;
}

/// Offers at most `quota` of each resource, whatever the node registers.
struct QuotaTracker {
    inner: SimpleResourceTracker,
    quota: Resources,
}

impl ResourceTracker for QuotaTracker {
    fn register(&mut self, node: NodeId, capabilities: Resources) -> Result<(), RegisterNodeError> {
        let capped = capabilities
            .iter()
            .map(|(name, amount)| (name.clone(), amount.min(self.quota.get(name))))
            .collect();
        self.inner.register(node, capped)
    }
    fn capabilities(&self, node: &NodeId) -> Option<Resources> {
        self.inner.capabilities(node)
    }
    fn available(&self, node: &NodeId) -> Option<Resources> {
        self.inner.available(node)
    }
    fn request(&mut self, node: &NodeId, cost: &Resources) -> Result<(), RequestError> {
        self.inner.request(node, cost)
    }
    fn release(&mut self, node: &NodeId, cost: &Resources) -> Result<(), ReleaseError> {
        self.inner.release(node, cost)
    }
    fn nodes(&self) -> Vec<NodeId> {
        self.inner.nodes()
    }
}

#[actix::test]
async fn a_custom_tracker_governs_what_may_run() {
    let gauge = Arc::new(Gauge::default());
    let registry = gauged_registry(&gauge, &Arc::new(Rendezvous::new(1)));
    let node = guarded(
        "start_node",
        start_node(
            NodeConfig::new("local", registry)
                .capabilities(Resources::new().cpu(8))
                .tracker(QuotaTracker {
                    inner: SimpleResourceTracker::new(),
                    quota: Resources::new().cpu(1),
                }),
        ),
    )
    .await
    .expect("node starts");
    let dag = independent(30, "gauged", Some(Resources::new().cpu(1)));
    guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
    assert_eq!(gauge.finished(), 30);
    assert_eq!(gauge.max(), 1, "the tracker offers one cpu, not eight");

    let dag = independent(1, "gauged", Some(Resources::new().cpu(2)));
    let err = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect_err("cpu 2 is above the tracker's capacity");
    assert!(
        matches!(
            common::only_problem(&err),
            Problem::Allocation(AllocationError::Unsatisfiable { .. })
        ),
        "{err:?}"
    );
}

/// Records every node list it is offered and picks the last node.
#[derive(Default)]
struct RecordingAllocator {
    offers: Mutex<Vec<Vec<NodeId>>>,
}

impl Allocator for RecordingAllocator {
    fn choose(&self, _cost: Option<&Resources>, nodes: &[NodeView<'_>]) -> Option<usize> {
        self.offers
            .lock()
            .expect("lock")
            .push(nodes.iter().map(|n| n.id.clone()).collect());
        nodes.len().checked_sub(1)
    }
}

#[actix::test]
async fn a_custom_allocator_is_consulted() {
    let allocator = Arc::new(RecordingAllocator::default());
    let node = start_local(seed_registry(), Resources::new().cpu(2)).await;
    let cost = Resources::new().cpu(1);
    let dag = Dag::new()
        .with(
            Function::new("source", "identity")
                .extra_arg(42_i64)
                .with_cost(cost.clone()),
        )
        .with(
            Function::new("transform", "multiply")
                .arg("source")
                .extra_arg(2_i64)
                .with_cost(Resources::new().cpu(2)),
        )
        .with(
            Function::new("sink", "format_output")
                .arg("transform")
                .with_cost(cost),
        )
        .validate()
        .expect("valid DAG");
    let strategy = AllocationStrategy::Custom(allocator.clone());
    let done = guarded(
        "execute",
        node.execute(dag, ExecuteOptions::default().allocation_strategy(strategy)),
    )
    .await
    .expect("runs");
    assert_eq!(
        done.results.get::<String>("sink").as_deref(),
        Ok("The final answer is: 84")
    );
    let offers = allocator.offers.lock().expect("lock").clone();
    assert!(
        offers.len() >= 3,
        "asked once per costed function at least, got {offers:?}"
    );
    for offer in &offers {
        assert_eq!(offer, &vec![local()], "only nodes that can run functions");
    }
    for (function, ran_on) in done.allocations() {
        assert_eq!(ran_on, local(), "{function}");
    }
}

/// Says "not now" unless the cost fits right now.
#[derive(Default)]
struct PatientAllocator {
    declined: AtomicUsize,
}

impl Allocator for PatientAllocator {
    fn choose(&self, cost: Option<&Resources>, nodes: &[NodeView<'_>]) -> Option<usize> {
        let pick = nodes.iter().position(|n| n.fits_now(cost));
        if pick.is_none() {
            self.declined.fetch_add(1, Ordering::SeqCst);
        }
        pick
    }
}

#[actix::test]
async fn a_custom_allocator_saying_not_now_is_asked_again_when_capacity_frees() {
    let allocator = Arc::new(PatientAllocator::default());
    let gauge = Arc::new(Gauge::default());
    let node = node_with_gauge(&gauge, Resources::new().cpu(1)).await;
    let dag = independent(5, "gauged", Some(Resources::new().cpu(1)));
    let strategy = AllocationStrategy::Custom(allocator.clone());
    let done = guarded(
        "execute",
        node.execute(dag, ExecuteOptions::default().allocation_strategy(strategy)),
    )
    .await
    .expect("runs");
    assert_eq!(done.results.len(), 5);
    assert_eq!(gauge.max(), 1);
    assert!(
        allocator.declined.load(Ordering::SeqCst) > 0,
        "five cpu-1 functions on one cpu: the allocator must have declined some offers"
    );
    assert_all_released(&node).await;
}

#[actix::test]
async fn built_in_strategies_run_the_same_dag() {
    for strategy in [
        AllocationStrategy::FirstAvailable,
        AllocationStrategy::LoadBalanced,
    ] {
        let node = start_local(seed_registry(), Resources::new().cpu(2)).await;
        let dag = Dag::new()
            .with(
                Function::new("source", "identity")
                    .extra_arg(42_i64)
                    .with_cost(Resources::new().cpu(1)),
            )
            .with(
                Function::new("transform", "multiply")
                    .arg("source")
                    .extra_arg(2_i64)
                    .with_cost(Resources::new().cpu(0.5)),
            )
            .validate()
            .expect("valid DAG");
        let done = guarded(
            "execute",
            node.execute(
                dag,
                ExecuteOptions::default().allocation_strategy(strategy.clone()),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{strategy:?}: {e}"));
        assert_eq!(done.results.get::<i64>("transform"), Ok(84), "{strategy:?}");
        assert_all_released(&node).await;
    }
}

#[actix::test]
async fn node_capacity_is_reported_and_updatable() {
    let node = start_local(seed_registry(), Resources::new().cpu(2).memory(1024)).await;
    assert_eq!(
        guarded("discover_nodes", node.discover_nodes()).await,
        Ok(vec![(local(), Resources::new().cpu(2).memory(1024))])
    );
    guarded(
        "register_node",
        node.register_node("peer", Resources::new().gpu(1)),
    )
    .await
    .expect("registered");
    let nodes = guarded("discover_nodes", node.discover_nodes())
        .await
        .expect("nodes");
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0].0, local(), "the local node comes first");
    assert_eq!(nodes[1], (NodeId::new("peer"), Resources::new().gpu(1)));

    let err = guarded(
        "register_node",
        node.register_node("bad", Resources::new().cpu(-1)),
    )
    .await
    .expect_err("negative capacity");
    assert!(
        matches!(err, handoff::NodeError::Register(RegisterNodeError::InvalidCapacity { ref node, .. }) if node.as_str() == "bad"),
        "{err:?}"
    );

    // Growing the local node lets a bigger function run.
    guarded(
        "register_node",
        node.register_node("local", Resources::new().cpu(4).memory(1024)),
    )
    .await
    .expect("updated");
    let dag = Dag::new()
        .with(
            Function::new("big", "identity")
                .extra_arg(1_i64)
                .with_cost(Resources::new().cpu(4)),
        )
        .validate()
        .expect("valid DAG");
    guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("cpu 4 fits now");
    assert_all_released(&node).await;
}

/// Never picks a node.
struct RefusingAllocator;

impl Allocator for RefusingAllocator {
    fn choose(&self, _cost: Option<&Resources>, _nodes: &[NodeView<'_>]) -> Option<usize> {
        None
    }
}

#[actix::test]
async fn an_allocator_that_never_chooses_fails_the_execution_instead_of_hanging() {
    let gauge = Arc::new(Gauge::default());
    let node = node_with_gauge(&gauge, Resources::new().cpu(2)).await;
    let dag = independent(1, "gauged", Some(Resources::new().cpu(1)));
    let strategy = AllocationStrategy::Custom(Arc::new(RefusingAllocator));
    // Nothing runs on the blocking pool here, so with the clock paused the hang guard
    // fires as soon as the node has nothing left to do: it detects the deadlock
    // without waiting for it.
    tokio::time::pause();
    let outcome = tokio::time::timeout(
        common::HANG_GUARD,
        node.execute(dag, ExecuteOptions::default().allocation_strategy(strategy)),
    )
    .await;
    tokio::time::resume();
    let outcome = outcome.expect("execute answered (with an error) instead of waiting forever");
    assert!(outcome.is_err(), "{outcome:?}");
    assert_eq!(gauge.finished(), 0);
    assert_all_released(&node).await;
}

#[actix::test]
async fn an_abandoned_execution_runs_on_and_gives_its_reservations_back() {
    // `gated` tells the test when the first one has started, then waits for the gate.
    let (started_tx, started_rx) = futures::channel::oneshot::channel::<()>();
    let started_tx = Arc::new(Mutex::new(Some(started_tx)));
    let gate = Arc::new(Rendezvous::new(2));
    let gauge = Arc::new(Gauge::default());
    let mut registry = gauged_registry(&gauge, &Arc::new(Rendezvous::new(1)));
    let (g, open) = (Arc::clone(&gauge), Arc::clone(&gate));
    registry
        .register("gated", move |i: i64| {
            g.run(|| {
                if let Some(tx) = started_tx.lock().expect("lock").take() {
                    let _ = tx.send(());
                    assert!(open.arrive(), "the test opens the gate");
                }
                i
            })
        })
        .expect("register");
    let node = start_local(registry, Resources::new().cpu(1)).await;

    let abandoned = independent(5, "gated", Some(Resources::new().cpu(1)));
    let abandoned_id = abandoned.id().clone();
    // Its values are kept in the store after its (unread) result is dropped, so the
    // test can wait for them.
    let mut execution =
        Box::pin(node.execute(abandoned, ExecuteOptions::default().keep_values(true)));
    // The first poll hands the DAG to the coordinator; once a function of it runs,
    // the caller goes away.
    assert!(futures::poll!(execution.as_mut()).is_pending());
    guarded("the first function starts", started_rx)
        .await
        .expect("started");
    drop(execution);
    let opener = {
        let gate = Arc::clone(&gate);
        tokio::task::spawn_blocking(move || gate.arrive())
    };

    // Another execution needing the whole node still gets it...
    let next = independent(3, "gauged", Some(Resources::new().cpu(1)));
    guarded("execute", node.execute(next, ExecuteOptions::default()))
        .await
        .expect("runs");
    assert!(guarded("open the gate", opener).await.expect("joined"));
    // ...and the abandoned one runs to its end: wait for its every value, each stored
    // after its reservation was handed back.
    for i in 0..5 {
        guarded(
            "get_result",
            node.get_result(abandoned_id.clone(), format!("f{i}"), common::HANG_GUARD),
        )
        .await
        .expect("the abandoned execution finished");
    }
    assert_eq!(gauge.finished(), 8);
    assert_eq!(gauge.max(), 1);
    assert_all_released(&node).await;
}
