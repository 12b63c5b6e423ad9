//! Executing DAGs through the `handoff` facade: results, argument passing (extra args,
//! as-list, inline functions), concurrent executions, the embedding path, local
//! execution and zero-copy value passing.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{guarded, seed_registry, start_local};
use handoff::actors::Execute;
use handoff::{
    Dag, ExecuteError, ExecuteOptions, Function, List, NodeId, Registry, Resources, Shared, Value,
};

fn local() -> NodeId {
    NodeId::new("local")
}

#[actix::test]
async fn seed_pipeline_computes_84_on_the_local_node() {
    let node = start_local(seed_registry(), Resources::new().cpu(2).memory(1024)).await;
    let dag = Dag::with_id("seed")
        .with(Function::new("source", "identity").extra_arg(42_i64))
        .with(
            Function::new("transform", "multiply")
                .arg("source")
                .extra_arg(2_i64),
        )
        .with(Function::new("sink", "format_output").arg("transform"))
        .validate()
        .expect("valid DAG");

    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("the seed pipeline runs");

    assert_eq!(done.dag_id.as_str(), "seed");
    assert_eq!(done.results.get::<i64>("source"), Ok(42));
    assert_eq!(done.results.get::<i64>("transform"), Ok(84));
    assert_eq!(
        done.results.get::<String>("sink").as_deref(),
        Ok("The final answer is: 84")
    );
    assert_eq!(done.results.len(), 3);
    let allocations = done.allocations();
    assert_eq!(allocations.len(), 3);
    for function in ["source", "transform", "sink"] {
        assert_eq!(allocations.get(function), Some(&local()), "{function}");
        assert_eq!(done.results.node(function), Some(&local()), "{function}");
    }
}

#[actix::test]
async fn execute_returns_the_dags_own_generated_id() {
    let node = start_local(seed_registry(), Resources::new()).await;
    let dag = Dag::new()
        .with(Function::new("only", "identity").extra_arg(1_i64))
        .validate()
        .expect("valid DAG");
    let id = dag.id().clone();
    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
    assert_eq!(done.dag_id, id);
}

#[actix::test]
async fn extra_args_follow_the_dependency_results_in_order() {
    let mut registry = Registry::new();
    registry.register("word", |w: String| w).expect("register");
    registry
        .register("join3", |a: String, b: String, c: String| {
            format!("{a}|{b}|{c}")
        })
        .expect("register");
    registry
        .register("join4", |a: String, b: String, c: String, d: String| {
            format!("{a}|{b}|{c}|{d}")
        })
        .expect("register");
    let node = start_local(registry, Resources::new()).await;

    let dag = Dag::new()
        .with(Function::new("dep", "word").extra_arg("dep".to_owned()))
        .with(Function::new("dep2", "word").extra_arg("dep2".to_owned()))
        .with(
            Function::new("three", "join3")
                .arg("dep")
                .extra_arg("first".to_owned())
                .extra_arg("second".to_owned()),
        )
        .with(
            Function::new("four", "join4")
                .args(["dep2", "dep"])
                .extra_arg("x".to_owned())
                .extra_arg("y".to_owned()),
        )
        .validate()
        .expect("valid DAG");
    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
    assert_eq!(
        done.results.get::<String>("three").as_deref(),
        Ok("dep|first|second")
    );
    assert_eq!(
        done.results.get::<String>("four").as_deref(),
        Ok("dep2|dep|x|y")
    );
}

#[actix::test]
async fn the_same_dependency_may_be_passed_twice() {
    let mut registry = seed_registry();
    registry
        .register("pair", |a: i64, b: i64| (a, b))
        .expect("register");
    let node = start_local(registry, Resources::new()).await;
    let dag = Dag::new()
        .with(Function::new("x", "identity").extra_arg(6_i64))
        .with(Function::new("square", "multiply").arg("x").arg("x"))
        .with(Function::new("both", "pair").arg("square").arg("x"))
        .validate()
        .expect("valid DAG");
    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
    assert_eq!(done.results.get::<i64>("square"), Ok(36));
    assert_eq!(done.results.get::<(i64, i64)>("both"), Ok((36, 6)));
}

#[actix::test]
async fn as_list_functions_receive_every_dependency_in_order_then_extra_args() {
    let mut registry = seed_registry();
    registry
        .register("digits", |xs: List<i64>, base: i64| {
            xs.iter().fold(0, |acc, x| acc * base + x)
        })
        .expect("register");
    registry
        .register("collect", |xs: Vec<i64>, tag: String| {
            format!("{tag}{xs:?}")
        })
        .expect("register");
    let node = start_local(registry, Resources::new()).await;

    let ids: Vec<String> = (1..=5).map(|i| format!("d{i}")).collect();
    // Added in reverse so that the list order must come from the argument order, not
    // from the order the functions were added or ran in.
    let mut dag = Dag::new();
    for i in (1..=5_i64).rev() {
        dag.add_function(Function::new(format!("d{i}"), "identity").extra_arg(i));
    }
    let dag = dag
        .with(
            Function::new("number", "digits")
                .args(ids.iter().map(String::as_str))
                .as_list()
                .extra_arg(10_i64),
        )
        .with(
            Function::new("vec", "collect")
                .args(["d5", "d3", "d1", "d2", "d4"])
                .as_list()
                .extra_arg("got ".to_owned()),
        )
        .validate()
        .expect("valid DAG");
    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
    assert_eq!(done.results.get::<i64>("number"), Ok(12345));
    assert_eq!(
        done.results.get::<String>("vec").as_deref(),
        Ok("got [5, 3, 1, 2, 4]")
    );
}

#[actix::test]
async fn an_as_list_function_without_dependencies_gets_an_empty_list() {
    let mut registry = Registry::new();
    registry
        .register("count", |xs: List<i64>| xs.len())
        .expect("register");
    let node = start_local(registry, Resources::new()).await;
    let dag = Dag::new()
        .with(Function::new("none", "count").as_list())
        .validate()
        .expect("valid DAG");
    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
    assert_eq!(done.results.get::<usize>("none"), Ok(0));
}

#[actix::test]
async fn inline_functions_run_once_per_dependent_and_are_never_stored() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut registry = seed_registry();
    let counter = Arc::clone(&calls);
    registry
        .register("counted_double", move |x: i64| {
            counter.fetch_add(1, Ordering::SeqCst);
            x * 2
        })
        .expect("register");
    registry
        .register("add", |a: i64, b: i64| a + b)
        .expect("register");
    let node = start_local(registry, Resources::new()).await;

    let dag = Dag::new()
        .with(Function::new("base", "identity").extra_arg(10_i64))
        .with(
            Function::new("doubled", "counted_double")
                .arg("base")
                .inline(),
        )
        .with(
            Function::new("plus_one", "add")
                .arg("doubled")
                .extra_arg(1_i64),
        )
        .with(
            Function::new("plus_two", "add")
                .arg("doubled")
                .extra_arg(2_i64),
        )
        .validate()
        .expect("valid DAG");
    let dag_id = dag.id().clone();
    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");

    assert_eq!(done.results.get::<i64>("plus_one"), Ok(21));
    assert_eq!(done.results.get::<i64>("plus_two"), Ok(22));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "evaluated in each dependent"
    );
    assert!(done.results.value("doubled").is_none(), "inline: no result");
    assert!(done.results.node("doubled").is_none(), "inline: no node");
    assert!(!done.allocations().contains_key("doubled"));
    assert_eq!(done.results.len(), 3);
    assert!(
        guarded("get_local_value", node.get_local_value(dag_id, "doubled"))
            .await
            .is_err(),
        "inline values are not stored on the node"
    );
}

#[actix::test]
async fn an_inline_function_waits_for_its_regular_dependency() {
    // `late` depends on a chain of regular functions; the inline function reading it
    // is evaluated in `consumer`, which must therefore wait for the whole chain even
    // though it names no regular dependency itself.
    let mut registry = seed_registry();
    registry.register("inc", |x: i64| x + 1).expect("register");
    let node = start_local(registry, Resources::new()).await;
    let mut dag = Dag::new().with(Function::new("c0", "identity").extra_arg(0_i64));
    for i in 1..=10 {
        dag.add_function(Function::new(format!("c{i}"), "inc").arg(format!("c{}", i - 1)));
    }
    let dag = dag
        .with(
            Function::new("view", "multiply")
                .arg("c10")
                .extra_arg(3_i64)
                .inline(),
        )
        .with(Function::new("consumer", "inc").arg("view"))
        .validate()
        .expect("valid DAG");
    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
    assert_eq!(done.results.get::<i64>("consumer"), Ok(31));
}

#[actix::test]
async fn nested_inline_functions_and_inline_roots() {
    let mut registry = seed_registry();
    registry.register("constant", || 5_i64).expect("register");
    registry
        .register("add", |a: i64, b: i64| a + b)
        .expect("register");
    let node = start_local(registry, Resources::new()).await;
    let dag = Dag::new()
        .with(Function::new("five", "constant").inline())
        .with(
            Function::new("ten", "multiply")
                .arg("five")
                .extra_arg(2_i64)
                .inline(),
        )
        .with(Function::new("x", "identity").extra_arg(100_i64))
        .with(Function::new("sum", "add").arg("ten").arg("x"))
        .with(Function::new("alone", "identity").arg("five"))
        .validate()
        .expect("valid DAG");
    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
    assert_eq!(done.results.get::<i64>("sum"), Ok(110));
    assert_eq!(done.results.get::<i64>("alone"), Ok(5));
    assert_eq!(done.results.len(), 3);
}

#[actix::test]
async fn an_empty_dag_executes_to_empty_results() {
    let node = start_local(seed_registry(), Resources::new().cpu(1)).await;
    let dag = Dag::with_id("empty").validate().expect("valid DAG");
    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
    assert_eq!(done.dag_id.as_str(), "empty");
    assert!(done.results.is_empty());
    assert_eq!(done.results.iter().count(), 0);
    assert!(done.allocations().is_empty());
}

#[actix::test]
async fn every_result_is_stored_and_located_on_the_local_node() {
    let node = start_local(seed_registry(), Resources::new().cpu(2)).await;
    let dag = Dag::new()
        .with(Function::new("a", "identity").extra_arg(3_i64))
        .with(
            Function::new("b", "multiply")
                .arg("a")
                .extra_arg(5_i64)
                .with_cost(Resources::new().cpu(1)),
        )
        .with(Function::new("c", "multiply").arg("a").arg("b"))
        .with(Function::new("d", "format_output").arg("c"))
        .validate()
        .expect("valid DAG");
    let dag_id = dag.id().clone();
    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");

    assert_eq!(done.results.len(), 4);
    for (id, value) in done.results.iter() {
        let stored = guarded(
            "get_local_value",
            node.get_local_value(dag_id.clone(), id.clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("`{id}` is in the result store: {e}"));
        assert!(stored.ptr_eq(value), "`{id}` is stored, not a copy");
        let location = guarded(
            "lookup_data_location",
            node.lookup_data_location(dag_id.clone(), id.clone()),
        )
        .await
        .expect("lookup");
        assert_eq!(location, Some(local()), "`{id}` is located here");
    }
    assert_eq!(guarded("stored_values", node.stored_values()).await, Ok(4));
    assert_eq!(
        guarded("get_local_value", node.get_local_value(dag_id.clone(), "c"))
            .await
            .expect("stored")
            .get::<i64>(),
        Ok(45)
    );
    assert_eq!(guarded("drop_dag", node.drop_dag(dag_id)).await, Ok(4));
    assert_eq!(guarded("stored_values", node.stored_values()).await, Ok(0));
}

/// A fan-out/fan-in DAG whose every value depends on `seed`; the function ids are the
/// same for every seed, so mixed-up results would show.
fn fan_dag(id: &str, seed: i64) -> handoff::ValidatedDag {
    let mut dag = Dag::with_id(id).with(Function::new("source", "identity").extra_arg(seed));
    let mut branches = Vec::new();
    for i in 0..20_i64 {
        let branch = format!("branch{i}");
        dag.add_function(
            Function::new(branch.as_str(), "multiply")
                .arg("source")
                .extra_arg(i),
        );
        branches.push(branch);
    }
    dag.with(
        Function::new("sum", "sum")
            .args(branches.iter().map(String::as_str))
            .as_list(),
    )
    .with(Function::new("sink", "format_output").arg("sum"))
    .validate()
    .expect("valid DAG")
}

#[actix::test]
async fn concurrent_executions_never_mix_results() {
    let mut registry = seed_registry();
    registry
        .register("sum", |xs: List<i64>| xs.iter().sum::<i64>())
        .expect("register");
    let node = start_local(registry, Resources::new().cpu(2)).await;

    let runs: Vec<_> = (1..=4_i64)
        .map(|seed| {
            let node = node.clone();
            async move {
                let dag = fan_dag(&format!("dag-{seed}"), seed);
                let options = ExecuteOptions::default().parallelism(2);
                (seed, node.execute(dag, options).await)
            }
        })
        .collect();
    let outcomes = guarded("four executions", futures::future::join_all(runs)).await;

    // sum over i in 0..20 of seed * i = seed * 190
    for (seed, outcome) in outcomes {
        let done = outcome.expect("runs");
        assert_eq!(done.dag_id.as_str(), format!("dag-{seed}"));
        assert_eq!(done.results.get::<i64>("source"), Ok(seed));
        assert_eq!(done.results.get::<i64>("branch7"), Ok(seed * 7));
        assert_eq!(done.results.get::<i64>("sum"), Ok(seed * 190));
        assert_eq!(
            done.results.get::<String>("sink"),
            Ok(format!("The final answer is: {}", seed * 190))
        );
        let stored = guarded(
            "get_local_value",
            node.get_local_value(format!("dag-{seed}"), "sum"),
        )
        .await
        .expect("stored");
        assert_eq!(stored.get::<i64>(), Ok(seed * 190));
    }
}

#[actix::test]
async fn two_dags_joined_with_costs_keep_their_own_values() {
    let node = start_local(seed_registry(), Resources::new().cpu(1)).await;
    let chain = |id: &str, start: i64| {
        let cost = Resources::new().cpu(1);
        Dag::with_id(id)
            .with(
                Function::new("source", "identity")
                    .extra_arg(start)
                    .with_cost(cost.clone()),
            )
            .with(
                Function::new("transform", "multiply")
                    .arg("source")
                    .extra_arg(2_i64)
                    .with_cost(cost),
            )
            .with(Function::new("sink", "format_output").arg("transform"))
            .validate()
            .expect("valid DAG")
    };
    let (a, b) = guarded(
        "two executions",
        futures::future::join(
            node.execute(chain("left", 21), ExecuteOptions::default()),
            node.execute(chain("right", 50), ExecuteOptions::default()),
        ),
    )
    .await;
    let (a, b) = (a.expect("left runs"), b.expect("right runs"));
    assert_eq!(a.dag_id.as_str(), "left");
    assert_eq!(b.dag_id.as_str(), "right");
    assert_eq!(
        a.results.get::<String>("sink").as_deref(),
        Ok("The final answer is: 42")
    );
    assert_eq!(
        b.results.get::<String>("sink").as_deref(),
        Ok("The final answer is: 100")
    );
}

#[actix::test]
async fn the_execute_message_can_be_sent_to_the_coordinator_directly() {
    let node = start_local(seed_registry(), Resources::new().cpu(1)).await;
    let dag = Dag::with_id("embedded")
        .with(Function::new("source", "identity").extra_arg(42_i64))
        .with(
            Function::new("transform", "multiply")
                .arg("source")
                .extra_arg(2_i64),
        )
        .validate()
        .expect("valid DAG");
    let coordinator = node.coordinator().clone();
    let reply = guarded(
        "Execute",
        coordinator.send(Execute {
            dag,
            options: ExecuteOptions::new(),
        }),
    )
    .await
    .expect("the coordinator is alive");
    let done = reply.expect("runs");
    assert_eq!(done.dag_id.as_str(), "embedded");
    assert_eq!(done.results.get::<i64>("transform"), Ok(84));
}

#[actix::test]
async fn execute_local_ignores_costs_and_placement() {
    let node = start_local(seed_registry(), Resources::new().cpu(1)).await;
    let build = || {
        Dag::new()
            .with(
                Function::new("huge", "identity")
                    .extra_arg(7_i64)
                    .with_cost(Resources::new().cpu(64).gpu(8)),
            )
            .with(
                Function::new("elsewhere", "multiply")
                    .arg("huge")
                    .extra_arg(6_i64)
                    .pinned("ghost"),
            )
            .with(
                Function::new("along", "format_output")
                    .arg("elsewhere")
                    .collocated_with("elsewhere"),
            )
            .validate()
            .expect("valid DAG")
    };

    // The ordinary path refuses it...
    let refused = guarded("execute", node.execute(build(), ExecuteOptions::default())).await;
    assert!(
        matches!(refused, Err(ExecuteError::Rejected { .. })),
        "{refused:?}"
    );

    // ...the local path runs it here.
    let done = guarded(
        "execute_local",
        node.execute_local(build(), ExecuteOptions::default()),
    )
    .await
    .expect("runs locally");
    assert_eq!(done.results.get::<i64>("elsewhere"), Ok(42));
    assert_eq!(
        done.results.get::<String>("along").as_deref(),
        Ok("The final answer is: 42")
    );
    for (function, ran_on) in done.allocations() {
        assert_eq!(ran_on, local(), "{function}");
    }
}

const TEN_MB: usize = 10 << 20;

/// A registry whose `make` creates a 10 MB buffer and whose `pass` hands its shared
/// argument on without copying, recording the address of every buffer it saw.
fn zero_copy_registry(seen: &Arc<Mutex<Vec<usize>>>) -> Registry {
    let mut registry = Registry::new();
    registry
        .register("make", || vec![7_u8; TEN_MB])
        .expect("register");
    let record = Arc::clone(seen);
    registry
        .register("pass", move |buffer: Shared<Vec<u8>>| {
            record.lock().expect("lock").push(buffer.as_ptr() as usize);
            Value::from_arc(buffer.into_arc())
        })
        .expect("register");
    let record = Arc::clone(seen);
    registry
        .register("pass_value", move |value: Value| {
            let address = value
                .downcast_ref::<Vec<u8>>()
                .map_or(0, |b| b.as_ptr() as usize);
            record.lock().expect("lock").push(address);
            value
        })
        .expect("register");
    registry
        .register("total_len", |buffers: List<Shared<Vec<u8>>>| {
            buffers.iter().map(|b| b.len()).sum::<usize>()
        })
        .expect("register");
    registry
}

fn buffer_address(value: Option<&Value>) -> usize {
    value
        .and_then(Value::downcast_ref::<Vec<u8>>)
        .map(|b| b.as_ptr() as usize)
        .expect("a local Vec<u8> result")
}

async fn assert_chain_shares_one_buffer(costs: impl Fn(usize) -> Option<Resources>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let node = start_local(zero_copy_registry(&seen), Resources::new().cpu(2)).await;
    let mut dag = Dag::new().with(Function::new("make", "make"));
    let mut previous = "make".to_owned();
    for i in 1..=5 {
        let id = format!("p{i}");
        let code = if i == 3 { "pass_value" } else { "pass" };
        let mut f = Function::new(id.as_str(), code).arg(previous.as_str());
        if let Some(cost) = costs(i) {
            f = f.with_cost(cost);
        }
        dag.add_function(f);
        previous = id;
    }
    let dag = dag
        .with(
            Function::new("lens", "total_len")
                .args(["make", "p1", "p5"])
                .as_list(),
        )
        .validate()
        .expect("valid DAG");
    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");

    let source = buffer_address(done.results.value("make"));
    let sink = buffer_address(done.results.value("p5"));
    assert_eq!(sink, source, "the buffer was never copied");
    let make = done.results.value("make").expect("make's result");
    for id in ["p1", "p2", "p3", "p4", "p5"] {
        let value = done.results.value(id).expect("a result");
        assert!(value.ptr_eq(make), "`{id}` shares make's allocation");
    }
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen, vec![source; 5], "every function saw the same buffer");
    assert_eq!(done.results.get::<usize>("lens"), Ok(3 * TEN_MB));
}

#[actix::test]
async fn a_10_mb_buffer_passes_along_a_chain_without_a_copy() {
    assert_chain_shares_one_buffer(|_| None).await;
}

#[actix::test]
async fn a_10_mb_buffer_passes_between_differently_costed_functions_without_a_copy() {
    // Alternating costs stop functions from running back to back in one job, so every
    // hop goes through the execution's coordinator.
    assert_chain_shares_one_buffer(|i| (i % 2 == 1).then(|| Resources::new().cpu(1))).await;
}

#[actix::test]
async fn a_large_extra_arg_reaches_the_function_without_a_copy() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let node = start_local(zero_copy_registry(&seen), Resources::new()).await;
    let dag = Dag::new()
        .with(Function::new("given", "pass").extra_arg(vec![1_u8; TEN_MB]))
        .validate()
        .expect("valid DAG");
    let constant = buffer_address(dag.functions()[0].extra_args().first());
    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
    assert_eq!(buffer_address(done.results.value("given")), constant);
    assert_eq!(seen.lock().expect("lock").clone(), vec![constant]);
}

/// Lets `n` callers in once all `n` have arrived (each gives up after a while, so a
/// broken schedule fails the test instead of hanging it).
#[derive(Default)]
struct Rendezvous {
    arrived: Mutex<usize>,
    all_in: std::sync::Condvar,
}

impl Rendezvous {
    fn meet(&self, n: usize) {
        let mut arrived = self.arrived.lock().expect("lock");
        *arrived += 1;
        self.all_in.notify_all();
        let wait = std::time::Duration::from_secs(5);
        let _ = self
            .all_in
            .wait_timeout_while(arrived, wait, |arrived| *arrived < n)
            .expect("lock");
    }
}

/// Runs `dag` with parallelism 4 and its events collected; returns every event.
async fn events_of(registry: Registry, dag: handoff::ValidatedDag) -> Vec<handoff::Event> {
    use futures::StreamExt;
    let node = start_local(registry, Resources::new()).await;
    let options = ExecuteOptions::default().parallelism(4).events(1024);
    let mut handle = guarded("submit", node.submit(dag, options))
        .await
        .expect("feasible");
    let events = handle.events().expect("asked for events");
    let events = actix::spawn(events.collect::<Vec<_>>());
    guarded("outcome", handle.outcome()).await.expect("runs");
    guarded("events", events).await.expect("collected")
}

/// When `function` started and finished in `events` (microseconds).
fn span_of(events: &[handoff::Event], function: &str) -> (u64, u64) {
    use handoff::EventKind;
    let at = |started: bool| {
        events
            .iter()
            .find(|e| match &e.kind {
                EventKind::Started { function: f, .. } if started => f.as_str() == function,
                EventKind::Finished { function: f, .. } if !started => f.as_str() == function,
                _ => false,
            })
            .map(|e| e.at_micros)
            .unwrap_or_else(|| panic!("`{function}` ran: {events:?}"))
    };
    (at(true), at(false))
}

/// `src → {l1 → l2 → l3, right}`: `right` starts as soon as `src` ends, while the chain
/// runs (`l1` waits until `right` has started, so they overlap when scheduled right).
#[actix::test]
async fn a_sibling_of_a_chain_starts_when_their_dependency_ends() {
    let meet = Arc::new(Rendezvous::default());
    let mut registry = seed_registry();
    let m = Arc::clone(&meet);
    registry
        .register("meet", move |x: i64| {
            m.meet(2);
            x
        })
        .expect("register");
    let dag = Dag::new()
        .with(Function::new("src", "identity").extra_arg(1_i64))
        .with(Function::new("l1", "meet").arg("src"))
        .with(Function::new("l2", "identity").arg("l1"))
        .with(Function::new("l3", "identity").arg("l2"))
        .with(Function::new("right", "meet").arg("src"))
        .validate()
        .expect("valid DAG");
    let events = events_of(registry, dag).await;
    let (_, src_end) = span_of(&events, "src");
    let (l1_start, l1_end) = span_of(&events, "l1");
    let (right_start, right_end) = span_of(&events, "right");
    assert!(src_end <= l1_start && src_end <= right_start);
    assert!(
        right_start < l1_end && l1_start < right_end,
        "`right` and `l1` overlap: {events:?}"
    );
}

/// `src → {a, b, c, d} → sink` with parallelism 4: the four branches run together.
#[actix::test]
async fn the_branches_of_a_diamond_run_together() {
    let meet = Arc::new(Rendezvous::default());
    let mut registry = seed_registry();
    let m = Arc::clone(&meet);
    registry
        .register("meet", move |x: i64| {
            m.meet(4);
            x
        })
        .expect("register");
    registry
        .register("sum", |xs: List<i64>| xs.iter().sum::<i64>())
        .expect("register");
    let branches = ["a", "b", "c", "d"];
    let mut dag = Dag::new().with(Function::new("src", "identity").extra_arg(1_i64));
    for b in branches {
        dag = dag.with(Function::new(b, "meet").arg("src"));
    }
    let dag = dag
        .with(Function::new("sink", "sum").args(branches).as_list())
        .validate()
        .expect("valid DAG");
    let events = events_of(registry, dag).await;
    let spans: Vec<(u64, u64)> = branches.iter().map(|b| span_of(&events, b)).collect();
    let last_start = spans.iter().map(|s| s.0).max().expect("four");
    let first_end = spans.iter().map(|s| s.1).min().expect("four");
    assert!(
        last_start < first_end,
        "every branch started before any ended: {spans:?}"
    );
}

/// A chain of 20 diamonds of inline functions (60 of them) costs one call of each per
/// consuming call, not one per path (2^20 paths).
#[actix::test]
async fn a_chain_of_inline_diamonds_evaluates_each_inline_function_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut registry = seed_registry();
    let c = Arc::clone(&calls);
    registry
        .register("inc", move |x: i64| {
            c.fetch_add(1, Ordering::Relaxed);
            x + 1
        })
        .expect("register");
    let c = Arc::clone(&calls);
    registry
        .register("add", move |x: i64, y: i64| {
            c.fetch_add(1, Ordering::Relaxed);
            x + y
        })
        .expect("register");
    const DEPTH: usize = 20;
    let mut dag = Dag::new().with(Function::new("m0", "identity").extra_arg(0_i64));
    for k in 1..=DEPTH {
        let below = format!("m{}", k - 1);
        dag = dag
            .with(
                Function::new(format!("l{k}"), "inc")
                    .arg(below.as_str())
                    .inline(),
            )
            .with(
                Function::new(format!("r{k}"), "inc")
                    .arg(below.as_str())
                    .inline(),
            )
            .with(
                Function::new(format!("m{k}"), "add")
                    .args([format!("l{k}"), format!("r{k}")])
                    .inline(),
            );
    }
    let dag = dag
        .with(Function::new("sink", "identity").arg(format!("m{DEPTH}").as_str()))
        .validate()
        .expect("valid DAG");
    let node = start_local(registry, Resources::new()).await;
    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
    // m_k = 2 * (m_{k-1} + 1): 2^(k+1) - 2.
    assert_eq!(done.results.get::<i64>("sink"), Ok((1 << (DEPTH + 1)) - 2));
    assert_eq!(
        calls.load(Ordering::Relaxed),
        3 * DEPTH,
        "one call per inline function"
    );
}

/// A DAG built from typed code handles runs like one built by name, and its results are
/// read back by their handles, typed.
#[actix::test]
async fn a_dag_built_from_typed_handles_runs_and_reads_its_results_typed() {
    let mut registry = Registry::new();
    let double = registry.register("double", |x: i64| x * 2).expect("double");
    let add = registry
        .register("add", |x: i64, y: i64| x + y)
        .expect("add");
    let total = registry
        .register("total", |xs: Vec<i64>| xs.iter().sum::<i64>())
        .expect("total");
    let show = registry
        .register("show", |x: i64, unit: String| format!("{x} {unit}"))
        .expect("show");
    let node = start_local(registry, Resources::new().cpu(2)).await;
    let mut dag = Dag::new();
    let a = dag.call("a", &double, (21_i64,));
    let b = dag.add(handoff::Call::new("b", &add, (&a, 8_i64)).with_cost(Resources::new().cpu(1)));
    let sum = dag.add(handoff::Call::list("sum", &total, [&a, &b]));
    let text = dag.call("text", &show, (&sum, "apples".to_owned()));
    let dag = dag.validate().expect("valid");
    let done = guarded("execute", node.execute(dag, ExecuteOptions::default()))
        .await
        .expect("runs");
    let (a, b, sum, text): (i64, i64, i64, String) = (
        done.results.of(&a).expect("a"),
        done.results.of(&b).expect("b"),
        done.results.of(&sum).expect("sum"),
        done.results.of(&text).expect("text"),
    );
    assert_eq!((a, b, sum), (42, 50, 92));
    assert_eq!(text, "92 apples");
}
