//! One error type per operation of the network layer.

use std::io;

use handoff_core::{DagId, FunctionId, NodeId};
use libp2p::{Multiaddr, TransportError};

use crate::ids::RequestId;
use crate::protocol::RpcError;

/// Why [`start`](crate::start) failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The Noise configuration could not be made from the node's key pair.
    #[error("noise configuration: {source}")]
    Noise {
        /// What libp2p said.
        #[source]
        source: libp2p::noise::Error,
    },
    /// Gossipsub refused its configuration or the announcement topic.
    #[error("gossipsub: {reason}")]
    Gossip {
        /// What gossipsub said.
        reason: String,
    },
    /// mDNS could not start.
    #[cfg(feature = "mdns")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mdns")))]
    #[error("mdns: {source}")]
    Mdns {
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// Another process (or node) already listens on the address's port. (libp2p's TCP
    /// transport may share a port with `SO_REUSEPORT`, so a second node would start and
    /// take some of the first one's connections.)
    #[error("cannot listen on {address}: the address is in use (another node runs there?)")]
    AddressInUse {
        /// The address.
        address: Multiaddr,
    },
    /// A listen address was refused.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: Multiaddr,
        /// What the transport said.
        #[source]
        source: TransportError<io::Error>,
    },
    /// A listener failed before reporting an address.
    #[error("listener on {address} failed: {source}")]
    ListenerFailed {
        /// The address.
        address: Multiaddr,
        /// What the transport said.
        #[source]
        source: io::Error,
    },
    /// A listener reported no address in time.
    #[error("listener on {address} reported no address within {seconds} s")]
    ListenerTimeout {
        /// The address.
        address: Multiaddr,
        /// The wait.
        seconds: u64,
    },
}

/// Why a [`Client`](crate::Client) call failed: the event loop has stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The event loop has stopped (shut down, or every client dropped).
    #[error("the network event loop has stopped")]
    Stopped,
}

/// Why [`Client::dial`](crate::Client::dial) failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The TCP connection was made but the handshake failed or timed out: with pnet, this is
    /// what a different cluster key looks like (or a peer that is not a Handoff node).
    #[error(
        "connection to {address} failed during the handshake: likely cluster key mismatch (ours has fingerprint {fingerprint}: compare the peer's), or a peer that is not a Handoff node"
    )]
    Handshake {
        /// The address.
        address: Multiaddr,
        /// Our key's fingerprint (`none` for an insecure node), to compare with the peer's.
        fingerprint: String,
        /// What libp2p said.
        #[source]
        source: libp2p::swarm::DialError,
    },
    /// Nothing answered at the address (refused, unreachable).
    #[error("cannot reach {address}: nothing answered there (refused or unreachable)")]
    Unreachable {
        /// The address.
        address: Multiaddr,
        /// What libp2p said.
        #[source]
        source: libp2p::swarm::DialError,
    },
    /// Any other failure (unsupported address, the node itself, …).
    #[error("dial of {address} failed: {source}")]
    Other {
        /// The address.
        address: Multiaddr,
        /// What libp2p said.
        #[source]
        source: libp2p::swarm::DialError,
    },
    /// The event loop has stopped.
    #[error("the network event loop has stopped")]
    Stopped,
}

/// Why [`Client::announce`](crate::Client::announce) failed.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// The announcement exceeds the configured maximum.
    #[error("announcement of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Its encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The announcement could not be encoded.
    #[error("announcement could not be encoded: {source}")]
    Encode {
        /// What the encoder said.
        #[source]
        source: rmp_serde::encode::Error,
    },
    /// The event loop has stopped.
    #[error("the network event loop has stopped")]
    Stopped,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The node id does not name a libp2p peer.
    #[error("node id `{node}` is not a libp2p peer id")]
    InvalidNode {
        /// The id.
        node: NodeId,
    },
    /// The request was addressed to this node itself.
    #[error("node {node} is this node: requests go to other nodes")]
    LocalNode {
        /// The id.
        node: NodeId,
    },
    /// The node speaks another protocol version.
    #[error("node {node} refused: protocol version mismatch (ours `{ours}`, theirs `{theirs}`)")]
    Refused {
        /// The node.
        node: NodeId,
        /// Our version.
        ours: String,
        /// Theirs.
        theirs: String,
    },
    /// The cap on requests in flight to this node is reached; retry when some complete.
    #[error("{limit} requests already in flight to node {node}")]
    TooManyInFlight {
        /// The node.
        node: NodeId,
        /// The cap.
        limit: usize,
    },
    /// No connection to the node could be opened.
    #[error("{request} to node {node}: could not connect")]
    DialFailure {
        /// The node.
        node: NodeId,
        /// The request.
        request: RequestId,
    },
    /// No response within the request timeout (the node may have processed the request).
    #[error("{request} to node {node}: timed out")]
    Timeout {
        /// The node.
        node: NodeId,
        /// The request.
        request: RequestId,
    },
    /// The connection closed before the response came (the node may have processed the
    /// request).
    #[error("{request} to node {node}: connection closed before the response")]
    ConnectionClosed {
        /// The node.
        node: NodeId,
        /// The request.
        request: RequestId,
    },
    /// The node does not speak the RPC protocol.
    #[error(
        "{request} to node {node}: the node does not speak {}",
        crate::RPC_PROTOCOL
    )]
    UnsupportedProtocol {
        /// The node.
        node: NodeId,
        /// The request.
        request: RequestId,
    },
    /// The stream failed: among other causes, a frame over a size limit
    /// ([`FrameError::of`](crate::FrameError::of) on the source finds it).
    #[error("{request} to node {node}: {source}")]
    Io {
        /// The node.
        node: NodeId,
        /// The request.
        request: RequestId,
        /// What the stream said.
        #[source]
        source: io::Error,
    },
    /// The node answered with an error.
    #[error("node {node} answered: {error}")]
    Remote {
        /// The node.
        node: NodeId,
        /// Its error.
        #[source]
        error: RpcError,
    },
    /// The node answered with a response of the wrong kind.
    #[error("node {node} answered {got} where {expected} was expected")]
    UnexpectedResponse {
        /// The node.
        node: NodeId,
        /// The kind expected.
        expected: &'static str,
        /// The kind received.
        got: &'static str,
    },
    /// The event loop has stopped.
    #[error("the network event loop has stopped")]
    Stopped,
}

/// Why [`Client::fetch_value`](crate::Client::fetch_value) failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// A chunk request failed.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The value is larger than this node accepts.
    #[error(
        "value `{function}` of DAG `{dag}` on node {node} has {total_len} bytes; the maximum is {max}"
    )]
    TooLarge {
        /// The node.
        node: NodeId,
        /// The DAG.
        dag: DagId,
        /// The function.
        function: FunctionId,
        /// The value's size.
        total_len: u64,
        /// The limit.
        max: u64,
    },
    /// A chunk does not fit with the others.
    #[error(
        "node {node} sent a bad chunk of `{function}` (DAG `{dag}`): offset {offset} (expected {expected_offset}), {len} bytes (expected {expected_len}), total {total_len} (expected {expected_total})"
    )]
    BadChunk {
        /// The node.
        node: NodeId,
        /// The DAG.
        dag: DagId,
        /// The function.
        function: FunctionId,
        /// The offset asked for.
        expected_offset: u64,
        /// The offset received.
        offset: u64,
        /// The length expected.
        expected_len: u64,
        /// The length received.
        len: u64,
        /// The total length announced by the first chunk.
        expected_total: u64,
        /// The total length in this chunk.
        total_len: u64,
    },
}

/// Why [`Client::respond`](crate::Client::respond) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespondError {
    /// The request can no longer be answered: it timed out, or its connection closed.
    #[error("the request from node {node} can no longer be answered (timed out or disconnected)")]
    ChannelClosed {
        /// The requester.
        node: NodeId,
    },
    /// The event loop has stopped.
    #[error("the network event loop has stopped")]
    Stopped,
}
