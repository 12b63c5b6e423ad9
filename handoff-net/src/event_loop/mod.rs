//! The task that owns the `Swarm`: it runs the commands of the [`Client`]s, answers Hello,
//! checks peers' protocol versions, keeps the table of live peers, and delivers
//! [`NetEvent`]s.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use handoff_core::NodeId;
use libp2p::core::transport::ListenerId;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId, PublishError};
use libp2p::request_response::{
    self, InboundFailure, InboundRequestId, Message, OutboundFailure, OutboundRequestId,
};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, ListenError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, TransportError, identify};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::announce::{self, Announcement, AnnouncementError, NodeState};
use crate::client::{
    Client, Command, FetchSettings, GoneReason, HandshakeLog, NetEvent, Refusal, ResponseChannel,
};
use crate::codec::FrameError;
use crate::config::Config;
use crate::error::{AnnounceError, DialError, RequestError, RespondError, StartError};
use crate::ids::{RequestId, node_id_of, peer_id_of};
use crate::peers::{Applied, PeerTable};
use crate::protocol::{Request, Response, RpcError};
use crate::swarm::{self, Behaviour, BehaviourEvent};

/// How long `start` waits for each listener to report its address.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a refused peer stays connected: long enough for both sides to receive each
/// other's identify info (and so both to log the refusal), and for an error answer to
/// reach it.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// True when `address` names a fixed TCP port on an IP address that a plain socket
/// (without `SO_REUSEPORT`) cannot bind: something listens there already.
fn port_in_use(address: &Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    let mut ip = None;
    let mut port = None;
    for protocol in address.iter() {
        match protocol {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    match (ip, port) {
        (Some(ip), Some(port)) if port != 0 => matches!(
            std::net::TcpListener::bind((ip, port)),
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse
        ),
        _ => false,
    }
}

/// Starts a node's network layer: builds the swarm, listens, dials the bootstrap
/// addresses, and spawns the event loop with `tokio::spawn` (so it runs in a plain tokio
/// runtime and inside an actix `System` alike). Returns once every listener has its
/// address.
///
/// The returned receiver carries inbound requests and peer events; keep reading it.
pub async fn start(config: Config) -> Result<(Client, mpsc::Receiver<NetEvent>), StartError> {
    let fingerprint = match config.security.key() {
        Some(key) => {
            let fingerprint = key.fingerprint().to_string();
            tracing::info!(
                name = %config.name,
                cluster = %config.cluster_name,
                key_fingerprint = %fingerprint,
                "starting the network layer with a cluster key"
            );
            fingerprint
        }
        None => {
            tracing::warn!(
                name = %config.name,
                cluster = %config.cluster_name,
                "starting the network layer WITHOUT a cluster key (Security::Insecure): any \
                 libp2p node that reaches this node can connect"
            );
            "none".to_owned()
        }
    };
    let mut swarm = swarm::build(&config)?;
    let topic = IdentTopic::new(announce::topic_name(&config.cluster_name));
    swarm
        .behaviour_mut()
        .gossip
        .subscribe(&topic)
        .map_err(|e| StartError::Gossip {
            reason: e.to_string(),
        })?;
    let mut listeners = Vec::new();
    for address in &config.listen {
        if port_in_use(address) {
            return Err(StartError::AddressInUse {
                address: address.clone(),
            });
        }
        let id = swarm
            .listen_on(address.clone())
            .map_err(|source| StartError::Listen {
                address: address.clone(),
                source,
            })?;
        listeners.push((id, address.clone()));
    }

    let (command_tx, command_rx) = mpsc::channel(config.command_capacity);
    let (event_tx, event_rx) = mpsc::channel(config.event_capacity);
    let local = *swarm.local_peer_id();
    let handshakes = Arc::new(HandshakeLog::new(fingerprint.clone()));
    let client = Client::new(
        command_tx,
        local,
        &config.name,
        &config.protocol_version,
        FetchSettings {
            chunk: config.fetch_chunk_bytes,
            window: config.fetch_window,
            max_value: config.max_value_bytes,
        },
        Arc::clone(&handshakes),
    );
    let span = tracing::info_span!("handoff_net", name = %config.name);
    let mut event_loop = EventLoop {
        swarm,
        commands: command_rx,
        events: event_tx,
        local,
        node: node_id_of(&local),
        name: config.name.clone(),
        version: config.protocol_version.clone(),
        fingerprint,
        handshakes,
        topic,
        state: config.state.clone(),
        seq: 0,
        announce_interval: config.announce_interval,
        peer_ttl: config.peer_ttl,
        max_announcement_bytes: config.max_announcement_bytes,
        max_in_flight_per_peer: config.max_in_flight_per_peer,
        max_inbound_per_peer: config.max_inbound_per_peer,
        event_capacity: config.event_capacity,
        listeners: listeners.iter().map(|(id, _)| *id).collect(),
        pending: HashMap::new(),
        in_flight: HashMap::new(),
        dials: HashMap::new(),
        peers: PeerTable::default(),
        verified: HashSet::new(),
        refused: Refused::default(),
        disconnects: FuturesUnordered::new(),
        held: HashMap::new(),
        held_total: 0,
        inbound: HashMap::new(),
        inbound_per_peer: HashMap::new(),
        throttled: HashSet::new(),
        refused_frames: HashMap::new(),
        backlog: VecDeque::new(),
    };
    event_loop
        .wait_listening(&listeners)
        .instrument(span.clone())
        .await?;
    {
        let _entered = span.enter();
        for address in &config.bootstrap {
            event_loop.dial(address.clone(), None);
        }
        // Sent to nobody yet (no peer has subscribed); peers get it when they subscribe.
        let _ = event_loop.publish();
    }
    tokio::spawn(event_loop.run().instrument(span));
    Ok((client, event_rx))
}

struct PendingRequest {
    node: NodeId,
    peer: PeerId,
    reply: oneshot::Sender<Result<Response, RequestError>>,
}

struct PendingDial {
    address: Option<Multiaddr>,
    reply: Option<oneshot::Sender<Result<NodeId, DialError>>>,
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    local: PeerId,
    node: NodeId,
    name: String,
    version: String,
    fingerprint: String,
    /// The connections that failed during the handshake (shared with the `Client`).
    handshakes: Arc<HandshakeLog>,
    topic: IdentTopic,
    state: NodeState,
    seq: u64,
    announce_interval: Duration,
    peer_ttl: Duration,
    max_announcement_bytes: usize,
    max_in_flight_per_peer: usize,
    max_inbound_per_peer: usize,
    event_capacity: usize,
    listeners: Vec<ListenerId>,
    /// Outbound requests awaiting their response, by libp2p's request id.
    pending: HashMap<OutboundRequestId, PendingRequest>,
    /// Outbound requests in flight per peer (the application-level cap).
    in_flight: HashMap<PeerId, usize>,
    /// Dials in progress, by connection id.
    dials: HashMap<ConnectionId, PendingDial>,
    peers: PeerTable,
    /// Peers whose protocol version matched ours on their current connection.
    verified: HashSet<PeerId>,
    /// Peers refused for their protocol version (kept across connections, within
    /// [`MAX_REFUSED`](refused::MAX_REFUSED)).
    refused: Refused,
    /// Refused peers to disconnect once the grace period has passed.
    disconnects: FuturesUnordered<BoxFuture<'static, PeerId>>,
    /// Inbound requests from connected peers not verified yet, answered once they are:
    /// at most [`MAX_HELD_PER_PEER`] per peer and [`MAX_HELD`] in all, each dropped when
    /// it fails (times out) or its peer disconnects.
    held: HashMap<PeerId, Vec<Held>>,
    /// How many requests `held` has, over all peers.
    held_total: usize,
    /// Inbound requests waiting for their answer (held, or handed to the application),
    /// with their peer: the per-peer cap counts them until libp2p reports the answer sent
    /// or the request failed.
    inbound: HashMap<InboundRequestId, PeerId>,
    /// How many of `inbound` each peer has.
    inbound_per_peer: HashMap<PeerId, usize>,
    /// Peers answered Busy for being at their inbound cap, until their count falls back
    /// to zero (so a flood is logged once, not once per request).
    throttled: HashSet<PeerId>,
    /// Inbound frames refused per connected peer (too large, malformed), to log the 1st,
    /// 2nd, 4th, 8th… only.
    refused_frames: HashMap<PeerId, u64>,
    /// Membership events (peers announced, gone, refused) waiting for room in the event
    /// channel: they are never dropped, and leave in the order they happened.
    backlog: VecDeque<NetEvent>,
}

/// The most membership events kept waiting for room in the event channel (one per peer
/// change; only a consumer that stopped reading lets it grow).
const MAX_BACKLOG: usize = 65_536;

/// The most inbound requests held for one peer whose protocol version is not verified
/// yet (its identify info, or its Hello, has not arrived). Further requests from it are
/// answered [`RpcError::Busy`] (senders try again). A held request is dropped when it
/// fails (its request timeout passes) or the peer's last connection closes, so a peer that
/// never completes identify holds at most this many at any time.
const MAX_HELD_PER_PEER: usize = 16;

/// The most inbound requests held over all unverified peers (see [`MAX_HELD_PER_PEER`]):
/// at most `MAX_HELD × max_request_bytes` of requests (64 MiB with the default 1 MiB
/// request limit) wait for identities that may never be confirmed.
const MAX_HELD: usize = 64;

/// An inbound request held until its peer is verified.
struct Held {
    id: InboundRequestId,
    request: Request,
    channel: request_response::ResponseChannel<Response>,
}

mod failure;
mod gossip;
mod inbound;
mod refused;
#[cfg(test)]
mod tests;

use refused::Refused;

use failure::{FailureKind, dial_failure_kind, io_failure_kind};

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl EventLoop {
    async fn wait_listening(
        &mut self,
        listeners: &[(ListenerId, Multiaddr)],
    ) -> Result<(), StartError> {
        let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
        let mut waiting: HashMap<ListenerId, Multiaddr> = listeners.iter().cloned().collect();
        while !waiting.is_empty() {
            let event = match tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await
            {
                Ok(event) => event,
                Err(_) => {
                    let address = waiting
                        .into_values()
                        .next()
                        .unwrap_or_else(Multiaddr::empty);
                    return Err(StartError::ListenerTimeout {
                        address,
                        seconds: LISTEN_TIMEOUT.as_secs(),
                    });
                }
            };
            match &event {
                SwarmEvent::NewListenAddr { listener_id, .. } => {
                    waiting.remove(listener_id);
                }
                SwarmEvent::ListenerError { listener_id, error }
                    if waiting.contains_key(listener_id) =>
                {
                    let address = waiting.remove(listener_id).unwrap_or_else(Multiaddr::empty);
                    return Err(StartError::ListenerFailed {
                        address,
                        source: io::Error::new(error.kind(), error.to_string()),
                    });
                }
                SwarmEvent::ListenerClosed {
                    listener_id,
                    reason,
                    ..
                } if waiting.contains_key(listener_id) => {
                    let address = waiting.remove(listener_id).unwrap_or_else(Multiaddr::empty);
                    let source = match reason {
                        Err(e) => io::Error::new(e.kind(), e.to_string()),
                        Ok(()) => io::Error::other("closed before reporting an address"),
                    };
                    return Err(StartError::ListenerFailed { address, source });
                }
                _ => {}
            }
            self.on_swarm_event(event);
        }
        Ok(())
    }

    async fn run(mut self) {
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + self.announce_interval,
            self.announce_interval,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let events = self.events.clone();
        let shutdown_reply = loop {
            tokio::select! {
                Ok(permit) = events.reserve(), if !self.backlog.is_empty() => {
                    if let Some(event) = self.backlog.pop_front() {
                        permit.send(event);
                    }
                }
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => break Some(reply),
                    Some(command) => self.on_command(command),
                    None => break None,
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = tick.tick() => self.on_tick(),
                Some(peer) = self.disconnects.next(), if !self.disconnects.is_empty() => {
                    if self.refused.contains_key(&peer) {
                        let _ = self.swarm.disconnect_peer_id(peer);
                    }
                }
            }
        };
        for id in std::mem::take(&mut self.listeners) {
            self.swarm.remove_listener(id);
        }
        tracing::info!(node = %self.node, "network layer stopped");
        // Dropping the swarm closes the listeners and every connection; pending replies
        // are dropped, which their callers see as `Stopped`.
        drop(self);
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }

    fn emit(&mut self, event: NetEvent) {
        let membership = !matches!(event, NetEvent::InboundRequest { .. });
        if membership && !self.backlog.is_empty() {
            self.queue_membership(event);
            return;
        }
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(event)) if membership => self.queue_membership(event),
            Err(TrySendError::Full(event)) => {
                tracing::warn!(
                    capacity = self.event_capacity,
                    "event channel full: dropped {event:?}"
                );
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }

    fn queue_membership(&mut self, event: NetEvent) {
        if self.backlog.len() >= MAX_BACKLOG {
            tracing::error!(
                limit = MAX_BACKLOG,
                "membership backlog full (the event consumer stopped reading): dropped {event:?}"
            );
            return;
        }
        self.backlog.push_back(event);
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Request {
                node,
                request,
                reply,
            } => self.send_request(node, request, reply),
            Command::Respond {
                channel,
                response,
                reply,
            } => {
                let node = channel.node;
                let result = self
                    .swarm
                    .behaviour_mut()
                    .rpc
                    .send_response(channel.inner, response)
                    .map_err(|_| RespondError::ChannelClosed { node });
                let _ = reply.send(result);
            }
            Command::Dial { address, reply } => self.dial(address, Some(reply)),
            Command::Announce { state, reply } => {
                let _ = reply.send(self.publish_state(Some(state)));
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.peers.list());
            }
            Command::Connected { reply } => {
                let _ = reply.send(self.swarm.connected_peers().map(node_id_of).collect());
            }
            Command::ListenAddresses { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Shutdown { reply } => {
                // Handled by `run`; answered here only if it ever gets routed this way.
                let _ = reply.send(());
            }
        }
    }

    fn send_request(
        &mut self,
        node: NodeId,
        request: Request,
        reply: oneshot::Sender<Result<Response, RequestError>>,
    ) {
        let peer = match peer_id_of(&node) {
            Ok(peer) => peer,
            Err(_) => {
                let _ = reply.send(Err(RequestError::InvalidNode { node }));
                return;
            }
        };
        if peer == self.local {
            let _ = reply.send(Err(RequestError::LocalNode { node }));
            return;
        }
        if let Some(theirs) = self.refused.get(&peer) {
            let _ = reply.send(Err(RequestError::Refused {
                node,
                ours: self.version.clone(),
                theirs: theirs.clone(),
            }));
            return;
        }
        let in_flight = self.in_flight.entry(peer).or_default();
        if *in_flight >= self.max_in_flight_per_peer {
            let _ = reply.send(Err(RequestError::TooManyInFlight {
                node,
                limit: self.max_in_flight_per_peer,
            }));
            return;
        }
        *in_flight += 1;
        let id = self.swarm.behaviour_mut().rpc.send_request(&peer, request);
        self.pending
            .insert(id, PendingRequest { node, peer, reply });
    }

    fn finish_request(&mut self, id: OutboundRequestId) -> Option<PendingRequest> {
        let pending = self.pending.remove(&id)?;
        if let Some(n) = self.in_flight.get_mut(&pending.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(&pending.peer);
            }
        }
        Some(pending)
    }

    fn dial(
        &mut self,
        address: Multiaddr,
        reply: Option<oneshot::Sender<Result<NodeId, DialError>>>,
    ) {
        let opts = DialOpts::unknown_peer_id().address(address.clone()).build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dials.insert(
                    id,
                    PendingDial {
                        address: Some(address),
                        reply,
                    },
                );
            }
            Err(source) => {
                tracing::warn!(%address, "cannot dial: {source}");
                if let Some(reply) = reply {
                    let _ = reply.send(Err(DialError::Other { address, source }));
                }
            }
        }
    }

    /// Publishes the current announcement (with a new sequence number).
    fn publish(&mut self) -> Result<(), AnnounceError> {
        self.publish_state(None)
    }

    /// Publishes an announcement of `state` (or of the current state), which becomes the
    /// current state only if it could be encoded within the size limit.
    fn publish_state(&mut self, state: Option<NodeState>) -> Result<(), AnnounceError> {
        let seq = (self.seq + 1).max(now_micros());
        let announcement = Announcement {
            node: self.node.clone(),
            name: self.name.clone(),
            version: self.version.clone(),
            seq,
            addresses: self.swarm.listeners().map(ToString::to_string).collect(),
            state: state.unwrap_or_else(|| self.state.clone()),
        };
        let data =
            announce::encode(&announcement).map_err(|source| AnnounceError::Encode { source })?;
        if data.len() > self.max_announcement_bytes {
            return Err(AnnounceError::TooLarge {
                len: data.len(),
                max: self.max_announcement_bytes,
            });
        }
        self.seq = seq;
        self.state = announcement.state;
        match self
            .swarm
            .behaviour_mut()
            .gossip
            .publish(self.topic.clone(), data)
        {
            Ok(_) => tracing::trace!(seq, "announced"),
            Err(PublishError::NoPeersSubscribedToTopic) => {
                tracing::debug!(
                    "no peer subscribed yet: the announcement goes out when one subscribes"
                )
            }
            Err(e) => tracing::warn!("could not publish the announcement: {e:?}"),
        }
        Ok(())
    }

    fn on_tick(&mut self) {
        let _ = self.publish();
        for node in self.peers.expire(Instant::now(), self.peer_ttl) {
            tracing::info!(%node, ttl = ?self.peer_ttl, "peer expired: no announcement within the time-to-live");
            self.emit(NetEvent::PeerGone {
                node,
                reason: GoneReason::Expired,
            });
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(event)) => self.on_rpc_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(event)) => self.on_gossip_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => self.on_identify_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(event)) => self.on_mdns_event(event),
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(node = %self.node, "listening on {address}/p2p/{}", self.local);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                tracing::debug!(peer = %peer_id, ?endpoint, "connection established");
                if let Some(PendingDial {
                    reply: Some(reply), ..
                }) = self.dials.remove(&connection_id)
                {
                    let _ = reply.send(Ok(node_id_of(&peer_id)));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                tracing::debug!(peer = %peer_id, ?cause, "connection closed");
                if num_established == 0 {
                    self.verified.remove(&peer_id);
                    self.take_held(peer_id);
                    self.forget_inbound(peer_id);
                    let node = node_id_of(&peer_id);
                    if self.peers.remove(&node) {
                        tracing::info!(%node, "peer disconnected");
                        self.emit(NetEvent::PeerGone {
                            node,
                            reason: GoneReason::Disconnected,
                        });
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => self.on_dial_failure(connection_id, peer_id, error),
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                let handshake = matches!(&error, ListenError::Transport(TransportError::Other(io))
                    if io_failure_kind(io) == FailureKind::Handshake);
                if handshake {
                    self.handshakes.failed(send_back_addr.to_string());
                    tracing::warn!(
                        from = %send_back_addr,
                        key_fingerprint = %self.fingerprint,
                        "incoming connection failed during the handshake: likely cluster key \
                         mismatch (compare key fingerprints): {error}"
                    );
                    tracing::debug!(from = %send_back_addr, "the handshake failure: {error:?}");
                } else {
                    tracing::debug!(from = %send_back_addr, "incoming connection failed: {error}: {error:?}");
                }
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!("listener error: {error}");
            }
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                tracing::debug!(?addresses, ?reason, "listener closed");
            }
            _ => {}
        }
    }

    fn on_dial_failure(
        &mut self,
        connection_id: ConnectionId,
        peer: Option<PeerId>,
        error: libp2p::swarm::DialError,
    ) {
        let pending = self.dials.remove(&connection_id);
        let address = pending
            .as_ref()
            .and_then(|p| p.address.clone())
            .or_else(|| match &error {
                libp2p::swarm::DialError::Transport(errors) => {
                    errors.first().map(|(a, _)| a.clone())
                }
                _ => None,
            })
            .unwrap_or_else(Multiaddr::empty);
        let kind = dial_failure_kind(&error);
        match kind {
            FailureKind::Handshake => {
                self.handshakes.failed(address.to_string());
                tracing::warn!(
                    %address,
                    ?peer,
                    key_fingerprint = %self.fingerprint,
                    "dial failed during the handshake: likely cluster key mismatch (compare key \
                     fingerprints): {error}"
                )
            }
            _ => tracing::warn!(%address, ?peer, "dial failed: {error}"),
        }
        // A known peer that cannot be reached any more (and that no connection reaches)
        // is gone now, not after its time-to-live: gossip may still relay an announcement
        // it made just before it died, and dispatching to it again would only fail again.
        // Whatever the dial met at its addresses (nothing, another node that took its port,
        // its own socket connected to itself, a handshake that never completed), it is not
        // that peer; a peer that is in fact alive comes back with its next announcement.
        if unreachable_peer(&error)
            && let Some(peer) = peer
            && !self.swarm.is_connected(&peer)
        {
            let node = node_id_of(&peer);
            if self.peers.remove(&node) {
                tracing::info!(%node, ?kind, "peer unreachable: dialing it failed");
                self.emit(NetEvent::PeerGone {
                    node,
                    reason: GoneReason::Unreachable,
                });
            }
        }
        if let Some(PendingDial {
            reply: Some(reply), ..
        }) = pending
        {
            // libp2p's own account goes to the debug log; the error says what it means.
            tracing::debug!(%address, ?kind, ?error, "dial failed");
            let error = match kind {
                FailureKind::Handshake => DialError::Handshake {
                    address,
                    fingerprint: self.fingerprint.clone(),
                    source: error,
                },
                FailureKind::Unreachable => DialError::Unreachable {
                    address,
                    source: error,
                },
                FailureKind::Other => DialError::Other {
                    address,
                    source: error,
                },
            };
            let _ = reply.send(Err(error));
        }
    }
}

/// True when a failed dial says the peer cannot be reached at the addresses known for it;
/// false when the dial did not really try (aborted, a condition not met, refused by this
/// node's own policy).
fn unreachable_peer(error: &libp2p::swarm::DialError) -> bool {
    use libp2p::swarm::DialError;
    match error {
        DialError::Transport(_) | DialError::WrongPeerId { .. } | DialError::NoAddresses => true,
        DialError::LocalPeerId { .. }
        | DialError::DialPeerConditionFalse(_)
        | DialError::Aborted
        | DialError::Denied { .. } => false,
    }
}
