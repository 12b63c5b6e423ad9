//! The configuration of a node's network layer, validated once by its builder.

use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::identity::Keypair;

use crate::announce::NodeState;
use crate::key::Security;
use crate::protocol::PROTOCOL_VERSION;

/// Default for [`ConfigBuilder::max_request_bytes`]: 1 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: u32 = 1 << 20;
/// Default for [`ConfigBuilder::max_response_bytes`]: 16 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: u32 = 16 << 20;
/// Default for [`ConfigBuilder::fetch_chunk_bytes`]: 4 MiB.
pub const DEFAULT_FETCH_CHUNK_BYTES: u32 = 4 << 20;
/// Default for [`ConfigBuilder::max_value_bytes`]: 4 GiB.
pub const DEFAULT_MAX_VALUE_BYTES: u64 = 4 << 30;
/// Default for [`ConfigBuilder::max_announcement_bytes`]: 64 KiB.
pub const DEFAULT_MAX_ANNOUNCEMENT_BYTES: usize = 64 << 10;
/// Default for [`ConfigBuilder::max_in_flight_per_peer`]: 128 outbound requests.
pub const DEFAULT_MAX_IN_FLIGHT_PER_PEER: usize = 128;
/// The largest allowed [`ConfigBuilder::max_in_flight_per_peer`]. Each connection allows
/// `2 × cap + 16` request-response streams (requests both ways, plus room), which stays
/// below yamux's hard limit of 512 streams per connection: going over it closes the
/// whole connection.
pub const MAX_IN_FLIGHT_PER_PEER: usize = 240;
/// Default for [`ConfigBuilder::fetch_window`]: chunk requests in flight per fetch.
pub const DEFAULT_FETCH_WINDOW: usize = 4;
/// Default for [`ConfigBuilder::connection_timeout`]: 3 s (libp2p's is 10 s; a wrong cluster
/// key shows only as this timeout, so it is kept short).
pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3);
/// Default for [`ConfigBuilder::request_timeout`]: 10 s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`ConfigBuilder::idle_connection_timeout`]: 60 s.
pub const DEFAULT_IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for [`ConfigBuilder::announce_interval`]: 2 s (so that a silent node is gone
/// after the default time-to-live of 6 s).
pub const DEFAULT_ANNOUNCE_INTERVAL: Duration = Duration::from_secs(2);
/// Default for [`ConfigBuilder::heartbeat_interval`] (gossipsub's): 1 s.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Default for [`ConfigBuilder::event_capacity`].
pub const DEFAULT_EVENT_CAPACITY: usize = 1024;
/// Default for [`ConfigBuilder::command_capacity`].
pub const DEFAULT_COMMAND_CAPACITY: usize = 256;
/// Room left in a response frame for a [`Chunk`](crate::Chunk)'s fields other than its bytes.
pub const CHUNK_OVERHEAD_BYTES: u32 = 64 << 10;

/// The network configuration of one node. Build it with [`Config::builder`].
///
/// ```
/// use handoff_net::{ClusterKey, Config, NodeState};
/// use handoff_core::Resources;
///
/// let config = Config::builder(ClusterKey::generate())
///     .name("worker-1")
///     .listen_on("/ip4/127.0.0.1/tcp/0".parse()?)
///     .state(NodeState::new(Resources::new().cpu(4)).with_code_names(["double"]))
///     .build()?;
/// assert_eq!(config.name(), "worker-1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) security: Security,
    pub(crate) name: String,
    pub(crate) keypair: Keypair,
    pub(crate) listen: Vec<Multiaddr>,
    pub(crate) bootstrap: Vec<Multiaddr>,
    pub(crate) state: NodeState,
    pub(crate) cluster_name: String,
    pub(crate) protocol_version: String,
    pub(crate) announce_interval: Duration,
    pub(crate) peer_ttl: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) connection_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) idle_connection_timeout: Duration,
    pub(crate) max_request_bytes: u32,
    pub(crate) max_response_bytes: u32,
    pub(crate) fetch_chunk_bytes: u32,
    pub(crate) fetch_window: usize,
    pub(crate) max_value_bytes: u64,
    pub(crate) max_announcement_bytes: usize,
    pub(crate) max_in_flight_per_peer: usize,
    pub(crate) max_inbound_per_peer: usize,
    pub(crate) event_capacity: usize,
    pub(crate) command_capacity: usize,
    pub(crate) remote_registration: bool,
    #[cfg(feature = "mdns")]
    pub(crate) mdns: bool,
}

impl Config {
    /// A builder. The security choice is required: a [`ClusterKey`](crate::ClusterKey), or
    /// the explicit [`Security::Insecure`].
    pub fn builder(security: impl Into<Security>) -> ConfigBuilder {
        ConfigBuilder {
            security: security.into(),
            name: None,
            keypair: None,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            state: NodeState::default(),
            cluster_name: None,
            protocol_version: PROTOCOL_VERSION.to_owned(),
            announce_interval: DEFAULT_ANNOUNCE_INTERVAL,
            peer_ttl: None,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            idle_connection_timeout: DEFAULT_IDLE_CONNECTION_TIMEOUT,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            fetch_chunk_bytes: DEFAULT_FETCH_CHUNK_BYTES,
            fetch_window: DEFAULT_FETCH_WINDOW,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_announcement_bytes: DEFAULT_MAX_ANNOUNCEMENT_BYTES,
            max_in_flight_per_peer: DEFAULT_MAX_IN_FLIGHT_PER_PEER,
            max_inbound_per_peer: None,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            command_capacity: DEFAULT_COMMAND_CAPACITY,
            remote_registration: false,
            #[cfg(feature = "mdns")]
            mdns: false,
        }
    }

    /// The node id this configuration gives the node (its key pair's `PeerId` in base58).
    pub fn node_id(&self) -> handoff_core::NodeId {
        crate::ids::node_id_of(&self.keypair.public().to_peer_id())
    }

    /// The security choice.
    pub fn security(&self) -> &Security {
        &self.security
    }
    /// The human-readable name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The addresses to listen on.
    pub fn listen_addresses(&self) -> &[Multiaddr] {
        &self.listen
    }
    /// The addresses dialed at start.
    pub fn bootstrap_addresses(&self) -> &[Multiaddr] {
        &self.bootstrap
    }
    /// The name of the cluster (part of the gossip topic).
    pub fn cluster_name(&self) -> &str {
        &self.cluster_name
    }
    /// The protocol version this node speaks.
    pub fn protocol_version(&self) -> &str {
        &self.protocol_version
    }
    /// The maximum request frame.
    pub fn max_request_bytes(&self) -> u32 {
        self.max_request_bytes
    }
    /// The maximum response frame.
    pub fn max_response_bytes(&self) -> u32 {
        self.max_response_bytes
    }
    /// The cap on outbound requests in flight to one peer.
    pub fn max_in_flight_per_peer(&self) -> usize {
        self.max_in_flight_per_peer
    }
    /// The cap on inbound requests from one peer waiting for their answer.
    pub fn max_inbound_per_peer(&self) -> usize {
        self.max_inbound_per_peer
    }
    /// Whether peers may set this node's capacity (see
    /// [`ConfigBuilder::allow_remote_registration`]).
    pub fn allows_remote_registration(&self) -> bool {
        self.remote_registration
    }
    /// The request-response streams allowed per connection: `2 × max_in_flight_per_peer + 16`.
    pub fn max_concurrent_streams(&self) -> usize {
        2 * self.max_in_flight_per_peer + 16
    }
}

/// Builds a [`Config`]; [`build`](Self::build) checks the rules between fields.
#[derive(Debug, Clone)]
#[must_use]
pub struct ConfigBuilder {
    security: Security,
    name: Option<String>,
    keypair: Option<Keypair>,
    listen: Vec<Multiaddr>,
    bootstrap: Vec<Multiaddr>,
    state: NodeState,
    cluster_name: Option<String>,
    protocol_version: String,
    announce_interval: Duration,
    peer_ttl: Option<Duration>,
    heartbeat_interval: Duration,
    connection_timeout: Duration,
    request_timeout: Duration,
    idle_connection_timeout: Duration,
    max_request_bytes: u32,
    max_response_bytes: u32,
    fetch_chunk_bytes: u32,
    fetch_window: usize,
    max_value_bytes: u64,
    max_announcement_bytes: usize,
    max_in_flight_per_peer: usize,
    max_inbound_per_peer: Option<usize>,
    event_capacity: usize,
    command_capacity: usize,
    remote_registration: bool,
    #[cfg(feature = "mdns")]
    mdns: bool,
}

/// Why a [`ConfigBuilder`] did not build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A duration that must be positive is zero.
    #[error("`{field}` must be above zero")]
    ZeroDuration {
        /// The setting.
        field: &'static str,
    },
    /// A count or size that must be positive is zero.
    #[error("`{field}` must be above zero")]
    Zero {
        /// The setting.
        field: &'static str,
    },
    /// Peers would be forgotten between two of their announcements.
    #[error(
        "peer_ttl ({peer_ttl:?}) must be at least twice announce_interval ({announce_interval:?})"
    )]
    PeerTtlTooShort {
        /// The time-to-live.
        peer_ttl: Duration,
        /// The interval.
        announce_interval: Duration,
    },
    /// Too many requests in flight per peer for yamux's 512 streams per connection.
    #[error(
        "max_in_flight_per_peer is {value}; at most {max} fit in yamux's 512 streams per connection"
    )]
    InFlightTooHigh {
        /// The value asked for.
        value: usize,
        /// The largest allowed.
        max: usize,
    },
    /// A fetch chunk would not fit in a response frame.
    #[error(
        "fetch_chunk_bytes ({chunk}) plus {overhead} bytes of overhead exceeds max_response_bytes ({max_response})"
    )]
    ChunkTooLarge {
        /// The chunk size.
        chunk: u32,
        /// The room kept for the chunk's other fields.
        overhead: u32,
        /// The response limit.
        max_response: u32,
    },
    /// A frame limit is too small to carry the protocol's messages.
    #[error("`{field}` is {value} bytes; the minimum is {min}")]
    FrameLimitTooSmall {
        /// The setting.
        field: &'static str,
        /// The value asked for.
        value: u64,
        /// The minimum.
        min: u64,
    },
    /// The fetch window exceeds the in-flight cap.
    #[error("fetch_window ({window}) exceeds max_in_flight_per_peer ({cap})")]
    FetchWindowTooLarge {
        /// The window.
        window: usize,
        /// The cap.
        cap: usize,
    },
    /// The cluster name would not make a clean gossip topic.
    #[error("cluster name `{name}` must be non-empty, without `/` or whitespace")]
    ClusterName {
        /// The name.
        name: String,
    },
}

const MIN_FRAME_BYTES: u32 = 4 << 10;

impl ConfigBuilder {
    /// The node's human-readable name (default `handoff-node`), shown in announcements.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The node's identity (default: a fresh Ed25519 key pair). Its `PeerId` is the node's
    /// [`NodeId`](handoff_core::NodeId).
    pub fn keypair(mut self, keypair: Keypair) -> Self {
        self.keypair = Some(keypair);
        self
    }

    /// Adds an address to listen on (default, when none is added: `/ip4/0.0.0.0/tcp/0`).
    pub fn listen_on(mut self, address: Multiaddr) -> Self {
        self.listen.push(address);
        self
    }

    /// Adds an address dialed at start, to join the cluster through it.
    pub fn bootstrap(mut self, address: Multiaddr) -> Self {
        self.bootstrap.push(address);
        self
    }

    /// Adds addresses dialed at start.
    pub fn bootstraps(mut self, addresses: impl IntoIterator<Item = Multiaddr>) -> Self {
        self.bootstrap.extend(addresses);
        self
    }

    /// What the node announces at first (change it later with `Client::announce`).
    pub fn state(mut self, state: NodeState) -> Self {
        self.state = state;
        self
    }

    /// The cluster's name, part of the gossip topic `handoff/<name>/announce/1` (default: the
    /// cluster key's fingerprint, or `insecure`).
    pub fn cluster_name(mut self, name: impl Into<String>) -> Self {
        self.cluster_name = Some(name.into());
        self
    }

    /// How often the node re-announces itself (default 2 s).
    pub fn announce_interval(mut self, interval: Duration) -> Self {
        self.announce_interval = interval;
        self
    }

    /// How long a peer stays in the table without a new announcement (default three
    /// announce intervals; at least two).
    pub fn peer_ttl(mut self, ttl: Duration) -> Self {
        self.peer_ttl = Some(ttl);
        self
    }

    /// Gossipsub's heartbeat (default 1 s).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// How long opening a connection (TCP, cluster key, Noise, yamux) may take (default
    /// 3 s). A wrong cluster key shows up only as this timeout.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// How long a request may wait for its response, including the receiver's work
    /// (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long a connection with nothing to do stays open (default 60 s).
    pub fn idle_connection_timeout(mut self, timeout: Duration) -> Self {
        self.idle_connection_timeout = timeout;
        self
    }

    /// The largest request frame sent or accepted (default 1 MiB).
    pub fn max_request_bytes(mut self, max: u32) -> Self {
        self.max_request_bytes = max;
        self
    }

    /// The largest response frame sent or accepted (default 16 MiB).
    pub fn max_response_bytes(mut self, max: u32) -> Self {
        self.max_response_bytes = max;
        self
    }

    /// The chunk size `Client::fetch_value` asks for (default 4 MiB; it must fit in a
    /// response frame with [`CHUNK_OVERHEAD_BYTES`] to spare).
    pub fn fetch_chunk_bytes(mut self, chunk: u32) -> Self {
        self.fetch_chunk_bytes = chunk;
        self
    }

    /// How many chunk requests one `Client::fetch_value` keeps in flight (default 4).
    pub fn fetch_window(mut self, window: usize) -> Self {
        self.fetch_window = window;
        self
    }

    /// The largest value `Client::fetch_value` accepts (default 4 GiB).
    pub fn max_value_bytes(mut self, max: u64) -> Self {
        self.max_value_bytes = max;
        self
    }

    /// The largest announcement sent or accepted (default 64 KiB).
    pub fn max_announcement_bytes(mut self, max: usize) -> Self {
        self.max_announcement_bytes = max;
        self
    }

    /// The cap on outbound requests in flight to one peer (default 128, at most
    /// [`MAX_IN_FLIGHT_PER_PEER`]); above it requests fail at once with
    /// `RequestError::TooManyInFlight`.
    pub fn max_in_flight_per_peer(mut self, cap: usize) -> Self {
        self.max_in_flight_per_peer = cap;
        self
    }

    /// The cap on inbound requests from one peer that wait for their answer at once
    /// (default: [`max_in_flight_per_peer`](Self::max_in_flight_per_peer), so that a peer
    /// configured like this node never reaches it). A request from a peer at the cap is
    /// answered at once with [`RpcError::Busy`](crate::RpcError::Busy) (a sender retries
    /// later) and never reaches the application: a peer that floods requests is throttled
    /// to this many, and the event channel and the node's work stay open to the others.
    /// Requests count from their arrival (also while their peer's protocol version is not
    /// verified yet) until their answer is sent or they fail (the application dropped the
    /// [`ResponseChannel`](crate::ResponseChannel), the request timed out, the connection
    /// closed). `Hello` requests, answered by the event loop itself, do not count.
    ///
    /// The event channel is shared: with many peers at their cap it can still fill up
    /// ([`event_capacity`](Self::event_capacity)), and further requests are then answered
    /// Busy whoever sends them.
    pub fn max_inbound_per_peer(mut self, cap: usize) -> Self {
        self.max_inbound_per_peer = Some(cap);
        self
    }

    /// The capacity of the event channel returned by `start` (default 1024). When it is
    /// full, inbound requests are answered with [`RpcError::Busy`](crate::RpcError::Busy);
    /// membership events (peers announced, gone, refused) wait for room, in order.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// The capacity of the command channel from clients to the event loop (default 256).
    pub fn command_capacity(mut self, capacity: usize) -> Self {
        self.command_capacity = capacity;
        self
    }

    /// Lets peers set this node's capacity with a `Register` request (default off: a
    /// node changes its capacity on its own word only, so a peer cannot shrink it to
    /// nothing and have every later DAG refused).
    pub fn allow_remote_registration(mut self, allow: bool) -> Self {
        self.remote_registration = allow;
        self
    }

    /// Discovers peers on the local network with mDNS (default off). They still need the
    /// cluster key to connect.
    #[cfg(feature = "mdns")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mdns")))]
    pub fn mdns(mut self, enabled: bool) -> Self {
        self.mdns = enabled;
        self
    }

    /// Overrides the protocol version this node speaks. Only for tests of version
    /// refusal: nodes with different versions refuse each other.
    #[doc(hidden)]
    pub fn protocol_version_for_tests(mut self, version: impl Into<String>) -> Self {
        self.protocol_version = version.into();
        self
    }

    /// Checks the settings and builds the configuration.
    pub fn build(self) -> Result<Config, ConfigError> {
        for (field, d) in [
            ("announce_interval", self.announce_interval),
            ("heartbeat_interval", self.heartbeat_interval),
            ("connection_timeout", self.connection_timeout),
            ("request_timeout", self.request_timeout),
            ("idle_connection_timeout", self.idle_connection_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration { field });
            }
        }
        for (field, n) in [
            ("max_in_flight_per_peer", self.max_in_flight_per_peer),
            (
                "max_inbound_per_peer",
                self.max_inbound_per_peer
                    .unwrap_or(self.max_in_flight_per_peer),
            ),
            ("fetch_window", self.fetch_window),
            ("event_capacity", self.event_capacity),
            ("command_capacity", self.command_capacity),
            ("fetch_chunk_bytes", self.fetch_chunk_bytes as usize),
        ] {
            if n == 0 {
                return Err(ConfigError::Zero { field });
            }
        }
        let peer_ttl = self.peer_ttl.unwrap_or(self.announce_interval * 3);
        if peer_ttl < self.announce_interval * 2 {
            return Err(ConfigError::PeerTtlTooShort {
                peer_ttl,
                announce_interval: self.announce_interval,
            });
        }
        if self.max_in_flight_per_peer > MAX_IN_FLIGHT_PER_PEER {
            return Err(ConfigError::InFlightTooHigh {
                value: self.max_in_flight_per_peer,
                max: MAX_IN_FLIGHT_PER_PEER,
            });
        }
        if self.fetch_window > self.max_in_flight_per_peer {
            return Err(ConfigError::FetchWindowTooLarge {
                window: self.fetch_window,
                cap: self.max_in_flight_per_peer,
            });
        }
        for (field, value) in [
            ("max_request_bytes", self.max_request_bytes),
            ("max_response_bytes", self.max_response_bytes),
        ] {
            if value < MIN_FRAME_BYTES {
                return Err(ConfigError::FrameLimitTooSmall {
                    field,
                    value: u64::from(value),
                    min: u64::from(MIN_FRAME_BYTES),
                });
            }
        }
        if (self.max_announcement_bytes as u64) < 1024 {
            return Err(ConfigError::FrameLimitTooSmall {
                field: "max_announcement_bytes",
                value: self.max_announcement_bytes as u64,
                min: 1024,
            });
        }
        if u64::from(self.fetch_chunk_bytes) + u64::from(CHUNK_OVERHEAD_BYTES)
            > u64::from(self.max_response_bytes)
        {
            return Err(ConfigError::ChunkTooLarge {
                chunk: self.fetch_chunk_bytes,
                overhead: CHUNK_OVERHEAD_BYTES,
                max_response: self.max_response_bytes,
            });
        }
        let cluster_name = match self.cluster_name {
            Some(name) => name,
            None => match self.security.key() {
                Some(key) => key.fingerprint().to_string(),
                None => "insecure".to_owned(),
            },
        };
        if cluster_name.is_empty()
            || cluster_name.contains('/')
            || cluster_name.chars().any(char::is_whitespace)
        {
            return Err(ConfigError::ClusterName { name: cluster_name });
        }
        let listen = if self.listen.is_empty() {
            vec![
                Multiaddr::empty()
                    .with(libp2p::multiaddr::Protocol::Ip4(
                        std::net::Ipv4Addr::UNSPECIFIED,
                    ))
                    .with(libp2p::multiaddr::Protocol::Tcp(0)),
            ]
        } else {
            self.listen
        };
        Ok(Config {
            security: self.security,
            name: self.name.unwrap_or_else(|| "handoff-node".to_owned()),
            keypair: self.keypair.unwrap_or_else(Keypair::generate_ed25519),
            listen,
            bootstrap: self.bootstrap,
            state: self.state,
            cluster_name,
            protocol_version: self.protocol_version,
            announce_interval: self.announce_interval,
            peer_ttl,
            heartbeat_interval: self.heartbeat_interval,
            connection_timeout: self.connection_timeout,
            request_timeout: self.request_timeout,
            idle_connection_timeout: self.idle_connection_timeout,
            max_request_bytes: self.max_request_bytes,
            max_response_bytes: self.max_response_bytes,
            fetch_chunk_bytes: self.fetch_chunk_bytes,
            fetch_window: self.fetch_window,
            max_value_bytes: self.max_value_bytes,
            max_announcement_bytes: self.max_announcement_bytes,
            max_in_flight_per_peer: self.max_in_flight_per_peer,
            max_inbound_per_peer: self
                .max_inbound_per_peer
                .unwrap_or(self.max_in_flight_per_peer),
            event_capacity: self.event_capacity,
            command_capacity: self.command_capacity,
            remote_registration: self.remote_registration,
            #[cfg(feature = "mdns")]
            mdns: self.mdns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClusterKey;

    #[test]
    fn defaults_build_and_name_the_cluster_after_the_key() {
        let key = ClusterKey::generate();
        let config = Config::builder(key.clone()).build().expect("defaults");
        assert_eq!(config.cluster_name(), key.fingerprint().as_str());
        assert_eq!(config.peer_ttl, DEFAULT_ANNOUNCE_INTERVAL * 3);
        assert_eq!(config.max_concurrent_streams(), 272);
        assert!(config.max_concurrent_streams() < 512);
        assert_eq!(
            config.max_inbound_per_peer(),
            DEFAULT_MAX_IN_FLIGHT_PER_PEER
        );
        let custom = Config::builder(key.clone())
            .max_in_flight_per_peer(64)
            .build()
            .expect("custom");
        assert_eq!(
            custom.max_inbound_per_peer(),
            64,
            "follows the outbound cap"
        );
        let custom = Config::builder(key.clone())
            .max_inbound_per_peer(8)
            .build()
            .expect("custom");
        assert_eq!(custom.max_inbound_per_peer(), 8);
        assert_eq!(
            config.listen_addresses()[0].to_string(),
            "/ip4/0.0.0.0/tcp/0"
        );
        let insecure = Config::builder(Security::Insecure)
            .build()
            .expect("insecure");
        assert_eq!(insecure.cluster_name(), "insecure");
    }

    #[test]
    fn cross_field_rules_are_checked() {
        let b = || Config::builder(Security::Insecure);
        assert_eq!(
            b().max_in_flight_per_peer(300).build().map(|_| ()),
            Err(ConfigError::InFlightTooHigh {
                value: 300,
                max: MAX_IN_FLIGHT_PER_PEER
            })
        );
        assert!(matches!(
            b().max_response_bytes(1 << 20).build(),
            Err(ConfigError::ChunkTooLarge { .. })
        ));
        assert!(matches!(
            b().announce_interval(Duration::from_secs(2))
                .peer_ttl(Duration::from_secs(3))
                .build(),
            Err(ConfigError::PeerTtlTooShort { .. })
        ));
        assert!(matches!(
            b().connection_timeout(Duration::ZERO).build(),
            Err(ConfigError::ZeroDuration {
                field: "connection_timeout"
            })
        ));
        assert!(matches!(
            b().cluster_name("a/b").build(),
            Err(ConfigError::ClusterName { .. })
        ));
        assert!(matches!(
            b().max_request_bytes(16).build(),
            Err(ConfigError::FrameLimitTooSmall { .. })
        ));
        assert_eq!(
            b().max_inbound_per_peer(0).build().map(|_| ()),
            Err(ConfigError::Zero {
                field: "max_inbound_per_peer"
            })
        );
        assert!(matches!(
            b().max_in_flight_per_peer(2).build(),
            Err(ConfigError::FetchWindowTooLarge { window: 4, cap: 2 })
        ));
    }
}
