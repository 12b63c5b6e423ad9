//! The report and timeline of a run across nodes (in this process, over 127.0.0.1): each
//! function's node, the size of a value made elsewhere, and that value's trip to the node
//! that consumed it as a flow arrow between the two nodes' tracks.

// Clusters need the `net` feature (on by default).
#![cfg(feature = "net")]

use std::time::Duration;

use bytes::Bytes;
use handoff::{
    ClusterKey, ClusterNode, Dag, ExecuteOptions, Function, NetConfig, NodeConfig, Registry,
    Resources,
};
use serde_json::Value as Json;

const DEADLINE: Duration = Duration::from_secs(30);

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register("make", |len: u64| Bytes::from(vec![7_u8; len as usize]))
        .expect("make");
    registry
        .register("len", |bytes: Bytes| bytes.len() as u64)
        .expect("len");
    registry
}

async fn start(
    key: &ClusterKey,
    name: &str,
    capabilities: Resources,
    bootstrap: Option<handoff::net::Multiaddr>,
) -> ClusterNode {
    let mut net = NetConfig::builder(key.clone())
        .name(name)
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"));
    if let Some(address) = bootstrap {
        net = net.bootstrap(address);
    }
    let net = net.build().expect("config");
    let node = NodeConfig::new(net.node_id(), registry()).capabilities(capabilities);
    tokio::time::timeout(DEADLINE, ClusterNode::start(node, net))
        .await
        .expect("starts in time")
        .expect("starts")
}

#[actix::test]
async fn a_value_that_crossed_nodes_is_a_flow_arrow_with_its_size() {
    let key = ClusterKey::generate();
    let c = start(&key, "c", Resources::new(), None).await;
    let at = c
        .client()
        .listen_addresses()
        .await
        .expect("addresses")
        .into_iter()
        .next()
        .expect("one address");
    let a = start(&key, "a", Resources::new().cpu(1), Some(at.clone())).await;
    let b = start(&key, "b", Resources::new().cpu(1), Some(at)).await;
    for node in [&c, &a, &b] {
        let mut changes = node.peer_changes();
        tokio::time::timeout(DEADLINE, changes.wait_for(|peers| peers.len() == 2))
            .await
            .expect("every node sees the other two in time")
            .expect("bridge running");
    }
    // The coordinator's resource manager has the workers once their announcements are in.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let known = c.node().discover_nodes().await.expect("nodes");
        if known.len() == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "registered: {known:?}"
        );
        let mut changes = c.peer_changes();
        let _ = tokio::time::timeout(Duration::from_millis(200), changes.changed()).await;
    }
    let dag = Dag::new()
        // 100 kB: too big to come back inline, so `b` fetches it from `a`.
        .with(
            Function::new("src", "make")
                .extra_arg(100_000_u64)
                .pinned(a.id().clone()),
        )
        .with(
            Function::new("size", "len")
                .arg("src")
                .pinned(b.id().clone()),
        )
        .validate()
        .expect("valid");
    let options = ExecuteOptions::default().report(true);
    let done = tokio::time::timeout(DEADLINE, c.node().execute(dag.clone(), options))
        .await
        .expect("in time")
        .expect("executes");
    assert_eq!(done.results.get::<u64>("size"), Ok(100_000));
    let report = done.report().expect("asked for a report");
    let src = report.function("src").expect("src");
    assert_eq!(src.node.as_ref(), Some(a.id()));
    let bytes = src.size.expect("the size of a value made elsewhere");
    assert!((100_000..100_100).contains(&bytes), "{bytes}");
    assert_eq!(
        report.function("size").and_then(|f| f.node.as_ref()),
        Some(b.id())
    );
    assert_eq!(report.nodes.len(), 2, "{:?}", report.nodes);
    // Nodes are shown by the names their operators gave them.
    let names: Vec<(&handoff::NodeId, &str)> = report
        .node_names
        .iter()
        .map(|(n, name)| (n, name.as_str()))
        .collect();
    let mut expected = vec![(a.id(), "a"), (b.id(), "b")];
    expected.sort();
    assert_eq!(names, expected);
    let text = report.to_string();
    assert!(
        text.contains("  node a: 1 attempts") && text.contains("  node b: 1 attempts"),
        "{text}"
    );
    let dot = report.graph(&dag).to_dot();
    assert!(dot.contains(" on a\\n") || dot.contains(" on a\""), "{dot}");
    assert!(dot.contains("[label=\"b\", style=\"filled\""), "{dot}");
    assert!(
        !dot.contains(a.id().as_str()) && !dot.contains(b.id().as_str()),
        "{dot}"
    );
    let mermaid = report.graph(&dag).to_mermaid();
    assert!(mermaid.contains(" on b"), "{mermaid}");
    assert!(!mermaid.contains(a.id().as_str()), "{mermaid}");

    let trace: Json = serde_json::from_str(&report.to_chrome_trace()).expect("JSON");
    let events = trace["traceEvents"].as_array().expect("events");
    let pid_of = |name: &str| {
        events
            .iter()
            .find(|e| e["name"] == "process_name" && e["args"]["name"] == format!("node {name}"))
            .and_then(|e| e["pid"].as_u64())
            .expect("a process per node, by name")
    };
    let (pa, pb) = (pid_of("a"), pid_of("b"));
    assert_ne!(pa, pb);
    let starts: Vec<&Json> = events.iter().filter(|e| e["ph"] == "s").collect();
    let ends: Vec<&Json> = events.iter().filter(|e| e["ph"] == "f").collect();
    assert_eq!((starts.len(), ends.len()), (1, 1));
    assert_eq!(starts[0]["pid"].as_u64(), Some(pa));
    assert_eq!(ends[0]["pid"].as_u64(), Some(pb));
    assert_eq!(starts[0]["args"]["bytes"].as_u64(), Some(bytes));
    assert_eq!(events.iter().filter(|e| e["ph"] == "X").count(), 2);
}
