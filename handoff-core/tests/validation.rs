//! Every [`ValidationError`] variant, with the culprits it names and its Display text.

use std::collections::HashSet;

use handoff_core::{Amount, Dag, Function, FunctionId, Resources, ValidationError};

fn f(id: &str) -> Function {
    Function::new(id, "code")
}

fn ids(path: &[FunctionId]) -> Vec<&str> {
    path.iter().map(FunctionId::as_str).collect()
}

/// Checks that `path` is a real dependency cycle of `functions`: it starts and ends with
/// the same id, each id depends on the next, and no id repeats inside it.
fn assert_dependency_cycle(functions: &[Function], path: &[FunctionId]) {
    assert!(
        path.len() >= 2,
        "a cycle has at least two entries: {path:?}"
    );
    assert_eq!(path.first(), path.last(), "first == last: {path:?}");
    for pair in path.windows(2) {
        let from = functions
            .iter()
            .find(|f| f.id() == &pair[0])
            .unwrap_or_else(|| panic!("`{}` is not in the DAG", pair[0]));
        assert!(
            from.arg_ids().contains(&pair[1]),
            "`{}` does not depend on `{}` in {path:?}",
            pair[0],
            pair[1]
        );
    }
    let inner: HashSet<_> = path[..path.len() - 1].iter().collect();
    assert_eq!(inner.len(), path.len() - 1, "no repeats inside: {path:?}");
}

/// Checks that `path` is a real collocation loop: first == last, each id is collocated
/// with the next.
fn assert_collocation_cycle(functions: &[Function], path: &[FunctionId]) {
    assert!(path.len() >= 2, "{path:?}");
    assert_eq!(path.first(), path.last(), "{path:?}");
    for pair in path.windows(2) {
        let from = functions
            .iter()
            .find(|f| f.id() == &pair[0])
            .unwrap_or_else(|| panic!("`{}` is not in the DAG", pair[0]));
        assert_eq!(
            *from.placement(),
            handoff_core::Placement::Collocated(pair[1].clone()),
            "`{}` is not collocated with `{}` in {path:?}",
            pair[0],
            pair[1]
        );
    }
    let inner: HashSet<_> = path[..path.len() - 1].iter().collect();
    assert_eq!(inner.len(), path.len() - 1, "no repeats inside: {path:?}");
}

fn validate_err(dag: Dag) -> (Vec<Function>, ValidationError) {
    let functions = dag.functions().to_vec();
    let err = dag.validate().expect_err("the DAG is invalid");
    (functions, err)
}

#[test]
fn a_dag_using_every_feature_validates() {
    let dag = Dag::with_id("ok")
        .with(f("src").with_cost(Resources::new().cpu(0.5).memory(100)))
        .with(f("inl").arg("src").inline())
        .with(f("pinned").arg("inl").pinned("n1"))
        .with(f("near").arg("pinned").collocated_with("pinned"))
        .with(f("nearer").collocated_with("near"))
        .with(f("all").args(["src", "near", "nearer"]).as_list())
        .validate()
        .expect("valid");
    assert_eq!(dag.len(), 6);
    assert_eq!(dag.regular_len(), 5);
    assert_eq!(dag.id().as_str(), "ok");
}

#[test]
fn duplicate_ids() {
    let (_, err) = validate_err(Dag::new().with(f("a")).with(f("b").arg("a")).with(f("a")));
    assert_eq!(err, ValidationError::DuplicateId { id: "a".into() });
    assert!(err.to_string().contains("`a`"), "{err}");
}

#[test]
fn unknown_dependency_names_the_function_and_the_missing_id() {
    let (_, err) = validate_err(Dag::new().with(f("a")).with(f("b").args(["a", "ghost"])));
    assert_eq!(
        err,
        ValidationError::UnknownDependency {
            function: "b".into(),
            dependency: "ghost".into(),
        }
    );
    let text = err.to_string();
    assert!(text.contains("`b`") && text.contains("`ghost`"), "{text}");
}

#[test]
fn cycle_reports_the_whole_path() {
    // A 4-cycle a -> d -> c -> b -> a ("depends on"), fed by a root and feeding a tail,
    // neither of which is on the cycle.
    let (functions, err) = validate_err(
        Dag::new()
            .with(f("root"))
            .with(f("tail").arg("b"))
            .with(f("a").args(["root", "d"]))
            .with(f("b").arg("a"))
            .with(f("c").arg("b"))
            .with(f("d").args(["c", "root"]))
            .with(f("tail2").args(["tail", "c"])),
    );
    let ValidationError::Cycle { path } = &err else {
        panic!("expected a cycle, got {err:?}")
    };
    assert_eq!(path.len(), 5, "{path:?}");
    assert_dependency_cycle(&functions, path);
    let members: HashSet<&str> = ids(path).into_iter().collect();
    assert_eq!(members, HashSet::from(["a", "b", "c", "d"]));
    let text = err.to_string();
    for id in ids(path) {
        assert!(text.contains(id), "{text}");
    }
    assert!(text.contains(" -> "), "{text}");
}

#[test]
fn two_cycle() {
    let (functions, err) = validate_err(
        Dag::new()
            .with(f("x"))
            .with(f("a").args(["x", "b"]))
            .with(f("b").arg("a")),
    );
    let ValidationError::Cycle { path } = &err else {
        panic!("expected a cycle, got {err:?}")
    };
    assert_eq!(path.len(), 3, "{path:?}");
    assert_dependency_cycle(&functions, path);
    let text = err.to_string();
    assert!(
        text.contains("a -> b -> a") || text.contains("b -> a -> b"),
        "{text}"
    );
}

#[test]
fn self_loop() {
    let (functions, err) = validate_err(Dag::new().with(f("x")).with(f("me").args(["x", "me"])));
    assert_eq!(
        err,
        ValidationError::Cycle {
            path: vec!["me".into(), "me".into()]
        }
    );
    if let ValidationError::Cycle { path } = &err {
        assert_dependency_cycle(&functions, path);
    }
    assert!(err.to_string().contains("me -> me"), "{err}");
}

#[test]
fn cycle_through_an_inline_function() {
    let (functions, err) = validate_err(
        Dag::new()
            .with(f("a").arg("i"))
            .with(f("i").arg("a").inline()),
    );
    let ValidationError::Cycle { path } = &err else {
        panic!("expected a cycle, got {err:?}")
    };
    assert_dependency_cycle(&functions, path);
}

#[test]
fn unknown_collocation_target() {
    let (_, err) = validate_err(
        Dag::new()
            .with(f("a"))
            .with(f("b").collocated_with("ghost")),
    );
    assert_eq!(
        err,
        ValidationError::UnknownCollocationTarget {
            function: "b".into(),
            target: "ghost".into(),
        }
    );
    let text = err.to_string();
    assert!(text.contains("`b`") && text.contains("`ghost`"), "{text}");
}

#[test]
fn inline_collocation_target() {
    let (_, err) = validate_err(
        Dag::new()
            .with(f("src"))
            .with(f("inl").arg("src").inline())
            .with(f("b").arg("inl").collocated_with("inl")),
    );
    assert_eq!(
        err,
        ValidationError::InlineCollocationTarget {
            function: "b".into(),
            target: "inl".into(),
        }
    );
    let text = err.to_string();
    assert!(text.contains("`b`") && text.contains("`inl`"), "{text}");
}

#[test]
fn collocation_cycle_reports_the_loop() {
    // c -> a -> b -> d -> a: `c` leads into the loop but is not on it.
    let (functions, err) = validate_err(
        Dag::new()
            .with(f("c").collocated_with("a"))
            .with(f("a").collocated_with("b"))
            .with(f("b").collocated_with("d"))
            .with(f("d").collocated_with("a"))
            .with(f("free")),
    );
    let ValidationError::CollocationCycle { path } = &err else {
        panic!("expected a collocation cycle, got {err:?}")
    };
    assert_eq!(path.len(), 4, "{path:?}");
    assert_collocation_cycle(&functions, path);
    let members: HashSet<&str> = ids(path).into_iter().collect();
    assert_eq!(members, HashSet::from(["a", "b", "d"]));
    let text = err.to_string();
    for id in ["a", "b", "d"] {
        assert!(text.contains(id), "{text}");
    }
}

#[test]
fn self_and_two_collocation_cycles() {
    let (functions, err) = validate_err(Dag::new().with(f("me").collocated_with("me")));
    assert_eq!(
        err,
        ValidationError::CollocationCycle {
            path: vec!["me".into(), "me".into()]
        }
    );
    assert!(err.to_string().contains("me -> me"), "{err}");
    if let ValidationError::CollocationCycle { path } = &err {
        assert_collocation_cycle(&functions, path);
    }

    let (functions, err) = validate_err(
        Dag::new()
            .with(f("a").collocated_with("b"))
            .with(f("b").collocated_with("a")),
    );
    let ValidationError::CollocationCycle { path } = &err else {
        panic!("expected a collocation cycle, got {err:?}")
    };
    assert_eq!(path.len(), 3, "{path:?}");
    assert_collocation_cycle(&functions, path);
}

#[test]
fn inline_functions_cannot_be_pinned_or_collocated() {
    let (_, err) = validate_err(Dag::new().with(f("inl").inline().pinned("n1")));
    assert_eq!(
        err,
        ValidationError::InlinePlaced {
            function: "inl".into()
        }
    );
    assert!(err.to_string().contains("`inl`"), "{err}");

    let (_, err) = validate_err(
        Dag::new()
            .with(f("target"))
            .with(f("inl").collocated_with("target").inline()),
    );
    assert_eq!(
        err,
        ValidationError::InlinePlaced {
            function: "inl".into()
        }
    );
    // Builder order does not matter: inline() after pinned() and before are the same.
    let (_, err) = validate_err(Dag::new().with(f("x").pinned("n1").inline()));
    assert_eq!(
        err,
        ValidationError::InlinePlaced {
            function: "x".into()
        }
    );
}

#[test]
fn costs_too_large_to_account_are_invalid() {
    let (_, err) = validate_err(Dag::new().with(f("huge").with_cost(Resources::new().cpu(9e12))));
    assert_eq!(
        err,
        ValidationError::InvalidCost {
            function: "huge".into(),
            resource: "cpu".into(),
            amount: Amount::from(9e12),
        }
    );
    assert!(err.to_string().contains("at most"), "{err}");
    // The largest valid amount is accepted.
    let dag = Dag::new().with(f("max").with_cost(Resources::new().with("cpu", Amount::MAX)));
    assert!(dag.validate().is_ok());
}

#[test]
fn negative_costs_are_invalid() {
    let (_, err) = validate_err(
        Dag::new()
            .with(f("fine").with_cost(Resources::new().cpu(1)))
            .with(f("neg").with_cost(Resources::new().cpu(1).memory(-0.5))),
    );
    assert_eq!(
        err,
        ValidationError::InvalidCost {
            function: "neg".into(),
            resource: "memory".into(),
            amount: Amount::from(-0.5),
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("`neg`") && text.contains("`memory`") && text.contains("-0.5"),
        "{text}"
    );

    let (_, err) = validate_err(Dag::new().with(f("neg").with_cost(Resources::new().gpu(-2))));
    assert_eq!(
        err,
        ValidationError::InvalidCost {
            function: "neg".into(),
            resource: "gpu".into(),
            amount: Amount::from(-2),
        }
    );
}

#[test]
fn nan_and_infinite_costs_are_invalid() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300] {
        let (_, err) = validate_err(
            Dag::new().with(f("weird").with_cost(Resources::new().cpu(1).with("licence", bad))),
        );
        let ValidationError::InvalidCost {
            function,
            resource,
            amount,
        } = &err
        else {
            panic!("expected an invalid cost for {bad}, got {err:?}")
        };
        assert_eq!(function.as_str(), "weird");
        assert_eq!(resource.as_str(), "licence");
        assert!(amount.is_negative(), "{bad} became {amount}");
        let text = err.to_string();
        assert!(
            text.contains("`weird`") && text.contains("`licence`"),
            "{text}"
        );
    }
}

#[test]
fn zero_costs_are_valid() {
    Dag::new()
        .with(f("free").with_cost(Resources::new().cpu(0).memory(0.0)))
        .validate()
        .expect("zero is a valid amount");
}

#[test]
fn inline_functions_cannot_have_a_cost() {
    let err = Dag::new()
        .with(Function::new("src", "code"))
        .with(
            Function::new("inl", "code")
                .arg("src")
                .inline()
                .with_cost(handoff_core::Resources::new().cpu(1)),
        )
        .validate()
        .expect_err("an inline function reserves nothing");
    assert_eq!(
        err,
        ValidationError::InlineCost {
            function: "inl".into()
        }
    );
    assert!(err.to_string().contains("`inl`"), "{err}");
}
