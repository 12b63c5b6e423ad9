//! The network layer of a Handoff cluster.
//!
//! - **Transport.** TCP, then the cluster's pre-shared key (libp2p `pnet`), then Noise and
//!   yamux. A node without the same [`ClusterKey`] cannot open a connection; running
//!   without a key is the explicit [`Security::Insecure`] choice. A wrong key shows up only
//!   as a handshake timeout, so the connection timeout is short (3 s by default) and such
//!   failures are logged as a likely key mismatch, with the key fingerprint.
//! - **Identity.** A node's [`NodeId`](handoff_core::NodeId) is its libp2p `PeerId` in
//!   base58 ([`node_id_of`]); its human-readable name travels in its announcements.
//! - **Versions.** Peers exchange their [`PROTOCOL_VERSION`] through identify (and
//!   [`Request::Hello`]); a peer with another version is refused and disconnected
//!   ([`NetEvent::PeerRefused`]).
//! - **Discovery.** Bootstrap addresses are dialed at start. Each node announces its
//!   [`NodeState`] (capabilities, free resources, code names) on a signed, validated
//!   gossipsub topic on start, on change ([`Client::announce`]) and periodically; nodes
//!   dial the peers they learn of, and keep a table of live peers ([`Client::peers`]).
//! - **Requests.** The request-response protocol [`RPC_PROTOCOL`] carries [`Request`] and
//!   [`Response`] in length-prefixed MessagePack frames, with size limits checked before
//!   allocation ([`Codec`], [`FrameError`]) and a cap on requests in flight per peer. Large
//!   values are fetched in bounded chunks ([`Client::fetch_value`]).
//!
//! [`ClusterNode`] puts a node's actors (`handoff-actors`) and its network layer together:
//! peers it learns of are registered with its resource manager, and it answers requests
//! from its actors.
//!
//! One tokio task owns the libp2p `Swarm`; the cloneable [`Client`] talks to it with
//! bounded commands and oneshot replies, and the task delivers [`NetEvent`]s on a bounded
//! channel.
//!
//! ```no_run
//! use handoff_net::{ClusterKey, Config, NetEvent, NodeState, Request};
//! use handoff_core::Resources;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::builder(ClusterKey::from_default_env()?)
//!     .name("worker-1")
//!     .listen_on("/ip4/0.0.0.0/tcp/7000".parse()?)
//!     .bootstrap("/ip4/10.0.0.1/tcp/7000".parse()?)
//!     .state(NodeState::new(Resources::new().cpu(8)).with_code_names(["resize"]))
//!     .build()?;
//! let (client, mut events) = handoff_net::start(config).await?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         NetEvent::InboundRequest { request: Request::Fetch(fetch), channel, .. } => {
//!             let encoded = bytes::Bytes::new(); // the stored value's MessagePack form
//!             let max_response = handoff_net::DEFAULT_MAX_RESPONSE_BYTES;
//!             client.respond(channel, fetch.answer_within(&encoded, max_response)).await?;
//!         }
//!         NetEvent::PeerAnnounced(announcement) => println!("{} is up", announcement.name),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

mod announce;
mod client;
mod cluster_node;
mod codec;
mod config;
mod error;
mod event_loop;
mod ids;
mod key;
mod peers;
mod protocol;
mod swarm;
mod transport;

pub use announce::{Announcement, AnnouncementError, NodeState};
pub use client::{
    Client, GoneReason, HandshakeFailures, Hello, NetEvent, Refusal, ResponseChannel,
};
pub use cluster_node::{
    ClusterNode, ClusterStartError, DiscoverError, DiscoveredNode, DrainError, Drained,
    GetValueError, RegisterCapacityError, ResourcesQueryError,
};
pub use codec::{Codec, Direction, FrameError};
pub use config::{
    CHUNK_OVERHEAD_BYTES, Config, ConfigBuilder, ConfigError, DEFAULT_ANNOUNCE_INTERVAL,
    DEFAULT_COMMAND_CAPACITY, DEFAULT_CONNECTION_TIMEOUT, DEFAULT_EVENT_CAPACITY,
    DEFAULT_FETCH_CHUNK_BYTES, DEFAULT_FETCH_WINDOW, DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_IDLE_CONNECTION_TIMEOUT, DEFAULT_MAX_ANNOUNCEMENT_BYTES,
    DEFAULT_MAX_IN_FLIGHT_PER_PEER, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_VALUE_BYTES, DEFAULT_REQUEST_TIMEOUT, MAX_IN_FLIGHT_PER_PEER,
};
pub use error::{
    AnnounceError, ClientError, DialError, FetchError, RequestError, RespondError, StartError,
};
pub use event_loop::start;
/// The stream-stage types that travel in [`Request::StageRun`] and [`Response::StageRan`].
pub use handoff_actors::{StageAnswer, StageItem, StageKey, StageSpec};
pub use ids::{InvalidNodeId, RequestId, node_id_of, peer_id_of};
pub use key::{
    CLUSTER_KEY_ENV, ClusterKey, ClusterKeyError, KeyFingerprint, KeyFormatError, Security,
};
pub use protocol::{
    ArgumentSource, Chunk, ExecuteAnswer, ExecuteRequest, FetchRequest, FinishedReport, NodeStats,
    Outcome, PROTOCOL_VERSION, RPC_PROTOCOL, Request, RequestKind, Response, RpcError,
    StageRunRequest,
};
pub use transport::{INLINE_RESULT_BYTES, TransferStats};

/// The libp2p types that appear in this crate's API.
pub use libp2p::{Multiaddr, PeerId, identity::Keypair};
