//! Newtype identifiers. Each id is a cheaply clonable, string-backed value that
//! serializes as a plain string; two kinds of id never mix.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Creates the id from any string.
            pub fn new(id: impl Into<Arc<str>>) -> Self {
                Self(id.into())
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.into())
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id.into())
            }
        }

        impl From<&$name> for $name {
            fn from(id: &$name) -> Self {
                id.clone()
            }
        }
    };
}

string_id!(
    /// Identifies one DAG and, through it, the namespace of its values on every node.
    ///
    /// Ids of different kinds do not mix:
    ///
    /// ```compile_fail
    /// use handoff_core::{DagId, FunctionId};
    /// let dag: DagId = DagId::new("d");
    /// let f: FunctionId = dag; // a DagId is not a FunctionId
    /// ```
    DagId
);
string_id!(
    /// Identifies a function inside its DAG, and the value it produces.
    FunctionId
);
string_id!(
    /// Identifies a node of the cluster.
    NodeId
);
string_id!(
    /// Names a resource: `cpu`, `memory` (MB), `gpu`, or any custom name.
    ResourceName
);
string_id!(
    /// Names a function in a [`Registry`](crate::Registry): the code a [`Function`](crate::Function) runs.
    CodeName
);

impl DagId {
    /// A fresh id, unique within this process and very likely across processes:
    /// a per-process random prefix followed by a counter.
    pub fn generate() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let prefix = *PREFIX.get_or_init(|| {
            use std::hash::{BuildHasher, Hasher};
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u32(std::process::id());
            hasher.finish()
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self(format!("dag-{prefix:016x}-{n}").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_dag_ids_are_distinct() {
        let a = DagId::generate();
        let b = DagId::generate();
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("dag-"));
    }

    #[test]
    fn ids_serialize_as_plain_strings() {
        let id = FunctionId::new("source");
        let bytes = rmp_serde::to_vec(&id).expect("encode");
        let s: String = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(s, "source");
        let back: FunctionId = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(back, id);
    }

    #[test]
    fn ids_are_looked_up_by_str() {
        let mut map = std::collections::HashMap::new();
        map.insert(FunctionId::new("a"), 1);
        assert_eq!(map.get("a"), Some(&1));
    }
}
