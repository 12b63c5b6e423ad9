//! Planning an execution before it runs: where each function's reservation is targeted,
//! how urgent each function is, which values are kept, which functions run back to back
//! on one thread, and whether every function can be placed at all. Plain functions of
//! the DAG and of what the nodes offer; the runtime acts on their answers.

use std::collections::HashSet;
use std::sync::Arc;

use crate::allocator::{AllocationError, candidates};
use crate::dag::ValidatedDag;
use crate::function::Placement;
use crate::ids::{CodeName, FunctionId, NodeId};
use crate::resources::Resources;

/// [`chain_successors`] marker for "no chain successor".
pub const NO_NEXT: u32 = u32::MAX;

/// The most nodes that left a [`AllocationError::NodesLeft`] names (the latest).
pub const NAMED_DEPARTURES: usize = 3;

/// Where a requested function may go.
#[derive(Debug, Clone)]
pub enum Target {
    /// Wherever the allocator picks.
    Any,
    /// Only this node.
    Pinned(NodeId),
    /// With the other members of a collocation group (by root index), on a node that
    /// holds what the whole group needs.
    Group {
        /// The index of the group's root.
        root: u32,
        /// The node the root is pinned to, if any.
        pinned: Option<NodeId>,
        /// What the group needs of its node.
        needs: Arc<GroupNeeds>,
    },
}

/// What the node of a collocation group must have: room for every member at once, and
/// the code of each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupNeeds {
    /// The members' costs summed.
    pub total: Resources,
    /// The code of every member (and of the inline functions they evaluate).
    pub codes: Vec<CodeName>,
}

/// How urgent a request is: higher priority first, then the longer remaining path to a
/// sink (critical path first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rank {
    /// The function's priority.
    pub priority: i32,
    /// The number of regular functions on the longest path from it to a sink.
    pub path: u32,
}

/// One node functions can be sent to, as the resource manager sees it.
#[derive(Debug, Clone)]
pub struct ExecutableNode {
    /// The node.
    pub node: NodeId,
    /// Its capacity.
    pub capacity: Resources,
    /// The code names in its registry.
    pub code_names: Arc<HashSet<CodeName>>,
    /// The signatures of its typed codes ([`crate::Code::signature`]), by name.
    pub signatures: Arc<std::collections::HashMap<CodeName, Arc<str>>>,
}

impl ExecutableNode {
    /// Whether its registry has `code` with the types `signature` requires (any types
    /// when `None`; a code registered without types is taken as matching).
    pub fn runs(&self, code: &CodeName, signature: Option<&str>) -> bool {
        self.code_names.contains(code)
            && signature.is_none_or(|wanted| {
                self.signatures
                    .get(code)
                    .is_none_or(|found| **found == *wanted)
            })
    }
}

/// Why a function could never be placed, found by [`check_feasible`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Infeasible {
    /// A function names code that no node it may run on has in its registry.
    UnknownCode {
        /// The function.
        function: FunctionId,
        /// The missing code.
        code: CodeName,
        /// A registered name close to it ([`crate::nearest_name`]): a typo?
        nearest: Option<CodeName>,
        /// The nodes that have it, where the function may not run (it is pinned, or
        /// collocated, elsewhere).
        registered_on: Vec<NodeId>,
    },
    /// A function built from a typed handle names code that the nodes it may run on have
    /// only with other types.
    SignatureMismatch {
        /// The function.
        function: FunctionId,
        /// Its code.
        code: CodeName,
        /// The types the function's handle has.
        expected: Arc<str>,
        /// The nodes that have the code, with the types each has.
        found: Vec<(NodeId, Arc<str>)>,
    },
    /// Its cost fits no node, or it is pinned to a node functions cannot run on.
    Allocation(AllocationError),
}

/// How a function's reservation is targeted, from its placement and collocation group.
pub fn targets(dag: &ValidatedDag) -> Vec<Target> {
    let n = dag.len();
    let mut group_size = vec![0_u32; n];
    for i in 0..n {
        group_size[dag.collocation_root(i)] += 1;
    }
    let needs = group_needs(dag, |i| group_size[dag.collocation_root(i)] > 1, |_| 1);
    (0..n)
        .map(|i| {
            let root = dag.collocation_root(i);
            let pinned = match dag.function(root).placement() {
                Placement::Pinned(node) => Some(node.clone()),
                _ => None,
            };
            if let Some(needs) = &needs[root] {
                Target::Group {
                    root: root as u32,
                    pinned,
                    needs: Arc::clone(needs),
                }
            } else {
                pinned.map_or(Target::Any, Target::Pinned)
            }
        })
        .collect()
}

/// What each collocation group (by root) needs of its node, for the functions `member`
/// says take part: their costs summed, each counted `copies(i)` times (a stream stage's
/// workers), and their codes with those of the inline functions they evaluate.
pub fn group_needs(
    dag: &ValidatedDag,
    member: impl Fn(usize) -> bool,
    copies: impl Fn(usize) -> usize,
) -> Vec<Option<Arc<GroupNeeds>>> {
    let n = dag.len();
    let mut needs: Vec<Option<GroupNeeds>> = vec![None; n];
    for i in (0..n).filter(|&i| !dag.function(i).is_inline() && member(i)) {
        let group = needs[dag.collocation_root(i)].get_or_insert_with(|| GroupNeeds {
            total: Resources::new(),
            codes: Vec::new(),
        });
        if let Some(cost) = dag.function(i).cost() {
            let all = std::iter::repeat_n(cost, copies(i));
            group.total = Resources::saturating_sum(std::iter::once(&group.total).chain(all));
        }
        let inline = inline_args(dag, i);
        for f in std::iter::once(i).chain(inline) {
            let code = dag.function(f).code();
            if !group.codes.contains(code) {
                group.codes.push(code.clone());
            }
        }
    }
    needs.into_iter().map(|g| g.map(Arc::new)).collect()
}

/// Each function's rank: its priority, then the number of regular functions on the
/// longest path from it to a sink (itself included).
pub fn ranks(dag: &ValidatedDag) -> Vec<Rank> {
    let n = dag.len();
    let mut path = vec![0_u32; n];
    for i in (0..n).rev() {
        let below = dag
            .dependents(i)
            .iter()
            .map(|&d| path[d as usize])
            .max()
            .unwrap_or(0);
        path[i] = below + u32::from(!dag.function(i).is_inline());
    }
    (0..n)
        .map(|i| Rank {
            priority: dag.function(i).priority_value(),
            path: path[i],
        })
        .collect()
}

/// Which values survive `free_intermediates`: the named `outputs`, or every sink when
/// none are named (every value without `free_intermediates`).
pub fn keep_set(dag: &ValidatedDag, free_intermediates: bool, outputs: &[FunctionId]) -> Vec<bool> {
    if !free_intermediates {
        return vec![true; dag.len()];
    }
    if outputs.is_empty() {
        (0..dag.len())
            .map(|i| dag.dependents(i).is_empty())
            .collect()
    } else {
        let mut keep = vec![false; dag.len()];
        for id in outputs {
            if let Some(i) = dag.index_of(id.as_str()) {
                keep[i] = true;
            }
        }
        keep
    }
}

/// For each function, the dependent that runs right after it on the same thread (or
/// [`NO_NEXT`]): its only dependent, whose only dependency it is, with the same cost, no
/// placement of its own, and neither of them with a timeout (`timed`); the successor's
/// code must be here (`local_code`). (A function with several dependents chains none:
/// its end is reported when it ends, so that every dependent can start then.)
pub fn chain_successors(
    dag: &ValidatedDag,
    timed: impl Fn(usize) -> bool,
    local_code: impl Fn(usize) -> bool,
) -> Vec<u32> {
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
            || timed(s)
            || !local_code(s)
        {
            continue;
        }
        let p = deps[0] as usize;
        if dag.dependents(p).len() == 1 && !timed(p) && dag.function(p).cost() == f.cost() {
            next[p] = s as u32;
        }
    }
    next
}

/// The inline functions function `i` evaluates in place (its inline arguments, theirs, …).
pub fn inline_args(dag: &ValidatedDag, i: usize) -> Vec<usize> {
    let mut found = Vec::new();
    let mut stack: Vec<usize> = dag.args(i).iter().map(|&a| a as usize).collect();
    while let Some(a) = stack.pop() {
        if dag.function(a).is_inline() && !found.contains(&a) {
            found.push(a);
            stack.extend(dag.args(a).iter().map(|&b| b as usize));
        }
    }
    found
}

/// `error`, or when it says that no live node holds `cost`, the nodes that left the
/// cluster and could have held it (the real cause): at most [`NAMED_DEPARTURES`] of
/// `departed` (the latest first), limited to `allowed` when the function is pinned.
pub fn explain_departures(
    error: AllocationError,
    cost: &Resources,
    allowed: Option<&NodeId>,
    departed: &[(NodeId, Resources)],
) -> AllocationError {
    let AllocationError::Unsatisfiable { function, .. } = &error else {
        return error;
    };
    let left: Vec<NodeId> = departed
        .iter()
        .filter(|(node, capacity)| allowed.is_none_or(|a| a == node) && cost.fits_in(capacity))
        .take(NAMED_DEPARTURES)
        .map(|(node, _)| node.clone())
        .collect();
    if left.is_empty() {
        return error;
    }
    AllocationError::NodesLeft {
        function: function.clone(),
        cost: cost.clone(),
        nodes: left,
        names: Vec::new(),
    }
}

/// Every function that could never be placed: no node it may run on (`nodes`) has its
/// code, or its cost fits none of them (with the nodes that left, `departed`, named when
/// they could have held it). A function whose unknown code `reported` already names is
/// not reported again.
pub fn check_feasible(
    dag: &ValidatedDag,
    nodes: &[ExecutableNode],
    departed: &[(NodeId, Resources)],
    reported: impl Fn(&FunctionId) -> bool,
) -> Vec<Infeasible> {
    let mut problems = Vec::new();
    // Each group's members, by root, in one flat table (no vector per function).
    let n = dag.len();
    // Stream inputs are refused on their own.
    let member = |i: usize| !dag.function(i).is_inline() && !dag.function(i).is_input();
    let mut start = vec![0_u32; n + 1];
    for i in (0..n).filter(|&i| member(i)) {
        start[dag.collocation_root(i) + 1] += 1;
    }
    for r in 0..n {
        start[r + 1] += start[r];
    }
    let mut flat = vec![0_u32; start[n] as usize];
    let mut fill = start.clone();
    for i in (0..n).filter(|&i| member(i)) {
        let r = dag.collocation_root(i);
        flat[fill[r] as usize] = i as u32;
        fill[r] += 1;
    }
    // The last group of one function found feasible: its codes, pinned node and cost. A
    // group of one of the same needs is feasible too (most functions repeat their
    // neighbour's), checked without building its candidate nodes again.
    type Needed<'a> = (&'a CodeName, Option<&'a str>);
    let mut last_ok: Option<(Vec<Needed<'_>>, Option<&NodeId>, Option<&Resources>)> = None;
    for root in 0..n {
        let group = &flat[start[root] as usize..start[root + 1] as usize];
        if group.is_empty() {
            continue;
        }
        let pinned = match dag.function(root).placement() {
            Placement::Pinned(node) => Some(node),
            _ => None,
        };
        if let ([m], Some((codes, last_pinned, cost))) = (group, &last_ok) {
            let f = dag.function(*m as usize);
            if *last_pinned == pinned
                && *cost == f.cost()
                && codes.first() == Some(&(f.code(), f.signature()))
                && codes.len() == 1
                && !dag
                    .args(*m as usize)
                    .iter()
                    .any(|&a| dag.function(a as usize).is_inline())
            {
                continue;
            }
        }
        let group: Vec<usize> = group.iter().map(|&m| m as usize).collect();
        // A function (and the inline functions it evaluates) runs where the code of each
        // is registered; a group runs where all its members' codes are.
        let mut needed: Vec<Needed<'_>> = Vec::new();
        let mut missing = false;
        for &m in &group {
            for i in std::iter::once(m).chain(inline_args(dag, m)) {
                let f = dag.function(i);
                let allowed = |n: &&ExecutableNode| pinned.is_none_or(|p| *p == n.node);
                let possible = nodes
                    .iter()
                    .filter(allowed)
                    .any(|n| n.runs(f.code(), f.signature()));
                let pinned_unknown = pinned.is_some_and(|p| !nodes.iter().any(|n| n.node == *p));
                if !possible && !pinned_unknown {
                    // Without a cluster, resolving the codes reported it already.
                    let reported = reported(f.id())
                        || problems.iter().any(|p| {
                            matches!(p, Infeasible::UnknownCode { function, .. } if function == f.id())
                        });
                    let other_types: Vec<(NodeId, Arc<str>)> = match f.signature() {
                        Some(_) => nodes
                            .iter()
                            .filter(allowed)
                            .filter(|n| n.code_names.contains(f.code()))
                            .filter_map(|n| {
                                Some((n.node.clone(), Arc::clone(n.signatures.get(f.code())?)))
                            })
                            .collect(),
                        None => Vec::new(),
                    };
                    if reported {
                    } else if let (Some(expected), false) = (f.signature(), other_types.is_empty())
                    {
                        problems.push(Infeasible::SignatureMismatch {
                            function: f.id().clone(),
                            code: f.code().clone(),
                            expected: Arc::from(expected),
                            found: other_types,
                        });
                    } else {
                        let nearest = crate::registry::nearest_name(
                            f.code().as_str(),
                            nodes
                                .iter()
                                .flat_map(|n| n.code_names.iter().map(CodeName::as_str)),
                        )
                        .map(CodeName::from);
                        let registered_on = nodes
                            .iter()
                            .filter(|n| n.code_names.contains(f.code()))
                            .map(|n| n.node.clone())
                            .collect();
                        problems.push(Infeasible::UnknownCode {
                            function: f.id().clone(),
                            code: f.code().clone(),
                            nearest,
                            registered_on,
                        });
                    }
                    missing = true;
                }
                needed.push((f.code(), f.signature()));
            }
        }
        if missing {
            continue;
        }
        let nodes: Vec<(NodeId, Resources)> = nodes
            .iter()
            .filter(|n| needed.iter().all(|(c, s)| n.runs(c, *s)))
            .map(|n| (n.node.clone(), n.capacity.clone()))
            .collect();
        let before = problems.len();
        for &m in &group {
            let f = dag.function(m);
            let costs: Vec<&Resources> = f.cost().into_iter().collect();
            if let Err(error) = candidates(f.id(), &costs, &nodes, pinned) {
                // One unknown pinned node is reported once per group.
                let repeat =
                    matches!(error, AllocationError::UnknownNode { .. }) && problems.len() > before;
                if !repeat {
                    let error = match f.cost() {
                        Some(cost) => explain_departures(error, cost, pinned, departed),
                        None => error,
                    };
                    problems.push(Infeasible::Allocation(error));
                }
            }
        }
        if problems.len() == before && group.len() > 1 {
            // Its members may run at once: the group needs a node that holds them all.
            let total =
                Resources::saturating_sum(group.iter().filter_map(|&m| dag.function(m).cost()));
            if let Err(error) = candidates(dag.function(root).id(), &[&total], &nodes, pinned) {
                let error = explain_departures(error, &total, pinned, departed);
                problems.push(Infeasible::Allocation(error));
            }
        }
        if let [m] = group[..]
            && problems.len() == before
        {
            last_ok = Some((needed, pinned, dag.function(m).cost()));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dag, Function};

    /// `a → b → c`, `a → d`, with `d` of priority 5.
    fn dag() -> ValidatedDag {
        Dag::new()
            .with(Function::new("a", "f"))
            .with(Function::new("b", "f").arg("a"))
            .with(Function::new("c", "f").arg("b"))
            .with(Function::new("d", "f").arg("a").priority(5))
            .validate()
            .expect("valid")
    }

    fn at(dag: &ValidatedDag, id: &str) -> usize {
        dag.index_of(id).expect("known")
    }

    #[test]
    fn ranks_count_the_longest_path_to_a_sink() {
        let dag = dag();
        let ranks = ranks(&dag);
        let rank = |id| ranks[at(&dag, id)];
        assert_eq!(rank("a").path, 3);
        assert_eq!(rank("b").path, 2);
        assert_eq!(rank("c").path, 1);
        assert_eq!(
            rank("d"),
            Rank {
                priority: 5,
                path: 1
            }
        );
        assert!(rank("d") > rank("a"));
    }

    #[test]
    fn the_keep_set_is_the_outputs_or_the_sinks() {
        let dag = dag();
        assert!(keep_set(&dag, false, &[]).iter().all(|&k| k));
        let sinks = keep_set(&dag, true, &[]);
        let kept = |keep: &[bool], id| keep[at(&dag, id)];
        assert!(kept(&sinks, "c") && kept(&sinks, "d"));
        assert!(!kept(&sinks, "a") && !kept(&sinks, "b"));
        let named = keep_set(&dag, true, &[FunctionId::new("b")]);
        assert_eq!(named.iter().filter(|&&k| k).count(), 1);
        assert!(kept(&named, "b"));
    }

    #[test]
    fn only_a_single_dependent_chains() {
        let dag = dag();
        let next = chain_successors(&dag, |_| false, |_| true);
        // `a` has two dependents: none runs right after it.
        assert_eq!(next[at(&dag, "a")], NO_NEXT);
        assert_eq!(next[at(&dag, "b")], at(&dag, "c") as u32);
        // A timeout, or code only elsewhere, breaks the chain.
        let timed = chain_successors(&dag, |i| i == at(&dag, "c"), |_| true);
        assert_eq!(timed[at(&dag, "b")], NO_NEXT);
        let elsewhere = chain_successors(&dag, |_| false, |i| i != at(&dag, "c"));
        assert_eq!(elsewhere[at(&dag, "b")], NO_NEXT);
    }

    #[test]
    fn unplaceable_functions_are_found() {
        let dag = Dag::new()
            .with(Function::new("a", "f").with_cost(Resources::new().cpu(4)))
            .with(Function::new("b", "g").arg("a"))
            .validate()
            .expect("valid");
        let nodes = [ExecutableNode {
            node: NodeId::new("n"),
            capacity: Resources::new().cpu(2),
            code_names: Arc::new([CodeName::new("f")].into_iter().collect()),
            signatures: Arc::default(),
        }];
        let departed = [(NodeId::new("gone"), Resources::new().cpu(8))];
        let found = check_feasible(&dag, &nodes, &departed, |_| false);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            matches!(&found[0], Infeasible::Allocation(AllocationError::NodesLeft { nodes, .. }) if nodes[0].as_str() == "gone"),
            "{found:?}"
        );
        assert!(
            matches!(&found[1], Infeasible::UnknownCode { function, .. } if function.as_str() == "b"),
            "{found:?}"
        );
        // An unknown code already reported is not reported again.
        let again = check_feasible(&dag, &nodes, &departed, |f| f.as_str() == "b");
        assert_eq!(again.len(), 1, "{again:?}");
    }
}
