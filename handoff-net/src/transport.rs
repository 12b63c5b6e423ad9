//! The network side of remote execution: [`NetTransport`] implements the actors'
//! [`Transport`] over request-response, and [`serve_execute`] runs what other nodes send.
//!
//! A function sent to another node travels as a [`Request::Execute`] naming where each
//! argument lives; the receiver answers [`Response::Accepted`] at once, fetches what it
//! does not hold, runs the function under its own reservation and reports with a
//! [`Request::Finished`] (so a long function never runs into the request timeout). Results
//! stay where they were made; a small one (at most [`INLINE_RESULT_BYTES`] encoded) also
//! comes back inside the report, because a fetch round trip costs far more than carrying
//! a few kilobytes, and travels inline to the nodes that consume it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::{BoxFuture, Shared};
use handoff_actors::{
    FetchFailed, NodeHandle, RemoteArgument, RemoteCall, RemoteDone, RemoteResult, RunFunction,
    StoreValue, Transport,
};
use handoff_core::{CallError, CodeName, DagId, FunctionId, NodeId, Value};
use tokio::sync::Semaphore;

use crate::client::{Client, ResponseChannel};
use crate::error::{FetchError, RequestError};
use crate::protocol::{
    ArgumentSource, ExecuteRequest, FinishedReport, Outcome, Request, Response, RpcError,
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

/// Sends a request, waiting and trying again while the peer is saturated (the per-peer
/// cap on requests in flight fails fast; many functions in flight to one node hit it).
async fn request_patiently(
    inner: &Inner,
    node: &NodeId,
    request: Request,
) -> Result<Response, RequestError> {
    let gate = {
        let mut gates = lock(&inner.gates);
        Arc::clone(
            gates
                .entry(node.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(inner.gate_permits))),
        )
    };
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
    reply: oneshot::Sender<RemoteResult>,
}

struct Inner {
    local: NodeId,
    client: Client,
    node: NodeHandle,
    /// Remote attempts waiting for their report.
    pending: Mutex<HashMap<AttemptKey, Pending>>,
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
    transfers: Transfers,
}

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
        NetTransport {
            inner: Arc::new(Inner {
                local: node.id().clone(),
                client,
                node,
                pending: Mutex::new(HashMap::new()),
                fetching: Mutex::new(HashMap::new()),
                inline_budget: max_request_bytes as usize / 4,
                served: Mutex::new(HashMap::new()),
                next_task: AtomicU64::new(0),
                gone: Mutex::new(std::collections::HashSet::new()),
                grace,
                gates: Mutex::new(HashMap::new()),
                gate_permits: (max_in_flight_per_peer / 2).max(1),
                transfers: Transfers::default(),
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

    /// A report from `from` arrived: settles the attempt waiting for it.
    pub(crate) fn finished(&self, from: &NodeId, report: FinishedReport) {
        let key = (from.clone(), report.dag, report.function, report.attempt);
        let Some(Pending { reply, .. }) = lock(&self.inner.pending).remove(&key) else {
            tracing::debug!(node = %from, function = %key.2, "a report for no attempt waiting");
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
        let _ = reply.send(result);
    }

    /// `node` left: every attempt it was running fails (to be retried elsewhere), and the
    /// executions it coordinated here are dropped if it does not come back in time.
    pub(crate) fn node_gone(&self, node: &NodeId) {
        lock(&self.inner.gone).insert(node.clone());
        self.orphan_after_grace(node);
        let gone: Vec<_> = {
            let mut pending = lock(&self.inner.pending);
            let keys: Vec<AttemptKey> = pending.keys().filter(|k| &k.0 == node).cloned().collect();
            keys.into_iter()
                .filter_map(|k| pending.remove(&k))
                .collect()
        };
        for pending in gone {
            let _ = pending.reply.send(Err(CallError::NodeLost {
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

    /// True when `node` left the cluster and has not come back.
    pub(crate) fn is_gone(&self, node: &NodeId) -> bool {
        lock(&self.inner.gone).contains(node)
    }

    /// A peer is announced again: it is not gone any more.
    pub(crate) fn node_back(&self, node: &NodeId) {
        lock(&self.inner.gone).remove(node);
    }

    /// After the grace period, if `coordinator` has not come back, drops the work and
    /// values of the executions it coordinated here.
    fn orphan_after_grace(&self, coordinator: &NodeId) {
        let dags: Vec<DagId> = lock(&self.inner.served)
            .iter()
            .filter(|(_, s)| s.coordinator == *coordinator)
            .map(|(dag, _)| dag.clone())
            .collect();
        if dags.is_empty() {
            return;
        }
        let (transport, coordinator) = (self.clone(), coordinator.clone());
        actix::spawn(async move {
            tokio::time::sleep(transport.inner.grace).await;
            if !lock(&transport.inner.gone).contains(&coordinator) {
                return;
            }
            for dag in dags {
                tracing::info!(%dag, %coordinator, "its coordinator left: dropping its work and values here");
                transport.stop_serving(&dag);
                if let Err(error) = transport.inner.node.drop_dag(dag.clone()).await {
                    tracing::debug!(%dag, "could not drop the values: {error}");
                }
            }
        });
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
    if let Ok(value) = inner
        .node
        .get_local_value(dag.clone(), function.clone())
        .await
    {
        return Ok(value);
    }
    if holder == &inner.local {
        return Err(failed("it is not held here".to_owned()));
    }
    let value = while_saturated(
        || inner.client.fetch_value(holder, dag, function),
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
        dag: dag.clone(),
        id: function.clone(),
        value: value.clone(),
    };
    // A store that stopped only costs a second fetch later.
    let _ = inner.node.result_store().send(cache).await;
    Ok(value)
}

impl Transport for NetTransport {
    fn execute(&self, call: RemoteCall) -> BoxFuture<'static, RemoteResult> {
        let inner = Arc::clone(&self.inner);
        let code = call.function.code().clone();
        let node = call.node.clone();
        let key: AttemptKey = (
            node.clone(),
            call.dag.clone(),
            call.function.id().clone(),
            call.attempt,
        );
        let (reply, report) = oneshot::channel();
        let pending = Pending {
            code: code.clone(),
            started: false,
            reply,
        };
        lock(&inner.pending).insert(key.clone(), pending);
        let mut budget = inner.inline_budget;
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
                        ArgumentSource::Inline { function, value }
                    } else {
                        ArgumentSource::Remote { function, node }
                    }
                }
            })
            .collect();
        let request = Request::Execute(ExecuteRequest {
            dag: call.dag,
            function: call.function,
            inline: call.inline,
            arguments,
            attempt: call.attempt,
            timeout_ms: call
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            report_start: call.report_start,
        });
        async move {
            let unavailable = |reason: String| CallError::Unavailable {
                code: code.clone(),
                node: node.clone(),
                reason,
            };
            let refused = match request_patiently(&inner, &node, request).await {
                Ok(Response::Accepted { .. }) => None,
                // It ran quickly: the answer is the outcome.
                Ok(Response::Finished(report)) => {
                    NetTransport {
                        inner: Arc::clone(&inner),
                    }
                    .finished(&node, report);
                    None
                }
                Ok(other) => Some(unavailable(format!(
                    "it answered {} to an execute request",
                    other.kind()
                ))),
                Err(RequestError::Remote {
                    error: RpcError::UnknownCode { code },
                    ..
                }) => Some(CallError::UnknownCode { code }),
                // The connection broke with the request in flight: the node may have
                // taken it and died running it. Its departure, if it comes, settles the
                // attempt as lost with the node (so a function that kills its node is
                // blamed); otherwise it is unavailable after a while.
                Err(
                    error @ (RequestError::ConnectionClosed { .. }
                    | RequestError::Io { .. }
                    | RequestError::Timeout { .. }),
                ) => {
                    return match tokio::time::timeout(DEPARTURE_WAIT, report).await {
                        Ok(Ok(result)) => result,
                        Ok(Err(_)) => Err(unavailable("the network layer stopped".to_owned())),
                        Err(_) => {
                            lock(&inner.pending).remove(&key);
                            Err(unavailable(error.to_string()))
                        }
                    };
                }
                Err(error) => Some(unavailable(error.to_string())),
            };
            if let Some(error) = refused {
                lock(&inner.pending).remove(&key);
                return Err(error);
            }
            match report.await {
                Ok(result) => result,
                Err(_) => Err(unavailable("the network layer stopped".to_owned())),
            }
        }
        .boxed()
    }

    fn fetch(
        &self,
        dag: DagId,
        function: FunctionId,
        node: NodeId,
    ) -> BoxFuture<'static, Result<Value, FetchFailed>> {
        self.fetch_shared(dag, function, node).boxed()
    }

    fn forget(&self, dag: DagId, nodes: Vec<NodeId>) {
        for node in nodes {
            let inner = Arc::clone(&self.inner);
            let request = Request::Forget { dag: dag.clone() };
            tokio::spawn(async move {
                if let Err(error) = request_patiently(&inner, &node, request).await {
                    tracing::debug!(%node, "could not tell the node to forget a DAG: {error}");
                }
            });
        }
    }
}

/// Runs a function `from` sent here (already accepted) and reports to it.
/// Runs a function `from` sent here and answers: with the outcome itself when it is
/// ready within [`QUICK_ANSWER`] (one round trip for a quick function), else with
/// `Accepted` at once and a [`Request::Finished`] report later (so a long function never
/// runs into the request timeout).
pub(crate) async fn serve_execute(
    transport: NetTransport,
    from: NodeId,
    request: ExecuteRequest,
    channel: ResponseChannel,
) {
    let accepted = Response::Accepted {
        dag: request.dag.clone(),
        function: request.function.id().clone(),
        attempt: request.attempt,
    };
    let client = transport.inner.client.clone();
    let work = run_execute(&transport, &from, request);
    futures::pin_mut!(work);
    let late = match tokio::time::timeout(QUICK_ANSWER, &mut work).await {
        Ok(report) => {
            // If this answer is lost, the sender learns nothing: it times out and runs the
            // function again.
            if let Err(error) = client.respond(channel, Response::Finished(report)).await {
                tracing::debug!(node = %from, "could not answer an execute request: {error}");
            }
            return;
        }
        Err(_) => {
            if let Err(error) = client.respond(channel, accepted).await {
                tracing::debug!(node = %from, "could not accept an execute request: {error}");
            }
            work.await
        }
    };
    let report = Request::Finished(late);
    if let Err(error) = request_patiently(&transport.inner, &from, report).await {
        tracing::warn!(node = %from, "could not report a finished function: {error}");
    }
}

/// How long a node running a function another node sent it waits for the outcome before
/// answering `Accepted` (and reporting the outcome later).
const QUICK_ANSWER: Duration = Duration::from_millis(50);

/// Runs a function `from` sent here: fetches its arguments, runs it under this node's own
/// reservation, and says what became of it.
async fn run_execute(
    transport: &NetTransport,
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
            match inner.node.run_function(run).await {
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
    };
    FinishedReport {
        dag,
        function: id,
        attempt,
        outcome,
    }
}
