//! What one node's requests can cost another, beyond a frame: a fetch asking for more
//! than a response frame carries, and execute batches larger than a request frame.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use handoff_actors::{ExecuteError, ExecuteOptions, NodeConfig};
use handoff_core::{
    Backoff, CallError, Dag, DagId, Function, FunctionId, Registry, Resources, Value,
};

use super::ClusterNode;
use crate::Multiaddr;
use crate::config::{CHUNK_OVERHEAD_BYTES, Config};
use crate::error::RequestError;
use crate::key::ClusterKey;
use crate::protocol::{FetchRequest, RpcError};
use handoff_core::NodeId;

/// How long any single wait may take before the test is declared hung.
const DEADLINE: Duration = Duration::from_secs(30);

async fn guarded<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(out) => out,
        Err(_) => panic!("`{what}` did not finish within {DEADLINE:?}"),
    }
}

fn loopback() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register("one", || 1_u64).expect("one");
    registry
        .register(
            "sum8",
            |a: u64, b: u64, c: u64, d: u64, e: u64, f: u64, g: u64, h: u64| {
                a + b + c + d + e + f + g + h
            },
        )
        .expect("sum8");
    registry
}

async fn start(net: Config) -> ClusterNode {
    let node = NodeConfig::new(net.node_id(), registry()).capabilities(Resources::new().cpu(1));
    guarded("start", ClusterNode::start(node, net))
        .await
        .expect("starts")
}

async fn address(node: &ClusterNode) -> Multiaddr {
    node.client()
        .listen_addresses()
        .await
        .expect("addresses")
        .into_iter()
        .next()
        .expect("one address")
}

#[test]
fn a_fetch_for_more_than_a_response_frame_is_refused_before_encoding() {
    actix_rt::System::new().block_on(async {
        let key = ClusterKey::generate();
        let max_response = 2 << 20;
        let holder = start(
            Config::builder(key.clone())
                .name("holder")
                .listen_on(loopback())
                .max_response_bytes(max_response)
                .fetch_chunk_bytes(1 << 20)
                .build()
                .expect("config"),
        )
        .await;
        let payload = Bytes::from(vec![7_u8; 8 << 20]);
        let (dag, id) = (DagId::new("d"), FunctionId::new("big"));
        holder
            .node()
            .store_value(dag.clone(), id.clone(), Value::new(payload.clone()))
            .await
            .expect("store");
        let (reader, _events) = guarded(
            "start",
            crate::start(
                Config::builder(key)
                    .name("reader")
                    .listen_on(loopback())
                    .fetch_chunk_bytes(1 << 20)
                    .build()
                    .expect("config"),
            ),
        )
        .await
        .expect("start");
        let holder_id = guarded("dial", reader.dial(address(&holder).await))
            .await
            .expect("dial");

        let greedy = FetchRequest {
            dag: dag.clone(),
            function: id.clone(),
            offset: 0,
            max_len: u32::MAX,
        };
        let refused = guarded("a greedy fetch", reader.fetch_chunk(&holder_id, greedy)).await;
        match refused {
            Err(RequestError::Remote {
                error: RpcError::ChunkTooLarge { len, max, .. },
                ..
            }) => {
                assert!(len > u64::from(max), "{len} > {max}");
                assert_eq!(max, max_response - CHUNK_OVERHEAD_BYTES);
            }
            other => panic!("expected ChunkTooLarge, got {other:?}"),
        }
        // Chunks that fit are served.
        let fetched = guarded(
            "a fetch in chunks",
            reader.fetch_value(&holder_id, &dag, &id),
        )
        .await
        .expect("fetched");
        assert_eq!(fetched.get::<Bytes>().expect("bytes"), payload);
        reader.shutdown().await.expect("shutdown");
        holder.shutdown().await.expect("shutdown");
    });
}

/// A coordinator `c` and a worker `w`, each seeing the other.
async fn pair() -> (ClusterNode, ClusterNode) {
    let key = ClusterKey::generate();
    let builder = |name: &str| {
        Config::builder(key.clone())
            .name(name)
            .listen_on(loopback())
    };
    let c = start(builder("c").build().expect("config")).await;
    let w = start(
        builder("w")
            .bootstrap(address(&c).await)
            .build()
            .expect("config"),
    )
    .await;
    for node in [&c, &w] {
        let mut changes = node.peer_changes();
        guarded("discovery", changes.wait_for(|peers| !peers.is_empty()))
            .await
            .expect("bridge running");
    }
    (c, w)
}

/// Eight producers on `c` whose ids are `id_len` bytes long: a consumer of all eight
/// carries each id twice (in its function and its argument descriptors).
fn producers(c: &NodeId, id_len: usize) -> (Vec<Function>, Vec<FunctionId>) {
    let ids: Vec<FunctionId> = (0..8)
        .map(|i| FunctionId::new(format!("p{i}-{}", "x".repeat(id_len))))
        .collect();
    let functions = ids
        .iter()
        .map(|id| Function::new(id.clone(), "one").pinned(c.clone()))
        .collect();
    (functions, ids)
}

#[test]
fn an_execute_batch_larger_than_a_request_frame_is_split() {
    actix_rt::System::new().block_on(async {
        let (c, w) = pair().await;
        // 64 consumers of about 32 KiB each, ready at once: 2 MiB of functions for `w`,
        // twice a request frame.
        let (producers, ids) = producers(c.id(), 2 << 10);
        let consumers = 64;
        let mut dag = Dag::new();
        for producer in producers {
            dag = dag.with(producer);
        }
        for k in 0..consumers {
            dag = dag.with(
                Function::new(format!("q{k}"), "sum8")
                    .args(ids.clone())
                    .pinned(w.id().clone()),
            );
        }
        let dag = dag.validate().expect("valid");
        let done = guarded(
            "the execution",
            c.node()
                .execute(dag, ExecuteOptions::default().report(true)),
        )
        .await
        .expect("executes");
        let report = done.report().expect("report");
        for k in 0..consumers {
            let id = format!("q{k}");
            assert_eq!(done.results.get::<u64>(&id), Ok(8));
            assert_eq!(&done.allocations()[&FunctionId::new(id.clone())], w.id());
            let attempts = report.function(&id).expect("reported").attempts.len();
            assert_eq!(attempts, 1, "{id} was sent more than once");
        }
        c.shutdown().await.expect("shutdown");
        w.shutdown().await.expect("shutdown");
    });
}

#[test]
fn a_function_too_large_for_a_request_frame_fails_without_being_sent() {
    actix_rt::System::new().block_on(async {
        let (c, w) = pair().await;
        // One consumer of about 1.3 MiB: more than a request frame (1 MiB).
        let (producers, ids) = producers(c.id(), 80 << 10);
        let mut dag = Dag::new();
        for producer in producers {
            dag = dag.with(producer);
        }
        let dag = dag
            .with(
                Function::new("big", "sum8")
                    .args(ids)
                    .pinned(w.id().clone())
                    .max_retries(0)
                    .backoff(Backoff::None),
            )
            .validate()
            .expect("valid");
        let failed = guarded(
            "the execution",
            c.node().execute(dag, ExecuteOptions::default()),
        )
        .await
        .expect_err("cannot be sent");
        match failed {
            ExecuteError::FunctionFailed {
                function,
                last_error: CallError::Unavailable { node, reason, .. },
                ..
            } => {
                assert_eq!(function.as_str(), "big");
                assert_eq!(&node, w.id());
                assert!(reason.contains("too large"), "{reason}");
            }
            other => panic!("expected the function to fail as unavailable, got {other:?}"),
        }
        c.shutdown().await.expect("shutdown");
        w.shutdown().await.expect("shutdown");
    });
}
