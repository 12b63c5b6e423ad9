//! Building the libp2p `Swarm`: TCP, the cluster key (pnet) before Noise, yamux, and the
//! composed behaviour (request-response, gossipsub, identify, optionally mDNS).

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::Either;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, DialOpts, ListenerId, PortUse, TransportEvent};
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::pnet::PnetConfig;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, Transport, TransportError, gossipsub, identify,
    noise, request_response, tcp, yamux,
};

use crate::codec::Codec;
use crate::config::Config;
use crate::error::StartError;
use crate::protocol::RPC_PROTOCOL;

#[cfg(feature = "mdns")]
pub(crate) type Mdns = libp2p::swarm::behaviour::toggle::Toggle<libp2p::mdns::tokio::Behaviour>;
#[cfg(not(feature = "mdns"))]
pub(crate) type Mdns = libp2p::swarm::dummy::Behaviour;

/// Everything a node speaks.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) rpc: request_response::Behaviour<Codec>,
    pub(crate) gossip: gossipsub::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) mdns: Mdns,
}

pub(crate) fn transport(config: &Config) -> Result<Boxed<(PeerId, StreamMuxerBox)>, StartError> {
    let psk = config.security.key().map(|key| key.psk());
    let mut yamux = yamux::Config::default();
    // yamux's default, stated: the request-response stream caps are derived to stay below it.
    yamux.set_max_num_streams(512);
    let tcp = NewPortPerDial(tcp::tokio::Transport::new(
        tcp::Config::default().nodelay(true),
    ));
    Ok(tcp
        .and_then(move |socket, _| async move {
            match psk {
                Some(psk) => PnetConfig::new(psk)
                    .handshake(socket)
                    .await
                    .map(Either::Left),
                None => Ok(Either::Right(socket)),
            }
        })
        .upgrade(Version::V1Lazy)
        .authenticate(
            noise::Config::new(&config.keypair).map_err(|source| StartError::Noise { source })?,
        )
        .multiplex(yamux)
        .timeout(config.connection_timeout)
        .boxed())
}

/// A transport that dials every connection from a fresh local port.
///
/// libp2p dials from the listening port by default (for hole punching). Then two nodes
/// that dial each other at the same moment (both learn of the other from one
/// announcement) can meet in a TCP simultaneous open: one connection where both sides
/// act as the dialer, so the handshake fails on both. Fresh ports give two ordinary
/// connections instead.
struct NewPortPerDial<T>(T);

impl<T: Transport + Unpin> Transport for NewPortPerDial<T> {
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = T::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.0.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.0.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        self.0.dial(
            addr,
            DialOpts {
                port_use: PortUse::New,
                ..opts
            },
        )
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.0).poll(cx)
    }
}

fn behaviour(config: &Config, keypair: &Keypair) -> Result<Behaviour, StartError> {
    let rpc = request_response::Behaviour::with_codec(
        Codec::new(config.max_request_bytes, config.max_response_bytes),
        [(
            StreamProtocol::new(RPC_PROTOCOL),
            request_response::ProtocolSupport::Full,
        )],
        request_response::Config::default()
            .with_request_timeout(config.request_timeout)
            .with_max_concurrent_streams(config.max_concurrent_streams()),
    );
    let gossip_config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(config.heartbeat_interval)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        // Room for the signature, key and protobuf framing around the announcement.
        .max_transmit_size(config.max_announcement_bytes + 4096)
        .build()
        .map_err(|e| StartError::Gossip {
            reason: e.to_string(),
        })?;
    let gossip = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(keypair.clone()),
        gossip_config,
    )
    .map_err(|reason| StartError::Gossip {
        reason: reason.to_owned(),
    })?;
    let identify = identify::Behaviour::new(
        identify::Config::new(config.protocol_version.clone(), keypair.public())
            .with_agent_version(format!("handoff-net/{}", env!("CARGO_PKG_VERSION"))),
    );
    Ok(Behaviour {
        rpc,
        gossip,
        identify,
        mdns: mdns(config, keypair)?,
    })
}

#[cfg(feature = "mdns")]
fn mdns(config: &Config, keypair: &Keypair) -> Result<Mdns, StartError> {
    let inner = if config.mdns {
        Some(
            libp2p::mdns::tokio::Behaviour::new(
                libp2p::mdns::Config::default(),
                keypair.public().to_peer_id(),
            )
            .map_err(|source| StartError::Mdns { source })?,
        )
    } else {
        None
    };
    Ok(Mdns::from(inner))
}

#[cfg(not(feature = "mdns"))]
fn mdns(_: &Config, _: &Keypair) -> Result<Mdns, StartError> {
    Ok(libp2p::swarm::dummy::Behaviour)
}

/// The swarm of a node; must be called inside a tokio runtime.
pub(crate) fn build(config: &Config) -> Result<Swarm<Behaviour>, StartError> {
    let keypair = config.keypair.clone();
    let transport = transport(config)?;
    let behaviour = behaviour(config, &keypair)?;
    Ok(Swarm::new(
        transport,
        behaviour,
        keypair.public().to_peer_id(),
        libp2p::swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(config.idle_connection_timeout),
    ))
}
