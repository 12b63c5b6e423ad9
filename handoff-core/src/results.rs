//! The results of an execution, with typed access.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use crate::dag::ValidatedDag;
use crate::ids::{FunctionId, NodeId};
use crate::value::{Value, ValueError};

/// Why a result could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultError {
    /// The id is not a function of the DAG, or the function is inline (never stored).
    #[error("`{id}` has no result in this execution")]
    Missing {
        /// The id asked for.
        id: FunctionId,
    },
    /// The result is not of the type asked for.
    #[error("the result of `{id}`: {source}")]
    Value {
        /// The id asked for.
        id: FunctionId,
        /// Why it could not be read.
        #[source]
        source: ValueError,
    },
}

/// Every regular function's result and the node it ran on. Two `Results` are equal when
/// they belong to the same DAG id and hold the very same values (same allocations) on
/// the same nodes.
///
/// Indexing goes through the DAG's own index, so building this costs nothing per function.
#[derive(Debug, Clone)]
pub struct Results {
    dag: ValidatedDag,
    values: Vec<Option<Value>>,
    nodes: Vec<Option<NodeId>>,
}

impl Results {
    /// Results for `dag`: `values[i]` and `nodes[i]` belong to `dag.function(i)`.
    pub fn new(dag: ValidatedDag, values: Vec<Option<Value>>, nodes: Vec<Option<NodeId>>) -> Self {
        Results { dag, values, nodes }
    }

    /// The result of the function `f` refers to, as its type (see
    /// [`Dag::call`](crate::Dag::call)): no type to name again.
    ///
    /// ```
    /// use handoff_core::{Dag, Registry, Results, Value};
    /// let mut registry = Registry::new();
    /// let double = registry.register("double", |x: i64| x * 2)?;
    /// let mut dag = Dag::new();
    /// let x = dag.call("x", &double, (21_i64,));
    /// let dag = dag.validate()?;
    /// let results = Results::new(dag, vec![Some(Value::new(42_i64))], vec![None]);
    /// let answer: i64 = results.of(&x)?;
    /// assert_eq!(answer, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn of<T: DeserializeOwned + Clone + 'static>(
        &self,
        f: &crate::FnRef<T>,
    ) -> Result<T, ResultError> {
        self.get(f.id().as_str())
    }

    /// The result of a function, as a `T` (see [`Value::get`]).
    pub fn get<T: DeserializeOwned + Clone + 'static>(&self, id: &str) -> Result<T, ResultError> {
        self.value(id)
            .ok_or_else(|| ResultError::Missing {
                id: FunctionId::new(id),
            })?
            .get()
            .map_err(|source| ResultError::Value {
                id: FunctionId::new(id),
                source,
            })
    }

    /// The result of a function, untyped.
    pub fn value(&self, id: &str) -> Option<&Value> {
        self.dag.index_of(id).and_then(|i| self.values[i].as_ref())
    }

    /// The node a function ran on.
    pub fn node(&self, id: &str) -> Option<&NodeId> {
        self.dag.index_of(id).and_then(|i| self.nodes[i].as_ref())
    }

    /// The number of results.
    pub fn len(&self) -> usize {
        self.values.iter().filter(|v| v.is_some()).count()
    }

    /// True when there is no result.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every result, in topological order.
    pub fn iter(&self) -> impl Iterator<Item = (&FunctionId, &Value)> {
        self.dag
            .functions()
            .iter()
            .zip(&self.values)
            .filter_map(|(f, v)| v.as_ref().map(|v| (f.id(), v)))
    }

    /// Where each regular function ran.
    pub fn allocations(&self) -> BTreeMap<FunctionId, NodeId> {
        self.dag
            .functions()
            .iter()
            .zip(&self.nodes)
            .filter_map(|(f, n)| n.as_ref().map(|n| (f.id().clone(), n.clone())))
            .collect()
    }

    /// The DAG these results belong to.
    pub fn dag(&self) -> &ValidatedDag {
        &self.dag
    }
}

impl PartialEq for Results {
    fn eq(&self, other: &Self) -> bool {
        self.dag.id() == other.dag.id()
            && self.nodes == other.nodes
            && self.values.len() == other.values.len()
            && self
                .values
                .iter()
                .zip(&other.values)
                .all(|(a, b)| match (a, b) {
                    (Some(a), Some(b)) => a.ptr_eq(b),
                    (None, None) => true,
                    _ => false,
                })
    }
}

impl Eq for Results {}
