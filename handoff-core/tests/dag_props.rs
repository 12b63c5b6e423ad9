//! Property tests over random DAGs: validation accepts them, orders them topologically,
//! keeps `deps`/`dependents` inverse, and reports a real cycle once a back edge is added.

use std::collections::{BTreeSet, HashSet};

use handoff_core::{Dag, Function, FunctionId, ValidatedDag, ValidationError};
use proptest::prelude::*;
use proptest::sample::Index;

/// A random DAG in generated order: function `j` may depend only on functions `i < j`.
#[derive(Debug, Clone)]
struct Spec {
    /// `args[j]`: the generated indices `j` depends on, each `< j` (a repeat is allowed).
    args: Vec<Vec<usize>>,
    /// Which functions are inline.
    inline: Vec<bool>,
    /// The generated indices in the order they are added to the DAG.
    insertion: Vec<usize>,
}

fn id(i: usize) -> String {
    format!("f{i}")
}

impl Spec {
    fn len(&self) -> usize {
        self.args.len()
    }

    fn function(&self, i: usize) -> Function {
        let f = Function::new(id(i), "code").args(self.args[i].iter().map(|&a| id(a)));
        if self.inline[i] { f.inline() } else { f }
    }

    fn dag(&self) -> Dag {
        self.insertion
            .iter()
            .fold(Dag::new(), |dag, &i| dag.with(self.function(i)))
    }

    /// Generated indices `a` such that `j` depends on `a`, directly or not.
    fn ancestors(&self, j: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack = self.args[j].clone();
        while let Some(a) = stack.pop() {
            if seen.insert(a) {
                stack.extend(self.args[a].iter().copied());
            }
        }
        seen
    }
}

fn spec(max: usize) -> impl Strategy<Value = Spec> {
    (1..=max).prop_flat_map(|n| {
        (
            prop::collection::vec(prop::collection::vec(any::<Index>(), 0..4), n),
            prop::collection::vec(prop::bool::weighted(0.25), n),
            Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
        )
            .prop_map(|(picks, inline, insertion)| {
                let args = picks
                    .into_iter()
                    .enumerate()
                    .map(|(j, picks)| {
                        if j == 0 {
                            Vec::new()
                        } else {
                            picks.iter().map(|p| p.index(j)).collect()
                        }
                    })
                    .collect();
                Spec {
                    args,
                    inline,
                    insertion,
                }
            })
    })
}

/// The regular functions `i` must wait for: its regular args, and through each inline
/// arg, that arg's own (recursively).
fn effective_deps(dag: &ValidatedDag, i: usize) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for &a in dag.args(i) {
        if dag.function(a as usize).is_inline() {
            out.extend(effective_deps(dag, a as usize));
        } else {
            out.insert(a);
        }
    }
    out
}

fn check_valid(spec: &Spec, dag: &ValidatedDag) -> Result<(), TestCaseError> {
    let n = spec.len();
    prop_assert_eq!(dag.len(), n);
    prop_assert_eq!(
        dag.regular_len(),
        spec.inline.iter().filter(|inline| !**inline).count()
    );

    // Every id is there once, and index_of agrees with functions().
    let seen: HashSet<&str> = dag.functions().iter().map(|f| f.id().as_str()).collect();
    prop_assert_eq!(seen.len(), n);
    for (pos, f) in dag.functions().iter().enumerate() {
        prop_assert_eq!(dag.index_of(f.id().as_str()), Some(pos));
    }

    // Topological order: each function comes after all of its arguments, and args()
    // resolves the argument ids, in order.
    for (pos, f) in dag.functions().iter().enumerate() {
        let resolved: Vec<u32> = f
            .arg_ids()
            .iter()
            .map(|a| dag.index_of(a.as_str()).expect("resolved") as u32)
            .collect();
        prop_assert_eq!(dag.args(pos), resolved.as_slice());
        for &a in &resolved {
            prop_assert!(
                (a as usize) < pos,
                "`{}` at {} comes before its argument `{}` at {}",
                f.id(),
                pos,
                dag.function(a as usize).id(),
                a
            );
        }
        // The function is the one generated under that id.
        let generated: usize = f.id().as_str()[1..].parse().expect("f<index>");
        let expected: Vec<FunctionId> =
            spec.args[generated].iter().map(|&a| id(a).into()).collect();
        prop_assert_eq!(f.arg_ids(), expected.as_slice());
        prop_assert_eq!(f.is_inline(), spec.inline[generated]);
    }

    // deps(): the effective regular dependencies, sorted, without repeats.
    for i in 0..n {
        let deps = dag.deps(i);
        let expected: Vec<u32> = effective_deps(dag, i).into_iter().collect();
        prop_assert_eq!(
            deps,
            expected.as_slice(),
            "deps of `{}`",
            dag.function(i).id()
        );
        for &d in deps {
            prop_assert!(!dag.function(d as usize).is_inline());
            prop_assert!((d as usize) < i);
        }
    }

    // dependents() is the inverse of deps() over regular functions.
    for d in 0..n {
        for &j in dag.dependents(d) {
            prop_assert!(!dag.function(j as usize).is_inline());
            prop_assert!(
                dag.deps(j as usize).contains(&(d as u32)),
                "`{}` lists `{}` as a dependent, which does not depend on it",
                dag.function(d).id(),
                dag.function(j as usize).id()
            );
        }
        let unique: HashSet<u32> = dag.dependents(d).iter().copied().collect();
        prop_assert_eq!(unique.len(), dag.dependents(d).len(), "repeated dependent");
    }
    for i in (0..n).filter(|&i| !dag.function(i).is_inline()) {
        for &d in dag.deps(i) {
            prop_assert!(
                dag.dependents(d as usize).contains(&(i as u32)),
                "`{}` depends on `{}`, which does not list it as a dependent",
                dag.function(i).id(),
                dag.function(d as usize).id()
            );
        }
    }

    // No collocation: every function is its own root.
    for i in 0..n {
        prop_assert_eq!(dag.collocation_root(i), i);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn random_dags_validate_in_topological_order(spec in spec(40)) {
        let dag = spec.dag().validate().map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_valid(&spec, &dag)?;
    }

    #[test]
    fn a_back_edge_makes_a_real_cycle(
        spec in spec(30),
        pick_target in any::<Index>(),
        pick_ancestor in any::<Index>(),
    ) {
        let mut spec = spec;
        if spec.len() < 2 {
            spec.args.push(vec![0]);
            spec.inline.push(false);
            spec.insertion.insert(0, 1);
        }
        // Pairs (ancestor, target): target depends on ancestor, directly or not.
        let targets: Vec<usize> = (0..spec.len())
            .filter(|&j| !spec.ancestors(j).is_empty())
            .collect();
        let (target, ancestor) = if targets.is_empty() {
            spec.args[1].push(0);
            (1, 0)
        } else {
            let target = targets[pick_target.index(targets.len())];
            let ancestors: Vec<usize> = spec.ancestors(target).into_iter().collect();
            (target, ancestors[pick_ancestor.index(ancestors.len())])
        };
        // The back edge: the ancestor now depends on its descendant.
        spec.args[ancestor].push(target);

        let dag = spec.dag();
        let functions = dag.functions().to_vec();
        let err = dag.validate().expect_err("a back edge makes a cycle");
        let ValidationError::Cycle { path } = &err else {
            return Err(TestCaseError::fail(format!("expected a cycle, got {err:?}")));
        };
        prop_assert!(path.len() >= 2, "{:?}", path);
        prop_assert_eq!(path.first(), path.last());
        for pair in path.windows(2) {
            let from = functions
                .iter()
                .find(|f| f.id() == &pair[0])
                .expect("path ids are in the DAG");
            prop_assert!(
                from.arg_ids().contains(&pair[1]),
                "`{}` does not depend on `{}` in {:?}",
                pair[0],
                pair[1],
                path
            );
        }
        let inner: HashSet<&FunctionId> = path[..path.len() - 1].iter().collect();
        prop_assert_eq!(inner.len(), path.len() - 1, "repeats inside {:?}", path);
    }
}

#[test]
fn a_dag_without_edges_comes_back_whole() {
    let names = ["e", "b", "d", "a", "c"];
    let dag = names
        .iter()
        .fold(Dag::new(), |dag, n| dag.with(Function::new(*n, "code")))
        .validate()
        .expect("valid");
    let got: HashSet<&str> = dag.functions().iter().map(|f| f.id().as_str()).collect();
    assert_eq!(got, names.into_iter().collect());
    for i in 0..dag.len() {
        assert!(dag.deps(i).is_empty());
        assert!(dag.dependents(i).is_empty());
    }
}

#[test]
fn repeated_arguments_count_once_in_deps() {
    let dag = Dag::new()
        .with(Function::new("x", "code"))
        .with(Function::new("inl", "code").arg("x").inline())
        .with(Function::new("y", "code").args(["x", "x", "inl"]))
        .validate()
        .expect("valid");
    let x = dag.index_of("x").expect("x") as u32;
    let y = dag.index_of("y").expect("y");
    assert_eq!(dag.args(y).len(), 3);
    assert_eq!(dag.deps(y), &[x]);
    assert_eq!(dag.dependents(x as usize), &[y as u32]);
}
