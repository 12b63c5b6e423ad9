//! DAGs checked by the compiler: typed code handles and typed references to results.
//!
//! [`Registry::register`](crate::Registry::register) (and its fallible and batch forms)
//! returns a [`CodeHandle<Args, R>`]: the code's name with its parameter types (`Args`, a
//! tuple) and result type (`R`). [`Dag::call`] adds a function running a handle on its
//! arguments, given as one tuple: results of other functions ([`FnRef<T>`], taken by
//! reference) first, then constants of the declared types. It returns an [`FnRef<R>`] to
//! the new function's result, and [`Results::of`](crate::Results::of) reads that result
//! back as an `R`. A DAG whose types do not line up does not compile:
//!
//! ```compile_fail
//! use handoff_core::{Dag, Registry};
//! let mut registry = Registry::new();
//! let double = registry.register("double", |x: i64| x * 2).unwrap();
//! let shout = registry.register("shout", |s: String| s.to_uppercase()).unwrap();
//! let mut dag = Dag::new();
//! let x = dag.call("x", &double, (21_i64,));
//! dag.call("loud", &shout, (&x,)); // an i64 where a String is expected
//! ```
//!
//! The same with a `String` where the `i64` went compiles (the twin of each failing
//! example below):
//!
//! ```
//! use handoff_core::{Dag, Registry};
//! let mut registry = Registry::new();
//! let double = registry.register("double", |x: i64| x * 2).unwrap();
//! let shout = registry.register("shout", |s: String| s.to_uppercase()).unwrap();
//! let add = registry.register("add", |x: i64, y: i64| x + y).unwrap();
//! let mut dag = Dag::new();
//! let x = dag.call("x", &double, (21_i64,));
//! dag.call("loud", &shout, ("hi".to_owned(),));
//! dag.call("sum", &add, (&x, 1_i64));
//! ```
//!
//! A constant before a dependency's result does not compile (a function receives its
//! dependencies' results first):
//!
//! ```compile_fail
//! use handoff_core::{Dag, Registry};
//! let mut registry = Registry::new();
//! let double = registry.register("double", |x: i64| x * 2).unwrap();
//! let add = registry.register("add", |x: i64, y: i64| x + y).unwrap();
//! let mut dag = Dag::new();
//! let x = dag.call("x", &double, (21_i64,));
//! dag.call("sum", &add, (1_i64, &x));
//! ```
//!
//! Nor does a wrong number of arguments:
//!
//! ```compile_fail
//! use handoff_core::{Dag, Registry};
//! let mut registry = Registry::new();
//! let add = registry.register("add", |x: i64, y: i64| x + y).unwrap();
//! let mut dag = Dag::new();
//! dag.call("sum", &add, (1_i64,));
//! ```
//!
//! Nor reading a result as another type:
//!
//! ```compile_fail
//! use handoff_core::{Dag, Registry, Results};
//! let mut registry = Registry::new();
//! let double = registry.register("double", |x: i64| x * 2).unwrap();
//! let mut dag = Dag::new();
//! let x = dag.call("x", &double, (21_i64,));
//! # let results: Results = todo!();
//! let text: String = results.of(&x).unwrap();
//! ```
//!
//! Both ways of building a DAG, by name and by handle, build the same [`Dag`]: a DAG that
//! arrives from outside the program (the seeds' name-based API) runs as one built here.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;

use crate::dag::Dag;
use crate::function::Function;
use crate::ids::{CodeName, FunctionId};
use crate::value::{List, Shared};

/// The signature text of a code taking `Args` (a tuple) and returning `R`: `"(i64, i64) ->
/// i64"`, from [`std::any::type_name`]. Nodes built from the same program (the same
/// registry, the same compiler) agree on it; a node whose registry has the name with other
/// types does not.
pub fn signature_of<Args, R>() -> Arc<str> {
    format!(
        "{} -> {}",
        std::any::type_name::<Args>(),
        std::any::type_name::<R>()
    )
    .into()
}

/// A registered code's name with its signature as types: `Args` is the tuple of its
/// parameter types, `R` its result type (for a fallible code, the `Ok` type). Returned by
/// the [`Registry`](crate::Registry)'s `register` methods; used with [`Dag::call`].
pub struct CodeHandle<Args, R> {
    name: CodeName,
    types: PhantomData<fn(Args) -> R>,
}

impl<Args, R> CodeHandle<Args, R> {
    pub(crate) fn new(name: CodeName) -> Self {
        CodeHandle {
            name,
            types: PhantomData,
        }
    }

    /// The name it is registered under.
    pub fn name(&self) -> &CodeName {
        &self.name
    }

    /// Its signature as text ([`signature_of`]): what [`Code::signature`](crate::Code)
    /// says of the code registered under the name, on a node built from this program.
    pub fn signature(&self) -> Arc<str> {
        signature_of::<Args, R>()
    }
}

impl<Args, R> Clone for CodeHandle<Args, R> {
    fn clone(&self) -> Self {
        CodeHandle::new(self.name.clone())
    }
}

impl<Args, R> fmt::Debug for CodeHandle<Args, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CodeHandle({}: {} -> {})",
            self.name,
            std::any::type_name::<Args>(),
            std::any::type_name::<R>()
        )
    }
}

/// A reference to the result of a function of a DAG, of type `T`: pass it (by reference)
/// as an argument of [`Dag::call`], or read the result with
/// [`Results::of`](crate::Results::of).
pub struct FnRef<T> {
    id: FunctionId,
    types: PhantomData<fn() -> T>,
}

impl<T> FnRef<T> {
    /// A reference to the result of the function `id`, taken to be a `T` (for a DAG built
    /// by name; nothing checks the type until the result is read).
    pub fn new(id: impl Into<FunctionId>) -> Self {
        FnRef {
            id: id.into(),
            types: PhantomData,
        }
    }

    /// The function's id.
    pub fn id(&self) -> &FunctionId {
        &self.id
    }
}

impl<T> Clone for FnRef<T> {
    fn clone(&self) -> Self {
        FnRef::new(self.id.clone())
    }
}

impl<T> fmt::Debug for FnRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FnRef({}: {})", self.id, std::any::type_name::<T>())
    }
}

/// A parameter type that reads a result of type `R`: `R` itself, or [`Shared<R>`] (no
/// copy). Implemented for you.
pub trait Reads<R> {}

impl<T> Reads<T> for T {}
impl<T> Reads<T> for Shared<T> {}

/// The kind of one argument of [`Dag::call`]: a dependency's result ([`Dep`]) or a
/// constant ([`Const`]).
pub trait ArgKind {}

/// An argument that is another function's result, of type `R`.
pub struct Dep<R>(PhantomData<fn() -> R>);

/// An argument that is a constant.
pub struct Const;

impl<R> ArgKind for Dep<R> {}
impl ArgKind for Const {}

/// One argument of [`Dag::call`] for a parameter of type `P`: `&FnRef<R>` where `P` reads
/// an `R`, or a constant of type `P`. Implemented for you.
pub trait IntoArg<P, K: ArgKind> {
    /// Adds it to `function`.
    fn add_to(self, function: Function) -> Function;
}

impl<P: Reads<R>, R> IntoArg<P, Dep<R>> for &FnRef<R> {
    fn add_to(self, function: Function) -> Function {
        function.arg(self.id.clone())
    }
}

impl<P: Serialize + Send + Sync + 'static> IntoArg<P, Const> for P {
    fn add_to(self, function: Function) -> Function {
        function.extra_arg(self)
    }
}

/// The arguments of [`Dag::call`] for a code of parameters `Args`: a tuple with one
/// [`IntoArg`] per parameter, the results of other functions first, then the constants
/// (a function receives its dependencies' results before its constants). Implemented for
/// tuples of up to 8.
pub trait CallArgs<Args, Kinds> {
    /// Adds them to `function`, in order.
    fn add_to(self, function: Function) -> Function;
}

/// Kinds in the order a function receives its arguments: dependencies, then constants.
pub trait InOrder {}

macro_rules! in_order {
    ($($deps:ident),* ; $($consts:ident),*) => {
        impl<$($deps,)*> InOrder for ($(Dep<$deps>,)* $($consts,)*) {}
    };
}

macro_rules! call_args {
    ($($p:ident $x:ident $k:ident),*) => {
        impl<$($p, $x, $k: ArgKind,)*> CallArgs<($($p,)*), ($($k,)*)> for ($($x,)*)
        where
            ($($k,)*): InOrder,
            $($x: IntoArg<$p, $k>,)*
        {
            #[allow(non_snake_case, unused_mut)]
            fn add_to(self, function: Function) -> Function {
                let ($($x,)*) = self;
                let mut function = function;
                $(function = $x.add_to(function);)*
                function
            }
        }
    };
}

// Every order with the dependencies first: n + 1 of them for n arguments.
#[allow(unused_parens)]
mod orders {
    use super::{Const, Dep, InOrder};
    type C = Const;
    in_order!(;);
    in_order!(;C);
    in_order!(A;);
    in_order!(;C,C);
    in_order!(A;C);
    in_order!(A,B;);
    in_order!(;C,C,C);
    in_order!(A;C,C);
    in_order!(A,B;C);
    in_order!(A,B,D;);
    in_order!(;C,C,C,C);
    in_order!(A;C,C,C);
    in_order!(A,B;C,C);
    in_order!(A,B,D;C);
    in_order!(A,B,D,E;);
    in_order!(;C,C,C,C,C);
    in_order!(A;C,C,C,C);
    in_order!(A,B;C,C,C);
    in_order!(A,B,D;C,C);
    in_order!(A,B,D,E;C);
    in_order!(A,B,D,E,F;);
    in_order!(;C,C,C,C,C,C);
    in_order!(A;C,C,C,C,C);
    in_order!(A,B;C,C,C,C);
    in_order!(A,B,D;C,C,C);
    in_order!(A,B,D,E;C,C);
    in_order!(A,B,D,E,F;C);
    in_order!(A,B,D,E,F,G;);
    in_order!(;C,C,C,C,C,C,C);
    in_order!(A;C,C,C,C,C,C);
    in_order!(A,B;C,C,C,C,C);
    in_order!(A,B,D;C,C,C,C);
    in_order!(A,B,D,E;C,C,C);
    in_order!(A,B,D,E,F;C,C);
    in_order!(A,B,D,E,F,G;C);
    in_order!(A,B,D,E,F,G,H;);
    in_order!(;C,C,C,C,C,C,C,C);
    in_order!(A;C,C,C,C,C,C,C);
    in_order!(A,B;C,C,C,C,C,C);
    in_order!(A,B,D;C,C,C,C,C);
    in_order!(A,B,D,E;C,C,C,C);
    in_order!(A,B,D,E,F;C,C,C);
    in_order!(A,B,D,E,F,G;C,C);
    in_order!(A,B,D,E,F,G,H;C);
    in_order!(A,B,D,E,F,G,H,I;);
}

call_args!();
call_args!(P1 X1 K1);
call_args!(P1 X1 K1, P2 X2 K2);
call_args!(P1 X1 K1, P2 X2 K2, P3 X3 K3);
call_args!(P1 X1 K1, P2 X2 K2, P3 X3 K3, P4 X4 K4);
call_args!(P1 X1 K1, P2 X2 K2, P3 X3 K3, P4 X4 K4, P5 X5 K5);
call_args!(P1 X1 K1, P2 X2 K2, P3 X3 K3, P4 X4 K4, P5 X5 K5, P6 X6 K6);
call_args!(P1 X1 K1, P2 X2 K2, P3 X3 K3, P4 X4 K4, P5 X5 K5, P6 X6 K6, P7 X7 K7);
call_args!(P1 X1 K1, P2 X2 K2, P3 X3 K3, P4 X4 K4, P5 X5 K5, P6 X6 K6, P7 X7 K7, P8 X8 K8);

/// A parameter that receives many results of type `T` as one list (an as-list function):
/// `Vec<T>`, [`List<T>`] or `List<Shared<T>>`. Implemented for you.
pub trait ListOf<T> {}

impl<T> ListOf<T> for Vec<T> {}
impl<T> ListOf<T> for List<T> {}
impl<T> ListOf<T> for List<Shared<T>> {}

/// A function to add to a DAG with [`Dag::add`]: a call of a typed code, whose result is
/// an `R`. Set its cost, placement or retries with [`with`](Self::with) (any [`Function`]
/// builder method) or the shortcuts.
#[must_use = "a call does nothing until added to a DAG with `Dag::add`"]
pub struct Call<R> {
    function: Function,
    types: PhantomData<fn() -> R>,
}

impl<R> Call<R> {
    /// A call of `code` on `args` (see [`Dag::call`]).
    pub fn new<Args, Kinds>(
        id: impl Into<FunctionId>,
        code: &CodeHandle<Args, R>,
        args: impl CallArgs<Args, Kinds>,
    ) -> Self {
        Call {
            function: args
                .add_to(Function::new(id, code.name().clone()))
                .with_signature(code.signature()),
            types: PhantomData,
        }
    }

    /// A call of `code`, whose one parameter takes a list, on the results `items` (an
    /// as-list function, e.g. a sum of many results).
    pub fn list<'a, P, T: 'a>(
        id: impl Into<FunctionId>,
        code: &CodeHandle<(P,), R>,
        items: impl IntoIterator<Item = &'a FnRef<T>>,
    ) -> Self
    where
        P: ListOf<T>,
    {
        Call {
            function: Function::new(id, code.name().clone())
                .args(items.into_iter().map(|item| item.id.clone()))
                .as_list()
                .with_signature(code.signature()),
            types: PhantomData,
        }
    }

    /// The function with `set` applied: any [`Function`] builder method, e.g.
    /// `.with(|f| f.with_cost(Resources::new().cpu(1)).max_retries(0))`.
    pub fn with(mut self, set: impl FnOnce(Function) -> Function) -> Self {
        self.function = set(self.function);
        self
    }

    /// Sets its cost ([`Function::with_cost`]).
    pub fn with_cost(self, cost: crate::Resources) -> Self {
        self.with(|f| f.with_cost(cost))
    }

    /// Pins it to a node ([`Function::pinned`]).
    pub fn pinned(self, node: impl Into<crate::NodeId>) -> Self {
        self.with(|f| f.pinned(node))
    }

    /// The function it adds.
    pub fn function(&self) -> &Function {
        &self.function
    }
}

impl Dag {
    /// Adds a call of a typed code and returns a reference to its result.
    pub fn add<R>(&mut self, call: Call<R>) -> FnRef<R> {
        let id = call.function.id().clone();
        self.add_function(call.function);
        FnRef::new(id)
    }

    /// Adds a function `id` running `code` on `args` and returns a reference to its
    /// result: `args` is a tuple with one argument per parameter of `code`, the results
    /// of other functions (`&FnRef<T>`, where the parameter reads a `T`) first, then
    /// constants of the parameters' types.
    ///
    /// ```
    /// use handoff_core::{Dag, Registry};
    /// let mut registry = Registry::new();
    /// let double = registry.register("double", |x: i64| x * 2)?;
    /// let add = registry.register("add", |x: i64, y: i64| x + y)?;
    /// let mut dag = Dag::new();
    /// let x = dag.call("x", &double, (21_i64,));
    /// let y = dag.call("y", &add, (&x, 8_i64)); // x's result, then a constant
    /// let z = dag.call("z", &add, (&x, &y));
    /// assert_eq!(z.id().as_str(), "z");
    /// let dag = dag.validate()?;
    /// assert_eq!(dag.function(dag.index_of("y").unwrap()).arg_ids(), [x.id().clone()]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn call<Args, R, Kinds>(
        &mut self,
        id: impl Into<FunctionId>,
        code: &CodeHandle<Args, R>,
        args: impl CallArgs<Args, Kinds>,
    ) -> FnRef<R> {
        self.add(Call::new(id, code, args))
    }
}
