//! Supervision: a panic in a handler of the result store or the location registry is
//! caught, the actor restarts under its supervisor with its state kept, and the node (and
//! the actix `System` it runs in) keeps working.
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
