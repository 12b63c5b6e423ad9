//! The coordinator of one DAG execution: tracks readiness, asks for reservations,
//! dispatches jobs, handles outcomes and retries, and replies once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix::prelude::*;
use futures::channel::oneshot;
use handoff_core::{
    AllocationStrategy, FunctionId, NodeId, Placement, Results, ValidatedDag, Value,
};
use tokio::sync::mpsc;

use crate::error::ExecuteError;
use crate::executor::{Call, Hold, Job, JobReport, RunEvent, RunShared};
use crate::location_registry::{LocationRegistry, RegisterLocations};
use crate::resource_manager::{
    Release, Request, RequesterId, Reserve, ResourceManager, Target, Withdraw,
};
use crate::result_store::{ResultStore, StoreValues};

/// The most calls one job takes from the ready queue at once.
const MAX_BATCH: usize = 64;

/// What `execute` returns: the DAG id, every result and where each function ran.
#[derive(Debug, Clone)]
pub struct ExecutionResult {
    /// The DAG's id.
    pub dag_id: handoff_core::DagId,
    /// Every regular function's result, and its node.
    pub results: Results,
}

impl ExecutionResult {
    /// Where each regular function ran.
    pub fn allocations(&self) -> std::collections::BTreeMap<FunctionId, NodeId> {
        self.results.allocations()
    }
}

pub(crate) type Reply = oneshot::Sender<Result<ExecutionResult, ExecuteError>>;

/// Everything a run needs, prepared by the node coordinator.
pub(crate) struct RunSetup {
    pub(crate) shared: Arc<RunShared>,
    pub(crate) events: mpsc::Receiver<RunEvent>,
    pub(crate) requester: RequesterId,
    pub(crate) node: NodeId,
    pub(crate) strategy: AllocationStrategy,
    pub(crate) max_retries: u32,
    pub(crate) parallelism: usize,
    pub(crate) targets: Vec<Target>,
    pub(crate) manager: Addr<ResourceManager>,
    pub(crate) store: Addr<ResultStore>,
    pub(crate) locations: Addr<LocationRegistry>,
    pub(crate) reply: Reply,
}

pub(crate) struct DagRun {
    shared: Arc<RunShared>,
    events: Option<mpsc::Receiver<RunEvent>>,
    requester: RequesterId,
    node: NodeId,
    strategy: AllocationStrategy,
    max_retries: u32,
    targets: Vec<Target>,
    manager: Addr<ResourceManager>,
    store: Addr<ResultStore>,
    locations: Addr<LocationRegistry>,
    /// Unfinished dependencies of each function.
    pending: Vec<u32>,
    values: Vec<Option<Value>>,
    nodes: Vec<Option<NodeId>>,
    attempts: Vec<u32>,
    /// Ready functions without a cost, waiting for a slot.
    ready: VecDeque<u32>,
    slots: usize,
    in_flight: usize,
    pending_io: usize,
    remaining: usize,
    failure: Option<ExecuteError>,
    finishing: bool,
    reply: Option<Reply>,
}

impl DagRun {
    pub(crate) fn new(setup: RunSetup) -> Self {
        let dag = &setup.shared.dag;
        let n = dag.len();
        let pending = (0..n).map(|i| dag.deps(i).len() as u32).collect();
        DagRun {
            events: Some(setup.events),
            requester: setup.requester,
            node: setup.node,
            strategy: setup.strategy,
            max_retries: setup.max_retries,
            targets: setup.targets,
            manager: setup.manager,
            store: setup.store,
            locations: setup.locations,
            pending,
            values: vec![None; n],
            nodes: vec![None; n],
            attempts: vec![0; n],
            ready: VecDeque::new(),
            slots: setup.parallelism.max(1),
            in_flight: 0,
            pending_io: 0,
            remaining: dag.regular_len(),
            failure: None,
            finishing: false,
            reply: Some(setup.reply),
            shared: setup.shared,
        }
    }

    fn dag(&self) -> &ValidatedDag {
        &self.shared.dag
    }

    fn call_for(&mut self, index: u32) -> Call {
        let i = index as usize;
        let deps = self
            .shared
            .dag
            .deps(i)
            .iter()
            .map(|&d| {
                self.values[d as usize]
                    .clone()
                    .expect("a function is dispatched only after its dependencies finished")
            })
            .collect();
        Call {
            index,
            attempt: self.attempts[i] + 1,
            deps,
        }
    }

    /// Routes newly ready functions: costed ones to the resource manager, the rest to
    /// the slot queue.
    fn schedule(&mut self, ready: impl IntoIterator<Item = u32>, ctx: &mut Context<Self>) {
        let mut requests = Vec::new();
        for index in ready {
            let f = self.shared.dag.function(index as usize);
            match f.cost() {
                Some(cost) if !cost.is_empty() => requests.push(Request {
                    index,
                    function: f.id().clone(),
                    cost: cost.clone(),
                    target: self.targets[index as usize].clone(),
                }),
                _ => self.ready.push_back(index),
            }
        }
        if !requests.is_empty() {
            let msg = Reserve {
                requester: self.requester,
                requests,
                strategy: self.strategy.clone(),
                notify: self.shared.events.clone(),
            };
            self.send_to_manager(msg, ctx);
        }
        self.dispatch_ready();
    }

    fn dispatch_ready(&mut self) {
        while self.slots > 0 && !self.ready.is_empty() {
            let share = self.ready.len().div_ceil(self.slots).min(MAX_BATCH);
            let mut calls = Vec::with_capacity(share);
            for _ in 0..share {
                if let Some(index) = self.ready.pop_front() {
                    calls.push(self.call_for(index));
                }
            }
            self.slots -= 1;
            self.in_flight += 1;
            self.shared.spawn(Job {
                calls,
                hold: Hold::Slot,
                node: self.node.clone(),
            });
        }
    }

    fn send_to_manager<M>(&mut self, msg: M, ctx: &mut Context<Self>)
    where
        M: Message<Result = ()> + Send + 'static,
        ResourceManager: Handler<M>,
    {
        let fut = self.manager.send(msg);
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
            node: self.node.clone(),
            dag: self.dag().id().clone(),
        }
    }

    fn on_reserved(
        &mut self,
        grants: Vec<crate::resource_manager::Grant>,
        ctx: &mut Context<Self>,
    ) {
        let mut give_back = Vec::new();
        for grant in grants {
            match grant.outcome {
                Ok((id, node)) if self.failure.is_none() => {
                    let call = self.call_for(grant.index);
                    self.in_flight += 1;
                    self.shared.spawn(Job {
                        calls: vec![call],
                        hold: Hold::Reservation(id),
                        node,
                    });
                }
                Ok((id, _)) => give_back.push(id),
                Err(error) => self.fail(ExecuteError::Allocation(error), ctx),
            }
        }
        if !give_back.is_empty() {
            let msg = Release { grants: give_back };
            self.send_to_manager(msg, ctx);
        }
    }

    fn on_finished(&mut self, report: JobReport, ctx: &mut Context<Self>) {
        self.in_flight -= 1;
        match report.hold {
            Hold::Slot => self.slots += 1,
            Hold::Reservation(grant) => {
                let msg = Release {
                    grants: vec![grant],
                };
                self.send_to_manager(msg, ctx);
            }
        }
        // Calls the job handed back unstarted are ready again, ahead of the rest.
        let mut newly_ready = report.unrun;
        let mut stored = Vec::with_capacity(report.outcomes.len());
        for outcome in report.outcomes {
            let i = outcome.index as usize;
            self.attempts[i] = outcome.attempt;
            match outcome.result {
                Ok(value) => {
                    let id = self.shared.dag.function(i).id().clone();
                    stored.push((id, value.clone()));
                    self.values[i] = Some(value);
                    self.nodes[i] = Some(report.node.clone());
                    self.remaining -= 1;
                    let chained = self.shared.chain_next[i];
                    for &d in self.shared.dag.dependents(i) {
                        let left = &mut self.pending[d as usize];
                        *left -= 1;
                        if *left == 0 && d != chained {
                            newly_ready.push(d);
                        }
                    }
                }
                Err(error) => {
                    let f = self.shared.dag.function(i);
                    let allowed = f.max_retries_override().unwrap_or(self.max_retries);
                    tracing::debug!(dag = %self.shared.dag.id(), function = %f.id(), attempt = outcome.attempt, %error, "attempt failed");
                    if outcome.attempt <= allowed {
                        newly_ready.push(outcome.index);
                    } else {
                        let err = ExecuteError::FunctionFailed {
                            function: f.id().clone(),
                            attempts: outcome.attempt,
                            last_error: error,
                        };
                        self.fail(err, ctx);
                    }
                }
            }
        }
        if !stored.is_empty() {
            self.store_values(stored, &report.node, ctx);
        }
        if self.failure.is_none() {
            self.schedule(newly_ready, ctx);
        }
        self.maybe_finish(ctx);
    }

    fn store_values(
        &mut self,
        values: Vec<(FunctionId, Value)>,
        node: &NodeId,
        ctx: &mut Context<Self>,
    ) {
        let dag = self.shared.dag.id().clone();
        let locations = values
            .iter()
            .map(|(id, _)| (id.clone(), node.clone()))
            .collect();
        let store = self.store.send(StoreValues {
            dag: dag.clone(),
            values,
        });
        let register = self.locations.send(RegisterLocations { dag, locations });
        self.pending_io += 1;
        ctx.spawn(
            async move { store.await.and(register.await) }
                .into_actor(self)
                .map(|res, act, ctx| {
                    act.pending_io -= 1;
                    if res.is_err() {
                        act.fail(act.stopped_error(), ctx);
                    }
                    act.maybe_finish(ctx);
                }),
        );
    }

    fn fail(&mut self, error: ExecuteError, ctx: &mut Context<Self>) {
        if self.failure.is_some() {
            return;
        }
        tracing::warn!(dag = %self.shared.dag.id(), %error, "execution failed; stopping the rest of the DAG");
        self.failure = Some(error);
        self.shared.cancelled.store(true, Ordering::Relaxed);
        self.ready.clear();
        self.maybe_finish(ctx);
    }

    fn maybe_finish(&mut self, ctx: &mut Context<Self>) {
        let done = self.failure.is_some() || self.remaining == 0;
        if self.finishing || !done || self.in_flight > 0 || self.pending_io > 0 {
            return;
        }
        self.finishing = true;
        // Give back anything still held (granted after a failure, or queued), then reply.
        let withdraw = self.manager.send(Withdraw {
            requester: self.requester,
        });
        ctx.wait(withdraw.into_actor(self).map(|_, act, ctx| {
            let outcome = match act.failure.take() {
                Some(error) => Err(error),
                None => Ok(ExecutionResult {
                    dag_id: act.shared.dag.id().clone(),
                    results: Results::new(
                        act.shared.dag.clone(),
                        std::mem::take(&mut act.values),
                        std::mem::take(&mut act.nodes),
                    ),
                }),
            };
            if let Some(reply) = act.reply.take() {
                let _ = reply.send(outcome);
            }
            ctx.stop();
        }));
    }
}

impl Actor for DagRun {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(events) = self.events.take() {
            ctx.add_stream(Events(events));
        }
        let dag = self.shared.dag.clone();
        let roots: Vec<u32> = (0..dag.len())
            .filter(|&i| !dag.function(i).is_inline() && dag.deps(i).is_empty())
            .map(|i| i as u32)
            .collect();
        self.schedule(roots, ctx);
        self.maybe_finish(ctx);
    }
}

impl StreamHandler<RunEvent> for DagRun {
    fn handle(&mut self, event: RunEvent, ctx: &mut Self::Context) {
        match event {
            RunEvent::Finished(report) => self.on_finished(report, ctx),
            RunEvent::Reserved(grants) => self.on_reserved(grants, ctx),
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        // The run holds a sender itself, so the stream ends only when the run stops.
    }
}

/// How a function's reservation is targeted, from its placement and collocation group.
pub(crate) fn targets(dag: &ValidatedDag) -> Vec<Target> {
    let n = dag.len();
    let mut group_size = vec![0_u32; n];
    for i in 0..n {
        group_size[dag.collocation_root(i)] += 1;
    }
    (0..n)
        .map(|i| {
            let root = dag.collocation_root(i);
            let pinned = match dag.function(root).placement() {
                Placement::Pinned(node) => Some(node.clone()),
                _ => None,
            };
            if group_size[root] > 1 {
                Target::Group {
                    root: root as u32,
                    pinned,
                }
            } else {
                pinned.map_or(Target::Any, Target::Pinned)
            }
        })
        .collect()
}

/// A bounded receiver as a stream.
struct Events(mpsc::Receiver<RunEvent>);

impl futures::Stream for Events {
    type Item = RunEvent;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<RunEvent>> {
        self.0.poll_recv(cx)
    }
}
