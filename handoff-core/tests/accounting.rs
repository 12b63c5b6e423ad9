//! Exact resource accounting in [`SimpleResourceTracker`]: checked against an integer
//! model, all-or-nothing requests, releases capped at capacity, and no drift after a
//! million fractional request/release pairs.

use handoff_core::{
    Amount, NodeId, ReleaseError, RequestError, ResourceTracker, Resources, SimpleResourceTracker,
};
use proptest::prelude::*;
use proptest::sample::Index;

fn node() -> NodeId {
    NodeId::new("n")
}

fn tracker(capacity: &Resources) -> SimpleResourceTracker {
    let mut t = SimpleResourceTracker::new();
    t.register(node(), capacity.clone()).expect("register");
    t
}

fn micros(r: &Resources, name: &str) -> i64 {
    r.get(name).micros()
}

/// One step of a random session against the tracker.
#[derive(Debug, Clone)]
enum Op {
    /// Reserve `cpu` and, maybe, `memory`, in thousandths.
    Request { cpu: u32, memory: Option<u32> },
    /// Release one reservation that succeeded earlier (if any is outstanding).
    ReleaseHeld(Index),
    /// Release an arbitrary amount of cpu, in thousandths (may exceed what is reserved).
    ReleaseAny { cpu: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    let thousandths = 1_u32..=500;
    prop_oneof![
        4 => (thousandths.clone(), prop::option::of(1_u32..=2000))
            .prop_map(|(cpu, memory)| Op::Request { cpu, memory }),
        3 => any::<Index>().prop_map(Op::ReleaseHeld),
        1 => thousandths.prop_map(|cpu| Op::ReleaseAny { cpu }),
    ]
}

/// Resources from thousandths, through `f64` as a user would write them (`0.001 * k`).
fn cost(cpu: u32, memory: Option<u32>) -> Resources {
    let r = Resources::new().cpu(f64::from(cpu) * 0.001);
    match memory {
        Some(m) => r.memory(f64::from(m) * 0.001),
        None => r,
    }
}

/// What the tracker should hold, in millionths.
#[derive(Debug)]
struct Model {
    cap_cpu: i64,
    cap_mem: i64,
    used_cpu: i64,
    used_mem: i64,
}

impl Model {
    fn avail(&self) -> (i64, i64) {
        (self.cap_cpu - self.used_cpu, self.cap_mem - self.used_mem)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn fractional_accounting_matches_an_integer_model(
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let capacity = Resources::new().cpu(3.7).memory(1024.5);
        let mut t = tracker(&capacity);
        let n = node();
        let mut model = Model { cap_cpu: 3_700_000, cap_mem: 1_024_500_000, used_cpu: 0, used_mem: 0 };
        let mut held: Vec<Resources> = Vec::new();

        for op in ops {
            match op {
                Op::Request { cpu, memory } => {
                    let c = cost(cpu, memory);
                    let need_cpu = i64::from(cpu) * 1000;
                    let need_mem = memory.map_or(0, |m| i64::from(m) * 1000);
                    prop_assert_eq!(micros(&c, "cpu"), need_cpu, "0.001 * k is exact");
                    let (avail_cpu, avail_mem) = model.avail();
                    let fits = need_cpu <= avail_cpu && need_mem <= avail_mem;
                    prop_assert_eq!(t.resources_available(&n, &c), fits);
                    let before = t.available(&n);
                    match t.request(&n, &c) {
                        Ok(()) => {
                            prop_assert!(fits, "granted {:?} with only {:?} free", c, before);
                            model.used_cpu += need_cpu;
                            model.used_mem += need_mem;
                            held.push(c);
                        }
                        Err(RequestError::Unavailable { node, missing }) => {
                            prop_assert!(!fits, "refused {:?} with {:?} free", c, before);
                            prop_assert_eq!(node, n.clone());
                            prop_assert_eq!(micros(&missing, "cpu"), (need_cpu - avail_cpu).max(0));
                            prop_assert_eq!(micros(&missing, "memory"), (need_mem - avail_mem).max(0));
                            // All or nothing: nothing changed.
                            prop_assert_eq!(t.available(&n), before);
                        }
                        Err(other) => return Err(TestCaseError::fail(format!("{other:?}"))),
                    }
                }
                Op::ReleaseHeld(i) => {
                    if held.is_empty() {
                        continue;
                    }
                    let c = held.swap_remove(i.index(held.len()));
                    let (rc, rm) = (micros(&c, "cpu"), micros(&c, "memory"));
                    let excess_cpu = (rc - model.used_cpu).max(0);
                    let excess_mem = (rm - model.used_mem).max(0);
                    model.used_cpu = (model.used_cpu - rc).max(0);
                    model.used_mem = (model.used_mem - rm).max(0);
                    let result = t.release(&n, &c);
                    if excess_cpu == 0 && excess_mem == 0 {
                        prop_assert_eq!(result, Ok(()));
                    } else {
                        // An earlier over-release already gave this back.
                        let is_more_than_reserved =
                            matches!(result, Err(ReleaseError::MoreThanReserved { .. }));
                        prop_assert!(is_more_than_reserved);
                    }
                }
                Op::ReleaseAny { cpu } => {
                    let c = cost(cpu, None);
                    let rc = i64::from(cpu) * 1000;
                    let excess = (rc - model.used_cpu).max(0);
                    model.used_cpu = (model.used_cpu - rc).max(0);
                    match t.release(&n, &c) {
                        Ok(()) => prop_assert_eq!(excess, 0),
                        Err(ReleaseError::MoreThanReserved { node, excess: got }) => {
                            prop_assert_eq!(node, n.clone());
                            prop_assert!(excess > 0);
                            prop_assert_eq!(got, Resources::new().with("cpu", Amount::from_micros(excess)));
                        }
                        Err(other) => return Err(TestCaseError::fail(format!("{other:?}"))),
                    }
                }
            }
            let avail = t.available(&n).expect("registered");
            let (avail_cpu, avail_mem) = model.avail();
            prop_assert_eq!(micros(&avail, "cpu"), avail_cpu);
            prop_assert_eq!(micros(&avail, "memory"), avail_mem);
            prop_assert!(avail.fits_in(&capacity), "{:?} is above capacity", avail);
            prop_assert_eq!(t.capabilities(&n), Some(capacity.clone()));
        }

        // Give everything back: exactly the capacity again, never more.
        for c in held.drain(..) {
            let _ = t.release(&n, &c);
        }
        prop_assert_eq!(t.available(&n), Some(capacity.clone()));
    }
}

#[test]
fn a_million_tenths_leave_no_drift() {
    let capacity = Resources::new().cpu(3.7);
    let mut t = tracker(&capacity);
    let n = node();
    let tenth = Resources::new().cpu(0.1);
    for _ in 0..1_000_000 {
        t.request(&n, &tenth).expect("a tenth always fits");
        t.release(&n, &tenth).expect("released what was reserved");
    }
    assert_eq!(t.available(&n), Some(capacity.clone()));
    assert_eq!(micros(&capacity, "cpu"), 3_700_000);

    // Exactly 37 tenths fit in 3.7: with floating point sums the 37th would fail (or a
    // 38th succeed).
    for k in 0..37 {
        t.request(&n, &tenth)
            .unwrap_or_else(|e| panic!("tenth #{k} must fit: {e}"));
    }
    assert_eq!(micros(&t.available(&n).expect("registered"), "cpu"), 0);
    assert_eq!(
        t.request(&n, &tenth),
        Err(RequestError::Unavailable {
            node: n.clone(),
            missing: tenth.clone()
        })
    );
    for _ in 0..37 {
        t.release(&n, &tenth).expect("release");
    }
    assert_eq!(t.available(&n), Some(capacity));
}

#[test]
fn a_failing_multi_resource_request_changes_nothing() {
    let capacity = Resources::new().cpu(4).memory(8000).gpu(1);
    let mut t = tracker(&capacity);
    let n = node();
    t.request(&n, &Resources::new().cpu(1.5).memory(1000))
        .expect("fits");
    let before = t.available(&n).expect("registered");

    // cpu and memory fit, gpu does not.
    let err = t
        .request(&n, &Resources::new().cpu(1).memory(1000).gpu(2))
        .expect_err("two gpus do not fit");
    assert_eq!(
        err,
        RequestError::Unavailable {
            node: n.clone(),
            missing: Resources::new().gpu(1),
        }
    );
    assert_eq!(t.available(&n).as_ref(), Some(&before));

    // A resource the node does not have at all.
    let err = t
        .request(&n, &Resources::new().cpu(0.5).with("licence", 1))
        .expect_err("no licence here");
    assert_eq!(
        err,
        RequestError::Unavailable {
            node: n.clone(),
            missing: Resources::new().with("licence", 1),
        }
    );
    assert_eq!(t.available(&n).as_ref(), Some(&before));
    assert!(err.to_string().contains("`n`"), "{err}");

    // An invalid amount is refused before anything is reserved.
    let err = t
        .request(&n, &Resources::new().cpu(1).memory(-1))
        .expect_err("negative");
    assert_eq!(
        err,
        RequestError::InvalidAmount {
            resource: "memory".into(),
            amount: Amount::from(-1),
        }
    );
    let err = t
        .request(&n, &Resources::new().cpu(f64::NAN))
        .expect_err("NaN");
    assert!(
        matches!(err, RequestError::InvalidAmount { ref resource, .. } if resource.as_str() == "cpu")
    );
    assert_eq!(t.available(&n).as_ref(), Some(&before));

    // Unknown nodes.
    let ghost = NodeId::new("ghost");
    assert_eq!(
        t.request(&ghost, &Resources::new().cpu(1)),
        Err(RequestError::UnknownNode {
            node: ghost.clone()
        })
    );
    assert_eq!(
        t.release(&ghost, &Resources::new().cpu(1)),
        Err(ReleaseError::UnknownNode {
            node: ghost.clone()
        })
    );
    assert_eq!(t.available(&ghost), None);
    assert!(!t.resources_available(&ghost, &Resources::new()));
}

#[test]
fn release_never_rises_above_capacity() {
    let capacity = Resources::new().cpu(2).memory(100);
    let mut t = tracker(&capacity);
    let n = node();
    t.request(&n, &Resources::new().cpu(0.3).memory(10))
        .expect("fits");
    let err = t
        .release(&n, &Resources::new().cpu(0.5).memory(10))
        .expect_err("more cpu than reserved");
    assert_eq!(
        err,
        ReleaseError::MoreThanReserved {
            node: n.clone(),
            excess: Resources::new().cpu(0.2),
        }
    );
    assert_eq!(t.available(&n), Some(capacity.clone()));

    // Releasing on an idle node, or a resource never reserved, stays at capacity.
    assert!(t.release(&n, &Resources::new().gpu(1)).is_err());
    assert!(t.release(&n, &Resources::new().cpu(5)).is_err());
    let avail = t.available(&n).expect("registered");
    assert_eq!(avail.get("cpu"), capacity.get("cpu"));
    assert_eq!(avail.get("memory"), capacity.get("memory"));
    assert_eq!(avail.get("gpu"), Amount::ZERO);
    assert!(avail.fits_in(&capacity));
}

#[test]
fn shrinking_capacity_below_reservations_never_goes_negative() {
    let n = node();
    let mut t = tracker(&Resources::new().cpu(4));
    t.request(&n, &Resources::new().cpu(3)).expect("fits");
    t.register(n.clone(), Resources::new().cpu(2))
        .expect("re-register");
    assert_eq!(t.available(&n).map(|a| a.get("cpu")), Some(Amount::ZERO));
    assert!(t.request(&n, &Resources::new().cpu(0.001)).is_err());
    t.release(&n, &Resources::new().cpu(3)).expect("release");
    assert_eq!(t.available(&n), Some(Resources::new().cpu(2)));
}

#[test]
fn invalid_capacities_are_refused() {
    let mut t = SimpleResourceTracker::new();
    let err = t
        .register(node(), Resources::new().cpu(2).memory(f64::NAN))
        .expect_err("NaN memory");
    assert!(err.to_string().contains("`n`") && err.to_string().contains("`memory`"));
    assert!(t.nodes().is_empty());
}

#[test]
fn an_invalid_release_is_refused_and_changes_nothing() {
    let capacity = Resources::new().cpu(2);
    let mut t = tracker(&capacity);
    t.request(&node(), &Resources::new().cpu(1)).expect("fits");
    for bad in [f64::NAN, -3.0, f64::INFINITY, 9e12] {
        let err = t
            .release(&node(), &Resources::new().cpu(bad))
            .expect_err("not a valid amount");
        assert!(
            matches!(&err, ReleaseError::InvalidAmount { node: n, resource, .. }
                if *n == node() && resource.as_str() == "cpu"),
            "{bad}: {err:?}"
        );
        assert_eq!(
            t.available(&node()),
            Some(Resources::new().cpu(1)),
            "{bad} changed nothing"
        );
    }
    t.release(&node(), &Resources::new().cpu(1)).expect("valid");
    assert_eq!(t.available(&node()), Some(capacity));
}

#[test]
fn amounts_above_the_maximum_are_invalid_everywhere() {
    assert!(Amount::MAX.is_valid());
    let huge = Resources::new().cpu(9e12);
    assert!(huge.first_invalid().is_some());
    let mut t = SimpleResourceTracker::new();
    assert!(t.register(node(), huge.clone()).is_err(), "as a capacity");
    let mut t = tracker(&Resources::new().cpu(2));
    assert!(
        matches!(
            t.request(&node(), &huge),
            Err(RequestError::InvalidAmount { .. })
        ),
        "as a request"
    );
}
