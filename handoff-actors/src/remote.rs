//! Running functions on other nodes: what an execution's coordinator needs from the
//! network layer ([`Transport`]), and what a node does with a function another node sent
//! it ([`RunFunction`]).
//!
//! This crate knows nothing of the network: `handoff-net` implements [`Transport`] and
//! installs it with [`NodeHandle::set_transport`](crate::NodeHandle::set_transport). Until
//! a transport is installed (a node outside a cluster), every function runs locally.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use handoff_core::{CallError, DagId, Function, FunctionId, NodeId, Rank, Registry, Target, Value};

use crate::coordinator::Coordinator;
use crate::executor::{CURRENT, CancellationToken, TokenScope};
use crate::location_registry::RegisterLocations;
use crate::resource_manager::ReserveOne;
use crate::result_store::StoreRan;

/// Where one argument of a [`RemoteCall`] comes from.
#[derive(Debug, Clone)]
pub enum RemoteArgument {
    /// The result of `function` is stored on `node`; the executing node fetches it (once,
    /// for all its consumers there) or reads it locally when `node` is itself.
    Held {
        /// The function whose result it is.
        function: FunctionId,
        /// The node that stores it.
        node: NodeId,
    },
    /// A small value that may travel with the call (the transport may instead have it
    /// fetched from `node`, which holds it, to keep the call's message small).
    Value {
        /// The function whose result it is.
        function: FunctionId,
        /// The node that stores it.
        node: NodeId,
        /// The value.
        value: Value,
    },
}

impl RemoteArgument {
    /// The function whose result this argument is.
    pub fn function(&self) -> &FunctionId {
        match self {
            RemoteArgument::Held { function, .. } | RemoteArgument::Value { function, .. } => {
                function
            }
        }
    }
}

/// One attempt of one function, to run on another node.
#[derive(Debug, Clone)]
pub struct RemoteCall {
    /// The DAG (the namespace of the result on the executing node).
    pub dag: DagId,
    /// The node to run it on.
    pub node: NodeId,
    /// The function.
    pub function: Function,
    /// The inline functions among its arguments (and theirs), evaluated in place.
    pub inline: Vec<Function>,
    /// Its regular dependencies' results: one entry per function whose result it takes
    /// (directly or through inline arguments).
    pub arguments: Vec<RemoteArgument>,
    /// The attempt number (1 for the first).
    pub attempt: u32,
    /// The longest the attempt may run.
    pub timeout: Option<Duration>,
    /// Ask the node to confirm the call started before running it (for a function
    /// suspected of killing the nodes that run it): if the node then dies, the loss is
    /// [`CallError::NodeLost`] with `running: true`.
    pub report_start: bool,
}

/// What a finished remote attempt produced.
#[derive(Debug, Clone)]
pub struct RemoteDone {
    /// The value, when it was small enough to come back with the completion; `None`
    /// when it stays on the executing node only.
    pub value: Option<Value>,
    /// The size of its MessagePack form, in bytes (weighs locality in placement).
    pub size: u64,
}

/// The outcome of a remote attempt.
pub type RemoteResult = Result<RemoteDone, CallError>;

/// Why a value could not be fetched from another node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{function}` of DAG `{dag}` could not be fetched from node `{node}`: {reason}")]
pub struct FetchFailed {
    /// The DAG.
    pub dag: DagId,
    /// The function whose result was asked for.
    pub function: FunctionId,
    /// The node asked.
    pub node: NodeId,
    /// What went wrong.
    pub reason: String,
}

/// What an execution's coordinator needs from the network: run a function on another
/// node, fetch a value from one, and tell nodes to forget a DAG.
pub trait Transport: Send + Sync + 'static {
    /// The name `node` goes by (the one its operator gave it), when known: reports and
    /// pictures of an execution show it. `None` by default.
    fn node_name(&self, node: &NodeId) -> Option<String> {
        let _ = node;
        None
    }

    /// Why this node reaches no other node, when the network knows a likely cause (every
    /// connection failed during the handshake: a cluster key mismatch): an execution it
    /// rejects for want of a node says so. `None` by default.
    fn isolation(&self) -> Option<String> {
        None
    }

    /// Runs one attempt on `call.node` and resolves when it has finished there. A
    /// function that fails, or that could not run there (the node is unreachable, has
    /// left, or refused), resolves to the [`CallError`] (the latter as
    /// [`CallError::Unavailable`]); it never stays pending after the node has gone.
    fn execute(&self, call: RemoteCall) -> BoxFuture<'static, RemoteResult>;

    /// Runs one attempt as [`Transport::execute`] does and hands its outcome to `done`,
    /// called once, from a task of the node's runtime (it must not block). Saves a task
    /// per attempt where the transport settles attempts itself; the default spawns one
    /// that awaits [`Transport::execute`].
    fn execute_then(&self, call: RemoteCall, done: Box<dyn FnOnce(RemoteResult) + Send>) {
        let running = self.execute(call);
        tokio::spawn(async move { done(running.await) });
    }

    /// The value of `function` in `dag` stored on `node`. Implementations fetch a value
    /// at most once at a time per node and keep it in the local result store, so its
    /// other local consumers read it from there.
    fn fetch(
        &self,
        dag: DagId,
        function: FunctionId,
        node: NodeId,
    ) -> BoxFuture<'static, Result<Value, FetchFailed>>;

    /// Tells `nodes` to drop every value of `dag` they hold (fire and forget).
    fn forget(&self, dag: DagId, nodes: Vec<NodeId>);

    /// An execution coordinated here is about to send its first function out under
    /// `wire`, the id it goes by on other nodes (called once per execution, before its
    /// first [`execute`](Self::execute); ended by [`forget`](Self::forget)). The default
    /// does nothing.
    fn open(&self, wire: &DagId) {
        let _ = wire;
    }

    /// Runs a stream stage's function on `call.items` at the stage worker `call.key`
    /// placed on `call.node` (opened there, its init code run, by the first call: send
    /// one without items to open it). Resolves to one answer per item, in order; an
    /// error when the node could not be asked or could not open the worker.
    ///
    /// The default refuses (a transport without stream support).
    fn run_stage(
        &self,
        call: StageCall,
    ) -> BoxFuture<'static, Result<Vec<StageAnswer>, CallError>> {
        let error = CallError::Unavailable {
            code: call.spec.function.code().clone(),
            node: call.node,
            reason: "this transport cannot run stream stages on other nodes".to_owned(),
        };
        Box::pin(async move { Err(error) })
    }

    /// Tells `node` that the stage worker `key` is done: it drops the worker and its
    /// state (fire and forget).
    fn close_stage(&self, node: NodeId, key: StageKey) {
        let _ = (node, key);
    }
}

/// One worker of a stream's stage placed on another node: the stream (numbered by the
/// node that runs it), the stage's function and the worker's number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct StageKey {
    /// The stream, unique on the node that runs it.
    pub stream: u64,
    /// The stage's function.
    pub function: FunctionId,
    /// The worker, from 0.
    pub worker: u32,
}

/// What a node needs to run a stage worker another node's stream placed there: the
/// stage's plan, its function, and the inline functions it evaluates (codes are looked
/// up in that node's registry).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StageSpec {
    /// Where the stage reads its arguments and writes its result in an item's row.
    pub plan: handoff_core::StagePlan,
    /// The stage's function.
    pub function: Function,
    /// The inline functions of `plan.inline`, in order.
    pub inline: Vec<Function>,
}

/// One item sent to a stage worker on another node: its number and its row, with only
/// the slots the stage reads filled in.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StageItem {
    /// The item's number in its stream.
    pub seq: u64,
    /// The item's row (see `handoff_core::StreamPlan`), the slots the stage does not
    /// read left empty.
    pub row: Vec<Option<Value>>,
}

/// What became of one item at a stage worker on another node.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum StageAnswer {
    /// The stage's result for the item.
    Done(Value),
    /// The item failed in `function` (the stage's, or one of its inline functions).
    Failed {
        /// The function that failed.
        function: FunctionId,
        /// Why.
        error: CallError,
    },
}

/// A batch of items for a stage worker on another node (see [`Transport::run_stage`]).
#[derive(Debug, Clone)]
pub struct StageCall {
    /// The node the worker runs on.
    pub node: NodeId,
    /// The worker.
    pub key: StageKey,
    /// The stage.
    pub spec: Arc<StageSpec>,
    /// The items, at most a chunk or a batch of them.
    pub items: Vec<StageItem>,
}

/// A shared transport.
pub type SharedTransport = Arc<dyn Transport>;

/// Installs (or replaces) the transport executions use to reach other nodes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetTransport(pub SharedTransport);

impl std::fmt::Debug for SetTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SetTransport(..)")
    }
}

/// Runs one attempt of a function another node sent to this one: reserves its cost on
/// this node (waiting while it does not fit now), evaluates it on the blocking pool with
/// its timeout, stores the result here and records that it lives here.
#[derive(Message)]
#[rtype(result = "Result<Ran, CallError>")]
pub struct RunFunction {
    /// The DAG.
    pub dag: DagId,
    /// The function.
    pub function: Function,
    /// The inline functions among its arguments (and theirs).
    pub inline: Vec<Function>,
    /// The values of its regular dependencies, by function id.
    pub values: HashMap<FunctionId, Value>,
    /// The longest the attempt may run.
    pub timeout: Option<Duration>,
    /// Also encode the result as MessagePack, on the blocking pool right after the call,
    /// and keep that form in the result store for serving it to other nodes.
    pub encode: bool,
    /// Awaited once the reservation is granted, just before the code is called (the
    /// network layer reports the start to the node that sent the function).
    pub before_start: Option<BoxFuture<'static, ()>>,
}

impl std::fmt::Debug for RunFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunFunction")
            .field("dag", &self.dag)
            .field("function", &self.function.id())
            .field("timeout", &self.timeout)
            .field("encode", &self.encode)
            .finish_non_exhaustive()
    }
}

/// What [`RunFunction`] produced.
#[derive(Debug, Clone)]
pub struct Ran {
    /// The result (also stored on this node).
    pub value: Value,
    /// Its MessagePack form, when asked for.
    pub encoded: Option<Bytes>,
}

impl Handler<RunFunction> for Coordinator {
    type Result = ResponseFuture<Result<Ran, CallError>>;

    fn handle(&mut self, msg: RunFunction, _ctx: &mut Self::Context) -> Self::Result {
        let parts = self.parts();
        Box::pin(run_function(parts, msg))
    }
}

/// Asks the coordinator for what running a function sent by another node needs, so that
/// the caller runs it in its own task (and can drop it: see
/// [`NodeHandle::run_function`](crate::NodeHandle::run_function)).
pub(crate) struct GetParts;

impl Message for GetParts {
    type Result = NodeParts;
}

impl Handler<GetParts> for Coordinator {
    type Result = MessageResult<GetParts>;

    fn handle(&mut self, _msg: GetParts, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.parts())
    }
}

/// Sets the attempt's cancellation flag when the attempt is dropped before it ended.
struct StopOnDrop {
    flag: Arc<AtomicBool>,
    ended: bool,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if !self.ended {
            self.flag.store(true, Ordering::Relaxed);
        }
    }
}

/// What [`run_function`] needs from the node.
#[derive(Clone)]
pub(crate) struct NodeParts {
    pub(crate) node: NodeId,
    pub(crate) registry: Arc<Registry>,
    pub(crate) manager: Addr<crate::resource_manager::ResourceManager>,
    pub(crate) store: Addr<crate::result_store::ResultStore>,
    pub(crate) locations: Addr<crate::location_registry::LocationRegistry>,
    pub(crate) requester: crate::resource_manager::RequesterId,
}

pub(crate) async fn run_function(parts: NodeParts, msg: RunFunction) -> Result<Ran, CallError> {
    run_with(&parts, msg).await
}

/// Reserves `cost` for `function` on this node (`node`), waiting while others hold it,
/// under `requester` (`path` ranks it among waiting requests of the same priority). A
/// refusal, or a stopping node, is [`CallError::Unavailable`].
pub(crate) async fn reserve_here(
    manager: &Addr<crate::resource_manager::ResourceManager>,
    requester: crate::resource_manager::RequesterId,
    node: &NodeId,
    function: &Function,
    cost: handoff_core::Resources,
    path: u32,
) -> Result<crate::resource_manager::GrantId, CallError> {
    let unavailable = |reason: String| CallError::Unavailable {
        code: function.code().clone(),
        node: node.clone(),
        reason,
    };
    let (reply, granted) = futures::channel::oneshot::channel();
    let reserve = ReserveOne {
        requester,
        rank: Rank {
            priority: function.priority_value(),
            path,
        },
        function: function.id().clone(),
        code: function.code().clone(),
        cost,
        target: Target::Pinned(node.clone()),
        strategy: handoff_core::AllocationStrategy::FirstAvailable,
        reply,
    };
    manager
        .send(reserve)
        .await
        .map_err(|_| unavailable("the node is stopping".to_owned()))?;
    match granted.await {
        Ok(Ok((grant, _))) => Ok(grant),
        Ok(Err(error)) => Err(unavailable(error.to_string())),
        Err(_) => Err(unavailable("the node is stopping".to_owned())),
    }
}

/// Runs one attempt with `parts`, in a blocking-pool job of its own.
async fn run_with(parts: &NodeParts, msg: RunFunction) -> Result<Ran, CallError> {
    let RunFunction {
        dag,
        function,
        inline,
        values,
        timeout,
        encode,
        before_start,
    } = msg;
    let code = function.code().clone();
    let unavailable = |reason: String| CallError::Unavailable {
        code: code.clone(),
        node: parts.node.clone(),
        reason,
    };
    parts.registry.get(code.as_str())?;
    let cost = function.cost().filter(|c| !c.is_empty()).cloned();
    // Gives the reservation back however this ends (even if this future is dropped while
    // it waits for it, or holds it): everything this requester holds or waits for. Without
    // a cost nothing is reserved, so there is nothing to give back. Once the code runs, the
    // guard is the job's: the reservation is held until the code returns, even when the
    // attempt times out or is cancelled first (its thread is still busy).
    let withdraw = cost.as_ref().map(|_| WithdrawOnDrop {
        manager: parts.manager.clone(),
        requester: parts.requester,
    });
    match cost {
        None => {}
        Some(cost) => {
            reserve_here(
                &parts.manager,
                parts.requester,
                &parts.node,
                &function,
                cost,
                1,
            )
            .await?;
        }
    }
    if let Some(started) = before_start {
        started.await;
    }
    let attempt = Arc::new(AtomicBool::new(false));
    let mut stop = StopOnDrop {
        flag: Arc::clone(&attempt),
        ended: false,
    };
    let token = CancellationToken {
        run: Arc::new(AtomicBool::new(false)),
        attempt: Arc::clone(&attempt),
    };
    let registry = Arc::clone(&parts.registry);
    let id = function.id().clone();
    // The attempt number stays with the node that sent the function.
    let span = tracing::debug_span!("attempt", dag = %dag, function = %id, node = %parts.node);
    let work = move || {
        let _held = withdraw;
        let _entered = span.enter();
        CURRENT.with(|c| *c.borrow_mut() = Some(token));
        let _scope = TokenScope;
        let value = registry.evaluate(&function, &inline, &values)?;
        let encoded = match encode {
            false => None,
            true => Some(value.to_msgpack().map_err(|error| CallError::Failed {
                code: function.code().clone(),
                message: format!("the result cannot be sent to other nodes: {error}"),
            })?),
        };
        Ok::<_, CallError>(Ran { value, encoded })
    };
    let task = tokio::task::spawn_blocking(work);
    let joined = match timeout {
        None => task.await,
        Some(after) => match tokio::time::timeout(after, task).await {
            Ok(joined) => joined,
            Err(_) => {
                attempt.store(true, Ordering::Relaxed);
                return Err(CallError::TimedOut { code, after });
            }
        },
    };
    stop.ended = true;
    let ran = joined.map_err(|error| CallError::Panicked {
        code: code.clone(),
        message: error.to_string(),
    })??;
    store_here(parts, dag, id, &ran)
        .await
        .map_err(|_| unavailable("the node is stopping".to_owned()))?;
    Ok(ran)
}

/// Withdraws a requester's reservations and waits when dropped.
struct WithdrawOnDrop {
    manager: Addr<crate::resource_manager::ResourceManager>,
    requester: crate::resource_manager::RequesterId,
}

impl Drop for WithdrawOnDrop {
    fn drop(&mut self) {
        crate::run::send_detached(
            &self.manager,
            crate::resource_manager::Withdraw {
                requester: self.requester,
            },
        );
    }
}

/// Stores a remotely run function's result here (with its encoded form) and records that
/// it lives here.
async fn store_here(
    parts: &NodeParts,
    dag: DagId,
    id: FunctionId,
    ran: &Ran,
) -> Result<(), MailboxError> {
    store_all_here(
        parts,
        dag,
        vec![(id, ran.value.clone(), ran.encoded.clone())],
    )
    .await
}

/// Stores results of remotely run functions of `dag` here (with their encoded forms), and
/// records that they live here: one message to each actor for them all.
async fn store_all_here(
    parts: &NodeParts,
    dag: DagId,
    values: Vec<(FunctionId, Value, Option<Bytes>)>,
) -> Result<(), MailboxError> {
    let locations = values
        .iter()
        .map(|(id, _, _)| (id.clone(), parts.node.clone()))
        .collect();
    let register = RegisterLocations {
        dag: dag.clone(),
        locations,
    };
    parts.store.send(StoreRan { dag, values }).await?;
    parts.locations.send(register).await
}

/// A call waiting in a batch's shared jobs; taken (once) by a job or, when it waited too
/// long, by a job of its own.
type QuickSlot = Arc<Mutex<Option<Box<dyn FnOnce() + Send>>>>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long a quick call may wait in its batch's shared jobs before it gets a blocking-pool
/// job of its own (a slow call ahead of it holds a shared job; without cost, timeout or
/// start report, every call runs as soon as the pool has a thread, as when each had its own
/// job).
const QUICK_START: Duration = Duration::from_millis(2);

/// The shared blocking-pool jobs of one batch: the quick calls run back to back in at most
/// `max_jobs` jobs, saving a thread wake-up per call.
struct QuickJobs {
    state: Mutex<QuickState>,
    max_jobs: usize,
}

#[derive(Default)]
struct QuickState {
    calls: std::collections::VecDeque<QuickSlot>,
    running: usize,
    /// A task is about to start jobs for the calls waiting (see [`QuickJobs::submit`]).
    starting: bool,
}

impl QuickJobs {
    /// Queues calls. The jobs are started by a task of their own, which runs after the
    /// tasks already woken on this thread, so that one wake-up of the pool serves the calls
    /// queued meanwhile.
    fn submit_all(self: &Arc<Self>, slots: impl IntoIterator<Item = QuickSlot>) {
        let schedule = {
            let mut state = lock(&self.state);
            state.calls.extend(slots);
            let schedule = !state.starting && state.running < self.max_jobs;
            if schedule {
                state.starting = true;
            }
            schedule
        };
        if schedule {
            let jobs = Arc::clone(self);
            tokio::task::spawn_local(async move { jobs.start() });
        }
    }

    /// Starts as many jobs as there are calls waiting, up to `max_jobs` in all.
    fn start(self: &Arc<Self>) {
        let more = {
            let mut state = lock(&self.state);
            state.starting = false;
            let more = state
                .calls
                .len()
                .min(self.max_jobs.saturating_sub(state.running));
            state.running += more;
            more
        };
        for _ in 0..more {
            let jobs = Arc::clone(self);
            drop(tokio::task::spawn_blocking(move || jobs.drain()));
        }
    }

    /// One shared job: runs the waiting calls until none is left.
    fn drain(&self) {
        loop {
            let slot = {
                let mut state = lock(&self.state);
                match state.calls.pop_front() {
                    Some(slot) => slot,
                    None => {
                        state.running -= 1;
                        return;
                    }
                }
            };
            let call = lock(&slot).take();
            if let Some(call) = call {
                call();
            }
        }
    }
}

/// How many shared jobs one batch's quick calls use at most: the machine's cores.
fn shared_jobs() -> usize {
    static JOBS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *JOBS.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Runs the attempts of one batch of functions another node sent here (see
/// [`NodeHandle::batch_runner`](crate::NodeHandle::batch_runner)): the node is asked once
/// for what they need, and the calls without cost, timeout or start report run back to
/// back in a few shared blocking-pool jobs. Cheap to clone. Its attempts run on the
/// node's actix system (a `LocalSet`: the shared jobs are started by a local task).
#[derive(Clone)]
pub struct BatchRunner {
    node: crate::NodeHandle,
    parts: Shared<BoxFuture<'static, Option<NodeParts>>>,
    quick: Arc<QuickJobs>,
}

impl std::fmt::Debug for BatchRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchRunner")
            .field("node", &self.node.id())
            .finish_non_exhaustive()
    }
}

impl BatchRunner {
    pub(crate) fn new(node: crate::NodeHandle, coordinator: Addr<Coordinator>) -> Self {
        let parts = async move { coordinator.send(GetParts).await.ok() }
            .boxed()
            .shared();
        BatchRunner {
            node,
            parts,
            quick: Arc::new(QuickJobs {
                state: Mutex::default(),
                max_jobs: shared_jobs(),
            }),
        }
    }

    /// Runs one attempt, as [`NodeHandle::run_function`](crate::NodeHandle::run_function)
    /// does (and dropping the future stops it the same way).
    pub async fn run_function(&self, msg: RunFunction) -> Result<Ran, CallError> {
        // A reservation is made per attempt, under a requester of its own.
        if msg.function.cost().is_some_and(|c| !c.is_empty()) {
            return self.node.run_function(msg).await;
        }
        let Some(parts) = self.parts.clone().await else {
            return Err(CallError::Unavailable {
                code: msg.function.code().clone(),
                node: self.node.id().clone(),
                reason: "the node is stopping".to_owned(),
            });
        };
        run_with(&parts, msg).await
    }

    /// Starts the calls of one DAG's functions from a batch that have no cost, no timeout
    /// and no start report, with their arguments at hand: they run back to back in the
    /// batch's shared blocking-pool jobs (a call not started within a short while gets a
    /// job of its own), and [`QuickRun::next_chunk`] yields their outcomes as they end,
    /// each result stored here first. Dropping the [`QuickRun`] stops the calls not
    /// started yet and tells the running ones (their `is_cancelled()` turns true).
    pub async fn run_quick(&self, dag: DagId, calls: Vec<QuickCall>) -> QuickRun {
        let parts = self.parts.clone().await;
        let n = calls.len();
        let (tx, outcomes) = tokio::sync::mpsc::channel(n.max(1));
        let attempt = Arc::new(AtomicBool::new(false));
        let mut run = QuickRun {
            dag: dag.clone(),
            ids: Vec::with_capacity(n),
            codes: Vec::with_capacity(n),
            ended: vec![false; n],
            settled: Vec::new(),
            slots: Vec::with_capacity(n),
            outcomes,
            left: n,
            fallback: None,
            stop: StopOnDrop {
                flag: Arc::clone(&attempt),
                ended: false,
            },
            parts: None,
            storing: None,
            node: self.node.id().clone(),
        };
        let Some(parts) = parts else {
            for (i, call) in calls.into_iter().enumerate() {
                let error = CallError::Unavailable {
                    code: call.function.code().clone(),
                    node: self.node.id().clone(),
                    reason: "the node is stopping".to_owned(),
                };
                run.ids.push(call.function.id().clone());
                run.codes.push(call.function.code().clone());
                run.settled.push((i, Err(error)));
            }
            return run;
        };
        let token_run = Arc::new(AtomicBool::new(false));
        for (i, call) in calls.into_iter().enumerate() {
            let QuickCall {
                function,
                inline,
                values,
            } = call;
            let code = function.code().clone();
            run.ids.push(function.id().clone());
            run.codes.push(code.clone());
            if let Err(error) = parts.registry.get(code.as_str()) {
                run.settled.push((i, Err(error)));
                continue;
            }
            let token = CancellationToken {
                run: Arc::clone(&token_run),
                attempt: Arc::clone(&attempt),
            };
            let registry = Arc::clone(&parts.registry);
            let (flag, tx) = (Arc::clone(&attempt), tx.clone());
            let span = tracing::debug_span!("attempt", dag = %dag, function = %function.id(), node = %parts.node);
            let call: Box<dyn FnOnce() + Send> = Box::new(move || {
                // Skipped once the run was dropped (nobody waits for it).
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                let _entered = span.enter();
                CURRENT.with(|c| *c.borrow_mut() = Some(token));
                let _scope = TokenScope;
                // The registry catches the user code's panics; this catches the rest, so
                // that a shared job goes on with the next call.
                let work = || {
                    let value = registry.evaluate(&function, &inline, &values)?;
                    let encoded = value.to_msgpack().map_err(|error| CallError::Failed {
                        code: function.code().clone(),
                        message: format!("the result cannot be sent to other nodes: {error}"),
                    })?;
                    Ok(Ran {
                        value,
                        encoded: Some(encoded),
                    })
                };
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                    .unwrap_or_else(|payload| {
                        Err(CallError::Panicked {
                            code: code.clone(),
                            message: handoff_core::panic_message(&*payload),
                        })
                    });
                // Room for every call's outcome: this never fails for want of room.
                let _ = tx.try_send((i, outcome));
            });
            run.slots.push(Arc::new(Mutex::new(Some(call))));
        }
        drop(tx);
        if !run.slots.is_empty() {
            self.quick.submit_all(run.slots.iter().cloned());
            run.fallback = Some(Box::pin(tokio::time::sleep(QUICK_START)));
        }
        run.parts = Some(parts);
        run
    }
}

/// A function of a batch to run in the batch's shared jobs (see
/// [`BatchRunner::run_quick`]): no cost, no timeout, no start report.
#[derive(Debug)]
pub struct QuickCall {
    /// The function.
    pub function: Function,
    /// The inline functions among its arguments (and theirs).
    pub inline: Vec<Function>,
    /// The values of its regular dependencies, by function id.
    pub values: HashMap<FunctionId, Value>,
}

/// A quick call's outcome, by its position among the run's calls.
pub type QuickOutcome = (usize, Result<Ran, CallError>);

/// Stores a chunk of results (see [`store_all_here`]).
type StoreFuture = BoxFuture<'static, Result<(), MailboxError>>;

/// The quick calls of one DAG from one batch, running (see [`BatchRunner::run_quick`]).
pub struct QuickRun {
    dag: DagId,
    ids: Vec<FunctionId>,
    codes: Vec<handoff_core::CodeName>,
    ended: Vec<bool>,
    /// Outcomes known before the calls ran (an unknown code, a stopping node).
    settled: Vec<QuickOutcome>,
    slots: Vec<QuickSlot>,
    outcomes: tokio::sync::mpsc::Receiver<QuickOutcome>,
    left: usize,
    /// When it fires, the calls not started yet get jobs of their own.
    fallback: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    stop: StopOnDrop,
    parts: Option<NodeParts>,
    /// A chunk received and being stored (see [`QuickRun::next_chunk`]).
    storing: Option<(Vec<QuickOutcome>, StoreFuture)>,
    /// This node.
    node: NodeId,
}

impl std::fmt::Debug for QuickRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuickRun")
            .field("dag", &self.dag)
            .field("calls", &self.ids.len())
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

impl QuickRun {
    /// How many calls have not yielded their outcome yet.
    pub fn left(&self) -> usize {
        self.left
    }

    /// The outcomes of the calls that ended since the last chunk (by their position in
    /// the calls given to [`BatchRunner::run_quick`]), waiting for at least one; `None`
    /// once every outcome was yielded. The results among them are stored here (one
    /// message for them all) before they are yielded. Cancel-safe: a chunk received but
    /// not yet stored when the future is dropped is yielded by the next call.
    pub async fn next_chunk(&mut self) -> Option<Vec<QuickOutcome>> {
        if self.storing.is_none() {
            if self.left == 0 {
                return None;
            }
            let chunk = self.receive().await;
            let values: Vec<_> = chunk
                .iter()
                .filter_map(|(i, outcome)| {
                    let ran = outcome.as_ref().ok()?;
                    Some((self.ids[*i].clone(), ran.value.clone(), ran.encoded.clone()))
                })
                .collect();
            let store = match (&self.parts, values.is_empty()) {
                (Some(parts), false) => {
                    let (parts, dag) = (parts.clone(), self.dag.clone());
                    async move { store_all_here(&parts, dag, values).await }.boxed()
                }
                _ => futures::future::ready(Ok(())).boxed(),
            };
            self.storing = Some((chunk, store));
        }
        let stored = match &mut self.storing {
            Some((_, store)) => store.await,
            None => Ok(()),
        };
        let (mut chunk, _) = self.storing.take()?;
        if stored.is_err() {
            for (i, outcome) in &mut chunk {
                if outcome.is_ok() {
                    *outcome = Err(CallError::Unavailable {
                        code: self.codes[*i].clone(),
                        node: self.node.clone(),
                        reason: "the node is stopping".to_owned(),
                    });
                }
            }
        }
        self.left -= chunk.len();
        if self.left == 0 {
            self.stop.ended = true;
            self.slots.clear();
        }
        Some(chunk)
    }

    /// The outcomes that came in since the last call, waiting for at least one (and
    /// starting the calls still waiting in jobs of their own once [`QUICK_START`] has
    /// passed). Cancel-safe.
    async fn receive(&mut self) -> Vec<QuickOutcome> {
        let mut chunk = std::mem::take(&mut self.settled);
        while chunk.is_empty() {
            let fallback = async {
                match &mut self.fallback {
                    Some(sleep) => sleep.await,
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                received = self.outcomes.recv_many(&mut chunk, self.left) => {
                    if received == 0 {
                        // Every sender is gone without an outcome: the calls were dropped
                        // unrun (the blocking pool shut down).
                        for i in 0..self.ended.len() {
                            if !self.ended[i] {
                                let error = CallError::Unavailable {
                                    code: self.codes[i].clone(),
                                    node: self.node.clone(),
                                    reason: "the node is stopping".to_owned(),
                                };
                                chunk.push((i, Err(error)));
                            }
                        }
                    }
                }
                () = fallback => {
                    self.fallback = None;
                    for slot in &self.slots {
                        let waiting = lock(slot).take();
                        if let Some(call) = waiting {
                            drop(tokio::task::spawn_blocking(call));
                        }
                    }
                }
            }
        }
        for (i, _) in &chunk {
            self.ended[*i] = true;
        }
        chunk
    }
}
