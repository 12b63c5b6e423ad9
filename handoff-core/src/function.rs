//! One function of a DAG: what it runs, what it takes, what it costs and where it may run.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::ids::{CodeName, FunctionId, NodeId};
use crate::resources::Resources;
use crate::value::Value;

/// Where a function may run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Placement {
    /// The allocator picks a node.
    #[default]
    Any,
    /// Only on this node.
    Pinned(NodeId),
    /// On the same node as that function (chains of collocations resolve to their root).
    Collocated(FunctionId),
}

/// How a function is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FunctionKind {
    /// Scheduled on its own; its result is stored.
    #[default]
    Regular,
    /// Never scheduled on its own: evaluated inside each dependent that needs it, and
    /// never stored. It may not be pinned or collocated.
    Inline,
}

/// How dependency results are passed to the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ArgumentInclusion {
    /// Each dependency result is a parameter: `code(d1, …, dN, extra…)`.
    #[default]
    Variadic,
    /// All dependency results form one list parameter: `code([d1, …, dN], extra…)`;
    /// the code takes a [`List`](crate::List) (or a `Vec`).
    AsList,
}

/// A function of a DAG.
///
/// ```
/// use handoff_core::{Function, Resources};
/// let f = Function::new("transform", "multiply")
///     .arg("source")
///     .extra_arg(2_i64)
///     .with_cost(Resources::new().cpu(1))
///     .max_retries(0);
/// assert_eq!(f.arg_ids()[0].as_str(), "source");
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Function {
    id: FunctionId,
    args: Vec<FunctionId>,
    code: CodeName,
    extra_args: Vec<Value>,
    cost: Option<Resources>,
    placement: Placement,
    kind: FunctionKind,
    max_retries: Option<u32>,
    argument_inclusion: ArgumentInclusion,
    #[serde(default)]
    timeout: Option<Duration>,
    #[serde(default)]
    backoff: Option<Backoff>,
    #[serde(default)]
    priority: i32,
}

impl Function {
    /// A function with this id that runs the registered code `code`, with no arguments.
    pub fn new(id: impl Into<FunctionId>, code: impl Into<CodeName>) -> Self {
        Function {
            id: id.into(),
            args: Vec::new(),
            code: code.into(),
            extra_args: Vec::new(),
            cost: None,
            placement: Placement::Any,
            kind: FunctionKind::Regular,
            max_retries: None,
            argument_inclusion: ArgumentInclusion::Variadic,
            timeout: None,
            backoff: None,
            priority: 0,
        }
    }

    /// Adds a dependency: the result of `id` is passed as the next argument.
    pub fn arg(mut self, id: impl Into<FunctionId>) -> Self {
        self.args.push(id.into());
        self
    }

    /// Adds dependencies, in order.
    pub fn args<I: IntoIterator<Item = T>, T: Into<FunctionId>>(mut self, ids: I) -> Self {
        self.args.extend(ids.into_iter().map(Into::into));
        self
    }

    /// Appends a constant argument, passed after the dependency results.
    pub fn extra_arg<T: Serialize + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.extra_args.push(Value::new(value));
        self
    }

    /// Sets the resources one run of the function reserves.
    pub fn with_cost(mut self, cost: Resources) -> Self {
        self.cost = Some(cost);
        self
    }

    /// Pins the function to a node.
    pub fn pinned(mut self, node: impl Into<NodeId>) -> Self {
        self.placement = Placement::Pinned(node.into());
        self
    }

    /// Runs the function on the node of another function.
    pub fn collocated_with(mut self, function: impl Into<FunctionId>) -> Self {
        self.placement = Placement::Collocated(function.into());
        self
    }

    /// Sets the placement.
    pub fn with_placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Makes the function inline: evaluated inside each dependent, never scheduled alone.
    pub fn inline(mut self) -> Self {
        self.kind = FunctionKind::Inline;
        self
    }

    /// Overrides the execution's `max_retries` for this function (0: one attempt only).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }

    /// Fails an attempt that runs longer than `timeout` (overrides the execution's).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the wait before each retry (overrides the execution's).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Among ready functions competing for capacity, higher priorities go first
    /// (default 0; ties go to the function on the longest path to a sink).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Passes all dependency results as one list parameter.
    pub fn as_list(mut self) -> Self {
        self.argument_inclusion = ArgumentInclusion::AsList;
        self
    }

    /// The id.
    pub fn id(&self) -> &FunctionId {
        &self.id
    }
    /// The ids of the functions whose results it takes, in order.
    pub fn arg_ids(&self) -> &[FunctionId] {
        &self.args
    }
    /// The registered code it runs.
    pub fn code(&self) -> &CodeName {
        &self.code
    }
    /// The constants appended after the dependency results.
    pub fn extra_args(&self) -> &[Value] {
        &self.extra_args
    }
    /// The resources one run reserves, if any.
    pub fn cost(&self) -> Option<&Resources> {
        self.cost.as_ref()
    }
    /// Where it may run.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }
    /// Regular or inline.
    pub fn kind(&self) -> FunctionKind {
        self.kind
    }
    /// Its own `max_retries`, if it overrides the execution's.
    pub fn max_retries_override(&self) -> Option<u32> {
        self.max_retries
    }
    /// How dependency results are passed.
    pub fn argument_inclusion(&self) -> ArgumentInclusion {
        self.argument_inclusion
    }
    /// Its own timeout, if it overrides the execution's.
    pub fn timeout_override(&self) -> Option<Duration> {
        self.timeout
    }
    /// Its own retry backoff, if it overrides the execution's.
    pub fn backoff_override(&self) -> Option<Backoff> {
        self.backoff
    }
    /// Its priority (higher first).
    pub fn priority_value(&self) -> i32 {
        self.priority
    }
    /// True for an inline function.
    pub fn is_inline(&self) -> bool {
        self.kind == FunctionKind::Inline
    }

    /// The parameters its code is called with, given the values of its `args` (in
    /// order): those values (or one list of them, for an as-list function), then its
    /// extra arguments.
    pub fn parameters(&self, mut args: Vec<Value>) -> Vec<Value> {
        match self.argument_inclusion {
            ArgumentInclusion::Variadic => {
                args.extend(self.extra_args.iter().cloned());
                args
            }
            ArgumentInclusion::AsList => {
                let mut params = Vec::with_capacity(1 + self.extra_args.len());
                params.push(Value::list(args));
                params.extend(self.extra_args.iter().cloned());
                params
            }
        }
    }

    /// This function with no cost and no placement (what `execute_local` runs).
    pub fn localized(mut self) -> Self {
        self.cost = None;
        if self.kind == FunctionKind::Regular {
            self.placement = Placement::Any;
        }
        self
    }
}
