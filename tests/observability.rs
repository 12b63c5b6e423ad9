//! Seeing what an execution did: the report's figures agree with the event stream, the
//! Chrome trace timeline has exactly one slice per attempt on non-overlapping slot
//! tracks, a failed or cancelled execution still reports, and a run across nodes shows
//! the values that crossed as flow arrows.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use futures::StreamExt;
use handoff::{
    AttemptOutcome, Backoff, Dag, Event, EventKind, ExecuteError, ExecuteOptions, ExecutionReport,
    ExecutionResult, Function, List, NodeHandle, Registry, Resources, ValidatedDag, is_cancelled,
};
use serde_json::Value as Json;

use common::{guarded, spin_until, start_local};

/// `src` → ten `work{i}` (cpu 1 each, on 3 cpus) → `sum`; `flaky` fails its first two
/// attempts; `after` follows `flaky`.
fn registry(flaky_failures: u32) -> Registry {
    let mut registry = Registry::new();
    registry.register("one", || 1_i64).expect("one");
    registry
        .register("inc", |x: i64| {
            // Some work, so that durations are not all zero.
            let mut acc = x;
            for k in 0..20_000_i64 {
                acc = std::hint::black_box(acc.wrapping_add(k % 3) - k % 3);
            }
            acc + 1
        })
        .expect("inc");
    registry
        .register("sum", |xs: List<i64>| xs.iter().sum::<i64>())
        .expect("sum");
    let calls = Arc::new(AtomicU32::new(0));
    registry
        .register_fallible("flaky", move |x: i64| {
            if calls.fetch_add(1, Ordering::SeqCst) < flaky_failures {
                Err(format!("not yet ({x})"))
            } else {
                Ok(x)
            }
        })
        .expect("flaky");
    registry
}

fn dag() -> ValidatedDag {
    let mut dag = Dag::with_id("observed").with(Function::new("src", "one"));
    for i in 0..10 {
        dag.add_function(
            Function::new(format!("work{i}"), "inc")
                .arg("src")
                .with_cost(Resources::new().cpu(1)),
        );
    }
    dag.add_function(
        Function::new("sum", "sum")
            .args((0..10).map(|i| format!("work{i}")))
            .as_list(),
    );
    dag.add_function(Function::new("flaky", "flaky").arg("src"));
    dag.add_function(Function::new("after", "inc").arg("flaky"));
    dag.validate().expect("valid")
}

fn options() -> ExecuteOptions {
    ExecuteOptions::default()
        .report(true)
        .events(100_000)
        .backoff(Backoff::None)
        .max_retries(3)
}

/// Runs `dag` on `node` with `options` (which ask for events); its result and every event.
async fn execute_observed(
    node: &NodeHandle,
    dag: ValidatedDag,
    options: ExecuteOptions,
) -> (ExecutionResult, Vec<Event>) {
    let mut handle = guarded("submit", node.submit(dag, options))
        .await
        .expect("submits");
    let events = handle.events().expect("asked for events");
    let done = guarded("execute", handle.outcome())
        .await
        .expect("executes");
    let events = guarded("the event stream ends", events.collect::<Vec<_>>()).await;
    (done, events)
}

/// Runs the DAG; its report and every event.
async fn observed_run() -> (ExecutionReport, Vec<Event>) {
    let node = start_local(registry(2), Resources::new().cpu(3)).await;
    let (done, events) = execute_observed(&node, dag(), options()).await;
    assert_eq!(done.results.get::<i64>("sum"), Ok(20));
    assert_eq!(done.results.get::<i64>("after"), Ok(2));
    let report = done.report().expect("asked for a report").clone();
    (report, events)
}

/// `(function, attempt)` → `(started, ended)` instants from the events.
fn attempts_from_events(events: &[Event]) -> BTreeMap<(String, u32), (u64, u64)> {
    let mut starts = BTreeMap::new();
    let mut attempts = BTreeMap::new();
    for event in events {
        match &event.kind {
            EventKind::Started {
                function, attempt, ..
            } => {
                starts.insert((function.to_string(), *attempt), event.at_micros);
            }
            EventKind::Finished {
                function, attempt, ..
            }
            | EventKind::Failed {
                function, attempt, ..
            } => {
                let key = (function.to_string(), *attempt);
                let start = starts.get(&key).copied().expect("started before it ended");
                attempts.insert(key, (start, event.at_micros));
            }
            _ => {}
        }
    }
    attempts
}

#[actix::test]
async fn the_report_agrees_with_the_events() {
    let (report, events) = observed_run().await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Lagged { .. })),
        "no event was dropped"
    );
    let from_events = attempts_from_events(&events);

    // The same attempts, with the same durations.
    assert_eq!(report.attempts(), from_events.len());
    assert_eq!(report.functions.len(), 14);
    for f in &report.functions {
        let counted = from_events
            .keys()
            .filter(|(function, _)| function == f.function.as_str())
            .count();
        assert_eq!(f.attempts.len(), counted, "{}", f.function);
        for a in &f.attempts {
            let (start, end) = from_events[&(f.function.to_string(), a.attempt)];
            assert_eq!(a.duration().as_micros(), u128::from(end - start));
            assert_eq!(a.started_micros + report.started_at_micros, start);
        }
        assert!(f.succeeded, "{}", f.function);
        assert!(
            f.queued_micros <= f.started_micros,
            "{}: {:?}",
            f.function,
            (f.queued_micros, f.started_micros)
        );
    }
    let flaky = report.function("flaky").expect("flaky");
    assert_eq!(flaky.attempts.len(), 3);
    assert!(matches!(
        &flaky.attempts[0].outcome,
        AttemptOutcome::Failed { error } if error.contains("not yet")
    ));
    assert_eq!(flaky.attempts[2].outcome, AttemptOutcome::Succeeded);

    // Sum of durations, makespan.
    let work: u64 = from_events.values().map(|(s, e)| e - s).sum();
    assert_eq!(report.total_work_micros, work);
    let first = from_events
        .values()
        .map(|(s, _)| *s)
        .min()
        .expect("attempts");
    let last = from_events
        .values()
        .map(|(_, e)| *e)
        .max()
        .expect("attempts");
    assert_eq!(report.makespan_micros, last - first);

    // The critical path is a chain of dependencies whose durations add up.
    let path = &report.critical_path;
    assert!(path.len() >= 2, "{path:?}");
    for pair in path.windows(2) {
        let to = report.function(pair[1].as_str()).expect("known");
        assert!(to.inputs.contains(&pair[0]), "{path:?}");
    }
    let length: u64 = path
        .iter()
        .map(|f| {
            report
                .function(f.as_str())
                .expect("known")
                .duration()
                .as_micros() as u64
        })
        .sum();
    assert_eq!(report.critical_path_micros, length);
    assert!(report.critical_path_micros <= report.total_work_micros);

    // Every attempt ran on `local`, three cpus at most at once for the costed ones.
    let usage = &report.nodes[&handoff::NodeId::new("local")];
    assert_eq!(usage.attempts as usize, report.attempts());
    assert_eq!(usage.busy_micros, work);
    let cpu = &report.resources[&handoff::ResourceName::new("cpu")];
    assert!(cpu.peak <= 3.0 && cpu.peak >= 1.0, "{cpu:?}");

    // It prints, and it survives JSON.
    let text = report.to_string();
    assert!(
        text.contains("14/14 functions done, 16 attempts (2 failed)"),
        "{text}"
    );
    let json = serde_json::to_string(&report).expect("serializes");
    let back: ExecutionReport = serde_json::from_str(&json).expect("parses");
    // Read back exactly (serde_json's `float_roundtrip`), it writes the same text again.
    assert_eq!(serde_json::to_string(&back).expect("serializes"), json);
    assert_eq!(back.functions, report.functions);
    assert_eq!(back.critical_path, report.critical_path);
}

#[actix::test]
async fn the_timeline_has_one_slice_per_attempt() {
    let (report, events) = observed_run().await;
    let trace: Json = serde_json::from_str(&report.to_chrome_trace()).expect("JSON");
    let slices: Vec<&Json> = trace["traceEvents"]
        .as_array()
        .expect("traceEvents")
        .iter()
        .filter(|e| e["ph"] == "X")
        .collect();
    assert_eq!(slices.len(), attempts_from_events(&events).len());
    assert_eq!(slices.len(), report.attempts());
    let failed = slices.iter().filter(|s| s["cat"] == "failed").count();
    assert_eq!(failed, 2);
    assert!(
        slices
            .iter()
            .any(|s| s["name"] == "flaky (attempt 3)" && s["cat"] == "succeeded")
    );
    // One slice per (function, attempt).
    let keys: HashSet<(String, u64)> = slices
        .iter()
        .map(|s| {
            let args = &s["args"];
            let function = args["function"].as_str().expect("function").to_owned();
            (function, args["attempt"].as_u64().expect("attempt"))
        })
        .collect();
    assert_eq!(keys.len(), slices.len());
    // Slices on one track never overlap.
    let mut tracks: BTreeMap<(u64, u64), Vec<(u64, u64)>> = BTreeMap::new();
    for s in &slices {
        let (ts, dur) = (
            s["ts"].as_u64().expect("ts"),
            s["dur"].as_u64().expect("dur"),
        );
        let track = (
            s["pid"].as_u64().expect("pid"),
            s["tid"].as_u64().expect("tid"),
        );
        tracks.entry(track).or_default().push((ts, ts + dur));
    }
    for (track, mut intervals) in tracks {
        intervals.sort_unstable();
        for pair in intervals.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "overlap on {track:?}: {pair:?}");
        }
    }
    // One node, named; no value crossed nodes.
    let names: Vec<&Json> = trace["traceEvents"]
        .as_array()
        .expect("traceEvents")
        .iter()
        .filter(|e| e["name"] == "process_name")
        .collect();
    assert_eq!(names.len(), 1);
    assert_eq!(names[0]["args"]["name"], "node local");
    assert!(
        !trace["traceEvents"]
            .as_array()
            .expect("traceEvents")
            .iter()
            .any(|e| e["ph"] == "s")
    );
}

#[actix::test]
async fn a_failed_execution_still_reports() {
    let node = start_local(registry(u32::MAX), Resources::new().cpu(3)).await;
    let options = options().max_retries(1);
    let mut handle = guarded("submit", node.submit(dag(), options))
        .await
        .expect("submits");
    let pending = handle.report().expect("asked for a report");
    let err = guarded("execute", handle.outcome())
        .await
        .expect_err("flaky never succeeds");
    assert!(
        matches!(err, ExecuteError::FunctionFailed { .. }),
        "{err:?}"
    );
    let report = guarded("the report", pending).await.expect("a report");
    assert!(!report.ok);
    let flaky = report.function("flaky").expect("flaky");
    assert_eq!(flaky.attempts.len(), 2);
    assert!(!flaky.succeeded);
    assert_eq!(report.function("after").map(|f| f.attempts.len()), Some(0));
    let dag = dag();
    let dot = report.graph(&dag).to_dot();
    assert!(dot.contains("2 attempts, FAILED"), "{dot}");
}

#[actix::test]
async fn a_cancelled_attempt_is_marked_in_the_report_and_timeline() {
    let mut registry = Registry::new();
    registry
        .register("until_cancelled", || spin_until(is_cancelled))
        .expect("register");
    let (started_tx, mut started_rx) = tokio::sync::mpsc::channel(1);
    registry
        .register("announce", move || {
            let _ = started_tx.blocking_send(());
            spin_until(is_cancelled)
        })
        .expect("register");
    let node = start_local(registry, Resources::new().cpu(1)).await;
    let dag = Dag::new()
        .with(Function::new("stuck", "announce"))
        .validate()
        .expect("valid");
    let mut handle = guarded(
        "submit",
        node.submit(dag, ExecuteOptions::new().report(true)),
    )
    .await
    .expect("submits");
    let pending = handle.report().expect("asked for a report");
    guarded("`stuck` starts", started_rx.recv()).await;
    handle.cancel();
    let err = guarded("outcome", handle.outcome())
        .await
        .expect_err("cancelled");
    assert!(matches!(err, ExecuteError::Cancelled { .. }), "{err:?}");
    let report = guarded("the report", pending).await.expect("a report");
    let stuck = report.function("stuck").expect("stuck");
    assert_eq!(stuck.attempts.len(), 1);
    assert_eq!(stuck.attempts[0].outcome, AttemptOutcome::Cancelled);
    let trace: Json = serde_json::from_str(&report.to_chrome_trace()).expect("JSON");
    let slice = trace["traceEvents"]
        .as_array()
        .expect("traceEvents")
        .iter()
        .find(|e| e["ph"] == "X")
        .expect("one slice")
        .clone();
    assert_eq!(slice["cat"], "cancelled");
    assert_eq!(slice["cname"], "grey");
}

#[actix::test]
async fn calls_a_job_hands_back_for_lack_of_time_are_ready_and_run_once() {
    // 400 functions of at least 100 µs on 2 slots: jobs of 200, which run out of time
    // after their first 64 calls and hand the rest back. Each function is still ready
    // once, started once and finished once, and its one attempt is in the report.
    let mut registry = Registry::new();
    registry
        .register("nap", |i: i64| {
            std::thread::sleep(std::time::Duration::from_micros(100));
            i
        })
        .expect("nap");
    let node = start_local(registry, Resources::new()).await;
    let n = 400_i64;
    let mut dag = Dag::with_id("handed-back");
    for i in 0..n {
        dag.add_function(Function::new(format!("n{i}"), "nap").extra_arg(i));
    }
    let dag = dag.validate().expect("valid");
    let options = ExecuteOptions::default()
        .parallelism(2)
        .report(true)
        .events(100_000);
    let (done, events) = execute_observed(&node, dag, options).await;
    for i in 0..n {
        assert_eq!(done.results.get::<i64>(&format!("n{i}")), Ok(i));
    }
    assert_eq!(done.report().expect("a report").attempts(), n as usize);
    let mut counts: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for event in &events {
        let kind = match &event.kind {
            EventKind::Ready { .. } => "ready",
            EventKind::Started { .. } => "started",
            EventKind::Finished { .. } => "finished",
            _ => continue,
        };
        let function = event.kind.function().expect("a function's event");
        *counts.entry((kind, function.to_string())).or_default() += 1;
    }
    assert_eq!(
        counts.len(),
        3 * n as usize,
        "every function ready, started, finished"
    );
    assert!(counts.values().all(|&c| c == 1), "each of them once");
}
