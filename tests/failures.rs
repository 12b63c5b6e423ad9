//! Failures through the `handoff` facade: retries and their counts, panics, typed
//! errors naming the culprit, nothing of a failed DAG running on, reservations given
//! back, and the node staying usable.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use common::{guarded, seed_registry, start_local};
use handoff::{
    CallError, Dag, ExecuteError, ExecuteOptions, Function, NodeHandle, NodeId, Registry,
    Resources, ValidatedDag, ValueError,
};

/// A registry whose `flaky` fails `failures` times, then returns 7, counting every
/// call in `calls`; plus the seed functions.
fn flaky_registry(failures: u32, calls: &Arc<AtomicU32>) -> Registry {
    let mut registry = seed_registry();
    let counter = Arc::clone(calls);
    registry
        .register_fallible("flaky", move || {
            let attempt = counter.fetch_add(1, Ordering::SeqCst) + 1;
            if attempt <= failures {
                Err(format!("attempt {attempt} failed"))
            } else {
                Ok(7_i64)
            }
        })
        .expect("register");
    let counter = Arc::clone(calls);
    registry
        .register_fallible("flaky_inc", move |x: i64| {
            let attempt = counter.fetch_add(1, Ordering::SeqCst) + 1;
            if attempt <= failures {
                Err(format!("attempt {attempt} failed"))
            } else {
                Ok(x + 1)
            }
        })
        .expect("register");
    registry
}

fn flaky_dag(configure: impl FnOnce(Function) -> Function) -> ValidatedDag {
    Dag::new()
        .with(configure(Function::new("flaky", "flaky")))
        .with(
            Function::new("after", "multiply")
                .arg("flaky")
                .extra_arg(6_i64),
        )
        .validate()
        .expect("valid DAG")
}

async fn assert_all_released(node: &NodeHandle) {
    let (capacity, available) =
        guarded("node_resources", node.node_resources(NodeId::new("local")))
            .await
            .expect("node alive")
            .expect("the local node is registered");
    assert_eq!(available, capacity, "every reservation was given back");
}

#[actix::test]
async fn a_function_that_fails_twice_succeeds_on_its_third_attempt() {
    let calls = Arc::new(AtomicU32::new(0));
    let node = start_local(flaky_registry(2, &calls), Resources::new()).await;
    let done = guarded(
        "execute",
        node.execute(flaky_dag(|f| f), ExecuteOptions::default().max_retries(3)),
    )
    .await
    .expect("the third attempt succeeds");
    assert_eq!(done.results.get::<i64>("after"), Ok(42));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[actix::test]
async fn running_out_of_retries_reports_every_attempt_and_the_last_error() {
    let calls = Arc::new(AtomicU32::new(0));
    let node = start_local(flaky_registry(2, &calls), Resources::new()).await;
    let err = guarded(
        "execute",
        node.execute(flaky_dag(|f| f), ExecuteOptions::default().max_retries(1)),
    )
    .await
    .expect_err("two attempts are not enough");
    assert_eq!(
        err,
        ExecuteError::FunctionFailed {
            function: "flaky".into(),
            attempts: 2,
            last_error: CallError::Failed {
                code: "flaky".into(),
                message: "attempt 2 failed".into(),
            },
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("flaky") && text.contains("2 attempt"),
        "{text}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[actix::test]
async fn the_default_is_three_retries() {
    let calls = Arc::new(AtomicU32::new(0));
    let node = start_local(flaky_registry(u32::MAX, &calls), Resources::new()).await;
    let err = guarded(
        "execute",
        node.execute(flaky_dag(|f| f), ExecuteOptions::default()),
    )
    .await
    .expect_err("never succeeds");
    assert!(
        matches!(err, ExecuteError::FunctionFailed { attempts: 4, .. }),
        "{err:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[actix::test]
async fn a_functions_own_max_retries_overrides_the_executions() {
    // Zero retries: exactly one attempt, although the execution allows five.
    let calls = Arc::new(AtomicU32::new(0));
    let node = start_local(flaky_registry(2, &calls), Resources::new()).await;
    let err = guarded(
        "execute",
        node.execute(
            flaky_dag(|f| f.max_retries(0)),
            ExecuteOptions::default().max_retries(5),
        ),
    )
    .await
    .expect_err("one attempt only");
    assert!(
        matches!(
            err,
            ExecuteError::FunctionFailed { ref function, attempts: 1, last_error: CallError::Failed { ref message, .. } }
                if function.as_str() == "flaky" && message == "attempt 1 failed"
        ),
        "{err:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Two retries, although the execution allows none.
    let calls = Arc::new(AtomicU32::new(0));
    let node = start_local(flaky_registry(2, &calls), Resources::new()).await;
    let done = guarded(
        "execute",
        node.execute(
            flaky_dag(|f| f.max_retries(2)),
            ExecuteOptions::default().max_retries(0),
        ),
    )
    .await
    .expect("three attempts are enough");
    assert_eq!(done.results.get::<i64>("flaky"), Ok(7));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[actix::test]
async fn a_function_run_right_after_its_dependency_is_retried_too() {
    // `inc` depends only on `source` and costs the same, so it may run back to back
    // with it; its attempts must still be counted and retried.
    let calls = Arc::new(AtomicU32::new(0));
    let node = start_local(flaky_registry(2, &calls), Resources::new()).await;
    let dag = || {
        Dag::new()
            .with(Function::new("source", "identity").extra_arg(41_i64))
            .with(Function::new("inc", "flaky_inc").arg("source"))
            .validate()
            .expect("valid DAG")
    };
    let done = guarded(
        "execute",
        node.execute(dag(), ExecuteOptions::default().max_retries(2)),
    )
    .await
    .expect("the third attempt succeeds");
    assert_eq!(done.results.get::<i64>("inc"), Ok(42));
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let calls = Arc::new(AtomicU32::new(0));
    let node = start_local(flaky_registry(2, &calls), Resources::new()).await;
    let err = guarded(
        "execute",
        node.execute(dag(), ExecuteOptions::default().max_retries(1)),
    )
    .await
    .expect_err("two attempts are not enough");
    assert!(
        matches!(err, ExecuteError::FunctionFailed { ref function, attempts: 2, .. } if function.as_str() == "inc"),
        "{err:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[actix::test]
async fn a_costed_function_is_retried_and_its_reservations_given_back() {
    let calls = Arc::new(AtomicU32::new(0));
    let node = start_local(flaky_registry(2, &calls), Resources::new().cpu(1)).await;
    let done = guarded(
        "execute",
        node.execute(
            flaky_dag(|f| f.with_cost(Resources::new().cpu(1))),
            ExecuteOptions::default(),
        ),
    )
    .await
    .expect("the third attempt succeeds");
    assert_eq!(done.results.get::<i64>("after"), Ok(42));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_all_released(&node).await;
}

fn panicking_registry() -> Registry {
    let mut registry = seed_registry();
    registry
        .register("boom", |_: i64| -> i64 { panic!("kaboom") })
        .expect("register");
    registry
}

#[actix::test]
async fn a_panic_is_a_typed_failure_and_the_node_keeps_working() {
    let node = start_local(panicking_registry(), Resources::new().cpu(1)).await;
    let dag = Dag::new()
        .with(Function::new("source", "identity").extra_arg(1_i64))
        .with(
            Function::new("explodes", "boom")
                .arg("source")
                .max_retries(0)
                .with_cost(Resources::new().cpu(1)),
        )
        .validate()
        .expect("valid DAG");
    let err = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect_err("it panics");
    assert_eq!(
        err,
        ExecuteError::FunctionFailed {
            function: "explodes".into(),
            attempts: 1,
            last_error: CallError::Panicked {
                code: "boom".into(),
                message: "kaboom".into(),
            },
        }
    );
    assert_all_released(&node).await;

    // The node still runs DAGs, costed or not.
    let dag = Dag::new()
        .with(
            Function::new("source", "identity")
                .extra_arg(42_i64)
                .with_cost(Resources::new().cpu(1)),
        )
        .with(
            Function::new("transform", "multiply")
                .arg("source")
                .extra_arg(2_i64),
        )
        .validate()
        .expect("valid DAG");
    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("the node survived the panic");
    assert_eq!(done.results.get::<i64>("transform"), Ok(84));
}

#[actix::test]
async fn a_panic_is_retried_like_any_failure() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::new();
    let counter = Arc::clone(&calls);
    registry
        .register("panics_once", move || {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("first time");
            }
            1_i64
        })
        .expect("register");
    let node = start_local(registry, Resources::new()).await;
    let dag = Dag::new()
        .with(Function::new("once", "panics_once"))
        .validate()
        .expect("valid DAG");
    let done = guarded(
        "execute",
        node.execute(dag, ExecuteOptions::default().max_retries(1)),
    )
    .await
    .expect("the retry succeeds");
    assert_eq!(done.results.get::<i64>("once"), Ok(1));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[actix::test]
async fn an_argument_of_the_wrong_type_is_a_typed_failure() {
    let mut registry = seed_registry();
    registry
        .register("text", || "not a number".to_owned())
        .expect("register");
    let node = start_local(registry, Resources::new()).await;
    let dag = Dag::new()
        .with(Function::new("text", "text"))
        .with(
            Function::new("number", "identity")
                .arg("text")
                .max_retries(0),
        )
        .validate()
        .expect("valid DAG");
    let err = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect_err("a string is not an i64");
    match err {
        ExecuteError::FunctionFailed {
            function,
            attempts: 1,
            last_error:
                CallError::Argument {
                    code,
                    position: 0,
                    source: ValueError::TypeMismatch { .. },
                },
        } => {
            assert_eq!(function.as_str(), "number");
            assert_eq!(code.as_str(), "identity");
        }
        other => panic!("expected an argument failure, got {other:?}"),
    }
}

/// Runs `dag` (its functions allowed 3 retries) and returns the error and how many
/// attempts of `function` started.
async fn fail_without_retry(registry: Registry, dag: ValidatedDag, function: &str) -> CallError {
    let node = start_local(registry, Resources::new()).await;
    let options = ExecuteOptions::default().max_retries(3);
    let err = guarded("execute", node.execute(dag, options))
        .await
        .expect_err("the call cannot succeed");
    let ExecuteError::FunctionFailed {
        function: failed,
        attempts,
        last_error,
    } = err
    else {
        panic!("expected a function failure, got {err:?}");
    };
    assert_eq!(failed.as_str(), function);
    assert_eq!(attempts, 1, "{last_error} cannot pass on a retry");
    last_error
}

#[actix::test]
async fn an_argument_of_the_wrong_type_is_not_retried() {
    let mut registry = seed_registry();
    registry
        .register("text", || "not a number".to_owned())
        .expect("register");
    let dag = Dag::new()
        .with(Function::new("text", "text"))
        .with(Function::new("number", "identity").arg("text"))
        .validate()
        .expect("valid DAG");
    let error = fail_without_retry(registry, dag, "number").await;
    assert!(
        matches!(error, CallError::Argument { position: 0, .. }),
        "{error:?}"
    );
}

#[actix::test]
async fn a_failing_inline_function_fails_its_dependent() {
    let mut registry = seed_registry();
    registry
        .register_fallible("refuse", |_: i64| -> Result<i64, String> {
            Err("no".to_owned())
        })
        .expect("register");
    let node = start_local(registry, Resources::new()).await;
    let dag = Dag::new()
        .with(Function::new("source", "identity").extra_arg(1_i64))
        .with(Function::new("view", "refuse").arg("source").inline())
        .with(
            Function::new("consumer", "identity")
                .arg("view")
                .max_retries(0),
        )
        .validate()
        .expect("valid DAG");
    let err = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect_err("the inline function fails");
    assert!(
        matches!(
            err,
            ExecuteError::FunctionFailed { ref function, attempts: 1, last_error: CallError::Failed { ref code, .. } }
                if function.as_str() == "consumer" && code.as_str() == "refuse"
        ),
        "{err:?}"
    );
}

/// A registry with `fail` (always fails) and `count` (counts its calls).
fn counting_registry(ran: &Arc<AtomicUsize>) -> Registry {
    let mut registry = Registry::new();
    registry
        .register_fallible("fail", || -> Result<i64, String> {
            Err("deliberate".to_owned())
        })
        .expect("register");
    let counter = Arc::clone(ran);
    registry
        .register("count", move |x: i64| {
            counter.fetch_add(1, Ordering::SeqCst);
            x
        })
        .expect("register");
    let counter = Arc::clone(ran);
    registry
        .register("count_root", move || {
            counter.fetch_add(1, Ordering::SeqCst);
            0_i64
        })
        .expect("register");
    registry
}

#[actix::test]
async fn nothing_downstream_of_a_failure_runs() {
    let ran = Arc::new(AtomicUsize::new(0));
    let node = start_local(counting_registry(&ran), Resources::new().cpu(4)).await;
    let mut dag = Dag::new().with(Function::new("bad", "fail").max_retries(0));
    for i in 0..50 {
        let mut f = Function::new(format!("after{i}"), "count").arg("bad");
        if i % 2 == 0 {
            f = f.with_cost(Resources::new().cpu(1));
        }
        dag.add_function(f);
        dag.add_function(Function::new(format!("then{i}"), "count").arg(format!("after{i}")));
    }
    let dag = dag.validate().expect("valid DAG");
    let err = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect_err("bad fails");
    assert!(
        matches!(err, ExecuteError::FunctionFailed { ref function, attempts: 1, .. } if function.as_str() == "bad"),
        "{err:?}"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0, "no dependent ran");
    assert_all_released(&node).await;
}

#[actix::test]
async fn functions_waiting_for_resources_never_start_after_a_failure() {
    // One cpu: `bad` holds it, every other function waits for it. Once `bad` has
    // failed, none of them may start.
    let ran = Arc::new(AtomicUsize::new(0));
    let node = start_local(counting_registry(&ran), Resources::new().cpu(1)).await;
    let cpu = Resources::new().cpu(1);
    let mut dag = Dag::new().with(
        Function::new("bad", "fail")
            .max_retries(0)
            .with_cost(cpu.clone()),
    );
    for i in 0..20 {
        dag.add_function(Function::new(format!("waiting{i}"), "count_root").with_cost(cpu.clone()));
    }
    let dag = dag.validate().expect("valid DAG");
    let err = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect_err("bad fails");
    assert!(
        matches!(err, ExecuteError::FunctionFailed { ref function, .. } if function.as_str() == "bad"),
        "{err:?}"
    );
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "nothing started after the failure"
    );
    assert_all_released(&node).await;
}

#[actix::test]
async fn functions_queued_behind_a_failure_never_start() {
    // Parallelism 1: the functions run one after the other, `bad` first (independent
    // functions keep the order they were added in). Once `bad` has failed with no
    // retries left, none of the others may start.
    let ran = Arc::new(AtomicUsize::new(0));
    let node = start_local(counting_registry(&ran), Resources::new()).await;
    let mut dag = Dag::new().with(Function::new("bad", "fail").max_retries(0));
    for i in 0..20 {
        dag.add_function(Function::new(format!("queued{i}"), "count_root"));
    }
    let dag = dag.validate().expect("valid DAG");
    assert_eq!(dag.functions()[0].id().as_str(), "bad");
    let err = guarded(
        "execute",
        node.execute(dag, ExecuteOptions::default().parallelism(1)),
    )
    .await
    .expect_err("bad fails");
    assert!(
        matches!(err, ExecuteError::FunctionFailed { ref function, .. } if function.as_str() == "bad"),
        "{err:?}"
    );
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "functions started after the DAG had failed"
    );
}

#[actix::test]
async fn a_failing_dag_does_not_disturb_another_running_beside_it() {
    let ran = Arc::new(AtomicUsize::new(0));
    let mut registry = counting_registry(&ran);
    registry
        .register("double", |x: i64| x * 2)
        .expect("register");
    let node = start_local(registry, Resources::new().cpu(2)).await;
    let failing = Dag::with_id("failing")
        .with(Function::new("bad", "fail").max_retries(0))
        .with(Function::new("never", "count").arg("bad"))
        .validate()
        .expect("valid DAG");
    let mut healthy = Dag::with_id("healthy")
        .with(Function::new("x0", "count_root").with_cost(Resources::new().cpu(1)));
    for i in 1..=10 {
        healthy.add_function(Function::new(format!("x{i}"), "count").arg(format!("x{}", i - 1)));
    }
    let healthy = healthy.validate().expect("valid DAG");
    let (failed, succeeded) = guarded(
        "two executions",
        futures::future::join(
            node.execute(failing, ExecuteOptions::default()),
            node.execute(healthy, ExecuteOptions::default()),
        ),
    )
    .await;
    assert!(
        matches!(failed, Err(ExecuteError::FunctionFailed { .. })),
        "{failed:?}"
    );
    let done = succeeded.expect("the other DAG runs to the end");
    assert_eq!(done.results.len(), 11);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        11,
        "only the healthy DAG's functions"
    );
    assert_all_released(&node).await;
}

/// A function fails for good while a sibling (costed, its code ignoring cancellation)
/// still runs: the outcome comes at once, the sibling's reservation stays held until its
/// code returns, its end is in the events, and then everything is given back.
#[actix::test]
async fn a_failure_is_told_without_waiting_for_running_siblings() {
    use futures::StreamExt;
    use handoff::EventKind;
    use std::sync::Mutex;
    use std::sync::mpsc;
    use std::time::Duration;

    let (started_tx, started_rx) = mpsc::sync_channel::<()>(1);
    let (release_tx, release_rx) = mpsc::sync_channel::<()>(1);
    let started_rx = Mutex::new(started_rx);
    let release_rx = Mutex::new(release_rx);
    let mut registry = Registry::new();
    registry
        .register("stubborn", move || {
            started_tx.send(()).expect("the test listens");
            // Ignores `is_cancelled()`; the bound only keeps a broken test from hanging.
            let _ = release_rx
                .lock()
                .expect("lock")
                .recv_timeout(Duration::from_secs(60));
            1_i64
        })
        .expect("register");
    registry
        .register_fallible("boom", move || -> Result<i64, String> {
            let _ = started_rx
                .lock()
                .expect("lock")
                .recv_timeout(Duration::from_secs(60));
            Err("boom".to_owned())
        })
        .expect("register");
    let node = start_local(registry, Resources::new().cpu(2)).await;
    let dag = Dag::new()
        .with(Function::new("stubborn", "stubborn").with_cost(Resources::new().cpu(1)))
        .with(Function::new("boom", "boom").max_retries(0))
        .validate()
        .expect("valid DAG");
    let options = ExecuteOptions::default().events(1024);
    let mut handle = guarded("submit", node.submit(dag, options))
        .await
        .expect("feasible");
    let events = handle.events().expect("asked for events");
    let events = actix::spawn(events.collect::<Vec<_>>());
    let err = guarded("outcome", handle.outcome())
        .await
        .expect_err("boom fails");
    assert!(
        matches!(&err, ExecuteError::FunctionFailed { function, .. } if function.as_str() == "boom"),
        "{err:?}"
    );
    // `stubborn` is still running: its cpu is still reserved.
    let (_, available) = guarded("node_resources", node.node_resources(NodeId::new("local")))
        .await
        .expect("node alive")
        .expect("registered");
    assert_eq!(
        available.get("cpu"),
        1.into(),
        "the running sibling keeps its cpu"
    );
    release_tx.send(()).expect("stubborn listens");
    let events = guarded("events", events).await.expect("collected");
    let finished = events.iter().position(|e| {
        matches!(&e.kind, EventKind::Finished { function, .. } if function.as_str() == "stubborn")
    });
    let ended = events
        .iter()
        .position(|e| matches!(e.kind, EventKind::Ended { ok: false }));
    assert!(
        matches!((finished, ended), (Some(f), Some(e)) if f < e),
        "stubborn's end comes before the execution's: {events:?}"
    );
    assert_all_released(&node).await;
}

/// Calls nobody waits for any more (timed out, their code ignoring `is_cancelled()`)
/// cannot take every thread of the node: past `max_abandoned_calls`, a new call fails
/// with a typed error saying why instead of waiting forever for a thread; once they
/// return, the node runs calls again.
#[actix::test]
async fn calls_nobody_waits_for_cannot_take_every_thread() {
    use common::Gate;
    use handoff::{NodeConfig, start_node};
    use std::time::Duration;

    let gate = Arc::new(Gate::new());
    let mut registry = Registry::new();
    let g = Arc::clone(&gate);
    registry
        .register("stuck", move || {
            g.wait();
            1_i64
        })
        .expect("register");
    registry.register("one", || 1_i64).expect("register");
    let config = NodeConfig::new("local", registry).max_abandoned_calls(1);
    let node = guarded("start_node", start_node(config))
        .await
        .expect("starts");
    let stuck = Dag::new()
        .with(
            Function::new("stuck", "stuck")
                .timeout(Duration::from_millis(20))
                .max_retries(0),
        )
        .validate()
        .expect("valid DAG");
    let err = guarded("execute", node.execute(stuck, ExecuteOptions::default()))
        .await
        .expect_err("times out");
    assert!(
        matches!(
            &err,
            ExecuteError::FunctionFailed {
                last_error: CallError::TimedOut { .. },
                ..
            }
        ),
        "{err:?}"
    );
    let one = || {
        Dag::new()
            .with(Function::new("one", "one"))
            .validate()
            .expect("valid DAG")
    };
    // Refused at once, without waiting between attempts.
    let quick = || {
        ExecuteOptions::default()
            .backoff(handoff::Backoff::None)
            .max_retries(0)
    };
    let err = guarded("execute", node.execute(one(), quick()))
        .await
        .expect_err("no thread may be given");
    match &err {
        ExecuteError::FunctionFailed {
            last_error: CallError::Unavailable { reason, .. },
            ..
        } => assert!(reason.contains("still running"), "{reason}"),
        other => panic!("expected a typed refusal, got {other:?}"),
    }
    gate.open();
    guarded("the node runs calls again", async {
        while node.execute(one(), quick()).await.is_err() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}
