//! The node's coordinator: accepts DAGs to execute and starts one `DagRun` actor per
//! execution. A service can hold its address and send it [`Execute`] messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use actix::prelude::*;
use futures::channel::oneshot;
use handoff_core::{
    AllocationStrategy, ArgumentInclusion, NodeId, Placement, Registry, Resources, ValidatedDag,
    candidates,
};
use tokio::sync::mpsc;

use crate::error::ExecuteError;
use crate::executor::{NO_NEXT, RunShared};
use crate::location_registry::LocationRegistry;
use crate::resource_manager::{Capacities, RequesterId, ResourceManager};
use crate::result_store::ResultStore;
use crate::run::{DagRun, ExecutionResult, RunSetup, targets};

/// How to execute a DAG.
#[derive(Debug, Clone)]
pub struct ExecuteOptions {
    /// How nodes are picked for functions with a cost. Default: first available.
    pub allocation_strategy: AllocationStrategy,
    /// How many times a failing function is retried, unless it overrides it. Default 3.
    pub max_retries: u32,
    /// How many functions without a cost may run at once; default: the node's setting.
    pub parallelism: Option<usize>,
    /// Ignore costs and placement and run everything on this node.
    pub local: bool,
}

impl Default for ExecuteOptions {
    fn default() -> Self {
        ExecuteOptions {
            allocation_strategy: AllocationStrategy::FirstAvailable,
            max_retries: 3,
            parallelism: None,
            local: false,
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
}

/// Executes a validated DAG; replies when every function has finished, or with the
/// first error once nothing of the DAG runs any more.
#[derive(Debug, Message)]
#[rtype(result = "Result<ExecutionResult, ExecuteError>")]
pub struct Execute {
    /// The DAG.
    pub dag: ValidatedDag,
    /// How to execute it.
    pub options: ExecuteOptions,
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
        }
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
        tracing::warn!(node = %self.node, "coordinator restarting");
    }
}

/// Resolves each function's code and checks its arity.
fn resolve_codes(
    dag: &ValidatedDag,
    registry: &Registry,
) -> Result<Vec<handoff_core::Code>, ExecuteError> {
    dag.functions()
        .iter()
        .map(|f| {
            let code = registry
                .get(f.code().as_str())
                .map_err(|_| ExecuteError::UnknownCode {
                    function: f.id().clone(),
                    code: f.code().clone(),
                })?;
            let given = match f.argument_inclusion() {
                ArgumentInclusion::Variadic => f.arg_ids().len(),
                ArgumentInclusion::AsList => 1,
            } + f.extra_args().len();
            if code.arity() != given {
                return Err(ExecuteError::ArityMismatch {
                    function: f.id().clone(),
                    code: f.code().clone(),
                    expected: code.arity(),
                    given,
                });
            }
            Ok(code.clone())
        })
        .collect()
}

/// For each function, the dependent that runs right after it on the same thread: one
/// whose only dependency it is, with the same cost and no placement of its own.
fn chain_successors(dag: &ValidatedDag) -> Vec<u32> {
    // A collocation root others follow must go through placement itself.
    let mut followed = vec![false; dag.len()];
    for i in 0..dag.len() {
        let root = dag.collocation_root(i);
        if root != i {
            followed[root] = true;
        }
    }
    let mut next = vec![NO_NEXT; dag.len()];
    for (s, &is_followed) in followed.iter().enumerate() {
        let f = dag.function(s);
        let deps = dag.deps(s);
        if f.is_inline()
            || deps.len() != 1
            || is_followed
            || *f.placement() != Placement::Any
            || dag.collocation_root(s) != s
        {
            continue;
        }
        let p = deps[0] as usize;
        if next[p] == NO_NEXT && dag.function(p).cost() == f.cost() {
            next[p] = s as u32;
        }
    }
    next
}

/// Fails early when a function could never be placed on the nodes that can run functions.
fn check_feasible(dag: &ValidatedDag, nodes: &[(NodeId, Resources)]) -> Result<(), ExecuteError> {
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); dag.len()];
    for i in 0..dag.len() {
        if !dag.function(i).is_inline() {
            members[dag.collocation_root(i)].push(i);
        }
    }
    for (root, group) in members.iter().enumerate().filter(|(_, g)| !g.is_empty()) {
        let pinned = match dag.function(root).placement() {
            Placement::Pinned(node) => Some(node),
            _ => None,
        };
        for &m in group {
            let f = dag.function(m);
            let costs: Vec<&Resources> = f.cost().into_iter().collect();
            candidates(f.id(), &costs, nodes, pinned)?;
        }
        let costs: Vec<&Resources> = group
            .iter()
            .filter_map(|&m| dag.function(m).cost())
            .collect();
        candidates(dag.function(root).id(), &costs, nodes, pinned)?;
    }
    Ok(())
}

impl Handler<Execute> for Coordinator {
    type Result = ResponseFuture<Result<ExecutionResult, ExecuteError>>;

    fn handle(&mut self, msg: Execute, _ctx: &mut Self::Context) -> Self::Result {
        let Execute { dag, options } = msg;
        let dag = if options.local { dag.localized() } else { dag };
        let span = tracing::debug_span!("execute", dag = %dag.id(), functions = dag.len());
        let _enter = span.enter();
        let codes = match resolve_codes(&dag, &self.registry) {
            Ok(codes) => codes,
            Err(error) => return Box::pin(async move { Err(error) }),
        };
        let (tx, rx) = mpsc::channel(256);
        let shared = Arc::new(RunShared {
            chain_next: chain_successors(&dag),
            codes,
            cancelled: AtomicBool::new(false),
            events: tx,
            dag: dag.clone(),
        });
        let (reply, answer) = oneshot::channel();
        let setup = RunSetup {
            targets: targets(&dag),
            shared,
            events: rx,
            requester: RequesterId(self.next_requester.fetch_add(1, Ordering::Relaxed)),
            node: self.node.clone(),
            strategy: options.allocation_strategy,
            max_retries: options.max_retries,
            parallelism: options.parallelism.unwrap_or(self.parallelism),
            manager: self.manager.clone(),
            store: self.store.clone(),
            locations: self.locations.clone(),
            reply,
        };
        let manager = self.manager.clone();
        let node = self.node.clone();
        let needs_check = dag
            .functions()
            .iter()
            .any(|f| f.cost().is_some() || *f.placement() != Placement::Any);
        Box::pin(async move {
            let stopped = || ExecuteError::NodeStopped {
                node: node.clone(),
                dag: dag.id().clone(),
            };
            if needs_check {
                let nodes = manager.send(Capacities).await.map_err(|_| stopped())?;
                check_feasible(&dag, &nodes)?;
            }
            DagRun::new(setup).start();
            answer.await.map_err(|_| stopped())?
        })
    }
}
