//! Stream mode: a DAG compiled once into warm stages, many items pushed through it.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Gate, guarded, start_local};
use futures::StreamExt;
use handoff::{
    AllocationError, CallError, CodeKind, Dag, ExecuteOptions, Function, ItemError, Problem,
    Registry, Resources, StartStreamError, StreamHandle, StreamOptions, StreamOutput,
    StreamResults, Value,
};

/// Reads `n` results, in the order they come.
async fn collect(results: &mut StreamResults, n: usize) -> Vec<Result<StreamOutput, ItemError>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let next = guarded("next result", results.next()).await;
        out.push(next.expect("a result for every pushed item"));
    }
    out
}

fn values(results: Vec<Result<StreamOutput, ItemError>>) -> Vec<i64> {
    results
        .into_iter()
        .map(|r| r.expect("no item error").get::<i64>().expect("an i64"))
        .collect()
}

/// Spins the runtime until `cond` holds about the stream (under the hang guard).
async fn until(handle: &StreamHandle, cond: impl Fn(&handoff::StreamStats) -> bool) {
    guarded("stream condition", async {
        while !cond(&handle.stats()) {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[actix::test]
async fn results_come_in_push_order_under_parallelism() {
    let mut registry = Registry::new();
    registry
        .register("uneven", |x: i64| {
            // Items take very different times, so workers finish out of order.
            let spins = (x % 7) * 2000;
            let mut acc = 0_i64;
            for i in 0..spins {
                acc = std::hint::black_box(acc.wrapping_add(i));
            }
            std::hint::black_box(acc);
            x * 10
        })
        .expect("register");
    registry.register("inc", |x: i64| x + 1).expect("register");
    let node = start_local(registry, Resources::new().cpu(4)).await;
    let dag = Dag::new()
        .with(Function::input("x"))
        .with(Function::new("uneven", "uneven").arg("x").parallelism(4))
        .with(Function::new("inc", "inc").arg("uneven").parallelism(3))
        .validate()
        .expect("valid");
    let mut stream = guarded("start", node.stream(dag, StreamOptions::new().chunk(4)))
        .await
        .expect("start");
    let mut results = stream.results().expect("results");
    let n = 2000_i64;
    guarded("push", stream.push_all(0..n)).await.expect("push");
    let out = collect(&mut results, n as usize).await;
    let seqs: Vec<u64> = out.iter().map(|r| r.as_ref().expect("ok").seq()).collect();
    assert_eq!(seqs, (0..n as u64).collect::<Vec<_>>());
    assert_eq!(values(out), (0..n).map(|x| x * 10 + 1).collect::<Vec<_>>());
    let stats = guarded("stop", stream.stop()).await;
    assert_eq!(stats.stages[0].workers, 4);
    assert_eq!(stats.stages[0].items, n as u64);
    assert_eq!(stats.stages[1].items, n as u64);
    assert!(guarded("end", results.next()).await.is_none());
}

/// Records the size of each batch it is called with, and doubles each item.
fn batch_registry(sizes: Arc<Mutex<Vec<usize>>>) -> Registry {
    let mut registry = Registry::new();
    registry
        .register_batch("double_all", move |xs: Vec<i64>| {
            sizes.lock().expect("sizes").push(xs.len());
            xs.into_iter().map(|x| x * 2).collect::<Vec<_>>()
        })
        .expect("register");
    registry
}

#[actix::test]
async fn batches_fill_up_to_their_size() {
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let node = start_local(batch_registry(Arc::clone(&sizes)), Resources::new()).await;
    let dag = Dag::new()
        .with(Function::input("x"))
        .with(
            Function::new("double", "double_all")
                .arg("x")
                .batch(4, Duration::from_secs(3600)),
        )
        .validate()
        .expect("valid");
    let mut stream = guarded("start", node.stream(dag, StreamOptions::new()))
        .await
        .expect("start");
    let mut results = stream.results().expect("results");
    guarded("push", stream.push_all(0..12_i64))
        .await
        .expect("push");
    let out = collect(&mut results, 12).await;
    assert_eq!(values(out), (0..12).map(|x| x * 2).collect::<Vec<_>>());
    assert_eq!(*sizes.lock().expect("sizes"), vec![4, 4, 4]);
    let stats = stream.stats();
    assert_eq!((stats.stages[0].items, stats.stages[0].batches), (12, 3));
}

#[actix::test]
async fn a_partial_batch_goes_when_its_timeout_expires() {
    tokio::time::pause();
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let node = start_local(batch_registry(Arc::clone(&sizes)), Resources::new()).await;
    let dag = Dag::new()
        .with(Function::input("x"))
        .with(
            Function::new("double", "double_all")
                .arg("x")
                .batch(10, Duration::from_millis(250)),
        )
        .validate()
        .expect("valid");
    let mut stream = guarded("start", node.stream(dag, StreamOptions::new()))
        .await
        .expect("start");
    let mut results = stream.results().expect("results");
    let started = tokio::time::Instant::now();
    guarded("push", stream.push_all([1_i64, 2, 3]))
        .await
        .expect("push");
    let out = collect(&mut results, 3).await;
    // The clock is paused: it moved only because the batch waited for its timeout.
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(values(out), vec![2, 4, 6]);
    assert_eq!(*sizes.lock().expect("sizes"), vec![3]);
    // The next batch waits for its own timeout again.
    let again = tokio::time::Instant::now();
    guarded("push", stream.push(5_i64)).await.expect("push");
    assert_eq!(values(collect(&mut results, 1).await), vec![10]);
    assert!(again.elapsed() >= Duration::from_millis(250));
    assert_eq!(*sizes.lock().expect("sizes"), vec![3, 1]);
}

/// A lookup table, the state of a "model" worker.
struct Table {
    worker: usize,
    calls: u64,
    offsets: HashMap<i64, i64>,
}

#[actix::test]
async fn init_runs_once_per_worker_and_its_state_is_kept() {
    let inits = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::new();
    let counter = Arc::clone(&inits);
    registry
        .register_init("load", move || Table {
            worker: counter.fetch_add(1, Ordering::SeqCst),
            calls: 0,
            offsets: HashMap::from([(0, 100), (1, 200)]),
        })
        .expect("register");
    registry
        .register_stateful("lookup", |table: &mut Table, x: i64| {
            table.calls += 1;
            (table.worker, table.calls, table.offsets[&(x % 2)] + x)
        })
        .expect("register");
    let node = start_local(registry, Resources::new()).await;
    let dag = Dag::new()
        .with(Function::input("x"))
        .with(
            Function::new("model", "lookup")
                .arg("x")
                .init("load")
                .parallelism(3),
        )
        .validate()
        .expect("valid");
    let mut stream = guarded("start", node.stream(dag, StreamOptions::new().chunk(2)))
        .await
        .expect("start");
    assert_eq!(
        inits.load(Ordering::SeqCst),
        3,
        "init runs at start, once per worker"
    );
    let mut results = stream.results().expect("results");
    guarded("push", stream.push_all(0..300_i64))
        .await
        .expect("push");
    let out = collect(&mut results, 300).await;
    let mut last_call: HashMap<usize, u64> = HashMap::new();
    for (x, r) in (0_i64..).zip(out) {
        let (worker, calls, y) = r.expect("ok").get::<(usize, u64, i64)>().expect("a triple");
        assert_eq!(y, x + if x % 2 == 0 { 100 } else { 200 });
        assert!(worker < 3);
        // Each worker's state counts its own calls: they only grow.
        let previous = last_call.insert(worker, calls).unwrap_or(0);
        assert!(
            calls > previous,
            "worker {worker}: call {calls} after {previous}"
        );
    }
    assert_eq!(last_call.values().sum::<u64>(), 300);
    guarded("stop", stream.stop()).await;
    assert_eq!(inits.load(Ordering::SeqCst), 3, "and never again");
}

#[actix::test]
async fn a_failed_item_is_an_error_naming_its_function_and_the_rest_flows() {
    let mut registry = Registry::new();
    registry
        .register_fallible("check", |x: i64| {
            if x % 3 == 0 {
                Err(format!("{x} is a multiple of 3"))
            } else {
                Ok(x)
            }
        })
        .expect("register");
    registry
        .register_fallible("halve", |x: i64| {
            if x == 7 {
                Err("no".to_owned())
            } else {
                Ok(x / 2)
            }
        })
        .expect("register");
    registry.register("neg", |x: i64| -x).expect("register");
    let node = start_local(registry, Resources::new()).await;
    let dag = Dag::new()
        .with(Function::input("x"))
        .with(Function::new("half", "halve").arg("x").inline())
        .with(Function::new("check", "check").arg("half").parallelism(2))
        .with(Function::new("neg", "neg").arg("check"))
        .validate()
        .expect("valid");
    let mut stream = guarded("start", node.stream(dag, StreamOptions::new()))
        .await
        .expect("start");
    let mut results = stream.results().expect("results");
    guarded("push", stream.push_all(0..20_i64))
        .await
        .expect("push");
    for (x, r) in (0_i64..).zip(collect(&mut results, 20).await) {
        match r {
            Err(ItemError {
                seq,
                function,
                error,
            }) => {
                assert_eq!(seq, x as u64);
                if x == 7 {
                    assert_eq!(function.as_str(), "half", "the inline function is named");
                } else {
                    assert_eq!((x / 2) % 3, 0, "item {x} failed: {error}");
                    assert_eq!(function.as_str(), "check");
                    assert!(matches!(error, CallError::Failed { .. }));
                }
            }
            Ok(out) => {
                assert!(x != 7 && (x / 2) % 3 != 0);
                assert_eq!(out.get::<i64>().expect("i64"), -(x / 2));
            }
        }
    }
    let stats = guarded("stop", stream.stop()).await;
    assert_eq!(
        stats.stages[0].errors, 8,
        "0,1,6,7,12,13,18,19 fail at check or half"
    );
}

#[actix::test]
async fn a_batch_result_of_the_wrong_length_fails_those_items_only() {
    let mut registry = Registry::new();
    registry
        .register_batch("lossy", |xs: Vec<i64>| {
            // Drops an item from any batch holding a 5.
            xs.into_iter().filter(|&x| x != 5).collect::<Vec<_>>()
        })
        .expect("register");
    let node = start_local(registry, Resources::new()).await;
    let dag = Dag::new()
        .with(Function::input("x"))
        .with(
            Function::new("lossy", "lossy")
                .arg("x")
                .batch(4, Duration::from_secs(3600)),
        )
        .validate()
        .expect("valid");
    let mut stream = guarded("start", node.stream(dag, StreamOptions::new()))
        .await
        .expect("start");
    let mut results = stream.results().expect("results");
    guarded("push", stream.push_all(0..12_i64))
        .await
        .expect("push");
    for (x, r) in (0_i64..).zip(collect(&mut results, 12).await) {
        if (4..8).contains(&x) {
            let error = r.expect_err("the batch of 5 is wrong");
            assert_eq!(error.function.as_str(), "lossy");
            assert_eq!(
                error.error,
                CallError::BatchLength {
                    code: "lossy".into(),
                    expected: 4,
                    got: 3
                }
            );
        } else {
            assert_eq!(r.expect("ok").get::<i64>().expect("i64"), x);
        }
    }
}

#[actix::test]
async fn a_fast_producer_never_grows_the_queues_past_their_bound() {
    let gate = Arc::new(Gate::new());
    let mut registry = Registry::new();
    let waiting = Arc::clone(&gate);
    registry
        .register("slow", move |x: i64| {
            assert!(waiting.wait(), "the test opens the gate");
            x
        })
        .expect("register");
    registry.register("inc", |x: i64| x + 1).expect("register");
    let node = start_local(registry, Resources::new()).await;
    let dag = Dag::new()
        .with(Function::input("x"))
        .with(Function::new("inc", "inc").arg("x"))
        .with(Function::new("slow", "slow").arg("inc"))
        .validate()
        .expect("valid");
    let capacity = 16;
    let mut stream = guarded(
        "start",
        node.stream(dag, StreamOptions::new().queue_capacity(capacity).chunk(4)),
    )
    .await
    .expect("start");
    let mut results = stream.results().expect("results");
    let stream = Arc::new(stream);
    let n = 5000_i64;
    let producer = {
        let stream = Arc::clone(&stream);
        actix::spawn(async move { stream.push_all(0..n).await })
    };
    // The slow stage holds one chunk; both queues fill up and the producer waits.
    until(&stream, |s| {
        s.stages.iter().all(|st| st.queue_depth == capacity)
    })
    .await;
    // In flight beyond the two queues: a chunk (4) in the slow stage's worker, one in
    // `inc`'s worker waiting for room, one in the producer's hands waiting for room.
    let stats = stream.stats();
    assert!(
        stats.pushed <= (2 * capacity + 3 * 4) as u64,
        "the producer was slowed down: {} pushed",
        stats.pushed
    );
    gate.open();
    let out = collect(&mut results, n as usize).await;
    assert_eq!(values(out), (1..=n).collect::<Vec<_>>());
    guarded("producer", producer)
        .await
        .expect("producer task")
        .expect("push");
    for stage in stream.stats().stages {
        assert!(
            stage.queue_peak <= capacity,
            "{}: {} items queued, bound {capacity}",
            stage.function,
            stage.queue_peak
        );
        assert_eq!(stage.queue_capacity, capacity);
    }
}

#[actix::test]
async fn the_window_bounds_items_not_yet_read() {
    let mut registry = Registry::new();
    registry.register("inc", |x: i64| x + 1).expect("register");
    let node = start_local(registry, Resources::new()).await;
    let dag = Dag::new()
        .with(Function::input("x"))
        .with(Function::new("inc", "inc").arg("x"))
        .validate()
        .expect("valid");
    let mut stream = guarded("start", node.stream(dag, StreamOptions::new().window(32)))
        .await
        .expect("start");
    let mut results = stream.results().expect("results");
    let stream = Arc::new(stream);
    let producer = {
        let stream = Arc::clone(&stream);
        actix::spawn(async move { stream.push_all(0..1000_i64).await })
    };
    until(&stream, |s| s.pushed == 32 && s.stages[0].items == 32).await;
    // Nothing read: the producer waits, with 32 items in flight.
    assert_eq!(stream.stats().in_flight, 32);
    let out = collect(&mut results, 1000).await;
    assert_eq!(values(out), (1..=1000).collect::<Vec<_>>());
    guarded("producer", producer)
        .await
        .expect("task")
        .expect("push");
}

#[actix::test]
async fn stop_drains_every_item_pushed_and_gives_the_reservations_back() {
    let mut registry = Registry::new();
    registry.register("inc", |x: i64| x + 1).expect("register");
    registry
        .register("square", |x: i64| x * x)
        .expect("register");
    let node = start_local(registry, Resources::new().cpu(4)).await;
    let dag = Dag::new()
        .with(Function::input("x"))
        .with(
            Function::new("inc", "inc")
                .arg("x")
                .with_cost(Resources::new().cpu(1))
                .parallelism(2),
        )
        .with(
            Function::new("square", "square")
                .arg("inc")
                .with_cost(Resources::new().cpu(1)),
        )
        .validate()
        .expect("valid");
    let mut stream = guarded("start", node.stream(dag, StreamOptions::new()))
        .await
        .expect("start");
    // The cost is held once per worker while the stream runs.
    let (_, free) = guarded("resources", node.node_resources("local"))
        .await
        .expect("resources")
        .expect("local node");
    assert_eq!(free, Resources::new().cpu(1));
    let mut results = stream.results().expect("results");
    guarded("push", stream.push_all(0..500_i64))
        .await
        .expect("push");
    let stats = guarded("stop", stream.stop()).await;
    assert_eq!(stats.pushed, 500);
    assert!(stats.stages.iter().all(|s| s.items == 500));
    let mut out = Vec::new();
    while let Some(r) = guarded("drained result", results.next()).await {
        out.push(r);
    }
    assert_eq!(values(out), (1..=500).map(|x| x * x).collect::<Vec<_>>());
    let (_, free) = guarded("resources", node.node_resources("local"))
        .await
        .expect("resources")
        .expect("local node");
    assert_eq!(free, Resources::new().cpu(4));
}

#[actix::test]
async fn several_inputs_and_outputs() {
    let mut registry = Registry::new();
    registry
        .register("add", |a: i64, b: i64| a + b)
        .expect("register");
    registry
        .register("label", |s: i64, name: String| format!("{name}={s}"))
        .expect("register");
    let node = start_local(registry, Resources::new()).await;
    let dag = Dag::new()
        .with(Function::input("a"))
        .with(Function::input("b"))
        .with(Function::new("sum", "add").arg("a").arg("b"))
        .with(
            Function::new("label", "label")
                .arg("sum")
                .extra_arg("sum".to_owned()),
        )
        .with(Function::new("twice", "add").arg("sum").arg("sum"))
        .validate()
        .expect("valid");
    let mut stream = guarded("start", node.stream(dag, StreamOptions::new()))
        .await
        .expect("start");
    let mut results = stream.results().expect("results");
    assert!(matches!(
        stream.push(1_i64).await,
        Err(handoff::PushError::SeveralInputs { .. })
    ));
    assert!(matches!(
        stream.push_inputs([("a", Value::new(1_i64))]).await,
        Err(handoff::PushError::MissingInput { .. })
    ));
    for i in 0..10_i64 {
        stream
            .push_inputs([("a", Value::new(i)), ("b", Value::new(100_i64))])
            .await
            .expect("push");
    }
    for (i, r) in (0_i64..).zip(collect(&mut results, 10).await) {
        let out = r.expect("ok");
        assert_eq!(
            out.get_of::<String>("label").expect("label"),
            format!("sum={}", i + 100)
        );
        assert_eq!(out.get_of::<i64>("twice").expect("twice"), 2 * (i + 100));
        assert!(out.get_of::<i64>("sum").is_err(), "sum is not an output");
    }
}

#[actix::test]
async fn streams_that_cannot_run_are_refused_before_anything_starts() {
    let mut registry = Registry::new();
    registry.register("inc", |x: i64| x + 1).expect("register");
    registry.register_init("load", || 0_u32).expect("register");
    registry
        .register_init("broken", || -> u32 { panic!("no model file") })
        .expect("register");
    registry
        .register_stateful("count", |n: &mut u32, x: i64| {
            *n += 1;
            x
        })
        .expect("register");
    let node = start_local(registry, Resources::new().cpu(2)).await;
    let start = |f: Function| {
        let dag = Dag::with_id("s")
            .with(Function::input("x"))
            .with(f)
            .validate()
            .expect("valid");
        node.stream(dag, StreamOptions::new())
    };

    let too_big = guarded(
        "start",
        start(
            Function::new("f", "inc")
                .arg("x")
                .with_cost(Resources::new().cpu(3)),
        ),
    )
    .await
    .expect_err("3 cpus never fit");
    assert!(
        matches!(&too_big, StartStreamError::Allocation(AllocationError::Unsatisfiable { function, .. }) if function.as_str() == "f"),
        "{too_big:?}"
    );
    let kind = guarded(
        "start",
        start(Function::new("f", "inc").arg("x").init("load")),
    )
    .await
    .expect_err("init needs stateful code");
    assert_eq!(
        kind,
        StartStreamError::WrongKind {
            function: "f".into(),
            code: "inc".into(),
            kind: CodeKind::Plain,
            expected: CodeKind::Stateful
        }
    );
    let init = guarded(
        "start",
        start(
            Function::new("f", "count")
                .arg("x")
                .init("broken")
                .parallelism(2),
        ),
    )
    .await
    .expect_err("init panics");
    assert!(
        matches!(&init, StartStreamError::Init { function, worker: 0, error: CallError::Panicked { .. } } if function.as_str() == "f"),
        "{init:?}"
    );
    let arity = guarded("start", start(Function::new("f", "inc").arg("x").arg("x")))
        .await
        .expect_err("inc takes one argument");
    assert!(matches!(arity, StartStreamError::Arity { .. }), "{arity:?}");

    // Two workers of 1 cpu each fit, and are both given back.
    let ok = guarded(
        "start",
        start(
            Function::new("f", "inc")
                .arg("x")
                .with_cost(Resources::new().cpu(1))
                .parallelism(2),
        ),
    )
    .await
    .expect("fits");
    guarded("stop", ok.stop()).await;
    let (_, free) = guarded("resources", node.node_resources("local"))
        .await
        .expect("resources")
        .expect("local node");
    assert_eq!(free, Resources::new().cpu(2));

    // A batch execution refuses inputs.
    let dag = Dag::new()
        .with(Function::input("x"))
        .with(Function::new("f", "inc").arg("x"))
        .validate()
        .expect("valid");
    let refused = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect_err("inputs have no value");
    assert_eq!(
        common::only_problem(&refused),
        Problem::StreamInput {
            function: "x".into()
        }
    );
}

/// A stage whose workers together need more than the node (3 workers of 1 cpu on a
/// 2-cpu node), or a collocated pair whose summed cost does, is refused at once (it used
/// to wait forever for the third worker), and nothing stays reserved.
#[actix::test]
async fn a_stream_whose_workers_cannot_all_be_held_is_refused() {
    let mut registry = Registry::new();
    registry.register("inc", |x: i64| x + 1).expect("register");
    let node = start_local(registry, Resources::new().cpu(2)).await;
    let dag = Dag::new()
        .with(Function::input("x"))
        .with(
            Function::new("f", "inc")
                .arg("x")
                .with_cost(Resources::new().cpu(1))
                .parallelism(3),
        )
        .validate()
        .expect("valid");
    let err = guarded("start", node.stream(dag, StreamOptions::new()))
        .await
        .expect_err("3 cpus of workers on a 2-cpu node");
    assert!(
        matches!(&err, StartStreamError::Allocation(AllocationError::Unsatisfiable { function, cost, .. })
            if function.as_str() == "f" && *cost == Resources::new().cpu(3)),
        "{err:?}"
    );
    let dag = Dag::new()
        .with(Function::input("x"))
        .with(
            Function::new("f", "inc")
                .arg("x")
                .with_cost(Resources::new().cpu(1.5)),
        )
        .with(
            Function::new("g", "inc")
                .arg("f")
                .with_cost(Resources::new().cpu(1))
                .collocated_with("f"),
        )
        .validate()
        .expect("valid");
    let err = guarded("start", node.stream(dag, StreamOptions::new()))
        .await
        .expect_err("a group of 2.5 cpus on a 2-cpu node");
    assert!(
        matches!(
            &err,
            StartStreamError::Allocation(AllocationError::Unsatisfiable { .. })
        ),
        "{err:?}"
    );
    let (_, free) = guarded("resources", node.node_resources("local"))
        .await
        .expect("resources")
        .expect("local node");
    assert_eq!(free, Resources::new().cpu(2));
}

/// A stream start waiting for capacity (another execution holds a cpu) that is dropped
/// gives back what it had reserved: once the other execution ends, the node is idle.
#[actix::test]
async fn dropping_a_stream_start_that_waits_gives_its_reservations_back() {
    let gate = Arc::new(Gate::new());
    let mut registry = Registry::new();
    registry.register("inc", |x: i64| x + 1).expect("register");
    let g = Arc::clone(&gate);
    let (started_tx, mut started_rx) = tokio::sync::mpsc::channel::<()>(1);
    registry
        .register("hold", move || {
            let _ = started_tx.blocking_send(());
            g.wait();
            1_i64
        })
        .expect("register");
    let node = start_local(registry, Resources::new().cpu(2)).await;
    let holder = Dag::new()
        .with(Function::new("hold", "hold").with_cost(Resources::new().cpu(1)))
        .validate()
        .expect("valid");
    let held = actix::spawn({
        let node = node.clone();
        async move { node.execute(holder, ExecuteOptions::default()).await }
    });
    guarded("hold starts", started_rx.recv()).await;
    let dag = Dag::new()
        .with(Function::input("x"))
        .with(
            Function::new("f", "inc")
                .arg("x")
                .with_cost(Resources::new().cpu(1))
                .parallelism(2),
        )
        .validate()
        .expect("valid");
    // The first worker gets the free cpu; the second waits for the held one. Whether the
    // start is dropped before or after the first grant, nothing of it may stay reserved.
    let start = node.stream(dag, StreamOptions::new());
    let gave_up = tokio::time::timeout(Duration::from_millis(100), start).await;
    assert!(gave_up.is_err(), "the second worker cannot be granted yet");
    gate.open();
    guarded("hold ends", held)
        .await
        .expect("joined")
        .expect("runs");
    let (_, free) = guarded("resources", node.node_resources("local"))
        .await
        .expect("resources")
        .expect("local node");
    assert_eq!(
        free,
        Resources::new().cpu(2),
        "nothing of the dropped start is held"
    );
}

/// A push dropped while it waits for queue room (a timeout gave up on it) loses nothing:
/// its item still goes through, and every later item's result comes, in push order.
#[actix::test]
async fn a_push_dropped_while_waiting_for_room_loses_no_result() {
    let gate = Arc::new(Gate::new());
    let mut registry = Registry::new();
    let waiting = Arc::clone(&gate);
    registry
        .register("slow", move |x: i64| {
            assert!(waiting.wait(), "the test opens the gate");
            x
        })
        .expect("register");
    let node = start_local(registry, Resources::new()).await;
    let dag = Dag::new()
        .with(Function::input("x"))
        .with(Function::new("slow", "slow").arg("x"))
        .validate()
        .expect("valid");
    let options = StreamOptions::new().queue_capacity(1).chunk(1).window(1024);
    let mut stream = guarded("start", node.stream(dag, options))
        .await
        .expect("start");
    let mut results = stream.results().expect("results");
    // Push until one push has to wait for room, and give up on that one.
    let mut pushed = 0_i64;
    loop {
        assert!(pushed < 100, "a push should have waited for room");
        let push = stream.push(pushed);
        pushed += 1;
        if tokio::time::timeout(Duration::from_millis(50), push)
            .await
            .is_err()
        {
            break;
        }
    }
    gate.open();
    for x in pushed..pushed + 3 {
        guarded("push", stream.push(x)).await.expect("push");
    }
    let out = collect(&mut results, (pushed + 3) as usize).await;
    assert_eq!(values(out), (0..pushed + 3).collect::<Vec<_>>());
    guarded("stop", stream.stop()).await;
}
