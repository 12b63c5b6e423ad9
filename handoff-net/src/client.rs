//! The handle the rest of a node uses: a cloneable [`Client`] sending bounded commands to
//! the event loop, and the [`NetEvent`]s the loop delivers.

use std::sync::Arc;

use bytes::BytesMut;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use handoff_core::{DagId, FunctionId, NodeId, Value};
use libp2p::{Multiaddr, PeerId, request_response};
use tokio::sync::{mpsc, oneshot};

use crate::announce::{Announcement, NodeState};
use crate::error::{AnnounceError, ClientError, DialError, FetchError, RequestError, RespondError};
use crate::protocol::{Chunk, FetchRequest, Request, RequestKind, Response};

/// What the [`Client`] asks of the event loop; each carries its reply channel.
pub(crate) enum Command {
    Request {
        node: NodeId,
        request: Request,
        reply: oneshot::Sender<Result<Response, RequestError>>,
    },
    Respond {
        channel: ResponseChannel,
        response: Response,
        reply: oneshot::Sender<Result<(), RespondError>>,
    },
    Dial {
        address: Multiaddr,
        reply: oneshot::Sender<Result<NodeId, DialError>>,
    },
    Announce {
        state: NodeState,
        reply: oneshot::Sender<Result<(), AnnounceError>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<Announcement>>,
    },
    Connected {
        reply: oneshot::Sender<Vec<NodeId>>,
    },
    ListenAddresses {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Something the network layer tells the node. Read them from the receiver `start`
/// returns; when it is full, inbound requests are refused with
/// [`RpcError::Busy`](crate::RpcError::Busy), while membership events (peers announced,
/// gone, refused) wait for room and arrive in order: none is lost.
#[derive(Debug)]
pub enum NetEvent {
    /// A verified peer sent a request. Answer it with [`Client::respond`] before the
    /// requester's request timeout; dropping the channel fails the request.
    /// ([`Request::Hello`] is answered by the event loop and never shows up here.)
    InboundRequest {
        /// The sender.
        node: NodeId,
        /// The request.
        request: Request,
        /// Where the answer goes.
        channel: ResponseChannel,
    },
    /// A peer announced itself for the first time, or announced a change (repeated
    /// identical announcements do not show up here; [`Client::peers`] has the latest).
    PeerAnnounced(Announcement),
    /// A peer left the table of live peers.
    PeerGone {
        /// The peer.
        node: NodeId,
        /// Why.
        reason: GoneReason,
    },
    /// A peer was refused and disconnected.
    PeerRefused {
        /// The peer.
        node: NodeId,
        /// Why.
        reason: Refusal,
    },
}

/// Why a peer left the table of live peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoneReason {
    /// Its last connection closed.
    Disconnected,
    /// No announcement came from it within the peer time-to-live.
    Expired,
    /// It was refused (see [`NetEvent::PeerRefused`]).
    Refused,
    /// Dialing it failed while no connection reached it: nothing answered at its
    /// addresses, or whatever answered was not that peer (it may have died without its
    /// connections to this node closing, or while gossip still relayed its last
    /// announcement).
    Unreachable,
}

/// Why a peer was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It speaks another protocol version.
    VersionMismatch {
        /// This node's version.
        ours: String,
        /// The peer's.
        theirs: String,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::VersionMismatch { ours, theirs } => {
                write!(
                    f,
                    "protocol version mismatch (ours `{ours}`, theirs `{theirs}`)"
                )
            }
        }
    }
}

/// Where the answer to one inbound request goes; pass it to [`Client::respond`].
#[derive(Debug)]
pub struct ResponseChannel {
    pub(crate) node: NodeId,
    pub(crate) kind: RequestKind,
    pub(crate) inner: request_response::ResponseChannel<Response>,
}

impl ResponseChannel {
    /// The node that sent the request.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The kind of request it answers.
    pub fn kind(&self) -> RequestKind {
        self.kind
    }

    /// False once the request can no longer be answered (it timed out, or the
    /// connection closed).
    pub fn is_open(&self) -> bool {
        self.inner.is_open()
    }
}

/// The remote side's answer to [`Client::hello`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Its protocol version (equal to ours: a mismatch is an error).
    pub version: String,
    /// Its human-readable name.
    pub name: String,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct FetchSettings {
    pub(crate) chunk: u32,
    pub(crate) window: usize,
    pub(crate) max_value: u64,
}

/// Talks to the node's network event loop. Cheap to clone; every call is a bounded
/// command with a oneshot reply. The loop stops on [`shutdown`](Self::shutdown), or when
/// every client is dropped.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    node: NodeId,
    peer: PeerId,
    name: Arc<str>,
    version: Arc<str>,
    fetch: FetchSettings,
    handshakes: Arc<HandshakeLog>,
}

/// The connections that failed during the handshake, kept by the network layer.
#[derive(Debug, Default)]
pub(crate) struct HandshakeLog {
    failures: std::sync::atomic::AtomicU64,
    /// The address of the last one (the peer's, dialed or dialing in).
    last: std::sync::Mutex<String>,
    /// This node's key's fingerprint.
    fingerprint: String,
}

impl HandshakeLog {
    pub(crate) fn new(fingerprint: String) -> Self {
        HandshakeLog {
            fingerprint,
            ..Self::default()
        }
    }

    /// Records one more failure, with the peer's address.
    pub(crate) fn failed(&self, address: String) {
        self.failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = address;
    }
}

/// Connections that failed during the handshake ([`Client::handshake_failures`]): with a
/// cluster key, what a peer holding another key looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeFailures {
    /// How many, since the node started.
    pub count: u64,
    /// The peer address of the last one.
    pub last_address: String,
    /// This node's key's fingerprint (`none` for an insecure node), to compare with the
    /// peers'.
    pub fingerprint: String,
}

impl std::fmt::Display for HandshakeFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} connection(s) failed during the handshake, the last with {}: likely a cluster key mismatch (this node's key has fingerprint {}: compare the peers')",
            self.count, self.last_address, self.fingerprint
        )
    }
}

impl Client {
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        peer: PeerId,
        name: &str,
        version: &str,
        fetch: FetchSettings,
        handshakes: Arc<HandshakeLog>,
    ) -> Self {
        Client {
            commands,
            node: crate::ids::node_id_of(&peer),
            peer,
            name: name.into(),
            version: version.into(),
            fetch,
            handshakes,
        }
    }

    /// The connections that failed during the handshake since the node started (a cluster
    /// key mismatch, most likely), or `None` when none did.
    pub fn handshake_failures(&self) -> Option<HandshakeFailures> {
        let count = self
            .handshakes
            .failures
            .load(std::sync::atomic::Ordering::Relaxed);
        (count > 0).then(|| HandshakeFailures {
            count,
            last_address: self
                .handshakes
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            fingerprint: self.handshakes.fingerprint.clone(),
        })
    }

    /// This node's id (its `PeerId` in base58).
    pub fn node_id(&self) -> &NodeId {
        &self.node
    }

    /// This node's libp2p `PeerId`.
    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    /// This node's human-readable name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The protocol version this node speaks.
    pub fn protocol_version(&self) -> &str {
        &self.version
    }

    async fn call<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| ClientError::Stopped)?;
        rx.await.map_err(|_| ClientError::Stopped)
    }

    /// The addresses the node listens on (with the actual ports when port 0 was asked for).
    pub async fn listen_addresses(&self) -> Result<Vec<Multiaddr>, ClientError> {
        self.call(|reply| Command::ListenAddresses { reply }).await
    }

    /// The live peers, with their latest announcement, ordered by node id.
    pub async fn peers(&self) -> Result<Vec<Announcement>, ClientError> {
        self.call(|reply| Command::Peers { reply }).await
    }

    /// The nodes this node has a connection to (verified or not).
    pub async fn connected(&self) -> Result<Vec<NodeId>, ClientError> {
        self.call(|reply| Command::Connected { reply }).await
    }

    /// Dials an address and waits until the connection is open (or failed, within the
    /// connection timeout). Returns the node at that address.
    pub async fn dial(&self, address: Multiaddr) -> Result<NodeId, DialError> {
        self.call(|reply| Command::Dial { address, reply })
            .await
            .map_err(|_| DialError::Stopped)?
    }

    /// Replaces what this node announces, and publishes it at once.
    pub async fn announce(&self, state: NodeState) -> Result<(), AnnounceError> {
        self.call(|reply| Command::Announce { state, reply })
            .await
            .map_err(|_| AnnounceError::Stopped)?
    }

    /// Sends a request and waits for its response. A [`Response::Error`] comes back as
    /// [`RequestError::Remote`].
    pub async fn request(&self, node: &NodeId, request: Request) -> Result<Response, RequestError> {
        let node = node.clone();
        self.call(|reply| Command::Request {
            node,
            request,
            reply,
        })
        .await
        .map_err(|_| RequestError::Stopped)?
    }

    /// Says hello: checks that the node speaks our protocol version, and learns its name.
    pub async fn hello(&self, node: &NodeId) -> Result<Hello, RequestError> {
        let request = Request::Hello {
            version: self.version.to_string(),
            name: self.name.to_string(),
        };
        match self.request(node, request).await? {
            Response::Hello { version, name } if version == *self.version => {
                Ok(Hello { version, name })
            }
            Response::Hello { version, .. } => Err(RequestError::Refused {
                node: node.clone(),
                ours: self.version.to_string(),
                theirs: version,
            }),
            other => Err(RequestError::UnexpectedResponse {
                node: node.clone(),
                expected: "Hello",
                got: other.kind(),
            }),
        }
    }

    /// Fetches one chunk of a value.
    pub async fn fetch_chunk(
        &self,
        node: &NodeId,
        fetch: FetchRequest,
    ) -> Result<Chunk, RequestError> {
        match self.request(node, Request::Fetch(fetch)).await? {
            Response::Chunk(chunk) => Ok(chunk),
            other => Err(RequestError::UnexpectedResponse {
                node: node.clone(),
                expected: "Chunk",
                got: other.kind(),
            }),
        }
    }

    /// Fetches a whole value stored on `node`, in chunks of the configured size with a
    /// few chunk requests in flight, so no frame exceeds the response limit whatever the
    /// value's size. The value's size is checked against the configured maximum before
    /// its buffer is allocated.
    pub async fn fetch_value(
        &self,
        node: &NodeId,
        dag: &DagId,
        function: &FunctionId,
    ) -> Result<Value, FetchError> {
        let chunk_len = u64::from(self.fetch.chunk);
        let ask = |offset: u64| {
            self.fetch_chunk(
                node,
                FetchRequest {
                    dag: dag.clone(),
                    function: function.clone(),
                    offset,
                    max_len: self.fetch.chunk,
                },
            )
        };
        let first = ask(0).await?;
        let total_len = first.total_len;
        if total_len > self.fetch.max_value || usize::try_from(total_len).is_err() {
            return Err(FetchError::TooLarge {
                node: node.clone(),
                dag: dag.clone(),
                function: function.clone(),
                total_len,
                max: self.fetch.max_value,
            });
        }
        let check = |chunk: &Chunk, offset: u64| {
            let expected_len = chunk_len.min(total_len.saturating_sub(offset));
            if chunk.offset != offset
                || chunk.total_len != total_len
                || chunk.bytes.len() as u64 != expected_len
            {
                Err(FetchError::BadChunk {
                    node: node.clone(),
                    dag: dag.clone(),
                    function: function.clone(),
                    expected_offset: offset,
                    offset: chunk.offset,
                    expected_len,
                    len: chunk.bytes.len() as u64,
                    expected_total: total_len,
                    total_len: chunk.total_len,
                })
            } else {
                Ok(())
            }
        };
        check(&first, 0)?;
        if first.bytes.len() as u64 == total_len {
            return Ok(Value::from_msgpack(first.bytes));
        }
        // The buffer grows with the bytes that actually arrive: the length a peer claims
        // is not trusted with an allocation (at most a window of chunks ahead).
        let ahead = chunk_len.saturating_mul(self.fetch.window as u64 + 1);
        let mut buffer = BytesMut::with_capacity(total_len.min(ahead) as usize);
        buffer.extend_from_slice(&first.bytes);
        let mut next = chunk_len;
        let mut in_flight = FuturesOrdered::new();
        loop {
            while in_flight.len() < self.fetch.window && next < total_len {
                let offset = next;
                in_flight.push_back(async move { (offset, ask(offset).await) });
                next += chunk_len;
            }
            let Some((offset, chunk)) = in_flight.next().await else {
                break;
            };
            let chunk = chunk?;
            check(&chunk, offset)?;
            buffer.extend_from_slice(&chunk.bytes);
        }
        Ok(Value::from_msgpack(buffer.freeze()))
    }

    /// Answers an inbound request.
    pub async fn respond(
        &self,
        channel: ResponseChannel,
        response: Response,
    ) -> Result<(), RespondError> {
        self.call(|reply| Command::Respond {
            channel,
            response,
            reply,
        })
        .await
        .map_err(|_| RespondError::Stopped)?
    }

    /// Stops the event loop: closes the listeners and every connection, and waits until
    /// the loop has ended. Other clones then get [`ClientError::Stopped`] (or their
    /// operation's `Stopped`).
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        self.call(|reply| Command::Shutdown { reply }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// Compile-time check: the client and the futures of its methods can move between
    /// threads (and so be spawned, or awaited from any actor).
    #[allow(dead_code)]
    fn client_futures_are_send(client: Client, node: NodeId, dag: DagId, f: FunctionId) {
        fn assert_clone_sync<T: Clone + Send + Sync>() {}
        assert_clone_sync::<Client>();
        assert_send(&client.hello(&node));
        assert_send(&client.fetch_value(&node, &dag, &f));
        assert_send(&client.request(&node, Request::Resources { node: node.clone() }));
        assert_send(&client.peers());
        assert_send(&client.announce(NodeState::default()));
        assert_send(&client.shutdown());
    }

    #[allow(dead_code)]
    fn start_is_send(config: crate::Config) {
        assert_send(&crate::start(config));
    }
}
