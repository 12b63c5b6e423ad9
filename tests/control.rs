//! Execution control through the `handoff` facade: event streams, timeouts,
//! cancellation, retry backoff, priorities, the lifetime of stored values, and
//! rejections that list every problem.
//!
//! Nothing waits on the clock to synchronise: functions report through channels and
//! gates, retry waits run on tokio's paused clock, and the only real timeouts are the
//! function timeouts under test (and hang guards).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Gate, guarded, spin_until, start_local};
use futures::StreamExt;
use handoff::{
    AllocationError, Backoff, CallError, CancellationToken, Dag, DagId, Event, EventKind,
    EventStream, ExecuteError, ExecuteOptions, Function, FunctionId, NodeHandle, NodeId, Problem,
    Registry, Resources, ValidatedDag, is_cancelled,
};
use tokio::sync::mpsc;

fn local() -> NodeId {
    NodeId::new("local")
}

fn cpu(n: u32) -> Resources {
    Resources::new().cpu(n)
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).expect("fits"))
        .expect("after the epoch")
}

/// Every event of a stream, once it has ended.
async fn all_events(stream: EventStream) -> Vec<Event> {
    guarded("the event stream ends", stream.collect::<Vec<_>>()).await
}

/// The events about one function, in order.
fn events_of(events: &[Event], function: &str) -> Vec<EventKind> {
    events
        .iter()
        .filter(|e| e.kind.function().is_some_and(|f| f.as_str() == function))
        .map(|e| e.kind.clone())
        .collect()
}

/// The functions in the order of their `Started` events.
fn started_order(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Started { function, .. } => Some(function.as_str().to_owned()),
            _ => None,
        })
        .collect()
}

/// The `backoff` of each `Retried` event, in order.
fn retry_waits(events: &[Event]) -> Vec<Duration> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Retried { backoff, .. } => Some(*backoff),
            _ => None,
        })
        .collect()
}

fn position(order: &[String], function: &str) -> usize {
    order
        .iter()
        .position(|f| f == function)
        .unwrap_or_else(|| panic!("`{function}` never started: {order:?}"))
}

async fn assert_all_released(node: &NodeHandle) {
    let (capacity, available) = guarded("node_resources", node.node_resources(local()))
        .await
        .expect("node alive")
        .expect("the local node is registered");
    assert_eq!(available, capacity, "every reservation was given back");
}

async fn stored_values(node: &NodeHandle) -> usize {
    guarded("stored_values", node.stored_values())
        .await
        .expect("node alive")
}

/// Receives one report a function sent, failing the test if none comes.
async fn report<T>(rx: &mut mpsc::Receiver<T>, what: &str) -> T {
    guarded(what, rx.recv())
        .await
        .unwrap_or_else(|| panic!("`{what}`: every sender is gone"))
}

// ---------------------------------------------------------------------------------
// Event stream
// ---------------------------------------------------------------------------------

#[actix::test]
async fn the_event_stream_reports_every_step_with_ids_attempts_nodes_and_times() {
    let calls = Arc::new(AtomicU32::new(0));
    let mut registry = Registry::new();
    registry.register("one", || 1_i64).expect("register");
    registry.register("inc", |x: i64| x + 1).expect("register");
    let counter = Arc::clone(&calls);
    registry
        .register_fallible("fails_once", move |x: i64| {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                Err("first attempt fails".to_owned())
            } else {
                Ok(x * 10)
            }
        })
        .expect("register");
    let node = start_local(registry, cpu(2)).await;
    let dag = Dag::new()
        .with(Function::new("src", "one").with_cost(cpu(1)))
        .with(
            Function::new("flaky", "fails_once")
                .arg("src")
                .backoff(Backoff::None),
        )
        .with(Function::new("sink", "inc").arg("flaky").with_cost(cpu(1)))
        .validate()
        .expect("valid DAG");
    let dag_id = dag.id().clone();

    let before = now_micros();
    let options = ExecuteOptions::default()
        .events(1024)
        .free_intermediates(std::iter::empty::<&str>());
    let mut handle = guarded("submit", node.submit(dag, options))
        .await
        .expect("feasible");
    assert_eq!(handle.dag_id(), &dag_id);
    let stream = handle.events().expect("asked for events");
    assert!(handle.events().is_none(), "the stream is handed out once");
    let done = guarded("outcome", handle.outcome()).await.expect("runs");
    let after = now_micros();
    assert_eq!(done.results.get::<i64>("sink"), Ok(11));

    let events = all_events(stream).await;
    for event in &events {
        assert_eq!(event.dag, dag_id, "{event:?}");
        assert!(
            (before..=after).contains(&event.at_micros),
            "{event:?} is stamped outside the execution ({before}..={after})"
        );
    }
    assert_eq!(
        events.last().map(|e| &e.kind),
        Some(&EventKind::Ended { ok: true }),
        "the last event says the execution ended well"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Ended { .. }))
            .count(),
        1
    );

    let f = |id: &str| FunctionId::new(id);
    assert_eq!(
        events_of(&events, "src"),
        [
            EventKind::Ready { function: f("src") },
            EventKind::Reserved {
                function: f("src"),
                node: local(),
            },
            EventKind::Started {
                function: f("src"),
                attempt: 1,
                node: local(),
            },
            EventKind::Finished {
                function: f("src"),
                attempt: 1,
                node: local(),
            },
            EventKind::Stored {
                function: f("src"),
                node: local(),
            },
            EventKind::Freed { function: f("src") },
        ]
    );
    // A retried function may be announced `Ready` again before its next attempt.
    let mut flaky = events_of(&events, "flaky");
    let mut first = true;
    flaky.retain(|k| !matches!(k, EventKind::Ready { .. }) || std::mem::take(&mut first));
    assert_eq!(
        flaky,
        [
            EventKind::Ready {
                function: f("flaky")
            },
            EventKind::Started {
                function: f("flaky"),
                attempt: 1,
                node: local(),
            },
            EventKind::Failed {
                function: f("flaky"),
                attempt: 1,
                node: local(),
                error: CallError::Failed {
                    code: "fails_once".into(),
                    message: "first attempt fails".into(),
                },
            },
            EventKind::Retried {
                function: f("flaky"),
                next_attempt: 2,
                backoff: Duration::ZERO,
            },
            EventKind::Started {
                function: f("flaky"),
                attempt: 2,
                node: local(),
            },
            EventKind::Finished {
                function: f("flaky"),
                attempt: 2,
                node: local(),
            },
            EventKind::Stored {
                function: f("flaky"),
                node: local(),
            },
            EventKind::Freed {
                function: f("flaky"),
            },
        ]
    );
    assert_eq!(
        events_of(&events, "sink"),
        [
            EventKind::Ready {
                function: f("sink")
            },
            EventKind::Reserved {
                function: f("sink"),
                node: local(),
            },
            EventKind::Started {
                function: f("sink"),
                attempt: 1,
                node: local(),
            },
            EventKind::Finished {
                function: f("sink"),
                attempt: 1,
                node: local(),
            },
            EventKind::Stored {
                function: f("sink"),
                node: local(),
            },
        ],
        "the sink is kept: no `Freed`"
    );
    // An attempt starts before it ends, and a function runs after its dependency ended.
    let at = |pred: &dyn Fn(&EventKind) -> bool| {
        events
            .iter()
            .find(|e| pred(&e.kind))
            .map(|e| e.at_micros)
            .expect("event present")
    };
    let started = |id: &'static str, n: u32| move |k: &EventKind| matches!(k, EventKind::Started { function, attempt, .. } if function.as_str() == id && *attempt == n);
    let finished = |id: &'static str, n: u32| move |k: &EventKind| matches!(k, EventKind::Finished { function, attempt, .. } if function.as_str() == id && *attempt == n);
    assert!(at(&started("src", 1)) <= at(&finished("src", 1)));
    assert!(at(&finished("src", 1)) <= at(&started("flaky", 1)));
    assert!(at(&started("flaky", 2)) <= at(&finished("flaky", 2)));
    assert!(at(&finished("flaky", 2)) <= at(&started("sink", 1)));
}

#[actix::test]
async fn without_events_there_is_no_stream() {
    let mut registry = Registry::new();
    registry.register("one", || 1_i64).expect("register");
    let node = start_local(registry, Resources::new()).await;
    let dag = Dag::new()
        .with(Function::new("a", "one"))
        .validate()
        .expect("valid DAG");
    let mut handle = guarded("submit", node.submit(dag, ExecuteOptions::default()))
        .await
        .expect("feasible");
    assert!(handle.events().is_none());
    guarded("outcome", handle.outcome()).await.expect("runs");
}

fn round_trip(event: &Event) {
    let compact = rmp_serde::to_vec(event).expect("serializes");
    let back: Event = rmp_serde::from_slice(&compact).expect("deserializes");
    assert_eq!(&back, event);
    let named = rmp_serde::to_vec_named(event).expect("serializes with names");
    let back: Event = rmp_serde::from_slice(&named).expect("deserializes with names");
    assert_eq!(&back, event);
}

#[actix::test]
async fn events_round_trip_through_messagepack() {
    // Every kind, built by hand (some never happen in a short successful run)...
    let dag = DagId::new("dag-1");
    let function = FunctionId::new("f");
    let kinds = [
        EventKind::Ready {
            function: function.clone(),
        },
        EventKind::Reserved {
            function: function.clone(),
            node: local(),
        },
        EventKind::Started {
            function: function.clone(),
            attempt: 2,
            node: local(),
        },
        EventKind::Finished {
            function: function.clone(),
            attempt: 2,
            node: local(),
        },
        EventKind::Failed {
            function: function.clone(),
            attempt: 3,
            node: local(),
            error: CallError::TimedOut {
                code: "spin".into(),
                after: Duration::from_millis(1500),
            },
        },
        EventKind::Failed {
            function: function.clone(),
            attempt: 1,
            node: local(),
            error: CallError::Failed {
                code: "spin".into(),
                message: "boom".into(),
            },
        },
        EventKind::Retried {
            function: function.clone(),
            next_attempt: 4,
            backoff: Duration::from_micros(12_345),
        },
        EventKind::Cancelled {
            function: function.clone(),
            attempt: 1,
        },
        EventKind::Stored {
            function: function.clone(),
            node: local(),
        },
        EventKind::Freed {
            function: function.clone(),
        },
        EventKind::Ended { ok: false },
        EventKind::Lagged { missed: 17 },
    ];
    for (i, kind) in kinds.into_iter().enumerate() {
        round_trip(&Event {
            at_micros: 1_700_000_000_000_000 + i as u64,
            dag: dag.clone(),
            kind,
        });
    }

    // ...and every event of a real run, retry included.
    let calls = Arc::new(AtomicU32::new(0));
    let mut registry = Registry::new();
    let counter = Arc::clone(&calls);
    registry
        .register_fallible("fails_once", move || {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                Err("no")
            } else {
                Ok(1_i64)
            }
        })
        .expect("register");
    let node = start_local(registry, cpu(1)).await;
    let dag = Dag::new()
        .with(
            Function::new("a", "fails_once")
                .with_cost(cpu(1))
                .backoff(Backoff::None),
        )
        .validate()
        .expect("valid DAG");
    let mut handle = guarded(
        "submit",
        node.submit(dag, ExecuteOptions::default().events(64)),
    )
    .await
    .expect("feasible");
    let stream = handle.events().expect("asked for events");
    guarded("outcome", handle.outcome()).await.expect("runs");
    let events = all_events(stream).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Retried { .. })),
        "{events:?}"
    );
    for event in &events {
        round_trip(event);
    }
}

#[actix::test]
async fn a_consumer_that_never_reads_does_not_stall_the_execution() {
    let mut registry = Registry::new();
    registry.register("id", |x: i64| x).expect("register");
    let node = start_local(registry, Resources::new()).await;
    let mut dag = Dag::new();
    for i in 0..200_i64 {
        dag.add_function(Function::new(format!("f{i}"), "id").extra_arg(i));
    }
    let dag = dag.validate().expect("valid DAG");
    let dag_id = dag.id().clone();
    let mut handle = guarded(
        "submit",
        node.submit(dag, ExecuteOptions::default().events(4)),
    )
    .await
    .expect("feasible");
    let mut stream = handle.events().expect("asked for events");
    // Not reading: a buffer of 4 fills at once, yet all 200 functions run.
    let done = guarded("outcome", handle.outcome())
        .await
        .expect("runs although nobody reads the events");
    assert_eq!(done.results.len(), 200);
    assert_eq!(done.results.get::<i64>("f199"), Ok(199));

    let mut events = Vec::new();
    while let Some(event) = guarded("next event", stream.next()).await {
        assert_eq!(event.dag, dag_id);
        events.push(event.kind);
    }
    assert!(events.len() <= 6, "bounded: {events:?}");
    let missed: u64 = events
        .iter()
        .filter_map(|k| match k {
            EventKind::Lagged { missed } => Some(*missed),
            _ => None,
        })
        .sum();
    // 200 functions make at least 800 events (ready, started, finished, stored).
    assert!(
        missed >= 800 - 5,
        "the stream says how many events were dropped: {events:?}"
    );
    let lagged = events
        .iter()
        .position(|k| matches!(k, EventKind::Lagged { .. }))
        .expect("a `Lagged` event");
    assert!(
        events[lagged + 1..]
            .iter()
            .all(|k| matches!(k, EventKind::Ended { .. })),
        "after the lag, only the end may follow: {events:?}"
    );
}

// ---------------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------------

const TIMEOUT: Duration = Duration::from_millis(200);

/// `spin` loops until its call is told to stop, then reports what its
/// `CancellationToken` and `is_cancelled()` said (`false` if the hang guard expired).
fn spinning_registry(calls: &Arc<AtomicU32>, reports: mpsc::Sender<(bool, bool)>) -> Registry {
    let mut registry = Registry::new();
    let calls = Arc::clone(calls);
    registry
        .register("spin", move || {
            calls.fetch_add(1, Ordering::SeqCst);
            let token = CancellationToken::current().expect("a call has a token");
            let stopped = spin_until(|| token.is_cancelled());
            let _ = reports.blocking_send((stopped && token.is_cancelled(), is_cancelled()));
            0_i64
        })
        .expect("register");
    registry
}

#[actix::test]
async fn an_attempt_past_its_timeout_fails_is_retried_and_is_told_to_stop() {
    let calls = Arc::new(AtomicU32::new(0));
    let (tx, mut rx) = mpsc::channel(8);
    let node = start_local(spinning_registry(&calls, tx), Resources::new()).await;
    let dag = Dag::new()
        .with(
            Function::new("spin", "spin")
                .timeout(TIMEOUT)
                .max_retries(1)
                .backoff(Backoff::None),
        )
        .validate()
        .expect("valid DAG");
    let mut handle = guarded(
        "submit",
        node.submit(dag, ExecuteOptions::default().events(64)),
    )
    .await
    .expect("feasible");
    let stream = handle.events().expect("asked for events");
    let err = guarded("outcome", handle.outcome())
        .await
        .expect_err("every attempt times out");
    let timed_out = CallError::TimedOut {
        code: "spin".into(),
        after: TIMEOUT,
    };
    assert_eq!(
        err,
        ExecuteError::FunctionFailed {
            function: "spin".into(),
            attempts: 2,
            last_error: timed_out.clone(),
        },
        "a timed-out attempt counts as an attempt and is retried"
    );
    // Each attempt's call sees its token, and `is_cancelled()`, turn true.
    for attempt in 1..=2 {
        let (token, flag) = report(&mut rx, "a timed-out call stops").await;
        assert!(token, "attempt {attempt}: the token turned cancelled");
        assert!(flag, "attempt {attempt}: is_cancelled() turned true");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    let events = all_events(stream).await;
    let failed: Vec<(u32, CallError)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Failed { attempt, error, .. } => Some((*attempt, error.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(failed, [(1, timed_out.clone()), (2, timed_out)]);
    assert!(events.iter().any(|e| e.kind
        == EventKind::Retried {
            function: "spin".into(),
            next_attempt: 2,
            backoff: Duration::ZERO,
        }));
    assert_eq!(
        events.last().map(|e| &e.kind),
        Some(&EventKind::Ended { ok: false })
    );
}

#[actix::test]
async fn a_timed_out_call_is_told_to_stop_while_the_execution_goes_on() {
    // The first attempt spins until told to stop; the second succeeds at once. The
    // execution succeeds, so only the attempt's own timeout can stop the first call.
    let calls = Arc::new(AtomicU32::new(0));
    let (tx, mut rx) = mpsc::channel(8);
    let mut registry = Registry::new();
    let counter = Arc::clone(&calls);
    registry
        .register("spin_once", move || {
            let attempt = counter.fetch_add(1, Ordering::SeqCst) + 1;
            if attempt == 1 {
                let token = CancellationToken::current().expect("a call has a token");
                let stopped = spin_until(|| token.is_cancelled());
                let _ = tx.blocking_send((stopped && token.is_cancelled(), is_cancelled()));
            }
            i64::from(attempt)
        })
        .expect("register");
    let node = start_local(registry, Resources::new()).await;
    let dag = Dag::new()
        .with(
            Function::new("spin", "spin_once")
                .timeout(TIMEOUT)
                .max_retries(1)
                .backoff(Backoff::None),
        )
        .validate()
        .expect("valid DAG");
    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("the second attempt succeeds");
    assert_eq!(done.results.get::<i64>("spin"), Ok(2));
    let (token, flag) = report(&mut rx, "the timed-out call stops").await;
    assert!(token, "the first attempt's token turned cancelled");
    assert!(flag, "is_cancelled() turned true in the first attempt");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[actix::test]
async fn the_executions_timeout_is_the_default_and_a_functions_own_overrides_it() {
    let calls = Arc::new(AtomicU32::new(0));
    let (tx, mut rx) = mpsc::channel(8);
    let node = start_local(spinning_registry(&calls, tx), Resources::new()).await;

    // The execution's timeout applies to a function without one of its own.
    let dag = Dag::new()
        .with(Function::new("spin", "spin").max_retries(0))
        .validate()
        .expect("valid DAG");
    let err = guarded(
        "execute",
        node.execute(dag, ExecuteOptions::default().timeout(TIMEOUT)),
    )
    .await
    .expect_err("times out");
    assert_eq!(
        err,
        ExecuteError::FunctionFailed {
            function: "spin".into(),
            attempts: 1,
            last_error: CallError::TimedOut {
                code: "spin".into(),
                after: TIMEOUT,
            },
        }
    );
    assert_eq!(report(&mut rx, "stops").await, (true, true));

    // A function's own timeout wins over the execution's (which would outlast the test).
    let own = Duration::from_millis(100);
    let dag = Dag::new()
        .with(Function::new("spin", "spin").max_retries(0).timeout(own))
        .validate()
        .expect("valid DAG");
    let err = guarded(
        "execute",
        node.execute(
            dag,
            ExecuteOptions::default().timeout(Duration::from_secs(3600)),
        ),
    )
    .await
    .expect_err("times out");
    assert_eq!(
        err,
        ExecuteError::FunctionFailed {
            function: "spin".into(),
            attempts: 1,
            last_error: CallError::TimedOut {
                code: "spin".into(),
                after: own,
            },
        }
    );
    assert_eq!(report(&mut rx, "stops").await, (true, true));
}

/// Opens its gate when dropped.
struct OpenOnDrop(Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

#[actix::test]
async fn a_timed_out_attempt_gives_its_reservation_back_while_its_thread_is_still_busy() {
    // On a cpu-1 node, `stuck`'s first attempt blocks on a gate that opens only at the
    // very end, ignoring cancellation. Once it times out, `other` (cpu 1) and `stuck`'s
    // second attempt (cpu 1) both run: the first attempt's cpu was given back.
    let gate = Arc::new(Gate::new());
    // Should an assertion fail, the stuck thread is let go at once.
    let _let_go = OpenOnDrop(Arc::clone(&gate));
    let calls = Arc::new(AtomicU32::new(0));
    let (left_tx, mut left_rx) = mpsc::channel(4);
    let mut registry = Registry::new();
    let (g, c) = (Arc::clone(&gate), Arc::clone(&calls));
    registry
        .register("stuck", move || {
            let attempt = c.fetch_add(1, Ordering::SeqCst) + 1;
            if attempt == 1 {
                let opened = g.wait();
                let _ = left_tx.blocking_send(opened);
            }
            i64::from(attempt)
        })
        .expect("register");
    registry.register("other", || 7_i64).expect("register");
    let node = start_local(registry, cpu(1)).await;
    let dag = Dag::new()
        .with(
            Function::new("stuck", "stuck")
                .with_cost(cpu(1))
                .timeout(TIMEOUT)
                .max_retries(1)
                .backoff(Backoff::None)
                // Reserved first, so that `other` waits for its cpu.
                .priority(1),
        )
        .with(Function::new("other", "other").with_cost(cpu(1)))
        .validate()
        .expect("valid DAG");
    let mut handle = guarded(
        "submit",
        node.submit(dag, ExecuteOptions::default().events(64)),
    )
    .await
    .expect("feasible");
    let stream = handle.events().expect("asked for events");
    let done = guarded("outcome", handle.outcome())
        .await
        .expect("the second attempt and `other` run on the cpu the first gave back");
    assert!(!gate.is_open());
    assert_eq!(done.results.get::<i64>("stuck"), Ok(2));
    assert_eq!(done.results.get::<i64>("other"), Ok(7));
    let events = all_events(stream).await;
    let first_failure = events
        .iter()
        .position(|e| {
            matches!(&e.kind, EventKind::Failed { function, attempt: 1, error: CallError::TimedOut { .. }, .. } if function.as_str() == "stuck")
        })
        .expect("the first attempt timed out");
    let first_reserved = |id: &str| {
        events
            .iter()
            .position(|e| matches!(&e.kind, EventKind::Reserved { function, .. } if function.as_str() == id))
            .expect("reserved")
    };
    assert!(
        first_reserved("stuck") < first_reserved("other"),
        "`stuck` held the cpu first"
    );
    assert!(
        first_failure < first_reserved("other"),
        "`other` got the cpu once the first attempt timed out: {events:?}"
    );
    assert_all_released(&node).await;

    gate.open();
    assert!(report(&mut left_rx, "the stuck thread returns").await);
    assert_all_released(&node).await;
}

// ---------------------------------------------------------------------------------
// Cancellation
// ---------------------------------------------------------------------------------

/// A result that reads as its `value` and says when the last copy of it is dropped.
struct DropSignal {
    value: i64,
    dropped: mpsc::Sender<()>,
}

impl serde::Serialize for DropSignal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.dropped.try_send(());
    }
}

#[actix::test]
async fn cancel_stops_the_running_starts_nothing_and_keeps_what_finished() {
    let (started_tx, mut started_rx) = mpsc::channel(4);
    let (exited_tx, mut exited_rx) = mpsc::channel(4);
    let (dropped_tx, mut dropped_rx) = mpsc::channel(4);
    let pending_runs = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::new();
    registry.register("one", || 1_i64).expect("register");
    registry
        .register("until_cancelled", move |x: i64| {
            let _ = started_tx.blocking_send(());
            let _ = exited_tx.blocking_send(spin_until(is_cancelled));
            DropSignal {
                value: x,
                dropped: dropped_tx.clone(),
            }
        })
        .expect("register");
    let counter = Arc::clone(&pending_runs);
    registry
        .register("counted", move |x: i64| {
            counter.fetch_add(1, Ordering::SeqCst);
            x
        })
        .expect("register");
    let node = start_local(registry, cpu(1)).await;
    let dag = Dag::new()
        .with(Function::new("first", "one"))
        .with(
            Function::new("running", "until_cancelled")
                .arg("first")
                .with_cost(cpu(1)),
        )
        // Waits for `running`'s value.
        .with(
            Function::new("after", "counted")
                .arg("running")
                .with_cost(cpu(1)),
        )
        // Waits for the cpu `running` holds.
        .with(
            Function::new("waiting", "counted")
                .arg("first")
                .with_cost(cpu(1))
                .priority(-1),
        )
        .validate()
        .expect("valid DAG");
    let dag_id = dag.id().clone();
    let mut handle = guarded(
        "submit",
        node.submit(dag, ExecuteOptions::default().events(256)),
    )
    .await
    .expect("feasible");
    let stream = handle.events().expect("asked for events");
    report(&mut started_rx, "`running` starts").await;
    handle.cancel();
    let err = guarded("outcome", handle.outcome())
        .await
        .expect_err("cancelled");
    let ExecuteError::Cancelled { dag, finished } = err else {
        panic!("expected Cancelled, got {err:?}");
    };
    assert_eq!(dag, dag_id);
    assert_eq!(finished.get::<i64>("first"), Ok(1), "what finished is kept");
    assert!(finished.value("running").is_none());
    assert_eq!(finished.len(), 1);
    assert_all_released(&node).await;

    assert!(
        report(&mut exited_rx, "`running` stops").await,
        "the running call saw is_cancelled()"
    );
    // Its job has let go of its value: it is done, and `after` (which that job would
    // have run next, on the same thread) did not start.
    report(&mut dropped_rx, "`running`'s job ends").await;
    assert_eq!(
        pending_runs.load(Ordering::SeqCst),
        0,
        "nothing pending started"
    );
    let events = all_events(stream).await;
    assert!(
        events.iter().any(|e| e.kind
            == EventKind::Cancelled {
                function: "running".into(),
                attempt: 1,
            }),
        "{events:?}"
    );
    let started = started_order(&events);
    assert!(
        !started.iter().any(|f| f == "after" || f == "waiting"),
        "{started:?}"
    );
    assert_eq!(
        events.last().map(|e| &e.kind),
        Some(&EventKind::Ended { ok: false })
    );
    assert_eq!(
        stored_values(&node).await,
        0,
        "a cancelled DAG's values are freed"
    );
}

/// `wait` reports that it started, waits until its call is cancelled or `gate` opens,
/// then reports whether it was cancelled; `after` reports that it ran.
fn waiting_registry(
    gate: &Arc<Gate>,
    started: mpsc::Sender<()>,
    cancelled: mpsc::Sender<bool>,
    after: mpsc::Sender<()>,
) -> Registry {
    let mut registry = Registry::new();
    let gate = Arc::clone(gate);
    registry
        .register("wait", move || {
            let _ = started.blocking_send(());
            spin_until(|| is_cancelled() || gate.is_open());
            let _ = cancelled.blocking_send(is_cancelled());
            1_i64
        })
        .expect("register");
    registry
        .register("after", move |x: i64| {
            let _ = after.blocking_send(());
            x
        })
        .expect("register");
    registry
}

fn wait_then_after() -> ValidatedDag {
    Dag::new()
        .with(Function::new("wait", "wait"))
        .with(Function::new("after", "after").arg("wait"))
        .validate()
        .expect("valid DAG")
}

#[actix::test]
async fn dropping_a_handle_cancels_only_with_cancel_on_drop() {
    let gate = Arc::new(Gate::new());
    let (started_tx, mut started_rx) = mpsc::channel(4);
    let (cancelled_tx, mut cancelled_rx) = mpsc::channel(4);
    let (after_tx, mut after_rx) = mpsc::channel(4);
    let registry = waiting_registry(&gate, started_tx, cancelled_tx, after_tx);
    let node = start_local(registry, Resources::new()).await;

    // With cancel_on_drop: the gate stays shut, so only a cancellation lets `wait` return.
    let handle = guarded(
        "submit",
        node.submit(
            wait_then_after(),
            ExecuteOptions::default().cancel_on_drop(true),
        ),
    )
    .await
    .expect("feasible");
    report(&mut started_rx, "`wait` starts").await;
    drop(handle);
    assert!(
        report(&mut cancelled_rx, "`wait` returns").await,
        "dropping the handle cancelled the call"
    );

    // Without it: after the drop, `wait` is not cancelled and the execution goes on.
    let handle = guarded(
        "submit",
        node.submit(wait_then_after(), ExecuteOptions::default()),
    )
    .await
    .expect("feasible");
    report(&mut started_rx, "`wait` starts").await;
    drop(handle);
    gate.open();
    assert!(
        !report(&mut cancelled_rx, "`wait` returns").await,
        "dropping a plain handle does not cancel"
    );
    report(&mut after_rx, "the execution goes on to `after`").await;

    // A handle with cancel_on_drop that is awaited is not cancelled by the await.
    let done = guarded(
        "outcome",
        node.submit(
            wait_then_after(),
            ExecuteOptions::default().cancel_on_drop(true),
        ),
    )
    .await
    .expect("feasible")
    .outcome();
    let done = guarded("outcome", done).await.expect("runs to the end");
    assert_eq!(done.results.get::<i64>("after"), Ok(1));
}

/// With `cancel_on_drop`, a future awaiting the outcome that is dropped (here by a
/// `select!` whose other branch won) cancels the execution.
#[actix::test]
async fn dropping_the_awaiting_future_cancels_with_cancel_on_drop() {
    let gate = Arc::new(Gate::new());
    let (started_tx, mut started_rx) = mpsc::channel(4);
    let (cancelled_tx, mut cancelled_rx) = mpsc::channel(4);
    let (after_tx, _after_rx) = mpsc::channel(4);
    let registry = waiting_registry(&gate, started_tx, cancelled_tx, after_tx);
    let node = start_local(registry, Resources::new()).await;
    let handle = guarded(
        "submit",
        node.submit(
            wait_then_after(),
            ExecuteOptions::default().cancel_on_drop(true),
        ),
    )
    .await
    .expect("feasible");
    let outcome = handle.outcome();
    tokio::select! {
        _ = outcome => panic!("`wait` cannot end while the gate is shut"),
        _ = report(&mut started_rx, "`wait` starts") => {}
    }
    // The select dropped the awaiting future.
    assert!(
        report(&mut cancelled_rx, "`wait` returns").await,
        "dropping the awaiting future cancelled the call"
    );
}

/// A canceller cloned from the handle cancels the execution while the handle itself is
/// being awaited elsewhere.
#[actix::test]
async fn a_canceller_cancels_while_the_outcome_is_awaited() {
    let gate = Arc::new(Gate::new());
    let (started_tx, mut started_rx) = mpsc::channel(4);
    let (cancelled_tx, mut cancelled_rx) = mpsc::channel(4);
    let (after_tx, _after_rx) = mpsc::channel(4);
    let registry = waiting_registry(&gate, started_tx, cancelled_tx, after_tx);
    let node = start_local(registry, Resources::new()).await;
    let handle = guarded(
        "submit",
        node.submit(wait_then_after(), ExecuteOptions::default()),
    )
    .await
    .expect("feasible");
    let canceller = handle.canceller();
    let waiting = actix::spawn(handle.outcome());
    report(&mut started_rx, "`wait` starts").await;
    let again = canceller.clone();
    canceller.cancel();
    again.cancel();
    let err = guarded("outcome", waiting)
        .await
        .expect("joined")
        .expect_err("cancelled");
    assert!(matches!(err, ExecuteError::Cancelled { .. }), "{err:?}");
    assert!(report(&mut cancelled_rx, "`wait` returns").await);
}

/// Past its deadline, an execution stops and fails with a typed error naming what had
/// not finished; the node's capacity is all back.
#[actix::test]
async fn an_execution_past_its_deadline_fails_naming_the_unfinished() {
    let gate = Arc::new(Gate::new());
    let (started_tx, mut started_rx) = mpsc::channel(4);
    let (cancelled_tx, mut cancelled_rx) = mpsc::channel(4);
    let (after_tx, _after_rx) = mpsc::channel(4);
    let registry = waiting_registry(&gate, started_tx, cancelled_tx, after_tx);
    let node = start_local(registry, cpu(2)).await;
    let dag = Dag::new()
        .with(Function::new("wait", "wait").with_cost(cpu(1)))
        .with(Function::new("after", "after").arg("wait"))
        .validate()
        .expect("valid DAG");
    let options = ExecuteOptions::default().deadline(Duration::from_millis(200));
    let handle = guarded("submit", node.submit(dag, options))
        .await
        .expect("feasible");
    let err = guarded("outcome", handle.outcome())
        .await
        .expect_err("the gate never opens");
    match &err {
        ExecuteError::DeadlineExceeded {
            deadline,
            unfinished,
            ..
        } => {
            assert_eq!(*deadline, Duration::from_millis(200));
            assert_eq!(
                unfinished,
                &vec![FunctionId::new("wait"), FunctionId::new("after")]
            );
        }
        other => panic!("expected a deadline error, got {other:?}"),
    }
    assert!(err.to_string().contains("wait"), "{err}");
    if started_rx.try_recv().is_ok() {
        assert!(report(&mut cancelled_rx, "`wait` is told to stop").await);
    }
    let (capacity, available) = guarded("node_resources", node.node_resources(local()))
        .await
        .expect("node alive")
        .expect("registered");
    assert_eq!(available, capacity, "the reservation of `wait` is back");
}

// ---------------------------------------------------------------------------------
// Retry backoff (on tokio's paused clock: waits take no real time)
// ---------------------------------------------------------------------------------

/// `fails` fails `failures` times, then returns 1.
fn failing_registry(failures: u32) -> Registry {
    let calls = AtomicU32::new(0);
    let mut registry = Registry::new();
    registry
        .register_fallible("fails", move || {
            if calls.fetch_add(1, Ordering::SeqCst) < failures {
                Err("not yet")
            } else {
                Ok(1_i64)
            }
        })
        .expect("register");
    registry
}

/// Runs `fails` (configured by `configure`) with `options`; returns the waits its
/// `Retried` events report and how long the execution took on the paused clock.
async fn retried(
    failures: u32,
    configure: impl FnOnce(Function) -> Function,
    options: ExecuteOptions,
) -> (Vec<Duration>, Duration) {
    let node = start_local(failing_registry(failures), Resources::new()).await;
    let dag = Dag::new()
        .with(configure(Function::new("fails", "fails")))
        .validate()
        .expect("valid DAG");
    let start = tokio::time::Instant::now();
    let mut handle = guarded("submit", node.submit(dag, options.events(64)))
        .await
        .expect("feasible");
    let stream = handle.events().expect("asked for events");
    let done = guarded("outcome", handle.outcome())
        .await
        .expect("succeeds after its failures");
    let took = start.elapsed();
    assert_eq!(done.results.get::<i64>("fails"), Ok(1));
    let events = all_events(stream).await;
    (retry_waits(&events), took)
}

#[actix::test]
async fn a_fixed_backoff_is_reported_and_waited() {
    tokio::time::pause();
    let ten = Duration::from_secs(10);
    let (waits, took) = retried(
        1,
        |f| f,
        ExecuteOptions::default().backoff(Backoff::Fixed(ten)),
    )
    .await;
    assert_eq!(waits, [ten]);
    assert!(took >= ten, "the retry waited 10 s on the clock: {took:?}");
}

#[actix::test]
async fn without_backoff_the_retry_is_immediate() {
    tokio::time::pause();
    let (waits, took) = retried(2, |f| f, ExecuteOptions::default().backoff(Backoff::None)).await;
    assert_eq!(waits, [Duration::ZERO, Duration::ZERO]);
    assert!(
        took < Duration::from_millis(1),
        "no time passed on the paused clock: {took:?}"
    );
}

#[actix::test]
async fn a_functions_own_backoff_overrides_the_executions() {
    tokio::time::pause();
    let ten = Duration::from_secs(10);
    let one = Duration::from_secs(1);
    let (waits, took) = retried(
        1,
        |f| f.backoff(Backoff::Fixed(one)),
        ExecuteOptions::default().backoff(Backoff::Fixed(ten)),
    )
    .await;
    assert_eq!(waits, [one]);
    assert!(took >= one && took < ten, "{took:?}");

    let (waits, took) = retried(
        1,
        |f| f.backoff(Backoff::None),
        ExecuteOptions::default().backoff(Backoff::Fixed(ten)),
    )
    .await;
    assert_eq!(waits, [Duration::ZERO]);
    assert!(took < Duration::from_millis(1), "{took:?}");
}

#[actix::test]
async fn an_exponential_backoff_doubles_and_jitter_stays_within_bounds() {
    tokio::time::pause();
    let ms = Duration::from_millis;
    let (waits, took) = retried(
        3,
        |f| f,
        ExecuteOptions::default().backoff(Backoff::Exponential {
            base: ms(10),
            max: ms(1000),
            jitter: false,
        }),
    )
    .await;
    assert_eq!(waits, [ms(10), ms(20), ms(40)]);
    assert!(took >= ms(70), "{took:?}");

    let (waits, _) = retried(
        3,
        |f| f,
        ExecuteOptions::default().backoff(Backoff::Exponential {
            base: ms(10),
            max: ms(30),
            jitter: true,
        }),
    )
    .await;
    assert_eq!(waits.len(), 3);
    for (wait, (low, high)) in waits.iter().zip([(5, 10), (10, 20), (15, 30)]) {
        assert!(
            *wait >= ms(low) && *wait <= ms(high),
            "{wait:?} outside {low}..={high} ms: {waits:?}"
        );
    }
}

// ---------------------------------------------------------------------------------
// Priorities and order
// ---------------------------------------------------------------------------------

fn unit_registry() -> Registry {
    let mut registry = Registry::new();
    registry.register("unit", || 0_i64).expect("register");
    registry.register("pass", |x: i64| x + 1).expect("register");
    registry
}

/// Ten wide functions added first, then a chain c0..c9 (the critical path).
fn wide_and_chain(cost: Option<Resources>) -> ValidatedDag {
    let costed = |f: Function| match &cost {
        Some(cost) => f.with_cost(cost.clone()),
        None => f,
    };
    let mut dag = Dag::new();
    for i in 0..10 {
        dag.add_function(costed(Function::new(format!("w{i}"), "unit")));
    }
    dag.add_function(costed(Function::new("c0", "unit")));
    for i in 1..10 {
        dag.add_function(costed(
            Function::new(format!("c{i}"), "pass").arg(format!("c{}", i - 1)),
        ));
    }
    dag.validate().expect("valid DAG")
}

async fn started_in(node: &NodeHandle, dag: ValidatedDag, options: ExecuteOptions) -> Vec<String> {
    let mut handle = guarded("submit", node.submit(dag, options.events(1024)))
        .await
        .expect("feasible");
    let stream = handle.events().expect("asked for events");
    guarded("outcome", handle.outcome()).await.expect("runs");
    started_order(&all_events(stream).await)
}

#[actix::test]
async fn the_critical_path_starts_first_on_a_busy_node() {
    let node = start_local(unit_registry(), cpu(1)).await;
    let order = started_in(
        &node,
        wide_and_chain(Some(cpu(1))),
        ExecuteOptions::default(),
    )
    .await;
    assert_eq!(order.len(), 20, "{order:?}");
    let c0 = position(&order, "c0");
    for i in 0..10 {
        assert!(c0 < position(&order, &format!("w{i}")), "{order:?}");
    }
    assert_all_released(&node).await;
}

#[actix::test]
async fn the_critical_path_starts_first_among_uncosted_functions() {
    let node = start_local(unit_registry(), Resources::new()).await;
    let order = started_in(
        &node,
        wide_and_chain(None),
        ExecuteOptions::default().parallelism(1),
    )
    .await;
    assert_eq!(order.len(), 20, "{order:?}");
    let c0 = position(&order, "c0");
    for i in 0..10 {
        assert!(c0 < position(&order, &format!("w{i}")), "{order:?}");
    }
}

fn low_then_high(cost: Option<Resources>) -> ValidatedDag {
    let costed = |f: Function| match &cost {
        Some(cost) => f.with_cost(cost.clone()),
        None => f,
    };
    Dag::new()
        .with(costed(Function::new("low", "unit").priority(0)))
        .with(costed(Function::new("high", "unit").priority(5)))
        .validate()
        .expect("valid DAG")
}

#[actix::test]
async fn a_higher_priority_starts_first_on_a_busy_node() {
    let node = start_local(unit_registry(), cpu(1)).await;
    let order = started_in(
        &node,
        low_then_high(Some(cpu(1))),
        ExecuteOptions::default(),
    )
    .await;
    assert_eq!(order, ["high", "low"]);
}

#[actix::test]
async fn a_higher_priority_starts_first_among_uncosted_functions() {
    let node = start_local(unit_registry(), Resources::new()).await;
    let order = started_in(
        &node,
        low_then_high(None),
        ExecuteOptions::default().parallelism(1),
    )
    .await;
    assert_eq!(order, ["high", "low"]);
}

// ---------------------------------------------------------------------------------
// Result lifetime
// ---------------------------------------------------------------------------------

fn chain_abc() -> ValidatedDag {
    Dag::new()
        .with(Function::new("a", "unit"))
        .with(Function::new("b", "pass").arg("a"))
        .with(Function::new("c", "pass").arg("b"))
        .validate()
        .expect("valid DAG")
}

#[actix::test]
async fn dropping_the_result_frees_the_dags_values_unless_kept() {
    let node = start_local(unit_registry(), Resources::new()).await;

    let done = guarded(
        "execute",
        node.execute(chain_abc(), ExecuteOptions::default()),
    )
    .await
    .expect("runs");
    assert_eq!(stored_values(&node).await, 3);
    let copy = done.clone();
    drop(done);
    assert_eq!(stored_values(&node).await, 3, "a clone still holds them");
    assert_eq!(copy.results.get::<i64>("c"), Ok(2));
    drop(copy);
    assert_eq!(stored_values(&node).await, 0);

    let dag = chain_abc();
    let id = dag.id().clone();
    let done = guarded(
        "execute",
        node.execute(dag, ExecuteOptions::default().keep_values(true)),
    )
    .await
    .expect("runs");
    drop(done);
    assert_eq!(
        stored_values(&node).await,
        3,
        "keep_values(true) keeps them"
    );
    assert_eq!(
        guarded("drop_dag", node.drop_dag(id)).await.expect("alive"),
        3
    );
    assert_eq!(stored_values(&node).await, 0);

    let dag = chain_abc();
    let id = dag.id().clone();
    let mut done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
    done.keep_values();
    drop(done);
    assert_eq!(
        stored_values(&node).await,
        3,
        "ExecutionResult::keep_values keeps them"
    );
    guarded("drop_dag", node.drop_dag(id)).await.expect("alive");
    assert_eq!(stored_values(&node).await, 0);
}

async fn freed_run(
    node: &NodeHandle,
    options: ExecuteOptions,
) -> (handoff::ExecutionResult, Vec<String>) {
    let mut handle = guarded("submit", node.submit(chain_abc(), options.events(256)))
        .await
        .expect("feasible");
    let stream = handle.events().expect("asked for events");
    let done = guarded("outcome", handle.outcome()).await.expect("runs");
    let freed = all_events(stream)
        .await
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Freed { function } => Some(function.as_str().to_owned()),
            _ => None,
        })
        .collect();
    (done, freed)
}

#[actix::test]
async fn free_intermediates_keeps_only_the_sinks_or_the_named_outputs() {
    let node = start_local(unit_registry(), Resources::new()).await;

    let (done, mut freed) = freed_run(
        &node,
        ExecuteOptions::default().free_intermediates(std::iter::empty::<&str>()),
    )
    .await;
    assert!(done.results.value("a").is_none());
    assert!(done.results.value("b").is_none());
    assert_eq!(done.results.get::<i64>("c"), Ok(2));
    freed.sort();
    assert_eq!(freed, ["a", "b"]);
    assert_eq!(stored_values(&node).await, 1, "only the sink is stored");
    drop(done);
    assert_eq!(stored_values(&node).await, 0);

    let (done, mut freed) =
        freed_run(&node, ExecuteOptions::default().free_intermediates(["b"])).await;
    assert!(done.results.value("a").is_none());
    assert_eq!(
        done.results.get::<i64>("b"),
        Ok(1),
        "the named output is kept"
    );
    assert!(
        done.results.value("c").is_none(),
        "only the named outputs are kept"
    );
    freed.sort();
    assert_eq!(freed, ["a", "c"]);
    assert_eq!(stored_values(&node).await, 1);
    drop(done);
    assert_eq!(stored_values(&node).await, 0);
}

#[actix::test]
async fn a_long_lived_node_does_not_accumulate_values() {
    let node = start_local(unit_registry(), Resources::new()).await;
    let done = guarded(
        "execute",
        node.execute(chain_abc(), ExecuteOptions::default()),
    )
    .await
    .expect("runs");
    drop(done);
    let after_first = stored_values(&node).await;
    for _ in 1..1000 {
        let done = guarded(
            "execute",
            node.execute(chain_abc(), ExecuteOptions::default()),
        )
        .await
        .expect("runs");
        assert_eq!(done.results.get::<i64>("c"), Ok(2));
    }
    assert!(
        stored_values(&node).await <= after_first,
        "1,000 executions left values behind"
    );
    assert_eq!(after_first, 0);
}

// ---------------------------------------------------------------------------------
// Infeasible DAGs
// ---------------------------------------------------------------------------------

#[actix::test]
async fn every_problem_of_an_infeasible_dag_is_reported_at_once() {
    let ran = Arc::new(AtomicBool::new(false));
    let mut registry = Registry::new();
    let flag = Arc::clone(&ran);
    registry
        .register("unit", move || {
            flag.store(true, Ordering::SeqCst);
            0_i64
        })
        .expect("register");
    let node = start_local(registry, cpu(1)).await;
    let dag = || {
        Dag::new()
            .with(Function::new("fine", "unit"))
            .with(Function::new("mystery", "no_such_code"))
            .with(Function::new("huge", "unit").with_cost(cpu(99)))
            .with(Function::new("lost", "unit").pinned("ghost"))
            .validate()
            .expect("valid DAG")
    };
    for submit in [true, false] {
        let dag = dag();
        let dag_id = dag.id().clone();
        let err = if submit {
            guarded("submit", node.submit(dag, ExecuteOptions::default()))
                .await
                .expect_err("rejected")
        } else {
            guarded("execute", node.execute(dag, ExecuteOptions::default()))
                .await
                .expect_err("rejected")
        };
        let ExecuteError::Rejected { dag, problems } = &err else {
            panic!("expected one rejection, got {err:?}");
        };
        assert_eq!(dag, &dag_id);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems.contains(&Problem::UnknownCode {
                function: "mystery".into(),
                code: "no_such_code".into(),
                nearest: None,
                registered_on: Vec::new(),
                registered_names: Vec::new(),
            }),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| matches!(
                p,
                Problem::Allocation(AllocationError::Unsatisfiable { function, .. })
                    if function.as_str() == "huge"
            )),
            "{problems:?}"
        );
        assert!(
            problems.contains(&Problem::Allocation(AllocationError::UnknownNode {
                function: "lost".into(),
                node: "ghost".into(),
            })),
            "{problems:?}"
        );
        let text = err.to_string();
        for name in ["mystery", "huge", "lost"] {
            assert!(text.contains(name), "{text}");
        }
    }
    assert!(!ran.load(Ordering::SeqCst), "nothing ran");
    assert_all_released(&node).await;
}

/// Fifty functions running a misspelt code: the message names the code once, suggests
/// the registered name, counts the functions and names the first few, instead of one
/// line per function; each problem is still in `problems`.
#[actix::test]
async fn a_misspelt_code_is_told_once_with_the_name_meant() {
    let mut registry = Registry::new();
    registry
        .register("multiply", |x: i64| x * 2)
        .expect("register");
    registry
        .register("format_output", |x: i64| x.to_string())
        .expect("register");
    let node = start_local(registry, cpu(1)).await;
    let mut dag = Dag::with_id("typos");
    for i in 0..50 {
        dag.add_function(Function::new(format!("m{i}"), "mutliply").extra_arg(i as i64));
    }
    dag.add_function(Function::new("out", "format_outptu").extra_arg(1_i64));
    dag.add_function(Function::new("odd", "upload").extra_arg(1_i64));
    let err = guarded(
        "execute",
        node.execute(dag.validate().expect("valid"), ExecuteOptions::default()),
    )
    .await
    .expect_err("rejected");
    let ExecuteError::Rejected { problems, .. } = &err else {
        panic!("expected a rejection, got {err:?}");
    };
    assert_eq!(problems.len(), 52, "{problems:?}");
    assert!(problems.contains(&Problem::UnknownCode {
        function: "m7".into(),
        code: "mutliply".into(),
        nearest: Some("multiply".into()),
        registered_on: Vec::new(),
        registered_names: Vec::new(),
    }));
    assert!(problems.contains(&Problem::UnknownCode {
        function: "odd".into(),
        code: "upload".into(),
        nearest: None,
        registered_on: Vec::new(),
        registered_names: Vec::new(),
    }));
    assert_eq!(
        err.to_string(),
        "DAG `typos` cannot run: \
         `mutliply` is registered on no node it may run on (did you mean `multiply`?), and 50 \
         function(s) run it: `m0`, `m1`, `m2`, `m3`, `m4`, 45 more; \
         `format_outptu` is registered on no node it may run on (did you mean \
         `format_output`?), and 1 function(s) run it: `out`; \
         `upload` is registered on no node it may run on, and 1 function(s) run it: `odd`"
    );
}

#[actix::test]
async fn a_failed_execution_frees_the_values_it_had_stored() {
    let mut registry = Registry::new();
    registry.register("one", || 1_i64).expect("register");
    registry
        .register_fallible("broken", |x: i64, y: i64| -> Result<i64, String> {
            Err(format!("no luck with {x} and {y}"))
        })
        .expect("register");
    let node = start_local(registry, Resources::new()).await;
    let dag = Dag::new()
        .with(Function::new("a", "one"))
        .with(Function::new("b", "one"))
        // `c` runs only once both `a` and `b` have finished (and been stored).
        .with(Function::new("c", "broken").args(["a", "b"]).max_retries(0))
        .validate()
        .expect("valid DAG");
    let dag_id = dag.id().clone();
    let mut handle = guarded(
        "submit",
        node.submit(dag, ExecuteOptions::default().events(64)),
    )
    .await
    .expect("feasible");
    let events = handle.events().expect("asked for events");
    let err = guarded("outcome", handle.outcome())
        .await
        .expect_err("c fails");
    assert!(
        matches!(err, ExecuteError::FunctionFailed { ref function, .. } if function.as_str() == "c"),
        "{err:?}"
    );
    // `a` and `b` were stored before `c` failed...
    let kinds = all_events(events).await;
    let stored = kinds
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Stored { .. }))
        .count();
    assert_eq!(stored, 2, "{kinds:?}");
    // ...and the node freed them with the failed execution.
    assert_eq!(guarded("count", node.stored_values()).await, Ok(0));
    assert_eq!(
        guarded("lookup", node.lookup_data_location(dag_id, "a")).await,
        Ok(None)
    );
}

/// `free_intermediates` naming an output the DAG lacks (a typo) is refused before
/// anything runs, instead of silently freeing the value meant to be kept.
#[actix::test]
async fn an_unknown_output_to_keep_is_refused() {
    let mut registry = Registry::new();
    registry.register("one", || 1_i64).expect("register");
    registry.register("inc", |x: i64| x + 1).expect("register");
    let node = start_local(registry, cpu(2)).await;
    let dag = Dag::new()
        .with(Function::new("src", "one"))
        .with(Function::new("sink", "inc").arg("src"))
        .validate()
        .expect("valid DAG");
    let options = ExecuteOptions::default().free_intermediates(["sink", "snik"]);
    let err = guarded("execute", node.execute(dag.clone(), options))
        .await
        .expect_err("`snik` is not in the DAG");
    let ExecuteError::Rejected { problems, .. } = &err else {
        panic!("expected a rejection, got {err:?}");
    };
    assert_eq!(
        problems,
        &vec![Problem::UnknownOutput {
            output: FunctionId::new("snik")
        }]
    );
    assert!(err.to_string().contains("snik"), "{err}");
    // Spelled right, it runs and keeps `sink`.
    let options = ExecuteOptions::default().free_intermediates(["sink"]);
    let done = guarded("execute", node.execute(dag, options))
        .await
        .expect("runs");
    assert_eq!(done.results.get::<i64>("sink"), Ok(2));
}

/// Asking for an event buffer of `usize::MAX` is capped, not a panic of the coordinator.
#[actix::test]
async fn an_enormous_event_buffer_is_capped() {
    let mut registry = Registry::new();
    registry.register("one", || 1_i64).expect("register");
    let node = start_local(registry, cpu(2)).await;
    let dag = Dag::new()
        .with(Function::new("src", "one"))
        .validate()
        .expect("valid DAG");
    let options = ExecuteOptions::default().events(usize::MAX);
    let mut handle = guarded("submit", node.submit(dag, options))
        .await
        .expect("feasible");
    let stream = handle.events().expect("asked for events");
    let done = guarded("outcome", handle.outcome()).await.expect("runs");
    assert_eq!(done.results.get::<i64>("src"), Ok(1));
    let events = all_events(stream).await;
    assert_eq!(
        events.last().map(|e| &e.kind),
        Some(&EventKind::Ended { ok: true })
    );
    // The node still runs DAGs.
    let dag = Dag::new()
        .with(Function::new("again", "one"))
        .validate()
        .expect("valid DAG");
    guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
}
