//! A classification-style stream: `preprocess` → a batched `model` stage whose init
//! builds a lookup table (standing in for loading a model) → `postprocess`, fed
//! 100,000 items. Prints the throughput and each stage's statistics.
//!
//! ```sh
//! cargo run --example stream_classify            # 100,000 items
//! cargo run --release --example stream_classify -- 1000000
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use handoff::{Dag, Function, NodeConfig, Registry, Resources, StreamOptions, start_node};

/// The "model": a word → class table, built once per worker.
struct Model {
    classes: HashMap<String, u8>,
}

const WORDS: [&str; 8] = [
    "apple", "banana", "cherry", "carrot", "potato", "salmon", "trout", "tuna",
];
const LABELS: [&str; 3] = ["fruit", "vegetable", "fish"];

fn registry() -> Result<Registry, handoff::RegisterError> {
    let mut registry = Registry::new();
    // Each item is a number; preprocessing turns it into a normalised word.
    registry.register("preprocess", |n: u64| {
        WORDS[(n % WORDS.len() as u64) as usize]
            .to_uppercase()
            .to_lowercase()
    })?;
    registry.register_init("load_model", || Model {
        classes: WORDS
            .iter()
            .enumerate()
            .map(|(i, w)| ((*w).to_owned(), [0, 0, 0, 1, 1, 2, 2, 2][i]))
            .collect(),
    })?;
    // One call per batch of words: one class per word.
    registry.register_stateful_batch("classify", |model: &mut Model, words: Vec<String>| {
        words
            .iter()
            .map(|w| model.classes.get(w).copied().unwrap_or(u8::MAX))
            .collect::<Vec<u8>>()
    })?;
    registry.register("postprocess", |class: u8| {
        LABELS
            .get(usize::from(class))
            .copied()
            .unwrap_or("unknown")
            .to_owned()
    })?;
    Ok(registry)
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let items: u64 = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 100_000,
    };
    let node = start_node(
        NodeConfig::new("local", registry()?).capabilities(Resources::new().cpu(4).memory(4096)),
    )
    .await?;
    let dag = Dag::new()
        .with(Function::input("item"))
        .with(Function::new("preprocess", "preprocess").arg("item"))
        .with(
            Function::new("model", "classify")
                .arg("preprocess")
                .init("load_model")
                .batch(256, Duration::from_millis(5))
                .parallelism(2)
                .with_cost(Resources::new().cpu(1).memory(512)),
        )
        .with(Function::new("postprocess", "postprocess").arg("model"))
        .validate()?;

    let started = Instant::now();
    let mut stream = node.stream(dag, StreamOptions::new()).await?;
    let mut results = stream.results().ok_or("results taken")?;
    // Read while pushing: results come back in push order.
    let reader = actix::spawn(async move {
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut errors = 0_u64;
        while let Some(result) = results.next().await {
            match result.map(|out| out.get::<String>()) {
                Ok(Ok(label)) => *counts.entry(label).or_default() += 1,
                _ => errors += 1,
            }
        }
        (counts, errors)
    });
    stream.push_all(0..items).await?;
    let stats = stream.stop().await;
    let (counts, errors) = reader.await?;
    let elapsed = started.elapsed();

    println!(
        "{items} items in {:.3} s: {:.0} items/s ({errors} errors)",
        elapsed.as_secs_f64(),
        items as f64 / elapsed.as_secs_f64()
    );
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort();
    println!("classes: {counts:?}");
    println!(
        "{:<12} {:>7} {:>9} {:>8} {:>7} {:>9} {:>10} {:>6}",
        "stage", "workers", "items", "batches", "errors", "busy ms", "queue peak", "bound"
    );
    for stage in &stats.stages {
        println!(
            "{:<12} {:>7} {:>9} {:>8} {:>7} {:>9.1} {:>10} {:>6}",
            stage.function.as_str(),
            stage.workers,
            stage.items,
            stage.batches,
            stage.errors,
            stage.busy.as_secs_f64() * 1e3,
            stage.queue_peak,
            stage.queue_capacity
        );
    }
    Ok(())
}
