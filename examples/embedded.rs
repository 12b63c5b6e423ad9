//! A service that already runs its own actix actors embeds a Handoff node in the same
//! `System`: its `Ingest` actor buffers incoming numbers and, for every full batch,
//! sends the node's coordinator an [`Execute`] message with a DAG that squares each
//! number and sums the squares. The service keeps its own running state and prints
//! each batch's result.
//!
//! Run it with `cargo run --example embedded`.

use actix::prelude::*;
use handoff::actors::{Coordinator, Execute};
use handoff::{
    Dag, ExecuteError, ExecuteOptions, Function, List, NodeConfig, Registry, Resources,
    ResultError, start_node,
};

type BoxError = Box<dyn std::error::Error>;

/// What the service learns from one batch.
#[derive(Debug, Clone)]
struct BatchReport {
    batch: u32,
    items: Vec<i64>,
    sum_of_squares: i64,
    running_total: i64,
}

/// Why the service could not process a batch.
#[derive(Debug)]
enum IngestError {
    /// The DAG failed.
    Execute(ExecuteError),
    /// The DAG ran but its `sum` could not be read.
    Result(ResultError),
    /// The node's coordinator has stopped.
    CoordinatorStopped,
}

impl std::fmt::Display for IngestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Execute(error) => write!(f, "the batch failed: {error}"),
            Self::Result(error) => write!(f, "the batch's result: {error}"),
            Self::CoordinatorStopped => f.write_str("the Handoff coordinator has stopped"),
        }
    }
}

impl std::error::Error for IngestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Execute(error) => Some(error),
            Self::Result(error) => Some(error),
            Self::CoordinatorStopped => None,
        }
    }
}

/// The service's own actor: buffers numbers and hands full batches to Handoff.
struct Ingest {
    coordinator: Addr<Coordinator>,
    batch_size: usize,
    buffer: Vec<i64>,
    batches: u32,
    total: i64,
}

impl Actor for Ingest {
    type Context = Context<Self>;
}

/// One number arrives. Replies with the batch's report when it completed a batch.
#[derive(Message)]
#[rtype(result = "Result<Option<BatchReport>, IngestError>")]
struct Push(i64);

/// Processes what is buffered, even if the batch is not full.
#[derive(Message)]
#[rtype(result = "Result<Option<BatchReport>, IngestError>")]
struct Flush;

/// Asks for the totals so far.
#[derive(Message)]
#[rtype(result = "TotalsSoFar")]
struct Totals;

/// The service's state, as reported.
#[derive(Debug, MessageResponse)]
struct TotalsSoFar {
    batches: u32,
    total: i64,
}

impl Ingest {
    /// Builds the batch's DAG, sends it to the coordinator and folds the answer into
    /// the actor's state when it comes back.
    fn run_batch(&mut self) -> ResponseActFuture<Self, Result<Option<BatchReport>, IngestError>> {
        if self.buffer.is_empty() {
            return Box::pin(fut::ready(Ok(None)));
        }
        let items = std::mem::take(&mut self.buffer);
        self.batches += 1;
        let batch = self.batches;

        let mut dag = Dag::with_id(format!("batch-{batch}"));
        let mut squares = Vec::with_capacity(items.len());
        for (i, &x) in items.iter().enumerate() {
            let id = format!("square-{i}");
            dag.add_function(Function::new(id.as_str(), "square").extra_arg(x));
            squares.push(id);
        }
        dag.add_function(Function::new("sum", "sum").args(squares).as_list());
        let dag = match dag.validate() {
            Ok(dag) => dag,
            Err(error) => unreachable!("the batch DAG is built valid: {error}"),
        };

        let request = self.coordinator.send(Execute {
            dag,
            options: ExecuteOptions::default(),
        });
        Box::pin(request.into_actor(self).map(move |answer, act, _ctx| {
            let done = answer
                .map_err(|_| IngestError::CoordinatorStopped)?
                .map_err(IngestError::Execute)?;
            let sum_of_squares = done
                .results
                .get::<i64>("sum")
                .map_err(IngestError::Result)?;
            act.total += sum_of_squares;
            Ok(Some(BatchReport {
                batch,
                items,
                sum_of_squares,
                running_total: act.total,
            }))
        }))
    }
}

impl Handler<Push> for Ingest {
    type Result = ResponseActFuture<Self, Result<Option<BatchReport>, IngestError>>;

    fn handle(&mut self, Push(x): Push, _ctx: &mut Self::Context) -> Self::Result {
        self.buffer.push(x);
        if self.buffer.len() < self.batch_size {
            return Box::pin(fut::ready(Ok(None)));
        }
        self.run_batch()
    }
}

impl Handler<Flush> for Ingest {
    type Result = ResponseActFuture<Self, Result<Option<BatchReport>, IngestError>>;

    fn handle(&mut self, _msg: Flush, _ctx: &mut Self::Context) -> Self::Result {
        self.run_batch()
    }
}

impl Handler<Totals> for Ingest {
    type Result = TotalsSoFar;

    fn handle(&mut self, _msg: Totals, _ctx: &mut Self::Context) -> Self::Result {
        TotalsSoFar {
            batches: self.batches,
            total: self.total,
        }
    }
}

fn print_report(report: &BatchReport) {
    println!(
        "batch {}: squares of {:?} sum to {} (running total {})",
        report.batch, report.items, report.sum_of_squares, report.running_total
    );
}

#[actix::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();

    let mut registry = Registry::new();
    registry.register("square", |x: i64| x * x)?;
    registry.register("sum", |xs: List<i64>| xs.iter().sum::<i64>())?;

    // The Handoff node lives in the service's own System, next to its actors.
    let node =
        start_node(NodeConfig::new("service", registry).capabilities(Resources::new().cpu(4)))
            .await?;
    let ingest = Ingest {
        coordinator: node.coordinator().clone(),
        batch_size: 4,
        buffer: Vec::new(),
        batches: 0,
        total: 0,
    }
    .start();

    // Input arrives one number at a time; every fourth completes a batch.
    for x in 1..=10 {
        if let Some(report) = ingest.send(Push(x)).await?? {
            print_report(&report);
        }
    }
    if let Some(report) = ingest.send(Flush).await?? {
        print_report(&report);
    }

    let TotalsSoFar { batches, total } = ingest.send(Totals).await?;
    println!("{batches} batches, sum of squares of 1..=10 = {total}");
    assert_eq!((batches, total), (3, 385));

    // Results stay in the node's result store until the service drops them.
    let stored = node.stored_values().await?;
    let mut dropped = 0;
    for batch in 1..=batches {
        dropped += node.drop_dag(format!("batch-{batch}")).await?;
    }
    println!(
        "the node held {stored} values; dropped {dropped}; now holds {}",
        node.stored_values().await?
    );
    System::current().stop();
    Ok(())
}
