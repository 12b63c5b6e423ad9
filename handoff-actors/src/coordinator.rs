//! The node's coordinator: accepts DAGs to execute and starts one `DagRun` actor per
//! execution. A service can hold its address and send it [`Execute`] or [`Submit`]
//! messages.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use actix::prelude::*;
use futures::channel::oneshot;
use handoff_core::{
    AllocationStrategy, ArgumentInclusion, Backoff, CodeName, DagId, FunctionId, Infeasible,
    NodeId, Placement, Registry, ValidatedDag, chain_successors, check_feasible, keep_set, ranks,
    targets,
};
use tokio::sync::mpsc;

use crate::error::{ExecuteError, Problem};
use crate::events::{EventSink, EventStream, now_micros};
use crate::executor::RunShared;
use crate::location_registry::LocationRegistry;
use crate::remote::{NodeParts, SetTransport, SharedTransport};
use crate::report::{PendingReport, Recorder};
use crate::resource_manager::{ClusterView, Departures, RequesterId, ResourceManager};
use crate::result_store::ResultStore;
use crate::run::{DagRun, ExecutionResult, RunEvent, RunSettings, RunSetup};
use crate::supervision::{CountRestarts, guarded};

/// How to execute a DAG.
#[derive(Debug, Clone)]
pub struct ExecuteOptions {
    /// How nodes are picked for functions with a cost. Default: first available.
    pub allocation_strategy: AllocationStrategy,
    /// How many times a failing function is retried, unless it overrides it. Default 3.
    pub max_retries: u32,
    /// The wait before each retry, unless a function overrides it. Default: a short
    /// exponential backoff with jitter ([`Backoff::default`]).
    pub backoff: Backoff,
    /// The longest an attempt may run, unless a function overrides it. Default: none.
    pub timeout: Option<Duration>,
    /// How many functions without a cost may run at once; default: the node's setting.
    pub parallelism: Option<usize>,
    /// Ignore costs and placement and run everything on this node.
    pub local: bool,
    /// Free each intermediate value as soon as its last consumer has finished; only
    /// [`outputs`](Self::outputs) (or, when none are named, the sinks) are kept.
    pub free_intermediates: bool,
    /// The values the caller wants at the end, with `free_intermediates`.
    pub outputs: Vec<FunctionId>,
    /// Keep the DAG's values in the node's result store after the result is dropped
    /// (until `drop_dag`). Default: freed with the result.
    pub keep_values: bool,
    /// Buffer this many events for [`ExecutionHandle::events`]; 0 = no event stream.
    pub events: usize,
    /// Record what each function did and build an [`ExecutionReport`](crate::ExecutionReport)
    /// (see [`ExecutionResult::report`](crate::ExecutionResult::report) and
    /// [`ExecutionHandle::report`]). Default: off.
    pub report: bool,
    /// Cancel the execution when its [`ExecutionHandle`] is dropped before it ends, or
    /// when the future awaiting its outcome is dropped (a `select!` or a timeout that
    /// gave up on it).
    pub cancel_on_drop: bool,
    /// How long the whole execution may take, counted from its start: past it, the
    /// execution stops as a cancel does and fails with
    /// [`ExecuteError::DeadlineExceeded`] naming the functions that had not finished.
    /// Default: none.
    pub deadline: Option<Duration>,
    /// How many node deaths one function may be blamed for (the node's process died
    /// while it ran there) before the execution fails with `ExecuteError::CrashLoop`.
    /// Default 3.
    pub max_node_deaths: u32,
}

impl Default for ExecuteOptions {
    fn default() -> Self {
        ExecuteOptions {
            allocation_strategy: AllocationStrategy::FirstAvailable,
            max_retries: 3,
            backoff: Backoff::default(),
            timeout: None,
            parallelism: None,
            local: false,
            free_intermediates: false,
            outputs: Vec::new(),
            keep_values: false,
            events: 0,
            report: false,
            cancel_on_drop: false,
            deadline: None,
            max_node_deaths: 3,
        }
    }
}

impl ExecuteOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the allocation strategy.
    pub fn allocation_strategy(mut self, strategy: AllocationStrategy) -> Self {
        self.allocation_strategy = strategy;
        self
    }

    /// Sets the default number of retries.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Sets the default wait before retries.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the default timeout of an attempt.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Ignores costs and placement and runs everything on this node.
    pub fn local(mut self, local: bool) -> Self {
        self.local = local;
        self
    }

    /// Sets how many functions without a cost may run at once.
    pub fn parallelism(mut self, parallelism: usize) -> Self {
        self.parallelism = Some(parallelism);
        self
    }

    /// Frees intermediate values as soon as their last consumer has finished, keeping
    /// `outputs` (or the sinks, when `outputs` is empty).
    pub fn free_intermediates<I, T>(mut self, outputs: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<FunctionId>,
    {
        self.free_intermediates = true;
        self.outputs = outputs.into_iter().map(Into::into).collect();
        self
    }

    /// Keeps the values in the node's result store after the result is dropped.
    pub fn keep_values(mut self, keep: bool) -> Self {
        self.keep_values = keep;
        self
    }

    /// Streams up to `capacity` buffered events to [`ExecutionHandle::events`] (at most
    /// [`MAX_EVENT_BUFFER`](crate::MAX_EVENT_BUFFER); a larger capacity is
    /// capped to it).
    pub fn events(mut self, capacity: usize) -> Self {
        self.events = capacity;
        self
    }

    /// Records what each function did (node, attempts, instants, sizes) and builds an
    /// [`ExecutionReport`](crate::ExecutionReport) when the execution ends.
    pub fn report(mut self, report: bool) -> Self {
        self.report = report;
        self
    }

    /// Cancels the execution when its handle is dropped before it ends, including
    /// while its outcome is being awaited (the awaiting future dropped by a `select!` or
    /// a timeout).
    pub fn cancel_on_drop(mut self, cancel: bool) -> Self {
        self.cancel_on_drop = cancel;
        self
    }

    /// Bounds the whole execution's time: past `deadline` from its start, nothing new
    /// starts, running calls are told to stop, their resources are given back, and the
    /// outcome is [`ExecuteError::DeadlineExceeded`] naming what had not finished.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// How many node deaths one function may be blamed for before the execution fails
    /// with `ExecuteError::CrashLoop` (at least 1; default 3).
    pub fn max_node_deaths(mut self, deaths: u32) -> Self {
        self.max_node_deaths = deaths.max(1);
        self
    }
}

/// Executes a validated DAG; replies when every function has finished, or with the
/// first error once nothing of the DAG runs any more.
///
/// If the caller stops waiting for the reply before the coordinator has taken the
/// message, actix drops the message and the DAG never starts.
#[derive(Debug, Message)]
#[rtype(result = "Result<ExecutionResult, ExecuteError>")]
pub struct Execute {
    /// The DAG.
    pub dag: ValidatedDag,
    /// How to execute it.
    pub options: ExecuteOptions,
}

/// Starts executing a validated DAG and replies at once with its [`ExecutionHandle`]
/// (or with the problems that keep it from ever running).
#[derive(Debug, Message)]
#[rtype(result = "Result<ExecutionHandle, ExecuteError>")]
pub struct Submit {
    /// The DAG.
    pub dag: ValidatedDag,
    /// How to execute it.
    pub options: ExecuteOptions,
}

/// A running execution: await it for its outcome, read its events, or cancel it.
///
/// ```no_run
/// # mod handoff { pub use handoff_actors::*; pub use handoff_core::*; }
/// # async fn demo(node: handoff_actors::NodeHandle, dag: handoff_core::ValidatedDag) -> Result<(), Box<dyn std::error::Error>> {
/// use futures::StreamExt;
/// use handoff::ExecuteOptions;
/// let mut handle = node.submit(dag, ExecuteOptions::default().events(1024)).await?;
/// let mut events = handle.events().expect("asked for events");
/// let watcher = actix::spawn(async move {
///     while let Some(event) = events.next().await {
///         println!("{:?}", event.kind);
///     }
/// });
/// let outcome = handle.await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ExecutionHandle {
    dag_id: DagId,
    outcome: Option<oneshot::Receiver<Result<ExecutionResult, ExecuteError>>>,
    events: Option<EventStream>,
    report: Option<PendingReport>,
    control: mpsc::Sender<RunEvent>,
    cancelled: Arc<AtomicBool>,
    cancel_on_drop: bool,
    node: NodeId,
}

impl ExecutionHandle {
    /// The DAG being executed.
    pub fn dag_id(&self) -> &DagId {
        &self.dag_id
    }

    /// The execution's event stream (once; `None` unless [`ExecuteOptions::events`] was set).
    pub fn events(&mut self) -> Option<EventStream> {
        self.events.take()
    }

    /// The execution's report, delivered when it ends, even when it fails or is
    /// cancelled (once; `None` unless [`ExecuteOptions::report`] was set).
    pub fn report(&mut self) -> Option<PendingReport> {
        self.report.take()
    }

    /// Cancels the execution: functions not started never start, running ones are told
    /// to stop (see `CancellationToken`), their resources are released, and the outcome
    /// becomes [`ExecuteError::Cancelled`] with what had finished. No effect once the
    /// execution has ended.
    pub fn cancel(&self) {
        self.canceller().cancel();
    }

    /// A clonable handle that cancels this execution from anywhere (another task, a
    /// signal handler), also while the outcome is being awaited.
    ///
    /// ```no_run
    /// # mod handoff { pub use handoff_actors::*; pub use handoff_core::*; }
    /// # async fn demo(node: handoff_actors::NodeHandle, dag: handoff_core::ValidatedDag) -> Result<(), Box<dyn std::error::Error>> {
    /// use handoff::{ExecuteError, ExecuteOptions};
    /// let handle = node.submit(dag, ExecuteOptions::default()).await?;
    /// let canceller = handle.canceller();
    /// actix::spawn(async move {
    ///     // ... on shutdown:
    ///     canceller.cancel();
    /// });
    /// match handle.await {
    ///     Err(ExecuteError::Cancelled { finished, .. }) => println!("{} finished", finished.len()),
    ///     other => println!("{other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn canceller(&self) -> Canceller {
        Canceller {
            cancelled: Arc::clone(&self.cancelled),
            control: self.control.clone(),
        }
    }

    /// Tests only: makes the execution's coordinator panic, as a bug would.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn crash_coordinator(&self) {
        let _ = self.control.try_send(RunEvent::Crash);
    }

    /// Waits for the outcome. With [`ExecuteOptions::cancel_on_drop`], dropping this
    /// future before it completes cancels the execution.
    pub async fn outcome(mut self) -> Result<ExecutionResult, ExecuteError> {
        let outcome = self.outcome.take();
        let (node, dag) = (self.node.clone(), self.dag_id.clone());
        // Cancels if this future is dropped while waiting; disarmed once the outcome is in.
        let mut guard = CancelOnDrop(self.cancel_on_drop.then(|| self.canceller()));
        let outcome = match outcome {
            Some(rx) => rx
                .await
                .unwrap_or(Err(ExecuteError::NodeStopped { node, dag })),
            None => Err(ExecuteError::NodeStopped { node, dag }),
        };
        guard.0 = None;
        outcome
    }
}

/// Cancels one execution; cloned freely (see [`ExecutionHandle::canceller`]).
#[derive(Debug, Clone)]
pub struct Canceller {
    cancelled: Arc<AtomicBool>,
    control: mpsc::Sender<RunEvent>,
}

impl Canceller {
    /// Cancels the execution, as [`ExecutionHandle::cancel`] does. No effect once it has
    /// ended; calling it again changes nothing.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
        // If the channel is full, the run still sees the flag: every job it is waiting
        // for checks it between calls and reports back, which wakes the run.
        let _ = self.control.try_send(RunEvent::Cancel);
    }
}

/// Cancels through its canceller when dropped, unless disarmed (set to `None`).
struct CancelOnDrop(Option<Canceller>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(canceller) = &self.0 {
            canceller.cancel();
        }
    }
}

impl IntoFuture for ExecutionHandle {
    type Output = Result<ExecutionResult, ExecuteError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.outcome())
    }
}

impl Drop for ExecutionHandle {
    fn drop(&mut self) {
        // `outcome()` takes the receiver out: only a handle dropped unawaited cancels.
        if self.cancel_on_drop && self.outcome.is_some() {
            self.cancel();
        }
    }
}

/// Accepts DAGs and runs each in its own `DagRun` actor.
pub struct Coordinator {
    node: NodeId,
    registry: Arc<Registry>,
    parallelism: usize,
    manager: Addr<ResourceManager>,
    store: Addr<ResultStore>,
    locations: Addr<LocationRegistry>,
    next_requester: AtomicU64,
    restarts: u32,
    transport: Option<SharedTransport>,
    /// The event channels of the executions started here (closed ones are pruned), for
    /// telling them about nodes that left.
    runs: Arc<std::sync::Mutex<Vec<mpsc::Sender<RunEvent>>>>,
    /// Calls running on this node's threads that nobody waits for any more.
    abandoned: Arc<crate::executor::Abandoned>,
}

impl Coordinator {
    pub(crate) fn new(
        node: NodeId,
        registry: Arc<Registry>,
        parallelism: usize,
        manager: Addr<ResourceManager>,
        store: Addr<ResultStore>,
        locations: Addr<LocationRegistry>,
    ) -> Self {
        Coordinator {
            node,
            registry,
            parallelism,
            manager,
            store,
            locations,
            next_requester: AtomicU64::new(0),
            restarts: 0,
            transport: None,
            runs: Arc::default(),
            abandoned: Arc::new(crate::executor::Abandoned::new(
                crate::node::DEFAULT_MAX_ABANDONED_CALLS,
            )),
        }
    }

    /// Shares the node's count of abandoned calls (see
    /// [`NodeConfig::max_abandoned_calls`](crate::NodeConfig::max_abandoned_calls)).
    pub(crate) fn with_abandoned(mut self, abandoned: Arc<crate::executor::Abandoned>) -> Self {
        self.abandoned = abandoned;
        self
    }

    /// What starting a stream needs.
    pub(crate) fn stream_parts(&self) -> crate::stream::StreamParts {
        crate::stream::StreamParts {
            node: self.node.clone(),
            registry: Arc::clone(&self.registry),
            manager: self.manager.clone(),
            transport: self.transport.clone(),
        }
    }

    /// What running a function sent by another node needs.
    pub(crate) fn parts(&self) -> NodeParts {
        NodeParts {
            node: self.node.clone(),
            registry: Arc::clone(&self.registry),
            manager: self.manager.clone(),
            store: self.store.clone(),
            locations: self.locations.clone(),
            requester: RequesterId(self.next_requester.fetch_add(1, Ordering::Relaxed)),
        }
    }

    /// Checks the DAG against the registries and capacities of the nodes it may run on,
    /// then starts its run.
    fn submit(
        &self,
        dag: ValidatedDag,
        options: ExecuteOptions,
    ) -> impl Future<Output = Result<ExecutionHandle, ExecuteError>> + 'static {
        let dag = if options.local { dag.localized() } else { dag };
        // Without a transport (or with `local`), only this node runs functions.
        let transport = self.transport.clone().filter(|_| !options.local);
        let mut problems = Vec::new();
        let codes = resolve_codes(
            &dag,
            &self.registry,
            &self.node,
            transport.is_some(),
            &mut problems,
        );
        if options.free_intermediates {
            for output in &options.outputs {
                if dag.index_of(output.as_str()).is_none() {
                    problems.push(Problem::UnknownOutput {
                        output: output.clone(),
                    });
                }
            }
        }
        let manager = self.manager.clone();
        let (store, locations) = (self.store.clone(), self.locations.clone());
        let node = self.node.clone();
        let requester = RequesterId(self.next_requester.fetch_add(1, Ordering::Relaxed));
        let parallelism = options.parallelism.unwrap_or(self.parallelism);
        let abandoned = Arc::clone(&self.abandoned);
        let runs = Arc::clone(&self.runs);
        let needs_check = dag.functions().iter().zip(&codes).any(|(f, code)| {
            f.cost().is_some() || *f.placement() != Placement::Any || code.is_none()
        });
        async move {
            if needs_check {
                let stopped = || ExecuteError::NodeStopped {
                    node: node.clone(),
                    dag: dag.id().clone(),
                };
                let mut nodes = manager.send(ClusterView).await.map_err(|_| stopped())?;
                let departed = match &transport {
                    Some(_) => manager.send(Departures).await.map_err(|_| stopped())?,
                    None => {
                        nodes.retain(|n| n.node == node);
                        Vec::new()
                    }
                };
                // Without a cluster, resolving the codes reported unknown codes already.
                let reported = |f: &FunctionId| {
                    problems.iter().any(|p| {
                        matches!(
                            p,
                            Problem::UnknownCode { function, .. }
                                | Problem::SignatureMismatch { function, .. }
                                if function == f
                        )
                    })
                };
                let found = check_feasible(&dag, &nodes, &departed, reported);
                problems.extend(found.into_iter().map(|p| {
                    match p {
                        Infeasible::UnknownCode {
                            function,
                            code,
                            nearest,
                            registered_on,
                        } => Problem::UnknownCode {
                            function,
                            code,
                            nearest,
                            registered_on,
                            registered_names: Vec::new(),
                        },
                        Infeasible::SignatureMismatch {
                            function,
                            code,
                            expected,
                            found,
                        } => Problem::SignatureMismatch {
                            function,
                            code,
                            expected: expected.to_string(),
                            found: found
                                .into_iter()
                                .map(|(node, types)| (node, types.to_string()))
                                .collect(),
                        },
                        Infeasible::Allocation(error) => Problem::Allocation(error),
                    }
                }));
                // The nodes the problems name, by the names they announced.
                if let Some(transport) = &transport {
                    for problem in &mut problems {
                        match problem {
                            Problem::Allocation(error) => {
                                error.name_nodes(|node| transport.node_name(node));
                            }
                            Problem::UnknownCode {
                                registered_on,
                                registered_names,
                                ..
                            } => {
                                *registered_names = registered_on
                                    .iter()
                                    .map(|node| transport.node_name(node).unwrap_or_default())
                                    .collect();
                            }
                            _ => {}
                        }
                    }
                }
                // Alone in a cluster: why, when the network knows (a key mismatch).
                if !problems.is_empty()
                    && nodes.iter().all(|n| n.node == node)
                    && let Some(reason) = transport.as_ref().and_then(|t| t.isolation())
                {
                    problems.insert(0, Problem::Isolated { reason });
                }
            }
            if !problems.is_empty() {
                return Err(ExecuteError::Rejected {
                    dag: dag.id().clone(),
                    problems,
                });
            }
            let cluster = transport.is_some();
            let handle = start_run(
                dag,
                options,
                codes,
                node,
                requester,
                parallelism,
                transport,
                (manager, store, locations),
                abandoned,
            );
            if cluster {
                let mut runs = runs
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                runs.retain(|r| !r.is_closed());
                runs.push(handle.control.clone());
            }
            Ok(handle)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn start_run(
    dag: ValidatedDag,
    options: ExecuteOptions,
    codes: Vec<Option<handoff_core::Code>>,
    node: NodeId,
    requester: RequesterId,
    parallelism: usize,
    transport: Option<SharedTransport>,
    (manager, store, locations): (
        Addr<ResourceManager>,
        Addr<ResultStore>,
        Addr<LocationRegistry>,
    ),
    abandoned: Arc<crate::executor::Abandoned>,
) -> ExecutionHandle {
    let (tx, rx) = mpsc::channel(256);
    let (sink, stream) = match options.events {
        0 => (None, None),
        capacity => {
            let (sink, stream) = EventSink::new(capacity);
            (Some(sink), Some(stream))
        }
    };
    let cancelled = Arc::new(AtomicBool::new(false));
    let timed =
        |i: usize| options.timeout.is_some() || dag.function(i).timeout_override().is_some();
    let local_code = |i: usize| codes[i].is_some();
    let shared = Arc::new(RunShared {
        chain_next: chain_successors(&dag, timed, local_code),
        codes,
        cancelled: Arc::clone(&cancelled),
        timestamps: sink.is_some() || options.report || tracing::enabled!(tracing::Level::DEBUG),
        events: tx.clone(),
        span: tracing::info_span!("dag", dag = %dag.id(), node = %node),
        attempt_spans: tracing::enabled!(tracing::Level::DEBUG),
        dag: dag.clone(),
        abandoned,
    });
    let keep = keep_set(&dag, options.free_intermediates, &options.outputs);
    let (recorder, report) = if options.report {
        let (tx, rx) = oneshot::channel();
        let recorder = Recorder::new(dag.len(), now_micros(), Some(tx));
        (Some(recorder), Some(PendingReport(rx)))
    } else {
        (None, None)
    };
    let (reply, answer) = oneshot::channel();
    let setup = RunSetup {
        settings: RunSettings {
            requester,
            node: node.clone(),
            strategy: options.allocation_strategy,
            max_retries: options.max_retries,
            timeout: options.timeout,
            backoff: options.backoff,
            parallelism,
            free_intermediates: options.free_intermediates,
            keep_values: options.keep_values,
            keep,
            targets: targets(&dag),
            ranks: ranks(&dag),
            transport,
            max_node_deaths: options.max_node_deaths,
            deadline: options.deadline,
        },
        shared,
        events: rx,
        sink,
        recorder,
        manager,
        store,
        locations,
        reply,
    };
    DagRun::new(setup).start();
    ExecutionHandle {
        dag_id: dag.id().clone(),
        outcome: Some(answer),
        events: stream,
        report,
        control: tx,
        cancelled,
        cancel_on_drop: options.cancel_on_drop,
        node,
    }
}

impl Actor for Coordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(256);
    }
}

impl Supervised for Coordinator {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.restarts += 1;
        tracing::warn!(node = %self.node, "coordinator restarting");
    }
}

/// Resolves each function's code in this node's registry and checks its arity. A code
/// not registered here is a problem unless other nodes may run it (`cluster`); whether
/// one does is checked against the cluster view.
fn resolve_codes(
    dag: &ValidatedDag,
    registry: &Registry,
    node: &NodeId,
    cluster: bool,
    problems: &mut Vec<Problem>,
) -> Vec<Option<handoff_core::Code>> {
    // Functions mostly come in runs sharing a code: the last look-up is reused for them.
    let mut last: Option<(&handoff_core::CodeName, Option<&handoff_core::Code>)> = None;
    dag.functions()
        .iter()
        .map(|f| {
            if f.is_input() {
                problems.push(Problem::StreamInput {
                    function: f.id().clone(),
                });
                return None;
            }
            let found = match last {
                Some((name, found)) if name == f.code() => found,
                _ => {
                    let found = registry.get(f.code().as_str()).ok();
                    last = Some((f.code(), found));
                    found
                }
            };
            // A function built from a typed handle runs only where its code has its types:
            // here, or (on a cluster) on a node the cluster view shows has them.
            let found = match (found, f.signature()) {
                (Some(code), Some(wanted)) if code.signature().is_some_and(|s| s != wanted) => {
                    if !cluster {
                        problems.push(Problem::SignatureMismatch {
                            function: f.id().clone(),
                            code: f.code().clone(),
                            expected: wanted.to_owned(),
                            found: vec![(
                                node.clone(),
                                code.signature().unwrap_or_default().to_owned(),
                            )],
                        });
                    }
                    return None;
                }
                (found, _) => found,
            };
            let Some(code) = found else {
                if !cluster {
                    let names = registry.names();
                    problems.push(Problem::UnknownCode {
                        function: f.id().clone(),
                        code: f.code().clone(),
                        nearest: handoff_core::nearest_name(
                            f.code().as_str(),
                            names.iter().map(CodeName::as_str),
                        )
                        .map(CodeName::from),
                        registered_on: Vec::new(),
                        registered_names: Vec::new(),
                    });
                }
                return None;
            };
            let given = match f.argument_inclusion() {
                ArgumentInclusion::Variadic => f.arg_ids().len(),
                ArgumentInclusion::AsList => 1,
            } + f.extra_args().len();
            if code.arity() != given {
                problems.push(Problem::ArityMismatch {
                    function: f.id().clone(),
                    code: f.code().clone(),
                    expected: code.arity(),
                    given,
                });
            }
            Some(code.clone())
        })
        .collect()
}

/// The actor's name in panic reports.
const ACTOR: &str = "coordinator";

impl Coordinator {
    /// [`submit`](Self::submit), with a panic while preparing turned into an error (and
    /// a restart of the coordinator).
    fn guarded_submit(
        &mut self,
        dag: ValidatedDag,
        options: ExecuteOptions,
        ctx: &mut Context<Self>,
    ) -> Pin<Box<dyn Future<Output = Result<ExecutionHandle, ExecuteError>>>> {
        let id = dag.id().clone();
        match guarded(ACTOR, ctx, || self.submit(dag, options)) {
            Ok(fut) => Box::pin(fut),
            Err(panicked) => Box::pin(async move {
                Err(ExecuteError::Internal {
                    dag: id,
                    message: panicked.to_string(),
                })
            }),
        }
    }
}

impl Handler<CountRestarts> for Coordinator {
    type Result = u32;

    fn handle(&mut self, _msg: CountRestarts, _ctx: &mut Self::Context) -> u32 {
        self.restarts
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::supervision::Crash> for Coordinator {
    type Result = Result<(), crate::supervision::Panicked>;

    fn handle(&mut self, _msg: crate::supervision::Crash, ctx: &mut Self::Context) -> Self::Result {
        guarded(ACTOR, ctx, || {
            panic!("fault injection: the coordinator was told to crash")
        })
    }
}

/// Tells the executions running here that a node left the cluster (the network layer
/// sends it): what they ran there runs again elsewhere, and values that lived only there
/// and are still needed are recomputed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct NodeLost {
    /// The node.
    pub node: NodeId,
}

impl Handler<NodeLost> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: NodeLost, _ctx: &mut Self::Context) {
        let runs: Vec<_> = {
            let mut runs = self
                .runs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            runs.retain(|r| !r.is_closed());
            runs.clone()
        };
        for run in runs {
            let event = RunEvent::NodeLost(msg.node.clone());
            if let Err(mpsc::error::TrySendError::Full(event)) = run.try_send(event) {
                actix::spawn(async move {
                    let _ = run.send(event).await;
                });
            }
        }
    }
}

impl Handler<SetTransport> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: SetTransport, _ctx: &mut Self::Context) {
        self.transport = Some(msg.0);
    }
}

impl Handler<Submit> for Coordinator {
    type Result = ResponseFuture<Result<ExecutionHandle, ExecuteError>>;

    fn handle(&mut self, msg: Submit, ctx: &mut Self::Context) -> Self::Result {
        self.guarded_submit(msg.dag, msg.options, ctx)
    }
}

impl Handler<Execute> for Coordinator {
    type Result = ResponseFuture<Result<ExecutionResult, ExecuteError>>;

    fn handle(&mut self, msg: Execute, ctx: &mut Self::Context) -> Self::Result {
        let options = ExecuteOptions {
            cancel_on_drop: false,
            ..msg.options
        };
        let submitted = self.guarded_submit(msg.dag, options, ctx);
        Box::pin(async move { submitted.await?.outcome().await })
    }
}
