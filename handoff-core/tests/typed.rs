//! Typed code handles: a DAG built with `Dag::call` is the DAG the name-based API builds
//! (same codes, arguments and constants), and every kind of argument lines up.

use bytes::Bytes;
use handoff_core::{Call, Dag, FnRef, Function, List, Registry, Resources, Shared};

fn same(typed: Dag, named: Dag) {
    let (typed, named) = (
        typed.validate().expect("typed"),
        named.validate().expect("named"),
    );
    assert_eq!(typed.len(), named.len());
    for (t, n) in typed.functions().iter().zip(named.functions()) {
        assert_eq!(t.id(), n.id());
        assert_eq!(t.code(), n.code());
        assert_eq!(t.arg_ids(), n.arg_ids(), "{}", t.id());
        assert_eq!(t.argument_inclusion(), n.argument_inclusion(), "{}", t.id());
        assert_eq!(t.cost(), n.cost(), "{}", t.id());
        assert_eq!(t.placement(), n.placement(), "{}", t.id());
        let constants = |f: &Function| -> Vec<i64> {
            f.extra_args()
                .iter()
                .map(|v| v.get::<i64>().expect("an i64 constant"))
                .collect()
        };
        assert_eq!(constants(t), constants(n), "{}", t.id());
    }
}

#[test]
fn a_typed_dag_is_the_dag_built_by_name() {
    let mut registry = Registry::new();
    let one = registry.register("one", || 1_i64).expect("one");
    let add = registry
        .register("add", |x: i64, y: i64| x + y)
        .expect("add");
    let scale = registry
        .register_fallible("scale", |x: i64, by: i64, plus: i64| {
            x.checked_mul(by)
                .and_then(|v| v.checked_add(plus))
                .ok_or("overflow")
        })
        .expect("scale");
    let total = registry
        .register("total", |xs: Vec<i64>| xs.iter().sum::<i64>())
        .expect("total");

    let mut typed = Dag::with_id("d");
    let a = typed.call("a", &one, ());
    let b = typed.call("b", &add, (&a, 2_i64));
    let c = typed.add(
        Call::new("c", &scale, (&b, 3_i64, 4_i64))
            .with_cost(Resources::new().cpu(1))
            .pinned("n1"),
    );
    let d = typed.call("d", &add, (&b, &c));
    let sum = typed.add(Call::list("sum", &total, [&a, &b, &c, &d]));
    let _: FnRef<i64> = sum;

    let named = Dag::with_id("d")
        .with(Function::new("a", "one"))
        .with(Function::new("b", "add").arg("a").extra_arg(2_i64))
        .with(
            Function::new("c", "scale")
                .arg("b")
                .extra_arg(3_i64)
                .extra_arg(4_i64)
                .with_cost(Resources::new().cpu(1))
                .pinned("n1"),
        )
        .with(Function::new("d", "add").arg("b").arg("c"))
        .with(
            Function::new("sum", "total")
                .args(["a", "b", "c", "d"])
                .as_list(),
        );
    same(typed, named);
}

#[test]
fn shared_and_list_parameters_read_results_of_their_type() {
    let mut registry = Registry::new();
    let make = registry
        .register("make", |n: u64| Bytes::from(vec![7_u8; n as usize]))
        .expect("make");
    let len = registry
        .register("len", |b: Shared<Bytes>| b.len() as u64)
        .expect("len");
    let lens = registry
        .register("lens", |bs: List<Shared<Bytes>>| {
            bs.iter().map(|b| b.len() as u64).sum::<u64>()
        })
        .expect("lens");
    let mut dag = Dag::new();
    let m = dag.call("m", &make, (3_u64,));
    let l: FnRef<u64> = dag.call("l", &len, (&m,));
    let all: FnRef<u64> = dag.add(Call::list("all", &lens, [&m, &m]));
    let dag = dag.validate().expect("valid");
    assert_eq!(l.id().as_str(), "l");
    assert_eq!(
        dag.function(dag.index_of("all").expect("all"))
            .arg_ids()
            .len(),
        2
    );
    assert_eq!(all.id().as_str(), "all");
}
