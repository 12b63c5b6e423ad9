//! Stream mode: a DAG compiled once into long-lived stages, with many items pushed
//! through it.
//!
//! [`NodeHandle::stream`](crate::NodeHandle::stream) lays a validated DAG out as a
//! [`StreamPlan`]: one stage per regular function, visited in topological order by each
//! item's *row* (see `handoff_core::StreamPlan`). A stage has a bounded queue of items
//! in front of it and `parallelism` workers (tasks on the node's runtime) that gather
//! items from it, one batch at a time for a batched stage, and run the function's
//! code on the blocking thread pool with the worker's state (made once by the
//! function's init code). Items travel between stages in chunks, one channel send per
//! chunk, and carry a sequence number; [`StreamResults`] puts them back in push order.
//!
//! Memory is bounded twice: each queue holds at most
//! [`StreamOptions::queue_capacity`] items (a producer faster than a stage waits in
//! `push`), and at most [`StreamOptions::window`] items are pushed and not yet read
//! from the results.

mod hosted;
mod queue;
mod results;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::prelude::*;
use futures::channel::oneshot;
use handoff_core::{
    AllocationError, AllocationStrategy, CallError, Code, CodeKind, CodeName, ExecutableNode,
    FunctionId, FunctionKind, NodeId, Placement, Rank, Registry, Resources, StreamPlan,
    StreamPlanError, Target, ValidatedDag, Value,
};
use tokio::sync::{Semaphore, mpsc};

use crate::coordinator::Coordinator;
use crate::remote::{SharedTransport, StageCall, StageKey, StageSpec};
use crate::resource_manager::{
    ClusterView, GrantId, Release, RequesterId, ReserveOne, ResourceManager, Withdraw,
};

pub use hosted::HostedStage;
pub use results::{StreamOutput, StreamOutputError, StreamResults};
use worker::{
    Compute, Counters, LocalExecutor, Next, RemoteExecutor, Stage, StageExecutor, run_worker,
    slots_read,
};

/// The slots of one item: a value per input and regular function, `None` where not
/// computed yet or no longer needed.
pub(crate) type Row = Vec<Option<Value>>;

/// One item in flight: its number and its row, or the error that ended it.
pub(crate) struct Item {
    pub(crate) seq: u64,
    pub(crate) row: Result<Row, ItemError>,
}

/// An item failed: the function whose code (or inline evaluation) failed, and why. The
/// stream goes on with the next items; stream mode does not retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("item {seq}: `{function}` failed: {error}")]
pub struct ItemError {
    /// The item's number (push order, from 0).
    pub seq: u64,
    /// The function that failed.
    pub function: FunctionId,
    /// Why.
    #[source]
    pub error: CallError,
}

/// Options of a stream.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    queue_capacity: usize,
    window: usize,
    chunk: usize,
    strategy: AllocationStrategy,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            queue_capacity: 1024,
            window: 16 * 1024,
            chunk: 64,
            strategy: AllocationStrategy::FirstAvailable,
        }
    }
}

impl StreamOptions {
    /// The defaults: queues of 1024 items, a window of 16,384 items, chunks of 64.
    pub fn new() -> Self {
        Self::default()
    }

    /// The most items waiting in front of each stage (at least 1; default 1024).
    pub fn queue_capacity(mut self, items: usize) -> Self {
        self.queue_capacity = items.max(1);
        self
    }

    /// The most items pushed and not yet read from the results (at least 1; default
    /// 16,384): this bounds the reorder buffer, and stops a producer whose results are
    /// not read.
    pub fn window(mut self, items: usize) -> Self {
        self.window = items.clamp(1, Semaphore::MAX_PERMITS);
        self
    }

    /// The most items a worker of an unbatched stage takes at once, and so the most
    /// items passed on in one channel send (at least 1; default 64).
    pub fn chunk(mut self, items: usize) -> Self {
        self.chunk = items.max(1);
        self
    }

    /// How the workers of costed stages are placed among the nodes where their cost fits
    /// (default [`AllocationStrategy::FirstAvailable`]: this node first, then the others
    /// in order). A worker placed on another node runs there; its items travel through
    /// the node's transport, a chunk or a batch per request.
    pub fn allocation_strategy(mut self, strategy: AllocationStrategy) -> Self {
        self.strategy = strategy;
        self
    }
}

/// Why a stream could not start. Nothing is left reserved or running.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartStreamError {
    /// The DAG cannot be streamed.
    #[error(transparent)]
    Plan(#[from] StreamPlanError),
    /// A function (a stage, its init, or an inline function) names code this node has
    /// not registered.
    #[error("`{function}` runs `{code}`, which is not registered on this node")]
    UnknownCode {
        /// The function.
        function: FunctionId,
        /// The code.
        code: CodeName,
    },
    /// A function's code was registered for another kind of call than its options ask
    /// for (e.g. a function with `init` whose code is not stateful).
    #[error("`{function}` needs {expected} code, but `{code}` is {kind} code")]
    WrongKind {
        /// The function.
        function: FunctionId,
        /// The code.
        code: CodeName,
        /// How the code was registered.
        kind: CodeKind,
        /// What the function needs.
        expected: CodeKind,
    },
    /// A function passes a number of arguments its code does not take.
    #[error("`{function}` passes {given} argument(s) to `{code}`, which takes {expected}")]
    Arity {
        /// The function.
        function: FunctionId,
        /// The code.
        code: CodeName,
        /// How many parameters the code takes.
        expected: usize,
        /// How many the function passes.
        given: usize,
    },
    /// A stage must run on another node (pinned there, or collocated with a function
    /// pinned there), and this node has no way there (it is not a cluster node).
    #[error("`{function}` must run on node `{node}`, which this node cannot reach")]
    RemoteStage {
        /// The function.
        function: FunctionId,
        /// The node it must run on.
        node: NodeId,
    },
    /// A stage's cost (times its parallelism) cannot be reserved on this node.
    #[error(transparent)]
    Allocation(#[from] AllocationError),
    /// A worker's init code failed.
    #[error("the init of `{function}` (worker {worker}) failed: {error}")]
    Init {
        /// The function.
        function: FunctionId,
        /// The worker (0-based).
        worker: usize,
        /// Why.
        #[source]
        error: CallError,
    },
    /// An actor of the node stopped while the stream started.
    #[error("node `{node}` stopped while the stream started")]
    NodeStopped {
        /// The node.
        node: NodeId,
    },
}

/// Why an item could not be pushed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// [`StreamHandle::push`] takes the value of the only input, but the stream has
    /// several: use [`StreamHandle::push_inputs`].
    #[error("the stream has {} inputs ({}); push a value for each", inputs.len(), inputs.iter().map(FunctionId::as_str).collect::<Vec<_>>().join(", "))]
    SeveralInputs {
        /// The inputs.
        inputs: Vec<FunctionId>,
    },
    /// A value was pushed for an id that is not an input of the stream.
    #[error("`{id}` is not an input of the stream")]
    UnknownInput {
        /// The id.
        id: FunctionId,
    },
    /// An input got no value.
    #[error("no value was pushed for input `{input}`")]
    MissingInput {
        /// The input.
        input: FunctionId,
    },
    /// The stream no longer takes items: its results were dropped.
    #[error("the stream is closed (its results were dropped)")]
    Closed,
}

/// A stage's statistics, as read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageStats {
    /// The stage's function.
    pub function: FunctionId,
    /// The node its first worker runs on.
    pub node: NodeId,
    /// The node of each of its workers (a costed stage's workers are placed one by one,
    /// so they may run on different nodes).
    pub nodes: Vec<NodeId>,
    /// Its number of workers.
    pub workers: usize,
    /// Items it has processed (failed ones included).
    pub items: u64,
    /// Calls of its executor: batches for a batched stage, chunks otherwise.
    pub batches: u64,
    /// Items that left it as errors (its own or an earlier stage's).
    pub errors: u64,
    /// Time its workers spent running items, summed over the workers.
    pub busy: Duration,
    /// Items waiting in its queue now.
    pub queue_depth: usize,
    /// The most items that ever waited in its queue at once.
    pub queue_peak: usize,
    /// The most items its queue holds.
    pub queue_capacity: usize,
}

/// A stream's statistics, as read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStats {
    /// Items pushed.
    pub pushed: u64,
    /// Items pushed and not yet read from the results.
    pub in_flight: usize,
    /// The stages, in the order items visit them.
    pub stages: Vec<StageStats>,
}

/// What starting a stream needs from the node: its id, registry and resource manager.
#[derive(Message)]
#[rtype(result = "StreamParts")]
pub(crate) struct GetStreamParts;

/// The parts of a node a stream uses.
pub(crate) struct StreamParts {
    pub(crate) node: NodeId,
    pub(crate) registry: Arc<Registry>,
    pub(crate) manager: Addr<ResourceManager>,
    /// How to reach other nodes (none outside a cluster).
    pub(crate) transport: Option<SharedTransport>,
}

impl Handler<GetStreamParts> for Coordinator {
    type Result = MessageResult<GetStreamParts>;

    fn handle(&mut self, _msg: GetStreamParts, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.stream_parts())
    }
}

/// Requester ids of streams, apart from those of executions.
pub(crate) static NEXT_REQUESTER: AtomicU64 = AtomicU64::new(1 << 62);

/// A running stream: push items, read the results, look at the statistics, stop it.
///
/// Dropping the handle stops the stream the way [`stop`](Self::stop) does, without
/// waiting.
pub struct StreamHandle {
    input: Option<Next>,
    inputs: Vec<(FunctionId, usize)>,
    slots: usize,
    chunk: usize,
    window: Arc<Semaphore>,
    window_size: usize,
    pushed: AtomicU64,
    /// The node the stream runs from.
    node: NodeId,
    stages: Vec<Arc<Stage>>,
    results: Option<StreamResults>,
    done: Option<oneshot::Receiver<()>>,
}

impl std::fmt::Debug for StreamHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHandle")
            .field("inputs", &self.inputs)
            .field("stages", &self.stages.len())
            .finish_non_exhaustive()
    }
}

impl StreamHandle {
    /// The results, in push order; `None` after the first call.
    pub fn results(&mut self) -> Option<StreamResults> {
        self.results.take()
    }

    /// The ids of the inputs, in the DAG's order.
    pub fn inputs(&self) -> Vec<FunctionId> {
        self.inputs.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Pushes the value of the stream's only input, waiting while the first stage's
    /// queue is full or the window is. Returns the item's number.
    pub async fn push<T: handoff_core::IntoValue>(&self, item: T) -> Result<u64, PushError> {
        let [(_, slot)] = self.inputs.as_slice() else {
            return Err(PushError::SeveralInputs {
                inputs: self.inputs(),
            });
        };
        let mut row: Row = vec![None; self.slots];
        row[*slot] = Some(item.into_value());
        self.send(vec![row]).await.map(|range| range.start)
    }

    /// Pushes many values of the stream's only input, in order, a chunk at a time.
    /// Returns the numbers of the items.
    pub async fn push_all<T, I>(&self, items: I) -> Result<std::ops::Range<u64>, PushError>
    where
        T: handoff_core::IntoValue,
        I: IntoIterator<Item = T>,
    {
        let [(_, slot)] = self.inputs.as_slice() else {
            return Err(PushError::SeveralInputs {
                inputs: self.inputs(),
            });
        };
        let slot = *slot;
        let chunk = self.chunk.min(self.window_size);
        let mut first = None;
        let mut last = 0;
        let mut rows: Vec<Row> = Vec::with_capacity(chunk);
        for item in items {
            let mut row: Row = vec![None; self.slots];
            row[slot] = Some(item.into_value());
            rows.push(row);
            if rows.len() == chunk {
                let range = self.send(std::mem::take(&mut rows)).await?;
                first.get_or_insert(range.start);
                last = range.end;
            }
        }
        if !rows.is_empty() {
            let range = self.send(rows).await?;
            first.get_or_insert(range.start);
            last = range.end;
        }
        Ok(first.unwrap_or(last)..last)
    }

    /// Pushes one item of a stream with several inputs: a value for each input.
    pub async fn push_inputs<I, K>(&self, values: I) -> Result<u64, PushError>
    where
        I: IntoIterator<Item = (K, Value)>,
        K: Into<FunctionId>,
    {
        let mut row: Row = vec![None; self.slots];
        for (id, value) in values {
            let id = id.into();
            let Some((_, slot)) = self.inputs.iter().find(|(input, _)| *input == id) else {
                return Err(PushError::UnknownInput { id });
            };
            row[*slot] = Some(value);
        }
        if let Some((input, _)) = self.inputs.iter().find(|(_, slot)| row[*slot].is_none()) {
            return Err(PushError::MissingInput {
                input: input.clone(),
            });
        }
        self.send(vec![row]).await.map(|range| range.start)
    }

    async fn send(&self, rows: Vec<Row>) -> Result<std::ops::Range<u64>, PushError> {
        let n = rows.len();
        let Some(input) = &self.input else {
            return Err(PushError::Closed);
        };
        let permit = self
            .window
            .acquire_many(n as u32)
            .await
            .map_err(|_| PushError::Closed)?;
        permit.forget();
        let first = self.pushed.fetch_add(n as u64, Ordering::Relaxed);
        let items = rows
            .into_iter()
            .zip(first..)
            .map(|(row, seq)| Item { seq, row: Ok(row) })
            .collect();
        // Numbered items must reach the first queue even if this future is dropped while
        // waiting for room (results come in push order: a lost number would hold back
        // every later result). So the wait runs in a task of its own.
        if let Some(items) = input.try_send(items).map_err(|_| PushError::Closed)? {
            let input = input.clone();
            let sending = tokio::spawn(async move { input.send(items).await });
            match sending.await {
                Ok(Ok(())) => {}
                _ => return Err(PushError::Closed),
            }
        }
        Ok(first..first + n as u64)
    }

    /// The statistics now.
    pub fn stats(&self) -> StreamStats {
        let pushed = self.pushed.load(Ordering::Relaxed);
        let free = self.window.available_permits();
        StreamStats {
            pushed,
            in_flight: self.window_size.saturating_sub(free),
            stages: self
                .stages
                .iter()
                .map(|stage| {
                    let c = &stage.counters;
                    StageStats {
                        function: stage.compute.function.id().clone(),
                        node: stage
                            .nodes
                            .first()
                            .cloned()
                            .unwrap_or_else(|| self.node.clone()),
                        nodes: stage.nodes.clone(),
                        workers: stage.workers,
                        items: c.items.load(Ordering::Relaxed),
                        batches: c.batches.load(Ordering::Relaxed),
                        errors: c.errors.load(Ordering::Relaxed),
                        busy: Duration::from_nanos(c.busy_nanos.load(Ordering::Relaxed)),
                        queue_depth: stage.queue.depth(),
                        queue_peak: stage.queue.peak(),
                        queue_capacity: stage.queue.capacity(),
                    }
                })
                .collect(),
        }
    }

    /// Stops taking items, lets every item already pushed go through all the stages
    /// (their results stay readable from [`StreamResults`], which then ends), stops the
    /// workers and gives back the stages' reservations. Returns the final statistics.
    pub async fn stop(mut self) -> StreamStats {
        self.input = None;
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
        self.stats()
    }
}

/// The kind of code a function's options ask for.
fn expected_kind(init: bool, batch: bool) -> CodeKind {
    match (init, batch) {
        (false, false) => CodeKind::Plain,
        (true, false) => CodeKind::Stateful,
        (false, true) => CodeKind::Batch,
        (true, true) => CodeKind::StatefulBatch,
    }
}

fn resolve(
    registry: &Registry,
    function: &handoff_core::Function,
    code: &CodeName,
    expected: CodeKind,
    given: usize,
) -> Result<Code, StartStreamError> {
    let resolved = registry
        .get(code.as_str())
        .map_err(|_| StartStreamError::UnknownCode {
            function: function.id().clone(),
            code: code.clone(),
        })?;
    if resolved.kind() != expected {
        return Err(StartStreamError::WrongKind {
            function: function.id().clone(),
            code: code.clone(),
            kind: resolved.kind(),
            expected,
        });
    }
    if resolved.arity() != given {
        return Err(StartStreamError::Arity {
            function: function.id().clone(),
            code: code.clone(),
            expected: resolved.arity(),
            given,
        });
    }
    Ok(resolved.clone())
}

/// How many arguments a function passes to its code.
fn given(function: &handoff_core::Function, batch: bool) -> usize {
    let args = if batch || function.argument_inclusion() == handoff_core::ArgumentInclusion::AsList
    {
        1
    } else {
        function.arg_ids().len()
    };
    args + function.extra_args().len()
}

/// Runs a stage worker's init code on the blocking pool.
pub(crate) async fn run_init(init: Code) -> Result<handoff_core::State, CallError> {
    let name = init.name().clone();
    tokio::task::spawn_blocking(move || init.call_init(Vec::new()))
        .await
        .unwrap_or_else(|error| {
            Err(CallError::Panicked {
                code: name,
                message: error.to_string(),
            })
        })
}

/// Gives reservations back.
/// Gives back what a stream being started has reserved or asked for, if it is dropped
/// before the stream runs (the caller gave up waiting for capacity).
struct Reserving {
    manager: Addr<ResourceManager>,
    requester: RequesterId,
    armed: bool,
}

impl Drop for Reserving {
    fn drop(&mut self) {
        if self.armed {
            let withdraw = Withdraw {
                requester: self.requester,
            };
            crate::run::send_detached(&self.manager, withdraw);
        }
    }
}

/// Checks that every worker of every costed stage could hold its reservation at the
/// same time on the nodes as if idle (placed first-fit, a collocation group's summed
/// cost on one node): otherwise the stream could never start.
fn fits_at_once(
    dag: &ValidatedDag,
    plan: &StreamPlan,
    targets: &[Target],
    cluster: &[ExecutableNode],
) -> Result<(), StartStreamError> {
    let mut left: Vec<Resources> = cluster.iter().map(|n| n.capacity.clone()).collect();
    let mut group_nodes: Vec<(u32, usize)> = Vec::new();
    for (stage, target) in plan.stages().iter().zip(targets) {
        let f = dag.function(stage.function);
        let Some(cost) = f.cost().filter(|c| !c.is_empty()) else {
            continue;
        };
        let workers = f.parallelism_value().unwrap_or(1);
        let may_run = |k: usize, codes: &[&CodeName]| {
            let n = &cluster[k];
            codes.iter().all(|c| n.code_names.contains(*c))
                && match target {
                    Target::Pinned(at) => n.node == *at,
                    _ => true,
                }
        };
        let too_big = |total: Resources| {
            let nodes: Vec<(NodeId, Resources)> = cluster
                .iter()
                .enumerate()
                .filter(|&(k, _)| may_run(k, &[f.code()]))
                .map(|(_, n)| (n.node.clone(), n.capacity.clone()))
                .collect();
            match handoff_core::candidates(f.id(), &[&total], &nodes, None) {
                Err(error) => StartStreamError::Allocation(error),
                Ok(_) => StartStreamError::Allocation(AllocationError::NeverGranted {
                    function: f.id().clone(),
                    reason: format!(
                        "its workers need {total} beside the other stages' workers, more than the nodes hold together"
                    ),
                }),
            }
        };
        if let Target::Group { root, needs, .. } = target {
            if group_nodes.iter().any(|(r, _)| r == root) {
                continue;
            }
            let codes: Vec<&CodeName> = needs.codes.iter().collect();
            let Some(k) =
                (0..cluster.len()).find(|&k| may_run(k, &codes) && needs.total.fits_in(&left[k]))
            else {
                return Err(too_big(needs.total.clone()));
            };
            left[k] = left[k].saturating_sub(&needs.total);
            group_nodes.push((*root, k));
            continue;
        }
        for _ in 0..workers {
            let Some(k) =
                (0..cluster.len()).find(|&k| may_run(k, &[f.code()]) && cost.fits_in(&left[k]))
            else {
                let total = Resources::saturating_sum(std::iter::repeat_n(cost, workers));
                return Err(too_big(total));
            };
            left[k] = left[k].saturating_sub(cost);
        }
    }
    Ok(())
}

async fn release(manager: &Addr<ResourceManager>, grants: Vec<GrantId>) {
    if !grants.is_empty() && manager.send(Release { grants }).await.is_err() {
        tracing::warn!("resource manager gone; stream reservations not released");
    }
}

/// Starts a stream of `dag` on this node (see [`NodeHandle::stream`](crate::NodeHandle::stream)).
pub(crate) async fn start(
    parts: StreamParts,
    dag: ValidatedDag,
    options: StreamOptions,
) -> Result<StreamHandle, StartStreamError> {
    let StreamParts {
        node,
        registry,
        manager,
        transport,
    } = parts;
    let plan = StreamPlan::compile(&dag)?;

    // Resolve every code first: nothing is reserved for a stream that cannot run.
    struct Resolved {
        code: Code,
        init: Option<Code>,
        inline: Vec<(handoff_core::Function, Code)>,
    }
    let mut resolved = Vec::with_capacity(plan.stages().len());
    for stage in plan.stages() {
        let f = dag.function(stage.function);
        let batch = f.batching().is_some();
        let kind = expected_kind(f.init_code().is_some(), batch);
        let code = resolve(&registry, f, f.code(), kind, given(f, batch))?;
        let init = match f.init_code() {
            Some(init) => Some(resolve(&registry, f, init, CodeKind::Init, 0)?),
            None => None,
        };
        let mut inline = Vec::with_capacity(stage.inline.len());
        for eval in &stage.inline {
            let g = dag.function(eval.function);
            let code = resolve(&registry, g, g.code(), CodeKind::Plain, given(g, false))?;
            inline.push((g.clone(), code));
        }
        // A stage pinned (or collocated with a function pinned) elsewhere needs a way
        // there.
        let root = dag.function(dag.collocation_root(stage.function));
        if let Placement::Pinned(pinned) = root.placement()
            && *pinned != node
            && transport.is_none()
        {
            return Err(StartStreamError::RemoteStage {
                function: f.id().clone(),
                node: pinned.clone(),
            });
        }
        resolved.push(Resolved { code, init, inline });
    }

    // Place each stage's workers one by one, reserving the stage's cost for each on the
    // node the allocator picks (among those where the cost fits and the code is
    // registered), for the stream's lifetime. Uncosted workers run here, or on the node
    // their stage is pinned to.
    let requester = RequesterId(NEXT_REQUESTER.fetch_add(1, Ordering::Relaxed));
    // A group's node holds every worker of every stage in it at once.
    let workers_of = |i: usize| dag.function(i).parallelism_value().unwrap_or(1);
    let stage_of = |i: usize| plan.stages().iter().any(|s| s.function == i);
    let needs = handoff_core::group_needs(&dag, stage_of, workers_of);
    let targets: Vec<Target> = plan
        .stages()
        .iter()
        .map(|stage| {
            let root_index = dag.collocation_root(stage.function);
            let root = dag.function(root_index);
            match root.placement() {
                Placement::Pinned(pinned) => Target::Pinned(pinned.clone()),
                // Inputs are where items are pushed: here.
                _ if root.kind() == FunctionKind::Input => Target::Pinned(node.clone()),
                _ if root_index != stage.function => Target::Group {
                    root: root_index as u32,
                    pinned: None,
                    needs: needs[root_index].clone().unwrap_or_default(),
                },
                _ => Target::Any,
            }
        })
        .collect();
    // The workers hold their reservations for the stream's lifetime: a stream whose
    // workers could not all be held at once, even on idle nodes, would wait forever.
    let Ok(mut cluster) = manager.send(ClusterView).await else {
        return Err(StartStreamError::NodeStopped { node });
    };
    if transport.is_none() {
        cluster.retain(|n| n.node == node);
    }
    fits_at_once(&dag, &plan, &targets, &cluster)?;

    // Reserved so far (and requests queued) are given back if this future is dropped
    // before the stream has started.
    let mut reserving = Reserving {
        manager: manager.clone(),
        requester,
        armed: true,
    };
    let mut grants: Vec<GrantId> = Vec::new();
    let mut nodes: Vec<Vec<NodeId>> = Vec::with_capacity(plan.stages().len());
    for (stage, target) in plan.stages().iter().zip(&targets) {
        let f = dag.function(stage.function);
        let workers = f.parallelism_value().unwrap_or(1);
        let pinned = match target {
            Target::Pinned(at) => Some(at.clone()),
            _ => None,
        };
        let mut placed = Vec::with_capacity(workers);
        for _ in 0..workers {
            let Some(cost) = f.cost().filter(|c| **c != Resources::new()) else {
                placed.push(pinned.clone().unwrap_or_else(|| node.clone()));
                continue;
            };
            let (reply, granted) = oneshot::channel();
            let request = ReserveOne {
                requester,
                rank: Rank {
                    priority: f.priority_value(),
                    path: 0,
                },
                function: f.id().clone(),
                code: f.code().clone(),
                cost: cost.clone(),
                target: target.clone(),
                strategy: options.strategy.clone(),
                reply,
            };
            let outcome = match manager.send(request).await {
                Ok(()) => granted.await.ok(),
                Err(_) => None,
            };
            match outcome {
                Some(Ok((grant, at))) => {
                    grants.push(grant);
                    placed.push(at);
                }
                Some(Err(error)) => {
                    release(&manager, grants).await;
                    return Err(StartStreamError::Allocation(error));
                }
                None => {
                    release(&manager, grants).await;
                    return Err(StartStreamError::NodeStopped { node });
                }
            }
        }
        nodes.push(placed);
    }

    // Queues, then each worker's executor (its init run here, or the worker opened on
    // its node, which runs the init there), then the workers.
    let mut queues = Vec::with_capacity(plan.stages().len());
    let mut senders = Vec::with_capacity(plan.stages().len());
    for _ in plan.stages() {
        let (queue, sender) = queue::Queue::new(options.queue_capacity);
        queues.push(queue);
        senders.push(sender);
    }
    let window = Arc::new(Semaphore::new(options.window));
    // Every message holds at least one item and at most `window` items are in flight,
    // so the last stage never waits on this channel.
    let (results_tx, results_rx) = mpsc::channel(options.window);
    let stream_id = requester.0;
    let mut stages: Vec<Arc<Stage>> = Vec::with_capacity(plan.stages().len());
    let mut executors: Vec<Vec<Box<dyn StageExecutor>>> = Vec::new();
    for (((stage, r), queue), placed) in plan.stages().iter().zip(resolved).zip(&queues).zip(nodes)
    {
        let f = dag.function(stage.function);
        let workers = placed.len();
        let spec = Arc::new(StageSpec {
            plan: stage.clone(),
            function: f.clone(),
            inline: r.inline.iter().map(|(g, _)| g.clone()).collect(),
        });
        let shared = Arc::new(Stage {
            compute: Compute {
                plan: stage.clone(),
                function: f.clone(),
                code: r.code,
                inline: r.inline,
            },
            workers,
            nodes: placed.clone(),
            queue: Arc::clone(queue),
            counters: Counters::default(),
        });
        let reads = slots_read(stage);
        let mut stage_executors: Vec<Box<dyn StageExecutor>> = Vec::with_capacity(workers);
        for (worker, at) in placed.into_iter().enumerate() {
            let fail = |error| StartStreamError::Init {
                function: f.id().clone(),
                worker,
                error,
            };
            if at != node {
                let Some(transport) = transport.clone() else {
                    release(&manager, grants).await;
                    return Err(StartStreamError::RemoteStage {
                        function: f.id().clone(),
                        node: at,
                    });
                };
                let key = StageKey {
                    stream: stream_id,
                    function: f.id().clone(),
                    worker: u32::try_from(worker).unwrap_or(u32::MAX),
                };
                // Opened now, so that a failing init (or a code the node lacks) stops the
                // start, as for a local worker.
                let open = StageCall {
                    node: at.clone(),
                    key: key.clone(),
                    spec: Arc::clone(&spec),
                    items: Vec::new(),
                };
                let executor = RemoteExecutor {
                    stage: Arc::clone(&shared),
                    node: at,
                    key,
                    spec: Arc::clone(&spec),
                    transport: Arc::clone(&transport),
                    reads: Arc::clone(&reads),
                };
                if let Err(error) = transport.run_stage(open).await {
                    drop(executor);
                    release(&manager, grants).await;
                    return Err(fail(error));
                }
                stage_executors.push(Box::new(executor));
                continue;
            }
            let state = match &r.init {
                Some(init) => match run_init(init.clone()).await {
                    Ok(state) => Some(state),
                    Err(error) => {
                        release(&manager, grants).await;
                        return Err(fail(error));
                    }
                },
                None => None,
            };
            stage_executors.push(Box::new(LocalExecutor {
                stage: Arc::clone(&shared),
                state,
            }));
        }
        executors.push(stage_executors);
        stages.push(shared);
    }

    let mut tasks = Vec::new();
    for (k, (stage, stage_executors)) in stages.iter().zip(executors).enumerate() {
        let next = match senders.get(k + 1) {
            Some(sender) => Next::Stage(sender.clone()),
            None => Next::Results(results_tx.clone()),
        };
        for executor in stage_executors {
            tasks.push(actix::spawn(run_worker(
                Arc::clone(stage),
                executor,
                next.clone(),
                options.chunk,
            )));
        }
    }
    let input = match senders.into_iter().next() {
        Some(first) => Next::Stage(first),
        None => Next::Results(results_tx.clone()),
    };
    drop(results_tx);

    reserving.armed = false;
    let (finished, done) = oneshot::channel();
    let for_release = manager.clone();
    actix::spawn(async move {
        for task in tasks {
            let _ = task.await;
        }
        release(&for_release, grants).await;
        let _ = finished.send(());
    });

    let sinks: Arc<[FunctionId]> = plan
        .sinks()
        .iter()
        .map(|&(i, _)| dag.function(i).id().clone())
        .collect();
    let sink_slots: Arc<[usize]> = plan.sinks().iter().map(|&(_, slot)| slot).collect();
    tracing::debug!(dag = %dag.id(), stages = stages.len(), "stream started");
    Ok(StreamHandle {
        node,
        input: Some(input),
        inputs: plan
            .inputs()
            .iter()
            .map(|&(i, slot)| (dag.function(i).id().clone(), slot))
            .collect(),
        slots: plan.slot_count(),
        chunk: options.chunk,
        window: Arc::clone(&window),
        window_size: options.window,
        pushed: AtomicU64::new(0),
        stages,
        results: Some(StreamResults::new(results_rx, window, sinks, sink_slots)),
        done: Some(done),
    })
}
