//! The node's result store and data-location registry through the `handoff` facade:
//! storing and reading values, waiting for values, locations, and the typed errors for
//! values that are missing or live elsewhere.

mod common;

use std::task::Poll;
use std::time::Duration;

use common::{guarded, seed_registry, start_local};
use handoff::{
    Dag, DagId, ExecuteOptions, Function, FunctionId, NodeError, NodeId, Resources, Value,
    WaitError,
};

fn local() -> NodeId {
    NodeId::new("local")
}

#[actix::test]
async fn waiting_for_a_value_that_never_comes_times_out() {
    let node = start_local(seed_registry(), Resources::new()).await;
    // The clock is paused: the 5 s timeout elapses as soon as nothing else can run,
    // without the test waiting for it.
    tokio::time::pause();
    let err = guarded(
        "get_result",
        node.get_result("dag", "missing", Duration::from_secs(5)),
    )
    .await
    .expect_err("nothing stores it");
    assert_eq!(
        err,
        NodeError::Wait(WaitError::Timeout {
            dag: DagId::new("dag"),
            id: FunctionId::new("missing"),
            timeout: Duration::from_secs(5),
        })
    );

    // The node still answers afterwards, and a value stored later is found at once.
    tokio::time::resume();
    guarded(
        "store_value",
        node.store_value("dag", "missing", Value::new(1_u8)),
    )
    .await
    .expect("stored");
    let value = guarded(
        "get_result",
        node.get_result("dag", "missing", Duration::from_millis(50)),
    )
    .await
    .expect("stored now");
    assert_eq!(value.get::<u8>(), Ok(1));
}

#[actix::test]
async fn a_short_wait_times_out_too() {
    let node = start_local(seed_registry(), Resources::new()).await;
    let err = guarded(
        "get_result",
        node.get_result("dag", "missing", Duration::from_millis(50)),
    )
    .await
    .expect_err("nothing stores it");
    assert!(
        matches!(err, NodeError::Wait(WaitError::Timeout { ref id, .. }) if id.as_str() == "missing"),
        "{err:?}"
    );
}

#[actix::test]
async fn waiting_for_a_value_returns_it_once_it_is_stored() {
    let node = start_local(seed_registry(), Resources::new()).await;
    let mut waiting = Box::pin(node.get_result("dag", "later", Duration::from_secs(30)));
    // The first poll sends the wait to the store; it cannot be answered yet.
    assert!(futures::poll!(waiting.as_mut()).is_pending());

    let value = Value::new(vec![1_i64, 2, 3]);
    guarded(
        "store_value",
        node.store_value("dag", "later", value.clone()),
    )
    .await
    .expect("stored");
    let got = guarded("get_result", waiting)
        .await
        .expect("the stored value");
    assert!(got.ptr_eq(&value), "the very value stored, not a copy");
    assert_eq!(got.get::<Vec<i64>>(), Ok(vec![1, 2, 3]));
}

#[actix::test]
async fn several_waiters_all_get_the_value() {
    let node = start_local(seed_registry(), Resources::new()).await;
    let mut first = Box::pin(node.get_result("dag", "v", Duration::from_secs(30)));
    let mut second = Box::pin(node.get_result("dag", "v", Duration::from_secs(30)));
    let mut other = Box::pin(node.get_result("other-dag", "v", Duration::from_millis(50)));
    assert!(futures::poll!(first.as_mut()).is_pending());
    assert!(futures::poll!(second.as_mut()).is_pending());
    assert!(futures::poll!(other.as_mut()).is_pending());
    guarded(
        "store_value",
        node.store_value("dag", "v", Value::new(9_i64)),
    )
    .await
    .expect("stored");
    assert_eq!(
        guarded("first", first).await.expect("value").get::<i64>(),
        Ok(9)
    );
    assert_eq!(
        guarded("second", second).await.expect("value").get::<i64>(),
        Ok(9)
    );
    assert!(
        matches!(
            guarded("other", other).await,
            Err(NodeError::Wait(WaitError::Timeout { .. }))
        ),
        "a value of another DAG does not answer"
    );
}

#[actix::test]
async fn waiting_for_a_result_an_execution_will_produce() {
    let node = start_local(seed_registry(), Resources::new().cpu(1)).await;
    let dag = Dag::with_id("pipeline")
        .with(Function::new("source", "identity").extra_arg(42_i64))
        .with(
            Function::new("transform", "multiply")
                .arg("source")
                .extra_arg(2_i64)
                .with_cost(Resources::new().cpu(1)),
        )
        .with(Function::new("sink", "format_output").arg("transform"))
        .validate()
        .expect("valid DAG");
    let mut waiting = Box::pin(node.get_result("pipeline", "sink", Duration::from_secs(30)));
    assert!(futures::poll!(waiting.as_mut()).is_pending());
    let mut waiting_transform =
        Box::pin(node.get_result("pipeline", "transform", Duration::from_secs(30)));
    assert!(futures::poll!(waiting_transform.as_mut()).is_pending());

    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
    let sink = guarded("get_result", waiting).await.expect("sink's result");
    assert_eq!(
        sink.get::<String>().as_deref(),
        Ok("The final answer is: 84")
    );
    assert!(sink.ptr_eq(done.results.value("sink").expect("a result")));
    let transform = guarded("get_result", waiting_transform)
        .await
        .expect("transform's result");
    assert_eq!(transform.get::<i64>(), Ok(84));
}

#[actix::test]
async fn dropping_a_dag_ends_the_waits_for_its_values() {
    let node = start_local(seed_registry(), Resources::new()).await;
    guarded(
        "store_value",
        node.store_value("dag", "kept", Value::new(1_i64)),
    )
    .await
    .expect("stored");
    let mut waiting = Box::pin(node.get_result("dag", "never", Duration::from_secs(30)));
    assert!(futures::poll!(waiting.as_mut()).is_pending());
    assert_eq!(guarded("drop_dag", node.drop_dag("dag")).await, Ok(1));
    assert_eq!(
        guarded("get_result", waiting).await.err(),
        Some(NodeError::Wait(WaitError::Dropped {
            dag: DagId::new("dag"),
            id: FunctionId::new("never"),
        }))
    );
    assert!(matches!(
        guarded("get_local_value", node.get_local_value("dag", "kept")).await,
        Err(NodeError::NotFound { .. })
    ));
    assert_eq!(
        guarded("lookup", node.lookup_data_location("dag", "kept")).await,
        Ok(None),
        "its locations are forgotten too"
    );
}

#[actix::test]
async fn stored_values_round_trip() {
    let node = start_local(seed_registry(), Resources::new()).await;
    let value = Value::new(("text".to_owned(), 3.5_f64));
    guarded("store_value", node.store_value("d", "v", value.clone()))
        .await
        .expect("stored");

    let local_value = guarded("get_local_value", node.get_local_value("d", "v"))
        .await
        .expect("held here");
    assert!(local_value.ptr_eq(&value));
    assert_eq!(
        local_value.get::<(String, f64)>(),
        Ok(("text".to_owned(), 3.5))
    );
    let anywhere = guarded("get_value", node.get_value("d", "v", None))
        .await
        .expect("held here");
    assert!(anywhere.ptr_eq(&value));
    let from_elsewhere = guarded(
        "get_value",
        node.get_value("d", "v", Some(NodeId::new("peer"))),
    )
    .await
    .expect("a local value is read locally whatever `from` says");
    assert!(from_elsewhere.ptr_eq(&value));
    assert_eq!(
        guarded("lookup", node.lookup_data_location("d", "v")).await,
        Ok(Some(local())),
        "store_value records the local node as the holder"
    );

    // Overwriting replaces the value.
    guarded("store_value", node.store_value("d", "v", Value::new(2_i64)))
        .await
        .expect("stored");
    assert_eq!(
        guarded("get_local_value", node.get_local_value("d", "v"))
            .await
            .expect("held")
            .get::<i64>(),
        Ok(2)
    );
    assert_eq!(guarded("stored_values", node.stored_values()).await, Ok(1));
}

#[actix::test]
async fn a_missing_value_is_not_found() {
    let node = start_local(seed_registry(), Resources::new()).await;
    assert_eq!(
        guarded("get_local_value", node.get_local_value("d", "nothing"))
            .await
            .err(),
        Some(NodeError::NotFound {
            dag: DagId::new("d"),
            id: FunctionId::new("nothing"),
            node: local(),
        })
    );
    assert_eq!(
        guarded("get_value", node.get_value("d", "nothing", None))
            .await
            .err(),
        Some(NodeError::NotFound {
            dag: DagId::new("d"),
            id: FunctionId::new("nothing"),
            node: local(),
        })
    );
    // Registered as held here, yet not stored: still not found, and not "unreachable".
    guarded(
        "register_data_location",
        node.register_data_location("d", "ghost", "local"),
    )
    .await
    .expect("registered");
    assert!(matches!(
        guarded("get_value", node.get_value("d", "ghost", None)).await,
        Err(NodeError::NotFound { .. })
    ));
    // A value stored under another DAG id is not this one.
    guarded(
        "store_value",
        node.store_value("e", "nothing", Value::new(1_u8)),
    )
    .await
    .expect("stored");
    assert!(matches!(
        guarded("get_local_value", node.get_local_value("d", "nothing"))
            .await
            .err(),
        Some(NodeError::NotFound { .. })
    ));
}

#[actix::test]
async fn a_value_held_by_another_node_is_unreachable_and_names_the_holder() {
    let node = start_local(seed_registry(), Resources::new()).await;
    guarded(
        "register_data_location",
        node.register_data_location("d", "remote_value", "peer"),
    )
    .await
    .expect("registered");
    assert_eq!(
        guarded("lookup", node.lookup_data_location("d", "remote_value")).await,
        Ok(Some(NodeId::new("peer")))
    );
    let err = guarded("get_value", node.get_value("d", "remote_value", None))
        .await
        .expect_err("no network layer to fetch it");
    assert_eq!(
        err,
        NodeError::Unreachable {
            dag: DagId::new("d"),
            id: FunctionId::new("remote_value"),
            holder: NodeId::new("peer"),
        }
    );
    assert!(err.to_string().contains("peer"), "{err}");

    // Asking explicitly for another node names that node.
    let err = guarded(
        "get_value",
        node.get_value("d", "unknown", Some(NodeId::new("other"))),
    )
    .await
    .expect_err("not here");
    assert!(
        matches!(err, NodeError::Unreachable { ref holder, .. } if holder.as_str() == "other"),
        "{err:?}"
    );
    assert!(matches!(
        guarded("get_local_value", node.get_local_value("d", "remote_value")).await,
        Err(NodeError::NotFound { .. })
    ));
}

#[actix::test]
async fn locations_round_trip_and_the_latest_registration_wins() {
    let node = start_local(seed_registry(), Resources::new()).await;
    assert_eq!(
        guarded("lookup", node.lookup_data_location("d", "v")).await,
        Ok(None)
    );
    guarded(
        "register_data_location",
        node.register_data_location("d", "v", "a"),
    )
    .await
    .expect("registered");
    guarded(
        "register_data_location",
        node.register_data_location("d", "w", "b"),
    )
    .await
    .expect("registered");
    assert_eq!(
        guarded("lookup", node.lookup_data_location("d", "v")).await,
        Ok(Some(NodeId::new("a")))
    );
    guarded(
        "register_data_location",
        node.register_data_location("d", "v", "c"),
    )
    .await
    .expect("registered");
    assert_eq!(
        guarded("lookup", node.lookup_data_location("d", "v")).await,
        Ok(Some(NodeId::new("c")))
    );
    assert_eq!(
        guarded("lookup", node.lookup_data_location("d", "w")).await,
        Ok(Some(NodeId::new("b")))
    );
    assert_eq!(
        guarded("lookup", node.lookup_data_location("other", "v")).await,
        Ok(None),
        "locations are per DAG"
    );
}

#[actix::test]
async fn waiting_for_a_value_already_stored_returns_it_without_waiting() {
    // A value already stored answers at once: with the clock paused, a wait that
    // needed any time at all would run into the hang guard before its own timeout.
    let node = start_local(seed_registry(), Resources::new()).await;
    guarded("store_value", node.store_value("d", "v", Value::new(5_i64)))
        .await
        .expect("stored");
    tokio::time::pause();
    let mut waiting = Box::pin(node.get_result("d", "v", Duration::from_secs(3600)));
    let first = futures::poll!(waiting.as_mut());
    let value = match first {
        Poll::Ready(result) => result,
        Poll::Pending => guarded("get_result", waiting).await,
    }
    .expect("already stored");
    assert_eq!(value.get::<i64>(), Ok(5));
}
