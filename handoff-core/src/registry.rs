//! The typed function registry: plain Rust functions and closures, called by name.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::function::Function;
use crate::ids::{CodeName, FunctionId};
use crate::value::{FromValue, IntoValue, Value, ValueError};

/// Why a call of registered code failed. Every variant names the code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CallError {
    /// No function of that name is registered.
    #[error("no function named `{code}` is registered")]
    UnknownCode {
        /// The name asked for.
        code: CodeName,
    },
    /// The call had the wrong number of arguments.
    #[error("`{code}` takes {expected} argument(s), but was called with {got}")]
    Arity {
        /// The code called.
        code: CodeName,
        /// How many parameters it has.
        expected: usize,
        /// How many arguments it got.
        got: usize,
    },
    /// An argument could not be read as the parameter's type.
    #[error("argument {position} of `{code}`: {source}")]
    Argument {
        /// The code called.
        code: CodeName,
        /// The 0-based position of the argument.
        position: usize,
        /// Why it could not be read.
        #[source]
        source: ValueError,
    },
    /// The function returned an error.
    #[error("`{code}` failed: {message}")]
    Failed {
        /// The code called.
        code: CodeName,
        /// The error's text.
        message: String,
    },
    /// The attempt ran past its timeout. The thread running it was asked to stop (see
    /// the runtime's cancellation token) but may still be busy.
    #[error("`{code}` timed out after {after:?}")]
    TimedOut {
        /// The code called.
        code: CodeName,
        /// The timeout.
        after: std::time::Duration,
    },
    /// The function panicked; the panic was caught.
    #[error("`{code}` panicked: {message}")]
    Panicked {
        /// The code called.
        code: CodeName,
        /// The panic's message.
        message: String,
    },
    /// The node running the attempt left the cluster (its process died, or it stopped
    /// answering). `running` is true when the node had reported that the call started
    /// (nodes report it for functions already suspected of killing nodes).
    #[error("`{code}` was lost with node `{node}`{}", if *running { " while running" } else { "" })]
    NodeLost {
        /// The code.
        code: CodeName,
        /// The node.
        node: crate::ids::NodeId,
        /// Whether the call had started there.
        running: bool,
    },
    /// The attempt could not run on the node chosen for it: the node could not be
    /// reached, refused the work, or could not get an argument.
    #[error("`{code}` could not run on node `{node}`: {reason}")]
    Unavailable {
        /// The code to run.
        code: CodeName,
        /// The node chosen for it.
        node: crate::ids::NodeId,
        /// What went wrong.
        reason: String,
    },
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// A function of that name is registered already.
    #[error("a function named `{code}` is registered already")]
    Duplicate {
        /// The name.
        code: CodeName,
    },
}

/// The erased form of a registered function.
trait Callable: Send + Sync + 'static {
    fn call(&self, code: &CodeName, args: Vec<Value>) -> Result<Value, CallError>;
    fn arity(&self) -> usize;
}

/// A Rust function or closure that can be registered, for each number of parameters
/// from 0 to 8. Each parameter is a [`FromValue`]. Implemented for you; not meant to be
/// implemented by hand.
pub trait Handler<Args>: Send + Sync + 'static {
    /// What the function returns.
    type Output;
    /// How many parameters it takes.
    const ARITY: usize;
    /// Calls it, reading each argument as its parameter type.
    fn invoke(&self, code: &CodeName, args: Vec<Value>) -> Result<Self::Output, CallError>;
}

fn read<A: FromValue>(
    code: &CodeName,
    position: usize,
    arg: Option<Value>,
) -> Result<A, CallError> {
    let value = arg.ok_or_else(|| CallError::Arity {
        code: code.clone(),
        expected: position + 1,
        got: position,
    })?;
    A::from_value(value).map_err(|source| CallError::Argument {
        code: code.clone(),
        position,
        source,
    })
}

macro_rules! handler {
    ($n:expr; $($a:ident $i:tt),*) => {
        impl<F, R, $($a,)*> Handler<($($a,)*)> for F
        where
            F: Fn($($a),*) -> R + Send + Sync + 'static,
            $($a: FromValue,)*
        {
            type Output = R;
            const ARITY: usize = $n;
            #[allow(unused_variables, unused_mut, non_snake_case, clippy::unused_unit)]
            fn invoke(&self, code: &CodeName, args: Vec<Value>) -> Result<R, CallError> {
                if args.len() != $n {
                    return Err(CallError::Arity { code: code.clone(), expected: $n, got: args.len() });
                }
                let mut args = args.into_iter();
                $(let $a = read::<$a>(code, $i, args.next())?;)*
                Ok((self)($($a),*))
            }
        }
    };
}

handler!(0;);
handler!(1; A1 0);
handler!(2; A1 0, A2 1);
handler!(3; A1 0, A2 1, A3 2);
handler!(4; A1 0, A2 1, A3 2, A4 3);
handler!(5; A1 0, A2 1, A3 2, A4 3, A5 4);
handler!(6; A1 0, A2 1, A3 2, A4 3, A5 4, A6 5);
handler!(7; A1 0, A2 1, A3 2, A4 3, A5 4, A6 5, A7 6);
handler!(8; A1 0, A2 1, A3 2, A4 3, A5 4, A6 5, A7 6, A8 7);

struct Infallible<F, Args>(F, PhantomData<fn(Args)>);
struct Fallible<F, Args>(F, PhantomData<fn(Args)>);

/// The text of a caught panic: its `&str` or `String` payload, or a placeholder.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

fn guarded<T>(code: &CodeName, f: impl FnOnce() -> Result<T, CallError>) -> Result<T, CallError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        Err(CallError::Panicked {
            code: code.clone(),
            message: panic_message(&*payload),
        })
    })
}

impl<F, Args> Callable for Infallible<F, Args>
where
    F: Handler<Args>,
    F::Output: IntoValue,
    Args: 'static,
{
    fn call(&self, code: &CodeName, args: Vec<Value>) -> Result<Value, CallError> {
        guarded(code, || {
            self.0.invoke(code, args).map(IntoValue::into_value)
        })
    }
    fn arity(&self) -> usize {
        F::ARITY
    }
}

impl<F, Args, R, E> Callable for Fallible<F, Args>
where
    F: Handler<Args, Output = Result<R, E>>,
    R: IntoValue,
    E: fmt::Display,
    Args: 'static,
{
    fn call(&self, code: &CodeName, args: Vec<Value>) -> Result<Value, CallError> {
        guarded(code, || match self.0.invoke(code, args)? {
            Ok(r) => Ok(r.into_value()),
            Err(e) => Err(CallError::Failed {
                code: code.clone(),
                message: e.to_string(),
            }),
        })
    }
    fn arity(&self) -> usize {
        F::ARITY
    }
}

/// A registered function, resolved by name: cheap to clone and to call.
#[derive(Clone)]
pub struct Code {
    name: CodeName,
    callable: Arc<dyn Callable>,
}

impl Code {
    /// The name it was registered under.
    pub fn name(&self) -> &CodeName {
        &self.name
    }

    /// How many parameters it takes.
    pub fn arity(&self) -> usize {
        self.callable.arity()
    }

    /// Calls it. Errors and panics of the function become a [`CallError`].
    pub fn call(&self, args: Vec<Value>) -> Result<Value, CallError> {
        self.callable.call(&self.name, args)
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({}/{})", self.name, self.arity())
    }
}

/// Named functions that DAGs refer to. Every node of a cluster is built with the same
/// registry, since code cannot cross the network.
///
/// ```
/// use handoff_core::{Registry, Value};
/// let mut registry = Registry::new();
/// registry.register("double", |x: i64| x * 2)?;
/// registry.register_fallible("parse", |s: String| s.parse::<i64>())?;
/// let out = registry.call("double", vec![Value::new(21_i64)])?;
/// assert_eq!(out.get::<i64>()?, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    codes: HashMap<CodeName, Code>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn insert(
        &mut self,
        name: CodeName,
        callable: Arc<dyn Callable>,
    ) -> Result<&mut Self, RegisterError> {
        if self.codes.contains_key(&name) {
            return Err(RegisterError::Duplicate { code: name });
        }
        self.codes.insert(name.clone(), Code { name, callable });
        Ok(self)
    }

    /// Registers a function whose result is a plain value.
    pub fn register<F, Args>(
        &mut self,
        name: impl Into<CodeName>,
        f: F,
    ) -> Result<&mut Self, RegisterError>
    where
        F: Handler<Args>,
        F::Output: IntoValue,
        Args: 'static,
    {
        self.insert(name.into(), Arc::new(Infallible(f, PhantomData)))
    }

    /// Registers a function returning `Result<T, E>`: an `Err` is a failed attempt
    /// (retried up to the function's `max_retries`), reported with `E`'s `Display`.
    pub fn register_fallible<F, Args, R, E>(
        &mut self,
        name: impl Into<CodeName>,
        f: F,
    ) -> Result<&mut Self, RegisterError>
    where
        F: Handler<Args, Output = Result<R, E>>,
        R: IntoValue,
        E: fmt::Display,
        Args: 'static,
    {
        self.insert(name.into(), Arc::new(Fallible(f, PhantomData)))
    }

    /// The function registered under `name`.
    pub fn get(&self, name: &str) -> Result<&Code, CallError> {
        self.codes.get(name).ok_or_else(|| CallError::UnknownCode {
            code: CodeName::new(name),
        })
    }

    /// True when a function of that name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.codes.contains_key(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<CodeName> {
        let mut names: Vec<_> = self.codes.keys().cloned().collect();
        names.sort();
        names
    }

    /// Evaluates `function` away from its DAG: `values` holds the results of the regular
    /// functions it depends on (directly or through inline arguments), and `inline` the
    /// inline functions among its arguments (and theirs), which are evaluated in place.
    /// This is how a node runs a function sent to it by another node.
    pub fn evaluate(
        &self,
        function: &Function,
        inline: &[Function],
        values: &HashMap<FunctionId, Value>,
    ) -> Result<Value, CallError> {
        self.evaluate_at(function, inline, values, 0)
    }

    fn evaluate_at(
        &self,
        function: &Function,
        inline: &[Function],
        values: &HashMap<FunctionId, Value>,
        depth: usize,
    ) -> Result<Value, CallError> {
        let code = self.get(function.code().as_str())?;
        let mut args = Vec::with_capacity(function.arg_ids().len());
        for id in function.arg_ids() {
            let value = match values.get(id) {
                Some(value) => value.clone(),
                // Inline functions nest at most as deep as there are of them (a valid DAG
                // has no cycle); the bound keeps a malformed request from recursing forever.
                None => match inline.iter().find(|f| f.id() == id) {
                    Some(f) if depth < inline.len() => {
                        self.evaluate_at(f, inline, values, depth + 1)?
                    }
                    _ => {
                        return Err(CallError::Failed {
                            code: function.code().clone(),
                            message: format!("argument `{id}` was not provided"),
                        });
                    }
                },
            };
            args.push(value);
        }
        code.call(function.parameters(args))
    }

    /// Calls the function registered under `name`.
    pub fn call(&self, name: &str, args: Vec<Value>) -> Result<Value, CallError> {
        self.get(name)?.call(args)
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{List, Shared};

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register("zero", || 0_i64).expect("register");
        r.register("double", |x: i64| x * 2).expect("register");
        r.register(
            "six",
            |a: i64, b: i64, c: i64, d: i64, e: i64, f: String| format!("{f}{}", a + b + c + d + e),
        )
        .expect("register");
        r.register("sum", |xs: List<i64>| xs.iter().sum::<i64>())
            .expect("register");
        r.register("len", |b: Shared<Vec<u8>>| b.len())
            .expect("register");
        r.register_fallible("parse", |s: String| s.parse::<i64>())
            .expect("register");
        r.register("boom", |_: i64| -> i64 { panic!("kaboom") })
            .expect("register");
        r
    }

    #[test]
    fn calls_functions_of_any_arity() {
        let r = registry();
        assert_eq!(r.call("zero", vec![]).map(|v| v.get::<i64>()), Ok(Ok(0)));
        let six = r
            .call(
                "six",
                vec![
                    Value::new(1_i64),
                    Value::new(2_i64),
                    Value::new(3_i64),
                    Value::new(4_i64),
                    Value::new(5_i64),
                    Value::new("n=".to_owned()),
                ],
            )
            .expect("call");
        assert_eq!(six.get::<String>(), Ok("n=15".to_owned()));
    }

    #[test]
    fn unknown_names_are_typed_errors() {
        assert_eq!(
            registry().call("nope", vec![]).err(),
            Some(CallError::UnknownCode {
                code: "nope".into()
            })
        );
    }

    #[test]
    fn wrong_arity_is_a_typed_error() {
        assert_eq!(
            registry().call("double", vec![]).err(),
            Some(CallError::Arity {
                code: "double".into(),
                expected: 1,
                got: 0
            })
        );
    }

    #[test]
    fn wrong_types_are_typed_errors() {
        let err = registry()
            .call("double", vec![Value::new("x".to_owned())])
            .expect_err("a string is not an i64");
        assert!(
            matches!(err, CallError::Argument { position: 0, ref code, .. } if code.as_str() == "double")
        );
    }

    #[test]
    fn errors_and_panics_are_failures() {
        let r = registry();
        assert!(matches!(
            r.call("parse", vec![Value::new("x1".to_owned())]),
            Err(CallError::Failed { .. })
        ));
        assert_eq!(
            r.call("boom", vec![Value::new(1_i64)]).err(),
            Some(CallError::Panicked {
                code: "boom".into(),
                message: "kaboom".into()
            })
        );
    }

    #[test]
    fn as_list_and_shared_parameters() {
        let r = registry();
        let list = Value::list(vec![
            Value::new(1_i64),
            Value::new(2_i64),
            Value::new(3_i64),
        ]);
        assert_eq!(r.call("sum", vec![list]).map(|v| v.get::<i64>()), Ok(Ok(6)));
        let buf = Value::new(vec![0_u8; 1024]);
        assert_eq!(
            r.call("len", vec![buf]).map(|v| v.get::<usize>()),
            Ok(Ok(1024))
        );
    }

    #[test]
    fn duplicate_names_are_refused() {
        let mut r = registry();
        assert_eq!(
            r.register("double", |x: i64| x).err(),
            Some(RegisterError::Duplicate {
                code: "double".into()
            })
        );
    }
}
