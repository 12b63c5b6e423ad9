//! A node process under 10,000 hostile requests from peers holding the cluster key: its
//! resident memory grows by less than [`RSS_BOUND_KB`], and it still runs a DAG after.
//!
//! The requests: `Fetch` of the whole value (`max_len = u32::MAX`), `Forget`, `Register`
//! (`cpu: 0`) and `Execute` of an execution it does not own, from a keyed node; and from
//! bare libp2p peers (each a new identity, none ever identified) malformed frames and
//! well-formed requests of nearly the frame limit, which the node holds only up to its
//! bounds for unverified peers.

// Clusters need the `net` feature (on by default).
#![cfg(feature = "net")]

mod common;

use common::procs::{Proc, TempDir, key_arg, keygen, rss_kb};
use common::raw::{hostile_frames, send_raw};
use futures::future::join_all;
use handoff::{
    ClusterKey, ClusterNode, Dag, DagId, ExecuteOptions, Function, FunctionId, NetConfig,
    NodeConfig, NodeId, Registry, Resources,
};
use handoff_net::{Codec, ExecuteRequest, FetchRequest, Request};

/// How much the node's resident memory may grow under the hostile requests.
const RSS_BOUND_KB: u64 = 50 * 1024;

/// Hostile requests in all: half typed requests from a keyed node, half raw frames.
const REQUESTS: usize = 10_000;

/// The `i`th typed hostile request.
fn typed(i: usize, target: &NodeId) -> Request {
    let dag = DagId::new(format!("victim-{}", i % 97));
    match i % 4 {
        0 => Request::Fetch(FetchRequest {
            dag,
            function: FunctionId::new("total"),
            offset: 0,
            max_len: u32::MAX,
        }),
        1 => Request::Forget { dag },
        2 => Request::Register {
            capabilities: Resources::new().cpu(0),
        },
        _ => Request::Execute(ExecuteRequest {
            // An execution of another coordinator (the target itself): refused.
            dag: DagId::new(format!("x~{target}~{:032x}", i)),
            function: Function::new("f", "sleep_ms").extra_arg(1_u64),
            arguments: Vec::new(),
            attempt: 1,
            inline: Vec::new(),
            timeout_ms: None,
            report_start: false,
        }),
    }
}

/// A well-formed `Hello` frame of nearly 1 MiB (held, then refused, for an unverified peer).
fn big_hello() -> Vec<u8> {
    hello_frame(1_000_000)
}

/// A well-formed small `Hello` frame.
fn small_hello() -> Vec<u8> {
    hello_frame(16)
}

fn hello_frame(name_len: usize) -> Vec<u8> {
    let request = Request::Hello {
        version: "v".repeat(1000),
        name: "n".repeat(name_len),
    };
    let mut out = futures::io::Cursor::new(Vec::new());
    futures::executor::block_on(Codec::new(2 << 20, 2 << 20).write_request_to(&mut out, &request))
        .expect("encode");
    out.into_inner()
}

#[test]
fn ten_thousand_hostile_requests_grow_a_node_by_less_than_50_mb() {
    let dir = TempDir::new("hostile");
    let key = keygen(&dir, "cluster.key");
    let key_path = key_arg(&key);
    let mut target = Proc::spawn("target", &["--key", &key_path, "--cpu", "2"]);
    let address = target.address();
    let pid = target.child.id();
    let cluster_key = ClusterKey::from_file(&key).expect("read the key");
    actix::System::new().block_on(async {
        let net = NetConfig::builder(cluster_key.clone())
            .name("hostile")
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"))
            .bootstrap(address.parse().expect("multiaddr"))
            .build()
            .expect("config");
        let node = NodeConfig::new(net.node_id(), Registry::new());
        let hostile = ClusterNode::start(node, net).await.expect("start");
        let target_id = NodeId::new(address.rsplit("/p2p/").next().expect("an id"));
        let mut changes = hostile.peer_changes();
        while !hostile
            .node()
            .discover_nodes()
            .await
            .expect("nodes")
            .iter()
            .any(|(n, _)| *n == target_id)
        {
            tokio::time::timeout(common::procs::DEADLINE, changes.changed())
                .await
                .expect("the target seen in time")
                .expect("bridge running");
        }
        let client = hostile.client();
        let typed_round = |from: usize, count: usize| {
            let (client, target_id) = (client.clone(), target_id.clone());
            async move {
                for chunk in (from..from + count).collect::<Vec<_>>().chunks(32) {
                    join_all(
                        chunk
                            .iter()
                            .map(|&i| client.request(&target_id, typed(i, &target_id))),
                    )
                    .await;
                }
            }
        };
        let raw_round = |count: usize, seed: u64| {
            let (key, at) = (cluster_key.clone(), address.parse().expect("address"));
            async move {
                let mut sent = 0;
                let mut n = seed;
                while sent < count {
                    n += 1;
                    // Per connection: the malformed frames, two well-formed requests of
                    // nearly the frame limit and small ones past the held bound.
                    let mut frames: Vec<Vec<u8>> =
                        hostile_frames(n).into_iter().map(|(_, f)| f).collect();
                    frames.extend([big_hello(), big_hello()]);
                    frames.extend(std::iter::repeat_with(small_hello).take(41));
                    sent += frames.len();
                    send_raw(&key, &at, frames)
                        .await
                        .expect("the raw peer connects");
                }
                sent
            }
        };
        // A warm-up, so that what the node allocates once (buffers, tables) is counted.
        typed_round(0, 400).await;
        raw_round(100, 0).await;
        let before = rss_kb(pid).expect("VmRSS");
        typed_round(400, REQUESTS / 2).await;
        let raw = raw_round(REQUESTS / 2, 1000).await;
        let after = rss_kb(pid).expect("VmRSS");
        println!(
            "{} typed requests and {raw} raw frames: rss {before} kB -> {after} kB (+{} kB)",
            REQUESTS / 2,
            after.saturating_sub(before)
        );
        assert!(
            after.saturating_sub(before) < RSS_BOUND_KB,
            "the node grew from {before} kB to {after} kB"
        );
        // It still serves: a DAG runs on it.
        let dag = Dag::with_id("after")
            .with(
                Function::new("s", "sleep_ms")
                    .extra_arg(1_u64)
                    .with_cost(Resources::new().cpu(1)),
            )
            .validate()
            .expect("valid");
        let done = tokio::time::timeout(
            common::procs::DEADLINE,
            hostile.node().execute(dag, ExecuteOptions::default()),
        )
        .await
        .expect("in time")
        .expect("runs");
        assert_eq!(done.results.node("s"), Some(&target_id));
        hostile.shutdown().await.expect("shutdown");
    });
    target.drain();
}
