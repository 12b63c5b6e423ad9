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
    /// A placeholder for the value pushed into a stream (see [`Function::input`]): it runs
    /// no code. A batch execution refuses a DAG that has one.
    Input,
}

/// How a stage of a stream batches its items (see [`Function::batch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batching {
    /// The most items passed to one call.
    pub size: usize,
    /// How long the first item of a batch waits for the batch to fill.
    pub timeout: Duration,
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
/// # mod handoff { pub use handoff_core::*; }
/// use handoff::{Function, Resources};
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
    /// The settings most functions do not have (stream settings, a typed code's
    /// signature). Boxed: a DAG of a million functions pays 8 bytes each for them, and a
    /// `Function` travels inside network messages (where it is left out when absent, so a
    /// function without them encodes as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stage: Option<Box<StageSettings>>,
}

/// The settings of a function that most functions do not have: its stream-mode settings,
/// and the signature of its typed code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct StageSettings {
    /// The parameter and result types its code must have where it runs (a function
    /// built from a typed handle); left out of its encoding when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature: Option<std::sync::Arc<str>>,
    init: Option<CodeName>,
    parallelism: Option<usize>,
    batching: Option<Batching>,
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
            stage: None,
        }
    }

    /// A stream input: a placeholder for the value pushed into a stream
    /// (`StreamHandle::push`). It has no code, arguments or cost; functions take it with
    /// [`arg`](Self::arg) like any other result.
    ///
    /// ```
    /// # mod handoff { pub use handoff_core::*; }
    /// use handoff::{Dag, Function};
    /// let dag = Dag::new()
    ///     .with(Function::input("item"))
    ///     .with(Function::new("double", "double").arg("item"))
    ///     .validate()?;
    /// assert!(dag.function(0).is_input());
    /// # Ok::<(), handoff_core::ValidationError>(())
    /// ```
    pub fn input(id: impl Into<FunctionId>) -> Self {
        let mut f = Function::new(id, "");
        f.kind = FunctionKind::Input;
        f
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

    /// Stream mode: runs the registered code `code` once per stage worker when the
    /// stream starts; what it returns is the worker's state, passed to every call of
    /// the function's code, which must then be registered with
    /// [`Registry::register_stateful`](crate::Registry::register_stateful) (or one of
    /// its batch forms). Batch executions ignore it.
    pub fn init(mut self, code: impl Into<CodeName>) -> Self {
        self.stage.get_or_insert_default().init = Some(code.into());
        self
    }

    /// Stream mode: how many workers (replicas, each with its own state) run the stage
    /// (default 1). Its cost is reserved once per worker.
    pub fn parallelism(mut self, workers: usize) -> Self {
        self.stage.get_or_insert_default().parallelism = Some(workers);
        self
    }

    /// Stream mode: calls the code once per batch of up to `size` items, with the list
    /// of their values, and expects a list of as many results back. A batch is passed
    /// on when it is full or `timeout` after its first item arrived, whichever comes
    /// first. The code must be registered with
    /// [`Registry::register_batch`](crate::Registry::register_batch) (or a stateful form).
    pub fn batch(mut self, size: usize, timeout: Duration) -> Self {
        self.stage.get_or_insert_default().batching = Some(Batching { size, timeout });
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

    /// The parameter and result types its code must have where it runs ([`Code::signature`](crate::Code::signature)):
    /// set for a function built from a typed handle ([`crate::Dag::call`]); `None` for
    /// one built by name, which runs wherever its code's name is registered.
    pub fn signature(&self) -> Option<&str> {
        self.stage.as_ref()?.signature.as_deref()
    }

    /// Requires its code to have these types where it runs (what [`crate::Dag::call`]
    /// sets from the handle's [`signature`](crate::CodeHandle::signature)).
    pub fn with_signature(mut self, signature: impl Into<std::sync::Arc<str>>) -> Self {
        self.stage.get_or_insert_default().signature = Some(signature.into());
        self
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
    /// The code run once per stream worker to make its state, if any.
    pub fn init_code(&self) -> Option<&CodeName> {
        self.stage.as_ref()?.init.as_ref()
    }
    /// The number of stream workers set with [`parallelism`](Self::parallelism), if set.
    pub fn parallelism_value(&self) -> Option<usize> {
        self.stage.as_ref()?.parallelism
    }
    /// The stream batching set with [`batch`](Self::batch), if set.
    pub fn batching(&self) -> Option<Batching> {
        self.stage.as_ref()?.batching
    }
    /// True for a stream input.
    pub fn is_input(&self) -> bool {
        self.kind == FunctionKind::Input
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
