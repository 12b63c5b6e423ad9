//! The coordinator of one DAG execution: tracks readiness, asks for reservations,
//! dispatches jobs, handles outcomes, timeouts, retries and cancellation, emits the
//! execution's events, and replies once.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::channel::oneshot;
use handoff_core::{
    AllocationStrategy, Backoff, CallError, CodeName, DagId, FunctionId, NO_NEXT, NodeId, Rank,
    Resources, Results, Target, ValidatedDag, Value,
};
use tokio::sync::mpsc;

use crate::error::ExecuteError;
use crate::events::{Event, EventKind, EventSink, now_micros};
use crate::executor::{Call, Hold, Job, JobLife, JobReport, Outcome, RunShared};
use crate::location_registry::{ForgetDag, LocationRegistry, RegisterLocations};
use crate::remote::{RemoteArgument, RemoteCall, RemoteResult, SharedTransport};
use crate::report::{ExecutionReport, Recorder};
use crate::resource_manager::{
    Cancel, Delivery, Grant, GrantId, GrantSink, Release, Request, RequesterGone, RequesterId,
    Reserve, ResourceManager, Withdraw,
};
use crate::result_store::{DropDag, FreeValues, ResultStore, StoreValues};
use crate::supervision::guarded_with;

/// The most calls one job takes from the ready queue at once (a job hands back those it
/// has not started once it has run for a while: see [`crate::executor::JOB_BUDGET`]).
const MAX_BATCH: usize = 1024;

/// How long a reservation keeps being reused by the next waiting calls of its shape
/// before it goes back to the resource manager (which may then grant it to a more urgent
/// or a starving request, or to this execution again).
const LEASE_BUDGET: Duration = Duration::from_millis(2);

/// Functions whose calls may run on one another's reservation: the same cost and code,
/// and the same pinned node if any (collocated functions and functions with a timeout
/// never share).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ShapeKey {
    /// Shared by the requests of the shape (no copy per request).
    cost: Arc<Resources>,
    code: CodeName,
    pinned: Option<NodeId>,
}

/// How many of a shape's waiting calls have a request at the resource manager before any
/// grant has said how many reservations of the shape the nodes hold at once.
const FIRST_WINDOW: u32 = 16;

/// `asked` states: no request, a request in the outbox, a request at the manager.
const UNASKED: u8 = 0;
const QUEUED: u8 = 1;
const SENT: u8 = 2;

/// `shape_ids` marker: not computed yet.
const SHAPE_UNSET: u32 = u32::MAX;
/// `shape_ids` marker: never shares a reservation.
const SHAPE_NONE: u32 = u32::MAX - 1;

/// A reservation the run holds, and what may reuse it.
struct Lease {
    /// Its shape (`SHAPE_NONE`: not reused).
    shape: u32,
    since: Instant,
    /// How many reservations of its shape fit at once where it may run.
    parallel: u32,
}

/// The most re-runs of one function, after attempts that could not run where they were
/// sent, that do not count against `max_retries`.
const MAX_FREE_RERUNS: u32 = 16;

/// How many more times results held elsewhere are collected after a failed fetch, and the
/// pause before each (times the round).
const COLLECT_ROUNDS: u32 = 3;
const COLLECT_PAUSE: Duration = Duration::from_millis(200);

/// Events an execution's coordinator receives on its one bounded channel (its inbox):
/// from its jobs and the transport, the resource manager (through [`GrantSink`]), its
/// handle and the node's coordinator.
pub(crate) enum RunEvent {
    /// A job ended.
    Finished(JobReport),
    /// Reservations were granted or refused.
    Reserved(Vec<Grant>),
    /// The caller asked to cancel the execution.
    Cancel,
    /// A node left the cluster.
    NodeLost(NodeId),
    /// Tests only: makes the execution's coordinator panic.
    #[cfg(feature = "fault-injection")]
    Crash,
}

/// The resource manager hands an execution its grants in its inbox.
impl GrantSink for mpsc::Sender<RunEvent> {
    fn deliver(&self, grants: Vec<Grant>) -> Delivery {
        match self.try_send(RunEvent::Reserved(grants)) {
            Ok(()) => Delivery::Delivered,
            Err(mpsc::error::TrySendError::Full(event)) => {
                let inbox = self.clone();
                Delivery::Later(Box::pin(async move {
                    inbox.send(event).await.map_err(|_| RequesterGone)
                }))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Gone,
        }
    }

    fn is_closed(&self) -> bool {
        mpsc::Sender::is_closed(self)
    }
}

/// What `execute` returns: the DAG id, every result and where each function ran.
///
/// The node's result store keeps a copy of the DAG's values while this result lives;
/// dropping it (and every clone) frees them there, unless [`keep_values`](Self::keep_values)
/// was called. The values in [`results`](Self::results) stay valid either way.
#[derive(Debug, Clone)]
pub struct ExecutionResult {
    /// The DAG's id.
    pub dag_id: DagId,
    /// Every regular function's result (those kept, with `free_intermediates`), and its node.
    pub results: Results,
    guard: Option<Arc<ValuesGuard>>,
    report: Option<Arc<ExecutionReport>>,
}

impl ExecutionResult {
    /// Where each regular function ran.
    pub fn allocations(&self) -> std::collections::BTreeMap<FunctionId, NodeId> {
        self.results.allocations()
    }

    /// What the execution did, function by function, when
    /// [`ExecuteOptions::report`](crate::ExecuteOptions::report) was set.
    pub fn report(&self) -> Option<&ExecutionReport> {
        self.report.as_deref()
    }

    /// Keeps the DAG's values in the node's result store after this result is dropped,
    /// until `NodeHandle::drop_dag` frees them.
    pub fn keep_values(&mut self) {
        if let Some(guard) = self.guard.take() {
            guard.armed.store(false, Ordering::Relaxed);
        }
    }
}

/// Frees a DAG's values on the node when dropped, if still armed.
#[derive(Debug)]
pub(crate) struct ValuesGuard {
    dag: DagId,
    store: Addr<ResultStore>,
    locations: Addr<LocationRegistry>,
    armed: AtomicBool,
}

impl Drop for ValuesGuard {
    fn drop(&mut self) {
        if self.armed.load(Ordering::Relaxed) {
            free_dag(&self.store, &self.locations, &self.dag);
        }
    }
}

/// Sends `msg` without waiting: into the mailbox if there is room, else from a task
/// (or, outside any runtime, a short-lived thread) that waits for room.
pub(crate) fn send_detached<A, M>(addr: &Addr<A>, msg: M)
where
    A: Actor<Context = Context<A>> + Handler<M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    match addr.try_send(msg) {
        Ok(()) => {}
        Err(SendError::Closed(_)) => {}
        Err(SendError::Full(msg)) => {
            let addr = addr.clone();
            let send = async move {
                let _ = addr.send(msg).await;
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(send);
                }
                Err(_) => {
                    std::thread::spawn(move || futures::executor::block_on(send));
                }
            }
        }
    }
}

/// Frees every value and location of a DAG on the node.
pub(crate) fn free_dag(store: &Addr<ResultStore>, locations: &Addr<LocationRegistry>, dag: &DagId) {
    send_detached(store, DropDag { dag: dag.clone() });
    send_detached(locations, ForgetDag { dag: dag.clone() });
}

pub(crate) type Reply = oneshot::Sender<Result<ExecutionResult, ExecuteError>>;

/// Per-execution settings, resolved by the node coordinator.
pub(crate) struct RunSettings {
    pub(crate) requester: RequesterId,
    pub(crate) node: NodeId,
    pub(crate) strategy: AllocationStrategy,
    pub(crate) max_retries: u32,
    pub(crate) timeout: Option<Duration>,
    pub(crate) backoff: Backoff,
    pub(crate) parallelism: usize,
    pub(crate) free_intermediates: bool,
    pub(crate) keep_values: bool,
    /// The functions whose values are kept to the end (with `free_intermediates`).
    pub(crate) keep: Vec<bool>,
    pub(crate) targets: Vec<Target>,
    pub(crate) ranks: Vec<Rank>,
    /// How to reach other nodes; `None` runs everything here.
    pub(crate) transport: Option<SharedTransport>,
    /// Node deaths a function may be blamed for before the execution fails.
    pub(crate) max_node_deaths: u32,
    /// How long the whole execution may take.
    pub(crate) deadline: Option<Duration>,
}

/// Everything a run needs, prepared by the node coordinator.
pub(crate) struct RunSetup {
    pub(crate) shared: Arc<RunShared>,
    pub(crate) events: mpsc::Receiver<RunEvent>,
    pub(crate) settings: RunSettings,
    pub(crate) sink: Option<EventSink>,
    /// The per-function table for the execution's report, when asked for.
    pub(crate) recorder: Option<Recorder>,
    pub(crate) manager: Addr<ResourceManager>,
    pub(crate) store: Addr<ResultStore>,
    pub(crate) locations: Addr<LocationRegistry>,
    pub(crate) reply: Reply,
}

/// What a run knows of one function: its progress through the DAG, its value once made,
/// its attempts and failures, and its place in the reservation machinery.
struct FnState {
    /// Unfinished dependencies.
    pending: u32,
    /// Unfinished consumers of its value (for `free_intermediates`).
    consumers: u32,
    /// Its value once finished, when it is held here (or came back inline).
    value: Option<Value>,
    /// The node it ran on once finished (and whose store holds its value).
    node: Option<NodeId>,
    /// Its value came back inline from another node: small, so it travels inline to the
    /// nodes that run its consumers.
    small: bool,
    /// The encoded size of its value when made on another node (0 when unknown).
    size: u64,
    /// Handed to the scheduling machinery (ready queue, reservation, job, fetch, backoff)
    /// and not finished: a dependency finishing must not start it twice.
    scheduled: bool,
    /// Its attempts that could not run where they were sent (a node left, an argument
    /// could not be fetched): re-run without counting against `max_retries`.
    free_reruns: u32,
    /// The node its last attempt failed on by its own fault (its retry goes elsewhere
    /// when it can).
    failed_on: Option<NodeId>,
    /// Node deaths it was blamed for (see `on_failed_attempt`).
    deaths: u32,
    /// The nodes those deaths were.
    death_nodes: Vec<NodeId>,
    /// The number of its last attempt (0 before the first).
    attempts: u32,
    /// Its shape id (`SHAPE_UNSET` until it first asks for a reservation).
    shape: u32,
    /// With events: the attempt it last got a `Reserved` event for (a call handed back
    /// and taken again does not get a second one).
    announced: u32,
    /// Whether it has a request while it waits for a reservation of a shared shape:
    /// `UNASKED`, `QUEUED` (in `outbox`) or `SENT` to the resource manager. Only the most
    /// urgent waiting calls of a shape have one (its window, see [`DagRun::top_up`]); the
    /// others run on the reservations those get.
    asked: u8,
}

impl FnState {
    /// A function with `pending` dependencies and `consumers` dependents, not started.
    fn new(pending: u32, consumers: u32) -> Self {
        FnState {
            pending,
            consumers,
            value: None,
            node: None,
            small: false,
            size: 0,
            scheduled: false,
            free_reruns: 0,
            failed_on: None,
            deaths: 0,
            death_nodes: Vec::new(),
            attempts: 0,
            shape: SHAPE_UNSET,
            announced: 0,
            asked: UNASKED,
        }
    }

    /// The number its next attempt gets.
    fn next_attempt(&self) -> u32 {
        self.attempts + 1
    }

    /// It left the scheduling machinery without finishing (it waits for a dependency, or
    /// is scheduled again): a dependency finishing may start it.
    fn unschedule(&mut self) {
        self.scheduled = false;
    }

    /// It finished on `node` (another node than this one when `remote`), making `value`
    /// (`None` when it stays there) of `size` encoded bytes (0 when unknown).
    fn finish(&mut self, value: Option<Value>, node: NodeId, size: u64, remote: bool) {
        self.scheduled = false;
        self.small = remote && value.is_some();
        self.size = size;
        self.value = value;
        self.node = Some(node);
    }

    /// Its value was lost with a node and is made again: where it ran and what its value
    /// was like are forgotten, and its attempts so far, which succeeded, no longer count
    /// against its retries. The node it had run on.
    fn reset_for_recompute(&mut self) -> Option<NodeId> {
        self.free_reruns = self.attempts;
        self.small = false;
        self.size = 0;
        self.node.take()
    }
}

/// A job in flight.
struct JobEntry {
    hold: Hold,
    token: Arc<AtomicBool>,
    /// Its thread's life, for a job on this node (`None` for an attempt elsewhere).
    life: Option<Arc<JobLife>>,
    /// `(index, attempt)` of the calls handed to it.
    calls: Vec<(u32, u32)>,
    /// When it was handed to its worker (only with a report; else 0).
    launched: u64,
    /// Where it runs.
    node: NodeId,
    /// When it started, for a job on a reservation (how long its calls take sizes the
    /// next batches of their shape).
    since: Option<Instant>,
}

pub(crate) struct DagRun {
    shared: Arc<RunShared>,
    /// The id this execution goes by on other nodes: `dag~this-node~` and 128 random
    /// bits, so that its state there is its own (another coordinator's DAG of the same
    /// id, or another execution of this one, never meets it) and nobody it did not tell
    /// can name it. Here it keeps the DAG's own id.
    wire: DagId,
    /// Whether the transport was told about `wire` (before the first remote call).
    wire_open: bool,
    events: Option<mpsc::Receiver<RunEvent>>,
    /// Where the resource manager sends this execution's grants: its inbox.
    grant_sink: Arc<dyn GrantSink>,
    settings: RunSettings,
    manager: Addr<ResourceManager>,
    store: Addr<ResultStore>,
    locations: Addr<LocationRegistry>,
    /// What the run knows of each function, by index.
    fns: Vec<FnState>,
    /// Other nodes sent functions of this execution (told to forget it at the end, which
    /// also stops what still runs there).
    remote_nodes: Vec<NodeId>,
    /// Whether the results held on other nodes were fetched for the caller.
    collected: bool,
    /// Nodes that left the cluster during the execution.
    lost: Vec<NodeId>,
    /// How many times collecting the results held elsewhere failed.
    collect_rounds: u32,
    /// The suspect (a function blamed for a node death) in flight, if any; others wait.
    suspect_running: Option<u32>,
    suspects_waiting: std::collections::VecDeque<(u32, Hold, NodeId)>,
    /// Ready functions without a cost, most urgent first, waiting for a slot.
    ready: BinaryHeap<(Rank, Reverse<u32>)>,
    slots: usize,
    jobs: HashMap<u64, JobEntry>,
    next_job: u64,
    pending_io: usize,
    remaining: usize,
    failure: Option<ExecuteError>,
    cancelled: bool,
    finishing: bool,
    reply: Option<Reply>,
    sink: Option<EventSink>,
    recorder: Option<Recorder>,
    trace: bool,
    rng: u64,
    to_free: Vec<FunctionId>,
    /// While a chunk of run events is handled: the results to store, by the node that
    /// made them, and the reservations to give back, sent once at the chunk's end (one
    /// message for many functions rather than a few per function).
    deferred: Option<Deferred>,
    shape_index: HashMap<ShapeKey, u32>,
    /// By shape id: the calls waiting for a reservation, most urgent first.
    awaiting: Vec<BTreeSet<(Reverse<Rank>, u32)>>,
    /// By shape id: how long one of its calls took in its last job on a reservation
    /// (zero until one ended): a batch holds no more than a job's time budget of them.
    shape_pace: Vec<Duration>,
    shape_keys: Vec<ShapeKey>,
    /// The shape last looked up.
    last_shape: Option<u32>,
    /// The reservations held, with what may reuse them.
    leases: HashMap<GrantId, Lease>,
    /// Waiting calls that ran on a reservation already held: their requests are
    /// withdrawn from the resource manager (with the next message to it).
    cancels: Vec<u32>,
    /// By shape id: its calls with a request at the resource manager.
    outstanding: Vec<u32>,
    /// By shape id: how many of its reservations the nodes hold at once (its last
    /// grant's `parallel`; 0 until one came).
    shape_parallel: Vec<u32>,
    /// Requests made by [`Self::top_up`], sent with the next message to the manager.
    outbox: Vec<Request>,
}

/// A finished function's id and its value, when it is held here.
type Made = (FunctionId, Option<Value>);

/// What the handling of a chunk of run events sends to the node's actors at its end.
#[derive(Default)]
struct Deferred {
    stores: Vec<(NodeId, Vec<Made>)>,
    releases: Vec<crate::resource_manager::GrantId>,
}

impl DagRun {
    pub(crate) fn new(setup: RunSetup) -> Self {
        let dag = &setup.shared.dag;
        let n = dag.len();
        let fns = (0..n)
            .map(|i| FnState::new(dag.deps(i).len() as u32, dag.dependents(i).len() as u32))
            .collect();
        let seed = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(setup.settings.requester.0);
            h.finish() | 1
        };
        let wire = match setup.settings.transport {
            Some(_) => DagId::new(format!(
                "{}~{}~{:032x}",
                dag.id(),
                setup.settings.node,
                handoff_core::random_u128()
            )),
            None => dag.id().clone(),
        };
        DagRun {
            wire,
            wire_open: false,
            events: Some(setup.events),
            grant_sink: Arc::new(setup.shared.events.clone()),
            slots: setup.settings.parallelism.max(1),
            settings: setup.settings,
            manager: setup.manager,
            store: setup.store,
            locations: setup.locations,
            fns,
            remote_nodes: Vec::new(),
            collected: false,
            lost: Vec::new(),
            collect_rounds: 0,
            suspect_running: None,
            suspects_waiting: std::collections::VecDeque::new(),
            ready: BinaryHeap::new(),
            jobs: HashMap::new(),
            next_job: 0,
            pending_io: 0,
            remaining: dag.regular_len(),
            failure: None,
            cancelled: false,
            finishing: false,
            reply: Some(setup.reply),
            trace: tracing::enabled!(tracing::Level::DEBUG),
            sink: setup.sink,
            recorder: setup.recorder,
            rng: seed,
            to_free: Vec::new(),
            deferred: None,
            shape_index: HashMap::new(),
            awaiting: Vec::new(),
            shape_pace: Vec::new(),
            shape_keys: Vec::new(),
            last_shape: None,
            leases: HashMap::new(),
            cancels: Vec::new(),
            outstanding: Vec::new(),
            shape_parallel: Vec::new(),
            outbox: Vec::new(),
            shared: setup.shared,
        }
    }

    fn dag(&self) -> &ValidatedDag {
        &self.shared.dag
    }

    fn id_of(&self, index: u32) -> FunctionId {
        self.shared.dag.function(index as usize).id().clone()
    }

    fn running(&self) -> bool {
        self.failure.is_none() && !self.cancelled
    }

    /// True when someone looks at events: a stream consumer, or `tracing` at debug level.
    fn observed(&self) -> bool {
        self.sink.is_some() || self.trace
    }

    fn emit(&mut self, at_micros: u64, kind: EventKind) {
        if self.trace {
            tracing::debug!(
                dag = %self.shared.dag.id(),
                function = kind.function().map(FunctionId::as_str),
                attempt = kind.attempt(),
                node = kind.node().map(NodeId::as_str),
                at_micros,
                details = ?kind,
                "{}",
                kind.name()
            );
        }
        if let Some(sink) = &mut self.sink {
            sink.send(Event {
                at_micros,
                dag: self.shared.dag.id().clone(),
                kind,
            });
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: plenty for spreading retry waits.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn timeout_of(&self, index: u32) -> Option<Duration> {
        self.dag()
            .function(index as usize)
            .timeout_override()
            .or(self.settings.timeout)
    }

    fn call_for(&self, index: u32) -> Call {
        let i = index as usize;
        let deps = self
            .shared
            .dag
            .deps(i)
            .iter()
            .map(|&d| {
                self.fns[d as usize]
                    .value
                    .clone()
                    .expect("a call is built here only once its dependencies' values are here")
            })
            .collect();
        Call {
            index,
            attempt: self.fns[i].next_attempt(),
            deps,
        }
    }

    /// Routes newly ready functions: costed ones to the resource manager, the rest to
    /// the slot queue.
    fn schedule(&mut self, ready: Vec<u32>, ctx: &mut Context<Self>) {
        let mut requests = Vec::new();
        // The shared shapes that got waiting calls.
        let mut touched: Vec<u32> = Vec::new();
        let observed = self.observed();
        let now = if observed || self.recorder.is_some() {
            now_micros()
        } else {
            0
        };
        for index in ready {
            self.fns[index as usize].scheduled = true;
            if let Some(recorder) = &mut self.recorder {
                recorder.queued(index, now);
            }
            if observed {
                let function = self.id_of(index);
                self.emit(now, EventKind::Ready { function });
            }
            let i = index as usize;
            let rank = self.settings.ranks[i];
            let f = self.shared.dag.function(i);
            let target = &self.settings.targets[i];
            let cost = cost_of(f);
            // Without a cost, a function runs in one of this execution's slots here,
            // unless its placement or its code's whereabouts say otherwise.
            let slot = cost.is_none()
                && self.shared.codes[i].is_some()
                && (self.settings.transport.is_none() || matches!(target, Target::Any));
            if slot {
                self.ready.push((rank, Reverse(index)));
            } else {
                match self.await_reservation(index) {
                    SHAPE_NONE => requests.push(self.request_for(index)),
                    shape => {
                        if touched.last() != Some(&shape) && !touched.contains(&shape) {
                            touched.push(shape);
                        }
                    }
                }
            }
        }
        for shape in touched {
            self.top_up(shape);
        }
        // Within a chunk of run events, sent once at its end (with its withdrawals).
        if self.deferred.is_none() {
            requests.append(&mut self.take_outbox());
        }
        self.send_requests(requests, ctx);
        self.dispatch_ready(ctx);
    }

    /// The reservation request of function `index` (already waiting, see
    /// [`Self::await_reservation`]).
    fn request_for(&mut self, index: u32) -> Request {
        let i = index as usize;
        let shape = self.known_shape(index);
        let f = self.shared.dag.function(i);
        let cost = match shape {
            SHAPE_NONE => Arc::new(cost_of(f).cloned().unwrap_or_default()),
            shape => Arc::clone(&self.shape_keys[shape as usize].cost),
        };
        Request {
            index,
            rank: self.settings.ranks[i],
            function: f.id().clone(),
            code: f.code().clone(),
            cost,
            target: self.settings.targets[i].clone(),
            locality: self.locality(i),
            avoid: self.fns[i].failed_on.clone(),
        }
    }

    /// Function `index` waits for a reservation: among the calls of its shape that one
    /// held may take. Its shape id.
    fn await_reservation(&mut self, index: u32) -> u32 {
        let shape = self.shape_id(index as usize);
        if shape != SHAPE_NONE {
            let rank = self.settings.ranks[index as usize];
            self.awaiting[shape as usize].insert((Reverse(rank), index));
        }
        shape
    }

    /// Makes sure the most urgent waiting calls of `shape` have a request at the resource
    /// manager: as many as reservations of the shape the nodes hold at once (its window).
    /// The rest need none: a granted reservation runs its call and a share of the calls
    /// still waiting, and is reused for the next ones. So the manager queues a few
    /// requests per shape instead of one per waiting call, and few are withdrawn. The
    /// most urgent waiting call always has one, so the shape's place in the manager's
    /// queue is what it would be with a request per call. New requests go to `outbox`.
    fn top_up(&mut self, shape: u32) {
        let s = shape as usize;
        let parallel = self.shape_parallel[s];
        let window = if parallel == 0 {
            FIRST_WINDOW
        } else {
            parallel
        } as usize;
        let missing: Vec<u32> = self.awaiting[s]
            .iter()
            .take(window)
            .map(|&(_, index)| index)
            .filter(|&index| self.fns[index as usize].asked == UNASKED)
            .collect();
        for index in missing {
            self.fns[index as usize].asked = QUEUED;
            self.outstanding[s] += 1;
            let request = self.request_for(index);
            self.outbox.push(request);
        }
    }

    /// Function `index` no longer waits: its request, if it has one, is not outstanding
    /// (one still in the outbox is not sent). Whether the manager has one to withdraw.
    fn unask(&mut self, shape: u32, index: u32) -> bool {
        let asked = &mut self.fns[index as usize].asked;
        if *asked == UNASKED {
            return false;
        }
        let sent = *asked == SENT;
        *asked = UNASKED;
        self.outstanding[shape as usize] -= 1;
        sent
    }

    /// The outbox's requests still wanted (their calls still wait), now sent.
    fn take_outbox(&mut self) -> Vec<Request> {
        let mut requests = std::mem::take(&mut self.outbox);
        let fns = &mut self.fns;
        requests.retain(|r| {
            // A call that stopped waiting has none; one that waits again has it once.
            let state = &mut fns[r.index as usize].asked;
            let wanted = *state == QUEUED;
            if wanted {
                *state = SENT;
            }
            wanted
        });
        requests
    }

    /// Function `index`'s shape id if computed and shared, else `SHAPE_NONE`.
    fn known_shape(&self, index: u32) -> u32 {
        match self.fns[index as usize].shape {
            SHAPE_UNSET => SHAPE_NONE,
            shape => shape,
        }
    }

    /// Sends reservation requests to the resource manager, in one message.
    fn send_requests(&mut self, mut requests: Vec<Request>, ctx: &mut Context<Self>) {
        if requests.is_empty() {
            return;
        }
        requests.sort_by_key(|r| Reverse(r.rank));
        let msg = Reserve {
            requester: self.settings.requester,
            requests,
            strategy: self.settings.strategy.clone(),
            notify: Arc::clone(&self.grant_sink),
        };
        self.send_to_manager(msg, ctx);
    }

    /// Function `i`'s shape id, or `SHAPE_NONE` when its calls never share a reservation.
    fn shape_id(&mut self, i: usize) -> u32 {
        if self.fns[i].shape != SHAPE_UNSET {
            return self.fns[i].shape;
        }
        let f = self.shared.dag.function(i);
        let pinned = match &self.settings.targets[i] {
            Target::Any => Some(None),
            Target::Pinned(node) => Some(Some(node.clone())),
            Target::Group { .. } => None,
        };
        let id = match pinned {
            Some(pinned) if self.timeout_of(i as u32).is_none() => {
                // Neighbours mostly share a shape: compared in place, no allocation.
                let cost = cost_of(f);
                if let Some(&last) = self.last_shape.as_ref()
                    && let Some(key) = self.shape_keys.get(last as usize)
                    && key.code == *f.code()
                    && key.pinned == pinned
                    && cost.map_or(key.cost.is_empty(), |c| *c == *key.cost)
                {
                    self.fns[i].shape = last;
                    return last;
                }
                let key = ShapeKey {
                    cost: Arc::new(cost.cloned().unwrap_or_default()),
                    code: f.code().clone(),
                    pinned,
                };
                let next = self.shape_index.len() as u32;
                let id = *self.shape_index.entry(key.clone()).or_insert(next);
                if id == next {
                    self.awaiting.push(BTreeSet::new());
                    self.shape_pace.push(Duration::ZERO);
                    self.outstanding.push(0);
                    self.shape_parallel.push(0);
                    self.shape_keys.push(key);
                }
                self.last_shape = Some(id);
                id
            }
            _ => SHAPE_NONE,
        };
        self.fns[i].shape = id;
        id
    }

    /// Function `index` got its own reservation: it no longer waits. False when it was
    /// not waiting (it already ran on another reservation of its shape).
    fn take_granted(&mut self, index: u32) -> bool {
        match self.known_shape(index) {
            SHAPE_NONE => true,
            shape => {
                self.unask(shape, index);
                let rank = self.settings.ranks[index as usize];
                self.awaiting[shape as usize].remove(&(Reverse(rank), index))
            }
        }
    }

    /// Takes up to `n` waiting calls of `shape` to run on a reservation held on `node`,
    /// most urgent first (their requests are withdrawn). A call whose last attempt failed
    /// on `node` is left to wait for another node, when there are others.
    fn take_waiting(&mut self, shape: u32, node: &NodeId, n: usize) -> Vec<u32> {
        let mut taken = Vec::new();
        if shape == SHAPE_NONE || n == 0 {
            return taken;
        }
        let set = &mut self.awaiting[shape as usize];
        if self.settings.transport.is_none() {
            while taken.len() < n {
                let Some((_, index)) = set.pop_first() else {
                    break;
                };
                taken.push(index);
            }
        } else {
            let fns = &self.fns;
            let picked: Vec<(Reverse<Rank>, u32)> = set
                .iter()
                .filter(|(_, index)| fns[*index as usize].failed_on.as_ref() != Some(node))
                .take(n)
                .copied()
                .collect();
            for entry in picked {
                set.remove(&entry);
                taken.push(entry.1);
            }
        }
        for &index in &taken {
            if self.unask(shape, index) {
                self.cancels.push(index);
            }
        }
        self.top_up(shape);
        taken
    }

    /// How many waiting calls of `shape` one reservation takes at once: its share when
    /// `parallel` reservations of the shape run together (a batch runs back to back).
    fn share(&self, shape: u32, parallel: u32, extra: usize) -> usize {
        if shape == SHAPE_NONE {
            return 0;
        }
        let pace = self.shape_pace[shape as usize];
        let in_budget = if pace.is_zero() {
            MAX_BATCH
        } else {
            (crate::executor::JOB_BUDGET.as_nanos() / pace.as_nanos()).max(1) as usize
        };
        (self.awaiting[shape as usize].len() + extra)
            .div_ceil(parallel.max(1) as usize)
            .min(MAX_BATCH)
            .min(in_budget)
    }

    /// Emits `Reserved` for calls that run on a reservation on `node`.
    fn emit_reserved(&mut self, batch: &[u32], node: &NodeId) {
        if self.observed() {
            let now = now_micros();
            for &index in batch {
                let attempt = self.fns[index as usize].next_attempt();
                if std::mem::replace(&mut self.fns[index as usize].announced, attempt) == attempt {
                    continue;
                }
                let function = self.id_of(index);
                let node = node.clone();
                self.emit(now, EventKind::Reserved { function, node });
            }
        }
    }

    /// A job that held reservation `hold` on `node` ended: the reservation runs the next
    /// waiting calls of its shape while it is young, else it goes back.
    fn reuse_or_release(&mut self, hold: Hold, node: &NodeId, ctx: &mut Context<Self>) {
        if let Hold::Reservation(grant) = hold
            && self.running()
            && let Some(lease) = self.leases.get(&grant)
            && lease.shape != SHAPE_NONE
            && lease.since.elapsed() < LEASE_BUDGET
        {
            let (shape, parallel) = (lease.shape, lease.parallel);
            let n = if *node == self.settings.node {
                self.share(shape, parallel, 0).max(1)
            } else {
                1
            };
            let batch = self.take_waiting(shape, node, n);
            if !batch.is_empty() {
                self.emit_reserved(&batch, node);
                self.launch(batch, hold, node.clone(), ctx);
                return;
            }
        }
        self.release(hold, ctx);
    }

    /// Sends the withdrawals of waiting calls that ran on reservations already held, then
    /// the requests made meanwhile (a call's withdrawal never overtakes its new request).
    fn flush_cancels(&mut self, ctx: &mut Context<Self>) {
        if !self.cancels.is_empty() {
            let msg = Cancel {
                requester: self.settings.requester,
                indices: std::mem::take(&mut self.cancels),
            };
            self.send_to_manager(msg, ctx);
        }
        let requests = self.take_outbox();
        self.send_requests(requests, ctx);
    }

    /// How many bytes of function `i`'s inputs each node holds (known only for values
    /// made on other nodes; the biggest first).
    fn locality(&self, i: usize) -> Vec<(NodeId, u64)> {
        if self.settings.transport.is_none() {
            return Vec::new();
        }
        let mut held: Vec<(NodeId, u64)> = Vec::new();
        for &d in self.shared.dag.deps(i) {
            let d = d as usize;
            let (Some(node), size) = (&self.fns[d].node, self.fns[d].size) else {
                continue;
            };
            if size == 0 {
                continue;
            }
            match held.iter_mut().find(|(n, _)| n == node) {
                Some((_, total)) => *total += size,
                None => held.push((node.clone(), size)),
            }
        }
        held.sort_by_key(|h| std::cmp::Reverse(h.1));
        held
    }

    fn dispatch_ready(&mut self, ctx: &mut Context<Self>) {
        while self.slots > 0 && !self.ready.is_empty() {
            let share = self.ready.len().div_ceil(self.slots).min(MAX_BATCH);
            let mut batch = Vec::with_capacity(share);
            while batch.len() < share {
                let Some(&(_, Reverse(index))) = self.ready.peek() else {
                    break;
                };
                // A function with a timeout runs in a job of its own.
                if self.timeout_of(index).is_some() {
                    if batch.is_empty() {
                        self.ready.pop();
                        batch.push(index);
                    }
                    break;
                }
                self.ready.pop();
                batch.push(index);
            }
            self.slots -= 1;
            let node = self.settings.node.clone();
            self.launch(batch, Hold::Slot, node, ctx);
        }
    }

    /// Starts a batch of functions on `node` (a batch of one on another node): here once
    /// every value they take is here, fetching those held elsewhere first.
    fn launch(&mut self, mut batch: Vec<u32>, hold: Hold, node: NodeId, ctx: &mut Context<Self>) {
        // A dependency lost with a node and being recomputed: the function waits for it
        // (it is scheduled again when its last dependency finishes). Only after a node
        // loss can a scheduled function have a pending dependency.
        if !self.lost.is_empty() {
            let fns = &mut self.fns;
            batch.retain(|&i| {
                let f = &mut fns[i as usize];
                let ready = f.pending == 0;
                if !ready {
                    f.unschedule();
                }
                ready
            });
        }
        if batch.is_empty() {
            self.release(hold, ctx);
            return;
        }
        if node != self.settings.node
            && let Some(transport) = self.settings.transport.clone()
        {
            for index in batch {
                // Functions suspected of killing nodes run one at a time, so that the next
                // node death is blamed on the one running.
                if self.fns[index as usize].deaths > 0 && self.suspect_running.is_some() {
                    self.suspects_waiting.push_back((index, hold, node.clone()));
                    continue;
                }
                self.start_remote(index, hold, node.clone(), &transport, ctx);
            }
            return;
        }
        // Values are held elsewhere only with a transport.
        let mut missing: Vec<u32> = match self.settings.transport {
            None => Vec::new(),
            Some(_) => batch
                .iter()
                .flat_map(|&i| self.shared.dag.deps(i as usize))
                .copied()
                .filter(|&d| self.fns[d as usize].value.is_none())
                .collect(),
        };
        if missing.is_empty() {
            let calls = batch.into_iter().map(|i| self.call_for(i)).collect();
            self.start_job(calls, hold, node, ctx);
            return;
        }
        missing.sort_unstable();
        missing.dedup();
        self.fetch_then_launch(batch, missing, hold, node, ctx);
    }

    /// Fetches the values `batch` needs from the nodes that hold them, then launches it;
    /// a value that cannot be fetched fails the attempts that needed it.
    fn fetch_then_launch(
        &mut self,
        batch: Vec<u32>,
        missing: Vec<u32>,
        hold: Hold,
        node: NodeId,
        ctx: &mut Context<Self>,
    ) {
        let Some(transport) = self.settings.transport.clone() else {
            // Values are held elsewhere only when there is a transport.
            self.fail(self.stopped_error(), ctx);
            self.release(hold, ctx);
            return;
        };
        let dag = self.wire.clone();
        let fetches: Vec<_> = missing
            .iter()
            .map(|&d| {
                let holder = self.fns[d as usize]
                    .node
                    .clone()
                    .unwrap_or_else(|| self.settings.node.clone());
                transport.fetch(dag.clone(), self.id_of(d), holder)
            })
            .collect();
        self.pending_io += 1;
        let fetched = futures::future::join_all(fetches);
        ctx.spawn(fetched.into_actor(self).map(move |fetched, act, ctx| {
            act.pending_io -= 1;
            let mut failure = None;
            for (d, outcome) in missing.into_iter().zip(fetched) {
                match outcome {
                    Ok(value) => {
                        act.fns[d as usize].value.get_or_insert(value);
                    }
                    Err(error) => failure = Some(error),
                }
            }
            if !act.running() {
                act.release(hold, ctx);
            } else if let Some(error) = failure {
                act.release(hold, ctx);
                let mut newly_ready = Vec::new();
                for index in batch {
                    let attempt = act.fns[index as usize].next_attempt();
                    act.fns[index as usize].attempts = attempt;
                    let code = act.shared.dag.function(index as usize).code().clone();
                    let error = CallError::Unavailable {
                        code,
                        node: act.settings.node.clone(),
                        reason: error.to_string(),
                    };
                    if let Some(recorder) = &mut act.recorder {
                        let (now, node) = (now_micros(), &act.settings.node);
                        recorder.attempt(index, attempt, node, (now, now), Err(&error));
                    }
                    act.on_failed_attempt(index, attempt, error, &mut newly_ready, ctx);
                }
                if act.running() {
                    act.schedule(newly_ready, ctx);
                }
            } else {
                act.launch(batch, hold, node, ctx);
            }
            act.maybe_finish(ctx);
        }));
    }

    /// Sends one attempt to another node; its outcome comes back on the run's channel
    /// like a local job's.
    fn start_remote(
        &mut self,
        index: u32,
        hold: Hold,
        node: NodeId,
        transport: &SharedTransport,
        ctx: &mut Context<Self>,
    ) {
        let i = index as usize;
        let id = self.next_job;
        self.next_job += 1;
        let attempt = self.fns[i].next_attempt();
        let timeout = self.timeout_of(index);
        let dag = &self.shared.dag;
        let arguments = dag
            .deps(i)
            .iter()
            .map(|&d| {
                let d = d as usize;
                let function = dag.function(d).id().clone();
                match &self.fns[d].value {
                    Some(value) if self.fns[d].small => RemoteArgument::Value {
                        function,
                        node: self.fns[d]
                            .node
                            .clone()
                            .unwrap_or_else(|| self.settings.node.clone()),
                        value: value.clone(),
                    },
                    _ => RemoteArgument::Held {
                        function,
                        node: self.fns[d]
                            .node
                            .clone()
                            .unwrap_or_else(|| self.settings.node.clone()),
                    },
                }
            })
            .collect();
        // Told to forget the execution at its end, or when it is cancelled with this
        // attempt still running there (which stops it).
        if !self.remote_nodes.contains(&node) {
            self.remote_nodes.push(node.clone());
        }
        let report_start = self.fns[i].deaths > 0;
        if report_start {
            self.suspect_running = Some(index);
        }
        if !self.wire_open {
            self.wire_open = true;
            transport.open(&self.wire);
        }
        let call = RemoteCall {
            report_start,
            dag: self.wire.clone(),
            node: node.clone(),
            function: dag.function(i).clone(),
            inline: handoff_core::inline_args(dag, i)
                .into_iter()
                .map(|a| dag.function(a).clone())
                .collect(),
            arguments,
            attempt,
            timeout,
        };
        let token = Arc::new(AtomicBool::new(false));
        self.jobs.insert(
            id,
            JobEntry {
                hold,
                token,
                life: None,
                calls: vec![(index, attempt)],
                launched: self.launch_instant(),
                node: node.clone(),
                since: matches!(hold, Hold::Reservation(_)).then(Instant::now),
            },
        );
        let timestamps = self.shared.timestamps;
        let started_micros = if timestamps { now_micros() } else { 0 };
        let events = self.shared.events.clone();
        let report = move |result: RemoteResult| {
            let finished_micros = if timestamps { now_micros() } else { 0 };
            let (result, size) = match result {
                Ok(done) => (Ok(done.value), done.size),
                Err(error) => (Err(error), 0),
            };
            let report = JobReport {
                job: id,
                outcomes: vec![Outcome {
                    index,
                    attempt,
                    started_micros,
                    finished_micros,
                    result,
                    size,
                }],
                unrun: Vec::new(),
                returned: Vec::new(),
                node,
            };
            match events.try_send(RunEvent::Finished(report)) {
                Ok(()) => {}
                // A burst of outcomes filled the run's channel: this one waits for room.
                Err(mpsc::error::TrySendError::Full(event)) => {
                    let wait = async move {
                        let _ = events.send(event).await;
                    };
                    // Outside a runtime only when the network layer is torn down.
                    match tokio::runtime::Handle::try_current() {
                        Ok(runtime) => drop(runtime.spawn(wait)),
                        Err(_) => futures::executor::block_on(wait),
                    }
                }
                // The run has ended (cancelled or timed out); nothing waits.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        };
        transport.execute_then(call, Box::new(report));
        if let Some(after) = timeout {
            ctx.run_later(after, move |act, ctx| act.on_timeout(id, after, ctx));
        }
    }

    fn start_job(&mut self, calls: Vec<Call>, hold: Hold, node: NodeId, ctx: &mut Context<Self>) {
        if let Some(reason) = self.shared.abandoned.full() {
            // Every thread the node may give calls is held by calls nobody waits for:
            // this one fails (and is retried) instead of waiting for a thread.
            tracing::warn!(dag = %self.shared.dag.id(), "{reason}");
            self.release(hold, ctx);
            let mut newly_ready = Vec::new();
            for call in calls {
                let i = call.index as usize;
                let error = CallError::Unavailable {
                    code: self.shared.dag.function(i).code().clone(),
                    node: node.clone(),
                    reason: reason.clone(),
                };
                self.fns[i].attempts = call.attempt;
                if !self.running() {
                    break;
                }
                self.on_failed_attempt(call.index, call.attempt, error, &mut newly_ready, ctx);
            }
            if self.running() {
                self.schedule(newly_ready, ctx);
            }
            self.maybe_finish(ctx);
            return;
        }
        let id = self.next_job;
        self.next_job += 1;
        let token = Arc::new(AtomicBool::new(false));
        let life = JobLife::new();
        if let [call] = calls.as_slice()
            && let Some(timeout) = self.timeout_of(call.index)
        {
            ctx.run_later(timeout, move |act, ctx| act.on_timeout(id, timeout, ctx));
        }
        self.jobs.insert(
            id,
            JobEntry {
                hold,
                token: Arc::clone(&token),
                life: Some(Arc::clone(&life)),
                calls: calls.iter().map(|c| (c.index, c.attempt)).collect(),
                launched: self.launch_instant(),
                node: node.clone(),
                since: matches!(hold, Hold::Reservation(_)).then(Instant::now),
            },
        );
        let free_calls = match hold {
            Hold::Slot => crate::executor::FREE_CALLS,
            Hold::Reservation(_) => 1,
        };
        self.shared.spawn(Job {
            id,
            calls,
            node,
            token,
            life,
            free_calls,
        });
    }

    /// Now, when a report is being recorded (the start of attempts that never report it).
    fn launch_instant(&self) -> u64 {
        if self.recorder.is_some() {
            now_micros()
        } else {
            0
        }
    }

    fn send_to_manager<M>(&mut self, msg: M, ctx: &mut Context<Self>)
    where
        M: Message<Result = ()> + Send + 'static,
        ResourceManager: Handler<M>,
    {
        let fut = self.manager.send(msg);
        self.awaited(fut, ctx);
    }

    /// Runs a message send to another actor of the node alongside the run; the run does
    /// not reply before it completes, and fails if that actor has stopped.
    fn awaited<T: 'static>(
        &mut self,
        fut: impl std::future::Future<Output = Result<T, MailboxError>> + 'static,
        ctx: &mut Context<Self>,
    ) {
        self.pending_io += 1;
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.pending_io -= 1;
            if res.is_err() {
                act.fail(act.stopped_error(), ctx);
            }
            act.maybe_finish(ctx);
        }));
    }

    fn stopped_error(&self) -> ExecuteError {
        ExecuteError::NodeStopped {
            node: self.settings.node.clone(),
            dag: self.dag().id().clone(),
        }
    }

    fn release(&mut self, hold: Hold, ctx: &mut Context<Self>) {
        match hold {
            Hold::Slot => self.slots += 1,
            Hold::Reservation(grant) => {
                self.leases.remove(&grant);
                if let Some(deferred) = &mut self.deferred {
                    deferred.releases.push(grant);
                    return;
                }
                let msg = Release {
                    grants: vec![grant],
                };
                self.send_to_manager(msg, ctx);
            }
        }
    }

    fn on_reserved(&mut self, grants: Vec<Grant>, ctx: &mut Context<Self>) {
        let mut give_back = Vec::new();
        // First every granted call stops waiting, so that no batch below takes a call
        // whose own grant is in this message.
        let mut usable = Vec::with_capacity(grants.len());
        for grant in grants {
            match grant.outcome {
                Ok((id, node)) if self.running() => {
                    let shape = self.known_shape(grant.index);
                    if shape != SHAPE_NONE {
                        self.shape_parallel[shape as usize] = grant.parallel.max(1);
                    }
                    if self.take_granted(grant.index) {
                        usable.push((grant.index, id, node, grant.parallel));
                    } else {
                        // It already ran on a reservation of its shape.
                        give_back.push(id);
                    }
                }
                Ok((id, _)) => give_back.push(id),
                Err(mut error) => {
                    // The nodes it names, by the names they announced.
                    if let Some(transport) = &self.settings.transport {
                        error.name_nodes(|node| transport.node_name(node));
                    }
                    self.fail(ExecuteError::Allocation(error), ctx)
                }
            }
        }
        for (index, id, node, parallel) in usable {
            if !self.running() {
                give_back.push(id);
                continue;
            }
            let shape = self.known_shape(index);
            self.leases.insert(
                id,
                Lease {
                    shape,
                    since: Instant::now(),
                    parallel,
                },
            );
            // Here, the reservation runs a batch: this call and its share of the calls
            // of its shape still waiting, back to back.
            let mut batch = vec![index];
            if node == self.settings.node {
                let more = self.share(shape, parallel, 1).saturating_sub(1);
                batch.extend(self.take_waiting(shape, &node, more));
            }
            self.emit_reserved(&batch, &node);
            self.launch(batch, Hold::Reservation(id), node, ctx);
            if shape != SHAPE_NONE && self.running() {
                self.top_up(shape);
            }
        }
        if let Some(deferred) = &mut self.deferred {
            deferred.releases.append(&mut give_back);
            return;
        }
        self.flush_cancels(ctx);
        if !give_back.is_empty() {
            let msg = Release { grants: give_back };
            self.send_to_manager(msg, ctx);
        }
    }

    fn on_finished(&mut self, report: JobReport, ctx: &mut Context<Self>) {
        // A job that timed out or was cancelled has already been settled.
        let Some(entry) = self.jobs.remove(&report.job) else {
            return;
        };
        if let Some(&(index, _)) = entry.calls.first()
            && self.suspect_running == Some(index)
        {
            self.next_suspect(ctx);
        }
        // A slot goes back now; a reservation once this job's outcomes are handled (the
        // calls they make ready may reuse it).
        let reservation = matches!(entry.hold, Hold::Reservation(_));
        if !reservation {
            self.release(entry.hold, ctx);
        }
        // Calls the job handed back for lack of time are still scheduled: back in the
        // ready queue (or waiting for a reservation) as they were.
        let mut returned = Vec::new();
        if self.running() {
            for index in report.returned {
                if reservation {
                    returned.push(index);
                } else {
                    self.ready
                        .push((self.settings.ranks[index as usize], Reverse(index)));
                }
            }
        }
        let report_ran = report.outcomes.len();
        // Calls the job handed back unstarted are ready again, ahead of the rest.
        let mut newly_ready = report.unrun;
        let mut stored = Vec::with_capacity(report.outcomes.len());
        let mut finished = Vec::new();
        let observed = self.observed();
        for outcome in report.outcomes {
            let i = outcome.index as usize;
            self.fns[i].attempts = outcome.attempt;
            if let Some(recorder) = &mut self.recorder {
                let result = outcome.result.as_ref().map(|_| outcome.size);
                let times = (outcome.started_micros, outcome.finished_micros);
                recorder.attempt(outcome.index, outcome.attempt, &report.node, times, result);
            }
            let function = self.id_of(outcome.index);
            if observed {
                let (function, node) = (function.clone(), report.node.clone());
                let attempt = outcome.attempt;
                self.emit(
                    outcome.started_micros,
                    EventKind::Started {
                        function,
                        attempt,
                        node,
                    },
                );
            }
            match outcome.result {
                // Already finished (an earlier attempt's report): nothing to do.
                Ok(_) if self.fns[i].node.is_some() => {}
                Ok(value) => {
                    let remote = report.node != self.settings.node;
                    if observed {
                        let (function, node) = (function.clone(), report.node.clone());
                        let attempt = outcome.attempt;
                        self.emit(
                            outcome.finished_micros,
                            EventKind::Finished {
                                function,
                                attempt,
                                node,
                            },
                        );
                    }
                    stored.push((function, value.clone()));
                    if self.settings.free_intermediates {
                        finished.push(outcome.index);
                    }
                    self.fns[i].finish(value, report.node.clone(), outcome.size, remote);
                    self.remaining -= 1;
                    // A function run elsewhere had no chain successor run after it.
                    let chained = if remote {
                        if !self.remote_nodes.contains(&report.node) {
                            self.remote_nodes.push(report.node.clone());
                        }
                        NO_NEXT
                    } else {
                        self.shared.chain_next[i]
                    };
                    for &d in self.shared.dag.dependents(i) {
                        let dependent = &mut self.fns[d as usize];
                        if dependent.node.is_some() {
                            continue;
                        }
                        dependent.pending = dependent.pending.saturating_sub(1);
                        if dependent.pending == 0 && d != chained && !dependent.scheduled {
                            newly_ready.push(d);
                        }
                    }
                }
                Err(error) => {
                    if observed {
                        let node = report.node.clone();
                        let (attempt, error) = (outcome.attempt, error.clone());
                        self.emit(
                            outcome.finished_micros,
                            EventKind::Failed {
                                function,
                                attempt,
                                node,
                                error,
                            },
                        );
                    }
                    // The next attempt goes elsewhere where it can: after the function's
                    // own failure, and after the node could not take it (a lost node is
                    // out of the cluster anyway).
                    if !matches!(error, CallError::NodeLost { .. }) {
                        self.fns[i].failed_on = Some(report.node.clone());
                    }
                    self.on_failed_attempt(
                        outcome.index,
                        outcome.attempt,
                        error,
                        &mut newly_ready,
                        ctx,
                    );
                }
            }
        }
        // After a failure nothing more is kept (the values were freed with the reply).
        if !stored.is_empty() && self.running() {
            self.store_values(stored, &report.node, ctx);
            if self.settings.free_intermediates {
                for index in finished {
                    self.consumed(index);
                }
                self.flush_frees(ctx);
            }
        }
        if self.running() {
            self.schedule(newly_ready, ctx);
        }
        if reservation {
            if let (Hold::Reservation(grant), Some(since)) = (entry.hold, entry.since)
                && let Some(lease) = self.leases.get(&grant)
                && lease.shape != SHAPE_NONE
            {
                // Only a job that ran past its budget says its calls are slow (a short
                // job's time is mostly the hand-off to its thread).
                let took = since.elapsed();
                let ran = (report_ran as u32).max(1);
                self.shape_pace[lease.shape as usize] = if took > crate::executor::JOB_BUDGET {
                    took / ran
                } else {
                    Duration::ZERO
                };
            }
            // Handed back calls wait again, first in line for the reservation when it is
            // kept; those it does not take ask for one. (Their withdrawals, sent for
            // requests already gone, change nothing.)
            let mut requests = Vec::new();
            let mut touched: Vec<u32> = Vec::new();
            for &index in &returned {
                match self.await_reservation(index) {
                    SHAPE_NONE => requests.push(self.request_for(index)),
                    shape if !touched.contains(&shape) => touched.push(shape),
                    _ => {}
                }
            }
            self.reuse_or_release(entry.hold, &entry.node, ctx);
            for shape in touched {
                self.top_up(shape);
            }
            self.send_requests(requests, ctx);
        }
        self.maybe_finish(ctx);
    }

    /// A function finished: its inputs lose a consumer, and values nobody needs any
    /// more are freed (unless kept).
    fn consumed(&mut self, index: u32) {
        let i = index as usize;
        for k in 0..self.shared.dag.deps(i).len() {
            let d = self.shared.dag.deps(i)[k] as usize;
            // A function run again (its value was lost with a node) consumes again.
            self.fns[d].consumers = self.fns[d].consumers.saturating_sub(1);
            if self.fns[d].consumers == 0 {
                self.free(d);
            }
        }
        if self.fns[i].consumers == 0 {
            self.free(i);
        }
    }

    fn free(&mut self, index: usize) {
        if self.settings.keep[index] || self.fns[index].value.is_none() {
            return;
        }
        self.fns[index].value = None;
        let function = self.shared.dag.function(index).id().clone();
        if self.observed() {
            self.emit(
                now_micros(),
                EventKind::Freed {
                    function: function.clone(),
                },
            );
        }
        self.to_free.push(function);
    }

    fn flush_frees(&mut self, ctx: &mut Context<Self>) {
        // Freed after the chunk's results are stored (a free must not overtake the store).
        if self.to_free.is_empty() || self.deferred.is_some() {
            return;
        }
        let msg = FreeValues {
            dag: self.shared.dag.id().clone(),
            ids: std::mem::take(&mut self.to_free),
        };
        let fut = self.store.send(msg);
        self.awaited(fut, ctx);
    }

    /// A failed attempt: retried after the backoff while attempts remain, else the
    /// execution fails.
    /// Starts the next suspect waiting, if any (the one in flight has ended).
    fn next_suspect(&mut self, ctx: &mut Context<Self>) {
        self.suspect_running = None;
        let Some(transport) = self.settings.transport.clone() else {
            return;
        };
        while let Some((index, hold, node)) = self.suspects_waiting.pop_front() {
            if !self.running() || self.lost.contains(&node) {
                self.release(hold, ctx);
                if self.running() {
                    self.fns[index as usize].unschedule();
                    self.schedule(vec![index], ctx);
                }
                continue;
            }
            self.start_remote(index, hold, node, &transport, ctx);
            return;
        }
    }

    fn on_failed_attempt(
        &mut self,
        index: u32,
        attempt: u32,
        error: CallError,
        newly_ready: &mut Vec<u32>,
        ctx: &mut Context<Self>,
    ) {
        let i = index as usize;
        // A node died while running it. The first death is counted against every
        // function that was there (nothing tells them apart yet); after that, the
        // function is a suspect: it runs alone among suspects and reports when it starts,
        // and a death counts only if it was running.
        if let CallError::NodeLost { node, running, .. } = &error
            && (self.fns[i].deaths == 0 || *running)
        {
            self.fns[i].deaths += 1;
            if !self.fns[i].death_nodes.contains(node) {
                self.fns[i].death_nodes.push(node.clone());
            }
            if self.fns[i].deaths >= self.settings.max_node_deaths {
                let err = ExecuteError::CrashLoop {
                    function: self.id_of(index),
                    deaths: self.fns[i].deaths,
                    nodes: self.fns[i].death_nodes.clone(),
                };
                self.fail(err, ctx);
                return;
            }
        }
        // An attempt that could not run where it was sent is not the function's failure:
        // it runs again without counting (up to a bound, so an unusable cluster still ends).
        if matches!(
            error,
            CallError::Unavailable { .. } | CallError::NodeLost { .. }
        ) && self.fns[i].free_reruns < MAX_FREE_RERUNS
        {
            self.fns[i].free_reruns += 1;
        }
        let counted = attempt.saturating_sub(self.fns[i].free_reruns);
        let f = self.shared.dag.function(i);
        let allowed = f
            .max_retries_override()
            .unwrap_or(self.settings.max_retries);
        tracing::debug!(dag = %self.shared.dag.id(), function = %f.id(), attempt, %error, "attempt failed");
        if counted > allowed || error.is_permanent() {
            let err = ExecuteError::FunctionFailed {
                function: f.id().clone(),
                attempts: counted,
                last_error: error,
            };
            self.fail(err, ctx);
            return;
        }
        if self.fns[i].pending > 0 {
            // A dependency is being recomputed: it runs again once that is done.
            self.fns[i].unschedule();
            return;
        }
        let backoff = f.backoff_override().unwrap_or(self.settings.backoff);
        let random = self.random();
        let delay = backoff.delay(attempt, random);
        if self.observed() {
            let function = self.id_of(index);
            let kind = EventKind::Retried {
                function,
                next_attempt: attempt + 1,
                backoff: delay,
            };
            self.emit(now_micros(), kind);
        }
        if delay.is_zero() {
            newly_ready.push(index);
        } else {
            ctx.run_later(delay, move |act, ctx| {
                if act.running() {
                    act.schedule(vec![index], ctx);
                }
            });
        }
    }

    /// An attempt ran past its timeout: it fails, its slot or reservation is given back
    /// at once, and its thread is told to stop (whatever it later returns is ignored).
    fn on_timeout(&mut self, job: u64, after: Duration, ctx: &mut Context<Self>) {
        let Some(entry) = self.jobs.remove(&job) else {
            return;
        };
        if let Some(&(index, _)) = entry.calls.first()
            && self.suspect_running == Some(index)
        {
            self.next_suspect(ctx);
        }
        entry.token.store(true, Ordering::Relaxed);
        self.abandon(&entry);
        self.release(entry.hold, ctx);
        let Some(&(index, attempt)) = entry.calls.first() else {
            return;
        };
        self.fns[index as usize].attempts = attempt;
        let error = CallError::TimedOut {
            code: self.shared.dag.function(index as usize).code().clone(),
            after,
        };
        if let Some(recorder) = &mut self.recorder {
            let node = &entry.node;
            let times = (entry.launched, now_micros());
            recorder.attempt(index, attempt, node, times, Err(&error));
        }
        if self.observed() {
            let function = self.id_of(index);
            let node = self.settings.node.clone();
            let kind = EventKind::Failed {
                function,
                attempt,
                node,
                error: error.clone(),
            };
            self.emit(now_micros(), kind);
        }
        let mut newly_ready = Vec::new();
        self.on_failed_attempt(index, attempt, error, &mut newly_ready, ctx);
        if self.running() {
            self.schedule(newly_ready, ctx);
        }
        self.maybe_finish(ctx);
    }

    /// Records where each value lives (`node`) and keeps those that are here (`Some`) in
    /// the node's result store.
    fn store_values(
        &mut self,
        values: Vec<(FunctionId, Option<Value>)>,
        node: &NodeId,
        ctx: &mut Context<Self>,
    ) {
        if let Some(deferred) = &mut self.deferred {
            match deferred.stores.iter_mut().find(|(n, _)| n == node) {
                Some((_, group)) => group.extend(values),
                None => deferred.stores.push((node.clone(), values)),
            }
            return;
        }
        let dag = self.shared.dag.id().clone();
        if self.observed() {
            for (id, _) in &values {
                let kind = EventKind::Stored {
                    function: id.clone(),
                    node: node.clone(),
                };
                self.emit(now_micros(), kind);
            }
        }
        let locations = values
            .iter()
            .map(|(id, _)| (id.clone(), node.clone()))
            .collect();
        let values = values
            .into_iter()
            .filter_map(|(id, value)| Some((id, value?)))
            .collect();
        let store = self.store.send(StoreValues {
            dag: dag.clone(),
            values,
        });
        let register = self.locations.send(RegisterLocations { dag, locations });
        self.awaited(async move { store.await.and(register.await) }, ctx);
    }

    /// A node left the cluster: the values that lived only there and are still needed
    /// (by an unfinished function, or by the caller) are recomputed, with whatever of their
    /// inputs is gone too (recursively). Attempts running there fail on their own (the
    /// transport reports them) and run again elsewhere.
    fn on_node_lost(&mut self, node: NodeId, ctx: &mut Context<Self>) {
        if !self.running() || self.lost.contains(&node) {
            return;
        }
        self.lost.push(node.clone());
        // It stays among the nodes told to forget the execution when it ends: a node cut
        // off or frozen may come back holding values of attempts that ran on.
        let touched = self.remote_nodes.contains(&node);
        if !touched {
            return;
        }
        if self.observed() {
            self.emit(now_micros(), EventKind::NodeLost { node: node.clone() });
        }
        self.recompute_lost(node, ctx);
    }

    /// Resets the functions whose values were lost with `node` and are still needed (and
    /// their lost inputs, recursively), and schedules those that can run now.
    fn recompute_lost(&mut self, node: NodeId, ctx: &mut Context<Self>) {
        let dag = self.shared.dag.clone();
        let n = dag.len();
        let done = |act: &Self, i: usize| act.fns[i].node.is_some();
        let gone = |act: &Self, i: usize| {
            act.fns[i].value.is_none()
                && act.fns[i]
                    .node
                    .as_ref()
                    .is_some_and(|h| act.lost.contains(h) || *h == act.settings.node)
        };
        let needed = |act: &Self, i: usize| {
            act.settings.keep[i] || dag.dependents(i).iter().any(|&s| !done(act, s as usize))
        };
        let mut reset = vec![false; n];
        let mut stack: Vec<usize> = (0..n)
            .filter(|&i| {
                !dag.function(i).is_inline()
                    && self.fns[i].node.as_ref() == Some(&node)
                    && self.fns[i].value.is_none()
                    && needed(self, i)
            })
            .collect();
        while let Some(i) = stack.pop() {
            if reset[i] {
                continue;
            }
            reset[i] = true;
            for &p in dag.deps(i) {
                let p = p as usize;
                if done(self, p) && !reset[p] && gone(self, p) {
                    stack.push(p);
                }
            }
        }
        let again: Vec<usize> = (0..n).filter(|&i| reset[i]).collect();
        if again.is_empty() {
            return;
        }
        tracing::info!(dag = %dag.id(), %node, count = again.len(), "recomputing values lost with a node");
        for &i in &again {
            let held = self.fns[i]
                .reset_for_recompute()
                .unwrap_or_else(|| node.clone());
            self.remaining += 1;
            if self.observed() {
                let function = dag.function(i).id().clone();
                let kind = EventKind::Recomputing {
                    function,
                    node: held,
                };
                self.emit(now_micros(), kind);
            }
        }
        for x in 0..n {
            if !done(self, x) && !dag.function(x).is_inline() {
                self.fns[x].pending = dag
                    .deps(x)
                    .iter()
                    .filter(|&&d| !done(self, d as usize))
                    .count() as u32;
            }
        }
        let ready: Vec<u32> = again
            .into_iter()
            .filter(|&i| self.fns[i].pending == 0 && !self.fns[i].scheduled)
            .map(|i| i as u32)
            .collect();
        self.schedule(ready, ctx);
    }

    /// Fetches the results the caller keeps that are held on other nodes only; true when
    /// there were any (the run finishes once they are here).
    fn collect_results(&mut self, ctx: &mut Context<Self>) -> bool {
        let Some(transport) = self.settings.transport.clone() else {
            return false;
        };
        let dag = self.shared.dag.clone();
        let wanted: Vec<usize> = (0..dag.len())
            .filter(|&i| {
                self.settings.keep[i]
                    && !dag.function(i).is_inline()
                    && self.fns[i].value.is_none()
                    && self.fns[i].node.is_some()
            })
            .collect();
        if wanted.is_empty() {
            return false;
        }
        let fetches: Vec<_> = wanted
            .iter()
            .filter_map(|&i| {
                let holder = self.fns[i].node.clone()?;
                Some(transport.fetch(self.wire.clone(), dag.function(i).id().clone(), holder))
            })
            .collect();
        self.pending_io += 1;
        let fetched = futures::future::join_all(fetches);
        ctx.spawn(fetched.into_actor(self).map(move |fetched, act, ctx| {
            act.pending_io -= 1;
            let mut lost_meanwhile = Vec::new();
            let mut failed = None;
            for (i, outcome) in wanted.into_iter().zip(fetched) {
                match outcome {
                    Ok(value) => act.fns[i].value = Some(value),
                    // Its node left while the results were collected: recomputed.
                    Err(error) if act.lost.contains(&error.node) => {
                        lost_meanwhile.push(error.node);
                    }
                    Err(error) => failed = Some(error),
                }
            }
            if act.running() {
                if !lost_meanwhile.is_empty() {
                    for node in lost_meanwhile {
                        act.recompute_lost(node, ctx);
                    }
                    act.collected = false;
                }
                if let Some(error) = failed {
                    // The node may be leaving (its departure not seen yet): collect again
                    // a few times before giving up.
                    act.collect_rounds += 1;
                    if act.collect_rounds > COLLECT_ROUNDS {
                        act.fail(ExecuteError::ResultUnavailable(error), ctx);
                    } else {
                        let pause = COLLECT_PAUSE * act.collect_rounds;
                        act.pending_io += 1;
                        ctx.run_later(pause, |act, ctx| {
                            act.pending_io -= 1;
                            act.collected = false;
                            act.maybe_finish(ctx);
                        });
                    }
                }
            }
            act.maybe_finish(ctx);
        }));
        true
    }

    fn fail(&mut self, error: ExecuteError, ctx: &mut Context<Self>) {
        if !self.running() {
            return;
        }
        tracing::warn!(dag = %self.shared.dag.id(), %error, "execution failed; stopping the rest of the DAG");
        self.failure = Some(error);
        self.shared.cancelled.store(true, Ordering::Relaxed);
        self.ready.clear();
        // Nobody waits for what still runs (the failure is told at once).
        for entry in self.jobs.values() {
            self.abandon(entry);
        }
        self.maybe_finish(ctx);
    }

    /// Counts a job on this node whose calls nobody waits for any more, while its thread
    /// has not returned (see `Abandoned`).
    fn abandon(&self, entry: &JobEntry) {
        if let Some(life) = &entry.life {
            self.shared.abandoned.abandon(life);
        }
    }

    /// Replies with the failure now, if not done yet, and frees the values of the DAG
    /// (the attempts still running store nothing more).
    fn reply_failure(&mut self) {
        let Some(error) = self.failure.clone() else {
            return;
        };
        let Some(reply) = self.reply.take() else {
            return;
        };
        tracing::debug!(dag = %self.shared.dag.id(), running = self.jobs.len(), "failure told before its running attempts returned");
        free_dag(&self.store, &self.locations, self.shared.dag.id());
        let _ = reply.send(Err(error));
    }

    /// Cancels the execution: nothing new starts, running attempts are told to stop and
    /// their slots and reservations are given back at once.
    fn cancel(&mut self, ctx: &mut Context<Self>) {
        self.stop_now(None, ctx);
    }

    /// The deadline passed: the execution stops as a cancel does, and fails naming the
    /// regular functions that had not finished.
    fn on_deadline(&mut self, deadline: Duration, ctx: &mut Context<Self>) {
        if !self.running() || self.finishing {
            return;
        }
        let dag = self.shared.dag.clone();
        let unfinished: Vec<FunctionId> = (0..dag.len())
            .filter(|&i| !dag.function(i).is_inline() && self.fns[i].node.is_none())
            .map(|i| dag.function(i).id().clone())
            .collect();
        tracing::warn!(dag = %dag.id(), ?deadline, unfinished = unfinished.len(), "the execution's deadline passed; stopping it");
        let error = ExecuteError::DeadlineExceeded {
            dag: dag.id().clone(),
            deadline,
            unfinished,
        };
        self.stop_now(Some(error), ctx);
    }

    /// Stops the execution at once: nothing new starts, running attempts are told to
    /// stop and their slots and reservations are given back. The outcome is `failure`
    /// when given, else `Cancelled`.
    fn stop_now(&mut self, failure: Option<ExecuteError>, ctx: &mut Context<Self>) {
        if !self.running() || self.finishing {
            return;
        }
        self.cancelled = true;
        if let Some(failure) = failure {
            self.failure = Some(failure);
        }
        self.shared.cancelled.store(true, Ordering::Relaxed);
        self.ready.clear();
        let observed = self.observed();
        let jobs: Vec<JobEntry> = self.jobs.drain().map(|(_, e)| e).collect();
        for entry in jobs {
            entry.token.store(true, Ordering::Relaxed);
            self.abandon(&entry);
            if let Some(recorder) = &mut self.recorder {
                let now = now_micros();
                for &(index, attempt) in &entry.calls {
                    let node = &entry.node;
                    recorder.cancelled(index, attempt, node, entry.launched, now);
                }
            }
            if observed {
                for &(index, attempt) in &entry.calls {
                    let function = self.id_of(index);
                    self.emit(now_micros(), EventKind::Cancelled { function, attempt });
                }
            }
            // Reservations go back with the withdrawal below; slots need nothing.
        }
        self.maybe_finish(ctx);
    }

    /// Sends what the chunk of run events being handled deferred: its results to the
    /// store (and their locations), then the values freed meanwhile, then the
    /// reservations given back.
    fn flush_deferred(&mut self, ctx: &mut Context<Self>) {
        let Some(deferred) = self.deferred.take() else {
            return;
        };
        for (node, values) in deferred.stores {
            self.store_values(values, &node, ctx);
        }
        self.flush_frees(ctx);
        self.flush_cancels(ctx);
        if !deferred.releases.is_empty() {
            let msg = Release {
                grants: deferred.releases,
            };
            self.send_to_manager(msg, ctx);
        }
    }

    fn maybe_finish(&mut self, ctx: &mut Context<Self>) {
        // Within a chunk of run events: checked at its end, once its results are stored.
        if self.deferred.is_some() {
            return;
        }
        let done = !self.running() || self.remaining == 0;
        if self.finishing || !done || self.pending_io > 0 {
            return;
        }
        if !self.jobs.is_empty() {
            // A failure is told at once; the run lives on until the attempts still running
            // return (their code may not look at its cancellation), keeping their
            // reservations until then and reporting their ends in the events.
            self.reply_failure();
            return;
        }
        if self.running() && !self.collected {
            self.collected = true;
            if self.collect_results(ctx) {
                return;
            }
        }
        self.finishing = true;
        if let Some(transport) = &self.settings.transport
            && !self.remote_nodes.is_empty()
            && !(self.settings.keep_values && self.failure.is_none() && !self.cancelled)
        {
            // The caller has every result it keeps (fetched here); the other nodes drop
            // theirs now.
            let nodes = std::mem::take(&mut self.remote_nodes);
            transport.forget(self.wire.clone(), nodes);
        }
        // Give back anything still held (granted after a failure, or queued), then reply.
        let withdraw = self.manager.send(Withdraw {
            requester: self.settings.requester,
        });
        ctx.wait(withdraw.into_actor(self).map(|_, act, ctx| {
            let dag_id = act.shared.dag.id().clone();
            let results = Results::new(
                act.shared.dag.clone(),
                act.fns.iter_mut().map(|f| f.value.take()).collect(),
                act.fns.iter_mut().map(|f| f.node.take()).collect(),
            );
            let mut outcome = if let Some(error) = act.failure.take() {
                if act.reply.is_some() {
                    free_dag(&act.store, &act.locations, &dag_id);
                }
                Err(error)
            } else if act.cancelled {
                free_dag(&act.store, &act.locations, &dag_id);
                Err(ExecuteError::Cancelled {
                    dag: dag_id,
                    finished: results,
                })
            } else {
                let guard = (!act.settings.keep_values).then(|| {
                    Arc::new(ValuesGuard {
                        dag: dag_id.clone(),
                        store: act.store.clone(),
                        locations: act.locations.clone(),
                        armed: AtomicBool::new(true),
                    })
                });
                Ok(ExecutionResult {
                    dag_id,
                    results,
                    guard,
                    report: None,
                })
            };
            let ok = outcome.is_ok();
            if let Some(recorder) = act.recorder.take() {
                let transport = act.settings.transport.clone();
                let name_of = |node: &NodeId| transport.as_ref().and_then(|t| t.node_name(node));
                let report = recorder.finish(&act.shared.dag, ok, now_micros(), name_of);
                if let Ok(done) = &mut outcome {
                    done.report = Some(report);
                }
            }
            if act.trace {
                tracing::debug!(dag = %act.shared.dag.id(), ok, "ended");
            }
            if let Some(sink) = act.sink.take() {
                sink.close(Event {
                    at_micros: now_micros(),
                    dag: act.shared.dag.id().clone(),
                    kind: EventKind::Ended { ok },
                });
            }
            if let Some(reply) = act.reply.take() {
                let _ = reply.send(outcome);
            }
            ctx.stop();
        }));
    }
}

impl Actor for DagRun {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if self.finishing {
            return;
        }
        // Stopped abnormally (a panic in a handler): stop the jobs, give back every
        // reservation, free the values, and tell the caller.
        self.shared.cancelled.store(true, Ordering::Relaxed);
        for entry in self.jobs.values() {
            entry.token.store(true, Ordering::Relaxed);
            self.abandon(entry);
        }
        let withdraw = Withdraw {
            requester: self.settings.requester,
        };
        send_detached(&self.manager, withdraw);
        free_dag(&self.store, &self.locations, self.shared.dag.id());
        if let Some(transport) = &self.settings.transport
            && !self.remote_nodes.is_empty()
        {
            let nodes = std::mem::take(&mut self.remote_nodes);
            transport.forget(self.wire.clone(), nodes);
        }
        let error = self
            .failure
            .take()
            .unwrap_or_else(|| ExecuteError::Internal {
                dag: self.shared.dag.id().clone(),
                message: "the execution's coordinator stopped".to_owned(),
            });
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(Err(error));
        }
    }

    fn started(&mut self, ctx: &mut Self::Context) {
        let span = self.shared.span.clone();
        let _entered = span.enter();
        if let Some(events) = self.events.take() {
            ctx.add_stream(Events(events));
        }
        let dag = self.shared.dag.clone();
        let roots: Vec<u32> = (0..dag.len())
            .filter(|&i| !dag.function(i).is_inline() && dag.deps(i).is_empty())
            .map(|i| i as u32)
            .collect();
        if let Some(deadline) = self.settings.deadline {
            ctx.run_later(deadline, move |act, ctx| act.on_deadline(deadline, ctx));
        }
        self.schedule(roots, ctx);
        self.maybe_finish(ctx);
    }
}

impl StreamHandler<Vec<RunEvent>> for DagRun {
    /// Handles the run events that were waiting, in order. The results of the finished
    /// functions among them are stored, and their reservations given back, once at the
    /// end (before any other kind of event is handled).
    fn handle(&mut self, events: Vec<RunEvent>, ctx: &mut Self::Context) {
        let span = self.shared.span.clone();
        let _entered = span.enter();
        let handled = guarded_with("execution coordinator", ctx, |ctx| {
            // A cancel whose message did not fit in the channel is seen through the flag.
            if self.running() && self.shared.cancelled.load(Ordering::Relaxed) {
                self.cancel(ctx);
            }
            for event in events {
                match event {
                    RunEvent::Finished(report) => {
                        self.deferred.get_or_insert_with(Deferred::default);
                        self.on_finished(report, ctx);
                    }
                    // Grants too: what they send the manager goes with the chunk's.
                    RunEvent::Reserved(grants) => {
                        self.deferred.get_or_insert_with(Deferred::default);
                        self.on_reserved(grants, ctx);
                    }
                    other => {
                        self.flush_deferred(ctx);
                        match other {
                            RunEvent::Finished(_) => {}
                            RunEvent::Reserved(grants) => self.on_reserved(grants, ctx),
                            RunEvent::Cancel => self.cancel(ctx),
                            RunEvent::NodeLost(node) => self.on_node_lost(node, ctx),
                            #[cfg(feature = "fault-injection")]
                            RunEvent::Crash => {
                                panic!(
                                    "fault injection: the execution's coordinator was told to crash"
                                )
                            }
                        }
                    }
                }
            }
            self.flush_deferred(ctx);
            self.maybe_finish(ctx);
        });
        if let Err(panicked) = handled {
            // The actor is stopping: `stopped` gives everything back.
            self.failure.get_or_insert(ExecuteError::Internal {
                dag: self.shared.dag.id().clone(),
                message: panicked.message,
            });
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        // The run holds a sender itself, so the stream ends only when the run stops.
    }
}

/// A function's cost, if it has one (a cost of nothing is none).
fn cost_of(f: &handoff_core::Function) -> Option<&Resources> {
    f.cost().filter(|c| !c.is_empty())
}

/// The most run events handled as one chunk.
const EVENT_CHUNK: usize = 256;

/// A bounded receiver as a stream of chunks: the events waiting when it is polled, at
/// most [`EVENT_CHUNK`].
struct Events(mpsc::Receiver<RunEvent>);

impl futures::Stream for Events {
    type Item = Vec<RunEvent>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Vec<RunEvent>>> {
        let mut chunk = Vec::new();
        match self.0.poll_recv_many(cx, &mut chunk, EVENT_CHUNK) {
            std::task::Poll::Ready(0) => std::task::Poll::Ready(None),
            std::task::Poll::Ready(_) => std::task::Poll::Ready(Some(chunk)),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}
