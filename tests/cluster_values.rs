//! Values across nodes: a value held by another cluster node is fetched on demand from
//! where the location registry says it lives, intact, and kept locally for the next
//! reader. Two cluster nodes in this process, over 127.0.0.1.

// Clusters need the `net` feature (on by default).
#![cfg(feature = "net")]

use std::time::Duration;

use handoff::net::GetValueError;
use handoff::{
    ClusterKey, ClusterNode, DagId, FunctionId, NetConfig, NodeConfig, Registry, Resources, Value,
};

const DEADLINE: Duration = Duration::from_secs(15);

async fn start(
    key: &ClusterKey,
    name: &str,
    bootstrap: Option<handoff::net::Multiaddr>,
) -> ClusterNode {
    let mut net = NetConfig::builder(key.clone())
        .name(name)
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"));
    if let Some(address) = bootstrap {
        net = net.bootstrap(address);
    }
    let net = net.build().expect("config");
    let node =
        NodeConfig::new(net.node_id(), Registry::new()).capabilities(Resources::new().cpu(1));
    tokio::time::timeout(DEADLINE, ClusterNode::start(node, net))
        .await
        .expect("starts in time")
        .expect("starts")
}

#[actix::test]
async fn a_value_held_elsewhere_is_fetched_where_it_lives_and_cached() {
    let key = ClusterKey::generate();
    let holder = start(&key, "holder", None).await;
    let address = holder
        .client()
        .listen_addresses()
        .await
        .expect("addresses")
        .into_iter()
        .next()
        .expect("one address");
    let reader = start(&key, "reader", Some(address)).await;
    let mut changes = reader.peer_changes();
    tokio::time::timeout(DEADLINE, changes.wait_for(|peers| !peers.is_empty()))
        .await
        .expect("the holder is discovered in time")
        .expect("bridge running");

    // A 10 MB value stored on the holder; the reader only knows where it lives.
    let payload: Vec<u8> = (0..10_000_000_u32).map(|i| (i % 251) as u8).collect();
    let bytes = bytes::Bytes::from(payload.clone());
    let (dag, id) = (DagId::new("d"), FunctionId::new("big"));
    holder
        .node()
        .store_value(dag.clone(), id.clone(), Value::new(bytes))
        .await
        .expect("store");
    let missing = reader.get_value(&dag, &id, None).await;
    assert!(
        matches!(missing, Err(GetValueError::NotFound { .. })),
        "no known location yet: {missing:?}"
    );
    reader
        .node()
        .register_data_location(dag.clone(), id.clone(), holder.id().clone())
        .await
        .expect("register location");

    let fetched = tokio::time::timeout(DEADLINE, reader.get_value(&dag, &id, None))
        .await
        .expect("fetched in time")
        .expect("fetched");
    assert_eq!(fetched.get::<bytes::Bytes>().expect("bytes"), payload);

    // Kept locally for the next reader; its registered location is still the holder.
    let cached = reader
        .node()
        .get_local_value(dag.clone(), id.clone())
        .await
        .expect("cached here");
    assert!(cached.ptr_eq(&fetched));
    assert_eq!(
        reader.node().lookup_data_location(dag, id).await,
        Ok(Some(holder.id().clone()))
    );
}

#[actix::test]
async fn a_value_stored_by_hand_on_a_node_that_left_is_reported_lost_with_it() {
    let key = ClusterKey::generate();
    let holder = start(&key, "holder", None).await;
    let address = holder
        .client()
        .listen_addresses()
        .await
        .expect("addresses")
        .into_iter()
        .next()
        .expect("one address");
    let reader = start(&key, "reader", Some(address)).await;
    let mut changes = reader.peer_changes();
    tokio::time::timeout(DEADLINE, changes.wait_for(|peers| !peers.is_empty()))
        .await
        .expect("the holder is discovered in time")
        .expect("bridge running");
    let (dag, id) = (DagId::new("d"), FunctionId::new("by-hand"));
    let holder_id = holder.id().clone();
    holder
        .node()
        .store_value(dag.clone(), id.clone(), Value::new(7_i64))
        .await
        .expect("store");
    reader
        .node()
        .register_data_location(dag.clone(), id.clone(), holder_id.clone())
        .await
        .expect("register location");
    holder.shutdown().await.expect("holder stops");
    tokio::time::timeout(DEADLINE, changes.wait_for(|peers| peers.is_empty()))
        .await
        .expect("the holder is seen gone in time")
        .expect("bridge running");
    let lost = reader.get_value(&dag, &id, None).await;
    match lost {
        Err(GetValueError::Lost {
            dag: d,
            id: i,
            node,
        }) => {
            assert_eq!((d, i, node), (dag, id, holder_id));
        }
        other => panic!("expected Lost, got {other:?}"),
    }
}
