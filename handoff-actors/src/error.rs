//! Errors of the node's operations.

use handoff_core::{AllocationError, CallError, CodeName, DagId, FunctionId, NodeId, Results};

/// Something that keeps a DAG from ever running, found before anything starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum Problem {
    /// A function names code that no node it may run on has in its registry (this
    /// node's, or a live cluster member's).
    #[error(
        "`{function}` runs `{code}`, which no node it may run on has registered{}{}",
        nearest.as_ref().map(|n| format!(" (did you mean `{n}`?)")).unwrap_or_default(),
        registered_where(registered_on, registered_names)
    )]
    UnknownCode {
        /// The function.
        function: FunctionId,
        /// The missing code.
        code: CodeName,
        /// A registered name close to it ([`handoff_core::nearest_name`]): a typo?
        nearest: Option<CodeName>,
        /// The nodes of the cluster that have it, where the function may not run (it is
        /// pinned, or collocated, elsewhere).
        #[serde(default)]
        registered_on: Vec<NodeId>,
        /// The names those nodes announced, in the same order (empty where unknown).
        #[serde(default)]
        registered_names: Vec<String>,
    },
    /// A function built from a typed handle ([`handoff_core::Dag::call`]) names code that
    /// the nodes it may run on have only with other parameter or result types: such a node
    /// is never chosen.
    #[error(
        "`{function}` runs `{code}` as `{expected}`, but the nodes it may run on have `{code}` with other types: {}",
        found.iter().map(|(node, types)| format!("`{node}` has `{types}`")).collect::<Vec<_>>().join(", ")
    )]
    SignatureMismatch {
        /// The function.
        function: FunctionId,
        /// Its code.
        code: CodeName,
        /// The types of the function's handle ([`handoff_core::signature_of`]).
        expected: String,
        /// The nodes that have the code, with the types each has.
        found: Vec<(NodeId, String)>,
    },
    /// A function passes a number of arguments its code does not take.
    #[error("`{function}` passes {given} argument(s) to `{code}`, which takes {expected}")]
    ArityMismatch {
        /// The function.
        function: FunctionId,
        /// Its code.
        code: CodeName,
        /// How many parameters the code takes.
        expected: usize,
        /// How many arguments the function passes (dependencies, or one list, plus extra args).
        given: usize,
    },
    /// A stream input (`Function::input`) has no value outside a stream: a DAG with one
    /// runs with `NodeHandle::stream`, not `execute`.
    #[error("`{function}` is a stream input; a DAG with inputs runs as a stream")]
    StreamInput {
        /// The input.
        function: FunctionId,
    },
    /// `ExecuteOptions::free_intermediates` names an output that is not a function of
    /// the DAG (a typo would otherwise free the value meant to be kept).
    #[error("`{output}` is named as an output to keep, but the DAG has no function of that id")]
    UnknownOutput {
        /// The id named.
        output: FunctionId,
    },
    /// A function can never be placed: its cost fits no node, or it is pinned to a node
    /// functions cannot run on.
    #[error(transparent)]
    Allocation(AllocationError),
    /// This cluster node reaches no other node, and the network knows the likely cause
    /// (listed first, beside the functions it leaves without a node).
    #[error("this node reaches no other node: {reason}")]
    Isolated {
        /// The likely cause, e.g. connections that failed during the handshake (a cluster
        /// key mismatch).
        reason: String,
    },
}

/// Why an execution failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecuteError {
    /// The DAG can never run; every problem found is listed. Nothing ran.
    #[error("DAG `{dag}` cannot run: {}", describe_problems(problems))]
    Rejected {
        /// The DAG.
        dag: DagId,
        /// Every problem found, in topological order of the functions.
        problems: Vec<Problem>,
    },
    /// A function could no longer be placed while the DAG ran (a node's capacity was
    /// registered again, smaller; or nothing could ever grant it).
    #[error(transparent)]
    Allocation(#[from] AllocationError),
    /// A function failed on every attempt; the rest of the DAG was stopped.
    #[error("`{function}` failed after {attempts} attempt(s): {last_error}")]
    FunctionFailed {
        /// The function.
        function: FunctionId,
        /// How many attempts were made.
        attempts: u32,
        /// The error of the last attempt.
        #[source]
        last_error: CallError,
    },
    /// The execution was cancelled; `finished` holds the results of the functions that
    /// had finished by then.
    #[error("the execution of DAG `{dag}` was cancelled after {} function(s) finished", finished.len())]
    Cancelled {
        /// The DAG.
        dag: DagId,
        /// What had finished.
        finished: Results,
    },
    /// A function kept killing the nodes that ran it (their processes died while it ran):
    /// it was stopped after `deaths` such deaths, on `nodes`.
    #[error("`{function}` was running when {deaths} node(s) died ({}); it is not run again", nodes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    CrashLoop {
        /// The function blamed.
        function: FunctionId,
        /// How many node deaths it was blamed for.
        deaths: u32,
        /// The nodes that died.
        nodes: Vec<NodeId>,
    },
    /// The execution ran past [`ExecuteOptions::deadline`](crate::ExecuteOptions::deadline):
    /// it was stopped as a cancel stops it.
    #[error("DAG `{dag}` ran past its deadline of {deadline:?}; {} function(s) had not finished: {}", unfinished.len(), unfinished.iter().take(10).map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    DeadlineExceeded {
        /// The DAG.
        dag: DagId,
        /// The deadline.
        deadline: std::time::Duration,
        /// The regular functions that had not finished, in the DAG's order.
        unfinished: Vec<FunctionId>,
    },
    /// A result held on another node could not be fetched for the caller.
    #[error(transparent)]
    ResultUnavailable(#[from] crate::remote::FetchFailed),
    /// A bug: the execution's coordinator panicked. Its reservations were given back
    /// and its values freed; the node keeps running.
    #[error("the coordinator of DAG `{dag}` panicked: {message}")]
    Internal {
        /// The DAG.
        dag: DagId,
        /// The panic's message.
        message: String,
    },
    /// An actor of the node stopped while the execution needed it.
    #[error("node `{node}` stopped during the execution of DAG `{dag}`")]
    NodeStopped {
        /// The node.
        node: NodeId,
        /// The DAG.
        dag: DagId,
    },
}

/// Why a node operation other than execution failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// An actor of the node has stopped.
    #[error("node `{node}` has stopped")]
    Stopped {
        /// The node.
        node: NodeId,
    },
    /// The value is not held on this node.
    #[error("`{id}` of DAG `{dag}` is not held on node `{node}`")]
    NotFound {
        /// The DAG.
        dag: DagId,
        /// The value.
        id: FunctionId,
        /// This node.
        node: NodeId,
    },
    /// The value lives on another node, and this node has no network layer to fetch it.
    #[error("`{id}` of DAG `{dag}` lives on node `{holder}`, which this node cannot reach")]
    Unreachable {
        /// The DAG.
        dag: DagId,
        /// The value.
        id: FunctionId,
        /// The node holding it.
        holder: NodeId,
    },
    /// A node's capacity was refused.
    #[error(transparent)]
    Register(#[from] handoff_core::RegisterNodeError),
    /// An actor's handler panicked; the actor restarts with its state kept.
    #[error(transparent)]
    Panicked(#[from] crate::supervision::Panicked),
    /// Waiting for a value failed.
    #[error(transparent)]
    Wait(#[from] crate::result_store::WaitError),
}

/// The most problems (after grouping) a rejection's message lists.
const LISTED_PROBLEMS: usize = 10;

/// The most functions a grouped problem names.
const LISTED_FUNCTIONS: usize = 5;

/// Where a missing code is registered, for a message: `` (it is registered on `b` (id)) ``,
/// at most three nodes, or nothing.
fn registered_where(nodes: &[NodeId], names: &[String]) -> String {
    if nodes.is_empty() {
        return String::new();
    }
    let mut listed: Vec<String> = nodes
        .iter()
        .take(3)
        .enumerate()
        .map(|(i, node)| {
            match names
                .get(i)
                .filter(|n| !n.is_empty() && n.as_str() != node.as_str())
            {
                Some(name) => format!("`{name}` ({node})"),
                None => format!("`{node}`"),
            }
        })
        .collect();
    if nodes.len() > 3 {
        listed.push(format!("{} more", nodes.len() - 3));
    }
    format!(" (it is registered on {})", listed.join(", "))
}

/// `problems` in one line for a rejection: the functions that run one missing code are
/// named together under it, repeated problems are told once, and past
/// [`LISTED_PROBLEMS`] the rest is counted.
fn describe_problems(problems: &[Problem]) -> String {
    let mut lines: Vec<String> = Vec::new();
    // Missing codes, in order of first use: the functions that run each.
    type Missing<'a> = (
        &'a CodeName,
        &'a Option<CodeName>,
        String,
        Vec<&'a FunctionId>,
    );
    let mut missing: Vec<Missing<'_>> = Vec::new();
    for problem in problems {
        if let Problem::UnknownCode {
            function,
            code,
            nearest,
            registered_on,
            registered_names,
        } = problem
        {
            match missing.iter_mut().find(|(c, ..)| *c == code) {
                Some((.., functions)) => functions.push(function),
                None => missing.push((
                    code,
                    nearest,
                    registered_where(registered_on, registered_names),
                    vec![function],
                )),
            }
        }
    }
    for problem in problems {
        let line = match problem {
            Problem::UnknownCode { code, .. } => {
                let Some(at) = missing.iter().position(|(c, ..)| *c == code) else {
                    continue;
                };
                let (code, nearest, registered, functions) = missing.remove(at);
                let hint = nearest
                    .as_ref()
                    .map(|n| format!(" (did you mean `{n}`?)"))
                    .unwrap_or_default();
                let mut names: Vec<String> = functions
                    .iter()
                    .take(LISTED_FUNCTIONS)
                    .map(|f| format!("`{f}`"))
                    .collect();
                if functions.len() > LISTED_FUNCTIONS {
                    names.push(format!("{} more", functions.len() - LISTED_FUNCTIONS));
                }
                format!(
                    "`{code}` is registered on no node it may run on{hint}{registered}, and {} function(s) run it: {}",
                    functions.len(),
                    names.join(", ")
                )
            }
            other => other.to_string(),
        };
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    let more = lines.len().saturating_sub(LISTED_PROBLEMS);
    lines.truncate(LISTED_PROBLEMS);
    if more > 0 {
        lines.push(format!("and {more} more problem(s)"));
    }
    lines.join("; ")
}
