//! Resource trackers: who has how much, and all-or-nothing reservations.

use std::collections::HashMap;

use crate::ids::{NodeId, ResourceName};
use crate::resources::{Amount, Resources};

/// Why a capacity could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterNodeError {
    /// An amount is negative or invalid.
    #[error(
        "node `{node}` registers {amount} of `{resource}`; amounts must be finite and not negative"
    )]
    InvalidCapacity {
        /// The node.
        node: NodeId,
        /// The resource.
        resource: ResourceName,
        /// The amount given.
        amount: Amount,
    },
}

/// Why a reservation was refused. Nothing was reserved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The node is not registered.
    #[error("node `{node}` is not registered")]
    UnknownNode {
        /// The node.
        node: NodeId,
    },
    /// The node lacks some of the resources right now.
    #[error("node `{node}` lacks {missing} right now")]
    Unavailable {
        /// The node.
        node: NodeId,
        /// What is missing.
        missing: Resources,
    },
    /// The cost has a negative or invalid amount.
    #[error("cannot reserve {amount} of `{resource}`")]
    InvalidAmount {
        /// The resource.
        resource: ResourceName,
        /// The amount.
        amount: Amount,
    },
}

/// Why a release was refused or trimmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    /// The node is not registered.
    #[error("node `{node}` is not registered")]
    UnknownNode {
        /// The node.
        node: NodeId,
    },
    /// An amount released is negative, not a finite number or above [`Amount::MAX`]:
    /// nothing was released.
    #[error(
        "node `{node}` was asked to release {amount} of `{resource}`, which is not a valid amount"
    )]
    InvalidAmount {
        /// The node.
        node: NodeId,
        /// The resource.
        resource: ResourceName,
        /// The amount.
        amount: Amount,
    },
    /// More was released than was reserved; availability was capped at capacity.
    #[error("node `{node}` released {excess} more than it had reserved")]
    MoreThanReserved {
        /// The node.
        node: NodeId,
        /// The excess that was ignored.
        excess: Resources,
    },
}

/// Tracks the capacity and the reservations of nodes.
///
/// Implement it to plug in your own accounting (a quota service, a persistent store).
/// Implementations must be all-or-nothing in [`request`](Self::request) and must never
/// let availability rise above capacity in [`release`](Self::release).
pub trait ResourceTracker: Send + 'static {
    /// Registers (or updates) a node's capacity. Updating keeps current reservations.
    fn register(&mut self, node: NodeId, capabilities: Resources) -> Result<(), RegisterNodeError>;
    /// The node's registered capacity.
    fn capabilities(&self, node: &NodeId) -> Option<Resources>;
    /// What the node has free right now.
    fn available(&self, node: &NodeId) -> Option<Resources>;
    /// Reserves `cost` on the node, entirely or not at all.
    fn request(&mut self, node: &NodeId, cost: &Resources) -> Result<(), RequestError>;
    /// Gives back a reservation.
    fn release(&mut self, node: &NodeId, cost: &Resources) -> Result<(), ReleaseError>;
    /// The registered nodes.
    fn nodes(&self) -> Vec<NodeId>;

    /// True when the node could reserve `cost` right now.
    fn resources_available(&self, node: &NodeId, cost: &Resources) -> bool {
        self.available(node).is_some_and(|a| cost.fits_in(&a))
    }
}

#[derive(Debug, Clone)]
struct NodeState {
    capacity: Resources,
    used: Resources,
}

/// The built-in in-memory tracker.
///
/// ```
/// # mod handoff { pub use handoff_core::*; }
/// use handoff::{NodeId, Resources, ResourceTracker, SimpleResourceTracker};
/// let mut t = SimpleResourceTracker::new();
/// let n = NodeId::new("n1");
/// t.register(n.clone(), Resources::new().cpu(4).memory(8000))?;
/// t.request(&n, &Resources::new().cpu(2.5))?;
/// assert_eq!(t.available(&n).map(|a| a.get("cpu").to_string()), Some("1.5".into()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct SimpleResourceTracker {
    nodes: HashMap<NodeId, NodeState>,
}

impl SimpleResourceTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ResourceTracker for SimpleResourceTracker {
    fn register(&mut self, node: NodeId, capabilities: Resources) -> Result<(), RegisterNodeError> {
        if let Some((resource, amount)) = capabilities.first_invalid() {
            return Err(RegisterNodeError::InvalidCapacity {
                node,
                resource: resource.clone(),
                amount,
            });
        }
        self.nodes
            .entry(node)
            .and_modify(|s| s.capacity = capabilities.clone())
            .or_insert(NodeState {
                capacity: capabilities,
                used: Resources::new(),
            });
        Ok(())
    }

    fn capabilities(&self, node: &NodeId) -> Option<Resources> {
        self.nodes.get(node).map(|s| s.capacity.clone())
    }

    fn available(&self, node: &NodeId) -> Option<Resources> {
        self.nodes
            .get(node)
            .map(|s| s.capacity.saturating_sub(&s.used))
    }

    fn request(&mut self, node: &NodeId, cost: &Resources) -> Result<(), RequestError> {
        if let Some((resource, amount)) = cost.first_invalid() {
            return Err(RequestError::InvalidAmount {
                resource: resource.clone(),
                amount,
            });
        }
        let state = self
            .nodes
            .get_mut(node)
            .ok_or_else(|| RequestError::UnknownNode { node: node.clone() })?;
        let available = state.capacity.saturating_sub(&state.used);
        if !cost.fits_in(&available) {
            return Err(RequestError::Unavailable {
                node: node.clone(),
                missing: cost.shortfall(&available),
            });
        }
        match state.used.checked_add(cost) {
            Some(used) => {
                state.used = used;
                Ok(())
            }
            None => Err(RequestError::Unavailable {
                node: node.clone(),
                missing: cost.clone(),
            }),
        }
    }

    fn release(&mut self, node: &NodeId, cost: &Resources) -> Result<(), ReleaseError> {
        let state = self
            .nodes
            .get_mut(node)
            .ok_or_else(|| ReleaseError::UnknownNode { node: node.clone() })?;
        if let Some((resource, amount)) = cost.first_invalid() {
            return Err(ReleaseError::InvalidAmount {
                node: node.clone(),
                resource: resource.clone(),
                amount,
            });
        }
        let excess = cost.shortfall(&state.used);
        state.used = state.used.saturating_sub(cost);
        if excess.is_empty() {
            Ok(())
        } else {
            Err(ReleaseError::MoreThanReserved {
                node: node.clone(),
                excess,
            })
        }
    }

    fn nodes(&self) -> Vec<NodeId> {
        let mut nodes: Vec<_> = self.nodes.keys().cloned().collect();
        nodes.sort();
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_all_or_nothing() {
        let mut t = SimpleResourceTracker::new();
        let n = NodeId::new("n");
        t.register(n.clone(), Resources::new().cpu(2).memory(100))
            .expect("register");
        let err = t
            .request(&n, &Resources::new().cpu(1).memory(200))
            .expect_err("too much memory");
        assert_eq!(
            err,
            RequestError::Unavailable {
                node: n.clone(),
                missing: Resources::new().memory(100)
            }
        );
        assert_eq!(t.available(&n), Some(Resources::new().cpu(2).memory(100)));
    }

    #[test]
    fn release_never_rises_above_capacity() {
        let mut t = SimpleResourceTracker::new();
        let n = NodeId::new("n");
        t.register(n.clone(), Resources::new().cpu(2))
            .expect("register");
        t.request(&n, &Resources::new().cpu(1)).expect("fits");
        assert!(matches!(
            t.release(&n, &Resources::new().cpu(3)),
            Err(ReleaseError::MoreThanReserved { .. })
        ));
        assert_eq!(t.available(&n), Some(Resources::new().cpu(2)));
    }

    #[test]
    fn re_registering_keeps_reservations() {
        let mut t = SimpleResourceTracker::new();
        let n = NodeId::new("n");
        t.register(n.clone(), Resources::new().cpu(2))
            .expect("register");
        t.request(&n, &Resources::new().cpu(1)).expect("fits");
        t.register(n.clone(), Resources::new().cpu(4))
            .expect("register");
        assert_eq!(t.available(&n), Some(Resources::new().cpu(3)));
    }
}
