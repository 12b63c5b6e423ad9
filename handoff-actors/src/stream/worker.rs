//! Stage workers: gather items from the stage's queue (in batches, for a batched
//! stage), have an executor run the function on them, and pass them on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use handoff_core::{
    ArgSource, Batching, CallError, Code, CodeKind, Function, NodeId, StagePlan, State, Value,
};
use tokio::sync::mpsc;

use super::queue::{Closed, Queue, QueueSender};
use super::{Item, ItemError, Row};

/// A boxed future, as [`StageExecutor::process`] returns.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What runs a stage's function on the items a worker gathered, and returns them with
/// the result (or the item's error) in their rows.
///
/// [`LocalExecutor`] calls the code on this node's blocking thread pool, with the
/// worker's state. A stage placed on another node would get an executor that sends
/// the items' arguments there (through the node's `Transport`, in one request per
/// batch) and reads the results from the reply; the worker around it, the queues, the
/// batching and the ordering stay as they are.
pub(crate) trait StageExecutor: Send + 'static {
    /// Runs the stage's function on `items`, in one call for a batched stage.
    fn process(&mut self, items: Vec<Item>) -> BoxFuture<'_, Vec<Item>>;
}

/// Counters of a stage, updated by its workers.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) items: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) busy_nanos: AtomicU64,
}

/// What a stage computes: its plan, function and code, and its inline evaluations. A
/// stage's local workers share one; a node running a worker placed there by another
/// node's stream builds its own (see [`HostedStage`](super::hosted::HostedStage)).
pub(crate) struct Compute {
    pub(crate) plan: StagePlan,
    pub(crate) function: Function,
    pub(crate) code: Code,
    /// The code and function of each inline evaluation of `plan.inline`, in order.
    pub(crate) inline: Vec<(Function, Code)>,
}

/// What a stage's workers share.
pub(crate) struct Stage {
    pub(crate) compute: Compute,
    pub(crate) workers: usize,
    /// The node of each worker.
    pub(crate) nodes: Vec<NodeId>,
    pub(crate) queue: Arc<Queue>,
    pub(crate) counters: Counters,
}

/// Where a worker sends what it finished.
#[derive(Clone)]
pub(crate) enum Next {
    /// The next stage's queue.
    Stage(QueueSender),
    /// The stream's results.
    Results(mpsc::Sender<Vec<Item>>),
}

impl Next {
    /// Sends `items` if there is room for all of them now; otherwise gives them back.
    pub(crate) fn try_send(&self, items: Vec<Item>) -> Result<Option<Vec<Item>>, Closed> {
        match self {
            Next::Stage(queue) => queue.try_send(items),
            Next::Results(tx) => match tx.try_send(items) {
                Ok(()) => Ok(None),
                Err(mpsc::error::TrySendError::Full(items)) => Ok(Some(items)),
                Err(mpsc::error::TrySendError::Closed(_)) => Err(Closed),
            },
        }
    }

    pub(crate) async fn send(&self, items: Vec<Item>) -> Result<(), Closed> {
        match self {
            Next::Stage(queue) => queue.send(items).await,
            Next::Results(tx) => tx.send(items).await.map_err(|_| Closed),
        }
    }
}

impl Compute {
    pub(crate) fn batching(&self) -> Option<Batching> {
        self.function.batching()
    }

    fn read(
        &self,
        source: ArgSource,
        row: &Row,
        inline: &[Value],
        code: &Code,
    ) -> Result<Value, CallError> {
        let value = match source {
            ArgSource::Slot(slot) => row.get(slot).and_then(Option::clone),
            ArgSource::Inline(k) => inline.get(k).cloned(),
        };
        value.ok_or_else(|| CallError::Failed {
            code: code.name().clone(),
            message: "an argument was not available in the stream's row".to_owned(),
        })
    }

    /// The values of the function's arguments for one item, evaluating the inline
    /// functions it needs; an error names the function that failed.
    fn arguments(&self, seq: u64, row: &Row) -> Result<Vec<Value>, ItemError> {
        let mut values: Vec<Value> = Vec::with_capacity(self.plan.inline.len());
        for (eval, (function, code)) in self.plan.inline.iter().zip(&self.inline) {
            let fail = |error| ItemError {
                seq,
                function: function.id().clone(),
                error,
            };
            let args = eval
                .args
                .iter()
                .map(|&s| self.read(s, row, &values, code))
                .collect::<Result<Vec<_>, _>>()
                .map_err(fail)?;
            values.push(code.call(function.parameters(args)).map_err(fail)?);
        }
        self.plan
            .args
            .iter()
            .map(|&s| self.read(s, row, &values, &self.code))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| self.fail(seq, error))
    }

    pub(crate) fn fail(&self, seq: u64, error: CallError) -> ItemError {
        ItemError {
            seq,
            function: self.function.id().clone(),
            error,
        }
    }

    /// Stores a result in the item's row and clears the slots no later stage reads.
    pub(crate) fn store(&self, row: &mut Row, value: Value) {
        if let Some(slot) = row.get_mut(self.plan.slot) {
            *slot = Some(value);
        }
        for &slot in &self.plan.releases {
            if let Some(slot) = row.get_mut(slot) {
                *slot = None;
            }
        }
    }

    /// Runs the function on `items` (on the calling thread).
    pub(crate) fn run(&self, mut items: Vec<Item>, mut state: Option<&mut State>) -> Vec<Item> {
        if self.batching().is_some() {
            let mut positions = Vec::with_capacity(items.len());
            let mut values = Vec::with_capacity(items.len());
            for (k, item) in items.iter_mut().enumerate() {
                let Ok(row) = &item.row else { continue };
                match self.arguments(item.seq, row) {
                    Ok(mut args) => {
                        let value = if args.len() == 1
                            && self.function.argument_inclusion()
                                == handoff_core::ArgumentInclusion::Variadic
                        {
                            args.swap_remove(0)
                        } else {
                            Value::list(args)
                        };
                        values.push(value);
                        positions.push(k);
                    }
                    Err(error) => item.row = Err(error),
                }
            }
            if positions.is_empty() {
                return items;
            }
            match self
                .code
                .call_batch(state, values, self.function.extra_args())
            {
                Ok(results) => {
                    for (k, value) in positions.into_iter().zip(results) {
                        if let Ok(row) = &mut items[k].row {
                            self.store(row, value);
                        }
                    }
                }
                Err(error) => {
                    for k in positions {
                        let seq = items[k].seq;
                        items[k].row = Err(self.fail(seq, error.clone()));
                    }
                }
            }
            return items;
        }
        for item in &mut items {
            let Ok(row) = &mut item.row else { continue };
            let outcome = self.arguments(item.seq, row).and_then(|args| {
                let params = self.function.parameters(args);
                let result = match (self.code.kind(), state.as_deref_mut()) {
                    (CodeKind::Stateful, Some(state)) => self.code.call_stateful(state, params),
                    _ => self.code.call(params),
                };
                result.map_err(|error| self.fail(item.seq, error))
            });
            match outcome {
                Ok(value) => self.store(row, value),
                Err(error) => item.row = Err(error),
            }
        }
        items
    }
}

/// Runs a stage's function on this node's blocking thread pool, with its worker's state.
pub(crate) struct LocalExecutor {
    pub(crate) stage: Arc<Stage>,
    pub(crate) state: Option<State>,
}

impl StageExecutor for LocalExecutor {
    fn process(&mut self, items: Vec<Item>) -> BoxFuture<'_, Vec<Item>> {
        let stage = Arc::clone(&self.stage);
        let mut state = self.state.take();
        let seqs: Vec<u64> = items.iter().map(|item| item.seq).collect();
        Box::pin(async move {
            let joined = tokio::task::spawn_blocking(move || {
                let items = stage.compute.run(items, state.as_mut());
                (items, state)
            })
            .await;
            match joined {
                Ok((items, state)) => {
                    self.state = state;
                    items
                }
                Err(error) => {
                    // Calls are guarded, so this is the runtime shutting down (or a bug):
                    // the items still get an answer, and the worker's state is lost.
                    let compute = &self.stage.compute;
                    seqs.into_iter()
                        .map(|seq| Item {
                            seq,
                            row: Err(compute.fail(
                                seq,
                                CallError::Panicked {
                                    code: compute.code.name().clone(),
                                    message: error.to_string(),
                                },
                            )),
                        })
                        .collect()
                }
            }
        })
    }
}

/// One worker of a stage: until the stage's queue closes and is empty, gathers items,
/// has `executor` run them and sends them on.
pub(crate) async fn run_worker(
    stage: Arc<Stage>,
    mut executor: Box<dyn StageExecutor>,
    next: Next,
    max_chunk: usize,
) {
    loop {
        let items = {
            let mut receiving = stage.queue.lock().await;
            if receiving.carried() == 0 && !receiving.receive().await {
                break;
            }
            match stage.compute.batching() {
                Some(batching) => {
                    let deadline = tokio::time::Instant::now() + batching.timeout;
                    receiving.receive_ready(batching.size);
                    while receiving.carried() < batching.size {
                        match tokio::time::timeout_at(deadline, receiving.receive()).await {
                            Ok(true) => receiving.receive_ready(batching.size),
                            Ok(false) | Err(_) => break,
                        }
                    }
                    stage.queue.take(&mut receiving, batching.size)
                }
                None => {
                    // Take a fair share of what is ready, so the other workers get some.
                    receiving.receive_ready(max_chunk.saturating_mul(stage.workers));
                    let share = receiving
                        .carried()
                        .div_ceil(stage.workers)
                        .clamp(1, max_chunk);
                    stage.queue.take(&mut receiving, share)
                }
            }
        };
        let n = items.len() as u64;
        let started = std::time::Instant::now();
        let items = executor.process(items).await;
        let busy = started.elapsed();
        let errors = items.iter().filter(|item| item.row.is_err()).count() as u64;
        let counters = &stage.counters;
        counters.items.fetch_add(n, Ordering::Relaxed);
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters.errors.fetch_add(errors, Ordering::Relaxed);
        counters
            .busy_nanos
            .fetch_add(duration_nanos(busy), Ordering::Relaxed);
        if next.send(items).await.is_err() {
            tracing::debug!(function = %stage.compute.function.id(), "stream output gone; items dropped");
        }
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Runs a stage's function on another node: sends each batch's rows (only the slots the
/// stage reads) to the worker placed there, one request per batch, and writes the answers
/// into the rows; closes that worker when dropped (its stage's workers have stopped).
pub(crate) struct RemoteExecutor {
    pub(crate) stage: Arc<Stage>,
    pub(crate) node: NodeId,
    pub(crate) key: crate::remote::StageKey,
    pub(crate) spec: Arc<crate::remote::StageSpec>,
    pub(crate) transport: crate::remote::SharedTransport,
    /// The row slots the stage reads (its arguments and its inline functions').
    pub(crate) reads: Arc<[usize]>,
}

impl StageExecutor for RemoteExecutor {
    fn process(&mut self, mut items: Vec<Item>) -> BoxFuture<'_, Vec<Item>> {
        use crate::remote::{StageAnswer, StageCall, StageItem};
        let mut sent = Vec::with_capacity(items.len());
        let mut positions = Vec::with_capacity(items.len());
        for (k, item) in items.iter().enumerate() {
            let Ok(row) = &item.row else { continue };
            let mut sparse: Vec<Option<Value>> = vec![None; row.len()];
            for &slot in self.reads.iter() {
                if let (Some(to), Some(from)) = (sparse.get_mut(slot), row.get(slot)) {
                    to.clone_from(from);
                }
            }
            sent.push(StageItem {
                seq: item.seq,
                row: sparse,
            });
            positions.push(k);
        }
        if sent.is_empty() {
            return Box::pin(async move { items });
        }
        let call = StageCall {
            node: self.node.clone(),
            key: self.key.clone(),
            spec: Arc::clone(&self.spec),
            items: sent,
        };
        let answered = self.transport.run_stage(call);
        let stage = Arc::clone(&self.stage);
        let node = self.node.clone();
        Box::pin(async move {
            let compute = &stage.compute;
            let fail_all = |items: &mut Vec<Item>, error: CallError| {
                for &k in &positions {
                    let seq = items[k].seq;
                    items[k].row = Err(compute.fail(seq, error.clone()));
                }
            };
            match answered.await {
                Ok(answers) if answers.len() == positions.len() => {
                    for (&k, answer) in positions.iter().zip(answers) {
                        let seq = items[k].seq;
                        match answer {
                            StageAnswer::Done(value) => {
                                if let Ok(row) = &mut items[k].row {
                                    compute.store(row, value);
                                }
                            }
                            StageAnswer::Failed { function, error } => {
                                items[k].row = Err(ItemError {
                                    seq,
                                    function,
                                    error,
                                });
                            }
                        }
                    }
                }
                Ok(answers) => {
                    let error = CallError::Failed {
                        code: compute.code.name().clone(),
                        message: format!(
                            "node `{}` answered {} results for {} items",
                            node,
                            answers.len(),
                            positions.len()
                        ),
                    };
                    fail_all(&mut items, error);
                }
                Err(error) => fail_all(&mut items, error),
            }
            items
        })
    }
}

impl Drop for RemoteExecutor {
    fn drop(&mut self) {
        self.transport
            .close_stage(self.node.clone(), self.key.clone());
    }
}

/// The row slots a stage reads: its arguments' and its inline functions' arguments'.
pub(crate) fn slots_read(plan: &StagePlan) -> Arc<[usize]> {
    let mut slots: Vec<usize> = plan
        .args
        .iter()
        .chain(plan.inline.iter().flat_map(|eval| eval.args.iter()))
        .filter_map(|source| match source {
            ArgSource::Slot(slot) => Some(*slot),
            ArgSource::Inline(_) => None,
        })
        .collect();
    slots.sort_unstable();
    slots.dedup();
    slots.into()
}
