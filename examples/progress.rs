//! A live progress bar over a 100,000-function DAG, driven by the execution's event stream.
//!
//! ```sh
//! cargo run --release --example progress --features progress
//! cargo run --release --example progress --features progress -- 100000 50   # functions, µs each
//! ```
//!
//! `src` fans out to N `work` functions (each spins for the given microseconds), summed
//! by groups of 1,000, then in total. When it ends, it prints the execution report.

use std::time::{Duration, Instant};

use handoff::{Dag, ExecuteOptions, Function, List, NodeConfig, Registry, start_node};

fn registry() -> Result<Registry, handoff::RegisterError> {
    let mut registry = Registry::new();
    registry.register("zero", || 0_u64)?;
    registry.register("work", |x: u64, micros: u64| {
        let until = Instant::now() + Duration::from_micros(micros);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        x + 1
    })?;
    registry.register("sum", |xs: List<u64>| xs.iter().sum::<u64>())?;
    Ok(registry)
}

fn dag(n: usize, micros: u64) -> Dag {
    const GROUP: usize = 1000;
    let mut dag = Dag::with_id("progress").with(Function::new("src", "zero"));
    for i in 0..n {
        dag.add_function(
            Function::new(format!("w{i}"), "work")
                .arg("src")
                .extra_arg(micros),
        );
    }
    let groups = n.div_ceil(GROUP);
    for g in 0..groups {
        let members = (g * GROUP..((g + 1) * GROUP).min(n)).map(|i| format!("w{i}"));
        dag.add_function(
            Function::new(format!("g{g}"), "sum")
                .args(members)
                .as_list(),
        );
    }
    dag.add_function(
        Function::new("total", "sum")
            .args((0..groups).map(|g| format!("g{g}")))
            .as_list(),
    );
    dag
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let micros: u64 = args.next().map_or(Ok(50), |a| a.parse())?;
    let dag = dag(n.max(1), micros).validate()?;
    let total = dag.regular_len();
    actix::System::new().block_on(async move {
        let node = start_node(NodeConfig::new("local", registry()?)).await?;
        let options = ExecuteOptions::default().events(1 << 16).report(true);
        let mut handle = node.submit(dag, options).await?;
        let events = handle.events().ok_or("no event stream")?;
        let bar = actix::spawn(handoff::progress::show(events, total));
        let done = handle.await?;
        let tally = bar.await?;
        println!(
            "total = {} ({} functions, {} done as seen by the bar)",
            done.results.get::<u64>("total")?,
            total,
            tally.done
        );
        if let Some(report) = done.report() {
            print!("{report}");
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
