//! The pure logic of Handoff: DAGs of functions and their validation, values passed by
//! shared pointer, the typed function registry, resources with exact accounting,
//! resource trackers and allocators. No actors, no async runtime, no I/O.
//!
//! ```
//! # mod handoff { pub use handoff_core::*; }
//! use handoff::{Dag, Function, Registry, Value};
//!
//! let mut registry = Registry::new();
//! registry.register("identity", |x: i64| x)?;
//! registry.register("multiply", |x: i64, y: i64| x * y)?;
//!
//! let dag = Dag::new()
//!     .with(Function::new("source", "identity").extra_arg(42_i64))
//!     .with(Function::new("transform", "multiply").arg("source").extra_arg(2_i64))
//!     .validate()?;
//! assert_eq!(dag.functions()[0].id().as_str(), "source");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod allocator;
mod backoff;
mod dag;
mod function;
mod graph;
mod ids;
mod plan;
mod registry;
mod resources;
mod results;
mod stream;
mod tracker;
mod typed;
mod value;

pub use allocator::{
    AllocationError, AllocationStrategy, Allocator, Assignments, FirstAvailable, LoadBalanced,
    Locality, NodeCapacities, NodeView, allocate, candidates, choose_node,
};
pub use backoff::Backoff;
pub use dag::{Dag, ValidatedDag, ValidationError};
pub use function::{ArgumentInclusion, Batching, Function, FunctionKind, Placement};
pub use graph::{FunctionRun, Graph, node_label};
pub use ids::{CodeName, DagId, FunctionId, NodeId, ResourceName, random_u128};
pub use plan::{
    ExecutableNode, GroupNeeds, Infeasible, NAMED_DEPARTURES, NO_NEXT, Rank, Target,
    chain_successors, check_feasible, explain_departures, group_needs, inline_args, keep_set,
    ranks, targets,
};
pub use registry::{
    CallError, Code, CodeKind, Handler, RegisterError, Registry, State, StatefulHandler,
    nearest_name, panic_message,
};
pub use resources::{Amount, Resources};
pub use results::{ResultError, Results};
pub use stream::{ArgSource, InlineEval, StagePlan, StreamPlan, StreamPlanError};
pub use tracker::{
    RegisterNodeError, ReleaseError, RequestError, ResourceTracker, SimpleResourceTracker,
};
pub use typed::{
    ArgKind, Call, CallArgs, CodeHandle, Const, Dep, FnRef, InOrder, IntoArg, ListOf, Reads,
    signature_of,
};
pub use value::{FromValue, IntoValue, List, Shared, Value, ValueError};
