//! What a keyed peer that never completes identify can make a node keep: a peer that
//! speaks only the request-response protocol (no identify, no gossip), so the node never
//! verifies it unless it says Hello.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use libp2p::request_response::{self, Message, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm};
use tokio::sync::{mpsc, oneshot};

use super::refused::MAX_REFUSED_VERSION_BYTES;
use super::{MAX_HELD, MAX_HELD_PER_PEER};
use crate::Client;
use crate::client::{NetEvent, Refusal};
use crate::codec::Codec;
use crate::config::Config;
use crate::key::ClusterKey;
use crate::protocol::{PROTOCOL_VERSION, RPC_PROTOCOL, Request, Response, RpcError};
use handoff_core::NodeId;

/// How long any single wait may take before the test is declared hung.
const DEADLINE: Duration = Duration::from_secs(30);

async fn guarded<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(out) => out,
        Err(_) => panic!("`{what}` did not finish within {DEADLINE:?}"),
    }
}

/// What became of a request the rogue sent: the answer, or why none came.
type Outcome = Result<Response, String>;

enum Order {
    Dial(Multiaddr, oneshot::Sender<PeerId>),
    Send(PeerId, Box<Request>, oneshot::Sender<Outcome>),
}

/// A peer with the cluster key that speaks only the request-response protocol.
struct Rogue {
    orders: mpsc::Sender<Order>,
}

impl Rogue {
    fn start(key: &ClusterKey) -> Rogue {
        let config = Config::builder(key.clone()).build().expect("config");
        let transport = crate::swarm::transport(&config).expect("transport");
        // Its own requests wait long: only the node's timeout ends them.
        let rpc = request_response::Behaviour::with_codec(
            Codec::new(config.max_request_bytes, config.max_response_bytes),
            [(StreamProtocol::new(RPC_PROTOCOL), ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(120)),
        );
        let mut swarm = Swarm::new(
            transport,
            rpc,
            config.keypair.public().to_peer_id(),
            libp2p::swarm::Config::with_tokio_executor()
                .with_idle_connection_timeout(Duration::from_secs(120)),
        );
        let (orders, mut rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut dials = HashMap::new();
            let mut waiting = HashMap::new();
            loop {
                tokio::select! {
                    order = rx.recv() => match order {
                        None => break,
                        Some(Order::Dial(address, reply)) => {
                            let opts = DialOpts::unknown_peer_id().address(address).build();
                            dials.insert(opts.connection_id(), reply);
                            swarm.dial(opts).expect("dial");
                        }
                        Some(Order::Send(peer, request, reply)) => {
                            let id = swarm.behaviour_mut().send_request(&peer, *request);
                            waiting.insert(id, reply);
                        }
                    },
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::ConnectionEstablished { peer_id, connection_id, .. } => {
                            if let Some(reply) = dials.remove(&connection_id) {
                                let _ = reply.send(peer_id);
                            }
                        }
                        SwarmEvent::Behaviour(request_response::Event::Message {
                            message: Message::Response { request_id, response },
                            ..
                        }) => {
                            if let Some(reply) = waiting.remove(&request_id) {
                                let _ = reply.send(Ok(response));
                            }
                        }
                        SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                            request_id,
                            error,
                            ..
                        }) => {
                            if let Some(reply) = waiting.remove(&request_id) {
                                let _ = reply.send(Err(error.to_string()));
                            }
                        }
                        _ => {}
                    },
                }
            }
        });
        Rogue { orders }
    }

    async fn dial(&self, address: Multiaddr) -> PeerId {
        let (reply, rx) = oneshot::channel();
        self.orders
            .send(Order::Dial(address, reply))
            .await
            .expect("rogue running");
        guarded("the rogue's connection", rx)
            .await
            .expect("connected")
    }

    /// Sends a request; the receiver gets its outcome.
    async fn send(&self, peer: PeerId, request: Request) -> oneshot::Receiver<Outcome> {
        let (reply, rx) = oneshot::channel();
        self.orders
            .send(Order::Send(peer, Box::new(request), reply))
            .await
            .expect("rogue running");
        rx
    }

    /// Sends requests; the receivers get their outcomes.
    async fn send_all(
        &self,
        peer: PeerId,
        requests: impl Iterator<Item = Request>,
    ) -> Vec<oneshot::Receiver<Outcome>> {
        let mut sent = Vec::new();
        for request in requests {
            sent.push(self.send(peer, request).await);
        }
        sent
    }
}

async fn outcome(rx: oneshot::Receiver<Outcome>) -> Outcome {
    guarded("an answer to the rogue", rx)
        .await
        .expect("rogue running")
}

/// A node on 127.0.0.1 with this request timeout: its client, events and address.
async fn victim(
    key: &ClusterKey,
    request_timeout: Duration,
) -> (Client, mpsc::Receiver<NetEvent>, Multiaddr) {
    let config = Config::builder(key.clone())
        .name("victim")
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"))
        .request_timeout(request_timeout)
        .build()
        .expect("config");
    let (client, events) = guarded("start", crate::start(config)).await.expect("start");
    let address = client
        .listen_addresses()
        .await
        .expect("addresses")
        .into_iter()
        .next()
        .expect("one address");
    (client, events, address)
}

fn resources(tag: String) -> Request {
    Request::Resources {
        node: NodeId::new(tag),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_held_for_unidentified_peers_are_bounded_per_peer_and_in_all() {
    let key = ClusterKey::generate();
    let (client, _events, address) = victim(&key, Duration::from_secs(60)).await;
    let rogues: Vec<Rogue> = (0..=MAX_HELD / MAX_HELD_PER_PEER)
        .map(|_| Rogue::start(&key))
        .collect();
    let (last, filling) = rogues.split_last().expect("rogues");
    for rogue in filling {
        let peer = rogue.dial(address.clone()).await;
        // The node holds MAX_HELD_PER_PEER of them (until their timeout, a minute away)
        // and answers the one that arrives last with Busy, at once.
        let sent = rogue
            .send_all(peer, (0..=MAX_HELD_PER_PEER).map(|_| Request::Stats))
            .await;
        let (first, _, _held) =
            guarded("the first answer", futures::future::select_all(sent)).await;
        let first = first.expect("rogue running");
        assert!(
            matches!(
                first,
                Ok(Response::Error(RpcError::Busy { pending, limit }))
                    if pending as usize == MAX_HELD_PER_PEER && limit as usize == MAX_HELD_PER_PEER
            ),
            "{first:?}"
        );
    }
    // Every unidentified peer together holds MAX_HELD: a new one gets Busy at once.
    let peer = last.dial(address).await;
    let answer = outcome(last.send(peer, Request::Stats).await).await;
    assert!(
        matches!(
            answer,
            Ok(Response::Error(RpcError::Busy { pending, limit }))
                if pending as usize == MAX_HELD && limit as usize == MAX_HELD
        ),
        "{answer:?}"
    );
    client.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_requests_are_dropped_when_they_time_out() {
    let key = ClusterKey::generate();
    let (client, mut events, address) = victim(&key, Duration::from_secs(1)).await;
    let rogue = Rogue::start(&key);
    let peer = rogue.dial(address).await;

    // Held until the node's request timeout ends them (the rogue's own is far longer).
    let stale = rogue
        .send_all(
            peer,
            (0..MAX_HELD_PER_PEER).map(|i| resources(format!("stale-{i}"))),
        )
        .await;
    for answer in stale {
        let answer = outcome(answer).await;
        assert!(answer.is_err(), "{answer:?}");
    }
    // The timed-out ones left room for as many again, and the node is told who the
    // rogue is: only the live requests reach the application.
    let fresh = rogue
        .send_all(
            peer,
            (0..MAX_HELD_PER_PEER).map(|i| resources(format!("fresh-{i}"))),
        )
        .await;
    let hello = Request::Hello {
        version: PROTOCOL_VERSION.to_owned(),
        name: "rogue".to_owned(),
    };
    let hello = outcome(rogue.send(peer, hello).await).await;
    assert!(matches!(hello, Ok(Response::Hello { .. })), "{hello:?}");
    let mut served = 0;
    while served < MAX_HELD_PER_PEER {
        let event = guarded("an inbound request", events.recv())
            .await
            .expect("events");
        let NetEvent::InboundRequest {
            request: Request::Resources { node },
            channel,
            ..
        } = event
        else {
            continue;
        };
        assert!(
            node.as_str().starts_with("fresh-"),
            "a timed-out request reached the application: {node}"
        );
        client
            .respond(channel, Response::Ack)
            .await
            .expect("respond");
        served += 1;
    }
    for answer in fresh {
        let answer = outcome(answer).await;
        assert!(matches!(answer, Ok(Response::Ack)), "{answer:?}");
    }
    client.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_peers_version_is_kept_short() {
    let key = ClusterKey::generate();
    let (client, mut events, address) = victim(&key, Duration::from_secs(60)).await;
    let rogue = Rogue::start(&key);
    let peer = rogue.dial(address).await;
    let short = MAX_REFUSED_VERSION_BYTES + '…'.len_utf8();

    let hello = Request::Hello {
        version: "v".repeat(512 << 10),
        name: "rogue".to_owned(),
    };
    let answer = outcome(rogue.send(peer, hello).await).await;
    match answer {
        Ok(Response::Error(RpcError::VersionMismatch { theirs, .. })) => {
            assert!(theirs.len() <= short, "{} bytes echoed", theirs.len());
        }
        other => panic!("{other:?}"),
    }
    let refused = guarded("the refusal", async {
        loop {
            if let NetEvent::PeerRefused {
                reason: Refusal::VersionMismatch { theirs, .. },
                ..
            } = events.recv().await.expect("events")
            {
                return theirs;
            }
        }
    })
    .await;
    assert!(refused.len() <= short, "{} bytes reported", refused.len());
    client.shutdown().await.expect("shutdown");
}
