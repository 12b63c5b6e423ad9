//! The network side of remote execution: [`NetTransport`] implements the actors'
//! [`Transport`] over request-response, and [`serve_executes`] runs what other nodes send.
//!
//! A function sent to another node is queued for it; a task per peer sends what is queued
//! as one [`Request::ExecuteBatch`] whenever one of the peer's request slots is free, so
//! many small functions share an exchange (and a burst fills the next batch while the
//! current ones are in flight). Each function names where its arguments live. The
//! receiver runs them under its own reservation and answers with the outcome of those that
//! ended within [`QUICK_ANSWER`] and [`ExecuteAnswer::Accepted`] for the others, whose
//! outcomes it reports later, batched the same way, with [`Request::FinishedBatch`] (so a
//! long function never runs into the request timeout). Results stay where they were made;
//! a small one (at most [`INLINE_RESULT_BYTES`] encoded) also comes back inside the
//! report, because a fetch round trip costs far more than carrying a few kilobytes, and
//! travels inline to the nodes that consume it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::{BoxFuture, Shared};
use handoff_actors::{
    BatchRunner, FetchFailed, GetLocal, HostedStage, NodeHandle, QuickCall, QuickRun, Ran,
    RemoteArgument, RemoteCall, RemoteDone, RemoteResult, RunFunction, StageAnswer, StageCall,
    StageKey, StoreValue, Transport,
};
use handoff_core::{CallError, CodeName, DagId, FunctionId, NodeId, Value};
use tokio::sync::Semaphore;

use crate::client::{Client, ResponseChannel};
use crate::error::{FetchError, RequestError};
use crate::protocol::{
    ArgumentSource, ExecuteAnswer, ExecuteRequest, FinishedReport, Outcome, Request, Response,
    RpcError, StageRunRequest,
};

/// Results up to this size (MessagePack bytes) come back inside the completion report
/// and travel inline to their consumers: below it, a fetch round trip (~0.3 ms on
/// loopback) costs more than carrying the bytes.
pub const INLINE_RESULT_BYTES: usize = 16 * 1024;

/// True when a request failed only because the peer (or the way to it) is saturated:
/// too many requests in flight to it, or its event queue is full.
fn saturated(error: &RequestError) -> bool {
    matches!(
        error,
        RequestError::TooManyInFlight { .. }
            | RequestError::Remote {
                error: RpcError::Busy { .. },
                ..
            }
    )
}

/// Tells `node` to forget `dag` (an execution's id there), logging a failure.
async fn tell_forget(inner: &Inner, node: &NodeId, dag: DagId) {
    if let Err(error) = request_patiently(inner, node, Request::Forget { dag }).await {
        tracing::debug!(%node, "could not tell the node to forget a DAG: {error}");
    }
}

/// Whether a request failed for a reason that may pass (the connection, the time, the
/// peer's load), so that sending it again may succeed.
fn passing(error: &RequestError) -> bool {
    match error {
        RequestError::DialFailure { .. }
        | RequestError::Timeout { .. }
        | RequestError::ConnectionClosed { .. } => true,
        RequestError::Io { source, .. } => crate::FrameError::of(source).is_none(),
        other => saturated(other),
    }
}

/// The first wait before a report that could not be sent is sent again; each later wait
/// is twice the one before, up to [`MAX_REPORT_RETRY`].
const FIRST_REPORT_RETRY: Duration = Duration::from_millis(50);

/// The longest wait between two sends of a report.
const MAX_REPORT_RETRY: Duration = Duration::from_secs(2);

/// Sends a request, waiting and trying again while the peer is saturated (the per-peer
/// cap on requests in flight fails fast; many functions in flight to one node hit it).
async fn request_patiently(
    inner: &Inner,
    node: &NodeId,
    request: Request,
) -> Result<Response, RequestError> {
    let gate = gate(inner, node);
    // Held until the answer is in; the semaphore is never closed.
    let _permit = gate.acquire().await;
    while_saturated(|| inner.client.request(node, request.clone()), saturated).await
}

/// Runs `attempt` again, after a short pause that doubles each time (up to 20 ms), while it
/// fails with an error `is_saturated` accepts, for at most [`PATIENCE`].
async fn while_saturated<T, E, F, Fut>(
    mut attempt: F,
    is_saturated: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut pause = Duration::from_micros(100);
    loop {
        match attempt().await {
            Err(error) if is_saturated(&error) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            outcome => return outcome,
        }
    }
}

/// How long an attempt whose execute request lost its connection waits for the node's
/// departure (or its report) before it counts as unavailable.
const DEPARTURE_WAIT: Duration = Duration::from_secs(5);

/// How long a saturated peer is tried again ([`while_saturated`]).
const PATIENCE: Duration = Duration::from_secs(30);

/// What identifies one remote attempt: the node running it, the DAG, the function and
/// the attempt number.
type AttemptKey = (NodeId, DagId, FunctionId, u32);

type Fetching = Shared<BoxFuture<'static, Result<Value, FetchFailed>>>;

/// Counts of the values this node moved over the network.
#[derive(Debug, Default)]
pub(crate) struct Transfers {
    fetched: AtomicU64,
    fetched_bytes: AtomicU64,
    inline_received: AtomicU64,
}

/// A snapshot of what a node fetched from other nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Values fetched from other nodes (each at most once per DAG while held here).
    pub values_fetched: u64,
    /// Their total size in MessagePack bytes.
    pub bytes_fetched: u64,
    /// Small results that came back inside completion reports.
    pub inline_results: u64,
}

/// The executions of one DAG this node serves: who coordinates it, and the tasks serving
/// its functions (aborted when it is forgotten).
struct Served {
    coordinator: NodeId,
    tasks: HashMap<u64, Option<tokio::task::AbortHandle>>,
}

/// A remote attempt waiting for its report.
struct Pending {
    /// Its code (for errors).
    code: CodeName,
    /// Whether the node confirmed that the call started.
    started: bool,
    reply: Reply,
}

/// Where a remote attempt's outcome goes.
enum Reply {
    /// To the future [`Transport::execute`] returned.
    Future(oneshot::Sender<RemoteResult>),
    /// To the callback given to [`Transport::execute_then`].
    Call(Callback),
}

impl Reply {
    fn send(self, result: RemoteResult) {
        match self {
            // Nobody waits when the future was dropped.
            Reply::Future(tx) => {
                let _ = tx.send(result);
            }
            Reply::Call(mut callback) => {
                if let Some(done) = callback.done.take() {
                    done(result);
                }
            }
        }
    }
}

/// A callback waiting for an attempt's outcome. Dropped unsettled (the network layer
/// stopped with the attempt pending), it reports the attempt unavailable, as the future
/// of [`Transport::execute`] does when its sender is dropped: its run never waits forever.
struct Callback {
    done: Option<Box<dyn FnOnce(RemoteResult) + Send>>,
    code: CodeName,
    node: NodeId,
}

impl Drop for Callback {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done(Err(network_stopped(self.code.clone(), self.node.clone())));
        }
    }
}

/// The error of an attempt the stopped network layer can no longer settle.
fn network_stopped(code: CodeName, node: NodeId) -> CallError {
    CallError::Unavailable {
        code,
        node,
        reason: "the network layer stopped".to_owned(),
    }
}

/// The attempts waiting for their reports (ids hashed with foldhash: two inserts and
/// look-ups per remote function).
type PendingMap = HashMap<AttemptKey, Pending, foldhash::fast::RandomState>;

struct Inner {
    local: NodeId,
    client: Client,
    node: NodeHandle,
    /// Remote attempts waiting for their report.
    pending: Mutex<PendingMap>,
    /// Fetches in flight, shared by everyone here who needs the same value.
    fetching: Mutex<HashMap<(DagId, FunctionId), Fetching>>,
    /// The most bytes of values to carry inline in one execute request.
    inline_budget: usize,
    /// Work this node does for executions coordinated elsewhere, by DAG.
    served: Mutex<HashMap<DagId, Served>>,
    next_task: AtomicU64,
    /// Peers that left and have not come back.
    gone: Mutex<std::collections::HashSet<NodeId>>,
    /// How long the values and pending work of a departed coordinator's executions are
    /// kept, in case it comes back.
    grace: Duration,
    /// Per peer, the execute/report/forget requests that may be in flight at once: half
    /// the network's per-peer cap, leaving the rest to value fetches.
    gates: Mutex<HashMap<NodeId, Arc<Semaphore>>>,
    gate_permits: usize,
    /// Functions waiting to be sent to each node.
    executes: Outbox<(AttemptKey, ExecuteRequest)>,
    /// Reports waiting to be sent to each coordinator.
    reports: Outbox<FinishedReport>,
    /// The most bytes (estimated) of functions in one execute request.
    batch_bytes: usize,
    /// The request frame limit: every execute request is measured against it before it
    /// is sent ([`fit_frames`]).
    max_request_bytes: usize,
    transfers: Transfers,
    /// Stage workers other nodes' streams placed here, by the stream's node and worker.
    hosted: Mutex<HashMap<(NodeId, StageKey), Hosted>>,
    /// The ids this node's executions go by on other nodes ([`RunIds`]).
    runs: Mutex<RunIds>,
    /// The names nodes announced (this node's own included), for reports: at most
    /// [`MAX_NAMES`].
    names: Mutex<HashMap<NodeId, String>>,
    /// Forget requests in flight for late reports of ended executions
    /// ([`NetTransport::forget_if_ended`]), at most [`MAX_LATE_FORGETS`].
    late_forgets: AtomicUsize,
    /// The node is draining: new work from other nodes is refused.
    draining: std::sync::atomic::AtomicBool,
}

/// The most node names remembered (each node announced in the cluster's life).
const MAX_NAMES: usize = 4096;

/// The most forget requests for late reports in flight at once.
const MAX_LATE_FORGETS: usize = 256;

/// The executions this node coordinates that reached other nodes: by DAG id, the ids
/// they go by there (`dag~this-node~` and 128 random bits, chosen by the execution),
/// from the first function sent until the other nodes are told to forget it. So on
/// every other node the state of one execution is its own: two coordinators' DAGs of
/// the same id, or two executions of one DAG, never meet, and an id nobody was told
/// cannot be guessed. Here, the execution keeps the DAG's own id.
#[derive(Default)]
struct RunIds {
    by_dag: HashMap<DagId, Vec<DagId>>,
}

/// The node an execution's id on the wire says owns it (`dag~owner~token`), if the id
/// has that form.
pub(crate) fn owner_of(wire: &DagId) -> Option<&str> {
    let mut parts = wire.as_str().rsplitn(3, '~');
    let token = parts.next()?;
    let owner = parts.next()?;
    parts.next()?;
    (token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit()) && !owner.is_empty())
        .then_some(owner)
}

/// A stage worker hosted here: opened by the first request that names it, then used by
/// one request at a time (its stream sends a worker's batches one after the other).
type Hosted = Arc<tokio::sync::Mutex<Option<HostedStage>>>;

/// The most stage workers one peer's streams may have open here at once.
const MAX_HOSTED_PER_PEER: usize = 1024;

/// The [`Transport`] of a cluster node. Cheap to clone.
#[derive(Clone)]
pub(crate) struct NetTransport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NetTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetTransport")
            .field("local", &self.inner.local)
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// The DAG id of an execution coordinated here, from the id it goes by on the wire.
    fn own_dag(&self, wire: &DagId) -> Option<DagId> {
        let owner = owner_of(wire)?;
        if owner != self.local.as_str() {
            return None;
        }
        let cut = wire.as_str().len() - owner.len() - 32 - 2;
        Some(DagId::new(&wire.as_str()[..cut]))
    }

    /// Records that an execution coordinated here sends work out under `wire` (once per
    /// execution, through [`Transport::open`]).
    fn sending(&self, wire: &DagId) {
        if let Some(dag) = self.own_dag(wire) {
            let mut runs = lock(&self.runs);
            let wires = runs.by_dag.entry(dag).or_default();
            if !wires.contains(wire) {
                wires.push(wire.clone());
            }
        }
    }

    /// What `dag` is called here: an execution coordinated here keeps its DAG's own id
    /// here; anything else is as named.
    fn local_id(&self, dag: &DagId) -> DagId {
        self.own_dag(dag).unwrap_or_else(|| dag.clone())
    }

    /// What to ask another node for by `dag`: as named when it is already an
    /// execution's id on the wire; for a DAG coordinated here, its latest execution's id
    /// there; else `dag` itself (values stored by hand).
    fn outgoing_id(&self, dag: &DagId) -> DagId {
        if owner_of(dag).is_some() {
            return dag.clone();
        }
        lock(&self.runs)
            .by_dag
            .get(dag)
            .and_then(|wires| wires.last().cloned())
            .unwrap_or_else(|| dag.clone())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps stay consistent whatever panicked while holding them.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl NetTransport {
    pub(crate) fn new(
        client: Client,
        node: NodeHandle,
        max_request_bytes: u32,
        max_in_flight_per_peer: usize,
        grace: Duration,
    ) -> Self {
        let (local_id, local_name) = (node.id().clone(), client.name().to_owned());
        NetTransport {
            inner: Arc::new(Inner {
                local: node.id().clone(),
                client,
                node,
                pending: Mutex::new(PendingMap::default()),
                fetching: Mutex::new(HashMap::new()),
                inline_budget: max_request_bytes as usize / 4,
                served: Mutex::new(HashMap::new()),
                next_task: AtomicU64::new(0),
                gone: Mutex::new(std::collections::HashSet::new()),
                grace,
                gates: Mutex::new(HashMap::new()),
                gate_permits: (max_in_flight_per_peer / 2).max(1),
                executes: Outbox::new(),
                reports: Outbox::new(),
                batch_bytes: max_request_bytes as usize / 2,
                max_request_bytes: max_request_bytes as usize,
                transfers: Transfers::default(),
                hosted: Mutex::new(HashMap::new()),
                runs: Mutex::new(RunIds::default()),
                late_forgets: AtomicUsize::new(0),
                draining: std::sync::atomic::AtomicBool::new(false),
                names: Mutex::new(HashMap::from([(local_id, local_name)])),
            }),
        }
    }

    pub(crate) fn transfers(&self) -> TransferStats {
        let t = &self.inner.transfers;
        TransferStats {
            values_fetched: t.fetched.load(Ordering::Relaxed),
            bytes_fetched: t.fetched_bytes.load(Ordering::Relaxed),
            inline_results: t.inline_received.load(Ordering::Relaxed),
        }
    }

    /// Queues one attempt for its node; `reply` gets its outcome.
    fn enqueue(&self, call: RemoteCall, reply: Reply) {
        let inner = Arc::clone(&self.inner);
        let code = call.function.code().clone();
        let node = call.node.clone();
        let key: AttemptKey = (
            node.clone(),
            call.dag.clone(),
            call.function.id().clone(),
            call.attempt,
        );
        let pending = Pending {
            code,
            started: false,
            reply,
        };
        lock(&inner.pending).insert(key.clone(), pending);
        let mut budget = inner.inline_budget;
        // What the request will weigh on the wire, roughly: its constants and inline values
        // (what can be large) and a little for the rest.
        let mut bytes = REQUEST_OVERHEAD_BYTES + encoded_len(call.function.extra_args());
        for function in &call.inline {
            bytes += REQUEST_OVERHEAD_BYTES + encoded_len(function.extra_args());
        }
        let arguments = call
            .arguments
            .into_iter()
            .map(|argument| match argument {
                RemoteArgument::Held { function, node } => {
                    ArgumentSource::Remote { function, node }
                }
                RemoteArgument::Value {
                    function,
                    node,
                    value,
                } => {
                    let size = value.to_msgpack().map_or(usize::MAX, |b| b.len());
                    if size <= budget {
                        budget -= size;
                        bytes += size;
                        ArgumentSource::Inline { function, value }
                    } else {
                        ArgumentSource::Remote { function, node }
                    }
                }
            })
            .collect();
        let request = ExecuteRequest {
            dag: call.dag,
            function: call.function,
            inline: call.inline,
            arguments,
            attempt: call.attempt,
            timeout_ms: call
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            report_start: call.report_start,
        };
        if inner.executes.push(&node, (key, request), bytes) {
            tokio::spawn(send_executes(Arc::clone(&inner), node));
        }
    }

    /// A report from `from` arrived: settles the attempt waiting for it.
    pub(crate) fn finished(&self, from: &NodeId, report: FinishedReport) {
        let key = (from.clone(), report.dag, report.function, report.attempt);
        let Some(Pending { reply, .. }) = lock(&self.inner.pending).remove(&key) else {
            tracing::debug!(node = %from, function = %key.2, "a report for no attempt waiting");
            self.forget_if_ended(from, &key.1);
            return;
        };
        let result = match report.outcome {
            Outcome::Stored { value, size } => {
                if value.is_some() {
                    self.inner
                        .transfers
                        .inline_received
                        .fetch_add(1, Ordering::Relaxed);
                }
                Ok(RemoteDone { value, size })
            }
            Outcome::Failed { error } => Err(error),
        };
        reply.send(result);
    }

    /// A late report of an execution coordinated here that has ended (an attempt that
    /// ran on after its node was frozen or cut off, and was run again elsewhere): `from`
    /// still holds its value, and nothing else will tell it to drop it, so it is told to
    /// forget the execution now. (A report of an execution still running is left to the
    /// execution: it tells every node it sent work to, lost ones included, when it ends.)
    fn forget_if_ended(&self, from: &NodeId, wire: &DagId) {
        let Some(dag) = self.inner.own_dag(wire) else {
            return;
        };
        let running = lock(&self.inner.runs)
            .by_dag
            .get(&dag)
            .is_some_and(|wires| wires.contains(wire));
        if running {
            return;
        }
        // Bounded: forged reports cannot make this node send without limit.
        let in_flight = &self.inner.late_forgets;
        if in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_LATE_FORGETS {
            in_flight.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(node = %from, dag = %wire, "a late report of an ended execution: too many forgets in flight");
            return;
        }
        tracing::debug!(node = %from, dag = %wire, "a late report of an ended execution: telling the node to forget it");
        let (inner, node, dag) = (Arc::clone(&self.inner), from.clone(), wire.clone());
        spawn_detached("tell a node to forget an ended execution", async move {
            tell_forget(&inner, &node, dag).await;
            inner.late_forgets.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// Settles the attempt `key` with the error `error` makes of its code, if it still
    /// waits.
    fn settle(&self, key: &AttemptKey, error: impl FnOnce(CodeName) -> CallError) {
        let waiting = lock(&self.inner.pending).remove(key);
        if let Some(Pending { code, reply, .. }) = waiting {
            reply.send(Err(error(code)));
        }
    }

    /// Queues the report of a function that ended after its request was answered.
    fn report_late(&self, coordinator: &NodeId, report: FinishedReport) {
        let bytes = match &report.outcome {
            Outcome::Stored {
                size,
                value: Some(_),
            } => REQUEST_OVERHEAD_BYTES + usize::try_from(*size).unwrap_or(usize::MAX),
            _ => REQUEST_OVERHEAD_BYTES,
        };
        if self.inner.reports.push(coordinator, report, bytes) {
            tokio::spawn(send_reports(Arc::clone(&self.inner), coordinator.clone()));
        }
    }

    /// `node` left: every attempt it was running fails (to be retried elsewhere), and the
    /// executions it coordinated here are dropped if it does not come back in time.
    pub(crate) fn node_gone(&self, node: &NodeId) {
        lock(&self.inner.gone).insert(node.clone());
        // Its streams' workers here: nobody sends them items any more.
        let dropped = {
            let mut hosted = lock(&self.inner.hosted);
            let before = hosted.len();
            hosted.retain(|(from, _), _| from != node);
            before - hosted.len()
        };
        if dropped > 0 {
            tracing::info!(%node, workers = dropped, "its streams' stage workers here closed: it left");
        }
        self.orphan_after_grace(node);
        let gone: Vec<_> = {
            let mut pending = lock(&self.inner.pending);
            let keys: Vec<AttemptKey> = pending.keys().filter(|k| &k.0 == node).cloned().collect();
            keys.into_iter()
                .filter_map(|k| pending.remove(&k))
                .collect()
        };
        for pending in gone {
            pending.reply.send(Err(CallError::NodeLost {
                code: pending.code,
                node: node.clone(),
                running: pending.started,
            }));
        }
    }

    /// Records a task serving a function of `dag` for `coordinator`; returns its id.
    pub(crate) fn track(&self, dag: &DagId, coordinator: &NodeId) -> u64 {
        let id = self.inner.next_task.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.served)
            .entry(dag.clone())
            .or_insert_with(|| Served {
                coordinator: coordinator.clone(),
                tasks: HashMap::new(),
            })
            .tasks
            .insert(id, None);
        id
    }

    /// From now on, refuses new work from other nodes (the node drains).
    pub(crate) fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
    }

    /// True once the node drains.
    pub(crate) fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    /// How many tasks serve other nodes' functions here.
    pub(crate) fn serving(&self) -> u64 {
        lock(&self.inner.served)
            .values()
            .map(|s| s.tasks.len() as u64)
            .sum()
    }

    /// Keeps the handle that aborts task `id` (unless it has ended already).
    pub(crate) fn set_abort(&self, dag: &DagId, id: u64, abort: tokio::task::AbortHandle) {
        if let Some(served) = lock(&self.inner.served).get_mut(dag)
            && let Some(slot) = served.tasks.get_mut(&id)
        {
            *slot = Some(abort);
        }
    }

    /// Task `id` has ended.
    pub(crate) fn untrack(&self, dag: &DagId, id: u64) {
        if let Some(served) = lock(&self.inner.served).get_mut(dag) {
            served.tasks.remove(&id);
        }
    }

    /// What a peer's request names `dag` on this node (see [`RunIds`]).
    pub(crate) fn local_id(&self, dag: &DagId) -> DagId {
        self.inner.local_id(dag)
    }

    /// True when `dag` is the DAG id of an execution coordinated here that reached other
    /// nodes: only this node may change it, and other nodes know it by another id.
    pub(crate) fn coordinates(&self, dag: &DagId) -> bool {
        lock(&self.inner.runs).by_dag.contains_key(dag)
    }

    /// Stops serving `dag`: aborts the tasks still serving its functions (their
    /// reservations are withdrawn and nothing more is stored).
    pub(crate) fn stop_serving(&self, dag: &DagId) {
        let served = lock(&self.inner.served).remove(dag);
        for abort in served
            .into_iter()
            .flat_map(|s| s.tasks.into_values())
            .flatten()
        {
            abort.abort();
        }
    }

    /// Runs a batch of a stage worker `from`'s stream placed here, opening the worker
    /// (and running its init code) if this is its first request.
    pub(crate) async fn serve_stage(&self, from: &NodeId, request: StageRunRequest) -> Response {
        let StageRunRequest { key, spec, items } = request;
        let slot = {
            let mut hosted = lock(&self.inner.hosted);
            let id = (from.clone(), key);
            match hosted.get(&id) {
                Some(slot) => Arc::clone(slot),
                None => {
                    let open = hosted.keys().filter(|(f, _)| f == from).count();
                    if open >= MAX_HOSTED_PER_PEER {
                        return Response::Error(RpcError::TooManyStages {
                            limit: MAX_HOSTED_PER_PEER as u32,
                        });
                    }
                    let slot: Hosted = Arc::default();
                    hosted.insert(id, Arc::clone(&slot));
                    slot
                }
            }
        };
        let mut worker = slot.lock().await;
        if worker.is_none() {
            let function = spec.function.id().clone();
            match self.inner.node.open_stage(&spec).await {
                Ok(opened) => *worker = Some(opened),
                Err(error) => {
                    drop(worker);
                    lock(&self.inner.hosted).retain(|_, s| !Arc::ptr_eq(s, &slot));
                    return Response::Error(RpcError::StageNotOpened {
                        function,
                        error: Box::new(error),
                    });
                }
            }
        }
        match worker.as_mut() {
            Some(worker) => Response::StageRan(worker.run(items).await),
            None => Response::Error(RpcError::ShuttingDown),
        }
    }

    /// Closes a stage worker `from`'s stream placed here.
    pub(crate) fn close_hosted(&self, from: &NodeId, key: StageKey) {
        lock(&self.inner.hosted).remove(&(from.clone(), key));
    }

    /// How many stage workers of other nodes' streams are open here.
    pub(crate) fn hosted_stages(&self) -> u64 {
        lock(&self.inner.hosted).len() as u64
    }

    /// True when `node` left the cluster and has not come back.
    pub(crate) fn is_gone(&self, node: &NodeId) -> bool {
        lock(&self.inner.gone).contains(node)
    }

    /// `node` announced itself as `name`.
    pub(crate) fn set_name(&self, node: &NodeId, name: &str) {
        let mut names = lock(&self.inner.names);
        if names.get(node).map(String::as_str) == Some(name) {
            return;
        }
        if names.len() < MAX_NAMES || names.contains_key(node) {
            names.insert(node.clone(), name.to_owned());
        }
    }

    /// A peer is announced again: it is not gone any more.
    pub(crate) fn node_back(&self, node: &NodeId) {
        lock(&self.inner.gone).remove(node);
    }

    /// After the grace period, if `coordinator` has not come back, drops the work and
    /// values of the executions it coordinated here.
    fn orphan_after_grace(&self, coordinator: &NodeId) {
        let dags = self.served_for(|c| c == coordinator);
        if dags.is_empty() {
            return;
        }
        let (transport, coordinator) = (self.clone(), coordinator.clone());
        actix::spawn(async move {
            tokio::time::sleep(transport.inner.grace).await;
            if lock(&transport.inner.gone).contains(&coordinator) {
                transport.drop_served(&dags, "its coordinator left").await;
            }
        });
    }

    /// Drops at once the work and values of executions whose coordinator has left (what
    /// [`Self::orphan_after_grace`] does after the grace period): a draining node leaves,
    /// so they would be lost anyway, and nobody is left to fetch them.
    pub(crate) async fn drop_orphaned(&self) {
        let dags = {
            let gone = lock(&self.inner.gone);
            self.served_for(|c| gone.contains(c))
        };
        self.drop_served(&dags, "draining, and its coordinator left")
            .await;
    }

    /// The executions served here whose coordinator `pick` chooses.
    fn served_for(&self, pick: impl Fn(&NodeId) -> bool) -> Vec<DagId> {
        lock(&self.inner.served)
            .iter()
            .filter(|(_, s)| pick(&s.coordinator))
            .map(|(dag, _)| dag.clone())
            .collect()
    }

    /// Stops serving `dags` and drops their values here, logging `why`.
    async fn drop_served(&self, dags: &[DagId], why: &str) {
        for dag in dags {
            tracing::info!(%dag, "{why}: dropping its work and values here");
            self.stop_serving(dag);
            if let Err(error) = self.inner.node.drop_dag(dag.clone()).await {
                tracing::debug!(%dag, "could not drop the values: {error}");
            }
        }
    }

    /// `from` says an attempt it was sent is about to call its code.
    pub(crate) fn started(&self, from: &NodeId, dag: DagId, function: FunctionId, attempt: u32) {
        let key = (from.clone(), dag, function, attempt);
        if let Some(pending) = lock(&self.inner.pending).get_mut(&key) {
            pending.started = true;
        }
    }

    fn fetch_shared(&self, dag: DagId, function: FunctionId, holder: NodeId) -> Fetching {
        let key = (dag.clone(), function.clone());
        let mut fetching = lock(&self.inner.fetching);
        if let Some(shared) = fetching.get(&key) {
            return shared.clone();
        }
        let inner = Arc::clone(&self.inner);
        let fetch = async move {
            let outcome = fetch_once(&inner, &dag, &function, &holder).await;
            lock(&inner.fetching).remove(&(dag, function));
            outcome
        };
        let shared = fetch.boxed().shared();
        fetching.insert(key, shared.clone());
        shared
    }
}

/// The value here if held, else fetched from `holder` and kept here for the next reader.
async fn fetch_once(
    inner: &Inner,
    dag: &DagId,
    function: &FunctionId,
    holder: &NodeId,
) -> Result<Value, FetchFailed> {
    let failed = |reason: String| FetchFailed {
        dag: dag.clone(),
        function: function.clone(),
        node: holder.clone(),
        reason,
    };
    // Exactly this id: another execution's value of the same DAG id is not this one.
    // (An execution coordinated here keeps its values, fetched ones too, under its
    // DAG's own id.)
    let here = inner.local_id(dag);
    let held = GetLocal {
        dag: here.clone(),
        id: function.clone(),
    };
    if let Ok(Some(value)) = inner.node.result_store().send(held).await {
        return Ok(value);
    }
    if holder == &inner.local {
        return Err(failed("it is not held here".to_owned()));
    }
    let wire = inner.outgoing_id(dag);
    let value = while_saturated(
        || inner.client.fetch_value(holder, &wire, function),
        |error| matches!(error, FetchError::Request(error) if saturated(error)),
    )
    .await
    .map_err(|error| failed(error.to_string()))?;
    let size = value.to_msgpack().map_or(0, |b| b.len() as u64);
    inner.transfers.fetched.fetch_add(1, Ordering::Relaxed);
    inner
        .transfers
        .fetched_bytes
        .fetch_add(size, Ordering::Relaxed);
    let cache = StoreValue {
        dag: here,
        id: function.clone(),
        value: value.clone(),
    };
    // A store that stopped only costs a second fetch later.
    let _ = inner.node.result_store().send(cache).await;
    Ok(value)
}

impl Transport for NetTransport {
    fn node_name(&self, node: &NodeId) -> Option<String> {
        lock(&self.inner.names).get(node).cloned()
    }

    fn isolation(&self) -> Option<String> {
        self.inner
            .client
            .handshake_failures()
            .map(|failures| failures.to_string())
    }

    fn execute(&self, call: RemoteCall) -> BoxFuture<'static, RemoteResult> {
        let (code, node) = (call.function.code().clone(), call.node.clone());
        let (reply, report) = oneshot::channel();
        self.enqueue(call, Reply::Future(reply));
        async move {
            report
                .await
                .unwrap_or_else(|_| Err(network_stopped(code, node)))
        }
        .boxed()
    }

    fn execute_then(&self, call: RemoteCall, done: Box<dyn FnOnce(RemoteResult) + Send>) {
        let callback = Callback {
            done: Some(done),
            code: call.function.code().clone(),
            node: call.node.clone(),
        };
        self.enqueue(call, Reply::Call(callback));
    }

    fn fetch(
        &self,
        dag: DagId,
        function: FunctionId,
        node: NodeId,
    ) -> BoxFuture<'static, Result<Value, FetchFailed>> {
        self.fetch_shared(dag, function, node).boxed()
    }

    fn open(&self, wire: &DagId) {
        self.inner.sending(wire);
    }

    fn forget(&self, dag: DagId, nodes: Vec<NodeId>) {
        // An execution's id on the wire is dropped with it; a DAG's id drops every
        // execution of it coordinated here (and values stored by hand under that id).
        let mut ids = Vec::new();
        {
            let mut runs = lock(&self.inner.runs);
            match self.inner.own_dag(&dag) {
                Some(own) => {
                    if let Some(wires) = runs.by_dag.get_mut(&own) {
                        wires.retain(|w| *w != dag);
                        if wires.is_empty() {
                            runs.by_dag.remove(&own);
                        }
                    }
                }
                None => ids.extend(runs.by_dag.remove(&dag).unwrap_or_default()),
            }
        }
        ids.push(dag);
        for dag in ids {
            for node in &nodes {
                let (inner, node, dag) = (Arc::clone(&self.inner), node.clone(), dag.clone());
                spawn_detached("tell a node to forget a DAG", async move {
                    tell_forget(&inner, &node, dag).await;
                });
            }
        }
    }

    fn run_stage(
        &self,
        call: StageCall,
    ) -> BoxFuture<'static, Result<Vec<StageAnswer>, CallError>> {
        let inner = Arc::clone(&self.inner);
        async move {
            let StageCall {
                node,
                key,
                spec,
                items,
            } = call;
            let code = spec.function.code().clone();
            let expected = items.len();
            let request = Request::StageRun(Box::new(StageRunRequest { key, spec, items }));
            let unavailable = |reason: String| CallError::Unavailable {
                code: code.clone(),
                node: node.clone(),
                reason,
            };
            match request_patiently(&inner, &node, request).await {
                Ok(Response::StageRan(answers)) if answers.len() == expected => Ok(answers),
                Ok(Response::StageRan(answers)) => Err(unavailable(format!(
                    "it answered {} results for {expected} items",
                    answers.len()
                ))),
                Err(RequestError::Remote {
                    error: RpcError::StageNotOpened { error, .. },
                    ..
                }) => Err(*error),
                Ok(other) => Err(unavailable(format!(
                    "it answered {} to a stage request",
                    other.kind()
                ))),
                Err(error) => Err(unavailable(error.to_string())),
            }
        }
        .boxed()
    }

    fn close_stage(&self, node: NodeId, key: StageKey) {
        let inner = Arc::clone(&self.inner);
        spawn_detached("close a stage worker", async move {
            if let Err(error) = request_patiently(&inner, &node, Request::StageClose { key }).await
            {
                tracing::debug!(%node, "could not close a stage worker there: {error}");
            }
        });
    }
}

/// Serves a batch of functions `from` sent here: each DAG's share of the batch runs in
/// one task (the functions without cost, timeout or start report in the batch's shared
/// blocking-pool jobs, their results stored together); the answer carries the outcomes
/// in within [`QUICK_ANSWER`] and [`ExecuteAnswer::Accepted`] for the others, reported
/// later.
pub(crate) fn serve_executes(
    transport: &NetTransport,
    from: NodeId,
    requests: Vec<Result<ExecuteRequest, RpcError>>,
    channel: ResponseChannel,
    single: bool,
) {
    // A single request's acceptance names the attempt.
    let accepted = match requests.first() {
        Some(Ok(request)) if single => Response::Accepted {
            dag: request.dag.clone(),
            function: request.function.id().clone(),
            attempt: request.attempt,
        },
        _ => Response::Ack,
    };
    let mut answers: Vec<Option<ExecuteAnswer>> = Vec::with_capacity(requests.len());
    let mut groups: Vec<(DagId, Vec<(usize, ExecuteRequest)>)> = Vec::new();
    for (position, request) in requests.into_iter().enumerate() {
        match request {
            Err(error) => answers.push(Some(ExecuteAnswer::Refused(error))),
            Ok(request) => {
                answers.push(None);
                match groups.iter_mut().find(|(dag, _)| *dag == request.dag) {
                    Some((_, group)) => group.push((position, request)),
                    None => groups.push((request.dag.clone(), vec![(position, request)])),
                }
            }
        }
    }
    // The batch's functions share one look-up of what running them needs, and its quick
    // calls share blocking-pool jobs.
    let runner = transport.inner.node.batch_runner();
    let mut waiting = Vec::with_capacity(groups.len());
    for (dag, group) in groups {
        let positions: Vec<usize> = group.iter().map(|(position, _)| *position).collect();
        let (tx, rx) = oneshot::channel();
        waiting.push((positions, rx));
        let id = transport.track(&dag, &from);
        let serving = {
            let (transport, from, runner) = (transport.clone(), from.clone(), runner.clone());
            let dag = dag.clone();
            actix::spawn(async move {
                serve_group(&transport, &runner, &from, group, tx).await;
                transport.untrack(&dag, id);
            })
        };
        transport.set_abort(&dag, id, serving.abort_handle());
    }
    let client = transport.inner.client.clone();
    actix::spawn(async move {
        let mut inline_left = MAX_INLINE_ANSWER_BYTES;
        for (positions, rx) in waiting {
            match rx.await {
                Ok(reports) => {
                    for (position, mut report) in reports {
                        strip_inline(&mut report, &mut inline_left);
                        answers[position] = Some(ExecuteAnswer::Finished(report));
                    }
                    // The others are reported later.
                    for position in positions {
                        answers[position].get_or_insert(ExecuteAnswer::Accepted);
                    }
                }
                // Its task was aborted: the DAG was forgotten here.
                Err(_) => {
                    for position in positions {
                        answers[position] = Some(ExecuteAnswer::Refused(RpcError::ShuttingDown));
                    }
                }
            }
        }
        let mut answers: Vec<ExecuteAnswer> = answers.into_iter().flatten().collect();
        let response = match (single, answers.pop()) {
            (true, Some(ExecuteAnswer::Finished(report))) => Response::Finished(report),
            (true, Some(ExecuteAnswer::Accepted)) => accepted,
            (true, Some(ExecuteAnswer::Refused(error))) => Response::Error(error),
            (_, last) => {
                answers.extend(last);
                Response::Executed(answers)
            }
        };
        // If this answer is lost, the sender learns nothing: it times out and runs the
        // functions again.
        if let Err(error) = client.respond(channel, response).await {
            tracing::debug!(node = %from, "could not answer an execute request: {error}");
        }
    });
}

/// Which function of a batch a quick call is: its position in the batch, and what its
/// report names.
struct QuickMeta {
    position: usize,
    function: FunctionId,
    attempt: u32,
}

/// Runs one DAG's share of a batch `from` sent (`group`: each function with its position
/// in the batch). The outcomes in within [`QUICK_ANSWER`] go to `answer`; the others are
/// reported later.
async fn serve_group(
    transport: &NetTransport,
    runner: &BatchRunner,
    from: &NodeId,
    group: Vec<(usize, ExecuteRequest)>,
    answer: oneshot::Sender<Vec<(usize, FinishedReport)>>,
) {
    let deadline = tokio::time::sleep(QUICK_ANSWER);
    tokio::pin!(deadline);
    let mut answer = Some(answer);
    let mut done: Vec<(usize, FinishedReport)> = Vec::new();
    let mut left = group.len();
    let mut slow = futures::stream::FuturesUnordered::new();
    let mut quick_calls = Vec::new();
    for (position, request) in group {
        let quick = request.timeout_ms.is_none()
            && !request.report_start
            && request.function.cost().is_none_or(|c| c.is_empty());
        if quick {
            quick_calls.push((position, request));
        } else {
            slow.push(async move {
                let report = run_execute(transport, runner, from, request).await;
                (position, report)
            });
        }
    }
    let mut prepare =
        (!quick_calls.is_empty()).then(|| Box::pin(prepare_quick(transport, runner, quick_calls)));
    let mut quick: Option<(QuickRun, Vec<QuickMeta>, DagId)> = None;
    // Where an outcome goes: into the answer while it is not sent, else a late report.
    let deliver = |position: usize,
                   report: FinishedReport,
                   answer: &Option<_>,
                   done: &mut Vec<(usize, FinishedReport)>| {
        if answer.is_some() {
            done.push((position, report));
        } else {
            transport.report_late(from, report);
        }
    };
    while left > 0 {
        let quick_left = quick.as_ref().is_some_and(|(run, _, _)| run.left() > 0);
        tokio::select! {
            prepared = async {
                match prepare.as_mut() {
                    Some(prepare) => prepare.await,
                    None => futures::future::pending().await,
                }
            }, if prepare.is_some() => {
                prepare = None;
                let (run, metas, dag, failed) = prepared;
                for (position, report) in failed {
                    left -= 1;
                    deliver(position, report, &answer, &mut done);
                }
                quick = Some((run, metas, dag));
            }
            Some((position, report)) = futures::StreamExt::next(&mut slow), if !slow.is_empty() => {
                left -= 1;
                deliver(position, report, &answer, &mut done);
            }
            chunk = async {
                match quick.as_mut() {
                    Some((run, _, _)) => run.next_chunk().await,
                    None => futures::future::pending().await,
                }
            }, if quick_left => {
                let Some((_, metas, dag)) = &quick else { continue };
                for (i, outcome) in chunk.into_iter().flatten() {
                    let meta = &metas[i];
                    let report = FinishedReport {
                        dag: dag.clone(),
                        function: meta.function.clone(),
                        attempt: meta.attempt,
                        outcome: ran_outcome(outcome),
                    };
                    left -= 1;
                    deliver(meta.position, report, &answer, &mut done);
                }
            }
            () = &mut deadline, if answer.is_some() => {
                if let Some(answer) = answer.take()
                    && let Err(reports) = answer.send(std::mem::take(&mut done))
                {
                    // Nobody waits for the answer any more: report them.
                    for (_, report) in reports {
                        transport.report_late(from, report);
                    }
                }
            }
            else => {
                tracing::error!(node = %from, left, "functions of a batch were lost track of");
                break;
            }
        }
    }
    if let Some(answer) = answer.take()
        && let Err(reports) = answer.send(done)
    {
        for (_, report) in reports {
            transport.report_late(from, report);
        }
    }
}

/// Fetches the arguments of a batch's quick calls (of one DAG) held elsewhere and starts
/// them; a call whose argument cannot be fetched fails (its report is returned).
async fn prepare_quick(
    transport: &NetTransport,
    runner: &BatchRunner,
    calls: Vec<(usize, ExecuteRequest)>,
) -> (
    QuickRun,
    Vec<QuickMeta>,
    DagId,
    Vec<(usize, FinishedReport)>,
) {
    let inner = &transport.inner;
    let dag = calls[0].1.dag.clone();
    // Every argument held elsewhere, fetched at once (each value once: see
    // `fetch_shared`).
    let mut wanted = Vec::new();
    let mut prepared = Vec::with_capacity(calls.len());
    for (position, request) in calls {
        let ExecuteRequest {
            function,
            inline,
            arguments,
            attempt,
            ..
        } = request;
        let mut values = HashMap::with_capacity(arguments.len());
        let mut fetches = Vec::new();
        for argument in arguments {
            match argument {
                ArgumentSource::Inline { function, value } => {
                    values.insert(function, value);
                }
                ArgumentSource::Remote { function, node } => {
                    fetches.push(wanted.len());
                    wanted.push((
                        function.clone(),
                        transport.fetch_shared(dag.clone(), function, node),
                    ));
                }
            }
        }
        prepared.push((position, function, inline, values, attempt, fetches));
    }
    let (ids, fetches): (Vec<FunctionId>, Vec<_>) = wanted.into_iter().unzip();
    let fetched = futures::future::join_all(fetches).await;
    let mut failed = Vec::new();
    let mut metas = Vec::with_capacity(prepared.len());
    let mut quick = Vec::with_capacity(prepared.len());
    for (position, function, inline, mut values, attempt, fetches) in prepared {
        let mut failure = None;
        for k in fetches {
            match &fetched[k] {
                Ok(value) => {
                    values.insert(ids[k].clone(), value.clone());
                }
                Err(error) => {
                    failure = Some(error.to_string());
                    break;
                }
            }
        }
        if let Some(reason) = failure {
            let error = CallError::Unavailable {
                code: function.code().clone(),
                node: inner.local.clone(),
                reason,
            };
            let report = FinishedReport {
                dag: dag.clone(),
                function: function.id().clone(),
                attempt,
                outcome: Outcome::Failed { error },
            };
            failed.push((position, report));
            continue;
        }
        metas.push(QuickMeta {
            position,
            function: function.id().clone(),
            attempt,
        });
        quick.push(QuickCall {
            function,
            inline,
            values,
        });
    }
    let run = runner.run_quick(dag.clone(), quick).await;
    (run, metas, dag, failed)
}

/// A remote attempt's outcome as reported: the result's size and, when it is small, the
/// result itself.
fn ran_outcome(ran: Result<Ran, CallError>) -> Outcome {
    match ran {
        Ok(ran) => {
            let size = ran.encoded.as_ref().map_or(0, |b| b.len());
            let value = match &ran.encoded {
                Some(bytes) if size <= INLINE_RESULT_BYTES => {
                    Some(Value::from_msgpack(bytes.clone()))
                }
                _ => None,
            };
            Outcome::Stored {
                size: size as u64,
                value,
            }
        }
        Err(error) => Outcome::Failed { error },
    }
}

/// Drops the inline value of a report when `left` (bytes) cannot carry it: the receiver
/// then fetches the value if it needs it.
fn strip_inline(report: &mut FinishedReport, left: &mut usize) {
    if let Outcome::Stored { value, size } = &mut report.outcome
        && value.is_some()
    {
        let size = usize::try_from(*size).unwrap_or(usize::MAX);
        if size <= *left {
            *left -= size;
        } else {
            *value = None;
        }
    }
}

/// The most bytes of inline results in one answer or report batch (a quarter of the
/// default response limit; requests are bounded by the node's request budget).
const MAX_INLINE_ANSWER_BYTES: usize = 4 << 20;

/// The most functions (or reports) in one request.
const MAX_BATCH: usize = 256;

/// What an execute request weighs besides its constants and inline values, roughly.
const REQUEST_OVERHEAD_BYTES: usize = 256;

/// The MessagePack size of `values` (what cannot be encoded counts as nothing: the request
/// fails on it anyway).
fn encoded_len(values: &[Value]) -> usize {
    values
        .iter()
        .map(|v| v.to_msgpack().map_or(0, |b| b.len()))
        .sum()
}

/// Per peer, what waits to be sent to it, and whether a task is sending it.
struct Outbox<T> {
    queues: Mutex<HashMap<NodeId, Queue<T>>>,
}

struct Queue<T> {
    items: std::collections::VecDeque<(T, usize)>,
}

impl<T> Outbox<T> {
    fn new() -> Self {
        Outbox {
            queues: Mutex::new(HashMap::new()),
        }
    }

    /// Queues `item` (weighing `bytes`) for `node`; true when no task sends to `node` yet
    /// and the caller must start one.
    fn push(&self, node: &NodeId, item: T, bytes: usize) -> bool {
        let mut queues = lock(&self.queues);
        match queues.get_mut(node) {
            Some(queue) => {
                queue.items.push_back((item, bytes));
                false
            }
            None => {
                let mut items = std::collections::VecDeque::new();
                items.push_back((item, bytes));
                queues.insert(node.clone(), Queue { items });
                true
            }
        }
    }

    /// The next batch for `node`: at least one item, at most [`MAX_BATCH`] and, beyond the
    /// first, at most `max_bytes`. `None` when nothing waits: the sending task then stops
    /// (the next push starts another).
    fn take(&self, node: &NodeId, max_bytes: usize) -> Option<Vec<T>> {
        let mut queues = lock(&self.queues);
        let queue = queues.get_mut(node)?;
        if queue.items.is_empty() {
            queues.remove(node);
            return None;
        }
        let mut batch = Vec::with_capacity(queue.items.len().min(MAX_BATCH));
        let mut total = 0;
        while let Some((_, bytes)) = queue.items.front() {
            if !batch.is_empty() && (batch.len() == MAX_BATCH || total + bytes > max_bytes) {
                break;
            }
            total += bytes;
            if let Some((item, _)) = queue.items.pop_front() {
                batch.push(item);
            }
        }
        Some(batch)
    }
}

/// The gate of requests in flight to `node` (half the network's per-peer cap).
fn gate(inner: &Inner, node: &NodeId) -> Arc<Semaphore> {
    let mut gates = lock(&inner.gates);
    Arc::clone(
        gates
            .entry(node.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(inner.gate_permits))),
    )
}

/// Sends what is queued for `node` to run there, a batch per request, as many requests
/// in flight as its gate allows: while they are in flight, the next batch fills up.
async fn send_executes(inner: Arc<Inner>, node: NodeId) {
    let gate = gate(&inner, &node);
    loop {
        let Ok(permit) = Arc::clone(&gate).acquire_owned().await else {
            return;
        };
        let Some(mut batch) = inner.executes.take(&node, inner.batch_bytes) else {
            return;
        };
        // Attempts settled meanwhile (their node left) are not sent.
        {
            let pending = lock(&inner.pending);
            batch.retain(|(key, _)| pending.contains_key(key));
        }
        if batch.is_empty() {
            continue;
        }
        // The estimate that made the batch leaves out what is small alone but adds up
        // (ids, argument descriptors): the batch is split by its measured size, so that no
        // frame exceeds the limit (one that did would fail like a broken link, and be
        // retried as one).
        let (parts, unsendable) = fit_frames(batch, inner.max_request_bytes);
        if !unsendable.is_empty() {
            let transport = NetTransport {
                inner: Arc::clone(&inner),
            };
            for (key, reason) in unsendable {
                tracing::warn!(%node, function = %key.2, "cannot send a function: {reason}");
                transport.settle(&key, |code| CallError::Unavailable {
                    code,
                    node: node.clone(),
                    reason,
                });
            }
        }
        let mut permit = Some(permit);
        for part in parts {
            let permit = match permit.take() {
                Some(permit) => permit,
                None => match Arc::clone(&gate).acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let (inner, node) = (Arc::clone(&inner), node.clone());
            tokio::spawn(async move {
                exchange_executes(&inner, &node, part, permit).await;
            });
        }
    }
}

/// Functions for one node, each with its attempt.
type Batch = Vec<(AttemptKey, ExecuteRequest)>;

/// Splits `batch`, in order, into batches whose [`Request::ExecuteBatch`] frame is at most
/// `max_bytes` (measured: the MessagePack length of each function, plus the frame's
/// envelope). A function that cannot be sent even alone (too large, or not encodable) is
/// returned apart, with the reason.
fn fit_frames(batch: Batch, max_bytes: usize) -> (Vec<Batch>, Vec<(AttemptKey, String)>) {
    // An empty batch's frame, plus room for the longest array header (5 bytes, where the
    // empty one has 1).
    let envelope = encoded_size(&Request::ExecuteBatch(Vec::new())).unwrap_or(0) + 4;
    let mut parts = Vec::new();
    let mut unsendable = Vec::new();
    let mut part = Vec::new();
    let mut part_bytes = envelope;
    for (key, request) in batch {
        let len = match encoded_size(&request) {
            Ok(len) => len,
            Err(error) => {
                unsendable.push((
                    key,
                    format!("its execute request cannot be encoded: {error}"),
                ));
                continue;
            }
        };
        if envelope + len > max_bytes {
            unsendable.push((
                key,
                format!(
                    "its execute request frame is too large: {} bytes encoded, the maximum is {max_bytes}",
                    envelope + len
                ),
            ));
            continue;
        }
        if part_bytes + len > max_bytes {
            parts.push(std::mem::take(&mut part));
            part_bytes = envelope;
        }
        part_bytes += len;
        part.push((key, request));
    }
    if !part.is_empty() {
        parts.push(part);
    }
    (parts, unsendable)
}

/// The length of `message`'s MessagePack form as the codec writes it (named fields),
/// counted without keeping the bytes.
fn encoded_size<T: serde::Serialize>(message: &T) -> Result<usize, rmp_serde::encode::Error> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    rmp_serde::encode::write_named(&mut count, message)?;
    Ok(count.0)
}

/// Sends one batch of functions to `node` and settles what its answer says.
async fn exchange_executes(
    inner: &Arc<Inner>,
    node: &NodeId,
    batch: Vec<(AttemptKey, ExecuteRequest)>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let (keys, requests): (Vec<AttemptKey>, Vec<ExecuteRequest>) = batch.into_iter().unzip();
    let sent = while_saturated(
        || {
            inner
                .client
                .request(node, Request::ExecuteBatch(requests.clone()))
        },
        saturated,
    )
    .await;
    drop(permit);
    let transport = NetTransport {
        inner: Arc::clone(inner),
    };
    let failure = match sent {
        Ok(Response::Executed(answers)) if answers.len() == keys.len() => {
            for (key, answer) in keys.into_iter().zip(answers) {
                match answer {
                    ExecuteAnswer::Accepted => {}
                    ExecuteAnswer::Finished(report) => transport.finished(node, report),
                    ExecuteAnswer::Refused(RpcError::UnknownCode { code }) => {
                        transport.settle(&key, |_| CallError::UnknownCode { code })
                    }
                    ExecuteAnswer::Refused(error) => {
                        let reason = format!("it refused: {error}");
                        transport.settle(&key, |code| CallError::Unavailable {
                            code,
                            node: node.clone(),
                            reason,
                        })
                    }
                }
            }
            return;
        }
        Ok(other) => format!("it answered {} to an execute request", other.kind()),
        // The connection broke with the request in flight: the node may have taken the
        // functions and died running them. Its departure, if it comes, settles them as
        // lost with the node (so a function that kills its node is blamed); otherwise
        // they are unavailable after a while.
        Err(
            error @ (RequestError::ConnectionClosed { .. }
            | RequestError::Io { .. }
            | RequestError::Timeout { .. }),
        ) => {
            tokio::time::sleep(DEPARTURE_WAIT).await;
            error.to_string()
        }
        Err(error) => error.to_string(),
    };
    for key in keys {
        let reason = failure.clone();
        transport.settle(&key, |code| CallError::Unavailable {
            code,
            node: node.clone(),
            reason,
        });
    }
}

/// Sends the late reports queued for `node` (the coordinator of their executions), a
/// batch per request.
async fn send_reports(inner: Arc<Inner>, node: NodeId) {
    let gate = gate(&inner, &node);
    loop {
        let Ok(permit) = Arc::clone(&gate).acquire_owned().await else {
            return;
        };
        let Some(mut reports) = inner.reports.take(&node, inner.inline_budget) else {
            return;
        };
        let mut left = inner.inline_budget;
        for report in &mut reports {
            strip_inline(report, &mut left);
        }
        let (inner, node) = (Arc::clone(&inner), node.clone());
        tokio::spawn(async move {
            // A report lost is an execution that never ends: one that could not be sent
            // for a passing reason (a connection closed or timed out, a saturated peer) is
            // sent again, waiting longer each time, until it is in or its coordinator has
            // left (a coordinator that left learns nothing more from this node).
            let mut wait = FIRST_REPORT_RETRY;
            loop {
                let sent = while_saturated(
                    || {
                        inner
                            .client
                            .request(&node, Request::FinishedBatch(reports.clone()))
                    },
                    saturated,
                )
                .await;
                let error = match sent {
                    Ok(_) => break,
                    Err(error) => error,
                };
                if !passing(&error) || lock(&inner.gone).contains(&node) {
                    tracing::warn!(%node, reports = reports.len(), "could not report finished functions: {error}");
                    break;
                }
                tracing::debug!(%node, reports = reports.len(), "could not report finished functions ({error}); trying again in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_REPORT_RETRY);
            }
            drop(permit);
        });
    }
}

/// How long a node running a function another node sent it waits for the outcome before
/// answering `Accepted` (and reporting the outcome later).
const QUICK_ANSWER: Duration = Duration::from_millis(50);

/// Runs a function `from` sent here: fetches its arguments, runs it under this node's own
/// reservation, and says what became of it.
async fn run_execute(
    transport: &NetTransport,
    runner: &BatchRunner,
    from: &NodeId,
    request: ExecuteRequest,
) -> FinishedReport {
    let inner = &transport.inner;
    let ExecuteRequest {
        dag,
        function,
        inline,
        arguments,
        attempt,
        timeout_ms,
        report_start,
    } = request;
    let id = function.id().clone();
    let code = function.code().clone();
    let mut values = HashMap::with_capacity(arguments.len());
    let mut failure = None;
    let fetches: Vec<_> = arguments
        .into_iter()
        .filter_map(|argument| match argument {
            ArgumentSource::Inline { function, value } => {
                values.insert(function, value);
                None
            }
            ArgumentSource::Remote { function, node } => Some((
                function.clone(),
                transport.fetch_shared(dag.clone(), function, node),
            )),
        })
        .collect();
    for (function, fetch) in fetches {
        match fetch.await {
            Ok(value) => {
                values.insert(function, value);
            }
            Err(error) => {
                failure = Some(CallError::Unavailable {
                    code: code.clone(),
                    node: inner.local.clone(),
                    reason: error.to_string(),
                });
                break;
            }
        }
    }
    let outcome = match failure {
        Some(error) => Outcome::Failed { error },
        None => {
            // Confirmed before the code runs, so that the sender knows it was running if
            // this process dies in it.
            let before_start = report_start.then(|| {
                let inner = Arc::clone(&transport.inner);
                let (from, started) = (
                    from.clone(),
                    Request::Started {
                        dag: dag.clone(),
                        function: id.clone(),
                        attempt,
                    },
                );
                async move {
                    if let Err(error) = request_patiently(&inner, &from, started).await {
                        tracing::debug!(node = %from, "could not report a start: {error}");
                    }
                }
                .boxed()
            });
            let run = RunFunction {
                dag: dag.clone(),
                function,
                inline,
                values,
                timeout: timeout_ms.map(Duration::from_millis),
                encode: true,
                before_start,
            };
            ran_outcome(runner.run_function(run).await)
        }
    };
    FinishedReport {
        dag,
        function: id,
        attempt,
        outcome,
    }
}

/// Spawns `task` on the current tokio runtime. Without one (the actor system is being
/// dropped, stopping the executions still running in it), there is nobody left to send
/// it: the task is dropped, with a debug line, instead of panicking in a destructor.
fn spawn_detached(what: &str, task: impl Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(task);
        }
        Err(_) => tracing::debug!("no runtime left to {what}: the node is shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    fn callback(tx: mpsc::SyncSender<RemoteResult>) -> Callback {
        Callback {
            done: Some(Box::new(move |result| {
                tx.send(result).expect("the test holds the receiver");
            })),
            code: CodeName::new("double"),
            node: NodeId::new("worker"),
        }
    }

    /// A function with `arguments` remote-argument descriptors.
    fn execute(i: usize, arguments: usize) -> (AttemptKey, ExecuteRequest) {
        let dag = DagId::new("d");
        let id = FunctionId::new(format!("f{i}"));
        let node = NodeId::new("12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN");
        let arguments = (0..arguments)
            .map(|a| ArgumentSource::Remote {
                function: FunctionId::new(format!("arg-{a}")),
                node: node.clone(),
            })
            .collect();
        let request = ExecuteRequest {
            dag: dag.clone(),
            function: handoff_core::Function::new(id.clone(), "sum"),
            inline: Vec::new(),
            arguments,
            attempt: 1,
            timeout_ms: None,
            report_start: false,
        };
        ((node, dag, id, 1), request)
    }

    #[test]
    fn batches_are_split_so_that_every_frame_fits() {
        let max = 64 << 10;
        // 40 functions of about 5 KiB of argument descriptors each (200 KiB together),
        // and among them one of about 100 KiB.
        let mut batch: Vec<_> = (0..40).map(|i| execute(i, 60)).collect();
        batch.insert(20, execute(99, 1200));
        let (parts, unsendable) = fit_frames(batch, max);
        assert_eq!(unsendable.len(), 1);
        assert_eq!(unsendable[0].0.2.as_str(), "f99");
        assert!(unsendable[0].1.contains("too large"), "{}", unsendable[0].1);
        let sent: Vec<FunctionId> = parts.iter().flatten().map(|(k, _)| k.2.clone()).collect();
        let expected: Vec<FunctionId> = (0..40).map(|i| FunctionId::new(format!("f{i}"))).collect();
        assert_eq!(sent, expected, "every other function, in order");
        assert!((4..10).contains(&parts.len()), "{} parts", parts.len());
        for part in parts {
            let requests = part.into_iter().map(|(_, r)| r).collect();
            let frame = rmp_serde::to_vec_named(&Request::ExecuteBatch(requests)).expect("encodes");
            assert!(frame.len() <= max, "a frame of {} bytes", frame.len());
        }
    }

    #[test]
    fn reports_are_sent_again_after_passing_failures_only() {
        let node = NodeId::new("coordinator");
        let remote = |error: RpcError| RequestError::Remote {
            node: node.clone(),
            error,
        };
        assert!(passing(&RequestError::TooManyInFlight {
            node: node.clone(),
            limit: 8,
        }));
        assert!(passing(&remote(RpcError::Busy {
            pending: 1,
            limit: 1
        })));
        assert!(!passing(&remote(RpcError::NotOwner {
            dag: DagId::new("d")
        })));
        assert!(!passing(&RequestError::LocalNode { node: node.clone() }));
    }

    #[test]
    fn a_callback_dropped_unsettled_reports_its_attempt_unavailable() {
        let (tx, rx) = mpsc::sync_channel(2);
        drop(Reply::Call(callback(tx)));
        match rx.try_recv() {
            Ok(Err(CallError::Unavailable { code, node, .. })) => {
                assert_eq!(code, CodeName::new("double"));
                assert_eq!(node, NodeId::new("worker"));
            }
            other => panic!("expected an unavailable attempt, got {other:?}"),
        }
        assert!(rx.try_recv().is_err(), "reported more than once");
    }

    #[test]
    fn a_settled_callback_is_called_once_with_its_outcome() {
        let (tx, rx) = mpsc::sync_channel(2);
        let error = CallError::Unavailable {
            code: CodeName::new("double"),
            node: NodeId::new("worker"),
            reason: "settled".to_owned(),
        };
        Reply::Call(callback(tx)).send(Err(error.clone()));
        match rx.try_recv() {
            Ok(Err(reported)) => assert_eq!(reported, error),
            other => panic!("expected the outcome sent, got {other:?}"),
        }
        assert!(rx.try_recv().is_err(), "reported more than once");
    }
}
