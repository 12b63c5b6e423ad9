//! Local workloads, timed end to end through `NodeHandle::execute` (validation excluded).
//!
//! `cargo bench --bench workloads` prints the median, min and max of several runs after
//! a warm-up. Every run checks its result.

use std::time::{Duration, Instant};

use handoff::{
    Dag, ExecuteOptions, Function, List, NodeConfig, NodeHandle, Registry, Shared, Value,
    start_node,
};

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register("one", || 1_i64).expect("register");
    r.register("inc", |x: i64| x + 1).expect("register");
    r.register("add", |a: i64, b: i64| a + b).expect("register");
    r.register("sum", |xs: List<i64>| xs.iter().sum::<i64>())
        .expect("register");
    r.register("blob", |n: usize| bytes::Bytes::from(vec![7_u8; n]))
        .expect("register");
    r.register("pass", |b: Shared<bytes::Bytes>| {
        Value::from_arc(b.into_arc())
    })
    .expect("register");
    r
}

fn fanout(n: usize) -> Dag {
    let mut dag = Dag::new();
    for i in 0..n {
        dag.add_function(Function::new(format!("f{i}"), "one"));
    }
    dag.with(
        Function::new("total", "sum")
            .args((0..n).map(|i| format!("f{i}")))
            .as_list(),
    )
}

fn chain(n: usize) -> Dag {
    let mut dag = Dag::new().with(Function::new("c0", "one"));
    for i in 1..n {
        dag.add_function(Function::new(format!("c{i}"), "inc").arg(format!("c{}", i - 1)));
    }
    dag
}

fn layers(width: usize, depth: usize) -> Dag {
    let mut dag = Dag::new();
    for j in 0..width {
        dag.add_function(Function::new(format!("l0_{j}"), "one"));
    }
    for l in 1..depth {
        for j in 0..width {
            dag.add_function(
                Function::new(format!("l{l}_{j}"), "add")
                    .arg(format!("l{}_{j}", l - 1))
                    .arg(format!("l{}_{}", l - 1, (j + 1) % width)),
            );
        }
    }
    dag
}

/// A buffer made once, outside the timing, passed as the first function's extra
/// argument and handed along `hops` functions.
fn payload(hops: usize, buffer: &bytes::Bytes) -> Dag {
    let mut dag = Dag::new().with(Function::new("p0", "pass").extra_arg(buffer.clone()));
    for i in 1..hops {
        dag.add_function(Function::new(format!("p{i}"), "pass").arg(format!("p{}", i - 1)));
    }
    dag
}

/// Times one execution. With `events`, the execution streams its events into a
/// buffer that large and a task consumes them as they come.
async fn time(
    node: &NodeHandle,
    make: &dyn Fn() -> Dag,
    check: &dyn Fn(&handoff::Results),
    events: usize,
) -> Duration {
    let dag = make().validate().expect("valid");
    let start = Instant::now();
    let mut handle = node
        .submit(dag, ExecuteOptions::default().events(events))
        .await
        .expect("submit");
    let consumer = handle.events().map(|mut stream| {
        actix::spawn(async move {
            let mut seen = 0_usize;
            while futures::StreamExt::next(&mut stream).await.is_some() {
                seen += 1;
            }
            seen
        })
    });
    let done = handle.await.expect("execute");
    let elapsed = start.elapsed();
    if let Some(consumer) = consumer {
        assert!(
            consumer.await.expect("consumer") > 0,
            "events were delivered"
        );
    }
    check(&done.results);
    // Freeing the DAG's values on the node happens when the result is dropped; wait for
    // it here, outside the timing, so it does not land in the next run.
    drop(done);
    assert_eq!(node.stored_values().await.expect("count"), 0);
    elapsed
}

fn report(name: &str, per: usize, unit: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let per_item = |d: Duration| d.as_secs_f64() * 1e6 / per as f64;
    println!(
        "{name:<22} median {:>9.3} ms  min {:>9.3} ms  max {:>9.3} ms  | {:>7.3} µs/{unit} ({:.0} {unit}/s)",
        median.as_secs_f64() * 1e3,
        samples[0].as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
        per_item(median),
        per as f64 / median.as_secs_f64(),
    );
}

/// A name, the number of units timed, the unit, how to build the DAG and how to check it.
type Workload = (
    &'static str,
    usize,
    &'static str,
    Box<dyn Fn() -> Dag>,
    Box<dyn Fn(&handoff::Results)>,
);

fn main() {
    let runs = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let big = bytes::Bytes::from(vec![7_u8; 10 << 20]);
    let small = bytes::Bytes::from(vec![7_u8; 10]);
    actix::System::new().block_on(async move {
        let node = start_node(NodeConfig::new("bench", registry()))
            .await
            .expect("node");
        let workloads: Vec<Workload> = vec![
            (
                "fanout 10k + sum",
                10_001,
                "fn",
                Box::new(|| fanout(10_000)),
                Box::new(|r| assert_eq!(r.get::<i64>("total").expect("total"), 10_000)),
            ),
            (
                "single function",
                1,
                "execution",
                Box::new(|| Dag::new().with(Function::new("one", "one"))),
                Box::new(|r| assert_eq!(r.get::<i64>("one").expect("one"), 1)),
            ),
            (
                "chain 1000",
                999,
                "hop",
                Box::new(|| chain(1000)),
                Box::new(|r| assert_eq!(r.get::<i64>("c999").expect("c999"), 1000)),
            ),
            (
                "layers 20x100",
                2000,
                "fn",
                Box::new(|| layers(100, 20)),
                Box::new(|r| assert_eq!(r.get::<i64>("l19_0").expect("l19_0"), 1 << 19)),
            ),
            (
                "payload 10 x 10 MB",
                9,
                "hop",
                Box::new({
                    let big = big.clone();
                    move || payload(10, &big)
                }),
                Box::new({
                    let big = big.clone();
                    move |r| {
                        let last = r
                            .value("p9")
                            .expect("p9")
                            .shared::<bytes::Bytes>()
                            .expect("bytes");
                        assert_eq!(last.as_ptr(), big.as_ptr(), "no copy along the chain");
                    }
                }),
            ),
            (
                "payload 10 x 10 B",
                9,
                "hop",
                Box::new(move || payload(10, &small)),
                Box::new(|r| {
                    assert_eq!(
                        r.value("p9")
                            .expect("p9")
                            .shared::<bytes::Bytes>()
                            .expect("b")
                            .len(),
                        10
                    )
                }),
            ),
        ];
        for (name, per, unit, make, check) in &workloads {
            for events in [0, 1 << 17] {
                if events > 0 && !name.starts_with("fanout") {
                    continue;
                }
                for _ in 0..2 {
                    time(&node, make.as_ref(), check.as_ref(), events).await;
                }
                let mut samples = Vec::with_capacity(runs);
                for _ in 0..runs {
                    samples.push(time(&node, make.as_ref(), check.as_ref(), events).await);
                }
                let label = if events > 0 {
                    format!("{name} +events")
                } else {
                    (*name).to_owned()
                };
                report(&label, *per, unit, samples);
            }
        }
    });
}
