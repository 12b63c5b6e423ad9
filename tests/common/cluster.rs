//! In-process cluster nodes on 127.0.0.1 for the tests that run several in one process.

use std::time::Duration;

use handoff::net::Multiaddr;
use handoff::{ClusterKey, ClusterNode, NetConfig, NodeConfig, Registry, Resources};

use super::HANG_GUARD;

/// Starts cluster node `name` with `registry` and `capabilities`, listening on a free
/// port of 127.0.0.1, joining through `bootstrap` when given, with the default grace
/// period for nodes that leave.
pub async fn start(
    key: &ClusterKey,
    name: &str,
    registry: Registry,
    capabilities: Resources,
    bootstrap: Option<Multiaddr>,
) -> ClusterNode {
    start_with_grace(
        key,
        name,
        registry,
        capabilities,
        bootstrap,
        handoff::DEFAULT_NODE_GRACE,
    )
    .await
}

/// [`start`], waiting `grace` for a node that left to come back.
pub async fn start_with_grace(
    key: &ClusterKey,
    name: &str,
    registry: Registry,
    capabilities: Resources,
    bootstrap: Option<Multiaddr>,
    grace: Duration,
) -> ClusterNode {
    let mut net = NetConfig::builder(key.clone())
        .name(name)
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"));
    if let Some(address) = bootstrap {
        net = net.bootstrap(address);
    }
    let net = net.build().expect("config");
    let node = NodeConfig::new(net.node_id(), registry)
        .capabilities(capabilities)
        .node_grace(grace);
    tokio::time::timeout(HANG_GUARD, ClusterNode::start(node, net))
        .await
        .expect("starts in time")
        .expect("starts")
}

/// The first address `node` listens on.
pub async fn address(node: &ClusterNode) -> Multiaddr {
    node.client()
        .listen_addresses()
        .await
        .expect("addresses")
        .into_iter()
        .next()
        .expect("one address")
}
