//! Supervision: a panic in a handler of the result store, the location registry, the
//! resource manager or the coordinator is caught, the actor restarts under its
//! supervisor with its state kept, and the node (and the actix `System` it runs in) keeps
//! working. A panic in a user's resource tracker fails the execution that hit it.
//!
//! Panics are injected with `handoff_actors::Crash` (the `fault-injection` feature, on for
//! these tests). Nothing waits on the clock: a restart is awaited by sending the next
//! message, which the mailbox keeps until the restarted actor handles it.

mod common;

use common::{guarded, seed_registry, start_local};
use handoff::{
    Dag, ExecuteOptions, ExecutionResult, Function, NodeError, NodeHandle, NodeId, Resources, Value,
};
use handoff_actors::{CountRestarts, Crash, Panicked};

/// The seed pipeline, `source` → `transform` → `sink`, as DAG `id`, with `source` = `x`.
fn pipeline(id: &str, x: i64) -> handoff::ValidatedDag {
    Dag::with_id(id)
        .with(Function::new("source", "identity").extra_arg(x))
        .with(
            Function::new("transform", "multiply")
                .arg("source")
                .extra_arg(2_i64),
        )
        .with(Function::new("sink", "format_output").arg("transform"))
        .validate()
        .expect("valid DAG")
}

/// Executes `pipeline(id, x)` and checks its results and that its values are stored here.
/// The node keeps the values while the returned result lives.
async fn run_pipeline(node: &NodeHandle, id: &str, x: i64) -> ExecutionResult {
    let done = guarded(
        "execute",
        node.execute(pipeline(id, x), ExecuteOptions::default()),
    )
    .await
    .expect("the pipeline runs");
    assert_eq!(done.results.get::<i64>("transform"), Ok(2 * x));
    let expected = format!("The final answer is: {}", 2 * x);
    assert_eq!(
        done.results.get::<String>("sink").as_deref(),
        Ok(&*expected)
    );
    let stored = guarded("get_local_value", node.get_local_value(id, "sink"))
        .await
        .expect("the execution stored its values");
    assert_eq!(stored.get::<String>().as_deref(), Ok(&*expected));
    assert_eq!(
        guarded("lookup", node.lookup_data_location(id, "sink")).await,
        Ok(Some(NodeId::new("local"))),
        "and recorded where they live"
    );
    done
}

/// A node with state: it has run DAG `before` (whose result is held, so the node keeps
/// its values) and holds a value stored by hand, `("manual", "v")`.
struct Before {
    node: NodeHandle,
    manual: Value,
    _execution: ExecutionResult,
    stored: usize,
}

impl Before {
    async fn new() -> Self {
        let node = start_local(seed_registry(), Resources::new().cpu(2)).await;
        let execution = run_pipeline(&node, "before", 21).await;
        let manual = Value::new(vec![1_i64, 2, 3]);
        guarded(
            "store_value",
            node.store_value("manual", "v", manual.clone()),
        )
        .await
        .expect("stored");
        let stored = guarded("stored_values", node.stored_values())
            .await
            .expect("counted");
        assert!(stored >= 2, "at least `before`'s sink and the manual value");
        Before {
            node,
            manual,
            _execution: execution,
            stored,
        }
    }

    /// Everything stored before a restart is still there, in the store and the registry.
    async fn assert_kept(&self) {
        let node = &self.node;
        let got = guarded("get_local_value", node.get_local_value("manual", "v"))
            .await
            .expect("a value stored by hand survives the restart");
        assert!(
            got.ptr_eq(&self.manual),
            "the very value stored, not a copy"
        );
        assert_eq!(
            guarded("get_local_value", node.get_local_value("before", "sink"))
                .await
                .expect("a value of an earlier execution survives the restart")
                .get::<String>()
                .as_deref(),
            Ok("The final answer is: 42")
        );
        assert_eq!(
            guarded("lookup", node.lookup_data_location("manual", "v")).await,
            Ok(Some(NodeId::new("local")))
        );
        assert_eq!(
            guarded("lookup", node.lookup_data_location("before", "sink")).await,
            Ok(Some(NodeId::new("local")))
        );
        assert_eq!(
            guarded("stored_values", node.stored_values()).await,
            Ok(self.stored),
            "nothing lost, nothing added"
        );
    }
}

#[actix::test]
async fn a_panicking_result_store_restarts_with_its_values() {
    let before = Before::new().await;
    let node = &before.node;
    let store = node.result_store();
    assert_eq!(guarded("restarts", store.send(CountRestarts)).await, Ok(0));

    let reply = guarded("crash", store.send(Crash))
        .await
        .expect("the store answers: its handler's panic was caught");
    assert!(
        matches!(reply, Err(Panicked { actor: "result store", ref message }) if message.contains("fault injection")),
        "{reply:?}"
    );
    // Queued behind the restart, so answered by the restarted store.
    assert_eq!(guarded("restarts", store.send(CountRestarts)).await, Ok(1));
    assert_eq!(
        guarded("restarts", node.location_registry().send(CountRestarts)).await,
        Ok(0),
        "the other actors are not restarted"
    );

    before.assert_kept().await;
    let _after = run_pipeline(node, "after", 5).await;
    let stored = guarded("stored_values", node.stored_values()).await;
    assert!(
        stored.as_ref().is_ok_and(|n| *n > before.stored),
        "the new DAG's values are stored beside the old ones: {stored:?}"
    );
}

#[actix::test]
async fn a_panicking_location_registry_restarts_with_its_locations() {
    let before = Before::new().await;
    let node = &before.node;
    let registry = node.location_registry();

    let reply = guarded("crash", registry.send(Crash))
        .await
        .expect("the registry answers: its handler's panic was caught");
    assert!(
        matches!(
            reply,
            Err(Panicked {
                actor: "location registry",
                ..
            })
        ),
        "{reply:?}"
    );
    assert_eq!(
        guarded("restarts", registry.send(CountRestarts)).await,
        Ok(1)
    );
    assert_eq!(
        guarded("restarts", node.result_store().send(CountRestarts)).await,
        Ok(0),
        "the other actors are not restarted"
    );

    before.assert_kept().await;
    let _after = run_pipeline(node, "after", 5).await;
    guarded(
        "register_data_location",
        node.register_data_location("elsewhere", "v", "peer"),
    )
    .await
    .expect("registered");
    assert_eq!(
        guarded("lookup", node.lookup_data_location("elsewhere", "v")).await,
        Ok(Some(NodeId::new("peer")))
    );
}

#[actix::test]
async fn messages_queued_behind_a_panic_are_handled_after_the_restart() {
    let node = start_local(seed_registry(), Resources::new()).await;
    // One batch, in this order, in the store's mailbox: the panic, then two stores.
    let (crashed, first, second) = guarded("crash and stores", async {
        futures::join!(
            node.result_store().send(Crash),
            node.store_value("dag", "a", Value::new(1_i64)),
            node.store_value("dag", "b", Value::new(2_i64)),
        )
    })
    .await;
    assert!(matches!(crashed, Ok(Err(Panicked { .. }))), "{crashed:?}");
    first.expect("stored after the restart");
    second.expect("stored after the restart");
    for (id, expected) in [("a", 1_i64), ("b", 2)] {
        assert_eq!(
            guarded("get_local_value", node.get_local_value("dag", id))
                .await
                .expect("held")
                .get::<i64>(),
            Ok(expected)
        );
    }
}

#[actix::test]
async fn a_wait_in_progress_outlives_a_restart_of_the_store() {
    let node = start_local(seed_registry(), Resources::new()).await;
    let mut waiting = Box::pin(node.get_result("dag", "later", std::time::Duration::from_secs(30)));
    // The first poll sends the wait to the store; it cannot be answered yet.
    assert!(futures::poll!(waiting.as_mut()).is_pending());

    let reply = guarded("crash", node.result_store().send(Crash)).await;
    assert!(matches!(reply, Ok(Err(Panicked { .. }))), "{reply:?}");
    guarded(
        "store_value",
        node.store_value("dag", "later", Value::new(7_i64)),
    )
    .await
    .expect("stored");
    assert_eq!(
        guarded("get_result", waiting)
            .await
            .expect("the waiter was kept across the restart")
            .get::<i64>(),
        Ok(7)
    );
}

#[actix::test]
async fn repeated_panics_never_take_the_node_or_the_system_down() {
    let before = Before::new().await;
    let node = &before.node;
    for round in 1..=3_u32 {
        for (name, crashed) in [
            (
                "result store",
                guarded("crash", node.result_store().send(Crash)).await,
            ),
            (
                "location registry",
                guarded("crash", node.location_registry().send(Crash)).await,
            ),
        ] {
            assert!(
                matches!(crashed, Ok(Err(Panicked { actor, .. })) if actor == name),
                "round {round}: {crashed:?}"
            );
        }
        assert_eq!(
            guarded("restarts", node.result_store().send(CountRestarts)).await,
            Ok(round)
        );
        assert_eq!(
            guarded("restarts", node.location_registry().send(CountRestarts)).await,
            Ok(round)
        );
        before.assert_kept().await;
    }
    let _after = run_pipeline(node, "after", 8).await;

    // The actix `System` still runs: this test goes on in it, and it still starts and
    // runs new work, here a second node beside the first.
    let other = start_local(seed_registry(), Resources::new()).await;
    let _elsewhere = run_pipeline(&other, "elsewhere", 1).await;
    assert!(
        matches!(
            guarded("get_local_value", other.get_local_value("manual", "v")).await,
            Err(NodeError::NotFound { .. })
        ),
        "the nodes do not share state"
    );
}

#[actix::test]
async fn a_panicking_coordinator_restarts_and_new_dags_run() {
    let node = start_local(seed_registry(), Resources::new().cpu(2)).await;
    let kept = run_pipeline(&node, "kept", 4).await;
    let crashed = guarded("crash", node.coordinator().send(Crash))
        .await
        .expect("the coordinator answers");
    assert!(
        matches!(
            crashed,
            Err(Panicked {
                actor: "coordinator",
                ..
            })
        ),
        "{crashed:?}"
    );
    assert_eq!(
        guarded("restarts", node.coordinator().send(CountRestarts)).await,
        Ok(1)
    );
    // The other actors kept their state, and new DAGs run.
    let stored = guarded("get_local_value", node.get_local_value("kept", "sink"))
        .await
        .expect("values stored before the crash are still there");
    assert!(stored.ptr_eq(kept.results.value("sink").expect("sink")));
    run_pipeline(&node, "after", 5).await;
}

#[actix::test]
async fn a_panicking_resource_manager_restarts_with_its_registrations() {
    let node = start_local(seed_registry(), Resources::new().cpu(3).memory(100)).await;
    node.register_node("other", Resources::new().gpu(1))
        .await
        .expect("register");
    let crashed = guarded("crash", node.resource_manager().send(Crash))
        .await
        .expect("the manager answers");
    assert!(
        matches!(
            crashed,
            Err(Panicked {
                actor: "resource manager",
                ..
            })
        ),
        "{crashed:?}"
    );
    assert_eq!(
        guarded("restarts", node.resource_manager().send(CountRestarts)).await,
        Ok(1)
    );
    assert_eq!(
        guarded("resources", node.node_resources("local")).await,
        Ok(Some((
            Resources::new().cpu(3).memory(100),
            Resources::new().cpu(3).memory(100)
        ))),
        "capacity registered before the crash is kept"
    );
    assert_eq!(
        guarded("resources", node.node_resources("other")).await,
        Ok(Some((Resources::new().gpu(1), Resources::new().gpu(1))))
    );
    // A costed DAG still reserves, runs and gives everything back.
    let dag = Dag::new()
        .with(
            Function::new("source", "identity")
                .extra_arg(21_i64)
                .with_cost(Resources::new().cpu(2)),
        )
        .with(
            Function::new("transform", "multiply")
                .arg("source")
                .extra_arg(2_i64)
                .with_cost(Resources::new().cpu(3)),
        )
        .validate()
        .expect("valid DAG");
    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
    assert_eq!(done.results.get::<i64>("transform"), Ok(42));
    assert_eq!(
        guarded("resources", node.node_resources("local"))
            .await
            .expect("answer")
            .map(|(_, available)| available),
        Some(Resources::new().cpu(3).memory(100))
    );
}

/// A tracker that panics when asked to reserve more than 1 cpu: user code inside the
/// resource manager.
struct PanickyTracker(handoff::SimpleResourceTracker);

impl handoff::ResourceTracker for PanickyTracker {
    fn register(
        &mut self,
        node: NodeId,
        capabilities: Resources,
    ) -> Result<(), handoff::RegisterNodeError> {
        self.0.register(node, capabilities)
    }
    fn capabilities(&self, node: &NodeId) -> Option<Resources> {
        self.0.capabilities(node)
    }
    fn available(&self, node: &NodeId) -> Option<Resources> {
        self.0.available(node)
    }
    fn request(&mut self, node: &NodeId, cost: &Resources) -> Result<(), handoff::RequestError> {
        assert!(
            cost.get("cpu") <= handoff::Amount::from(1),
            "this tracker cannot count past one cpu"
        );
        self.0.request(node, cost)
    }
    fn release(&mut self, node: &NodeId, cost: &Resources) -> Result<(), handoff::ReleaseError> {
        self.0.release(node, cost)
    }
    fn nodes(&self) -> Vec<NodeId> {
        self.0.nodes()
    }
}

#[actix::test]
async fn a_panicking_tracker_fails_the_execution_instead_of_hanging_it() {
    let config = handoff::NodeConfig::new("local", seed_registry())
        .capabilities(Resources::new().cpu(4))
        .tracker(PanickyTracker(handoff::SimpleResourceTracker::new()));
    let node = guarded("start", handoff::start_node(config))
        .await
        .expect("node");
    let dag = Dag::new()
        .with(
            Function::new("big", "identity")
                .extra_arg(1_i64)
                .with_cost(Resources::new().cpu(2)),
        )
        .validate()
        .expect("valid DAG");
    let err = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect_err("the tracker panicked");
    assert!(
        matches!(
            err,
            handoff::ExecuteError::Allocation(handoff::AllocationError::NeverGranted { ref function, ref reason })
                if function.as_str() == "big" && reason.contains("cannot count past one cpu")
        ),
        "{err:?}"
    );
    // The manager restarted and still works: a cost the tracker can count runs.
    let dag = Dag::new()
        .with(
            Function::new("small", "identity")
                .extra_arg(7_i64)
                .with_cost(Resources::new().cpu(1)),
        )
        .validate()
        .expect("valid DAG");
    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
    assert_eq!(done.results.get::<i64>("small"), Ok(7));
}

#[actix::test]
async fn a_crashed_execution_gives_everything_back_and_says_so() {
    let gate = std::sync::Arc::new(common::Gate::new());
    let (started_tx, mut started) = tokio::sync::mpsc::channel::<()>(1);
    let mut registry = seed_registry();
    let open = std::sync::Arc::clone(&gate);
    registry
        .register("wait", move |x: i64| {
            let _ = started_tx.try_send(());
            open.wait();
            x
        })
        .expect("register");
    let node = start_local(registry, Resources::new().cpu(2)).await;
    let dag = Dag::new()
        .with(
            Function::new("held", "wait")
                .extra_arg(1_i64)
                .with_cost(Resources::new().cpu(2)),
        )
        .with(Function::new("later", "identity").arg("held"))
        .validate()
        .expect("valid DAG");
    let handle = guarded("submit", node.submit(dag, ExecuteOptions::default()))
        .await
        .expect("feasible");
    // Once `held` runs (holding the whole node), the execution's own coordinator panics.
    guarded("held starts", started.recv())
        .await
        .expect("started");
    handle.crash_coordinator();
    let err = guarded("outcome", handle.outcome())
        .await
        .expect_err("the coordinator crashed");
    assert!(
        matches!(err, handoff::ExecuteError::Internal { ref message, .. } if message.contains("fault injection")),
        "{err:?}"
    );
    // Its reservation was given back (while `held`'s thread is still busy) and the node
    // keeps running DAGs.
    assert_eq!(
        guarded("resources", node.node_resources("local"))
            .await
            .expect("answer")
            .map(|(_, available)| available),
        Some(Resources::new().cpu(2))
    );
    run_pipeline(&node, "after-crash", 3).await;
    gate.open();
}

/// Which call of a [`FaultyTracker`] panics, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The first `release`, before it gives anything back: that capacity stays counted
    /// as held.
    ReleaseBefore,
    /// The first `release`, after it has given the capacity back.
    ReleaseAfter,
    /// The first `request` after a release.
    RequestAfterRelease,
}

/// A tracker that panics once, in the call its [`Fault`] names: user code inside the
/// resource manager, failing in a path other than reserving a new batch.
struct FaultyTracker {
    inner: handoff::SimpleResourceTracker,
    fault: Fault,
    fired: bool,
    released: bool,
}

impl FaultyTracker {
    fn new(fault: Fault) -> Self {
        FaultyTracker {
            inner: handoff::SimpleResourceTracker::new(),
            fault,
            fired: false,
            released: false,
        }
    }

    /// Whether the fault fires now (it fires once).
    fn fires(&mut self, fault: Fault) -> bool {
        let fires = self.fault == fault && !self.fired;
        self.fired |= fires;
        fires
    }
}

impl handoff::ResourceTracker for FaultyTracker {
    fn register(
        &mut self,
        node: NodeId,
        capabilities: Resources,
    ) -> Result<(), handoff::RegisterNodeError> {
        self.inner.register(node, capabilities)
    }
    fn capabilities(&self, node: &NodeId) -> Option<Resources> {
        self.inner.capabilities(node)
    }
    fn available(&self, node: &NodeId) -> Option<Resources> {
        self.inner.available(node)
    }
    fn request(&mut self, node: &NodeId, cost: &Resources) -> Result<(), handoff::RequestError> {
        if self.released && self.fires(Fault::RequestAfterRelease) {
            panic!("the tracker's request panicked after a release");
        }
        self.inner.request(node, cost)
    }
    fn release(&mut self, node: &NodeId, cost: &Resources) -> Result<(), handoff::ReleaseError> {
        if self.fires(Fault::ReleaseBefore) {
            panic!("the tracker's release panicked before giving back");
        }
        let released = self.inner.release(node, cost);
        self.released = true;
        if self.fires(Fault::ReleaseAfter) {
            panic!("the tracker's release panicked after giving back");
        }
        released
    }
    fn nodes(&self) -> Vec<NodeId> {
        self.inner.nodes()
    }
}

/// A node (2 cpus, `fault` in its tracker) where execution `holding` runs `held`, which
/// takes both cpus and waits at the gate, while execution `waiting` waits for them to
/// run `behind`: when this returns, `behind`'s request is queued at the resource manager.
struct OneWaitingBehindAnother {
    node: NodeHandle,
    gate: std::sync::Arc<common::Gate>,
    holding: handoff::ExecutionHandle,
    waiting: handoff::ExecutionHandle,
}

impl OneWaitingBehindAnother {
    async fn new(fault: Fault) -> Self {
        use futures::StreamExt;

        let gate = std::sync::Arc::new(common::Gate::new());
        let (started_tx, mut started) = tokio::sync::mpsc::channel::<()>(1);
        let mut registry = seed_registry();
        let open = std::sync::Arc::clone(&gate);
        registry
            .register("wait", move |x: i64| {
                let _ = started_tx.try_send(());
                open.wait();
                x
            })
            .expect("register");
        let config = handoff::NodeConfig::new("local", registry)
            .capabilities(Resources::new().cpu(2))
            .tracker(FaultyTracker::new(fault));
        let node = guarded("start", handoff::start_node(config))
            .await
            .expect("node");
        let holding = Dag::with_id("holding")
            .with(
                Function::new("held", "wait")
                    .extra_arg(1_i64)
                    .with_cost(Resources::new().cpu(2)),
            )
            .validate()
            .expect("valid DAG");
        let holding = guarded("submit", node.submit(holding, ExecuteOptions::default()))
            .await
            .expect("feasible");
        guarded("`held` starts", started.recv())
            .await
            .expect("started");

        let waiting = Dag::with_id("waiting")
            .with(
                Function::new("behind", "identity")
                    .extra_arg(2_i64)
                    .with_cost(Resources::new().cpu(2)),
            )
            .validate()
            .expect("valid DAG");
        let mut waiting = guarded(
            "submit",
            node.submit(waiting, ExecuteOptions::default().events(16)),
        )
        .await
        .expect("feasible");
        // The execution sends `behind`'s request to the manager as it reports it ready;
        // the manager's next answer comes after it has handled (queued) that request.
        let mut events = waiting.events().expect("events asked for");
        loop {
            let event = guarded("`behind` is ready", events.next())
                .await
                .expect("the execution goes on");
            if matches!(event.kind, handoff::EventKind::Ready { ref function } if function.as_str() == "behind")
            {
                break;
            }
        }
        let free = guarded("resources", node.node_resources("local"))
            .await
            .expect("answer")
            .map(|(_, available)| available.get("cpu"));
        assert_eq!(
            free,
            Some(handoff::Amount::from(0)),
            "`held` holds the whole node, so `behind` waits"
        );
        OneWaitingBehindAnother {
            node,
            gate,
            holding,
            waiting,
        }
    }

    /// Lets `held` end (its release is where the tracker may panic): the node, and the
    /// waiting execution's outcome once `holding` has succeeded.
    async fn release(self) -> (NodeHandle, Result<ExecutionResult, handoff::ExecuteError>) {
        self.gate.open();
        let held = guarded("`holding` ends", self.holding.outcome())
            .await
            .expect("`held` ran");
        assert_eq!(held.results.get::<i64>("held"), Ok(1));
        let outcome = guarded(
            "the waiting execution gets an outcome",
            self.waiting.outcome(),
        )
        .await;
        (self.node, outcome)
    }
}

/// The manager caught the tracker's panic at the call: it was never stopped.
async fn assert_never_restarted(node: &NodeHandle) {
    assert_eq!(
        guarded("restarts", node.resource_manager().send(CountRestarts)).await,
        Ok(0),
        "a tracker's panic is a failed call, not a crash of the manager"
    );
}

/// A DAG of one function costing `cpu` cpus, returning `x`.
fn costed(id: &str, cpu: u32, x: i64) -> handoff::ValidatedDag {
    Dag::with_id(id)
        .with(
            Function::new("costed", "identity")
                .extra_arg(x)
                .with_cost(Resources::new().cpu(cpu)),
        )
        .validate()
        .expect("valid DAG")
}

#[actix::test]
async fn a_tracker_panicking_in_release_after_giving_back_still_grants_the_waiting_execution() {
    let setup = OneWaitingBehindAnother::new(Fault::ReleaseAfter).await;
    let (node, outcome) = setup.release().await;
    let done = outcome.expect("the capacity came back, so `behind` was granted and ran");
    assert_eq!(done.results.get::<i64>("behind"), Ok(2));
    assert_never_restarted(&node).await;
    // Later executions reserve and run, and everything is given back.
    let done = guarded(
        "execute",
        node.execute(costed("after", 2, 5), ExecuteOptions::default()),
    )
    .await
    .expect("runs");
    assert_eq!(done.results.get::<i64>("costed"), Ok(5));
    assert_eq!(
        guarded("resources", node.node_resources("local")).await,
        Ok(Some((Resources::new().cpu(2), Resources::new().cpu(2))))
    );
}

#[actix::test]
async fn a_tracker_panicking_in_release_refuses_the_waiting_execution_naming_the_panic() {
    let setup = OneWaitingBehindAnother::new(Fault::ReleaseBefore).await;
    let (node, outcome) = setup.release().await;
    let err = outcome.expect_err("the capacity never came back");
    assert!(
        matches!(
            err,
            handoff::ExecuteError::Allocation(handoff::AllocationError::NeverGranted { ref function, ref reason })
                if function.as_str() == "behind" && reason.contains("release panicked before giving back")
        ),
        "{err:?}"
    );
    assert_never_restarted(&node).await;
    // The tracker still counts the capacity as held: a later costed execution gets the
    // same typed refusal at once, and one without a cost runs.
    let err = guarded(
        "execute",
        node.execute(costed("after", 1, 5), ExecuteOptions::default()),
    )
    .await
    .expect_err("no capacity left");
    assert!(
        matches!(
            err,
            handoff::ExecuteError::Allocation(handoff::AllocationError::NeverGranted { ref function, ref reason })
                if function.as_str() == "costed" && reason.contains("release panicked before giving back")
        ),
        "{err:?}"
    );
    run_pipeline(&node, "uncosted", 3).await;
}

#[actix::test]
async fn a_tracker_panicking_in_request_after_a_release_refuses_the_waiting_execution() {
    let setup = OneWaitingBehindAnother::new(Fault::RequestAfterRelease).await;
    let (node, outcome) = setup.release().await;
    let err = outcome.expect_err("the tracker panicked reserving for `behind`");
    assert!(
        matches!(
            err,
            handoff::ExecuteError::Allocation(handoff::AllocationError::NeverGranted { ref function, ref reason })
                if function.as_str() == "behind" && reason.contains("request panicked after a release")
        ),
        "{err:?}"
    );
    assert_never_restarted(&node).await;
    // The tracker works again: a later execution reserves the whole node and runs.
    let done = guarded(
        "execute",
        node.execute(costed("after", 2, 5), ExecuteOptions::default()),
    )
    .await
    .expect("runs");
    assert_eq!(done.results.get::<i64>("costed"), Ok(5));
    assert_eq!(
        guarded("resources", node.node_resources("local")).await,
        Ok(Some((Resources::new().cpu(2), Resources::new().cpu(2))))
    );
}

/// The node's supervisor answers what its children are and how often each restarted: a
/// panic in the result store shows as one restart of it, and of nothing else.
#[actix::test]
async fn the_node_supervisor_lists_its_children_and_their_restarts() {
    let before = Before::new().await;
    let node = &before.node;
    let supervisor = node.supervisor().expect("a supervisor");
    let children = guarded("children", supervisor.send(handoff::actors::Children))
        .await
        .expect("answers");
    let names: Vec<&str> = children.iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            "coordinator",
            "resource manager",
            "result store",
            "location registry"
        ]
    );
    assert!(
        children.iter().all(|c| c.restarts == Some(0)),
        "{children:?}"
    );

    let _ = guarded("crash", node.result_store().send(Crash)).await;
    let children = guarded("children", supervisor.send(handoff::actors::Children))
        .await
        .expect("answers");
    for child in &children {
        let expected = if child.name == "result store" { 1 } else { 0 };
        assert_eq!(child.restarts, Some(expected), "{children:?}");
    }
}
