//! The typed function registry: plain Rust functions and closures, called by name.

use std::any::{Any, type_name};
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::function::Function;
use crate::ids::{CodeName, FunctionId};
use crate::typed::CodeHandle;
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
    /// The code was registered for another kind of call (a stream's init, stateful or
    /// batch code called as plain code, or the reverse).
    #[error("`{code}` is {kind} code; it cannot be called as {called} code")]
    WrongKind {
        /// The code.
        code: CodeName,
        /// How it was registered.
        kind: CodeKind,
        /// How it was called.
        called: CodeKind,
    },
    /// A batch call returned a list of another length than the batch it was given.
    #[error("`{code}` returned {got} result(s) for a batch of {expected}")]
    BatchLength {
        /// The code.
        code: CodeName,
        /// The number of items in the batch.
        expected: usize,
        /// The number of results it returned.
        got: usize,
    },
    /// A stateful call was given a state of another type than the code's.
    #[error("`{code}` takes a state of type `{expected}`, but the worker's state is a `{found}`")]
    StateType {
        /// The code.
        code: CodeName,
        /// The state type the code takes.
        expected: String,
        /// The type the init code returned.
        found: String,
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

impl CallError {
    /// Whether another attempt of the same call is bound to fail the same way: the
    /// arguments do not match the code's parameters (wrong number or type), the code is of
    /// another kind, or a stateful call's state has another type. Such a failure ends the
    /// execution at once instead of spending the function's retries.
    ///
    /// ```
    /// # mod handoff { pub use handoff_core::*; }
    /// use handoff::{CallError, CodeName};
    /// let arity = CallError::Arity { code: CodeName::from("add"), expected: 2, got: 1 };
    /// assert!(arity.is_permanent());
    /// let failed = CallError::Failed { code: CodeName::from("add"), message: "busy".into() };
    /// assert!(!failed.is_permanent());
    /// ```
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            CallError::Arity { .. }
                | CallError::Argument { .. }
                | CallError::WrongKind { .. }
                | CallError::StateType { .. }
        )
    }
}

/// How registered code is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CodeKind {
    /// `code(args…)` → result: [`Registry::register`], [`Registry::register_fallible`].
    Plain,
    /// `init(args…)` → a stream worker's [`State`]: [`Registry::register_init`].
    Init,
    /// `code(&mut state, args…)` → result: [`Registry::register_stateful`].
    Stateful,
    /// `code(items, extra…)` → one result per item: [`Registry::register_batch`].
    Batch,
    /// `code(&mut state, items, extra…)` → one result per item:
    /// [`Registry::register_stateful_batch`].
    StatefulBatch,
}

impl fmt::Display for CodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CodeKind::Plain => "plain",
            CodeKind::Init => "init",
            CodeKind::Stateful => "stateful",
            CodeKind::Batch => "batch",
            CodeKind::StatefulBatch => "stateful batch",
        })
    }
}

/// The state of one stream worker: what its function's init code returned, of any
/// `Send` type, kept by the worker and lent to every call of the function's code.
pub struct State {
    value: Box<dyn Any + Send>,
    type_name: &'static str,
}

impl State {
    /// Wraps a state.
    pub fn new<S: Send + 'static>(state: S) -> Self {
        State {
            value: Box::new(state),
            type_name: type_name::<S>(),
        }
    }

    /// The name of the type it holds.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// The state as an `S`, when it holds one.
    pub fn downcast_mut<S: 'static>(&mut self) -> Option<&mut S> {
        self.value.downcast_mut::<S>()
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "State<{}>", self.type_name)
    }
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

/// A Rust function or closure taking a stream worker's state first (`&mut S`), then up
/// to 8 parameters that are [`FromValue`]s. Implemented for you; not meant to be
/// implemented by hand.
pub trait StatefulHandler<S, Args>: Send + Sync + 'static {
    /// What the function returns.
    type Output;
    /// How many parameters it takes, the state not counted.
    const ARITY: usize;
    /// Calls it with the state, reading each argument as its parameter type.
    fn invoke(
        &self,
        state: &mut S,
        code: &CodeName,
        args: Vec<Value>,
    ) -> Result<Self::Output, CallError>;
}

macro_rules! stateful_handler {
    ($n:expr; $($a:ident $i:tt),*) => {
        impl<F, S, R, $($a,)*> StatefulHandler<S, ($($a,)*)> for F
        where
            F: Fn(&mut S, $($a),*) -> R + Send + Sync + 'static,
            S: 'static,
            $($a: FromValue,)*
        {
            type Output = R;
            const ARITY: usize = $n;
            #[allow(unused_variables, unused_mut, non_snake_case, clippy::unused_unit)]
            fn invoke(&self, state: &mut S, code: &CodeName, args: Vec<Value>) -> Result<R, CallError> {
                if args.len() != $n {
                    return Err(CallError::Arity { code: code.clone(), expected: $n, got: args.len() });
                }
                let mut args = args.into_iter();
                $(let $a = read::<$a>(code, $i, args.next())?;)*
                Ok((self)(state, $($a),*))
            }
        }
    };
}

stateful_handler!(0;);
stateful_handler!(1; A1 0);
stateful_handler!(2; A1 0, A2 1);
stateful_handler!(3; A1 0, A2 1, A3 2);
stateful_handler!(4; A1 0, A2 1, A3 2, A4 3);
stateful_handler!(5; A1 0, A2 1, A3 2, A4 3, A5 4);
stateful_handler!(6; A1 0, A2 1, A3 2, A4 3, A5 4, A6 5);
stateful_handler!(7; A1 0, A2 1, A3 2, A4 3, A5 4, A6 5, A7 6);
stateful_handler!(8; A1 0, A2 1, A3 2, A4 3, A5 4, A6 5, A7 6, A8 7);

/// How a function's output becomes a call's outcome.
trait Finish<O>: Send + Sync + 'static {
    fn finish(code: &CodeName, out: O) -> Result<Value, CallError>;
}

/// A plain result.
struct One;
/// A `Result` whose error is a failed call.
struct OneFallible;
/// A list of results, one per item of a batch.
struct Many;

impl<R: IntoValue> Finish<R> for One {
    fn finish(_code: &CodeName, out: R) -> Result<Value, CallError> {
        Ok(out.into_value())
    }
}

impl<R: IntoValue, E: fmt::Display> Finish<Result<R, E>> for OneFallible {
    fn finish(code: &CodeName, out: Result<R, E>) -> Result<Value, CallError> {
        out.map(IntoValue::into_value)
            .map_err(|e| CallError::Failed {
                code: code.clone(),
                message: e.to_string(),
            })
    }
}

impl<R: IntoValue> Finish<Vec<R>> for Many {
    fn finish(_code: &CodeName, out: Vec<R>) -> Result<Value, CallError> {
        Ok(Value::list(
            out.into_iter().map(IntoValue::into_value).collect(),
        ))
    }
}

/// The erased form of registered init code.
trait InitCallable: Send + Sync + 'static {
    fn call(&self, code: &CodeName, args: Vec<Value>) -> Result<State, CallError>;
    fn arity(&self) -> usize;
}

/// The erased form of registered stateful code.
trait StatefulCallable: Send + Sync + 'static {
    fn call(
        &self,
        code: &CodeName,
        state: &mut State,
        args: Vec<Value>,
    ) -> Result<Value, CallError>;
    fn arity(&self) -> usize;
}

struct Init<F, Args>(F, PhantomData<fn(Args)>);
struct InitFallible<F, Args>(F, PhantomData<fn(Args)>);
struct Batched<F, Args>(F, PhantomData<fn(Args)>);
struct Stateful<F, S, Args, Out>(F, PhantomData<fn(S, Args, Out)>);

impl<F, Args, S> InitCallable for Init<F, Args>
where
    F: Handler<Args, Output = S>,
    S: Send + 'static,
    Args: 'static,
{
    fn call(&self, code: &CodeName, args: Vec<Value>) -> Result<State, CallError> {
        guarded(code, || self.0.invoke(code, args).map(State::new))
    }
    fn arity(&self) -> usize {
        F::ARITY
    }
}

impl<F, Args, S, E> InitCallable for InitFallible<F, Args>
where
    F: Handler<Args, Output = Result<S, E>>,
    S: Send + 'static,
    E: fmt::Display,
    Args: 'static,
{
    fn call(&self, code: &CodeName, args: Vec<Value>) -> Result<State, CallError> {
        guarded(code, || match self.0.invoke(code, args)? {
            Ok(state) => Ok(State::new(state)),
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

impl<F, Args, R> Callable for Batched<F, Args>
where
    F: Handler<Args, Output = Vec<R>>,
    R: IntoValue,
    Args: 'static,
{
    fn call(&self, code: &CodeName, args: Vec<Value>) -> Result<Value, CallError> {
        guarded(code, || {
            self.0
                .invoke(code, args)
                .and_then(|out| <Many as Finish<Vec<R>>>::finish(code, out))
        })
    }
    fn arity(&self) -> usize {
        F::ARITY
    }
}

impl<F, S, Args, Out> StatefulCallable for Stateful<F, S, Args, Out>
where
    F: StatefulHandler<S, Args>,
    Out: Finish<F::Output>,
    S: 'static,
    Args: 'static,
{
    fn call(
        &self,
        code: &CodeName,
        state: &mut State,
        args: Vec<Value>,
    ) -> Result<Value, CallError> {
        let found = state.type_name();
        let Some(state) = state.downcast_mut::<S>() else {
            return Err(CallError::StateType {
                code: code.clone(),
                expected: type_name::<S>().to_owned(),
                found: found.to_owned(),
            });
        };
        guarded(code, || {
            self.0
                .invoke(state, code, args)
                .and_then(|out| Out::finish(code, out))
        })
    }
    fn arity(&self) -> usize {
        F::ARITY
    }
}

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

/// The erased code, by kind.
#[derive(Clone)]
enum Callee {
    Plain(Arc<dyn Callable>),
    Init(Arc<dyn InitCallable>),
    Stateful(Arc<dyn StatefulCallable>),
    Batch(Arc<dyn Callable>),
    StatefulBatch(Arc<dyn StatefulCallable>),
}

/// A registered function, resolved by name: cheap to clone and to call.
#[derive(Clone)]
pub struct Code {
    name: CodeName,
    callable: Callee,
    /// Its parameter and result types, for plain code ([`crate::signature_of`]).
    signature: Option<Arc<str>>,
}

impl Code {
    /// The name it was registered under.
    pub fn name(&self) -> &CodeName {
        &self.name
    }

    /// Its parameter and result types as text (`"(i64, i64) -> i64"`, from
    /// [`std::any::type_name`]), for code registered with [`Registry::register`] or
    /// [`Registry::register_fallible`] (the `Ok` type for the latter): what a function
    /// built from its [`CodeHandle`] must find on the node that runs it.
    pub fn signature(&self) -> Option<&str> {
        self.signature.as_deref()
    }

    /// How many parameters it takes (a stateful code's state not counted; a batch
    /// code's list of items counted as one).
    pub fn arity(&self) -> usize {
        match &self.callable {
            Callee::Plain(c) | Callee::Batch(c) => c.arity(),
            Callee::Init(c) => c.arity(),
            Callee::Stateful(c) | Callee::StatefulBatch(c) => c.arity(),
        }
    }

    /// How it is called.
    pub fn kind(&self) -> CodeKind {
        match &self.callable {
            Callee::Plain(_) => CodeKind::Plain,
            Callee::Init(_) => CodeKind::Init,
            Callee::Stateful(_) => CodeKind::Stateful,
            Callee::Batch(_) => CodeKind::Batch,
            Callee::StatefulBatch(_) => CodeKind::StatefulBatch,
        }
    }

    fn wrong_kind(&self, called: CodeKind) -> CallError {
        CallError::WrongKind {
            code: self.name.clone(),
            kind: self.kind(),
            called,
        }
    }

    /// Calls plain code. Errors and panics of the function become a [`CallError`];
    /// code of another kind is [`CallError::WrongKind`].
    pub fn call(&self, args: Vec<Value>) -> Result<Value, CallError> {
        match &self.callable {
            Callee::Plain(c) => c.call(&self.name, args),
            _ => Err(self.wrong_kind(CodeKind::Plain)),
        }
    }

    /// Calls init code: the state of a new stream worker.
    pub fn call_init(&self, args: Vec<Value>) -> Result<State, CallError> {
        match &self.callable {
            Callee::Init(c) => c.call(&self.name, args),
            _ => Err(self.wrong_kind(CodeKind::Init)),
        }
    }

    /// Calls stateful code with a worker's state.
    pub fn call_stateful(&self, state: &mut State, args: Vec<Value>) -> Result<Value, CallError> {
        match &self.callable {
            Callee::Stateful(c) => c.call(&self.name, state, args),
            _ => Err(self.wrong_kind(CodeKind::Stateful)),
        }
    }

    /// Calls batch code (with the worker's state for stateful batch code) on `items`,
    /// the values of a batch, followed by the `extra` arguments: one result per item, in
    /// order. A result list of another length is [`CallError::BatchLength`].
    pub fn call_batch(
        &self,
        state: Option<&mut State>,
        items: Vec<Value>,
        extra: &[Value],
    ) -> Result<Vec<Value>, CallError> {
        let expected = items.len();
        let mut args = Vec::with_capacity(1 + extra.len());
        args.push(Value::list(items));
        args.extend(extra.iter().cloned());
        let out = match (&self.callable, state) {
            (Callee::Batch(c), _) => c.call(&self.name, args)?,
            (Callee::StatefulBatch(c), Some(state)) => c.call(&self.name, state, args)?,
            // Stateful batch code without a state, or code of another kind.
            _ => return Err(self.wrong_kind(CodeKind::Batch)),
        };
        let results = out.items().map_err(|_| CallError::BatchLength {
            code: self.name.clone(),
            expected,
            got: 1,
        })?;
        if results.len() != expected {
            return Err(CallError::BatchLength {
                code: self.name.clone(),
                expected,
                got: results.len(),
            });
        }
        Ok(results.to_vec())
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({}/{}, {})", self.name, self.arity(), self.kind())
    }
}

/// Named functions that DAGs refer to. Every node of a cluster is built with the same
/// registry, since code cannot cross the network.
///
/// ```
/// # mod handoff { pub use handoff_core::*; }
/// use handoff::{Registry, Value};
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

    fn insert(&mut self, name: CodeName, callable: Callee) -> Result<&mut Self, RegisterError> {
        self.insert_signed(name, callable, None)
    }

    fn insert_signed(
        &mut self,
        name: CodeName,
        callable: Callee,
        signature: Option<Arc<str>>,
    ) -> Result<&mut Self, RegisterError> {
        if self.codes.contains_key(&name) {
            return Err(RegisterError::Duplicate { code: name });
        }
        self.codes.insert(
            name.clone(),
            Code {
                name,
                callable,
                signature,
            },
        );
        Ok(self)
    }

    /// The signature of each code that has one ([`Code::signature`]), by name, sorted:
    /// what a cluster node announces, so that a function built from a typed handle goes
    /// only where its name has its types.
    pub fn signatures(&self) -> Vec<(CodeName, Arc<str>)> {
        let mut signed: Vec<(CodeName, Arc<str>)> = self
            .codes
            .values()
            .filter_map(|c| Some((c.name.clone(), Arc::clone(c.signature.as_ref()?))))
            .collect();
        signed.sort();
        signed
    }

    /// Registers a function whose result is a plain value.
    ///
    /// Returns its [`CodeHandle`]: the name with the parameter and result types, with
    /// which [`Dag::call`](crate::Dag::call) builds functions the compiler checks.
    pub fn register<F, Args>(
        &mut self,
        name: impl Into<CodeName>,
        f: F,
    ) -> Result<CodeHandle<Args, F::Output>, RegisterError>
    where
        F: Handler<Args>,
        F::Output: IntoValue,
        Args: 'static,
    {
        let name = name.into();
        self.insert_signed(
            name.clone(),
            Callee::Plain(Arc::new(Infallible(f, PhantomData))),
            Some(crate::typed::signature_of::<Args, F::Output>()),
        )?;
        Ok(CodeHandle::new(name))
    }

    /// Registers a function returning `Result<T, E>`: an `Err` is a failed attempt
    /// (retried up to the function's `max_retries`), reported with `E`'s `Display`.
    /// Returns its [`CodeHandle`], whose result type is `R`.
    pub fn register_fallible<F, Args, R, E>(
        &mut self,
        name: impl Into<CodeName>,
        f: F,
    ) -> Result<CodeHandle<Args, R>, RegisterError>
    where
        F: Handler<Args, Output = Result<R, E>>,
        R: IntoValue,
        E: fmt::Display,
        Args: 'static,
    {
        let name = name.into();
        self.insert_signed(
            name.clone(),
            Callee::Plain(Arc::new(Fallible(f, PhantomData))),
            Some(crate::typed::signature_of::<Args, R>()),
        )?;
        Ok(CodeHandle::new(name))
    }

    /// Registers a stream function's init code (see
    /// [`Function::init`](crate::Function::init)): it runs once per stage worker when
    /// the stream starts, and what it returns, of any `Send` type (a loaded model, a
    /// connection, a lookup table), is the worker's state. A panic fails the start.
    ///
    /// ```
    /// # mod handoff { pub use handoff_core::*; }
    /// use std::collections::HashMap;
    /// use handoff::{Registry, Value};
    /// let mut registry = Registry::new();
    /// registry.register_init("load_table", || HashMap::from([(1_i64, "one".to_owned())]))?;
    /// registry.register_stateful("lookup", |table: &mut HashMap<i64, String>, x: i64| {
    ///     table.get(&x).cloned().unwrap_or_default()
    /// })?;
    /// let mut state = registry.get("load_table")?.call_init(vec![])?;
    /// let out = registry.get("lookup")?.call_stateful(&mut state, vec![Value::new(1_i64)])?;
    /// assert_eq!(out.get::<String>()?, "one");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn register_init<F, Args>(
        &mut self,
        name: impl Into<CodeName>,
        f: F,
    ) -> Result<&mut Self, RegisterError>
    where
        F: Handler<Args>,
        F::Output: Send + 'static,
        Args: 'static,
    {
        self.insert(name.into(), Callee::Init(Arc::new(Init(f, PhantomData))))
    }

    /// Registers init code returning `Result<S, E>`: an `Err` fails the stream's start.
    pub fn register_init_fallible<F, Args, S, E>(
        &mut self,
        name: impl Into<CodeName>,
        f: F,
    ) -> Result<&mut Self, RegisterError>
    where
        F: Handler<Args, Output = Result<S, E>>,
        S: Send + 'static,
        E: fmt::Display,
        Args: 'static,
    {
        self.insert(
            name.into(),
            Callee::Init(Arc::new(InitFallible(f, PhantomData))),
        )
    }

    /// Registers stateful code: a function whose first parameter is `&mut S`, the state
    /// its stream worker's init code made (see [`Function::init`](crate::Function::init)),
    /// then the usual parameters. It may change the state, or replace it
    /// (`*state = new`), for the worker's next calls.
    pub fn register_stateful<F, S, Args>(
        &mut self,
        name: impl Into<CodeName>,
        f: F,
    ) -> Result<&mut Self, RegisterError>
    where
        F: StatefulHandler<S, Args>,
        F::Output: IntoValue,
        S: 'static,
        Args: 'static,
    {
        let callable: Stateful<F, S, Args, One> = Stateful(f, PhantomData);
        self.insert(name.into(), Callee::Stateful(Arc::new(callable)))
    }

    /// Registers stateful code returning `Result<T, E>`: an `Err` is that item's error.
    pub fn register_stateful_fallible<F, S, Args, R, E>(
        &mut self,
        name: impl Into<CodeName>,
        f: F,
    ) -> Result<&mut Self, RegisterError>
    where
        F: StatefulHandler<S, Args, Output = Result<R, E>>,
        R: IntoValue,
        E: fmt::Display,
        S: 'static,
        Args: 'static,
    {
        let callable: Stateful<F, S, Args, OneFallible> = Stateful(f, PhantomData);
        self.insert(name.into(), Callee::Stateful(Arc::new(callable)))
    }

    /// Registers batch code (see [`Function::batch`](crate::Function::batch)): its first
    /// parameter is the list of a batch's items (a `Vec<T>` or a [`List<T>`](crate::List)),
    /// followed by the function's extra arguments, and it returns one result per item,
    /// in order. Each item is the value of the function's argument (the list of its
    /// arguments when it has several, or is as-list).
    ///
    /// ```
    /// # mod handoff { pub use handoff_core::*; }
    /// use handoff::{Registry, Value};
    /// let mut registry = Registry::new();
    /// registry.register_batch("square_all", |xs: Vec<i64>| xs.iter().map(|x| x * x).collect::<Vec<_>>())?;
    /// let out = registry.get("square_all")?.call_batch(None, vec![Value::new(2_i64), Value::new(3_i64)], &[])?;
    /// assert_eq!(out[1].get::<i64>()?, 9);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn register_batch<F, Args, R>(
        &mut self,
        name: impl Into<CodeName>,
        f: F,
    ) -> Result<&mut Self, RegisterError>
    where
        F: Handler<Args, Output = Vec<R>>,
        R: IntoValue,
        Args: 'static,
    {
        self.insert(
            name.into(),
            Callee::Batch(Arc::new(Batched(f, PhantomData))),
        )
    }

    /// Registers stateful batch code: `&mut S` first, then the list of a batch's items
    /// and the extra arguments; one result per item.
    pub fn register_stateful_batch<F, S, Args, R>(
        &mut self,
        name: impl Into<CodeName>,
        f: F,
    ) -> Result<&mut Self, RegisterError>
    where
        F: StatefulHandler<S, Args, Output = Vec<R>>,
        R: IntoValue,
        S: 'static,
        Args: 'static,
    {
        let callable: Stateful<F, S, Args, Many> = Stateful(f, PhantomData);
        self.insert(name.into(), Callee::StatefulBatch(Arc::new(callable)))
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
        let mut done = vec![None; inline.len()];
        self.evaluate_at(function, inline, values, &mut done, 0)
    }

    /// Evaluates `function`, each inline function at most once (`done` holds the values
    /// of those evaluated, by position in `inline`): diamonds of inline functions cost
    /// one call per function, not one per path.
    fn evaluate_at(
        &self,
        function: &Function,
        inline: &[Function],
        values: &HashMap<FunctionId, Value>,
        done: &mut [Option<Value>],
        depth: usize,
    ) -> Result<Value, CallError> {
        let code = self.get(function.code().as_str())?;
        let mut args = Vec::with_capacity(function.arg_ids().len());
        for id in function.arg_ids() {
            let value = match values.get(id) {
                Some(value) => value.clone(),
                // Inline functions nest at most as deep as there are of them (a valid DAG
                // has no cycle); the bound keeps a malformed request from recursing forever.
                None => match inline.iter().position(|f| f.id() == id) {
                    Some(at) if let Some(value) = &done[at] => value.clone(),
                    Some(at) if depth < inline.len() => {
                        let value =
                            self.evaluate_at(&inline[at], inline, values, done, depth + 1)?;
                        done[at] = Some(value.clone());
                        value
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
    fn evaluate_calls_each_inline_function_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = Arc::new(AtomicUsize::new(0));
        let mut r = Registry::new();
        let c = Arc::clone(&calls);
        r.register("inc", move |x: i64| {
            c.fetch_add(1, Ordering::Relaxed);
            x + 1
        })
        .expect("register");
        let c = Arc::clone(&calls);
        r.register("add", move |x: i64, y: i64| {
            c.fetch_add(1, Ordering::Relaxed);
            x + y
        })
        .expect("register");
        // 16 diamonds above a regular value `m0`: 48 inline functions, 2^16 paths.
        let mut inline = Vec::new();
        for k in 1..=16 {
            let below = format!("m{}", k - 1);
            inline.push(
                Function::new(format!("l{k}"), "inc")
                    .arg(below.as_str())
                    .inline(),
            );
            inline.push(
                Function::new(format!("r{k}"), "inc")
                    .arg(below.as_str())
                    .inline(),
            );
            inline.push(
                Function::new(format!("m{k}"), "add")
                    .args([format!("l{k}"), format!("r{k}")])
                    .inline(),
            );
        }
        let sink = Function::new("sink", "inc").arg("m16");
        let values = HashMap::from([(FunctionId::new("m0"), Value::new(0_i64))]);
        let value = r.evaluate(&sink, &inline, &values).expect("evaluates");
        assert_eq!(value.get::<i64>(), Ok((1 << 17) - 2 + 1));
        assert_eq!(calls.load(Ordering::Relaxed), 48 + 1);
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

/// The name among `names` closest to `name` by edit distance (insertions, deletions,
/// substitutions and swaps of two neighbours), when it is close enough to be a typo of
/// it: at most one edit for names of up to four characters, a third of the length
/// beyond. Ties go to the first name given. Used to suggest a registered name for one
/// that is not.
///
/// ```
/// # mod handoff { pub use handoff_core::*; }
/// use handoff::nearest_name;
/// let names = ["resize", "filter", "aggregate"];
/// assert_eq!(nearest_name("resze", names), Some("resize"));
/// assert_eq!(nearest_name("filtre", names), Some("filter"));
/// assert_eq!(nearest_name("upload", names), None);
/// ```
pub fn nearest_name<'a>(name: &str, names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let wanted: Vec<char> = name.chars().collect();
    let limit = (wanted.len() / 3).max(1);
    names
        .into_iter()
        .filter(|n| *n != name)
        .map(|n| (edit_distance(&wanted, n, limit), n))
        .filter(|(d, _)| *d <= limit)
        .fold(None, |best: Option<(usize, &str)>, (d, n)| match best {
            Some((bd, _)) if bd <= d => best,
            _ => Some((d, n)),
        })
        .map(|(_, n)| n)
}

/// The optimal-string-alignment distance between `a` and `b`, or `limit + 1` once it is
/// sure to exceed `limit` (names far apart in length are not compared at all).
fn edit_distance(a: &[char], b: &str, limit: usize) -> usize {
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > limit {
        return limit + 1;
    }
    // Three rows of the dynamic programme: two back (for swaps), one back, this one.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut last: Vec<usize> = (0..=b.len()).collect();
    let mut row: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        row[0] = i;
        for j in 1..=b.len() {
            let substitution = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (last[j] + 1)
                .min(row[j - 1] + 1)
                .min(last[j - 1] + substitution);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            row[j] = best;
        }
        if row.iter().all(|&d| d > limit) {
            return limit + 1;
        }
        std::mem::swap(&mut before, &mut last);
        std::mem::swap(&mut last, &mut row);
    }
    last[b.len()]
}

#[cfg(test)]
mod nearest_tests {
    use super::*;

    #[test]
    fn typos_find_their_name_and_strangers_find_none() {
        let names = [
            "identity",
            "multiply",
            "format_output",
            "sum",
            "gpu_process",
        ];
        assert_eq!(nearest_name("multipyl", names), Some("multiply"));
        assert_eq!(nearest_name("mutliply", names), Some("multiply"));
        assert_eq!(nearest_name("format_outptu", names), Some("format_output"));
        assert_eq!(nearest_name("sun", names), Some("sum"));
        assert_eq!(nearest_name("gpu_proces", names), Some("gpu_process"));
        assert_eq!(nearest_name("download", names), None);
        assert_eq!(nearest_name("s", names), None);
        assert_eq!(nearest_name("", names), None);
        assert_eq!(nearest_name("anything", []), None);
    }

    #[test]
    fn distances_count_each_kind_of_edit() {
        let d = |a: &str, b: &str| edit_distance(&a.chars().collect::<Vec<_>>(), b, 10);
        assert_eq!(d("abc", "abc"), 0);
        assert_eq!(d("abc", "abd"), 1);
        assert_eq!(d("abc", "ab"), 1);
        assert_eq!(d("abc", "abcd"), 1);
        assert_eq!(d("abc", "acb"), 1);
        assert_eq!(d("kitten", "sitting"), 3);
        assert_eq!(d("", "abc"), 3);
        assert_eq!(edit_distance(&['a'; 3], "bbbbbbbb", 2), 3);
    }
}
