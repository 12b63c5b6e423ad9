//! Choosing a node for each function.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use crate::dag::ValidatedDag;
use crate::function::Placement;
use crate::ids::{FunctionId, NodeId};
use crate::resources::Resources;

/// A node as an allocator sees it.
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    /// The node.
    pub id: &'a NodeId,
    /// Its registered capacity.
    pub capacity: &'a Resources,
    /// What it has free right now.
    pub available: &'a Resources,
}

impl NodeView<'_> {
    /// True when `cost` fits in what the node has free right now.
    pub fn fits_now(&self, cost: Option<&Resources>) -> bool {
        cost.is_none_or(|c| c.fits_in(self.available))
    }
}

/// Picks a node for a function.
///
/// `nodes` holds only nodes whose capacity can hold `cost` (when idle), in a stable
/// order with the local node first; never empty. Return the index of the chosen node.
/// Choosing a node where the cost does not fit right now makes the function wait for
/// capacity there; returning `None` means "not now": the function waits and is offered
/// again when capacity is released.
pub trait Allocator: Send + Sync + 'static {
    /// Picks a node, by index into `nodes`.
    fn choose(&self, cost: Option<&Resources>, nodes: &[NodeView<'_>]) -> Option<usize>;
}

/// The first node (local first, then by id) where the cost fits right now; if none,
/// the first node that can hold it when idle.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstAvailable;

impl Allocator for FirstAvailable {
    fn choose(&self, cost: Option<&Resources>, nodes: &[NodeView<'_>]) -> Option<usize> {
        nodes.iter().position(|n| n.fits_now(cost)).or(Some(0))
    }
}

/// The node with the most free capacity relative to its size, among those where the
/// cost fits right now; if none, the least loaded node that can hold it when idle.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadBalanced;

impl Allocator for LoadBalanced {
    fn choose(&self, cost: Option<&Resources>, nodes: &[NodeView<'_>]) -> Option<usize> {
        let best = |only_fitting: bool| {
            nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| !only_fitting || n.fits_now(cost))
                .map(|(i, n)| (i, n.capacity.free_ratio(n.available)))
                // Highest ratio wins; ties go to the earlier node.
                .fold(None, |best: Option<(usize, f64)>, (i, r)| match best {
                    Some((_, br)) if br >= r => best,
                    _ => Some((i, r)),
                })
                .map(|(i, _)| i)
        };
        best(true).or_else(|| best(false))
    }
}

/// Where a function's inputs are, for [`choose_node`]: the nodes holding them, each with
/// a weight (bytes at run time, a count of inputs in a plan), the heaviest first.
pub type Locality = [(NodeId, u64)];

/// The placement rule: picks the node for one function among `nodes` (those it may run
/// on: by code, placement and capacity, in preference order, local first). Used both by
/// [`allocate`] and by a node's resource manager at run time, so a plan and a run decide
/// alike. In order:
///
/// 1. a retry after the function's own failure on `avoid` goes to another node when one
///    has room for it now;
/// 2. the node holding the most of its inputs (`locality`), when it has room now;
/// 3. else the strategy's choice.
///
/// `None` when the strategy chooses no node (the function waits). The index is into
/// `nodes`.
///
/// ```
/// # mod handoff { pub use handoff_core::*; }
/// use handoff::{choose_node, AllocationStrategy, NodeId, NodeView, Resources};
/// let (a, b) = (NodeId::new("a"), NodeId::new("b"));
/// let capacity = Resources::new().cpu(2);
/// let free = Resources::new().cpu(1);
/// let nodes = [
///     NodeView { id: &a, capacity: &capacity, available: &free },
///     NodeView { id: &b, capacity: &capacity, available: &free },
/// ];
/// let cost = Resources::new().cpu(1);
/// let first = AllocationStrategy::FirstAvailable;
/// assert_eq!(choose_node(&cost, &nodes, &[], None, &first), Some(0));
/// // Its input is on `b`: it goes there.
/// assert_eq!(choose_node(&cost, &nodes, &[(b.clone(), 1)], None, &first), Some(1));
/// // It just failed on `a`: it goes elsewhere.
/// assert_eq!(choose_node(&cost, &nodes, &[], Some(&a), &first), Some(1));
/// ```
pub fn choose_node(
    cost: &Resources,
    nodes: &[NodeView<'_>],
    locality: &Locality,
    avoid: Option<&NodeId>,
    strategy: &AllocationStrategy,
) -> Option<usize> {
    let fits_now = |v: &NodeView<'_>| cost.fits_in(v.available);
    if let Some(avoid) = avoid
        && nodes.iter().any(|v| v.id != avoid && fits_now(v))
        && nodes.iter().any(|v| v.id == avoid)
    {
        let others: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].id != avoid).collect();
        let views: Vec<NodeView<'_>> = others.iter().map(|&i| nodes[i]).collect();
        return choose_node(cost, &views, locality, None, strategy).map(|k| others[k]);
    }
    locality
        .iter()
        .find_map(|(holder, _)| nodes.iter().position(|v| v.id == holder && fits_now(v)))
        .or_else(|| strategy.choose(Some(cost), nodes))
        .filter(|&i| i < nodes.len())
}

/// An allocation strategy: a built-in, or your own [`Allocator`].
#[derive(Clone, Default)]
pub enum AllocationStrategy {
    /// [`FirstAvailable`].
    #[default]
    FirstAvailable,
    /// [`LoadBalanced`].
    LoadBalanced,
    /// Your own allocator.
    Custom(Arc<dyn Allocator>),
}

impl fmt::Debug for AllocationStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FirstAvailable => f.write_str("FirstAvailable"),
            Self::LoadBalanced => f.write_str("LoadBalanced"),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl Allocator for AllocationStrategy {
    fn choose(&self, cost: Option<&Resources>, nodes: &[NodeView<'_>]) -> Option<usize> {
        match self {
            Self::FirstAvailable => FirstAvailable.choose(cost, nodes),
            Self::LoadBalanced => LoadBalanced.choose(cost, nodes),
            Self::Custom(a) => a.choose(cost, nodes).filter(|&i| i < nodes.len()),
        }
    }
}

/// Why functions cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum AllocationError {
    /// No node could ever run the function: its cost exceeds every candidate's capacity.
    #[error(
        "`{function}` costs {cost}, more than any node can hold{}",
        best_node.as_ref().map(|n| format!(" (the closest, {}, has {})", labelled(n, best_name.as_deref()), best_capacity.as_ref().map(ToString::to_string).unwrap_or_default())).unwrap_or_else(|| " (no node is registered)".to_owned())
    )]
    Unsatisfiable {
        /// The function.
        function: FunctionId,
        /// Its cost.
        cost: Resources,
        /// The candidate node that came closest, if any.
        best_node: Option<NodeId>,
        /// That node's capacity.
        best_capacity: Option<Resources>,
        /// The name its operator gave that node, when known
        /// ([`AllocationError::name_nodes`]).
        #[serde(default)]
        best_name: Option<String>,
    },
    /// No live node can hold the function's cost, and nodes that could have held it left
    /// the cluster (the only node with a GPU stopped, say).
    #[error(
        "`{function}` costs {cost}, which only nodes that left the cluster could hold: {}",
        nodes.iter().enumerate().map(|(i, n)| labelled(n, names.get(i).map(String::as_str).filter(|s| !s.is_empty()))).collect::<Vec<_>>().join(", ")
    )]
    NodesLeft {
        /// The function.
        function: FunctionId,
        /// Its cost.
        cost: Resources,
        /// The nodes that left whose capacity holds it, the latest first (at most three).
        nodes: Vec<NodeId>,
        /// The names their operators gave them, in the same order, when known (empty
        /// strings where not; [`AllocationError::name_nodes`]).
        #[serde(default)]
        names: Vec<String>,
    },
    /// No reservation is held anywhere, so no release can ever change the answer, yet the
    /// function was not granted: the allocator chose no node, or the tracker refused.
    #[error("`{function}` can never be granted: {reason}")]
    NeverGranted {
        /// The function.
        function: FunctionId,
        /// What refused it.
        reason: String,
    },
    /// A node given to [`allocate`] has a capacity that is negative, not a finite number
    /// or above [`Amount::MAX`](crate::Amount::MAX).
    #[error(
        "node `{node}` has {amount} of `{resource}`; capacities must be finite, not negative and at most {max}",
        max = crate::Amount::MAX
    )]
    InvalidCapacity {
        /// The node.
        node: NodeId,
        /// The resource.
        resource: crate::ids::ResourceName,
        /// The amount given.
        amount: crate::Amount,
    },
    /// The function is pinned to a node that is not registered, or that functions
    /// cannot be sent to.
    #[error("`{function}` is pinned to `{node}`, which is not a node functions can run on")]
    UnknownNode {
        /// The function.
        function: FunctionId,
        /// The node.
        node: NodeId,
    },
    /// The function must run on a node (pinned, or collocated with functions placed
    /// there) that left the cluster and did not come back within the grace period.
    #[error(
        "`{function}` must run on `{node}`, which left the cluster and did not come back within {grace:?}"
    )]
    NodeDown {
        /// The function.
        function: FunctionId,
        /// The node.
        node: NodeId,
        /// How long it was waited for.
        grace: std::time::Duration,
    },
}

/// A node in a message: `` `name` (id) `` when it has a name, else `` `id` ``.
fn labelled(node: &NodeId, name: Option<&str>) -> String {
    match name {
        Some(name) if name != node.as_str() => format!("`{name}` ({node})"),
        _ => format!("`{node}`"),
    }
}

impl AllocationError {
    /// Fills in the names of the nodes the error names, from `name_of` (a cluster's
    /// transport knows the names nodes announced), so that its message shows them.
    ///
    /// ```
    /// # mod handoff { pub use handoff_core::*; }
    /// use handoff::{AllocationError, NodeId, Resources};
    /// let mut error = AllocationError::NodesLeft {
    ///     function: "render".into(),
    ///     cost: Resources::new().gpu(1),
    ///     nodes: vec![NodeId::new("12D3KooWabc")],
    ///     names: Vec::new(),
    /// };
    /// error.name_nodes(|node| (node.as_str() == "12D3KooWabc").then(|| "gpu-box".to_owned()));
    /// assert_eq!(
    ///     error.to_string(),
    ///     "`render` costs {gpu: 1}, which only nodes that left the cluster could hold: `gpu-box` (12D3KooWabc)"
    /// );
    /// ```
    pub fn name_nodes(&mut self, name_of: impl Fn(&NodeId) -> Option<String>) {
        match self {
            AllocationError::Unsatisfiable {
                best_node: Some(node),
                best_name,
                ..
            } => {
                if let Some(name) = name_of(node) {
                    *best_name = Some(name);
                }
            }
            AllocationError::NodesLeft { nodes, names, .. } => {
                *names = nodes
                    .iter()
                    .enumerate()
                    .map(|(i, node)| {
                        name_of(node)
                            .or_else(|| names.get(i).cloned())
                            .unwrap_or_default()
                    })
                    .collect();
            }
            _ => {}
        }
    }
}

/// The capacity of the nodes to allocate over, in preference order (local node first).
pub type NodeCapacities = [(NodeId, Resources)];

/// Where each function goes, as planned by [`allocate`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignments {
    /// The node of each regular function.
    pub nodes: BTreeMap<FunctionId, NodeId>,
    /// The functions whose cost did not fit what was left on their node when planned:
    /// at run time they wait for capacity, and take the first node that can hold them
    /// when it frees (never a node too small for them); the node in [`Self::nodes`] is
    /// the strategy's choice among those that can.
    pub waiting: BTreeSet<FunctionId>,
}

/// The candidate nodes for a set of costs: those whose capacity holds every one of them.
/// On failure, names the cost that fits nowhere and the closest node.
pub fn candidates(
    function: &FunctionId,
    costs: &[&Resources],
    nodes: &NodeCapacities,
    allowed: Option<&NodeId>,
) -> Result<Vec<usize>, AllocationError> {
    if let Some(node) = allowed
        && !nodes.iter().any(|(n, _)| n == node)
    {
        return Err(AllocationError::UnknownNode {
            function: function.clone(),
            node: node.clone(),
        });
    }
    let fitting: Vec<usize> = nodes
        .iter()
        .enumerate()
        .filter(|(_, (n, cap))| {
            allowed.is_none_or(|a| a == n) && costs.iter().all(|c| c.fits_in(cap))
        })
        .map(|(i, _)| i)
        .collect();
    if !fitting.is_empty() {
        return Ok(fitting);
    }
    // The closest node: the fewest missing resources, then the smallest shortfall.
    let total = Resources::saturating_sum(costs.iter().copied());
    let worst = costs
        .iter()
        .find(|c| {
            !nodes
                .iter()
                .any(|(n, cap)| allowed.is_none_or(|a| a == n) && c.fits_in(cap))
        })
        .copied()
        .unwrap_or(&total);
    let best = nodes
        .iter()
        .filter(|(n, _)| allowed.is_none_or(|a| a == n))
        .min_by_key(|(_, cap)| {
            let short = worst.shortfall(cap);
            (
                short.iter().count(),
                short
                    .iter()
                    .map(|(_, a)| a.micros())
                    .fold(0_i64, i64::saturating_add),
            )
        });
    Err(AllocationError::Unsatisfiable {
        function: function.clone(),
        cost: worst.clone(),
        best_node: best.map(|(n, _)| n.clone()),
        best_capacity: best.map(|(_, c)| c.clone()),
        best_name: None,
    })
}

/// Plans where every regular function of `dag` runs, as if all were submitted at once:
/// pinned functions go where pinned, collocated ones with their root (the group placed
/// by its summed cost), the rest by the placement rule a node's runtime grants with
/// ([`choose_node`], with each function's inputs planned on other nodes than the first
/// as its locality). A function never lands on a node whose capacity cannot hold its
/// cost; one that does not fit what is left right now waits for its node (see
/// [`Assignments::waiting`]); one that fits no node at all is an error.
///
/// ```
/// # mod handoff { pub use handoff_core::*; }
/// use handoff::{allocate, AllocationStrategy, Dag, Function, NodeId, Resources};
/// let dag = Dag::new()
///     .with(Function::new("f1", "work").with_cost(Resources::new().cpu(2).memory(2000)))
///     .with(Function::new("f2", "work").with_cost(Resources::new().cpu(1).memory(1000)))
///     .with(Function::new("f3", "work").with_cost(Resources::new().cpu(3).memory(4000)))
///     .with(Function::new("f4", "work").with_cost(Resources::new().cpu(1).memory(1000)))
///     .validate()?;
/// let nodes = [
///     (NodeId::new("node1"), Resources::new().cpu(4).memory(8000)),
///     (NodeId::new("node2"), Resources::new().cpu(2).memory(4000)),
/// ];
/// let plan = allocate(&dag, &nodes, &AllocationStrategy::FirstAvailable)?;
/// assert_eq!(plan.nodes["f3"].as_str(), "node1"); // never the 2-cpu node
/// assert!(plan.waiting.contains("f3"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn allocate(
    dag: &ValidatedDag,
    nodes: &NodeCapacities,
    strategy: &AllocationStrategy,
) -> Result<Assignments, AllocationError> {
    const UNPLACED: usize = usize::MAX;
    for (node, capacity) in nodes {
        if let Some((resource, amount)) = capacity.first_invalid() {
            return Err(AllocationError::InvalidCapacity {
                node: node.clone(),
                resource: resource.clone(),
                amount,
            });
        }
    }
    let n = dag.len();
    let mut remaining: Vec<Resources> = nodes.iter().map(|(_, c)| c.clone()).collect();
    // The node of each collocation group, by root.
    let mut group_node: Vec<usize> = vec![UNPLACED; n];
    // The node of each function placed so far.
    let mut placed: Vec<usize> = vec![UNPLACED; n];
    let mut out = Assignments::default();
    let every_node: Vec<usize> = (0..nodes.len()).collect();

    // Members of the collocation groups of more than one function, by root (most
    // functions are alone in theirs and need no list).
    let mut followed = vec![false; n];
    for i in 0..n {
        let root = dag.collocation_root(i);
        if root != i && !dag.function(i).is_inline() {
            followed[root] = true;
        }
    }
    let mut members: std::collections::HashMap<usize, Vec<usize>> =
        std::collections::HashMap::new();
    for i in 0..n {
        let root = dag.collocation_root(i);
        if followed[root] && !dag.function(i).is_inline() {
            members.entry(root).or_default().push(i);
        }
    }

    for i in 0..n {
        let f = dag.function(i);
        if f.is_inline() {
            continue;
        }
        let root = dag.collocation_root(i);
        let node = match group_node[root] {
            placed if placed != UNPLACED => placed,
            _ => {
                let group: &[usize] = members
                    .get(&root)
                    .map_or(std::slice::from_ref(&root), Vec::as_slice);
                let costs: Vec<&Resources> = group
                    .iter()
                    .filter_map(|&m| dag.function(m).cost())
                    .collect();
                let pinned = match dag.function(root).placement() {
                    Placement::Pinned(n) => Some(n),
                    _ => None,
                };
                // The group's node must hold all its members at once.
                let group_total = Resources::saturating_sum(costs.iter().copied());
                let fitting: Cow<'_, [usize]> =
                    if costs.is_empty() && pinned.is_none() && !nodes.is_empty() {
                        // No cost and no pin: every node is a candidate (what `candidates`
                        // returns then), without a list per function.
                        Cow::Borrowed(&every_node)
                    } else {
                        // The member whose cost no allowed node can hold (the same one
                        // `candidates` reports the cost of), else the first member.
                        let culprit = group
                            .iter()
                            .find(|&&m| {
                                dag.function(m).cost().is_some_and(|c| {
                                    !nodes.iter().any(|(n, cap)| {
                                        pinned.is_none_or(|p| p == n) && c.fits_in(cap)
                                    })
                                })
                            })
                            .map_or(dag.function(root).id(), |&m| dag.function(m).id());
                        match candidates(culprit, &costs, nodes, pinned) {
                            Ok(_) if group.len() > 1 => {
                                Cow::Owned(candidates(culprit, &[&group_total], nodes, pinned)?)
                            }
                            fitting => Cow::Owned(fitting?),
                        }
                    };
                let views: Vec<NodeView<'_>> = fitting
                    .iter()
                    .map(|&k| NodeView {
                        id: &nodes[k].0,
                        capacity: &nodes[k].1,
                        available: &remaining[k],
                    })
                    .collect();
                // The runtime's rule, with the inputs planned on other nodes than the
                // first (the caller's, where a run keeps what it makes) as its locality.
                let locality = planned_inputs(dag, i, &placed, nodes);
                let choice =
                    choose_node(&group_total, &views, &locality, None, strategy).unwrap_or(0);
                let chosen = fitting[choice.min(fitting.len() - 1)];
                group_node[root] = chosen;
                chosen
            }
        };
        if let Some(cost) = f.cost() {
            match remaining[node].checked_sub(cost) {
                Some(left) => remaining[node] = left,
                None => {
                    out.waiting.insert(f.id().clone());
                    remaining[node] = remaining[node].saturating_sub(cost);
                }
            }
        }
        placed[i] = node;
        out.nodes.insert(f.id().clone(), nodes[node].0.clone());
    }
    Ok(out)
}

/// The inputs of function `i` planned on nodes other than the first, counted per node,
/// the most first (ties: in the order of its inputs): its [`Locality`] in a plan.
fn planned_inputs(
    dag: &ValidatedDag,
    i: usize,
    placed: &[usize],
    nodes: &NodeCapacities,
) -> Vec<(NodeId, u64)> {
    let mut held: Vec<(usize, u64)> = Vec::new();
    for &d in dag.deps(i) {
        let node = placed[d as usize];
        if node == 0 || node == usize::MAX {
            continue;
        }
        match held.iter_mut().find(|(n, _)| *n == node) {
            Some((_, count)) => *count += 1,
            None => held.push((node, 1)),
        }
    }
    // Stable: ties keep the order of the inputs, as at run time.
    held.sort_by_key(|&(_, count)| std::cmp::Reverse(count));
    held.into_iter()
        .map(|(n, count)| (nodes[n].0.clone(), count))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dag, Function};

    fn nodes() -> Vec<(NodeId, Resources)> {
        vec![
            (NodeId::new("node1"), Resources::new().cpu(2)),
            (NodeId::new("node2"), Resources::new().cpu(2)),
        ]
    }

    #[test]
    fn pinned_and_collocated() {
        let dag = Dag::new()
            .with(
                Function::new("f1", "c")
                    .with_cost(Resources::new().cpu(1))
                    .pinned("node2"),
            )
            .with(Function::new("f2", "c").with_cost(Resources::new().cpu(1)))
            .with(
                Function::new("f3", "c")
                    .with_cost(Resources::new().cpu(1))
                    .collocated_with("f2"),
            )
            .validate()
            .expect("valid");
        let plan = allocate(&dag, &nodes(), &AllocationStrategy::FirstAvailable).expect("plan");
        assert_eq!(plan.nodes["f1"].as_str(), "node2");
        assert_eq!(plan.nodes["f2"].as_str(), "node1");
        assert_eq!(plan.nodes["f3"].as_str(), "node1");
        assert!(plan.waiting.is_empty());
    }

    #[test]
    fn a_group_is_placed_by_its_summed_cost() {
        let nodes = vec![
            (NodeId::new("small"), Resources::new().cpu(2)),
            (NodeId::new("gpu"), Resources::new().cpu(2).gpu(1)),
        ];
        let dag = Dag::new()
            .with(Function::new("a", "c").with_cost(Resources::new().cpu(1)))
            .with(
                Function::new("b", "c")
                    .with_cost(Resources::new().gpu(1))
                    .collocated_with("a"),
            )
            .validate()
            .expect("valid");
        let plan = allocate(&dag, &nodes, &AllocationStrategy::FirstAvailable).expect("fits");
        assert_eq!(plan.nodes["a"].as_str(), "gpu", "only `gpu` holds both");
        assert_eq!(plan.nodes["b"].as_str(), "gpu");

        let dag = Dag::new()
            .with(Function::new("a", "c").with_cost(Resources::new().cpu(2)))
            .with(
                Function::new("b", "c")
                    .with_cost(Resources::new().cpu(1))
                    .collocated_with("a"),
            )
            .validate()
            .expect("valid");
        let err = allocate(&dag, &nodes, &AllocationStrategy::FirstAvailable)
            .expect_err("cpu 3 fits no node");
        assert!(
            matches!(&err, AllocationError::Unsatisfiable { function, cost, .. }
                if function.as_str() == "a" && *cost == Resources::new().cpu(3)),
            "{err:?}"
        );
    }

    #[test]
    fn unsatisfiable_costs_name_the_function_and_the_best_node() {
        let dag = Dag::new()
            .with(Function::new("big", "c").with_cost(Resources::new().cpu(3)))
            .validate()
            .expect("valid");
        let err =
            allocate(&dag, &nodes(), &AllocationStrategy::FirstAvailable).expect_err("too big");
        assert_eq!(
            err,
            AllocationError::Unsatisfiable {
                function: "big".into(),
                cost: Resources::new().cpu(3),
                best_node: Some("node1".into()),
                best_capacity: Some(Resources::new().cpu(2)),
                best_name: None,
            }
        );
    }

    #[test]
    fn load_balanced_spreads() {
        let dag = Dag::new()
            .with(Function::new("a", "c").with_cost(Resources::new().cpu(1)))
            .with(Function::new("b", "c").with_cost(Resources::new().cpu(1)))
            .validate()
            .expect("valid");
        let plan = allocate(&dag, &nodes(), &AllocationStrategy::LoadBalanced).expect("plan");
        assert_ne!(plan.nodes["a"], plan.nodes["b"]);
        let plan = allocate(&dag, &nodes(), &AllocationStrategy::FirstAvailable).expect("plan");
        assert_eq!(plan.nodes["a"], plan.nodes["b"]);
    }

    #[test]
    fn pinned_to_unknown_node_is_an_error() {
        let dag = Dag::new()
            .with(Function::new("a", "c").pinned("ghost"))
            .validate()
            .expect("valid");
        assert_eq!(
            allocate(&dag, &nodes(), &AllocationStrategy::FirstAvailable),
            Err(AllocationError::UnknownNode {
                function: "a".into(),
                node: "ghost".into()
            })
        );
    }
}
