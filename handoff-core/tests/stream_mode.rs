//! Stream mode in the core: validation of inputs and stage options, and init, stateful
//! and batch code in the registry.

use std::time::Duration;

use handoff_core::{
    CallError, CodeKind, Dag, Function, FunctionKind, Registry, State, ValidationError, Value,
};

fn validate(f: Function) -> Result<(), ValidationError> {
    Dag::new()
        .with(Function::input("x"))
        .with(f)
        .validate()
        .map(|_| ())
}

#[test]
fn misused_inputs_and_stage_options_are_typed_errors() {
    assert_eq!(
        Dag::new()
            .with(Function::input("x").extra_arg(1_i64))
            .validate()
            .err(),
        Some(ValidationError::InputArguments {
            function: "x".into()
        })
    );
    assert_eq!(
        Dag::new()
            .with(Function::input("y"))
            .with(Function::input("x").arg("y"))
            .validate()
            .err(),
        Some(ValidationError::InputArguments {
            function: "x".into()
        })
    );
    assert_eq!(
        Dag::new()
            .with(Function::input("x").with_cost(handoff_core::Resources::new().cpu(1)))
            .validate()
            .err(),
        Some(ValidationError::InputCost {
            function: "x".into()
        })
    );
    assert_eq!(
        validate(Function::new("f", "c").arg("x").parallelism(0)),
        Err(ValidationError::ZeroParallelism {
            function: "f".into()
        })
    );
    assert_eq!(
        validate(
            Function::new("f", "c")
                .arg("x")
                .batch(0, Duration::from_millis(1))
        ),
        Err(ValidationError::ZeroBatchSize {
            function: "f".into()
        })
    );
    assert_eq!(
        validate(Function::new("f", "c").arg("x").inline().init("load")),
        Err(ValidationError::NotAStage {
            function: "f".into(),
            kind: FunctionKind::Inline,
            option: "init"
        })
    );
    assert_eq!(
        Dag::new()
            .with(Function::input("x").parallelism(2))
            .validate()
            .err(),
        Some(ValidationError::NotAStage {
            function: "x".into(),
            kind: FunctionKind::Input,
            option: "parallelism"
        })
    );
    assert!(
        validate(
            Function::new("f", "c")
                .arg("x")
                .init("load")
                .parallelism(3)
                .batch(8, Duration::from_millis(5))
        )
        .is_ok()
    );
}

struct Counter(u64);

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register_init("zero", || Counter(0)).expect("register");
    r.register_init_fallible("missing", || -> Result<Counter, String> {
        Err("no such file".to_owned())
    })
    .expect("register");
    r.register_stateful("count", |c: &mut Counter, step: u64| {
        c.0 += step;
        c.0
    })
    .expect("register");
    r.register_stateful_fallible("checked", |c: &mut Counter, x: u64| {
        if x == 0 {
            Err("zero".to_owned())
        } else {
            c.0 += 1;
            Ok(x)
        }
    })
    .expect("register");
    r.register_batch("lengths", |words: Vec<String>| {
        words.iter().map(String::len).collect::<Vec<_>>()
    })
    .expect("register");
    r.register_batch("short", |xs: Vec<i64>| vec![xs.len() as i64])
        .expect("register");
    r.register_stateful_batch("tag", |c: &mut Counter, xs: Vec<i64>, k: i64| {
        c.0 += 1;
        xs.into_iter()
            .map(|x| x * k + c.0 as i64)
            .collect::<Vec<_>>()
    })
    .expect("register");
    r.register("plain", |x: i64| x).expect("register");
    r
}

#[test]
fn stateful_code_keeps_its_state_between_calls() {
    let r = registry();
    let init = r.get("zero").expect("zero");
    assert_eq!(init.kind(), CodeKind::Init);
    let mut state = init.call_init(vec![]).expect("init");
    let count = r.get("count").expect("count");
    assert_eq!((count.kind(), count.arity()), (CodeKind::Stateful, 1));
    for expected in [2_u64, 4, 6] {
        let out = count
            .call_stateful(&mut state, vec![Value::new(2_u64)])
            .expect("call");
        assert_eq!(out.get::<u64>(), Ok(expected));
    }
    assert!(matches!(
        r.get("checked")
            .expect("checked")
            .call_stateful(&mut state, vec![Value::new(0_u64)]),
        Err(CallError::Failed { .. })
    ));
    assert_eq!(
        r.get("missing").expect("missing").call_init(vec![]).err(),
        Some(CallError::Failed {
            code: "missing".into(),
            message: "no such file".into()
        })
    );
}

#[test]
fn a_state_of_another_type_is_a_typed_error() {
    let r = registry();
    let mut state = State::new("not a counter".to_owned());
    assert!(matches!(
        r.get("count")
            .expect("count")
            .call_stateful(&mut state, vec![Value::new(1_u64)]),
        Err(CallError::StateType { .. })
    ));
}

#[test]
fn batch_code_answers_each_item_and_checks_the_length() {
    let r = registry();
    let lengths = r.get("lengths").expect("lengths");
    let out = lengths
        .call_batch(
            None,
            vec![Value::new("a".to_owned()), Value::new("abc".to_owned())],
            &[],
        )
        .expect("call");
    assert_eq!(out[0].get::<usize>(), Ok(1));
    assert_eq!(out[1].get::<usize>(), Ok(3));
    assert_eq!(
        r.get("short")
            .expect("short")
            .call_batch(None, vec![Value::new(1_i64), Value::new(2_i64)], &[])
            .err(),
        Some(CallError::BatchLength {
            code: "short".into(),
            expected: 2,
            got: 1
        })
    );
    let mut state = r
        .get("zero")
        .expect("zero")
        .call_init(vec![])
        .expect("init");
    let tag = r.get("tag").expect("tag");
    let out = tag
        .call_batch(
            Some(&mut state),
            vec![Value::new(1_i64), Value::new(2_i64)],
            &[Value::new(10_i64)],
        )
        .expect("call");
    assert_eq!(out[1].get::<i64>(), Ok(21));
}

#[test]
fn code_called_as_another_kind_is_a_typed_error() {
    let r = registry();
    assert_eq!(
        r.call("count", vec![Value::new(1_u64)]).err(),
        Some(CallError::WrongKind {
            code: "count".into(),
            kind: CodeKind::Stateful,
            called: CodeKind::Plain
        })
    );
    assert!(matches!(
        r.get("plain").expect("plain").call_init(vec![]),
        Err(CallError::WrongKind { .. })
    ));
    assert!(matches!(
        r.get("tag")
            .expect("tag")
            .call_batch(None, vec![Value::new(1_i64)], &[Value::new(1_i64)]),
        Err(CallError::WrongKind { .. })
    ));
}
