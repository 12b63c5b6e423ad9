//! `allocate()`: the Resource Management guide's examples, collocation chains,
//! unsatisfiable costs, a custom allocator, and a property test that no function ever
//! lands on a node whose capacity cannot hold its cost.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use handoff_core::{
    AllocationError, AllocationStrategy, Allocator, Dag, Function, FunctionId, NodeId, NodeView,
    Placement, Resources, ValidatedDag, allocate,
};
use proptest::prelude::*;
use proptest::sample::Index;

fn node(id: &str, cap: Resources) -> (NodeId, Resources) {
    (NodeId::new(id), cap)
}

fn work(id: &str, cost: Resources) -> Function {
    Function::new(id, "work").with_cost(cost)
}

fn on<'a>(plan: &'a handoff_core::Assignments, f: &str) -> &'a str {
    plan.nodes
        .get(f)
        .unwrap_or_else(|| panic!("`{f}` is not assigned"))
        .as_str()
}

fn strategies() -> Vec<AllocationStrategy> {
    vec![
        AllocationStrategy::FirstAvailable,
        AllocationStrategy::LoadBalanced,
        AllocationStrategy::Custom(Arc::new(LastNode)),
        AllocationStrategy::Custom(Arc::new(Broken)),
    ]
}

/// Always the last node offered.
struct LastNode;

impl Allocator for LastNode {
    fn choose(&self, _: Option<&Resources>, nodes: &[NodeView<'_>]) -> Option<usize> {
        Some(nodes.len() - 1)
    }
}

/// Returns an index out of range: the planner must not follow it anywhere unsafe.
struct Broken;

impl Allocator for Broken {
    fn choose(&self, _: Option<&Resources>, nodes: &[NodeView<'_>]) -> Option<usize> {
        Some(nodes.len() + 7)
    }
}

fn guide_nodes() -> Vec<(NodeId, Resources)> {
    vec![
        node("node1", Resources::new().cpu(4).memory(8000)),
        node("node2", Resources::new().cpu(2).memory(4000)),
    ]
}

fn guide_dag() -> ValidatedDag {
    Dag::new()
        .with(work("f1", Resources::new().cpu(2).memory(2000)))
        .with(work("f2", Resources::new().cpu(1).memory(1000)))
        .with(work("f3", Resources::new().cpu(3).memory(4000)))
        .with(work("f4", Resources::new().cpu(1).memory(1000)))
        .validate()
        .expect("valid")
}

#[test]
fn guide_example_never_puts_f3_on_the_small_node() {
    let dag = guide_dag();
    let plan = allocate(&dag, &guide_nodes(), &AllocationStrategy::FirstAvailable).expect("plan");
    assert_eq!(on(&plan, "f1"), "node1");
    assert_eq!(on(&plan, "f2"), "node1");
    // The Elixir original put f3 on node2, whose 2 cpus can never run it. Here it waits
    // for node1.
    assert_eq!(on(&plan, "f3"), "node1");
    assert_eq!(on(&plan, "f4"), "node2");
    assert_eq!(plan.waiting, BTreeSet::from([FunctionId::new("f3")]));

    for strategy in strategies() {
        let plan = allocate(&dag, &guide_nodes(), &strategy).expect("plan");
        assert_eq!(on(&plan, "f3"), "node1", "{strategy:?}");
        assert_eq!(plan.nodes.len(), 4, "{strategy:?}");
    }
}

#[test]
fn guide_insufficient_resources_is_an_error_not_a_silent_assignment() {
    let nodes = [
        node("node1", Resources::new().cpu(1).memory(1000)),
        node("node2", Resources::new().cpu(1).memory(1000)),
    ];
    let dag = Dag::new()
        .with(work("big_task", Resources::new().cpu(2).memory(2000)))
        .validate()
        .expect("valid");
    let err = allocate(&dag, &nodes, &AllocationStrategy::FirstAvailable).expect_err("too big");
    assert_eq!(
        err,
        AllocationError::Unsatisfiable {
            function: "big_task".into(),
            cost: Resources::new().cpu(2).memory(2000),
            best_node: Some("node1".into()),
            best_capacity: Some(Resources::new().cpu(1).memory(1000)),
            best_name: None,
        }
    );
}

#[test]
fn guide_pinned_and_collocated_example() {
    let nodes = [
        node("node1", Resources::new().cpu(2)),
        node("node2", Resources::new().cpu(2)),
    ];
    let dag = Dag::new()
        .with(work("f1", Resources::new().cpu(1)).pinned("node2"))
        .with(work("f2", Resources::new().cpu(1)))
        .with(work("f3", Resources::new().cpu(1)).collocated_with("f2"))
        .validate()
        .expect("valid");
    let plan = allocate(&dag, &nodes, &AllocationStrategy::FirstAvailable).expect("plan");
    assert_eq!(on(&plan, "f1"), "node2");
    assert_eq!(on(&plan, "f2"), "node1");
    assert_eq!(on(&plan, "f3"), "node1");
    assert!(plan.waiting.is_empty());

    for strategy in strategies() {
        let plan = allocate(&dag, &nodes, &strategy).expect("plan");
        assert_eq!(on(&plan, "f1"), "node2", "{strategy:?}");
        assert_eq!(on(&plan, "f3"), on(&plan, "f2"), "{strategy:?}");
    }
}

#[test]
fn collocation_chains_follow_a_pinned_root() {
    let nodes = [
        node("node1", Resources::new().cpu(8)),
        node("node2", Resources::new().cpu(3)),
    ];
    // d -> c -> b -> a, a pinned to the small node; declared leaf first.
    let dag = Dag::new()
        .with(work("d", Resources::new().cpu(1)).collocated_with("c"))
        .with(work("c", Resources::new().cpu(1)).collocated_with("b"))
        .with(Function::new("b", "work").collocated_with("a"))
        .with(work("a", Resources::new().cpu(1)).pinned("node2"))
        .with(work("free", Resources::new().cpu(1)))
        .validate()
        .expect("valid");
    for strategy in strategies() {
        let plan = allocate(&dag, &nodes, &strategy).expect("plan");
        for f in ["a", "b", "c", "d"] {
            assert_eq!(on(&plan, f), "node2", "`{f}` with {strategy:?}");
        }
        // The group's 3 cpus fill the 3-cpu node: none of it waits.
        assert!(
            ["a", "b", "c", "d"]
                .iter()
                .all(|f| !plan.waiting.contains(*f)),
            "{strategy:?}: {:?}",
            plan.waiting
        );
    }
    // On a 2-cpu node the group cannot hold all its members at once: refused, naming
    // its root and the sum.
    let small = [
        node("node1", Resources::new().cpu(8)),
        node("node2", Resources::new().cpu(2)),
    ];
    let err = allocate(&dag, &small, &AllocationStrategy::FirstAvailable)
        .expect_err("3 cpus on a 2-cpu node");
    assert!(
        matches!(&err, AllocationError::Unsatisfiable { function, cost, .. }
            if function.as_str() == "a" && *cost == Resources::new().cpu(3)),
        "{err:?}"
    );
}

#[test]
fn collocation_chains_avoid_nodes_too_small_for_any_member() {
    // `root` alone fits node1, but its group (4 cpus) needs node2's capacity.
    let nodes = [
        node("node1", Resources::new().cpu(2)),
        node("node2", Resources::new().cpu(4)),
    ];
    let dag = Dag::new()
        .with(work("root", Resources::new().cpu(1)))
        .with(work("mid", Resources::new().cpu(0.5)).collocated_with("root"))
        .with(work("heavy", Resources::new().cpu(2.5)).collocated_with("mid"))
        .validate()
        .expect("valid");
    for strategy in strategies() {
        let plan = allocate(&dag, &nodes, &strategy).expect("plan");
        for f in ["root", "mid", "heavy"] {
            assert_eq!(on(&plan, f), "node2", "`{f}` with {strategy:?}");
        }
    }
}

#[test]
fn a_chain_member_that_fits_nowhere_is_named() {
    let nodes = [
        node("node1", Resources::new().cpu(2)),
        node("node2", Resources::new().cpu(4)),
    ];
    let dag = Dag::new()
        .with(work("root", Resources::new().cpu(1)))
        .with(work("huge", Resources::new().cpu(9)).collocated_with("root"))
        .validate()
        .expect("valid");
    let err = allocate(&dag, &nodes, &AllocationStrategy::FirstAvailable).expect_err("too big");
    assert_eq!(
        err,
        AllocationError::Unsatisfiable {
            function: "huge".into(),
            cost: Resources::new().cpu(9),
            best_node: Some("node2".into()),
            best_capacity: Some(Resources::new().cpu(4)),
            best_name: None,
        }
    );
}

#[test]
fn a_chain_member_too_big_for_the_pinned_node_is_named() {
    // `big` fits node1, but its chain is pinned to node2, which cannot hold it.
    let nodes = [
        node("node1", Resources::new().cpu(8)),
        node("node2", Resources::new().cpu(2)),
    ];
    let dag = Dag::new()
        .with(work("anchor", Resources::new().cpu(1)).pinned("node2"))
        .with(work("big", Resources::new().cpu(3)).collocated_with("anchor"))
        .validate()
        .expect("valid");
    let err = allocate(&dag, &nodes, &AllocationStrategy::FirstAvailable).expect_err("too big");
    assert_eq!(
        err,
        AllocationError::Unsatisfiable {
            function: "big".into(),
            cost: Resources::new().cpu(3),
            best_node: Some("node2".into()),
            best_capacity: Some(Resources::new().cpu(2)),
            best_name: None,
        }
    );
}

#[test]
fn unsatisfiable_names_function_cost_and_closest_node() {
    let nodes = [
        node("small", Resources::new().cpu(2).memory(2000)),
        node("close", Resources::new().cpu(4).memory(4000)),
        node("wide", Resources::new().cpu(1).memory(16000)),
    ];
    let cost = Resources::new().cpu(4).memory(4000).gpu(1);
    let dag = Dag::new()
        .with(work("ok", Resources::new().cpu(1)))
        .with(work("gpu_job", cost.clone()).arg("ok"))
        .validate()
        .expect("valid");
    let err = allocate(&dag, &nodes, &AllocationStrategy::LoadBalanced).expect_err("no gpu");
    assert_eq!(
        err,
        AllocationError::Unsatisfiable {
            function: "gpu_job".into(),
            cost: cost.clone(),
            best_node: Some("close".into()),
            best_capacity: Some(Resources::new().cpu(4).memory(4000)),
            best_name: None,
        }
    );
    let text = err.to_string();
    for part in [
        "`gpu_job`",
        &cost.to_string(),
        "`close`",
        "{cpu: 4, memory: 4000}",
    ] {
        assert!(text.contains(part), "`{part}` missing from: {text}");
    }
}

#[test]
fn no_nodes_and_unknown_pins_are_errors() {
    let dag = Dag::new()
        .with(work("a", Resources::new().cpu(1)))
        .validate()
        .expect("valid");
    let err = allocate(&dag, &[], &AllocationStrategy::FirstAvailable).expect_err("no nodes");
    assert!(
        matches!(&err, AllocationError::Unsatisfiable { function, best_node: None, best_capacity: None, .. } if function.as_str() == "a"),
        "{err:?}"
    );
    assert!(err.to_string().contains("no node"), "{err}");

    let dag = Dag::new()
        .with(work("a", Resources::new().cpu(1)).pinned("ghost"))
        .validate()
        .expect("valid");
    let err = allocate(&dag, &guide_nodes(), &AllocationStrategy::FirstAvailable)
        .expect_err("unknown pin");
    assert_eq!(
        err,
        AllocationError::UnknownNode {
            function: "a".into(),
            node: "ghost".into()
        }
    );
    let text = err.to_string();
    assert!(text.contains("`a`") && text.contains("`ghost`"), "{text}");
}

#[test]
fn inline_functions_get_no_node_and_free_functions_do() {
    let dag = Dag::new()
        .with(Function::new("src", "c"))
        .with(Function::new("inl", "c").arg("src").inline())
        .with(Function::new("use", "c").arg("inl"))
        .validate()
        .expect("valid");
    let plan = allocate(&dag, &guide_nodes(), &AllocationStrategy::FirstAvailable).expect("plan");
    assert_eq!(
        plan.nodes
            .keys()
            .map(FunctionId::as_str)
            .collect::<Vec<_>>(),
        ["src", "use"]
    );
    assert!(plan.waiting.is_empty());
}

/// Records what it was offered, and picks the node with the most free memory.
#[derive(Default)]
struct MostMemory {
    offered: Mutex<Vec<(Option<Resources>, Vec<String>)>>,
}

impl Allocator for MostMemory {
    fn choose(&self, cost: Option<&Resources>, nodes: &[NodeView<'_>]) -> Option<usize> {
        self.offered.lock().expect("lock").push((
            cost.cloned(),
            nodes.iter().map(|n| n.id.to_string()).collect(),
        ));
        nodes
            .iter()
            .enumerate()
            .max_by_key(|(i, n)| (n.available.get("memory"), std::cmp::Reverse(*i)))
            .map(|(i, _)| i)
    }
}

#[test]
fn a_custom_allocator_is_used_and_only_offered_nodes_that_fit() {
    let nodes = [
        node("tiny", Resources::new().cpu(1).memory(500)),
        node("mid", Resources::new().cpu(4).memory(4000)),
        node("fat", Resources::new().cpu(4).memory(16000)),
    ];
    let dag = Dag::new()
        .with(work("a", Resources::new().cpu(2).memory(8000)))
        .with(work("b", Resources::new().cpu(2).memory(2000)))
        .with(work("c", Resources::new().cpu(1).memory(100)))
        .validate()
        .expect("valid");
    let allocator = Arc::new(MostMemory::default());
    let strategy = AllocationStrategy::Custom(allocator.clone());
    let plan = allocate(&dag, &nodes, &strategy).expect("plan");
    // a: only `fat` holds 8000 MB. b: fat has 8000 left, mid 4000 -> fat.
    // c: fat 6000 left, mid 4000, tiny 500 -> fat.
    assert_eq!(on(&plan, "a"), "fat");
    assert_eq!(on(&plan, "b"), "fat");
    assert_eq!(on(&plan, "c"), "fat");
    let offered = allocator.offered.lock().expect("lock").clone();
    assert_eq!(
        offered,
        vec![
            (
                Some(Resources::new().cpu(2).memory(8000)),
                vec!["fat".to_owned()]
            ),
            (
                Some(Resources::new().cpu(2).memory(2000)),
                vec!["mid".to_owned(), "fat".to_owned()]
            ),
            (
                Some(Resources::new().cpu(1).memory(100)),
                vec!["tiny".to_owned(), "mid".to_owned(), "fat".to_owned()]
            ),
        ]
    );
    assert_eq!(format!("{strategy:?}"), "Custom(..)");
}

// ---------------------------------------------------------------------------------------
// Property: never above capacity.

#[derive(Debug, Clone)]
struct Case {
    /// Node capacities (cpu, memory, gpu), in units.
    nodes: Vec<(u8, u16, u8)>,
    /// Per function: cost in (tenths of cpu, memory, gpu), or none; placement choice;
    /// arguments among earlier functions; inline or not.
    functions: Vec<FnSpec>,
    strategy: u8,
}

#[derive(Debug, Clone)]
struct FnSpec {
    cost: Option<(u8, u16, u8)>,
    placement: (u8, Index),
    args: Vec<Index>,
    inline: bool,
}

fn case() -> impl Strategy<Value = Case> {
    // Mostly satisfiable cases (about three in four), with some that are not.
    let nodes = prop_oneof![
        19 => prop::collection::vec((1_u8..=8, 500_u16..=8000, 0_u8..=2), 1..5),
        1 => Just(Vec::new()),
    ];
    let gpu = prop_oneof![12 => Just(0_u8), 1 => 1_u8..=3];
    let function = (
        prop::option::weighted(0.85, (0_u8..=30, 0_u16..=3000, gpu)),
        (0_u8..20, any::<Index>()),
        prop::collection::vec(any::<Index>(), 0..3),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(cost, placement, args, inline)| FnSpec {
            cost,
            placement,
            args,
            inline,
        });
    (nodes, prop::collection::vec(function, 1..25), 0_u8..4).prop_map(
        |(nodes, functions, strategy)| Case {
            nodes,
            functions,
            strategy,
        },
    )
}

impl Case {
    fn capacities(&self) -> Vec<(NodeId, Resources)> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, &(cpu, mem, gpu))| {
                node(
                    &format!("n{i}"),
                    Resources::new()
                        .cpu(u32::from(cpu))
                        .memory(u32::from(mem))
                        .gpu(u32::from(gpu)),
                )
            })
            .collect()
    }

    fn dag(&self) -> Dag {
        let mut dag = Dag::new();
        for (i, spec) in self.functions.iter().enumerate() {
            let mut f = Function::new(format!("f{i}"), "work");
            if let Some((cpu, mem, gpu)) = spec.cost.filter(|_| !spec.inline) {
                f = f.with_cost(
                    Resources::new()
                        .cpu(f64::from(cpu) / 10.0)
                        .memory(u32::from(mem))
                        .gpu(u32::from(gpu)),
                );
            }
            if i > 0 {
                f = f.args(spec.args.iter().map(|a| format!("f{}", a.index(i))));
            }
            let regular_before: Vec<usize> =
                (0..i).filter(|&j| !self.functions[j].inline).collect();
            if spec.inline {
                f = f.inline();
            } else {
                match spec.placement.0 {
                    // Pinned to some node (or an unknown one when there is none).
                    0 => {
                        let n = self.nodes.len().max(1);
                        f = f.pinned(format!("n{}", spec.placement.1.index(n)));
                    }
                    1..=5 if !regular_before.is_empty() => {
                        let target = regular_before[spec.placement.1.index(regular_before.len())];
                        f = f.collocated_with(format!("f{target}"));
                    }
                    _ => {}
                }
            }
            dag = dag.with(f);
        }
        dag
    }

    fn strategy(&self) -> AllocationStrategy {
        match self.strategy {
            0 => AllocationStrategy::FirstAvailable,
            1 => AllocationStrategy::LoadBalanced,
            2 => AllocationStrategy::Custom(Arc::new(LastNode)),
            _ => AllocationStrategy::Custom(Arc::new(Broken)),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn allocate_never_exceeds_a_nodes_capacity(case in case()) {
        let nodes = case.capacities();
        let capacity: BTreeMap<&NodeId, &Resources> = nodes.iter().map(|(n, c)| (n, c)).collect();
        let dag = case.dag().validate().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let result = allocate(&dag, &nodes, &case.strategy());

        // The collocation groups, by root, and where each group may go.
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for i in (0..dag.len()).filter(|&i| !dag.function(i).is_inline()) {
            groups.entry(dag.collocation_root(i)).or_default().push(i);
        }
        let allowed = |root: usize| -> Vec<&NodeId> {
            nodes
                .iter()
                .map(|(n, _)| n)
                .filter(|n| match dag.function(root).placement() {
                    Placement::Pinned(p) => p == *n,
                    _ => true,
                })
                .collect()
        };
        // A group needs room for all its members at once.
        let holds_group = |root: usize, n: &NodeId| {
            let costs = groups[&root].iter().filter_map(|&m| dag.function(m).cost());
            Resources::saturating_sum(costs).fits_in(capacity[n])
        };
        let feasible = groups
            .keys()
            .all(|&root| allowed(root).iter().any(|n| holds_group(root, n)));

        match result {
            Ok(plan) => {
                prop_assert!(feasible, "planned an infeasible DAG: {:?}", plan);
                prop_assert_eq!(plan.nodes.len(), dag.regular_len());
                // Replays the plan in topological order to check `waiting`.
                let mut remaining: BTreeMap<&NodeId, Resources> =
                    nodes.iter().map(|(n, c)| (n, c.clone())).collect();
                for (i, f) in dag.functions().iter().enumerate() {
                    if f.is_inline() {
                        prop_assert!(!plan.nodes.contains_key(f.id()));
                        continue;
                    }
                    let assigned = &plan.nodes[f.id()];
                    let cap = capacity[assigned];
                    if let Some(cost) = f.cost() {
                        prop_assert!(
                            cost.fits_in(cap),
                            "`{}` costs {} but `{}` has only {}", f.id(), cost, assigned, cap
                        );
                    }
                    let root = dag.function(dag.collocation_root(i));
                    prop_assert_eq!(assigned, &plan.nodes[root.id()], "`{}` left its group", f.id());
                    if let Placement::Pinned(p) = root.placement() {
                        prop_assert_eq!(assigned, p);
                    }
                    let left = remaining.get_mut(assigned).expect("known node");
                    let fits_left = f.cost().is_none_or(|c| c.fits_in(left));
                    prop_assert_eq!(
                        plan.waiting.contains(f.id()),
                        !fits_left,
                        "`{}` waiting flag", f.id()
                    );
                    if let Some(cost) = f.cost() {
                        *left = left.saturating_sub(cost);
                    }
                }
            }
            Err(AllocationError::Unsatisfiable { function, cost, best_node, best_capacity, .. }) => {
                prop_assert!(!feasible, "refused a feasible DAG: `{}` {}", function, cost);
                let index = dag.index_of(function.as_str()).expect("a function of the DAG");
                let root = dag.collocation_root(index);
                prop_assert!(allowed(root).iter().all(|n| !holds_group(root, n)));
                match (&best_node, &best_capacity) {
                    (Some(n), Some(c)) => {
                        prop_assert_eq!(capacity[n], c);
                        prop_assert!(allowed(root).contains(&n));
                        prop_assert!(!cost.fits_in(c), "{} fits the best node {}", cost, c);
                    }
                    (None, None) => prop_assert!(allowed(root).is_empty()),
                    other => return Err(TestCaseError::fail(format!("{other:?}"))),
                }
                // When one member fits none of the allowed nodes, it is the one named.
                let fits_no_allowed_node = |m: usize| {
                    dag.function(m).cost().is_some_and(|c| {
                        allowed(root).iter().all(|n| !c.fits_in(capacity[n]))
                    })
                };
                if groups[&root].iter().any(|&m| fits_no_allowed_node(m)) {
                    let named = dag.function(index);
                    prop_assert!(
                        fits_no_allowed_node(index),
                        "named `{}`, which fits an allowed node", function
                    );
                    prop_assert_eq!(Some(&cost), named.cost());
                }
            }
            Err(AllocationError::UnknownNode { function, node }) => {
                prop_assert!(nodes.is_empty(), "`{}` pinned to `{}`", function, node);
            }
            Err(other @ (AllocationError::NeverGranted { .. } | AllocationError::NodeDown { .. } | AllocationError::NodesLeft { .. })) => {
                prop_assert!(false, "planning never reports a runtime refusal: {}", other);
            }
            Err(other @ AllocationError::InvalidCapacity { .. }) => {
                prop_assert!(false, "the generated capacities are valid: {}", other);
            }
        }
    }
}

#[test]
fn nodes_with_invalid_capacities_are_a_typed_error_not_a_panic() {
    let dag = Dag::new()
        .with(work("f", Resources::new().cpu(1)))
        .validate()
        .expect("valid");
    for (bad, text) in [
        (-5.0, "-5"),
        (f64::NAN, "not a finite"),
        (2e12, "2000000000000"),
    ] {
        let nodes = [
            node("good", Resources::new().cpu(4)),
            node("bad", Resources::new().cpu(bad)),
        ];
        for strategy in strategies() {
            let err = allocate(&dag, &nodes, &strategy).expect_err("invalid capacity");
            assert!(
                matches!(&err, AllocationError::InvalidCapacity { node, resource, .. }
                    if node.as_str() == "bad" && resource.as_str() == "cpu"),
                "{bad}: {err:?}"
            );
            assert!(err.to_string().contains(text), "{err}");
        }
    }
}

/// A plan places by the runtime's rule (`choose_node`): a function goes where its inputs
/// were planned when it fits there now (inputs on the first node, the caller's, pull
/// nothing), before the strategy's pick.
#[test]
fn a_plan_places_a_consumer_where_its_inputs_are() {
    let nodes = [
        node("local", Resources::new().cpu(4)),
        node("b", Resources::new().cpu(4)),
    ];
    let dag = Dag::new()
        .with(work("on_b", Resources::new().cpu(1)).pinned("b"))
        .with(work("on_local", Resources::new().cpu(1)).pinned("local"))
        .with(work("reads_b", Resources::new().cpu(1)).arg("on_b"))
        .with(work("reads_local", Resources::new().cpu(1)).arg("on_local"))
        // Two inputs on b outweigh one on local.
        .with(
            work("reads_both", Resources::new().cpu(1))
                .arg("on_local")
                .arg("on_b")
                .arg("reads_b"),
        )
        .validate()
        .expect("valid");
    let plan = allocate(&dag, &nodes, &AllocationStrategy::FirstAvailable).expect("plan");
    assert_eq!(on(&plan, "reads_b"), "b", "pulled to its input");
    assert_eq!(on(&plan, "reads_local"), "local", "the strategy's pick");
    assert_eq!(on(&plan, "reads_both"), "b");

    // Where its input's node is full, the strategy picks among the others.
    let nodes = [
        node("local", Resources::new().cpu(4)),
        node("b", Resources::new().cpu(1)),
    ];
    let plan = allocate(&dag, &nodes, &AllocationStrategy::FirstAvailable).expect("plan");
    assert_eq!(on(&plan, "reads_b"), "local");
    assert!(plan.waiting.is_empty(), "{plan:?}");
}
