//! The examples of the Resource Management guide, each with what Handoff does printed
//! beside it, then a real execution on a local node showing that a cost which fits but
//! not right now waits, and that a cost which fits nowhere is refused before anything
//! runs.
//!
//! Run it with `cargo run --example resources`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use handoff::{
    AllocationError, AllocationStrategy, Dag, ExecuteError, ExecuteOptions, Function, NodeConfig,
    NodeId, Registry, ResourceTracker, Resources, SimpleResourceTracker, allocate, start_node,
};

type BoxError = Box<dyn std::error::Error>;

/// Prints a plan: each function's node, and the functions that wait for capacity.
fn print_plan(plan: &handoff::Assignments) {
    for (function, node) in &plan.nodes {
        let note = if plan.waiting.contains(function) {
            "  (waits there for capacity)"
        } else {
            ""
        };
        println!("    {function} -> {node}{note}");
    }
    let waiting: Vec<&str> = plan.waiting.iter().map(|f| f.as_str()).collect();
    println!("    waiting: {waiting:?}");
}

/// (a) Allocating multiple functions to nodes.
fn allocating_multiple_functions() -> Result<(), BoxError> {
    println!("(a) Allocating multiple functions to nodes");
    let nodes = [
        (NodeId::new("node1"), Resources::new().cpu(4).memory(8000)),
        (NodeId::new("node2"), Resources::new().cpu(2).memory(4000)),
    ];
    let dag = Dag::new()
        .with(Function::new("f1", "work").with_cost(Resources::new().cpu(2).memory(2000)))
        .with(Function::new("f2", "work").with_cost(Resources::new().cpu(1).memory(1000)))
        .with(Function::new("f3", "work").with_cost(Resources::new().cpu(3).memory(4000)))
        .with(Function::new("f4", "work").with_cost(Resources::new().cpu(1).memory(1000)))
        .validate()?;
    let plan = allocate(&dag, &nodes, &AllocationStrategy::FirstAvailable)?;
    print_plan(&plan);
    // The guide prints `f3: :node2@host`, but node2 has 2 cpu and f3 needs 3: it could
    // never run there. Handoff never places a function on a node too small for it; f3
    // goes to node1 and waits there until f1 and f2 have released their cpu.
    assert_eq!(plan.nodes["f3"].as_str(), "node1");
    assert!(plan.waiting.contains("f3"));
    println!(
        "    f3 (cpu 3) never lands on node2 (cpu 2), whatever the guide's output shows: \
         it waits for node1."
    );
    println!();
    Ok(())
}

/// (b) The resource tracker API of the guide.
fn simple_resource_tracker() -> Result<(), BoxError> {
    println!("(b) SimpleResourceTracker");
    let mut tracker = SimpleResourceTracker::new();
    let node = NodeId::new("local");
    tracker.register(node.clone(), Resources::new().cpu(4).memory(8000))?;
    let cost = Resources::new().cpu(2).memory(2000);

    if tracker.resources_available(&node, &cost) {
        match tracker.request(&node, &cost) {
            Ok(()) => {
                println!(
                    "    reserved {cost}; available now: {}",
                    tracker.available(&node).unwrap_or_default()
                );
                // ... run the task ...
                // A second, larger request is refused entirely, naming what is missing.
                let big = Resources::new().cpu(3).memory(1000);
                match tracker.request(&node, &big) {
                    Ok(()) => println!("    reserved {big} as well"),
                    Err(error) => println!("    request for {big} refused: {error}"),
                }
                tracker.release(&node, &cost)?;
                println!(
                    "    released {cost}; available now: {}",
                    tracker.available(&node).unwrap_or_default()
                );
            }
            Err(error) => println!("    Not enough resources available! ({error})"),
        }
    } else {
        println!("    Resources not available");
    }
    println!(
        "    capabilities: {}",
        tracker.capabilities(&node).unwrap_or_default()
    );
    println!();
    Ok(())
}

/// (c) Pinned and collocated functions.
fn pinned_and_collocated() -> Result<(), BoxError> {
    println!("(c) Pinned and collocated functions");
    let nodes = [
        (NodeId::new("node1"), Resources::new().cpu(2)),
        (NodeId::new("node2"), Resources::new().cpu(2)),
    ];
    let dag = Dag::new()
        // Pinned to node2.
        .with(
            Function::new("f1", "work")
                .with_cost(Resources::new().cpu(1))
                .pinned("node2"),
        )
        // Placed by the allocator.
        .with(Function::new("f2", "work").with_cost(Resources::new().cpu(1)))
        // Must run on the same node as f2.
        .with(
            Function::new("f3", "work")
                .with_cost(Resources::new().cpu(1))
                .collocated_with("f2"),
        )
        .validate()?;
    let plan = allocate(&dag, &nodes, &AllocationStrategy::FirstAvailable)?;
    print_plan(&plan);
    assert_eq!(plan.nodes["f1"].as_str(), "node2");
    assert_eq!(plan.nodes["f3"], plan.nodes["f2"]);
    println!(
        "    f1 is pinned to node2; f2 went to {}; f3 follows f2 to {}.",
        plan.nodes["f2"], plan.nodes["f3"]
    );
    println!();
    Ok(())
}

/// (d) Handling insufficient resources.
fn insufficient_resources() -> Result<(), BoxError> {
    println!("(d) Handling insufficient resources");
    let nodes = [
        (NodeId::new("node1"), Resources::new().cpu(1).memory(1000)),
        (NodeId::new("node2"), Resources::new().cpu(1).memory(1000)),
    ];
    let dag = Dag::new()
        .with(Function::new("big_task", "work").with_cost(Resources::new().cpu(2).memory(2000)))
        .validate()?;
    // The guide's allocator assigns `big_task` to node1 anyway; Handoff refuses it.
    match allocate(&dag, &nodes, &AllocationStrategy::FirstAvailable) {
        Ok(plan) => return Err(format!("expected an error, got {plan:?}").into()),
        Err(error) => {
            assert!(matches!(error, AllocationError::Unsatisfiable { .. }));
            println!("    error: {error}");
            println!("    as data: {error:?}");
        }
    }
    println!();
    Ok(())
}

/// (e) A real execution on a local node with 4 cpu.
async fn real_execution() -> Result<(), BoxError> {
    println!("(e) Executing costed functions on a local node with cpu 4, memory 8000");
    // Counts the cpu in use by running functions, and the most ever in use at once.
    let in_use = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));

    let mut registry = Registry::new();
    {
        let (in_use, peak) = (in_use.clone(), peak.clone());
        // Each call of `crunch` holds 2 cpu (its cost) for 100 ms.
        registry.register("crunch", move |n: i64| {
            let now = in_use.fetch_add(2, Ordering::SeqCst) + 2;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(100));
            in_use.fetch_sub(2, Ordering::SeqCst);
            n * n
        })?;
    }
    registry.register("sum", |a: i64, b: i64, c: i64| a + b + c)?;
    {
        let ran = ran.clone();
        registry.register("side_effect", move || {
            ran.fetch_add(1, Ordering::SeqCst);
        })?;
    }

    let node = start_node(
        NodeConfig::new("local", registry).capabilities(Resources::new().cpu(4).memory(8000)),
    )
    .await?;

    // Three functions of cpu 2 on a cpu 4 node: two run, the third waits for one of
    // them to release its cpu, then all finish.
    let two_cpu = || Resources::new().cpu(2).memory(1000);
    let dag = Dag::new()
        .with(
            Function::new("a", "crunch")
                .extra_arg(1_i64)
                .with_cost(two_cpu()),
        )
        .with(
            Function::new("b", "crunch")
                .extra_arg(2_i64)
                .with_cost(two_cpu()),
        )
        .with(
            Function::new("c", "crunch")
                .extra_arg(3_i64)
                .with_cost(two_cpu()),
        )
        .with(Function::new("total", "sum").args(["a", "b", "c"]))
        .validate()?;
    let done = node.execute(dag, ExecuteOptions::default()).await?;
    let total = done.results.get::<i64>("total")?;
    let peak_cpu = peak.load(Ordering::SeqCst);
    println!("    a, b, c (cpu 2 each) all finished: total = {total}");
    println!("    most cpu in use at once: {peak_cpu} of 4 (the third waited)");
    for (function, node) in done.allocations() {
        println!("      {function} ran on {node}");
    }
    assert_eq!(total, 1 + 4 + 9);
    assert!(peak_cpu <= 4, "never over-subscribed");
    let (capacity, available) = node
        .node_resources("local")
        .await?
        .ok_or("the local node is registered")?;
    println!("    after the run: capacity {capacity}, available {available}");
    assert_eq!(capacity, available, "every reservation was returned");

    // A cost no node can ever hold is refused before anything of the DAG runs, even
    // `first`, which has no cost and depends on nothing.
    let dag = Dag::new()
        .with(Function::new("first", "side_effect"))
        .with(
            Function::new("huge", "crunch")
                .extra_arg(4_i64)
                .with_cost(Resources::new().cpu(8)),
        )
        .validate()?;
    match node.execute(dag, ExecuteOptions::default()).await {
        Ok(_) => return Err("a cpu 8 function cannot run on a cpu 4 node".into()),
        Err(ExecuteError::Rejected { problems, .. }) => {
            for problem in problems {
                println!("    cpu 8 on a cpu 4 node: rejected before anything ran: {problem}");
            }
        }
        Err(other) => return Err(other.into()),
    }
    let ran = ran.load(Ordering::SeqCst);
    println!("    functions of that DAG that ran: {ran}");
    assert_eq!(ran, 0, "nothing ran");
    Ok(())
}

#[actix::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();

    allocating_multiple_functions()?;
    simple_resource_tracker()?;
    pinned_and_collocated()?;
    insufficient_resources()?;
    real_execution().await?;
    Ok(())
}
