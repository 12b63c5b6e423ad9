//! Streams: items per second through a 3-stage pipeline of trivial functions on one
//! node (`input → inc → inc → inc`), timed from the first push to the last result read.
//!
//! `cargo bench --bench stream` prints the median, min and max of several runs after a
//! warm-up, then one `json {...}` line per variant. Every run checks every result.
//!
//! Without the `--bench` argument (how `cargo test` runs this target) it runs in quick
//! mode: 2,000 items, one run, no warm-up; only the correctness checks matter there.
//!
//! Environment: `RUNS` (runs per variant, default 10), `ITEMS` (items per run, default
//! 1,000,000).

use std::time::{Duration, Instant};

use futures::StreamExt;
use handoff::{
    Dag, Function, NodeConfig, NodeHandle, Registry, StreamOptions, ValidatedDag, start_node,
};

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register("inc", |x: u64| x + 1).expect("register");
    r.register_batch("inc_all", |xs: Vec<u64>| {
        xs.into_iter().map(|x| x + 1).collect::<Vec<_>>()
    })
    .expect("register");
    r
}

/// `input → a → b → c`, with `middle` as the middle stage.
fn pipeline(middle: Function) -> ValidatedDag {
    Dag::new()
        .with(Function::input("x"))
        .with(Function::new("a", "inc").arg("x"))
        .with(middle)
        .with(Function::new("c", "inc").arg("b"))
        .validate()
        .expect("valid")
}

/// One run: pushes `items`, reads every result (checking it), stops. Returns the time.
async fn run(node: &NodeHandle, dag: ValidatedDag, options: StreamOptions, items: u64) -> Duration {
    let started = Instant::now();
    let mut stream = node.stream(dag, options).await.expect("start");
    let mut results = stream.results().expect("results");
    let reader = actix::spawn(async move {
        let mut expected = 3_u64;
        while let Some(result) = results.next().await {
            let value = result.expect("no item error").get::<u64>().expect("u64");
            assert_eq!(value, expected, "results in push order");
            expected += 1;
        }
        expected - 3
    });
    stream.push_all(0..items).await.expect("push");
    let stats = stream.stop().await;
    let read = reader.await.expect("reader");
    let elapsed = started.elapsed();
    assert_eq!(read, items);
    for stage in &stats.stages {
        assert_eq!(stage.items, items);
        assert!(stage.queue_peak <= stage.queue_capacity);
    }
    elapsed
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test` does not: quick mode.
    let quick = !std::env::args().any(|a| a == "--bench");
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (runs, warmup, items) = if quick {
        println!("quick mode (no --bench): 2,000 items, correctness only");
        (1, 0, 2_000)
    } else {
        (env("RUNS", 10), 1, env("ITEMS", 1_000_000))
    };
    let variants: Vec<(&str, Function, StreamOptions)> = vec![
        (
            "3 stages, 1 worker each",
            Function::new("b", "inc").arg("a"),
            StreamOptions::new(),
        ),
        (
            "3 stages, middle stage with 2 workers",
            Function::new("b", "inc").arg("a").parallelism(2),
            StreamOptions::new(),
        ),
        (
            "3 stages, middle stage batched by 256",
            Function::new("b", "inc_all")
                .arg("a")
                .batch(256, Duration::from_millis(1)),
            StreamOptions::new(),
        ),
        (
            "3 stages, chunks of 1 (one channel send per item and stage)",
            Function::new("b", "inc").arg("a"),
            StreamOptions::new().chunk(1),
        ),
    ];
    actix::System::new().block_on(async move {
        let node = start_node(NodeConfig::new("bench", registry()))
            .await
            .expect("node");
        let mut lines = Vec::new();
        for (name, middle, options) in variants {
            let dag = pipeline(middle);
            for _ in 0..warmup {
                run(&node, dag.clone(), options.clone(), items).await;
            }
            let mut times: Vec<Duration> = Vec::with_capacity(runs as usize);
            for _ in 0..runs {
                times.push(run(&node, dag.clone(), options.clone(), items).await);
            }
            times.sort();
            let median = times[times.len() / 2];
            let (min, max) = (times[0], times[times.len() - 1]);
            let per_second = items as f64 / median.as_secs_f64();
            let per_item_stage = median.as_secs_f64() * 1e6 / (items as f64 * 3.0);
            println!(
                "{name}: {items} items, median {:.1} ms (min {:.1}, max {:.1}): {:.0} items/s, {:.2} µs per item per stage",
                median.as_secs_f64() * 1e3,
                min.as_secs_f64() * 1e3,
                max.as_secs_f64() * 1e3,
                per_second,
                per_item_stage
            );
            lines.push(format!(
                "json {{\"bench\":\"stream\",\"variant\":\"{name}\",\"items\":{items},\"runs\":{runs},\"median_ms\":{:.3},\"min_ms\":{:.3},\"max_ms\":{:.3},\"items_per_s\":{per_second:.0},\"us_per_item_stage\":{per_item_stage:.3}}}",
                median.as_secs_f64() * 1e3,
                min.as_secs_f64() * 1e3,
                max.as_secs_f64() * 1e3
            ));
        }
        for line in lines {
            println!("{line}");
        }
    });
}
