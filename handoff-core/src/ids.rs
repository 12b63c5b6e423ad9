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
    /// # mod handoff { pub use handoff_core::*; }
    /// use handoff::{DagId, FunctionId};
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
    /// A fresh id that nobody can guess: `dag-` and 128 random bits from the operating
    /// system's generator (so a peer that saw other ids cannot derive this one).
    pub fn generate() -> Self {
        Self(format!("dag-{:032x}", random_u128()).into())
    }
}

/// 128 bits from the operating system's random generator. Should it fail (it does not
/// on the platforms Rust supports), the bits come from a randomly keyed SipHash of a
/// counter, the time and the process id: unique, if not secret.
pub fn random_u128() -> u128 {
    let mut bytes = [0_u8; 16];
    if getrandom::fill(&mut bytes).is_ok() {
        return u128::from_le_bytes(bytes);
    }
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let half = |salt: u64| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(salt);
        hasher.write_u64(n);
        hasher.write_u128(now);
        hasher.write_u32(std::process::id());
        hasher.finish()
    };
    (u128::from(half(1)) << 64) | u128::from(half(2))
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
        // 128 random bits, not a process prefix and a counter a peer could guess.
        let hex = a.as_str().trim_start_matches("dag-");
        assert_eq!(hex.len(), 32, "{a}");
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        let (x, y) = (a.as_str(), b.as_str());
        let shared = x.chars().zip(y.chars()).take_while(|(p, q)| p == q).count();
        assert!(shared < 4 + 12, "{x} and {y} share a prefix of {shared}");
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
