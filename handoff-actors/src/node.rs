//! Starting a node, and the handle a service uses to talk to it.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use handoff_core::{
    CallError, CodeName, DagId, FunctionId, NodeId, Registry, ResourceTracker, Resources,
    SimpleResourceTracker, ValidatedDag, Value,
};

use crate::coordinator::{Coordinator, Execute, ExecuteOptions, ExecutionHandle, NodeLost, Submit};
use crate::error::{ExecuteError, NodeError};
use crate::location_registry::{LocationRegistry, LookupLocation, RegisterLocation};
use crate::remote::{BatchRunner, GetParts, Ran, RunFunction, SetTransport, SharedTransport};
use crate::resource_manager::{
    ForgetPeer, NodeResources, RegisterNode, RegisterPeer, RegisteredNodes, ResourceManager,
    ResourcesAvailable,
};
use crate::result_store::{CountValues, DropDag, FindLocal, ResultStore, StoreValue, WaitFor};
use crate::run::ExecutionResult;
use crate::supervision::CountRestarts;

/// What a node is started with.
pub struct NodeConfig {
    id: NodeId,
    capabilities: Resources,
    registry: Registry,
    tracker: Box<dyn ResourceTracker>,
    parallelism: usize,
    node_grace: Duration,
    max_abandoned_calls: usize,
}

/// Default for [`NodeConfig::max_abandoned_calls`]: 256, half of the runtime's
/// blocking-pool threads (tokio's default of 512), so that calls nobody waits for any
/// more can never take every thread.
pub const DEFAULT_MAX_ABANDONED_CALLS: usize = 256;

/// Default for [`NodeConfig::node_grace`]: 10 s.
pub const DEFAULT_NODE_GRACE: Duration = Duration::from_secs(10);

impl NodeConfig {
    /// A node with this id and function registry, no resources, the in-memory tracker
    /// and a parallelism of the number of cores.
    pub fn new(id: impl Into<NodeId>, registry: Registry) -> Self {
        NodeConfig {
            id: id.into(),
            capabilities: Resources::new(),
            registry,
            tracker: Box::new(SimpleResourceTracker::new()),
            parallelism: std::thread::available_parallelism().map_or(1, usize::from),
            node_grace: DEFAULT_NODE_GRACE,
            max_abandoned_calls: DEFAULT_MAX_ABANDONED_CALLS,
        }
    }

    /// How many calls that timed out, or whose execution was cancelled or failed, may
    /// still be running on this node's threads (their code not looking at
    /// `is_cancelled()`) before the node starts no new call (default
    /// [`DEFAULT_MAX_ABANDONED_CALLS`], at least 1). Past it, a call is refused with
    /// `CallError::Unavailable` saying why, instead of waiting for a thread that may never
    /// come back; it starts again as those calls return.
    pub fn max_abandoned_calls(mut self, max: usize) -> Self {
        self.max_abandoned_calls = max.max(1);
        self
    }

    /// How long a function that must run on a node that left the cluster (pinned, or
    /// collocated with functions placed there) waits for it to come back before failing
    /// with `AllocationError::NodeDown` (default [`DEFAULT_NODE_GRACE`]).
    pub fn node_grace(mut self, grace: Duration) -> Self {
        self.node_grace = grace;
        self
    }

    /// The resources this node offers.
    pub fn capabilities(mut self, capabilities: Resources) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// Uses your own resource tracker.
    pub fn tracker(mut self, tracker: impl ResourceTracker) -> Self {
        self.tracker = Box::new(tracker);
        self
    }

    /// How many functions without a cost one execution runs at once (at least 1).
    pub fn parallelism(mut self, parallelism: usize) -> Self {
        self.parallelism = parallelism.max(1);
        self
    }

    /// The node's id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// The grace period set with [`node_grace`](Self::node_grace).
    pub fn grace(&self) -> Duration {
        self.node_grace
    }

    /// The code names in the node's registry, sorted.
    pub fn code_names(&self) -> Vec<CodeName> {
        self.registry.names()
    }

    /// The signatures of the typed codes in the node's registry, by name, sorted
    /// ([`handoff_core::Registry::signatures`]).
    pub fn signatures(&self) -> Vec<(CodeName, std::sync::Arc<str>)> {
        self.registry.signatures()
    }
}

/// The root of a node's actor tree: it knows every child's address.
pub struct NodeSupervisor {
    handle: Option<NodeHandle>,
}

impl Actor for NodeSupervisor {
    type Context = Context<Self>;
}

/// Asks the supervisor for the node's handle.
#[derive(Debug, Message)]
#[rtype(result = "Option<NodeHandle>")]
pub struct GetHandle;

impl Handler<GetHandle> for NodeSupervisor {
    type Result = Option<NodeHandle>;

    fn handle(&mut self, _msg: GetHandle, _ctx: &mut Self::Context) -> Self::Result {
        self.handle.clone()
    }
}

/// One of the node's supervised actors, as [`Children`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildStatus {
    /// What it is: `coordinator`, `resource manager`, `result store` or `location
    /// registry`.
    pub name: &'static str,
    /// How many times its actix `Supervisor` restarted it (after a panic in one of its
    /// handlers, its state kept); `None` when it did not answer (stopped).
    pub restarts: Option<u32>,
}

/// Asks the node's supervisor for its children and how many times each restarted.
#[derive(Debug, Message)]
#[rtype(result = "Vec<ChildStatus>")]
pub struct Children;

impl Handler<Children> for NodeSupervisor {
    type Result = ResponseFuture<Vec<ChildStatus>>;

    fn handle(&mut self, _msg: Children, _ctx: &mut Self::Context) -> Self::Result {
        let Some(handle) = self.handle.clone() else {
            return Box::pin(async { Vec::new() });
        };
        Box::pin(async move { handle.children().await })
    }
}

/// A running node: the addresses of its actors and the seed API over them.
#[derive(Clone)]
pub struct NodeHandle {
    id: NodeId,
    supervisor: Option<Addr<NodeSupervisor>>,
    coordinator: Addr<Coordinator>,
    manager: Addr<ResourceManager>,
    store: Addr<ResultStore>,
    locations: Addr<LocationRegistry>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Starts a node's actors in the current actix `System` (call it from inside one, e.g.
/// `#[actix::main]` or a service's own system). Each actor runs under an actix
/// `Supervisor`, which restarts it with its state kept.
pub async fn start_node(config: NodeConfig) -> Result<NodeHandle, NodeError> {
    let NodeConfig {
        id,
        capabilities,
        registry,
        tracker,
        parallelism,
        node_grace,
        max_abandoned_calls,
    } = config;
    let abandoned = Arc::new(crate::executor::Abandoned::new(max_abandoned_calls));
    let manager_state = ResourceManager::new(
        tracker,
        id.clone(),
        registry.names(),
        registry.signatures(),
        node_grace,
    );
    let manager = Supervisor::start(move |_| manager_state);
    let store = Supervisor::start(|_| ResultStore::default());
    let locations = Supervisor::start(|_| LocationRegistry::default());
    let registry = Arc::new(registry);
    let coordinator = {
        let (id, manager, store, locations) = (
            id.clone(),
            manager.clone(),
            store.clone(),
            locations.clone(),
        );
        Supervisor::start(move |_| {
            Coordinator::new(id, registry, parallelism, manager, store, locations)
                .with_abandoned(Arc::clone(&abandoned))
        })
    };
    let mut handle = NodeHandle {
        id: id.clone(),
        supervisor: None,
        coordinator,
        manager,
        store,
        locations,
    };
    handle.register_node(id.clone(), capabilities).await?;
    let for_supervisor = handle.clone();
    handle.supervisor = Some(NodeSupervisor::create(move |_| NodeSupervisor {
        handle: Some(for_supervisor),
    }));
    tracing::info!(node = %id, "node started");
    Ok(handle)
}

impl NodeHandle {
    fn stopped(&self) -> NodeError {
        NodeError::Stopped {
            node: self.id.clone(),
        }
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// The address of the node's supervisor.
    pub fn supervisor(&self) -> Option<&Addr<NodeSupervisor>> {
        self.supervisor.as_ref()
    }

    /// The node's supervised actors and how many times each restarted (the answer of
    /// the supervisor's [`Children`]).
    pub async fn children(&self) -> Vec<ChildStatus> {
        let (coordinator, manager, store, locations) = futures::join!(
            self.coordinator.send(CountRestarts),
            self.manager.send(CountRestarts),
            self.store.send(CountRestarts),
            self.locations.send(CountRestarts),
        );
        vec![
            ChildStatus {
                name: "coordinator",
                restarts: coordinator.ok(),
            },
            ChildStatus {
                name: "resource manager",
                restarts: manager.ok(),
            },
            ChildStatus {
                name: "result store",
                restarts: store.ok(),
            },
            ChildStatus {
                name: "location registry",
                restarts: locations.ok(),
            },
        ]
    }

    /// The coordinator's address: send it [`Execute`] messages.
    pub fn coordinator(&self) -> &Addr<Coordinator> {
        &self.coordinator
    }

    /// The resource manager's address.
    pub fn resource_manager(&self) -> &Addr<ResourceManager> {
        &self.manager
    }

    /// The result store's address.
    pub fn result_store(&self) -> &Addr<ResultStore> {
        &self.store
    }

    /// The data-location registry's address.
    pub fn location_registry(&self) -> &Addr<LocationRegistry> {
        &self.locations
    }

    /// Registers (or updates) a node's capacity; reservations in progress are kept.
    pub async fn register_node(
        &self,
        node: impl Into<NodeId>,
        capabilities: Resources,
    ) -> Result<(), NodeError> {
        let msg = RegisterNode {
            node: node.into(),
            capabilities,
        };
        self.manager.send(msg).await.map_err(|_| self.stopped())?
    }

    /// True when the node could reserve `cost` right now.
    pub async fn resources_available(
        &self,
        node: impl Into<NodeId>,
        cost: Resources,
    ) -> Result<bool, NodeError> {
        let msg = ResourcesAvailable {
            node: node.into(),
            cost,
        };
        self.manager.send(msg).await.map_err(|_| self.stopped())
    }

    /// A node's capacity and what it has free right now.
    pub async fn node_resources(
        &self,
        node: impl Into<NodeId>,
    ) -> Result<Option<(Resources, Resources)>, NodeError> {
        let msg = NodeResources { node: node.into() };
        self.manager.send(msg).await.map_err(|_| self.stopped())
    }

    /// Every registered node with its capacity, this node first.
    pub async fn discover_nodes(&self) -> Result<Vec<(NodeId, Resources)>, NodeError> {
        self.manager
            .send(RegisteredNodes)
            .await
            .map_err(|_| self.stopped())
    }

    /// Executes a validated DAG.
    pub async fn execute(
        &self,
        dag: ValidatedDag,
        options: ExecuteOptions,
    ) -> Result<ExecutionResult, ExecuteError> {
        let dag_id = dag.id().clone();
        self.coordinator
            .send(Execute { dag, options })
            .await
            .map_err(|_| ExecuteError::NodeStopped {
                node: self.id.clone(),
                dag: dag_id,
            })?
    }

    /// Starts executing a validated DAG and returns its handle: await it for the
    /// outcome, read its events, or cancel it. Problems that keep the DAG from ever
    /// running are reported here, all at once, before anything starts.
    pub async fn submit(
        &self,
        dag: ValidatedDag,
        options: ExecuteOptions,
    ) -> Result<ExecutionHandle, ExecuteError> {
        let dag_id = dag.id().clone();
        self.coordinator
            .send(Submit { dag, options })
            .await
            .map_err(|_| ExecuteError::NodeStopped {
                node: self.id.clone(),
                dag: dag_id,
            })?
    }

    /// Starts a stream of `dag` on this node: its regular functions become long-lived
    /// stages (their init run once per worker, their costs reserved until the stream
    /// stops), and many items are pushed through it (see
    /// [`StreamHandle`](crate::StreamHandle)). The DAG needs at least one input
    /// (`Function::input`).
    pub async fn stream(
        &self,
        dag: ValidatedDag,
        options: crate::stream::StreamOptions,
    ) -> Result<crate::stream::StreamHandle, crate::stream::StartStreamError> {
        let parts = self
            .coordinator
            .send(crate::stream::GetStreamParts)
            .await
            .map_err(|_| crate::stream::StartStreamError::NodeStopped {
                node: self.id.clone(),
            })?;
        crate::stream::start(parts, dag, options).await
    }

    /// Opens a stage worker that another node's stream placed here (see
    /// [`Transport::run_stage`](crate::Transport::run_stage)): resolves the stage's codes in
    /// this node's registry and runs its init code. The network layer keeps the worker
    /// until the stream closes it.
    pub async fn open_stage(
        &self,
        spec: &crate::remote::StageSpec,
    ) -> Result<crate::stream::HostedStage, CallError> {
        let parts = self
            .coordinator
            .send(crate::stream::GetStreamParts)
            .await
            .map_err(|_| CallError::Unavailable {
                code: spec.function.code().clone(),
                node: self.id.clone(),
                reason: "the node is stopping".to_owned(),
            })?;
        crate::stream::HostedStage::open(&parts.registry, &parts.manager, &parts.node, spec).await
    }

    /// Executes a validated DAG on this node only, ignoring costs and placement.
    pub async fn execute_local(
        &self,
        dag: ValidatedDag,
        options: ExecuteOptions,
    ) -> Result<ExecutionResult, ExecuteError> {
        self.execute(
            dag,
            ExecuteOptions {
                local: true,
                ..options
            },
        )
        .await
    }

    /// Installs the transport executions use to run functions on other nodes and fetch
    /// their results (`handoff-net`'s cluster node does this).
    pub async fn set_transport(&self, transport: SharedTransport) -> Result<(), NodeError> {
        self.coordinator
            .send(SetTransport(transport))
            .await
            .map_err(|_| self.stopped())
    }

    /// Makes another node a place functions can be sent to, with its capacity, the code
    /// names in its registry and the signatures of its typed codes
    /// ([`handoff_core::Registry::signatures`]).
    pub async fn register_peer(
        &self,
        node: impl Into<NodeId>,
        capabilities: Resources,
        code_names: Vec<CodeName>,
        signatures: Vec<(CodeName, std::sync::Arc<str>)>,
    ) -> Result<(), NodeError> {
        let msg = RegisterPeer {
            node: node.into(),
            capabilities,
            code_names,
            signatures,
        };
        self.manager.send(msg).await.map_err(|_| self.stopped())?
    }

    /// A node drains (it is about to leave): stops sending functions there. Unlike
    /// [`forget_peer`](Self::forget_peer), nothing is counted lost: what runs there
    /// finishes, and the values it holds are fetched from it until it leaves.
    pub async fn peer_draining(&self, node: impl Into<NodeId>) -> Result<(), NodeError> {
        let msg = ForgetPeer { node: node.into() };
        self.manager.send(msg).await.map_err(|_| self.stopped())
    }

    /// A node left the cluster: stops sending functions there, and tells the executions
    /// running here (what they ran there runs again elsewhere; values that lived only
    /// there and are still needed are recomputed).
    pub async fn forget_peer(&self, node: impl Into<NodeId>) -> Result<(), NodeError> {
        let node = node.into();
        let msg = ForgetPeer { node: node.clone() };
        self.manager.send(msg).await.map_err(|_| self.stopped())?;
        self.coordinator
            .send(NodeLost { node })
            .await
            .map_err(|_| self.stopped())
    }

    /// Runs one attempt of a function another node sent here (see [`RunFunction`]).
    ///
    /// The attempt runs in the caller's task: dropping the returned future before it ends
    /// gives its reservation back (or withdraws its wait for one), tells its call to stop
    /// (see [`CancellationToken`](crate::CancellationToken)) and stores nothing.
    pub async fn run_function(&self, msg: RunFunction) -> Result<Ran, CallError> {
        let code = msg.function.code().clone();
        let parts = self
            .coordinator
            .send(GetParts)
            .await
            .map_err(|_| CallError::Unavailable {
                code,
                node: self.id.clone(),
                reason: "the node is stopping".to_owned(),
            })?;
        crate::remote::run_function(parts, msg).await
    }

    /// A runner for the attempts of one batch of functions another node sent here: it asks
    /// the node once for what they need, and runs the quick calls (no cost, timeout or start
    /// report) back to back in a few shared blocking-pool jobs (see [`BatchRunner`]).
    pub fn batch_runner(&self) -> BatchRunner {
        BatchRunner::new(self.clone(), self.coordinator.clone())
    }

    /// Stores a value on this node and records that it lives here.
    pub async fn store_value(
        &self,
        dag: impl Into<DagId>,
        id: impl Into<FunctionId>,
        value: Value,
    ) -> Result<(), NodeError> {
        let (dag, id) = (dag.into(), id.into());
        let register = RegisterLocation {
            dag: dag.clone(),
            id: id.clone(),
            node: self.id.clone(),
        };
        self.store
            .send(StoreValue { dag, id, value })
            .await
            .map_err(|_| self.stopped())?;
        self.locations
            .send(register)
            .await
            .map_err(|_| self.stopped())
    }

    /// A value held on this node, by its DAG's id. On a node that ran functions for an
    /// execution coordinated elsewhere, that execution's values are held under the id it
    /// goes by here (`dag~coordinator~token`, so that executions of the same DAG id never
    /// meet): they are found by the DAG's own id too, when only one execution of it is
    /// held here.
    pub async fn get_local_value(
        &self,
        dag: impl Into<DagId>,
        id: impl Into<FunctionId>,
    ) -> Result<Value, NodeError> {
        let (dag, id) = (dag.into(), id.into());
        let msg = FindLocal {
            dag: dag.clone(),
            id: id.clone(),
        };
        self.store
            .send(msg)
            .await
            .map_err(|_| self.stopped())?
            .ok_or_else(|| NodeError::NotFound {
                dag,
                id,
                node: self.id.clone(),
            })
    }

    /// A value, wherever it lives: here, or (once the network layer is in) fetched from
    /// the node the location registry names, or from `from` when given.
    pub async fn get_value(
        &self,
        dag: impl Into<DagId>,
        id: impl Into<FunctionId>,
        from: Option<NodeId>,
    ) -> Result<Value, NodeError> {
        let (dag, id) = (dag.into(), id.into());
        match self.get_local_value(dag.clone(), id.clone()).await {
            Ok(value) => Ok(value),
            Err(NodeError::NotFound { .. }) => {
                let holder = match from {
                    Some(node) => Some(node),
                    None => self.lookup_data_location(dag.clone(), id.clone()).await?,
                };
                match holder {
                    Some(holder) if holder != self.id => {
                        Err(NodeError::Unreachable { dag, id, holder })
                    }
                    _ => Err(NodeError::NotFound {
                        dag,
                        id,
                        node: self.id.clone(),
                    }),
                }
            }
            Err(error) => Err(error),
        }
    }

    /// A value held on this node, waiting up to `timeout` for it to be stored.
    pub async fn get_result(
        &self,
        dag: impl Into<DagId>,
        id: impl Into<FunctionId>,
        timeout: Duration,
    ) -> Result<Value, NodeError> {
        let msg = WaitFor {
            dag: dag.into(),
            id: id.into(),
            timeout,
        };
        Ok(self.store.send(msg).await.map_err(|_| self.stopped())??)
    }

    /// Records where a value lives.
    pub async fn register_data_location(
        &self,
        dag: impl Into<DagId>,
        id: impl Into<FunctionId>,
        node: impl Into<NodeId>,
    ) -> Result<(), NodeError> {
        let msg = RegisterLocation {
            dag: dag.into(),
            id: id.into(),
            node: node.into(),
        };
        self.locations.send(msg).await.map_err(|_| self.stopped())
    }

    /// Where a value lives, if known.
    pub async fn lookup_data_location(
        &self,
        dag: impl Into<DagId>,
        id: impl Into<FunctionId>,
    ) -> Result<Option<NodeId>, NodeError> {
        let msg = LookupLocation {
            dag: dag.into(),
            id: id.into(),
        };
        self.locations.send(msg).await.map_err(|_| self.stopped())
    }

    /// Drops every value of a DAG held on this node; returns how many were dropped.
    pub async fn drop_dag(&self, dag: impl Into<DagId>) -> Result<usize, NodeError> {
        let dag = dag.into();
        self.locations
            .send(crate::location_registry::ForgetDag { dag: dag.clone() })
            .await
            .map_err(|_| self.stopped())?;
        self.store
            .send(DropDag { dag })
            .await
            .map_err(|_| self.stopped())
    }

    /// How many values this node holds, over all DAGs.
    pub async fn stored_values(&self) -> Result<usize, NodeError> {
        self.store
            .send(CountValues)
            .await
            .map_err(|_| self.stopped())
    }
}
