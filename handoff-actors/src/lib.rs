//! The actix runtime of one Handoff node.
//!
//! A node is a tree of supervised actors: a [`ResourceManager`] that owns the resource
//! tracker and reserves capacity, a [`ResultStore`] holding each DAG's values, a
//! [`LocationRegistry`] recording where values live, and a [`Coordinator`] that starts one
//! execution actor per DAG. User code runs on the runtime's blocking thread pool, never
//! on the actor thread.
//!
//! ```
//! # mod handoff { pub use handoff_actors::*; pub use handoff_core::*; }
//! use handoff::{start_node, ExecuteOptions, NodeConfig};
//! use handoff::{Dag, Function, Registry, Resources};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut registry = Registry::new();
//! registry.register("identity", |x: i64| x)?;
//! registry.register("multiply", |x: i64, y: i64| x * y)?;
//! let system = actix::System::new();
//! let out = system.block_on(async {
//!     let node = start_node(NodeConfig::new("local", registry).capabilities(Resources::new().cpu(2))).await?;
//!     let dag = Dag::new()
//!         .with(Function::new("source", "identity").extra_arg(42_i64))
//!         .with(Function::new("transform", "multiply").arg("source").extra_arg(2_i64))
//!         .validate()?;
//!     let done = node.execute(dag, ExecuteOptions::default()).await?;
//!     Ok::<i64, Box<dyn std::error::Error>>(done.results.get::<i64>("transform")?)
//! })?;
//! assert_eq!(out, 84);
//! # Ok(())
//! # }
//! ```

mod coordinator;
mod error;
mod events;
mod executor;
mod location_registry;
mod node;
mod remote;
mod report;
mod resource_manager;
mod result_store;
mod run;
mod stream;
mod supervision;
mod timeline;
mod waiters;

pub use coordinator::{
    Canceller, Coordinator, Execute, ExecuteOptions, ExecutionHandle, NodeLost, Submit,
};
pub use error::{ExecuteError, NodeError, Problem};
pub use events::{Event, EventKind, EventStream, MAX_EVENT_BUFFER};
pub use executor::{CancellationToken, is_cancelled};
pub use location_registry::{
    ForgetDag, LocationRegistry, LookupLocation, RegisterLocation, RegisterLocations, WaitLocation,
};
pub use node::{
    ChildStatus, Children, DEFAULT_MAX_ABANDONED_CALLS, DEFAULT_NODE_GRACE, GetHandle, NodeConfig,
    NodeHandle, NodeSupervisor, start_node,
};
pub use remote::{
    BatchRunner, FetchFailed, QuickCall, QuickOutcome, QuickRun, Ran, RemoteArgument, RemoteCall,
    RemoteDone, RemoteResult, RunFunction, SetTransport, SharedTransport, StageAnswer, StageCall,
    StageItem, StageKey, StageSpec, Transport,
};
pub use report::{
    AttemptOutcome, AttemptReport, ExecutionReport, FunctionReport, NodeUsage, PendingReport,
    ResourceUsage,
};
pub use resource_manager::{
    Capacities, ClusterView, ExecutableNode, ForgetPeer, NodeResources, RegisterNode, RegisterPeer,
    RegisteredNodes, ResourceManager, ResourcesAvailable,
};
pub use result_store::{
    CacheEncoded, CountValues, DropDag, FindLocal, FreeValues, GetEncoded, GetLocal, ResultStore,
    StoreValue, StoreValues, WaitError, WaitFor,
};
pub use run::ExecutionResult;
pub use stream::{
    HostedStage, ItemError, PushError, StageStats, StartStreamError, StreamHandle, StreamOptions,
    StreamOutput, StreamOutputError, StreamResults, StreamStats,
};
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
pub use supervision::Crash;
pub use supervision::{CountRestarts, Panicked};
