//! Costed work at scale: reservations reused by the waiting calls of their shape, many
//! shapes at once never above capacity, every reservation given back, and a wide request
//! that is not passed forever by narrow ones (the rule of docs/semantics.md, "Waiting
//! for capacity").

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Gauge, busy_work, guarded, start_local};
use futures::StreamExt as _;
use handoff::{
    Dag, Event, EventKind, ExecuteOptions, ExecutionResult, Function, List, NodeHandle, NodeId,
    Registry, Resources, ValidatedDag,
};

async fn assert_all_released(node: &NodeHandle) {
    let (capacity, available) =
        guarded("node_resources", node.node_resources(NodeId::new("local")))
            .await
            .expect("node alive")
            .expect("the local node is registered");
    assert_eq!(available, capacity, "every reservation was given back");
}

/// Runs `dag` with its events collected: its result and every event, in order.
async fn run_observed(node: &NodeHandle, dag: ValidatedDag) -> (ExecutionResult, Vec<Event>) {
    let options = ExecuteOptions::default().events(1 << 16);
    let mut handle = guarded("submit", node.submit(dag, options))
        .await
        .expect("feasible");
    let stream = handle.events().expect("asked for events");
    let events = actix::spawn(stream.collect::<Vec<Event>>());
    let done = guarded("outcome", handle.outcome()).await.expect("runs");
    let events = guarded("events", events).await.expect("collected");
    (done, events)
}

/// A registry whose `weighted` function counts its cost (in hundredths of a cpu) on
/// `gauge` while it runs, and `sum` adds a list.
fn weighted_registry(gauge: &Arc<Gauge>) -> Registry {
    let mut registry = Registry::new();
    let g = Arc::clone(gauge);
    registry
        .register("weighted", move |hundredths: usize| {
            g.run_weighted(hundredths, busy_work);
            hundredths as i64
        })
        .expect("register");
    registry
        .register("sum", |xs: List<i64>| xs.iter().sum::<i64>())
        .expect("register");
    registry
}

/// Thousands of costed calls of five shapes (cpu 1, 0.5, 2, 0.25 and cpu 1 with memory)
/// on one node: every call runs, never above the node's cpu, each one gets a `Reserved`
/// event on the node, and the node is idle at the end.
#[actix::test]
async fn thousands_of_costed_calls_of_several_shapes_stay_within_capacity() {
    const N: usize = 3000;
    const SHAPES: [(usize, u32); 5] = [(100, 0), (50, 0), (200, 0), (25, 0), (100, 300)];
    let gauge = Arc::new(Gauge::default());
    let node = start_local(
        weighted_registry(&gauge),
        Resources::new().cpu(2).memory(1000),
    )
    .await;
    let mut dag = Dag::new();
    let mut expected = 0_i64;
    for i in 0..N {
        let (hundredths, memory) = SHAPES[i % SHAPES.len()];
        let mut cost = Resources::new().cpu(hundredths as f64 / 100.0);
        if memory > 0 {
            cost = cost.memory(memory);
        }
        dag.add_function(
            Function::new(format!("f{i}"), "weighted")
                .extra_arg(hundredths)
                .with_cost(cost),
        );
        expected += hundredths as i64;
    }
    let dag = dag
        .with(
            Function::new("total", "sum")
                .args((0..N).map(|i| format!("f{i}")))
                .as_list(),
        )
        .validate()
        .expect("valid DAG");
    let (done, events) = run_observed(&node, dag).await;
    assert_eq!(done.results.get::<i64>("total"), Ok(expected));
    assert_eq!(gauge.finished(), N, "every costed call ran once");
    assert!(
        gauge.max() <= 200,
        "{} hundredths of a cpu in use on a 2-cpu node",
        gauge.max()
    );
    let reserved = events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Reserved { node, .. } if node.as_str() == "local"))
        .count();
    assert_eq!(reserved, N, "each costed call ran on a reservation");
    assert_all_released(&node).await;
}

/// `narrow` calls of `cpu: 1` that each sleep 1 to 2.4 ms hold a node of `cpu: 2`
/// one cpu at a time. A `cpu: 2` call of a higher priority becomes ready once they run:
/// it needs both cpus at once, which the narrow calls never give back together by
/// chance. It must start long before the narrow calls are done.
#[actix::test]
async fn a_wide_call_is_not_passed_forever_by_narrow_ones() {
    const NARROW: usize = 300;
    let mut registry = Registry::new();
    registry
        .register("narrow", |i: i64| {
            // Uneven, so that the two cpus are not given back together by chance.
            std::thread::sleep(Duration::from_micros(1000 + 700 * (i % 3) as u64));
            i
        })
        .expect("register");
    registry.register("gate", || 1_i64).expect("register");
    registry.register("wide", |x: i64| x).expect("register");
    let node = start_local(registry, Resources::new().cpu(2)).await;
    let mut dag = Dag::new();
    for i in 0..NARROW {
        dag.add_function(
            Function::new(format!("n{i}"), "narrow")
                .extra_arg(i as i64)
                .with_cost(Resources::new().cpu(1)),
        );
    }
    let dag = dag
        .with(Function::new("gate", "gate"))
        .with(
            Function::new("wide", "wide")
                .arg("gate")
                .priority(1)
                .with_cost(Resources::new().cpu(2)),
        )
        .validate()
        .expect("valid DAG");
    let (done, events) = run_observed(&node, dag).await;
    assert_eq!(done.results.get::<i64>("wide"), Ok(1));
    // When each call ran (events come when calls report; their times say when they ran).
    let span = |id: &str| {
        let at = |started: bool| {
            events.iter().find_map(|e| match &e.kind {
                EventKind::Started { function, .. } if started && function.as_str() == id => {
                    Some(e.at_micros)
                }
                EventKind::Finished { function, .. } if !started && function.as_str() == id => {
                    Some(e.at_micros)
                }
                _ => None,
            })
        };
        (at(true).expect("started"), at(false).expect("finished"))
    };
    let (wide_start, wide_end) = span("wide");
    let narrow: Vec<(u64, u64)> = (0..NARROW).map(|i| span(&format!("n{i}"))).collect();
    let before = narrow
        .iter()
        .filter(|(start, _)| *start < wide_start)
        .count();
    assert!(
        before < NARROW / 5,
        "the wide call started after {before} of {NARROW} narrow calls had"
    );
    // It had the whole node: no narrow call ran beside it.
    let beside = narrow
        .iter()
        .filter(|(start, end)| *start < wide_end && *end > wide_start)
        .count();
    assert_eq!(beside, 0, "narrow calls ran beside the wide one");
    assert_all_released(&node).await;
}
