//! The messages a user reads when a DAG cannot run, as snapshots (`insta`): each names the
//! real cause (the missing code with the nearest registered name, grouped; the node that
//! left; the cluster key that keeps this node alone) and the nodes by the names their
//! operators gave them where the message has them. Peer ids, ports and key fingerprints,
//! which change on every run, are replaced by placeholders before the comparison.
//!
//! `cargo insta review` (or `INSTA_UPDATE=always`) accepts a changed message.

mod common;

use handoff::{
    Dag, ExecuteError, ExecuteOptions, Function, NodeConfig, Registry, Resources, start_node,
};

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register("double", |x: i64| x * 2).expect("double");
    registry
        .register("sum", |values: Vec<i64>| values.iter().sum::<i64>())
        .expect("sum");
    registry.register("render", |x: i64| x + 1).expect("render");
    registry
}

/// 50 functions run a misspelt code and two a code nobody has: one line per code, the
/// functions counted and the first few named, the typo with the name it is near.
#[actix::test]
async fn missing_codes_are_grouped_with_the_nearest_registered_name() {
    let node = start_node(NodeConfig::new("laptop", registry()))
        .await
        .expect("node");
    let mut dag = Dag::with_id("typos");
    for i in 0..50 {
        dag.add_function(Function::new(format!("d{i}"), "doubel").extra_arg(i as i64));
    }
    dag.add_function(Function::new("x", "transmogrify").extra_arg(1_i64));
    dag.add_function(Function::new("y", "transmogrify").extra_arg(2_i64));
    let dag = dag.validate().expect("valid");
    let err = node
        .execute(dag, ExecuteOptions::default())
        .await
        .expect_err("rejected");
    assert!(matches!(err, ExecuteError::Rejected { .. }), "{err:?}");
    insta::assert_snapshot!(err.to_string());
}

/// A cost no node can hold names the closest node, by the name it was started with.
#[actix::test]
async fn a_cost_no_node_holds_names_the_closest_node() {
    let node =
        start_node(NodeConfig::new("laptop", registry()).capabilities(Resources::new().cpu(4)))
            .await
            .expect("node");
    let dag = Dag::with_id("too-big")
        .with(
            Function::new("train", "render")
                .extra_arg(1_i64)
                .with_cost(Resources::new().cpu(2).gpu(1)),
        )
        .validate()
        .expect("valid");
    let err = node
        .execute(dag, ExecuteOptions::default())
        .await
        .expect_err("rejected");
    insta::assert_snapshot!(err.to_string());
}

/// A function built from a typed handle whose code the node has with other types is
/// refused before anything runs, with both signatures (a node built from another version
/// of the program, say).
#[actix::test]
async fn a_typed_function_whose_code_has_other_types_is_refused() {
    let mut elsewhere = Registry::new();
    let double = elsewhere
        .register("double", |x: i64| x * 2)
        .expect("double");
    let mut here = Registry::new();
    here.register("double", |s: String| format!("{s}{s}"))
        .expect("double over strings");
    let node = start_node(NodeConfig::new("laptop", here))
        .await
        .expect("node");
    let mut dag = Dag::with_id("typed");
    dag.call("twice", &double, (21_i64,));
    let err = node
        .execute(dag.validate().expect("valid"), ExecuteOptions::default())
        .await
        .expect_err("rejected");
    assert!(
        matches!(&err, ExecuteError::Rejected { problems, .. } if matches!(problems[..], [handoff::Problem::SignatureMismatch { .. }])),
        "{err:?}"
    );
    insta::assert_snapshot!(err.to_string());
}

#[cfg(feature = "net")]
mod cluster {
    use std::time::Duration;

    use super::*;
    use crate::common::cluster::{address, start};
    use handoff::{ClusterKey, ClusterNode, NodeId};

    const DEADLINE: Duration = Duration::from_secs(30);

    /// Waits until `c`'s resource manager has `node` (its announcement reaches the
    /// manager just after the peer list), waking on each change of the peers.
    async fn wait_registered(c: &ClusterNode, node: &NodeId) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut changes = c.peer_changes();
        while !c
            .node()
            .discover_nodes()
            .await
            .expect("nodes")
            .iter()
            .any(|(n, _)| n == node)
        {
            assert!(tokio::time::Instant::now() < deadline, "registered in time");
            let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
        }
    }

    /// `text` with each node's id replaced by `<name id>`.
    fn named(text: String, nodes: &[(&NodeId, &str)]) -> String {
        nodes.iter().fold(text, |text, (id, name)| {
            text.replace(id.as_str(), &format!("<{name} id>"))
        })
    }

    /// When the only node with a GPU has left, a DAG that needs one is refused naming
    /// the node that left, not "more than any node can hold".
    #[actix::test]
    async fn the_node_that_had_the_resource_is_named_when_it_left() {
        let key = ClusterKey::generate();
        let c = start(&key, "c", registry(), Resources::new().cpu(1), None).await;
        let at = address(&c).await;
        let gpu = start(
            &key,
            "gpu-box",
            registry(),
            Resources::new().cpu(1).gpu(1),
            Some(at),
        )
        .await;
        let g = gpu.id().clone();
        let c_id = c.id().clone();
        let mut changes = c.peer_changes();
        tokio::time::timeout(
            DEADLINE,
            changes.wait_for(|p| p.iter().any(|p| p.node == g)),
        )
        .await
        .expect("joined in time")
        .expect("bridge");
        // While it is there, a cost too big for it names it as the closest node.
        let too_big = Dag::with_id("two-gpus")
            .with(
                Function::new("render", "render")
                    .extra_arg(1_i64)
                    .with_cost(Resources::new().gpu(2)),
            )
            .validate()
            .expect("valid");
        wait_registered(&c, &g).await;
        let err = c
            .node()
            .execute(too_big, ExecuteOptions::default())
            .await
            .expect_err("two GPUs fit no node");
        insta::assert_snapshot!(
            "closest_by_name",
            named(err.to_string(), &[(&g, "gpu-box"), (&c_id, "c")])
        );
        gpu.shutdown().await.expect("stops");
        tokio::time::timeout(
            DEADLINE,
            changes.wait_for(|p| p.iter().all(|p| p.node != g)),
        )
        .await
        .expect("seen gone in time")
        .expect("bridge");
        let dag = Dag::with_id("needs-gpu")
            .with(
                Function::new("render", "render")
                    .extra_arg(1_i64)
                    .with_cost(Resources::new().gpu(1)),
            )
            .validate()
            .expect("valid");
        let err = tokio::time::timeout(DEADLINE, c.node().execute(dag, ExecuteOptions::default()))
            .await
            .expect("in time")
            .expect_err("no GPU now");
        insta::assert_snapshot!(named(err.to_string(), &[(&g, "gpu-box"), (&c_id, "c")]));
        c.shutdown().await.expect("stops");
    }

    /// A function pinned to a node whose registry lacks its code is refused naming the
    /// nodes that have it, by name.
    #[actix::test]
    async fn a_code_registered_elsewhere_names_where() {
        let key = ClusterKey::generate();
        let mut with_shout = registry();
        with_shout
            .register("shout", |s: String| s.to_uppercase())
            .expect("shout");
        let c = start(&key, "c", registry(), Resources::new().cpu(1), None).await;
        let at = address(&c).await;
        let loud = start(
            &key,
            "loud-box",
            with_shout,
            Resources::new().cpu(1),
            Some(at),
        )
        .await;
        let l = loud.id().clone();
        wait_registered(&c, &l).await;
        let c_id = c.id().clone();
        let dag = Dag::with_id("pinned-wrong")
            .with(
                Function::new("yell", "shout")
                    .extra_arg("hi".to_owned())
                    .pinned(c_id.clone()),
            )
            .validate()
            .expect("valid");
        let err = c
            .node()
            .execute(dag, ExecuteOptions::default())
            .await
            .expect_err("c has no `shout`");
        insta::assert_snapshot!(named(err.to_string(), &[(&l, "loud-box"), (&c_id, "c")]));
        c.shutdown().await.expect("stops");
        loud.shutdown().await.expect("stops");
    }

    /// A program whose node reaches nobody because the peers hold another cluster key is
    /// told so when its DAG finds no node, beside what could not run.
    #[actix::test]
    async fn a_cluster_key_mismatch_is_named_when_no_node_can_run_the_dag() {
        let theirs = ClusterKey::generate();
        let peer = start(&theirs, "worker", registry(), Resources::new().cpu(2), None).await;
        let at = address(&peer).await;
        let ours = ClusterKey::generate();
        // A coordinator that runs nothing itself.
        let c = start(&ours, "c", Registry::new(), Resources::new(), None).await;
        let dial = c.client().dial(at.clone()).await;
        assert!(dial.is_err(), "another key: {dial:?}");
        let dag = Dag::with_id("alone")
            .with(Function::new("d", "double").extra_arg(1_i64))
            .validate()
            .expect("valid");
        let err = tokio::time::timeout(DEADLINE, c.node().execute(dag, ExecuteOptions::default()))
            .await
            .expect("in time")
            .expect_err("no node has `double`");
        let text = err
            .to_string()
            .replace(&at.to_string(), "<worker address>")
            .replace(&ours.fingerprint().to_string(), "<our fingerprint>");
        insta::assert_snapshot!(text);
        c.shutdown().await.expect("stops");
        peer.shutdown().await.expect("stops");
    }
}
