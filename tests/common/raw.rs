//! A hostile peer that holds the cluster key but speaks no Handoff: a bare libp2p swarm
//! (TCP, the key's pnet, Noise, yamux, as a node builds it) that opens request streams
//! on the node protocol and writes whatever bytes it is given, without the framing's
//! rules: garbage, lengths above the limit, truncated frames, deep nesting. It runs no
//! identify and no gossip, so the node never learns what it is.

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use handoff::ClusterKey;
use libp2p::core::transport::upgrade::Version;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, Transport, noise, tcp, yamux};

/// Writes a request's bytes as they are and reads any answer whole (up to 4 MiB).
#[derive(Clone, Default)]
struct Raw;

impl request_response::Codec for Raw {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, _: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        Err(io::Error::other("this peer serves nothing"))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut out = Vec::new();
        io.take(4 << 20).read_to_end(&mut out).await?;
        Ok(out)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&request).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        Err(io::Error::other("this peer serves nothing"))
    }
}

/// Frames no node may accept, each named: `(what, bytes)`. `noise` varies the garbage.
pub fn hostile_frames(noise: u64) -> Vec<(&'static str, Vec<u8>)> {
    let mut state = noise | 1;
    let mut garbage = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    let framed = |body: Vec<u8>| {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend(body);
        out
    };
    let mut above_limit = u32::MAX.to_be_bytes().to_vec();
    above_limit.extend(garbage(64));
    let mut truncated = 1000_u32.to_be_bytes().to_vec();
    truncated.extend(garbage(10));
    // A MessagePack array of one array of one array… far deeper than any request.
    let deep = framed(vec![0x91; 100_000]);
    // A map announcing 2^32-1 entries in five bytes.
    let huge_map = framed(vec![0xdf, 0xff, 0xff, 0xff, 0xff]);
    vec![
        ("garbage in a frame", framed(garbage(512))),
        ("a length of 4 GiB", above_limit),
        ("a truncated frame", truncated),
        ("deep nesting", deep),
        ("a map claiming 4 billion entries", huge_map),
        ("2 MiB of garbage", framed(garbage(2 << 20))),
        ("no length at all", vec![0x00, 0x01]),
    ]
}

/// Sends every frame of `frames` to the node at `address` (ending in `/p2p/<id>`) over one
/// connection made with `key`, each on a stream of its own, all at once; returns how many
/// streams the node answered with bytes (a node refuses these by closing the stream), or
/// why no connection could be made (after three tries).
pub async fn send_raw(
    key: &ClusterKey,
    address: &Multiaddr,
    frames: Vec<Vec<u8>>,
) -> Result<usize, String> {
    let mut failures = Vec::new();
    for _ in 0..3 {
        match send_raw_once(key, address, frames.clone()).await {
            Ok(answered) => return Ok(answered),
            Err(reason) => failures.push(reason),
        }
    }
    Err(failures.join("; "))
}

async fn send_raw_once(
    key: &ClusterKey,
    address: &Multiaddr,
    frames: Vec<Vec<u8>>,
) -> Result<usize, String> {
    let peer = peer_of(address).unwrap_or_else(|| panic!("{address} names no peer"));
    let psk: PreSharedKey = key.to_swarm_key().parse().expect("a swarm key");
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let transport = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
        .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
        .upgrade(Version::V1Lazy)
        .authenticate(noise::Config::new(&keypair).expect("noise"))
        .multiplex(yamux::Config::default())
        .boxed();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|_| transport)
        .expect("transport")
        .with_behaviour(|_| {
            request_response::Behaviour::<Raw>::new(
                [(
                    StreamProtocol::new(handoff_net::RPC_PROTOCOL),
                    ProtocolSupport::Outbound,
                )],
                request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
            )
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(5)))
        .build();
    swarm.dial(address.clone()).expect("dial");
    let mut waiting = 0;
    let mut answered = 0;
    let mut frames = Some(frames);
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let event = tokio::time::timeout_at(end, swarm.select_next_some())
            .await
            .expect("the raw peer's requests end in time");
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == peer => {
                for frame in frames.take().into_iter().flatten() {
                    swarm.behaviour_mut().send_request(&peer_id, frame);
                    waiting += 1;
                }
            }
            SwarmEvent::OutgoingConnectionError { error, .. } => {
                return Err(format!("could not connect to {address}: {error}"));
            }
            SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            }) => {
                // A stream closed without a byte is a refusal.
                answered += usize::from(!response.is_empty());
                waiting -= 1;
            }
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. }) => {
                waiting -= 1;
            }
            _ => {}
        }
        if frames.is_none() && waiting == 0 {
            return Ok(answered);
        }
    }
}

/// The peer id in an address ending in `/p2p/<id>`.
pub fn peer_of(address: &Multiaddr) -> Option<PeerId> {
    match address.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}
