//! Random DAGs, executed on a node, give the values a direct evaluation gives: every
//! mix of dependencies (repeated ones included), inline functions, as-list arguments,
//! costs, collocations and parallelism. Every reservation is given back afterwards.

mod common;

use std::collections::BTreeMap;

use common::guarded;
use handoff::{
    Dag, ExecuteOptions, Function, List, NodeConfig, NodeId, Registry, Resources, start_node,
};
use proptest::prelude::*;

/// One function of a generated DAG.
#[derive(Debug, Clone)]
struct Spec {
    /// Indices of earlier functions, in argument order (repeats allowed).
    args: Vec<usize>,
    inline: bool,
    as_list: bool,
    /// Cost in halves of a cpu; 0 for none.
    half_cpus: u8,
    /// Collocate with an earlier function (by index), if it is regular.
    collocate: Option<usize>,
}

/// An order-sensitive mix of the arguments, so that a wrong or reordered argument shows.
fn mix(args: &[i64], k: i64) -> i64 {
    args.iter()
        .fold(k, |acc, x| acc.wrapping_mul(31).wrapping_add(*x))
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register("h0", |k: i64| mix(&[], k))
        .expect("register");
    registry
        .register("h1", |a: i64, k: i64| mix(&[a], k))
        .expect("register");
    registry
        .register("h2", |a: i64, b: i64, k: i64| mix(&[a, b], k))
        .expect("register");
    registry
        .register("h3", |a: i64, b: i64, c: i64, k: i64| mix(&[a, b, c], k))
        .expect("register");
    registry
        .register("hl", |xs: List<i64>, k: i64| mix(&xs, k))
        .expect("register");
    registry
}

fn spec_strategy() -> impl Strategy<Value = (Vec<Spec>, usize)> {
    let function = (
        proptest::collection::vec(any::<prop::sample::Index>(), 0..=3),
        prop::bool::weighted(0.2),
        any::<bool>(),
        0_u8..=4,
        prop::option::weighted(0.15, any::<prop::sample::Index>()),
    );
    (proptest::collection::vec(function, 1..25), 1_usize..=4).prop_map(|(raw, parallelism)| {
        let mut specs: Vec<Spec> = Vec::with_capacity(raw.len());
        // Each function's collocation root, and each group's half cpus: a group must fit
        // the 2-cpu node whole (its members may run at once).
        let mut roots: Vec<usize> = Vec::with_capacity(raw.len());
        let mut group_half = vec![0_u8; raw.len()];
        for (i, (args, inline, as_list, half_cpus, collocate)) in raw.into_iter().enumerate() {
            let args = if i == 0 {
                Vec::new()
            } else {
                args.iter().map(|a| a.index(i)).collect()
            };
            let collocate = collocate
                .filter(|_| i > 0 && !inline)
                .map(|c| c.index(i))
                .filter(|&c| !specs[c].inline)
                .filter(|&c| group_half[roots[c]] + half_cpus <= 4);
            let root = collocate.map_or(i, |c| roots[c]);
            roots.push(root);
            if !inline {
                group_half[root] += half_cpus;
            }
            specs.push(Spec {
                args,
                inline,
                as_list,
                half_cpus: if inline { 0 } else { half_cpus },
                collocate,
            });
        }
        (specs, parallelism)
    })
}

fn id(i: usize) -> String {
    format!("f{i}")
}

fn build(specs: &[Spec]) -> Dag {
    let mut dag = Dag::new();
    for (i, spec) in specs.iter().enumerate() {
        let code = if spec.as_list {
            "hl".to_owned()
        } else {
            format!("h{}", spec.args.len())
        };
        let mut f = Function::new(id(i), code)
            .args(spec.args.iter().map(|&a| id(a)))
            .extra_arg(i as i64);
        if spec.as_list {
            f = f.as_list();
        }
        if spec.inline {
            f = f.inline();
        }
        if spec.half_cpus > 0 && !spec.inline {
            f = f.with_cost(Resources::new().cpu(f64::from(spec.half_cpus) / 2.0));
        }
        if let Some(target) = spec.collocate {
            f = f.collocated_with(id(target));
        }
        dag.add_function(f);
    }
    dag
}

fn expected(specs: &[Spec]) -> Vec<i64> {
    let mut values: Vec<i64> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let args: Vec<i64> = spec.args.iter().map(|&a| values[a]).collect();
        values.push(mix(&args, i as i64));
    }
    values
}

/// What one execution gave: the regular results, and the node's capacity and what is
/// free afterwards.
type Outcome = (BTreeMap<String, Option<i64>>, Resources, Resources);

fn execute(specs: &[Spec], parallelism: usize) -> Outcome {
    let dag = build(specs).validate().expect("generated DAGs are valid");
    actix::System::new().block_on(async move {
        let node = guarded(
            "start_node",
            start_node(NodeConfig::new("local", registry()).capabilities(Resources::new().cpu(2))),
        )
        .await
        .expect("node starts");
        let done = guarded(
            "execute",
            node.execute(dag, ExecuteOptions::default().parallelism(parallelism)),
        )
        .await
        .expect("runs");
        let results = (0..specs.len())
            .map(|i| (id(i), done.results.get::<i64>(&id(i)).ok()))
            .collect();
        let (capacity, available) =
            guarded("node_resources", node.node_resources(NodeId::new("local")))
                .await
                .expect("node alive")
                .expect("registered");
        (results, capacity, available)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_dags_compute_what_a_direct_evaluation_computes((specs, parallelism) in spec_strategy()) {
        let want = expected(&specs);
        let (results, capacity, available) = execute(&specs, parallelism);
        for (i, spec) in specs.iter().enumerate() {
            let got = results[&id(i)];
            if spec.inline {
                prop_assert_eq!(got, None, "inline `{}` has no result", id(i));
            } else {
                prop_assert_eq!(got, Some(want[i]), "the result of `{}`", id(i));
            }
        }
        prop_assert_eq!(available, capacity, "every reservation was given back");
    }
}
