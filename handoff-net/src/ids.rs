//! Node identity: a node's [`NodeId`] is its libp2p `PeerId` in base58.

use std::fmt;

use handoff_core::NodeId;
use libp2p::PeerId;
use libp2p::request_response::OutboundRequestId;

/// The [`NodeId`] of the node with this `PeerId`: the `PeerId` in base58.
pub fn node_id_of(peer: &PeerId) -> NodeId {
    NodeId::new(peer.to_base58())
}

/// The `PeerId` a [`NodeId`] names.
pub fn peer_id_of(node: &NodeId) -> Result<PeerId, InvalidNodeId> {
    node.as_str()
        .parse()
        .map_err(|_| InvalidNodeId { node: node.clone() })
}

/// A [`NodeId`] that is not the base58 form of a libp2p `PeerId`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node id `{node}` is not a libp2p peer id in base58")]
pub struct InvalidNodeId {
    /// The id.
    pub node: NodeId,
}

/// Identifies one outbound request of this node; failures echo it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(OutboundRequestId);

impl RequestId {
    pub(crate) fn new(id: OutboundRequestId) -> Self {
        RequestId(id)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request#{}", self.0)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_round_trip_through_peer_ids() {
        let peer = PeerId::random();
        let node = node_id_of(&peer);
        assert_eq!(peer_id_of(&node), Ok(peer));
        assert_eq!(
            peer_id_of(&NodeId::new("worker-1")),
            Err(InvalidNodeId {
                node: NodeId::new("worker-1")
            })
        );
    }
}
