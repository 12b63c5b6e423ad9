//! The seed README's pipeline: a source returns 42, a transform multiplies it by 2, and
//! a sink formats it. Prints the final answer and where each function ran.
//!
//! Run it with `cargo run --example simple_pipeline`.

use handoff::{Dag, ExecuteOptions, Function, NodeConfig, Registry, Resources, start_node};

fn registry() -> Result<Registry, handoff::RegisterError> {
    let mut registry = Registry::new();
    registry.register("identity", |x: i64| x)?;
    registry.register("multiply", |x: i64, y: i64| x * y)?;
    registry.register("format_output", |value: i64| {
        format!("The final answer is: {value}")
    })?;
    Ok(registry)
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();

    let node = start_node(
        NodeConfig::new("local", registry()?).capabilities(Resources::new().cpu(2).memory(1024)),
    )
    .await?;

    let dag = Dag::new()
        // A source function with no dependencies: identity(42).
        .with(Function::new("source", "identity").extra_arg(42_i64))
        // Takes the source's result: multiply(source, 2).
        .with(
            Function::new("transform", "multiply")
                .arg("source")
                .extra_arg(2_i64),
        )
        // Takes the transform's result: format_output(transform).
        .with(Function::new("sink", "format_output").arg("transform"));

    let dag = match dag.validate() {
        Ok(dag) => {
            println!("DAG is valid!");
            dag
        }
        Err(error) => {
            println!("DAG is invalid: {error}");
            return Err(error.into());
        }
    };

    let done = node.execute(dag, ExecuteOptions::default()).await?;
    println!("{}", done.results.get::<String>("sink")?);
    println!("DAG id: {}", done.dag_id);
    for (function, node) in done.allocations() {
        println!("  {function} ran on {node}");
    }
    Ok(())
}
