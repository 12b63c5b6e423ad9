//! Handoff: build and execute DAGs of functions with resource-aware scheduling, in one
//! process or across a cluster of nodes.
//!
//! Build a [`Dag`] of [`Function`]s that name code in a [`Registry`], validate it, start a
//! node inside an actix `System` with [`start_node`], and [`execute`](NodeHandle::execute) it.
//!
//! To make the node a cluster member, start a [`ClusterNode`] instead (a [`NodeConfig`]
//! plus a [`NetConfig`] with a [`ClusterKey`]), or run the `handoff-node` binary (or your
//! own, with [`cli`]). Nodes find each other, and a DAG executed through a cluster node
//! runs its functions on the nodes whose registry has their code and whose capacity fits
//! their cost, fetching each value only where it is consumed.
//!
//! ```
//! use handoff::{Dag, ExecuteOptions, Function, NodeConfig, Registry, start_node};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut registry = Registry::new();
//! registry.register("identity", |x: i64| x)?;
//! registry.register("multiply", |x: i64, y: i64| x * y)?;
//! registry.register("format", |x: i64| format!("The final answer is: {x}"))?;
//!
//! let dag = Dag::new()
//!     .with(Function::new("source", "identity").extra_arg(42_i64))
//!     .with(Function::new("transform", "multiply").arg("source").extra_arg(2_i64))
//!     .with(Function::new("sink", "format").arg("transform"))
//!     .validate()?;
//!
//! let answer = actix::System::new().block_on(async move {
//!     let node = start_node(NodeConfig::new("local", registry)).await?;
//!     let done = node.execute(dag, ExecuteOptions::default()).await?;
//!     Ok::<String, Box<dyn std::error::Error>>(done.results.get::<String>("sink")?)
//! })?;
//! assert_eq!(answer, "The final answer is: 84");
//! # Ok(())
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "net")]
#[cfg_attr(docsrs, doc(cfg(feature = "net")))]
pub mod cli;
pub mod progress;

pub use handoff_actors::{
    AttemptOutcome, AttemptReport, ExecutionReport, FunctionReport, NodeUsage, PendingReport,
    ResourceUsage,
};
pub use handoff_actors::{
    CancellationToken, Canceller, DEFAULT_MAX_ABANDONED_CALLS, DEFAULT_NODE_GRACE, Event,
    EventKind, EventStream, ExecuteError, ExecuteOptions, ExecutionHandle, ExecutionResult,
    MAX_EVENT_BUFFER, NodeConfig, NodeError, NodeHandle, Problem, WaitError, is_cancelled,
    start_node,
};

/// What most programs use, in one import.
///
/// ```
/// use handoff::prelude::*;
///
/// # #[actix::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut registry = Registry::new();
/// registry.register("double", |x: i64| x * 2)?;
/// let node = start_node(NodeConfig::new("local", registry).capabilities(Resources::new().cpu(2))).await?;
/// let dag = Dag::new()
///     .with(Function::new("a", "double").extra_arg(21_i64).with_cost(Resources::new().cpu(1)))
///     .validate()?;
/// let done = node.execute(dag, ExecuteOptions::default()).await?;
/// assert_eq!(done.results.get::<i64>("a")?, 42);
/// # Ok(()) }
/// ```
pub mod prelude {
    pub use crate::{
        Call, CodeHandle, Dag, Event, EventKind, ExecuteError, ExecuteOptions, ExecutionResult,
        FnRef, Function, List, NodeConfig, NodeHandle, Registry, Resources, Shared, ValidatedDag,
        is_cancelled, start_node,
    };
    #[cfg(feature = "net")]
    pub use crate::{ClusterKey, ClusterNode, NetConfig};
}

/// The traits behind [`Dag::call`]'s type checks: how each argument of a typed call
/// ([`IntoArg`](typed::IntoArg)) and the whole tuple ([`CallArgs`](typed::CallArgs)) line
/// up with the code's parameters. Implemented for you; named only in generic code.
pub mod typed {
    pub use handoff_core::{ArgKind, CallArgs, Const, Dep, InOrder, IntoArg, ListOf, Reads};
}

/// A node's actors and the messages a service sends them, for embedding a node in an actix
/// system of your own (`examples/embedded.rs` does): the coordinator (`Submit`,
/// `Execute`), the resource manager, the result store and the location registry, and the
/// node's supervisor. A program that only runs DAGs needs none of this: [`NodeHandle`]
/// sends these messages for it.
pub mod actors {
    pub use handoff_actors::{
        Capacities, ChildStatus, Children, ClusterView, Coordinator, CountRestarts, CountValues,
        DropDag, ExecutableNode, Execute, ForgetDag, ForgetPeer, FreeValues, GetHandle, GetLocal,
        LocationRegistry, LookupLocation, NodeResources, NodeSupervisor, RegisterLocation,
        RegisterLocations, RegisterNode, RegisterPeer, RegisteredNodes, ResourceManager,
        ResourcesAvailable, ResultStore, RunFunction, SetTransport, StoreValue, StoreValues,
        Submit, WaitFor, WaitLocation,
    };
}

/// How a node sends functions to other nodes: the [`Transport`](transport::Transport) a
/// cluster layer plugs into a node (`handoff::ClusterNode` plugs in libp2p's), and what a
/// stream's stage worker placed on another node needs. Needed only to write a transport of
/// your own.
pub mod transport {
    pub use handoff_actors::{
        FetchFailed, Ran, RemoteArgument, RemoteCall, RemoteDone, RemoteResult, SharedTransport,
        StageKey, StageSpec, Transport,
    };
    pub use handoff_core::{ArgSource, InlineEval, StagePlan, StreamPlan};
}

/// The cluster layer (libp2p): a node that is also a cluster member ([`ClusterNode`]), its
/// configuration ([`NetConfig`]) and key ([`ClusterKey`]), found at the crate root too, and
/// everything else about the network: the client of a node's network layer, discovered
/// nodes, drains, transfer statistics and their errors.
///
/// ```no_run
/// use handoff::net::{ClusterKey, ClusterNode, NetConfig};
/// use handoff::{NodeConfig, Registry};
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let net = NetConfig::builder(ClusterKey::from_file("cluster.key")?)
///     .name("worker-1")
///     .build()?;
/// let node = NodeConfig::new(net.node_id(), Registry::new());
/// let cluster = ClusterNode::start(node, net).await?;
/// for peer in cluster.discover_nodes().await? {
///     println!("{} {}", peer.name, peer.node);
/// }
/// # Ok(()) }
/// ```
#[cfg(feature = "net")]
#[cfg_attr(docsrs, doc(cfg(feature = "net")))]
pub mod net {
    pub use handoff_net::{
        Client as NetClient, ClientError as NetClientError, ClusterKey, ClusterKeyError,
        ClusterNode, ClusterStartError, Config as NetConfig, ConfigBuilder as NetConfigBuilder,
        ConfigError as NetConfigError, DiscoverError, DiscoveredNode, DrainError, Drained,
        GetValueError, HandshakeFailures, INLINE_RESULT_BYTES, Keypair, Multiaddr, NodeState,
        NodeStats, PeerId, RegisterCapacityError, ResourcesQueryError, Security, TransferStats,
    };
}

pub use handoff_actors::{
    ItemError, PushError, StageStats, StartStreamError, StreamHandle, StreamOptions, StreamOutput,
    StreamOutputError, StreamResults, StreamStats,
};
pub use handoff_core::{
    AllocationError, AllocationStrategy, Allocator, Amount, ArgumentInclusion, Assignments,
    Backoff, CallError, Code, CodeName, Dag, DagId, FirstAvailable, FromValue, Function,
    FunctionId, FunctionKind, Handler, IntoValue, List, LoadBalanced, Locality, NodeCapacities,
    NodeId, NodeView, Placement, RegisterError, RegisterNodeError, Registry, ReleaseError,
    RequestError, ResourceName, ResourceTracker, Resources, ResultError, Results, Shared,
    SimpleResourceTracker, ValidatedDag, ValidationError, Value, ValueError, allocate, choose_node,
};
pub use handoff_core::{Batching, CodeKind, State, StatefulHandler, StreamPlanError};
pub use handoff_core::{Call, CodeHandle, FnRef};
pub use handoff_core::{FunctionRun, Graph, nearest_name, node_label};

/// The cluster layer's entry points (the rest is in [`net`]).
#[cfg(feature = "net")]
#[cfg_attr(docsrs, doc(cfg(feature = "net")))]
pub use net::{ClusterKey, ClusterNode, NetConfig};

/// The README's usage example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(all(doctest, feature = "net"))]
pub struct ReadmeDoctests;
