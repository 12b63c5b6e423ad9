//! DAGs and their validation.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};

use crate::function::{Function, FunctionKind, Placement};
use crate::ids::{DagId, FunctionId, ResourceName};
use crate::resources::Amount;

/// Why a DAG is invalid. Every variant names the culprits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// Two functions share an id.
    #[error("two functions have the id `{id}`")]
    DuplicateId {
        /// The id.
        id: FunctionId,
    },
    /// A function depends on an id that is not in the DAG.
    #[error("`{function}` depends on `{dependency}`, which is not in the DAG")]
    UnknownDependency {
        /// The function.
        function: FunctionId,
        /// The missing id.
        dependency: FunctionId,
    },
    /// The dependencies loop. `path` starts and ends with the same id, and each id depends
    /// on the next.
    #[error("dependency cycle: {}", join(path))]
    Cycle {
        /// The whole cycle.
        path: Vec<FunctionId>,
    },
    /// A function is collocated with an id that is not in the DAG.
    #[error("`{function}` is collocated with `{target}`, which is not in the DAG")]
    UnknownCollocationTarget {
        /// The function.
        function: FunctionId,
        /// The missing id.
        target: FunctionId,
    },
    /// A function is collocated with an inline function, which never runs on its own.
    #[error("`{function}` is collocated with `{target}`, an inline function, which has no node")]
    InlineCollocationTarget {
        /// The function.
        function: FunctionId,
        /// The inline target.
        target: FunctionId,
    },
    /// Collocations loop: no function of the chain says where the chain runs.
    #[error("collocation cycle: {}", join(path))]
    CollocationCycle {
        /// The whole loop; it starts and ends with the same id.
        path: Vec<FunctionId>,
    },
    /// An inline function is pinned or collocated.
    #[error("`{function}` is inline, so it cannot be pinned or collocated")]
    InlinePlaced {
        /// The inline function.
        function: FunctionId,
    },
    /// An inline function has a cost: it never runs on its own, so nothing would be reserved.
    #[error("`{function}` is inline, so it cannot have a cost (it runs inside its dependents)")]
    InlineCost {
        /// The inline function.
        function: FunctionId,
    },
    /// A cost has a negative or invalid amount.
    #[error("`{function}` costs {amount} of `{resource}`; amounts must be finite, not negative and at most {max}", max = Amount::MAX)]
    InvalidCost {
        /// The function.
        function: FunctionId,
        /// The resource.
        resource: ResourceName,
        /// The amount given.
        amount: Amount,
    },
    /// A stream input has arguments (dependencies or constants): it only stands for the
    /// value pushed.
    #[error("`{function}` is a stream input, so it cannot take arguments")]
    InputArguments {
        /// The input.
        function: FunctionId,
    },
    /// A stream input has a cost: it runs nothing, so nothing would be reserved.
    #[error("`{function}` is a stream input, so it cannot have a cost")]
    InputCost {
        /// The input.
        function: FunctionId,
    },
    /// A stream stage option (`init`, `parallelism`, `batch`) is set on a function that
    /// is not a stage (an inline function or an input).
    #[error("`{function}` is {}, so it cannot have `{option}` (only regular functions are stream stages)", if *kind == FunctionKind::Input { "a stream input" } else { "inline" })]
    NotAStage {
        /// The function.
        function: FunctionId,
        /// Its kind.
        kind: FunctionKind,
        /// The option: `init`, `parallelism` or `batch`.
        option: &'static str,
    },
    /// A stream stage has `parallelism(0)`: no worker would run it.
    #[error("`{function}` has parallelism 0; a stream stage needs at least one worker")]
    ZeroParallelism {
        /// The function.
        function: FunctionId,
    },
    /// A stream stage has a batch size of 0: no batch could ever be full.
    #[error("`{function}` has a batch size of 0; a batch holds at least one item")]
    ZeroBatchSize {
        /// The function.
        function: FunctionId,
    },
}

/// The checks of one function's stream options, and of inputs (see [`Function::input`],
/// [`Function::init`], [`Function::parallelism`], [`Function::batch`]); [`validate`] runs
/// them in its first pass over the functions.
fn check_stream_options(f: &Function) -> Result<(), ValidationError> {
    let function = || f.id().clone();
    if f.is_input() {
        if !f.arg_ids().is_empty() || !f.extra_args().is_empty() {
            return Err(ValidationError::InputArguments {
                function: function(),
            });
        }
        if f.cost().is_some() {
            return Err(ValidationError::InputCost {
                function: function(),
            });
        }
    }
    if f.kind() != FunctionKind::Regular {
        let option = if f.init_code().is_some() {
            Some("init")
        } else if f.parallelism_value().is_some() {
            Some("parallelism")
        } else if f.batching().is_some() {
            Some("batch")
        } else {
            None
        };
        if let Some(option) = option {
            return Err(ValidationError::NotAStage {
                function: function(),
                kind: f.kind(),
                option,
            });
        }
    }
    if f.parallelism_value() == Some(0) {
        return Err(ValidationError::ZeroParallelism {
            function: function(),
        });
    }
    if f.batching().is_some_and(|b| b.size == 0) {
        return Err(ValidationError::ZeroBatchSize {
            function: function(),
        });
    }
    Ok(())
}

fn join(path: &[FunctionId]) -> String {
    path.iter()
        .map(FunctionId::as_str)
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// A DAG of functions, as built; [`validate`](Dag::validate) it to execute it.
///
/// ```
/// # mod handoff { pub use handoff_core::*; }
/// use handoff::{Dag, Function};
/// let dag = Dag::new()
///     .with(Function::new("source", "identity").extra_arg(42_i64))
///     .with(Function::new("transform", "multiply").arg("source").extra_arg(2_i64))
///     .with(Function::new("sink", "format").arg("transform"));
/// let valid = dag.validate()?;
/// assert_eq!(valid.len(), 3);
/// # Ok::<(), handoff_core::ValidationError>(())
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dag {
    id: DagId,
    functions: Vec<Function>,
}

impl Default for Dag {
    fn default() -> Self {
        Self::new()
    }
}

impl Dag {
    /// An empty DAG with a generated id.
    pub fn new() -> Self {
        Self::with_id(DagId::generate())
    }

    /// An empty DAG with the given id.
    pub fn with_id(id: impl Into<DagId>) -> Self {
        Dag {
            id: id.into(),
            functions: Vec::new(),
        }
    }

    /// The id.
    pub fn id(&self) -> &DagId {
        &self.id
    }

    /// Adds a function. Duplicate ids are reported by [`validate`](Dag::validate).
    pub fn add_function(&mut self, function: Function) -> &mut Self {
        self.functions.push(function);
        self
    }

    /// Adds a function, builder style.
    pub fn with(mut self, function: Function) -> Self {
        self.functions.push(function);
        self
    }

    /// The functions, in the order they were added.
    pub fn functions(&self) -> &[Function] {
        &self.functions
    }

    /// The number of functions.
    pub fn len(&self) -> usize {
        self.functions.len()
    }

    /// True when the DAG has no function.
    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }

    /// Checks the DAG and returns it in topological order with every reference resolved.
    pub fn validate(self) -> Result<ValidatedDag, ValidationError> {
        validate(self)
    }
}

/// A compressed list of lists of indices.
#[derive(Debug, Default, Clone)]
struct Csr {
    offsets: Vec<u32>,
    items: Vec<u32>,
}

impl Csr {
    fn get(&self, i: usize) -> &[u32] {
        &self.items[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

#[derive(Debug)]
struct Inner {
    id: DagId,
    functions: Vec<Function>,
    index: IdIndex,
    args: Csr,
    deps: Csr,
    dependents: Csr,
    group: Vec<u32>,
    regular: usize,
}

/// A DAG that passed validation: acyclic, every reference resolved, functions in
/// topological order (each after all of its dependencies). Cheap to clone.
///
/// Functions are addressed by their index in [`functions`](ValidatedDag::functions).
#[derive(Debug, Clone)]
pub struct ValidatedDag(Arc<Inner>);

impl ValidatedDag {
    /// The DAG's id.
    pub fn id(&self) -> &DagId {
        &self.0.id
    }

    /// The functions in topological order.
    pub fn functions(&self) -> &[Function] {
        &self.0.functions
    }

    /// The function at `index`.
    pub fn function(&self, index: usize) -> &Function {
        &self.0.functions[index]
    }

    /// The number of functions.
    pub fn len(&self) -> usize {
        self.0.functions.len()
    }

    /// True when the DAG has no function.
    pub fn is_empty(&self) -> bool {
        self.0.functions.is_empty()
    }

    /// The number of regular (scheduled) functions.
    pub fn regular_len(&self) -> usize {
        self.0.regular
    }

    /// The index of a function id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.0.index.get(id).map(|&i| i as usize)
    }

    /// The indices of the function's arguments, in order (regular or inline).
    pub fn args(&self, index: usize) -> &[u32] {
        self.0.args.get(index)
    }

    /// The regular functions that must finish before this one can run: its regular
    /// arguments and those of the inline functions it evaluates, without repeats, sorted.
    pub fn deps(&self, index: usize) -> &[u32] {
        self.0.deps.get(index)
    }

    /// The regular functions that wait for this one (the inverse of [`deps`](Self::deps)).
    pub fn dependents(&self, index: usize) -> &[u32] {
        self.0.dependents.get(index)
    }

    /// The root of the function's collocation group: itself unless collocated; a
    /// collocated function runs where its root runs.
    pub fn collocation_root(&self, index: usize) -> usize {
        self.0.group[index] as usize
    }

    /// The same DAG with each function's node as `plan` says: every function the plan
    /// places is pinned there (a collocation group by its root, its members following it),
    /// so that executing it runs the plan a user asked [`allocate`](crate::allocate) for.
    /// Functions the plan does not name keep their placement. A plan naming a node the
    /// cluster does not have is refused when the DAG is executed, before anything runs.
    ///
    /// ```
    /// # mod handoff { pub use handoff_core::*; }
    /// use handoff::{allocate, AllocationStrategy, Dag, Function, NodeId, Placement, Resources};
    /// let dag = Dag::new()
    ///     .with(Function::new("f", "work").with_cost(Resources::new().cpu(1)))
    ///     .validate()?;
    /// let nodes = [(NodeId::new("a"), Resources::new().cpu(2))];
    /// let plan = allocate(&dag, &nodes, &AllocationStrategy::default())?;
    /// let pinned = dag.following(&plan);
    /// assert_eq!(pinned.function(0).placement(), &Placement::Pinned(NodeId::new("a")));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn following(&self, plan: &crate::Assignments) -> ValidatedDag {
        let inner = &self.0;
        let functions = inner
            .functions
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let follows_root = inner.group[i] as usize != i;
                match plan.nodes.get(f.id()) {
                    Some(node) if !follows_root && !f.is_inline() => f
                        .clone()
                        .with_placement(crate::Placement::Pinned(node.clone())),
                    _ => f.clone(),
                }
            })
            .collect();
        ValidatedDag(Arc::new(Inner {
            id: inner.id.clone(),
            functions,
            index: inner.index.clone(),
            args: inner.args.clone(),
            deps: inner.deps.clone(),
            dependents: inner.dependents.clone(),
            group: inner.group.clone(),
            regular: inner.regular,
        }))
    }

    /// The same DAG with every cost and placement removed (what `execute_local` runs).
    pub fn localized(&self) -> ValidatedDag {
        let inner = &self.0;
        ValidatedDag(Arc::new(Inner {
            id: inner.id.clone(),
            functions: inner
                .functions
                .iter()
                .cloned()
                .map(Function::localized)
                .collect(),
            index: inner.index.clone(),
            args: inner.args.clone(),
            deps: inner.deps.clone(),
            dependents: inner.dependents.clone(),
            group: (0..inner.functions.len() as u32).collect(),
            regular: inner.regular,
        }))
    }
}

fn validate(dag: Dag) -> Result<ValidatedDag, ValidationError> {
    let Dag { id, functions } = dag;
    let n = functions.len();
    if n >= u32::MAX as usize {
        // Indices are u32; a DAG this large would not fit in memory anyway.
        return Err(ValidationError::DuplicateId {
            id: FunctionId::new("<more than 2^32 functions>"),
        });
    }

    // One pass over the functions (each is large, and touching them costs more than the
    // checks): ids indexed, kinds copied out, and the first failed stream check kept, to be
    // reported only once no duplicate id turns up (duplicates are reported first).
    let mut index = IdIndex::with_capacity_and_hasher(n, Default::default());
    let mut kinds: Vec<FunctionKind> = Vec::with_capacity(n);
    let mut stream_error = None;
    for (i, f) in functions.iter().enumerate() {
        if index.insert(f.id().clone(), i as u32).is_some() {
            return Err(ValidationError::DuplicateId { id: f.id().clone() });
        }
        if stream_error.is_none() {
            stream_error = check_stream_options(f).err();
        }
        kinds.push(f.kind());
    }
    if let Some(error) = stream_error {
        return Err(error);
    }

    let mut arg_offsets: Vec<u32> = Vec::with_capacity(n + 1);
    arg_offsets.push(0);
    let mut arg_items: Vec<u32> = Vec::with_capacity(n * 2);
    let mut any_collocated = false;
    for f in &functions {
        any_collocated |= matches!(f.placement(), Placement::Collocated(_));
        if let Some(cost) = f.cost()
            && let Some((resource, amount)) = cost.first_invalid()
        {
            return Err(ValidationError::InvalidCost {
                function: f.id().clone(),
                resource: resource.clone(),
                amount,
            });
        }
        if f.is_inline() && *f.placement() != Placement::Any {
            return Err(ValidationError::InlinePlaced {
                function: f.id().clone(),
            });
        }
        if f.is_inline() && f.cost().is_some() {
            return Err(ValidationError::InlineCost {
                function: f.id().clone(),
            });
        }
        for dep in f.arg_ids() {
            let Some(&d) = index.get(dep) else {
                return Err(ValidationError::UnknownDependency {
                    function: f.id().clone(),
                    dependency: dep.clone(),
                });
            };
            // Each argument is looked up once; everything below uses these indices.
            arg_items.push(d);
        }
        arg_offsets.push(arg_items.len() as u32);
    }
    let original_args = Csr {
        offsets: arg_offsets,
        items: arg_items,
    };

    // Without any collocation every function is its own root (what `collocation_groups`
    // would find, without another pass over the functions).
    let group = if any_collocated {
        collocation_groups(&functions, &index)?
    } else {
        (0..n as u32).collect()
    };

    // Topological order over dependency edges (dependency -> dependent).
    let order = stable_toposort(&original_args).map_err(|node| {
        let graph = dependency_graph(&original_args);
        ValidationError::Cycle {
            path: cycle_path(&graph, node, &functions),
        }
    })?;

    // Renumber everything in topological order.
    let mut position = vec![0_u32; n];
    for (pos, node) in order.iter().enumerate() {
        position[node.index()] = pos as u32;
    }
    let mut functions = functions;
    permute_in_place(&mut functions, &position);
    let kinds: Vec<FunctionKind> = order.iter().map(|node| kinds[node.index()]).collect();
    let group: Vec<u32> = order
        .iter()
        .map(|node| position[group[node.index()] as usize])
        .collect();
    for v in index.values_mut() {
        *v = position[*v as usize];
    }

    let mut args = Csr {
        offsets: Vec::with_capacity(n + 1),
        items: Vec::with_capacity(original_args.items.len()),
    };
    args.offsets.push(0);
    for node in &order {
        args.items.extend(
            original_args
                .get(node.index())
                .iter()
                .map(|&a| position[a as usize]),
        );
        args.offsets.push(args.items.len() as u32);
    }
    drop(original_args);

    // Effective dependencies: regular args, plus the effective dependencies of inline args
    // (inline args come earlier in the order, so theirs are known), sorted, without repeats.
    let mut deps = Csr {
        offsets: Vec::with_capacity(n + 1),
        items: Vec::with_capacity(args.items.len()),
    };
    deps.offsets.push(0);
    for i in 0..n {
        let start = deps.items.len();
        for &a in args.get(i) {
            if kinds[a as usize] == FunctionKind::Inline {
                let (from, to) = (
                    deps.offsets[a as usize] as usize,
                    deps.offsets[a as usize + 1] as usize,
                );
                deps.items.extend_from_within(from..to);
            } else {
                deps.items.push(a);
            }
        }
        let tail = &mut deps.items[start..];
        tail.sort_unstable();
        let mut kept = 0;
        for k in 0..tail.len() {
            if k == 0 || tail[k] != tail[kept - 1] {
                tail[kept] = tail[k];
                kept += 1;
            }
        }
        deps.items.truncate(start + kept);
        deps.offsets.push(deps.items.len() as u32);
    }
    // Dependents of each function (regular ones only), in order: counted, then filled.
    let mut counts = vec![0_u32; n + 1];
    for (i, &kind) in kinds.iter().enumerate() {
        if kind == FunctionKind::Regular {
            for &d in deps.get(i) {
                counts[d as usize + 1] += 1;
            }
        }
    }
    for k in 1..=n {
        counts[k] += counts[k - 1];
    }
    let mut dependents = Csr {
        items: vec![0; counts[n] as usize],
        offsets: counts.clone(),
    };
    let mut next = counts;
    for (i, &kind) in kinds.iter().enumerate() {
        if kind == FunctionKind::Regular {
            for &d in deps.get(i) {
                dependents.items[next[d as usize] as usize] = i as u32;
                next[d as usize] += 1;
            }
        }
    }
    let regular = kinds.iter().filter(|&&k| k != FunctionKind::Inline).count();

    Ok(ValidatedDag(Arc::new(Inner {
        id,
        index,
        args,
        deps,
        dependents,
        group,
        regular,
        functions,
    })))
}

/// Moves each item to `position[i]` (its index in the new order), in place: every item
/// not already in place is swapped straight into its slot, so each moves once, and no
/// second vector of large items is allocated. `position` must be a permutation.
fn permute_in_place<T>(items: &mut [T], position: &[u32]) {
    let mut placed = vec![false; items.len()];
    for start in 0..items.len() {
        if placed[start] {
            continue;
        }
        // Follow the cycle through `start`: the item at `start` goes to its slot, and the
        // item found there comes back to `start`, until the cycle closes.
        placed[start] = true;
        let mut target = position[start] as usize;
        while target != start {
            items.swap(start, target);
            placed[target] = true;
            target = position[target] as usize;
        }
    }
}

/// The map from function ids to indices (a fast hasher: validation looks every id up).
type IdIndex = HashMap<FunctionId, u32, foldhash::fast::RandomState>;

/// The graph of dependency edges (dependency -> dependent), for finding a cycle.
fn dependency_graph(args: &Csr) -> DiGraph<(), (), u32> {
    let n = args.offsets.len() - 1;
    let mut graph: DiGraph<(), (), u32> = DiGraph::with_capacity(n, args.items.len());
    for _ in 0..n {
        graph.add_node(());
    }
    for i in 0..n {
        for &d in args.get(i) {
            graph.add_edge(NodeIndex::new(d as usize), NodeIndex::new(i), ());
        }
    }
    graph
}

/// Kahn's algorithm with a FIFO queue over the argument lists: independent functions keep
/// the order they were added in, and a function's dependents are visited latest added
/// first. On a cycle, returns a node on it.
fn stable_toposort(args: &Csr) -> Result<Vec<NodeIndex<u32>>, NodeIndex<u32>> {
    let n = args.offsets.len() - 1;
    // The dependents of each function (edges out), counted then filled.
    let mut offsets = vec![0_u32; n + 1];
    for &d in &args.items {
        offsets[d as usize + 1] += 1;
    }
    for k in 1..=n {
        offsets[k] += offsets[k - 1];
    }
    let mut items = vec![0_u32; args.items.len()];
    let mut next = offsets.clone();
    for i in 0..n {
        for &d in args.get(i) {
            items[next[d as usize] as usize] = i as u32;
            next[d as usize] += 1;
        }
    }
    drop(next);
    let mut indegree: Vec<u32> = (0..n)
        .map(|i| args.offsets[i + 1] - args.offsets[i])
        .collect();
    // `order` is the queue: what is in it and not yet visited lies after `head`.
    let mut order: Vec<u32> = (0..n as u32)
        .filter(|&i| indegree[i as usize] == 0)
        .collect();
    order.reserve(n - order.len());
    let mut head = 0;
    while head < order.len() {
        let node = order[head] as usize;
        head += 1;
        let (from, to) = (offsets[node] as usize, offsets[node + 1] as usize);
        for &next in items[from..to].iter().rev() {
            indegree[next as usize] -= 1;
            if indegree[next as usize] == 0 {
                order.push(next);
            }
        }
    }
    if order.len() == n {
        return Ok(order
            .into_iter()
            .map(|i| NodeIndex::new(i as usize))
            .collect());
    }
    // Some node is on a cycle; petgraph's DFS finds one.
    match petgraph::algo::toposort(&dependency_graph(args), None) {
        Err(cycle) => Err(cycle.node_id()),
        Ok(_) => Err(NodeIndex::new(
            indegree.iter().position(|&d| d > 0).unwrap_or(0),
        )),
    }
}

/// The root of each function's collocation chain, by original index.
fn collocation_groups(
    functions: &[Function],
    index: &IdIndex,
) -> Result<Vec<u32>, ValidationError> {
    const UNKNOWN: u32 = u32::MAX;
    let mut root = vec![UNKNOWN; functions.len()];
    let mut chain: Vec<u32> = Vec::new();
    for start in 0..functions.len() {
        chain.clear();
        let mut current = start as u32;
        let resolved = loop {
            if root[current as usize] != UNKNOWN {
                break root[current as usize];
            }
            if let Some(pos) = chain.iter().position(|&c| c == current) {
                let mut path: Vec<FunctionId> = chain[pos..]
                    .iter()
                    .map(|&c| functions[c as usize].id().clone())
                    .collect();
                path.push(functions[current as usize].id().clone());
                return Err(ValidationError::CollocationCycle { path });
            }
            chain.push(current);
            let f = &functions[current as usize];
            match f.placement() {
                Placement::Collocated(target) => {
                    let Some(&t) = index.get(target) else {
                        return Err(ValidationError::UnknownCollocationTarget {
                            function: f.id().clone(),
                            target: target.clone(),
                        });
                    };
                    if functions[t as usize].is_inline() {
                        return Err(ValidationError::InlineCollocationTarget {
                            function: f.id().clone(),
                            target: target.clone(),
                        });
                    }
                    current = t;
                }
                _ => break current,
            }
        };
        for &c in &chain {
            root[c as usize] = resolved;
        }
    }
    Ok(root)
}

/// A cycle through `start`, following dependencies, as ids: `[start, …, start]`.
fn cycle_path(
    graph: &DiGraph<(), (), u32>,
    start: NodeIndex<u32>,
    functions: &[Function],
) -> Vec<FunctionId> {
    // Breadth-first along "depends on" (incoming edges) until we come back to `start`.
    let mut parent: HashMap<NodeIndex<u32>, NodeIndex<u32>> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    let mut last = None;
    'search: while let Some(node) = queue.pop_front() {
        for dep in graph.neighbors_directed(node, Direction::Incoming) {
            if dep == start {
                last = Some(node);
                break 'search;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(dep) {
                e.insert(node);
                queue.push_back(dep);
            }
        }
    }
    let mut path = vec![start];
    if let Some(mut node) = last {
        let mut back = vec![node];
        while node != start {
            node = parent[&node];
            back.push(node);
        }
        // `back` runs from the last hop to start; reverse to read start -> ... -> last.
        back.reverse();
        path = back;
        path.push(start);
    } else {
        path.push(start);
    }
    path.into_iter()
        .map(|n| functions[n.index()].id().clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(id: &str) -> Function {
        Function::new(id, "code")
    }

    #[test]
    fn orders_topologically() {
        let dag = Dag::with_id("d")
            .with(f("c").args(["a", "b"]))
            .with(f("b").arg("a"))
            .with(f("a"))
            .validate()
            .expect("valid");
        let ids: Vec<_> = dag.functions().iter().map(|f| f.id().as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        let c = dag.index_of("c").expect("c");
        assert_eq!(dag.deps(c).len(), 2);
        assert_eq!(dag.dependents(dag.index_of("a").expect("a")).len(), 2);
    }

    #[test]
    fn permutes_in_place() {
        // Two cycles (0 -> 3 -> 1 -> 0, 2 -> 4 -> 2) and a fixed point.
        let mut items = vec!['a', 'b', 'c', 'd', 'e', 'f'];
        permute_in_place(&mut items, &[3, 0, 4, 1, 2, 5]);
        assert_eq!(items, ['b', 'd', 'e', 'a', 'c', 'f']);
    }

    #[test]
    fn a_duplicate_id_is_reported_before_an_earlier_stream_error() {
        let err = Dag::new()
            .with(Function::input("in").arg("x"))
            .with(f("x"))
            .with(f("x"))
            .validate()
            .expect_err("invalid");
        assert_eq!(err, ValidationError::DuplicateId { id: "x".into() });
    }

    #[test]
    fn reports_the_whole_cycle() {
        let err = Dag::new()
            .with(f("a").arg("c"))
            .with(f("b").arg("a"))
            .with(f("c").arg("b"))
            .with(f("x"))
            .validate()
            .expect_err("cycle");
        let ValidationError::Cycle { path } = err else {
            panic!("{err:?}")
        };
        assert_eq!(path.len(), 4);
        assert_eq!(path.first(), path.last());
        // Each id depends on the next.
        for pair in path.windows(2) {
            let (from, to) = (pair[0].as_str(), pair[1].as_str());
            let expected = match from {
                "a" => "c",
                "b" => "a",
                "c" => "b",
                _ => "?",
            };
            assert_eq!(to, expected, "{path:?}");
        }
    }

    #[test]
    fn reports_self_dependency() {
        let err = Dag::new()
            .with(f("a").arg("a"))
            .validate()
            .expect_err("cycle");
        assert_eq!(
            err,
            ValidationError::Cycle {
                path: vec!["a".into(), "a".into()]
            }
        );
    }

    #[test]
    fn inline_dependencies_are_effective_dependencies() {
        let dag = Dag::new()
            .with(f("src"))
            .with(f("inl").arg("src").inline())
            .with(f("use").arg("inl"))
            .validate()
            .expect("valid");
        let use_ = dag.index_of("use").expect("use");
        let src = dag.index_of("src").expect("src") as u32;
        assert_eq!(dag.deps(use_), &[src]);
        assert_eq!(dag.regular_len(), 2);
    }

    #[test]
    fn collocation_chains_resolve_to_their_root() {
        let dag = Dag::new()
            .with(f("c").collocated_with("b"))
            .with(f("b").collocated_with("a"))
            .with(f("a").pinned("n1"))
            .validate()
            .expect("valid");
        let a = dag.index_of("a").expect("a");
        assert_eq!(dag.collocation_root(dag.index_of("c").expect("c")), a);
        assert_eq!(dag.collocation_root(dag.index_of("b").expect("b")), a);
    }
}
