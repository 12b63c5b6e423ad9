//! Seeing what a DAG did: runs the README's example DAG on one node, and a small image
//! pipeline across a three-node cluster in this process, and writes for each the graph
//! before and after the run (Graphviz DOT and Mermaid), the timeline (Chrome trace JSON
//! for https://ui.perfetto.dev or chrome://tracing) and the report (JSON), and prints the
//! report's summary.
//!
//! ```sh
//! cargo run --example observe -- target/observe     # the directory to write into
//! dot -Tsvg target/observe/cluster-run.dot > cluster-run.svg
//! ```

#[path = "../src/bin/handoff-node/demo.rs"]
mod demo;

use std::path::{Path, PathBuf};
use std::time::Duration;

use handoff::{
    AllocationStrategy, ClusterKey, ClusterNode, Dag, ExecuteOptions, ExecutionReport, Function,
    Graph, NetConfig, NodeConfig, Registry, Resources, ValidatedDag, start_node,
};

type BoxError = Box<dyn std::error::Error>;

const DEADLINE: Duration = Duration::from_secs(30);
const TILES: u32 = 8;

/// The README's registry and DAG.
fn readme() -> Result<(Registry, ValidatedDag), BoxError> {
    let mut registry = Registry::new();
    registry.register("multiply", |x: i64, y: i64| x * y)?;
    registry.register("format", |x: i64| format!("The final answer is: {x}"))?;
    registry.register_fallible("parse", |s: String| s.parse::<i64>())?;
    let dag = Dag::with_id("readme")
        .with(
            Function::new("source", "parse")
                .extra_arg("42".to_owned())
                .max_retries(0),
        )
        .with(
            Function::new("transform", "multiply")
                .arg("source")
                .extra_arg(2_i64)
                .with_cost(Resources::new().cpu(2).memory(1000)),
        )
        .with(Function::new("sink", "format").arg("transform"))
        .validate()?;
    Ok((registry, dag))
}

/// Tiles made and filtered on the cpu nodes, every other one enhanced on the gpu node,
/// then aggregated.
fn tiles() -> Result<ValidatedDag, BoxError> {
    let mut dag = Dag::with_id("tiles");
    let mut last = Vec::new();
    for i in 0..TILES {
        let (tile, filter) = (format!("tile-{i}"), format!("filter-{i}"));
        dag.add_function(
            Function::new(tile.as_str(), "make_tile")
                .extra_arg(i)
                .extra_arg(256_u32)
                .with_cost(Resources::new().cpu(1)),
        );
        dag.add_function(
            Function::new(filter.as_str(), "filter")
                .arg(tile.as_str())
                .with_cost(Resources::new().cpu(1)),
        );
        if i % 2 == 0 {
            let enhance = format!("enhance-{i}");
            dag.add_function(
                Function::new(enhance.as_str(), "gpu_enhance")
                    .arg(filter.as_str())
                    .with_cost(Resources::new().gpu(1)),
            );
            last.push(enhance);
        } else {
            last.push(filter);
        }
    }
    dag.add_function(
        Function::new("aggregate", "aggregate")
            .args(last)
            .as_list()
            .with_cost(Resources::new().cpu(1)),
    );
    Ok(dag.validate()?)
}

/// Writes `<name>.dot`, `<name>.mmd` (before), `<name>-run.dot`, `<name>-run.mmd`,
/// `<name>-timeline.json` and `<name>-report.json`, and prints the summary.
fn write(
    dir: &Path,
    name: &str,
    dag: &ValidatedDag,
    report: &ExecutionReport,
) -> Result<(), BoxError> {
    let files = [
        (format!("{name}.dot"), Graph::new(dag).to_dot()),
        (format!("{name}.mmd"), Graph::new(dag).to_mermaid()),
        (format!("{name}-run.dot"), report.graph(dag).to_dot()),
        (format!("{name}-run.mmd"), report.graph(dag).to_mermaid()),
        (format!("{name}-timeline.json"), report.to_chrome_trace()),
        (
            format!("{name}-report.json"),
            serde_json::to_string_pretty(report)?,
        ),
    ];
    for (file, text) in files {
        let path = dir.join(file);
        std::fs::write(&path, text)?;
        println!("wrote {}", path.display());
    }
    print!("{report}");
    Ok(())
}

async fn cluster_node(
    key: &ClusterKey,
    name: &str,
    capabilities: Resources,
    bootstrap: Option<handoff::net::Multiaddr>,
) -> Result<ClusterNode, BoxError> {
    let mut net = NetConfig::builder(key.clone())
        .name(name)
        .listen_on("/ip4/127.0.0.1/tcp/0".parse()?);
    if let Some(address) = bootstrap {
        net = net.bootstrap(address);
    }
    let net = net.build()?;
    let node = NodeConfig::new(net.node_id(), demo::registry()?).capabilities(capabilities);
    Ok(tokio::time::timeout(DEADLINE, ClusterNode::start(node, net)).await??)
}

async fn cluster_run(dir: &Path) -> Result<(), BoxError> {
    let key = ClusterKey::generate();
    let c = cluster_node(&key, "coordinator", Resources::new(), None).await?;
    let at = c
        .client()
        .listen_addresses()
        .await?
        .into_iter()
        .next()
        .ok_or("no listen address")?;
    let cpu = cluster_node(&key, "cpu-node", Resources::new().cpu(2), Some(at.clone())).await?;
    let gpu = cluster_node(&key, "gpu-node", Resources::new().cpu(1).gpu(1), Some(at)).await?;
    for node in [&c, &cpu, &gpu] {
        let mut changes = node.peer_changes();
        tokio::time::timeout(DEADLINE, changes.wait_for(|peers| peers.len() == 2)).await??;
    }
    // The coordinator's resource manager knows the workers once their announcements are in.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while c.node().discover_nodes().await?.len() < 3 {
        if tokio::time::Instant::now() > deadline {
            return Err("the workers were not registered in time".into());
        }
        let mut changes = c.peer_changes();
        let _ = tokio::time::timeout(Duration::from_millis(200), changes.changed()).await;
    }
    let dag = tiles()?;
    let options = ExecuteOptions::default()
        .report(true)
        .allocation_strategy(AllocationStrategy::LoadBalanced);
    let done = tokio::time::timeout(DEADLINE, c.node().execute(dag.clone(), options)).await??;
    println!("\n{:?}", done.results.get::<demo::Summary>("aggregate")?);
    let report = done.report().ok_or("no report")?;
    // Node ids are peer ids: name them for the pictures.
    let names = [
        (cpu.id(), "cpu-node"),
        (gpu.id(), "gpu-node"),
        (c.id(), "coordinator"),
    ];
    let mut json = serde_json::to_value(report)?;
    let mut text = json.to_string();
    for (id, name) in names {
        text = text.replace(id.as_str(), name);
    }
    json = serde_json::from_str(&text)?;
    let report: ExecutionReport = serde_json::from_value(json)?;
    write(dir, "cluster", &dag, &report)
}

fn main() -> Result<(), BoxError> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/observe".to_owned()),
    );
    std::fs::create_dir_all(&dir)?;
    actix::System::new().block_on(async {
        let (registry, dag) = readme()?;
        let node = start_node(
            NodeConfig::new("local", registry).capabilities(Resources::new().cpu(4).memory(8000)),
        )
        .await?;
        let done = node
            .execute(dag.clone(), ExecuteOptions::default().report(true))
            .await?;
        println!("{}", done.results.get::<String>("sink")?);
        let report = done.report().ok_or("no report")?;
        write(&dir, "readme", &dag, report)?;
        cluster_run(&dir).await
    })
}
