//! Helpers shared by the network tests: nodes on 127.0.0.1 with port 0, and waits on
//! events under a deadline (never on the clock alone).

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use handoff_core::{DagId, FunctionId};
use handoff_net::{
    Client, ClusterKey, Config, ConfigBuilder, Multiaddr, NetEvent, Request, Response, RpcError,
    Security,
};
use tokio::sync::mpsc;

/// How long any single wait may take before the test is declared hung.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Awaits `fut`, failing the test if it does not finish within [`DEADLINE`].
pub async fn guarded<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(out) => out,
        Err(_) => panic!("`{what}` did not finish within {DEADLINE:?}"),
    }
}

/// A builder for a node listening on 127.0.0.1, port 0, with short intervals.
pub fn builder(security: impl Into<Security>, name: &str) -> ConfigBuilder {
    Config::builder(security)
        .name(name)
        .listen_on(loopback())
        .announce_interval(Duration::from_secs(2))
        .heartbeat_interval(Duration::from_millis(200))
        .connection_timeout(Duration::from_secs(1))
}

pub fn loopback() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")
}

/// A started node: its client, its events, and its first listen address.
pub struct Node {
    pub client: Client,
    pub events: mpsc::Receiver<NetEvent>,
    pub address: Multiaddr,
}

pub async fn node(builder: ConfigBuilder) -> Node {
    let config = builder.build().expect("config");
    let (client, events) = guarded("start", handoff_net::start(config))
        .await
        .expect("start");
    let address = client
        .listen_addresses()
        .await
        .expect("listen addresses")
        .into_iter()
        .next()
        .expect("one listen address");
    Node {
        client,
        events,
        address,
    }
}

/// Waits for the first event for which `pick` returns `Some`, dropping the others.
pub async fn wait_for<T>(
    what: &str,
    events: &mut mpsc::Receiver<NetEvent>,
    mut pick: impl FnMut(NetEvent) -> Option<T>,
) -> T {
    guarded(what, async {
        loop {
            let event = events.recv().await.expect("event channel open");
            if let Some(out) = pick(event) {
                return out;
            }
        }
    })
    .await
}

/// Waits until `node` has received announcements from all of `others`.
pub async fn wait_announced(node: &mut Node, others: &[&Client]) {
    let mut missing: Vec<_> = others.iter().map(|c| c.node_id().clone()).collect();
    let known: Vec<_> = node
        .client
        .peers()
        .await
        .expect("peers")
        .into_iter()
        .map(|a| a.node)
        .collect();
    missing.retain(|n| !known.contains(n));
    let name = node.client.name().to_owned();
    while !missing.is_empty() {
        let seen = wait_for(
            &format!("announcements reaching {name}"),
            &mut node.events,
            |event| match event {
                NetEvent::PeerAnnounced(a) => Some(a.node),
                _ => None,
            },
        )
        .await;
        missing.retain(|n| *n != seen);
    }
}

/// Values a test node serves to Fetch requests, by (dag, function).
pub type Store = HashMap<(DagId, FunctionId), Bytes>;

/// Serves Fetch requests from `store` (NotFound otherwise) until the event stream ends;
/// returns the number of fetches served and the largest chunk sent.
pub fn serve_fetches(
    client: Client,
    mut events: mpsc::Receiver<NetEvent>,
    store: Store,
) -> tokio::task::JoinHandle<(usize, usize)> {
    tokio::spawn(async move {
        let (mut served, mut largest) = (0, 0);
        while let Some(event) = events.recv().await {
            if let NetEvent::InboundRequest {
                request, channel, ..
            } = event
            {
                let response = match request {
                    Request::Fetch(fetch) => {
                        match store.get(&(fetch.dag.clone(), fetch.function.clone())) {
                            Some(encoded) => fetch.answer(encoded),
                            None => Response::Error(RpcError::NotFound {
                                dag: fetch.dag,
                                function: fetch.function,
                            }),
                        }
                    }
                    other => Response::Error(RpcError::Unsupported {
                        request: other.kind(),
                    }),
                };
                if let Response::Chunk(chunk) = &response {
                    served += 1;
                    largest = largest.max(chunk.bytes.len());
                }
                // The requester may have given up; that is not this server's problem.
                let _ = client.respond(channel, response).await;
            }
        }
        (served, largest)
    })
}

pub fn key() -> ClusterKey {
    ClusterKey::generate()
}
