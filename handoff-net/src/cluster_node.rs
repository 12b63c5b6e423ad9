//! A node that is both an actor runtime (`handoff-actors`) and a cluster member: the
//! bridge between the network's events and the node's actors.

use std::sync::Arc;
use std::time::Duration;

use handoff_actors::{
    CacheEncoded, FetchFailed, GetEncoded, NodeConfig, NodeError, NodeHandle, Transport,
    WaitLocation, start_node,
};
use handoff_core::{CodeName, DagId, FunctionId, NodeId, Resources, Value};
use tokio::sync::{mpsc, watch};

use crate::announce::{Announcement, NodeState};
use crate::client::{Client, NetEvent, ResponseChannel};
use crate::config::Config;
use crate::error::{AnnounceError, ClientError, RequestError, StartError};
use crate::protocol::{ExecuteRequest, FetchRequest, NodeStats, Request, Response, RpcError};
use crate::transport::{NetTransport, TransferStats, serve_executes};

/// A node of the cluster as [`ClusterNode::discover_nodes`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredNode {
    /// Its id.
    pub node: NodeId,
    /// Its human-readable name.
    pub name: String,
    /// Its total capabilities.
    pub capabilities: Resources,
    /// The code names in its registry.
    pub code_names: Vec<CodeName>,
    /// It is draining: it takes no new work and leaves once what it runs and holds is
    /// done with.
    pub draining: bool,
}

impl DiscoveredNode {
    fn from_announcement(announcement: Announcement) -> Self {
        DiscoveredNode {
            node: announcement.node,
            name: announcement.name,
            capabilities: announcement.state.capabilities,
            code_names: announcement.state.code_names,
            draining: announcement.state.draining,
        }
    }
}

/// How often a draining node looks at what it still runs and holds.
const DRAIN_CHECK: Duration = Duration::from_millis(20);

/// How a [`ClusterNode::drain`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// How long it took.
    pub waited: Duration,
    /// Functions of other nodes still running here (0 unless it timed out).
    pub running: u64,
    /// Values of other nodes' executions still held here (0 unless it timed out).
    pub values: usize,
}

impl Drained {
    /// True when nothing was left: no function running, no value held.
    pub fn is_complete(&self) -> bool {
        self.running == 0 && self.values == 0
    }
}

impl std::fmt::Display for Drained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_complete() {
            write!(
                f,
                "drained in {:.1?}: nothing running, no value held",
                self.waited
            )
        } else {
            write!(
                f,
                "the drain timed out after {:.1?} with {} function(s) running and {} value(s) held",
                self.waited, self.running, self.values
            )
        }
    }
}

/// Why [`ClusterNode::drain`] failed.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The node's actors did not answer (they stopped).
    #[error("the node's actors did not answer: {source}")]
    Node {
        /// The cause.
        source: NodeError,
    },
    /// The draining state could not be announced (the network layer stopped).
    #[error("cannot announce that the node drains: {source}")]
    Announce {
        /// The cause.
        source: AnnounceError,
    },
}

/// Why [`ClusterNode::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterStartError {
    /// The actors node's id is not the id the network configuration gives the node
    /// (build the [`NodeConfig`] with [`Config::node_id`]).
    #[error("the node config's id {node} is not the network's node id {network}")]
    NodeIdMismatch {
        /// The id in the [`NodeConfig`].
        node: NodeId,
        /// The id of the network configuration's key pair.
        network: NodeId,
    },
    /// The actors node did not start.
    #[error("the actors node did not start: {source}")]
    Node {
        /// What went wrong.
        #[source]
        source: NodeError,
    },
    /// The network layer did not start.
    #[error("the network layer did not start: {source}")]
    Net {
        /// What went wrong.
        #[source]
        source: StartError,
    },
}

/// Why a question about a node's resources ([`ClusterNode::node_resources`],
/// [`ClusterNode::resources_available`]) failed.
#[derive(Debug, thiserror::Error)]
pub enum ResourcesQueryError {
    /// The local node's actors did not answer.
    #[error("the local node did not answer: {source}")]
    Local {
        /// What went wrong.
        #[source]
        source: NodeError,
    },
    /// The request to the remote node failed.
    #[error("asking node {node} for its resources failed: {source}")]
    Remote {
        /// The node asked.
        node: NodeId,
        /// What went wrong.
        #[source]
        source: RequestError,
    },
    /// The remote node answered something other than its resources.
    #[error("node {node} answered {got} to a Resources request")]
    UnexpectedResponse {
        /// The node asked.
        node: NodeId,
        /// The kind of response it sent.
        got: &'static str,
    },
}

/// Why [`ClusterNode::register_node`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterCapacityError {
    /// The local node's actors did not answer.
    #[error("the local node did not register the capacity: {source}")]
    Local {
        /// What went wrong.
        #[source]
        source: NodeError,
    },
    /// The new state could not be announced.
    #[error("the new capacity could not be announced: {source}")]
    Announce {
        /// What went wrong.
        #[source]
        source: AnnounceError,
    },
    /// The request to the remote node failed.
    #[error("registering the capacity of node {node} failed: {source}")]
    Remote {
        /// The node.
        node: NodeId,
        /// What went wrong.
        #[source]
        source: RequestError,
    },
    /// The remote node answered something other than an acknowledgement.
    #[error("node {node} answered {got} to a Register request")]
    UnexpectedResponse {
        /// The node.
        node: NodeId,
        /// The kind of response it sent.
        got: &'static str,
    },
}

/// Why [`ClusterNode::get_value`] failed.
#[derive(Debug, thiserror::Error)]
pub enum GetValueError {
    /// The value is not in the local store (or the local node did not answer).
    #[error("local read failed: {source}")]
    Local {
        /// What went wrong.
        #[source]
        source: NodeError,
    },
    /// The value is not held here and no node is known to hold it.
    #[error("`{id}` of DAG `{dag}` is not held here and no node is known to hold it")]
    NotFound {
        /// The DAG.
        dag: DagId,
        /// The value.
        id: FunctionId,
    },
    /// The only copy lived on a node that left the cluster. Nothing can rebuild it from
    /// here: values of a running execution are recomputed by that execution, but this
    /// one is asked for outside of one (stored by hand, or its execution has ended).
    #[error(
        "`{id}` of DAG `{dag}` was lost with node `{node}`, which left the cluster; outside its execution nothing can rebuild it"
    )]
    Lost {
        /// The DAG.
        dag: DagId,
        /// The value.
        id: FunctionId,
        /// The node it lived on.
        node: NodeId,
    },
    /// The fetch from the remote node failed.
    #[error("fetch failed: {source}")]
    Fetch {
        /// What went wrong.
        #[source]
        source: FetchFailed,
    },
}

/// Why [`ClusterNode::discover_nodes`] failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// The local node's actors did not answer.
    #[error("the local node did not answer: {source}")]
    Local {
        /// What went wrong.
        #[source]
        source: NodeError,
    },
    /// The network layer has stopped.
    #[error("the network layer did not answer: {source}")]
    Net {
        /// What went wrong.
        #[source]
        source: ClientError,
    },
}

/// A node that is both an actor runtime and a cluster member.
///
/// [`start`](Self::start) it inside an actix `System`. A bridge task (local to the
/// system's thread) reads the network's events one at a time: each announced peer is
/// registered with the local resource manager (so the node's own `discover_nodes` lists
/// it), and inbound requests are answered from the local actors — `Resources` from the
/// resource manager, `Register` by setting this node's capacity and announcing it, `Fetch`
/// from the result store (in chunks of the value's cached MessagePack form), `Execute` by
/// running the function under this node's own reservation and reporting with `Finished`,
/// `Forget` by dropping a DAG's values.
///
/// It also installs the node's transport: a DAG executed through
/// [`node()`](Self::node) runs its functions on any live member whose registry has their
/// code, where their cost fits (see `docs/semantics.md`, "Across nodes").
#[derive(Debug)]
pub struct ClusterNode {
    node: NodeHandle,
    client: Client,
    codes: Arc<LocalCodes>,
    peers: watch::Receiver<Vec<DiscoveredNode>>,
    transport: NetTransport,
    bridge: Option<tokio::task::JoinHandle<()>>,
}

impl ClusterNode {
    /// Starts the actors node, then the network layer announcing the node's capabilities,
    /// free resources and code names (this replaces the state set in `net`), then the
    /// bridge. Call it from inside an actix `System`. The [`NodeConfig`]'s id must be
    /// [`net.node_id()`](Config::node_id).
    pub async fn start(node: NodeConfig, net: Config) -> Result<ClusterNode, ClusterStartError> {
        let network = net.node_id();
        if node.id() != &network {
            return Err(ClusterStartError::NodeIdMismatch {
                node: node.id().clone(),
                network,
            });
        }
        let codes = Arc::new(LocalCodes::of(&node));
        let grace = node.grace();
        let handle = start_node(node)
            .await
            .map_err(|source| ClusterStartError::Node { source })?;
        let state = local_state(&handle, &codes, false)
            .await
            .map_err(|source| ClusterStartError::Node { source })?;
        let mut net = net;
        net.state = state;
        let (max_request_bytes, max_response_bytes, max_in_flight) = (
            net.max_request_bytes(),
            net.max_response_bytes(),
            net.max_in_flight_per_peer(),
        );
        let remote_registration = net.allows_remote_registration();
        let (client, events) = crate::start(net)
            .await
            .map_err(|source| ClusterStartError::Net { source })?;
        let transport = NetTransport::new(
            client.clone(),
            handle.clone(),
            max_request_bytes,
            max_in_flight,
            grace,
        );
        handle
            .set_transport(Arc::new(transport.clone()))
            .await
            .map_err(|source| ClusterStartError::Node { source })?;
        let (peers_tx, peers) = watch::channel(Vec::new());
        let bridge = Bridge {
            node: handle.clone(),
            client: client.clone(),
            codes: Arc::clone(&codes),
            peers: peers_tx,
            transport: transport.clone(),
            max_response_bytes,
            remote_registration,
        };
        let bridge = actix::spawn(bridge.run(events));
        Ok(ClusterNode {
            node: handle,
            client,
            codes,
            peers,
            transport,
            bridge: Some(bridge),
        })
    }

    /// The actors node.
    pub fn node(&self) -> &NodeHandle {
        &self.node
    }

    /// The network client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        self.node.id()
    }

    /// The live peers, updated by the bridge each time one is announced, changes, or goes
    /// away. Await `changed()` on it to wait for discovery without polling.
    pub fn peer_changes(&self) -> watch::Receiver<Vec<DiscoveredNode>> {
        self.peers.clone()
    }

    /// This node first, then the live peers with what they last announced.
    pub async fn discover_nodes(&self) -> Result<Vec<DiscoveredNode>, DiscoverError> {
        let capabilities = self
            .node
            .node_resources(self.id().clone())
            .await
            .map_err(|source| DiscoverError::Local { source })?
            .map(|(capabilities, _)| capabilities)
            .unwrap_or_default();
        let mut nodes = vec![DiscoveredNode {
            node: self.id().clone(),
            name: self.client.name().to_owned(),
            capabilities,
            code_names: self.codes.names.clone(),
            draining: self.transport.is_draining(),
        }];
        let peers = self
            .client
            .peers()
            .await
            .map_err(|source| DiscoverError::Net { source })?;
        nodes.extend(peers.into_iter().map(DiscoveredNode::from_announcement));
        Ok(nodes)
    }

    /// A node's capacity and what it has free right now: this node's from the local
    /// resource manager, another's by asking it over the network. `None` when the node
    /// asked does not know itself (never for a live Handoff node).
    pub async fn node_resources(
        &self,
        node: &NodeId,
    ) -> Result<Option<(Resources, Resources)>, ResourcesQueryError> {
        if node == self.id() {
            return self
                .node
                .node_resources(node.clone())
                .await
                .map_err(|source| ResourcesQueryError::Local { source });
        }
        let request = Request::Resources { node: node.clone() };
        match self.client.request(node, request).await {
            Ok(Response::Resources {
                capabilities, free, ..
            }) => Ok(Some((capabilities, free))),
            Err(RequestError::Remote {
                error: RpcError::UnknownNode { .. },
                ..
            }) => Ok(None),
            Err(source) => Err(ResourcesQueryError::Remote {
                node: node.clone(),
                source,
            }),
            Ok(other) => Err(ResourcesQueryError::UnexpectedResponse {
                node: node.clone(),
                got: other.kind(),
            }),
        }
    }

    /// True when `node` could reserve `cost` right now (asked as in
    /// [`node_resources`](Self::node_resources)); false for a node that does not know
    /// itself.
    pub async fn resources_available(
        &self,
        node: &NodeId,
        cost: &Resources,
    ) -> Result<bool, ResourcesQueryError> {
        Ok(self
            .node_resources(node)
            .await?
            .is_some_and(|(_, free)| cost.fits_in(&free)))
    }

    /// Sets a node's capacity: this node's in the local resource manager (and announces
    /// it), another's by sending it [`Request::Register`].
    pub async fn register_node(
        &self,
        node: &NodeId,
        capabilities: Resources,
    ) -> Result<(), RegisterCapacityError> {
        if node == self.id() {
            return register_local(
                &self.node,
                &self.client,
                &self.codes,
                capabilities,
                self.transport.is_draining(),
            )
            .await;
        }
        match self
            .client
            .request(node, Request::Register { capabilities })
            .await
        {
            Ok(Response::Ack) => Ok(()),
            Ok(other) => Err(RegisterCapacityError::UnexpectedResponse {
                node: node.clone(),
                got: other.kind(),
            }),
            Err(source) => Err(RegisterCapacityError::Remote {
                node: node.clone(),
                source,
            }),
        }
    }

    /// A value, wherever it lives (the seed's `get_value`): from the local result store
    /// when it is held here; otherwise fetched from `from`, or from the node the local
    /// location registry names, and kept in the local store for the next reader (its
    /// registered location stays the origin's).
    pub async fn get_value(
        &self,
        dag: &DagId,
        id: &FunctionId,
        from: Option<&NodeId>,
    ) -> Result<Value, GetValueError> {
        match self.node.get_local_value(dag.clone(), id.clone()).await {
            Ok(value) => return Ok(value),
            Err(NodeError::NotFound { .. }) => {}
            Err(source) => return Err(GetValueError::Local { source }),
        }
        let holder = match from {
            Some(node) => Some(node.clone()),
            None => self
                .node
                .lookup_data_location(dag.clone(), id.clone())
                .await
                .map_err(|source| GetValueError::Local { source })?,
        };
        let Some(holder) = holder.filter(|h| h != self.id()) else {
            return Err(GetValueError::NotFound {
                dag: dag.clone(),
                id: id.clone(),
            });
        };
        if self.transport.is_gone(&holder) {
            return Err(GetValueError::Lost {
                dag: dag.clone(),
                id: id.clone(),
                node: holder,
            });
        }
        self.transport
            .fetch(dag.clone(), id.clone(), holder)
            .await
            .map_err(|source| match source {
                // It left while we asked.
                FetchFailed {
                    dag,
                    function,
                    node,
                    ..
                } if self.transport.is_gone(&node) => GetValueError::Lost {
                    dag,
                    id: function,
                    node,
                },
                source => GetValueError::Fetch { source },
            })
    }

    /// A value, wherever it lives (the seed's `get_result`): waits up to `timeout` for its
    /// location to be known here (registered when the function that makes it finishes),
    /// then reads it here or fetches it from that node as [`get_value`](Self::get_value)
    /// does.
    pub async fn get_result(
        &self,
        dag: &DagId,
        id: &FunctionId,
        timeout: std::time::Duration,
    ) -> Result<Value, GetValueError> {
        let wait = WaitLocation {
            dag: dag.clone(),
            id: id.clone(),
            timeout,
        };
        let holder = self
            .node
            .location_registry()
            .send(wait)
            .await
            .map_err(|_| GetValueError::Local {
                source: NodeError::Stopped {
                    node: self.id().clone(),
                },
            })?
            .map_err(|error| GetValueError::Local {
                source: NodeError::Wait(error),
            })?;
        self.get_value(dag, id, Some(&holder)).await
    }

    /// What a node holds and has reserved right now: this node's from its actors,
    /// another's by asking it ([`Request::Stats`]).
    pub async fn node_stats(&self, node: &NodeId) -> Result<NodeStats, ResourcesQueryError> {
        if node == self.id() {
            return node_stats(&self.node, &self.transport)
                .await
                .map_err(|source| ResourcesQueryError::Local { source });
        }
        match self.client.request(node, Request::Stats).await {
            Ok(Response::Stats(stats)) => Ok(stats),
            Ok(other) => Err(ResourcesQueryError::UnexpectedResponse {
                node: node.clone(),
                got: other.kind(),
            }),
            Err(source) => Err(ResourcesQueryError::Remote {
                node: node.clone(),
                source,
            }),
        }
    }

    /// What this node has fetched from other nodes so far.
    pub fn transfers(&self) -> TransferStats {
        self.transport.transfers()
    }

    /// Drops every value of a DAG held here and tells every live peer to drop theirs (for
    /// DAGs executed with `keep_values`); returns how many values were dropped here.
    pub async fn drop_dag(&self, dag: &DagId) -> Result<usize, NodeError> {
        let dropped = self.node.drop_dag(dag.clone()).await?;
        if let Ok(peers) = self.client.peers().await {
            let nodes = peers.into_iter().map(|p| p.node).collect();
            self.transport.forget(dag.clone(), nodes);
        }
        Ok(dropped)
    }

    /// Drains the node, the graceful first half of a stop: it announces that it is
    /// draining (peers stop placing work here, without counting the node lost), refuses
    /// new work, and waits, at most `timeout`, until nothing runs here for other nodes
    /// and no value of theirs is held here (the executions that made them ended, or the
    /// coordinators fetched what they needed and told it to forget; the values of a
    /// coordinator that left are dropped at once, as nobody can fetch them). So a node stopped
    /// after a complete drain leaves nothing that must be recomputed. Call
    /// [`shutdown`](Self::shutdown) next; the node stays in the cluster until then.
    pub async fn drain(&self, timeout: Duration) -> Result<Drained, DrainError> {
        let start = tokio::time::Instant::now();
        self.transport.set_draining();
        let state = local_state(&self.node, &self.codes, true)
            .await
            .map_err(|source| DrainError::Node { source })?;
        self.client
            .announce(state)
            .await
            .map_err(|source| DrainError::Announce { source })?;
        tracing::info!(
            ?timeout,
            "draining: no new work; waiting for what runs and what is held"
        );
        // The node's work ends in many places (remote tasks, the result store's frees):
        // its state is looked at every few milliseconds, not waited on.
        let mut tick = tokio::time::interval(DRAIN_CHECK);
        loop {
            tick.tick().await;
            // Nobody is left to fetch the values of a coordinator that left.
            self.transport.drop_orphaned().await;
            let running = self.transport.serving();
            let values = self
                .node
                .stored_values()
                .await
                .map_err(|source| DrainError::Node { source })?;
            let waited = start.elapsed();
            if (running == 0 && values == 0) || waited >= timeout {
                return Ok(Drained {
                    waited,
                    running,
                    values,
                });
            }
        }
    }

    /// Stops the network layer (closing every connection) and waits for the bridge to
    /// end. The node's actors stop with their actix `System`.
    pub async fn shutdown(mut self) -> Result<(), ClientError> {
        let stopped = self.client.shutdown().await;
        if let Some(bridge) = self.bridge.take() {
            // The bridge ends when the event channel closes; it does not panic.
            let _ = bridge.await;
        }
        stopped
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        if let Some(bridge) = self.bridge.take() {
            bridge.abort();
        }
    }
}

/// What this node announces: its capacity, what is free, its code names, whether it is
/// draining.
async fn local_state(
    node: &NodeHandle,
    codes: &LocalCodes,
    draining: bool,
) -> Result<NodeState, NodeError> {
    let (capabilities, free) = node
        .node_resources(node.id().clone())
        .await?
        .unwrap_or_default();
    Ok(NodeState {
        capabilities,
        free,
        code_names: codes.names.clone(),
        draining,
        signatures: codes.signatures.clone(),
    })
}

/// The codes of this node's registry, as it announces them: their names, and the
/// signatures of the typed ones.
#[derive(Debug)]
struct LocalCodes {
    names: Vec<CodeName>,
    signatures: Vec<(CodeName, String)>,
}

impl LocalCodes {
    fn of(node: &NodeConfig) -> LocalCodes {
        LocalCodes {
            names: node.code_names(),
            signatures: node
                .signatures()
                .into_iter()
                .map(|(code, types)| (code, types.to_string()))
                .collect(),
        }
    }
}

async fn register_local(
    node: &NodeHandle,
    client: &Client,
    codes: &LocalCodes,
    capabilities: Resources,
    draining: bool,
) -> Result<(), RegisterCapacityError> {
    node.register_node(node.id().clone(), capabilities)
        .await
        .map_err(|source| RegisterCapacityError::Local { source })?;
    let state = local_state(node, codes, draining)
        .await
        .map_err(|source| RegisterCapacityError::Local { source })?;
    client
        .announce(state)
        .await
        .map_err(|source| RegisterCapacityError::Announce { source })
}

/// Feeds the network's events to the node's actors, one at a time (so the work it takes
/// on is bounded by the event channel's capacity).
struct Bridge {
    node: NodeHandle,
    client: Client,
    codes: Arc<LocalCodes>,
    peers: watch::Sender<Vec<DiscoveredNode>>,
    transport: NetTransport,
    /// This node's response frame limit: no chunk larger than a frame carries is served.
    max_response_bytes: u32,
    /// Whether peers may set this node's capacity.
    remote_registration: bool,
}

impl Bridge {
    async fn run(self, mut events: mpsc::Receiver<NetEvent>) {
        while let Some(event) = events.recv().await {
            match event {
                NetEvent::PeerAnnounced(announcement) if announcement.state.draining => {
                    // It takes no new work, but is not lost: what runs there finishes and
                    // its values stay fetchable until it leaves.
                    let peer = announcement.node.clone();
                    if let Err(error) = self.node.peer_draining(peer.clone()).await {
                        tracing::debug!(%peer, "cannot stop placing work on the node: {error}");
                    }
                    self.transport.set_name(&peer, &announcement.name);
                    self.publish_peers().await;
                }
                NetEvent::PeerAnnounced(announcement) => {
                    let peer = announcement.node.clone();
                    let register = self.node.register_peer(
                        peer.clone(),
                        announcement.state.capabilities.clone(),
                        announcement.state.code_names.clone(),
                        announcement
                            .state
                            .signatures
                            .iter()
                            .map(|(code, types)| (code.clone(), Arc::from(types.as_str())))
                            .collect(),
                    );
                    if let Err(error) = register.await {
                        tracing::warn!(%peer, "cannot register the announced node: {error}");
                    }
                    self.transport.node_back(&peer);
                    self.transport.set_name(&peer, &announcement.name);
                    self.publish_peers().await;
                }
                NetEvent::PeerGone { node, .. } | NetEvent::PeerRefused { node, .. } => {
                    if let Err(error) = self.node.forget_peer(node.clone()).await {
                        tracing::debug!(%node, "cannot forget the node: {error}");
                    }
                    self.transport.node_gone(&node);
                    self.publish_peers().await;
                }
                NetEvent::InboundRequest {
                    node,
                    request,
                    channel,
                } => self.serve(node, request, channel).await,
            }
        }
    }

    async fn publish_peers(&self) {
        match self.client.peers().await {
            Ok(peers) => {
                let peers: Vec<_> = peers
                    .into_iter()
                    .map(DiscoveredNode::from_announcement)
                    .collect();
                self.peers.send_if_modified(|current| {
                    let changed = *current != peers;
                    if changed {
                        *current = peers;
                    }
                    changed
                });
            }
            Err(error) => tracing::debug!("cannot list the peers: {error}"),
        }
    }

    /// Answers a request: at once for the quick ones; from a task of its own for those
    /// that take a while (fetches, which may encode a value; executions, which answer
    /// `Accepted` and report later).
    async fn serve(&self, from: NodeId, request: Request, channel: ResponseChannel) {
        let kind = request.kind();
        let response = match request {
            Request::Execute(execute) => {
                let requests = vec![self.check_execute(&from, execute)];
                serve_executes(&self.transport, from, requests, channel, true);
                return;
            }
            Request::ExecuteBatch(batch) => {
                let requests = batch
                    .into_iter()
                    .map(|e| self.check_execute(&from, e))
                    .collect();
                serve_executes(&self.transport, from, requests, channel, false);
                return;
            }
            Request::Finished(report) => {
                self.transport.finished(&from, report);
                Response::Ack
            }
            Request::FinishedBatch(reports) => {
                for report in reports {
                    self.transport.finished(&from, report);
                }
                Response::Ack
            }
            Request::Started {
                dag,
                function,
                attempt,
            } => {
                self.transport.started(&from, dag, function, attempt);
                Response::Ack
            }
            Request::StageRun(run) => {
                let (transport, client) = (self.transport.clone(), self.client.clone());
                actix::spawn(async move {
                    let response = transport.serve_stage(&from, *run).await;
                    if let Err(error) = client.respond(channel, response).await {
                        tracing::debug!(node = %from, "could not answer a stage request: {error}");
                    }
                });
                return;
            }
            Request::StageClose { key } => {
                self.transport.close_hosted(&from, key);
                Response::Ack
            }
            Request::Forget { dag } => {
                if self.owned_elsewhere(&from, &dag) {
                    tracing::warn!(node = %from, %dag, "refused to forget a DAG another node coordinates");
                    Response::Error(RpcError::NotOwner { dag })
                } else {
                    self.transport.stop_serving(&dag);
                    self.forget(dag).await
                }
            }
            Request::Fetch(mut fetch) => {
                // This node's own execution is known elsewhere by its id on the wire only.
                if self.transport.coordinates(&fetch.dag) {
                    let response = Response::Error(RpcError::NotFound {
                        dag: fetch.dag,
                        function: fetch.function,
                    });
                    if let Err(error) = self.client.respond(channel, response).await {
                        tracing::debug!(node = %from, "could not answer a fetch: {error}");
                    }
                    return;
                }
                fetch.dag = self.transport.local_id(&fetch.dag);
                let (node, client) = (self.node.clone(), self.client.clone());
                let max_response_bytes = self.max_response_bytes;
                actix::spawn(async move {
                    let response = answer_fetch(&node, fetch, max_response_bytes).await;
                    if let Err(error) = client.respond(channel, response).await {
                        tracing::debug!(node = %from, "could not answer a fetch: {error}");
                    }
                });
                return;
            }
            other => self.answer(other).await,
        };
        if let Err(error) = self.client.respond(channel, response).await {
            tracing::debug!(node = %from, %kind, "could not answer: {error}");
        }
    }

    /// Drops a DAG's values here ([`Request::Forget`]).
    async fn forget(&self, dag: DagId) -> Response {
        match self.node.drop_dag(dag).await {
            Ok(_) => Response::Ack,
            Err(_) => Response::Error(RpcError::ShuttingDown),
        }
    }

    async fn stats(&self) -> Result<NodeStats, NodeError> {
        node_stats(&self.node, &self.transport).await
    }

    /// True when `dag` is an execution `from` may not change: one coordinated here (by
    /// its own id or its id on the wire), or one whose id on the wire names another
    /// owner than `from`.
    fn owned_elsewhere(&self, from: &NodeId, dag: &DagId) -> bool {
        if self.transport.coordinates(dag) || self.transport.local_id(dag) != *dag {
            return true;
        }
        crate::transport::owner_of(dag).is_some_and(|owner| owner != from.as_str())
    }

    /// The execute request, or its refusal when it would change another coordinator's
    /// execution or needs a code this node's registry lacks.
    fn check_execute(
        &self,
        from: &NodeId,
        execute: ExecuteRequest,
    ) -> Result<ExecuteRequest, RpcError> {
        if self.transport.is_draining() {
            // Sent before the coordinator heard: it runs elsewhere.
            return Err(RpcError::ShuttingDown);
        }
        if self.owned_elsewhere(from, &execute.dag) {
            tracing::warn!(node = %from, dag = %execute.dag, "refused work for a DAG another node coordinates");
            return Err(RpcError::NotOwner { dag: execute.dag });
        }
        self.check_code(execute)
    }

    /// The execute request, or its refusal when it needs a code this node's registry
    /// lacks.
    fn check_code(&self, execute: ExecuteRequest) -> Result<ExecuteRequest, RpcError> {
        let missing = std::iter::once(&execute.function)
            .chain(&execute.inline)
            .map(|f| f.code())
            .find(|code| !self.codes.names.contains(code));
        match missing {
            Some(code) => Err(RpcError::UnknownCode { code: code.clone() }),
            None => Ok(execute),
        }
    }

    async fn answer(&self, request: Request) -> Response {
        match request {
            Request::Resources { node } => match self.node.node_resources(node.clone()).await {
                Ok(Some((capabilities, free))) => Response::Resources {
                    node,
                    capabilities,
                    free,
                },
                Ok(None) => Response::Error(RpcError::UnknownNode { node }),
                Err(_) => Response::Error(RpcError::ShuttingDown),
            },
            Request::Stats => match self.stats().await {
                Ok(stats) => Response::Stats(stats),
                Err(_) => Response::Error(RpcError::ShuttingDown),
            },
            Request::Register { .. } if !self.remote_registration => {
                tracing::warn!("refused a peer's request to set this node's capacity");
                Response::Error(RpcError::RegistrationRefused)
            }
            Request::Register { capabilities } => {
                match register_local(
                    &self.node,
                    &self.client,
                    &self.codes,
                    capabilities,
                    self.transport.is_draining(),
                )
                .await
                {
                    Ok(()) => Response::Ack,
                    Err(error) => {
                        tracing::warn!("cannot register this node's new capacity: {error}");
                        Response::Error(RpcError::ShuttingDown)
                    }
                }
            }
            other => Response::Error(RpcError::Unsupported {
                request: other.kind(),
            }),
        }
    }
}

/// Answers a chunk request from the value's MessagePack form, encoding it (on the blocking
/// pool) and keeping that form beside the value the first time it is asked for. A chunk
/// longer than a response frame of `max_response_bytes` carries is refused
/// ([`FetchRequest::answer_within`]), never encoded into a frame.
async fn answer_fetch(node: &NodeHandle, fetch: FetchRequest, max_response_bytes: u32) -> Response {
    let not_found = |fetch: &FetchRequest| {
        Response::Error(RpcError::NotFound {
            dag: fetch.dag.clone(),
            function: fetch.function.clone(),
        })
    };
    let asked = GetEncoded {
        dag: fetch.dag.clone(),
        id: fetch.function.clone(),
    };
    let (value, encoded) = match node.result_store().send(asked).await {
        Ok(Some(held)) => held,
        Ok(None) => return not_found(&fetch),
        Err(_) => return Response::Error(RpcError::ShuttingDown),
    };
    let encoded = match encoded {
        Some(bytes) => bytes,
        None => match tokio::task::spawn_blocking(move || value.to_msgpack()).await {
            Ok(Ok(bytes)) => {
                let cache = CacheEncoded {
                    dag: fetch.dag.clone(),
                    id: fetch.function.clone(),
                    bytes: bytes.clone(),
                };
                let _ = node.result_store().send(cache).await;
                bytes
            }
            Ok(Err(error)) => {
                tracing::warn!(dag = %fetch.dag, function = %fetch.function, "cannot encode the value: {error}");
                return not_found(&fetch);
            }
            Err(_) => return Response::Error(RpcError::ShuttingDown),
        },
    };
    fetch.answer_within(&encoded, max_response_bytes)
}

/// What `node` holds and has reserved.
async fn node_stats(node: &NodeHandle, transport: &NetTransport) -> Result<NodeStats, NodeError> {
    let values = node.stored_values().await? as u64;
    let (capacity, free) = node
        .node_resources(node.id().clone())
        .await?
        .unwrap_or_default();
    Ok(NodeStats {
        values,
        capacity,
        free,
        serving: transport.serving(),
        stages: transport.hosted_stages(),
    })
}

#[cfg(test)]
mod tests;
