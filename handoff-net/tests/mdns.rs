//! Discovery on the local network with mDNS (feature `mdns`): two nodes with the same key
//! and no bootstrap address find each other. mDNS advertises only addresses on the
//! interface it runs on, so these nodes listen on all interfaces, not on loopback.

#![cfg(feature = "mdns")]

mod common;

use std::time::Duration;

use common::{init_tracing, key, node, wait_announced};
use handoff_net::{ClusterKey, Config, ConfigBuilder};

fn builder(key: &ClusterKey, name: &str) -> ConfigBuilder {
    Config::builder(key.clone())
        .name(name)
        .listen_on("/ip4/0.0.0.0/tcp/0".parse().expect("multiaddr"))
        .announce_interval(Duration::from_secs(2))
        .heartbeat_interval(Duration::from_millis(200))
        .mdns(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_find_each_other_with_mdns() {
    init_tracing();
    let key = key();
    let mut a = node(builder(&key, "a")).await;
    let mut b = node(builder(&key, "b")).await;
    let (ac, bc) = (a.client.clone(), b.client.clone());
    wait_announced(&mut a, &[&bc]).await;
    wait_announced(&mut b, &[&ac]).await;
    a.client.shutdown().await.expect("shutdown");
    b.client.shutdown().await.expect("shutdown");
}
