//! The coordinator of one DAG execution: tracks readiness, asks for reservations,
//! dispatches jobs, handles outcomes, timeouts, retries and cancellation, emits the
//! execution's events, and replies once.
//!
//! [`DagRun`] is the actor; its work is split by concern: [`state`] (what it keeps of
//! each function and job), [`reserve`] (reservations, shapes and their window of
//! requests, leases), [`dispatch`] (ready functions to slots or reservations, jobs here
//! and attempts elsewhere), [`outcome`] (job reports, values stored and freed),
//! [`failure`] (retries, timeouts, node loss and recomputation, stopping), [`finish`]
//! (collecting results, the reply) and [`inbox`] (the events it receives).

mod dispatch;
mod failure;
mod finish;
mod inbox;
mod outcome;
mod reserve;
mod state;

pub use finish::ExecutionResult;
pub(crate) use finish::send_detached;
pub(crate) use inbox::RunEvent;

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use futures::channel::oneshot;
use handoff_core::{
    AllocationStrategy, Backoff, DagId, FunctionId, NodeId, Rank, Target, ValidatedDag,
};
use tokio::sync::mpsc;

use crate::error::ExecuteError;
use crate::events::{Event, EventKind, EventSink};
use crate::executor::{Hold, RunShared};
use crate::location_registry::LocationRegistry;
use crate::remote::SharedTransport;
use crate::report::Recorder;
use crate::resource_manager::{
    GrantId, GrantSink, Request, RequesterId, ResourceManager, Withdraw,
};
use crate::result_store::ResultStore;

use finish::free_dag;
use inbox::Events;
use reserve::{Lease, ShapeKey};
use state::{Deferred, FnState, JobEntry};

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
