//! The typed registry: every arity from 0 to 8, fallible functions, caught panics, typed
//! errors naming the code, as-list and shared parameters, zero-copy passing of a large
//! buffer, and values round-tripping through MessagePack.

use std::sync::Arc;

use bytes::Bytes;
use handoff_core::{CallError, List, RegisterError, Registry, Shared, Value, ValueError};
use serde::{Deserialize, Serialize};

fn ints(xs: &[i64]) -> Vec<Value> {
    xs.iter().map(|&x| Value::new(x)).collect()
}

fn call_i64(r: &Registry, name: &str, args: Vec<Value>) -> i64 {
    r.call(name, args)
        .unwrap_or_else(|e| panic!("calling {name}: {e}"))
        .get::<i64>()
        .unwrap_or_else(|e| panic!("result of {name}: {e}"))
}

/// Registers `a0` .. `a8`, each computing a weighted sum of its parameters, so that a
/// swapped argument changes the result.
fn arity_registry() -> Registry {
    let mut r = Registry::new();
    r.register("a0", || 1000_i64).expect("a0");
    r.register("a1", |a: i64| a).expect("a1");
    r.register("a2", |a: i64, b: i64| a + 2 * b).expect("a2");
    r.register("a3", |a: i64, b: i64, c: i64| a + 2 * b + 3 * c)
        .expect("a3");
    r.register("a4", |a: i64, b: i64, c: i64, d: i64| {
        a + 2 * b + 3 * c + 4 * d
    })
    .expect("a4");
    r.register("a5", |a: i64, b: i64, c: i64, d: i64, e: i64| {
        a + 2 * b + 3 * c + 4 * d + 5 * e
    })
    .expect("a5");
    r.register("a6", |a: i64, b: i64, c: i64, d: i64, e: i64, f: i64| {
        a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f
    })
    .expect("a6");
    r.register(
        "a7",
        |a: i64, b: i64, c: i64, d: i64, e: i64, f: i64, g: i64| {
            a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g
        },
    )
    .expect("a7");
    r.register(
        "a8",
        |a: i64, b: i64, c: i64, d: i64, e: i64, f: i64, g: i64, h: i64| {
            a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g + 8 * h
        },
    )
    .expect("a8");
    r
}

#[test]
fn every_arity_from_zero_to_eight() {
    let r = arity_registry();
    assert_eq!(call_i64(&r, "a0", vec![]), 1000);
    for n in 1..=8_i64 {
        let name = format!("a{n}");
        let args: Vec<i64> = (1..=n).collect();
        // sum of k * k for k in 1..=n
        let expected: i64 = (1..=n).map(|k| k * k).sum();
        assert_eq!(call_i64(&r, &name, ints(&args)), expected, "{name}");
        assert_eq!(r.get(&name).expect("registered").arity(), n as usize);
    }
    assert_eq!(r.get("a0").expect("registered").arity(), 0);
    let names: Vec<String> = r.names().iter().map(ToString::to_string).collect();
    assert_eq!(
        names,
        ["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8"]
    );
}

#[test]
fn eight_parameters_of_mixed_types() {
    let mut r = Registry::new();
    r.register(
        "mixed",
        |a: i64,
         b: String,
         c: f64,
         d: bool,
         e: Vec<u8>,
         f: Option<i32>,
         g: (u8, char),
         h: Shared<String>| { format!("{a}|{b}|{c}|{d}|{e:?}|{f:?}|{g:?}|{}", *h) },
    )
    .expect("register");
    let out = r
        .call(
            "mixed",
            vec![
                Value::new(-3_i64),
                Value::new("two".to_owned()),
                Value::new(2.5_f64),
                Value::new(true),
                Value::new(vec![1_u8, 2]),
                Value::new(None::<i32>),
                Value::new((7_u8, 'x')),
                Value::new("last".to_owned()),
            ],
        )
        .expect("call");
    assert_eq!(
        out.get::<String>(),
        Ok("-3|two|2.5|true|[1, 2]|None|(7, 'x')|last".to_owned())
    );
}

#[test]
fn wrong_arity_is_a_typed_error_naming_the_code() {
    let r = arity_registry();
    for n in 0..=8_usize {
        let name = format!("a{n}");
        for got in [n + 1, n + 3] {
            let err = r.call(&name, ints(&vec![1; got])).expect_err("wrong arity");
            assert_eq!(
                err,
                CallError::Arity {
                    code: name.as_str().into(),
                    expected: n,
                    got,
                }
            );
            let text = err.to_string();
            assert!(text.contains(&format!("`{name}`")), "{text}");
        }
        if n > 0 {
            let err = r.call(&name, ints(&vec![1; n - 1])).expect_err("too few");
            assert_eq!(
                err,
                CallError::Arity {
                    code: name.as_str().into(),
                    expected: n,
                    got: n - 1,
                }
            );
        }
    }
}

#[test]
fn wrong_types_are_typed_errors_naming_the_code_and_position() {
    let mut r = Registry::new();
    r.register("concat", |a: String, b: i64, c: Vec<u8>| {
        format!("{a}{b}{c:?}")
    })
    .expect("register");
    let err = r
        .call(
            "concat",
            vec![
                Value::new("ok".to_owned()),
                Value::new("not a number".to_owned()),
                Value::new(vec![1_u8]),
            ],
        )
        .expect_err("argument 1 is a string");
    let CallError::Argument {
        code,
        position,
        source,
    } = &err
    else {
        panic!("expected an argument error, got {err:?}")
    };
    assert_eq!(code.as_str(), "concat");
    assert_eq!(*position, 1);
    let ValueError::TypeMismatch {
        expected, found, ..
    } = source
    else {
        panic!("expected a type mismatch, got {source:?}")
    };
    assert_eq!(expected, "i64");
    assert_eq!(found, "alloc::string::String");
    let text = err.to_string();
    assert!(
        text.contains("`concat`") && text.contains("argument 1") && text.contains("i64"),
        "{text}"
    );
    assert!(
        std::error::Error::source(&err).is_some(),
        "the cause is kept"
    );

    // A struct where an integer is expected, at position 2.
    let err = r
        .call(
            "concat",
            vec![
                Value::new("ok".to_owned()),
                Value::new(1_i64),
                Value::new(Point::sample()),
            ],
        )
        .expect_err("argument 2 is a struct");
    assert!(
        matches!(err, CallError::Argument { position: 2, ref code, .. } if code.as_str() == "concat"),
        "{err:?}"
    );
}

#[test]
fn unknown_names_are_typed_errors() {
    let r = arity_registry();
    let err = r.call("missing", vec![]).expect_err("unknown");
    assert_eq!(
        err,
        CallError::UnknownCode {
            code: "missing".into()
        }
    );
    assert!(err.to_string().contains("`missing`"), "{err}");
    assert!(r.get("missing").is_err());
    assert!(!r.contains("missing"));
    assert!(r.contains("a3"));
}

#[test]
fn duplicate_registrations_are_refused_and_keep_the_first() {
    let mut r = Registry::new();
    r.register("f", |x: i64| x + 1).expect("first");
    let err = r.register("f", |x: i64| x + 2).expect_err("duplicate");
    assert_eq!(err, RegisterError::Duplicate { code: "f".into() });
    assert!(err.to_string().contains("`f`"));
    let err = r
        .register_fallible("f", |x: i64| Ok::<i64, String>(x))
        .expect_err("duplicate");
    assert_eq!(err, RegisterError::Duplicate { code: "f".into() });
    assert_eq!(call_i64(&r, "f", ints(&[1])), 2);
}

#[derive(Debug)]
struct Negative(i64);

impl std::fmt::Display for Negative {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is negative", self.0)
    }
}

#[test]
fn fallible_functions() {
    let mut r = Registry::new();
    r.register_fallible("sqrt", |x: i64| {
        if x < 0 {
            Err(Negative(x))
        } else {
            Ok(((x as f64).sqrt()) as i64)
        }
    })
    .expect("register");
    r.register_fallible("parse", |s: String| s.parse::<i64>())
        .expect("register");
    r.register_fallible("nothing", || Err::<(), _>("always fails"))
        .expect("register");

    assert_eq!(call_i64(&r, "sqrt", ints(&[49])), 7);
    assert_eq!(
        r.call("sqrt", ints(&[-4])).err(),
        Some(CallError::Failed {
            code: "sqrt".into(),
            message: "-4 is negative".into(),
        })
    );
    assert_eq!(call_i64(&r, "parse", vec![Value::new("12".to_owned())]), 12);
    let err = r
        .call("parse", vec![Value::new("x".to_owned())])
        .expect_err("not a number");
    assert!(
        matches!(&err, CallError::Failed { code, message } if code.as_str() == "parse" && message.contains("invalid digit")),
        "{err:?}"
    );
    assert!(err.to_string().contains("`parse`"));
    assert_eq!(
        r.call("nothing", vec![]).err(),
        Some(CallError::Failed {
            code: "nothing".into(),
            message: "always fails".into()
        })
    );
    // A fallible function still checks its arity and types.
    assert!(matches!(
        r.call("sqrt", vec![]),
        Err(CallError::Arity { .. })
    ));
}

#[test]
fn panics_are_caught_as_typed_errors() {
    let mut r = Registry::new();
    r.register("str_panic", |_: i64| -> i64 { panic!("static message") })
        .expect("register");
    r.register("string_panic", |x: i64| -> i64 { panic!("formatted {x}") })
        .expect("register");
    r.register("any_panic", || -> i64 { std::panic::panic_any(42_u32) })
        .expect("register");
    r.register_fallible("fallible_panic", |x: i64| -> Result<i64, String> {
        if x > 0 {
            panic!("fallible panicked on {x}")
        }
        Ok(x)
    })
    .expect("register");
    r.register("index_oob", |v: Vec<i64>| v[10])
        .expect("register");

    assert_eq!(
        r.call("str_panic", ints(&[1])).err(),
        Some(CallError::Panicked {
            code: "str_panic".into(),
            message: "static message".into()
        })
    );
    assert_eq!(
        r.call("string_panic", ints(&[7])).err(),
        Some(CallError::Panicked {
            code: "string_panic".into(),
            message: "formatted 7".into()
        })
    );
    let err = r.call("any_panic", vec![]).expect_err("panics");
    assert!(
        matches!(&err, CallError::Panicked { code, .. } if code.as_str() == "any_panic"),
        "{err:?}"
    );
    assert_eq!(
        r.call("fallible_panic", ints(&[3])).err(),
        Some(CallError::Panicked {
            code: "fallible_panic".into(),
            message: "fallible panicked on 3".into()
        })
    );
    let err = r
        .call("index_oob", vec![Value::new(vec![1_i64])])
        .expect_err("out of bounds");
    assert!(
        matches!(&err, CallError::Panicked { message, .. } if message.contains("index out of bounds")),
        "{err:?}"
    );
    assert!(err.to_string().contains("`index_oob`"), "{err}");

    // The registry is still usable after a panic.
    assert_eq!(call_i64(&r, "fallible_panic", ints(&[-1])), -1);
}

#[test]
fn as_list_parameters() {
    let mut r = Registry::new();
    r.register("sum", |xs: List<i64>, bonus: i64| {
        xs.iter().sum::<i64>() + bonus
    })
    .expect("register");
    r.register("lens", |xs: List<Shared<String>>| {
        xs.iter().map(|s| s.len()).collect::<Vec<_>>()
    })
    .expect("register");
    r.register("as_vec", |xs: Vec<i64>| xs.len())
        .expect("register");

    let list = Value::list(ints(&[1, 2, 3, 4]));
    assert_eq!(
        call_i64(&r, "sum", vec![list.clone(), Value::new(100_i64)]),
        110
    );
    assert_eq!(
        call_i64(&r, "sum", vec![Value::list(vec![]), Value::new(5_i64)]),
        5
    );
    let strings = Value::list(vec![
        Value::new("a".to_owned()),
        Value::new("bcd".to_owned()),
    ]);
    assert_eq!(
        r.call("lens", vec![strings])
            .expect("call")
            .get::<Vec<usize>>(),
        Ok(vec![1, 3])
    );
    // A `Vec` parameter reads the list as well.
    assert_eq!(
        r.call("as_vec", vec![list]).expect("call").get::<usize>(),
        Ok(4)
    );

    // Not a list: a typed error naming the code and position.
    let err = r
        .call("sum", vec![Value::new(1_i64), Value::new(0_i64)])
        .expect_err("not a list");
    assert!(
        matches!(
            &err,
            CallError::Argument { code, position: 0, source: ValueError::NotAList { .. } }
                if code.as_str() == "sum"
        ),
        "{err:?}"
    );
    // A list with an item of the wrong type.
    let err = r
        .call(
            "sum",
            vec![
                Value::list(vec![Value::new(1_i64), Value::new("two".to_owned())]),
                Value::new(0_i64),
            ],
        )
        .expect_err("bad item");
    assert!(
        matches!(
            &err,
            CallError::Argument {
                position: 0,
                source: ValueError::TypeMismatch { .. },
                ..
            }
        ),
        "{err:?}"
    );
}

const TEN_MB: usize = 10 * 1024 * 1024;

#[test]
fn a_ten_megabyte_buffer_is_shared_not_copied() {
    let mut r = Registry::new();
    r.register("addr", |b: Shared<Vec<u8>>| {
        (b.as_ptr() as usize, b.len(), b[TEN_MB - 1])
    })
    .expect("register");
    r.register("addrs", |bs: List<Shared<Vec<u8>>>| {
        bs.iter().map(|b| b.as_ptr() as usize).collect::<Vec<_>>()
    })
    .expect("register");
    r.register("passthrough", |v: Value| v).expect("register");

    let mut data = vec![0_u8; TEN_MB];
    data[TEN_MB - 1] = 9;
    let original = data.as_ptr() as usize;
    let big = Value::new(data);
    assert_eq!(
        big.downcast_ref::<Vec<u8>>().map(|b| b.as_ptr() as usize),
        Some(original),
        "Value::new moves, never copies"
    );

    // Through a Shared parameter: the very same buffer.
    let out = r.call("addr", vec![big.clone()]).expect("call");
    assert_eq!(out.get::<(usize, usize, u8)>(), Ok((original, TEN_MB, 9)));

    // Through Value::shared: the same allocation, another pointer to it.
    let a = big.shared::<Vec<u8>>().expect("shared");
    let b = big.shared::<Vec<u8>>().expect("shared");
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(a.as_ptr() as usize, original);

    // As every item of an as-list argument.
    let list = Value::list(vec![big.clone(), big.clone(), big.clone()]);
    let out = r.call("addrs", vec![list]).expect("call");
    assert_eq!(out.get::<Vec<usize>>(), Ok(vec![original; 3]));

    // A `Value` parameter returned as the result is the same value.
    let out = r.call("passthrough", vec![big.clone()]).expect("call");
    assert!(out.ptr_eq(&big));

    // The caller's value is intact after all this.
    assert_eq!(big.downcast_ref::<Vec<u8>>().map(Vec::len), Some(TEN_MB));
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Inner {
    weight: f64,
    flags: Vec<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i64,
    name: String,
    tags: Vec<String>,
    inner: Option<Inner>,
    #[serde(with = "serde_bytes")]
    blob: Vec<u8>,
}

impl Point {
    fn sample() -> Self {
        Point {
            x: -42,
            name: "p".to_owned(),
            tags: vec!["a".to_owned(), "β".to_owned()],
            inner: Some(Inner {
                weight: 0.25,
                flags: vec![true, false],
            }),
            blob: vec![0, 255, 7],
        }
    }
}

/// Another type with the same shape, as a remote consumer might declare it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PointCopy {
    x: i64,
    name: String,
    tags: Vec<String>,
    inner: Option<Inner>,
    #[serde(with = "serde_bytes")]
    blob: Vec<u8>,
}

#[test]
fn a_struct_round_trips_through_msgpack() {
    let p = Point::sample();
    let local = Value::new(p.clone());
    assert!(
        local.type_name().ends_with("Point"),
        "{}",
        local.type_name()
    );

    let bytes: Bytes = local.to_msgpack().expect("encode");
    let remote = Value::from_msgpack(bytes.clone());
    assert_eq!(remote.type_name(), "msgpack");
    assert_eq!(remote.get::<Point>(), Ok(p.clone()));
    assert_eq!(
        remote.shared::<Point>().map(|s| (*s).clone()),
        Ok(p.clone())
    );
    // The encoded form is kept as it is: encoding again is the same bytes.
    assert_eq!(remote.to_msgpack(), Ok(bytes));

    // On the wire, a Value is carried as its encoding.
    let wire = rmp_serde::to_vec(&local).expect("encode the value");
    let back: Value = rmp_serde::from_slice(&wire).expect("decode the value");
    assert_eq!(back.get::<Point>(), Ok(p.clone()));

    // An equivalent struct decodes from either form.
    let copy = PointCopy {
        x: p.x,
        name: p.name.clone(),
        tags: p.tags.clone(),
        inner: p.inner.clone(),
        blob: p.blob.clone(),
    };
    assert_eq!(local.get::<PointCopy>(), Ok(copy.clone()));
    assert_eq!(remote.get::<PointCopy>(), Ok(copy));

    // And a mismatching type is a typed error.
    assert!(matches!(
        remote.get::<Vec<String>>(),
        Err(ValueError::TypeMismatch { found, .. }) if found == "msgpack"
    ));
}

#[test]
fn functions_take_structs_from_local_and_encoded_values() {
    let mut r = Registry::new();
    r.register("shift", |p: Point, dx: i64| Point { x: p.x + dx, ..p })
        .expect("register");
    let p = Point::sample();
    let local = r
        .call("shift", vec![Value::new(p.clone()), Value::new(2_i64)])
        .expect("local call");
    let encoded = Value::from_msgpack(Value::new(p.clone()).to_msgpack().expect("encode"));
    let remote = r
        .call("shift", vec![encoded, Value::new(2_i64)])
        .expect("call on bytes");
    let expected = Point { x: -40, ..p };
    assert_eq!(local.get::<Point>(), Ok(expected.clone()));
    assert_eq!(remote.get::<Point>(), Ok(expected));
}
