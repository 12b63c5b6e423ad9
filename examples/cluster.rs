//! A cluster on one machine: three node processes and a coordinator, executing the
//! seed's distributed example and an image-tile pipeline across them.
//!
//! ```text
//! cargo run --example cluster
//! ```
//!
//! starts three nodes as separate processes (this same executable, in `node` mode) on
//! 127.0.0.1 with a fresh cluster key in a temporary directory:
//!
//! | node   | capabilities                   |
//! |--------|--------------------------------|
//! | node-a | cpu 4, memory 4096             |
//! | node-b | cpu 4, memory 4096             |
//! | node-c | cpu 2, memory 4096, gpu 1      |
//!
//! Then a coordinator node in this process, with no resources of its own, joins them
//! through node-a, waits until every node has discovered every other, and executes
//!
//! 1. the seed's distributed example: `load_data` → `gpu_process` (costs a GPU) →
//!    `format_result`;
//! 2. an image pipeline: 24 tiles, each `make_tile` → `resize` → `filter` (CPU costs),
//!    every fourth one then `gpu_enhance` (costs a GPU), and one `aggregate` taking every
//!    tile as a list;
//!
//! printing each result, checked against the same functions run locally, and which node
//! ran what. Then it stops the nodes with SIGTERM; a node still
//! running when this program fails or panics is killed.
//!
//! Every node runs the demo registry (`src/bin/handoff-node/demo.rs`). To start nodes in separate terminals
//! instead:
//!
//! ```text
//! cargo run --example cluster -- keygen cluster.key
//! cargo run --example cluster -- node --key cluster.key --name node-a --cpu 4 --memory 4096 \
//!     --listen /ip4/127.0.0.1/tcp/4001
//! cargo run --example cluster -- node --key cluster.key --name node-b --cpu 4 --memory 4096 \
//!     --bootstrap /ip4/127.0.0.1/tcp/4001/p2p/<peer id printed by node-a>
//! cargo run --example cluster -- node --key cluster.key --name node-c --cpu 2 --memory 4096 \
//!     --gpu 1 --bootstrap /ip4/127.0.0.1/tcp/4001/p2p/<peer id printed by node-a>
//! cargo run --example cluster -- coordinate --key cluster.key \
//!     --bootstrap /ip4/127.0.0.1/tcp/4001/p2p/<peer id printed by node-a> --nodes 3
//! ```
//!
//! `node` takes the flags of `handoff-node run` (`cargo run --example cluster -- node
//! --help` lists them); a node stops on SIGTERM or Ctrl-C. `coordinate` runs the two DAGs on the
//! nodes it finds.

use std::collections::{BTreeMap, VecDeque};
use std::error::Error;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use handoff::cli::{self, DEFAULT_LISTEN};
#[path = "../src/bin/handoff-node/demo.rs"]
mod demo;

use demo::Summary;
use handoff::net::{DiscoveredNode, Multiaddr, Security};
use handoff::{
    AllocationStrategy, ClusterKey, ClusterNode, Dag, ExecuteOptions, ExecutionResult, Function,
    NetConfig, NodeConfig, NodeId, Resources, ValidatedDag,
};
use tokio::sync::watch;

type BoxError = Box<dyn Error>;

/// The longest a node may take to start, or the cluster to form, or a node to stop.
const DEADLINE: Duration = Duration::from_secs(30);
/// The longest one DAG may take.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// The nodes `cargo run --example cluster` starts: a name and its capabilities' flags.
const NODES: [(&str, &[&str]); 3] = [
    ("node-a", &["--cpu", "4", "--memory", "4096"]),
    ("node-b", &["--cpu", "4", "--memory", "4096"]),
    ("node-c", &["--cpu", "2", "--memory", "4096", "--gpu", "1"]),
];

/// The image pipeline's shape.
const TILES: u32 = 24;
const TILE_SIZE: u32 = 256;
const RESIZE_FACTOR: u32 = 2;
/// Every this many tiles, one goes through `gpu_enhance`.
const GPU_EVERY: u32 = 4;
/// How many values the seed's example loads.
const VALUES: u32 = 16;

fn usage() -> &'static str {
    "usage:\n  cluster                    start 3 node processes and run the DAGs on them\n  \
     cluster keygen <FILE>      write a new cluster key\n  \
     cluster node FLAGS...      run one node until SIGTERM or Ctrl-C (`cluster node --help`)\n  \
     cluster coordinate (--key FILE | --insecure) --bootstrap MULTIADDR [--nodes N]\n                             \
     run the DAGs on running nodes (waits for N, default 3)"
}

fn main() -> ExitCode {
    cli::init_logging();
    let args: Result<Vec<String>, _> = std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect();
    let Ok(args) = args else {
        return bad_usage("the arguments are not valid Unicode");
    };
    let outcome = match args.first().map(String::as_str) {
        None => local_cluster(),
        // The node's own command line: `cluster node FLAGS` is `handoff-node run FLAGS`.
        Some("node") => {
            let line = ["cluster node".to_owned(), "run".to_owned()]
                .into_iter()
                .chain(args[1..].iter().cloned());
            return cli::main_from(line, demo::registry);
        }
        Some("keygen") => match &args[1..] {
            [file] => cli::keygen(Path::new(file)).map_err(BoxError::from),
            _ => return bad_usage("`keygen` takes one file"),
        },
        Some("coordinate") => match Coordinate::parse(&args[1..]) {
            Ok(coordinate) => coordinate.run(),
            Err(error) => return bad_usage(&error),
        },
        Some("-h" | "--help" | "help") => {
            println!("{}", usage());
            Ok(())
        }
        Some(other) => return bad_usage(&format!("unknown command `{other}`")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cluster: {error}");
            ExitCode::FAILURE
        }
    }
}

fn bad_usage(error: &str) -> ExitCode {
    eprintln!("cluster: {error}\n\n{}", usage());
    ExitCode::from(2)
}

/// `cluster`: three node processes and a coordinator in this process.
fn local_cluster() -> Result<(), BoxError> {
    let dir = TempDir::new()?;
    let key = ClusterKey::generate();
    let key_file = dir.0.join("cluster.key");
    key.to_file(&key_file)?;
    println!(
        "cluster key {} (fingerprint {})",
        key_file.display(),
        key.fingerprint()
    );
    let exe = std::env::current_exe()?;

    actix::System::new().block_on(async move {
        // Every process is killed when `nodes` drops, unless it was stopped before:
        // also on an early return or a panic.
        let mut nodes = Vec::new();
        let mut bootstrap = None;
        for (name, flags) in NODES {
            let mut node = NodeProcess::spawn(&exe, &key_file, name, flags, bootstrap.as_ref())?;
            let address = node.address().await?;
            println!("started {name} (pid {}) listening on {address}", node.id());
            bootstrap.get_or_insert(address);
            nodes.push(node);
        }
        let bootstrap = bootstrap.ok_or("no node started")?;
        let cluster = start_coordinator(Security::from(key), bootstrap.parse()?).await?;
        // Each process knows the other two and the coordinator.
        for node in &mut nodes {
            node.wait_peers(NODES.len()).await?;
        }
        let outcome = coordinate(&cluster, NODES.len()).await;
        cluster.shutdown().await?;
        for node in &mut nodes {
            node.stop()?;
        }
        for node in &mut nodes {
            let status = node.wait_exit().await?;
            println!("{} exited: {status}", node.name);
        }
        outcome
    })
}

/// `cluster coordinate ...`: the DAGs on nodes started elsewhere.
struct Coordinate {
    security: Security,
    bootstrap: Multiaddr,
    nodes: usize,
}

impl Coordinate {
    fn parse(args: &[String]) -> Result<Coordinate, String> {
        let (mut key, mut insecure, mut bootstrap, mut nodes) = (None, false, None, 3);
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or(format!("`{flag}` needs a value"));
            match flag.as_str() {
                "--key" => key = Some(value()?.clone()),
                "--insecure" => insecure = true,
                "--bootstrap" => {
                    bootstrap = Some(
                        value()?
                            .parse()
                            .map_err(|e| format!("invalid `--bootstrap`: {e}"))?,
                    )
                }
                "--nodes" => {
                    nodes = value()?
                        .parse()
                        .map_err(|e| format!("invalid `--nodes`: {e}"))?
                }
                other => return Err(format!("unexpected argument `{other}`")),
            }
        }
        let security = match (key, insecure) {
            (Some(file), false) => {
                Security::from(ClusterKey::from_file(&file).map_err(|e| e.to_string())?)
            }
            (None, true) => Security::Insecure,
            _ => return Err("choose one of `--key FILE` and `--insecure`".to_owned()),
        };
        Ok(Coordinate {
            security,
            bootstrap: bootstrap.ok_or("`coordinate` needs `--bootstrap MULTIADDR`")?,
            nodes,
        })
    }

    fn run(self) -> Result<(), BoxError> {
        actix::System::new().block_on(async move {
            let cluster = start_coordinator(self.security, self.bootstrap).await?;
            let outcome = coordinate(&cluster, self.nodes).await;
            cluster.shutdown().await?;
            outcome
        })
    }
}

/// A cluster node in this process that offers no resources: every function with a cost
/// runs on another node.
async fn start_coordinator(
    security: Security,
    bootstrap: Multiaddr,
) -> Result<ClusterNode, BoxError> {
    let net = NetConfig::builder(security)
        .name("coordinator")
        .listen_on(DEFAULT_LISTEN.parse()?)
        .bootstrap(bootstrap)
        .build()?;
    let node = NodeConfig::new(net.node_id(), demo::registry()?);
    Ok(ClusterNode::start(node, net).await?)
}

/// Waits for `expected` peers, then runs both DAGs.
async fn coordinate(cluster: &ClusterNode, expected: usize) -> Result<(), BoxError> {
    let mut peers = cluster.peer_changes();
    tokio::time::timeout(DEADLINE, peers.wait_for(|peers| peers.len() >= expected))
        .await
        .map_err(|_| format!("fewer than {expected} peers discovered within {DEADLINE:?}"))??;
    let mut nodes = cluster.discover_nodes().await?;
    // This node first, then the others by name.
    if let Some(peers) = nodes.get_mut(1..) {
        peers.sort_by(|a, b| a.name.cmp(&b.name));
    }
    println!("\nthe cluster, as the coordinator sees it:");
    for node in &nodes {
        let what = if node.node == *cluster.id() {
            "(this process: coordinates, offers nothing)".to_owned()
        } else {
            node.capabilities.to_string()
        };
        println!("  {:<12} {what}", node.name);
    }
    let names = Names(nodes);

    println!("\n1. the seed's distributed example");
    let dag = seed_example()?;
    let started = Instant::now();
    let done = execute(cluster, dag, ExecuteOptions::default()).await?;
    let result = done.results.get::<String>("format_result")?;
    let expected = demo::format_result(&demo::gpu_process(&demo::load_data(VALUES)?)?);
    println!("  result: {result} ({:.0?})", started.elapsed());
    check("the result", &result, &expected)?;
    for (function, node) in done.allocations() {
        println!("  {:<14} ran on {}", function.as_str(), names.of(&node));
    }

    println!("\n2. the image pipeline: {TILES} tiles of {TILE_SIZE}x{TILE_SIZE}");
    let (dag, last_stages) = image_pipeline()?;
    let started = Instant::now();
    let options = ExecuteOptions::default().allocation_strategy(AllocationStrategy::LoadBalanced);
    let done = execute(cluster, dag, options).await?;
    let summary = done.results.get::<Summary>("aggregate")?;
    println!("  result: {summary} ({:.0?})", started.elapsed());
    check("the summary", &summary, &local_image_pipeline()?)?;
    print_stages(&done, &names);
    println!(
        "  aggregate ran on {} with the results of {} functions",
        names.of_function(&done, "aggregate"),
        last_stages
    );
    Ok(())
}

/// Executes a DAG from the coordinator, with a deadline.
async fn execute(
    cluster: &ClusterNode,
    dag: ValidatedDag,
    options: ExecuteOptions,
) -> Result<ExecutionResult, BoxError> {
    let done = tokio::time::timeout(RUN_DEADLINE, cluster.node().execute(dag, options))
        .await
        .map_err(|_| format!("the DAG did not finish within {RUN_DEADLINE:?}"))??;
    Ok(done)
}

fn check<T: PartialEq + std::fmt::Debug>(what: &str, got: &T, want: &T) -> Result<(), BoxError> {
    if got == want {
        println!("  {what} matches the same functions run locally");
        Ok(())
    } else {
        Err(format!("{what} is {got:?}, but a local run gives {want:?}").into())
    }
}

/// The seed README's distributed example, with its costs.
fn seed_example() -> Result<ValidatedDag, BoxError> {
    Ok(Dag::new()
        .with(
            Function::new("load_data", "load_data")
                .extra_arg(VALUES)
                .with_cost(Resources::new().cpu(1).memory(1000)),
        )
        .with(
            Function::new("gpu_process", "gpu_process")
                .arg("load_data")
                .with_cost(Resources::new().cpu(2).memory(2048).gpu(1)),
        )
        .with(
            Function::new("format_result", "format_result")
                .arg("gpu_process")
                .with_cost(Resources::new().cpu(1).memory(500)),
        )
        .validate()?)
}

/// Each tile: `tile-NN` → `resize-NN` → `filter-NN` (→ `enhance-NN` for every fourth),
/// then `aggregate` over the last stage of every tile. Returns the DAG and how many
/// functions `aggregate` takes.
fn image_pipeline() -> Result<(ValidatedDag, usize), BoxError> {
    let mut dag = Dag::new();
    let mut last_stages = Vec::new();
    for i in 0..TILES {
        let (tile, resize, filter) = (
            format!("tile-{i:02}"),
            format!("resize-{i:02}"),
            format!("filter-{i:02}"),
        );
        dag.add_function(
            Function::new(tile.as_str(), "make_tile")
                .extra_arg(i)
                .extra_arg(TILE_SIZE)
                .with_cost(Resources::new().cpu(1).memory(256)),
        );
        dag.add_function(
            Function::new(resize.as_str(), "resize")
                .arg(tile.as_str())
                .extra_arg(RESIZE_FACTOR)
                .with_cost(Resources::new().cpu(1).memory(128)),
        );
        dag.add_function(
            Function::new(filter.as_str(), "filter")
                .arg(resize.as_str())
                .with_cost(Resources::new().cpu(1).memory(128)),
        );
        if i % GPU_EVERY == 0 {
            let enhance = format!("enhance-{i:02}");
            dag.add_function(
                Function::new(enhance.as_str(), "gpu_enhance")
                    .arg(filter.as_str())
                    .with_cost(Resources::new().gpu(1)),
            );
            last_stages.push(enhance);
        } else {
            last_stages.push(filter);
        }
    }
    let count = last_stages.len();
    dag.add_function(
        Function::new("aggregate", "aggregate")
            .args(last_stages)
            .as_list()
            .with_cost(Resources::new().cpu(1).memory(512)),
    );
    Ok((dag.validate()?, count))
}

/// What the image pipeline returns, computed here with the same functions.
fn local_image_pipeline() -> Result<Summary, BoxError> {
    let mut tiles = Vec::new();
    for i in 0..TILES {
        let tile = demo::filter(&demo::resize(
            &demo::make_tile(i, TILE_SIZE)?,
            RESIZE_FACTOR,
        )?);
        tiles.push(if i % GPU_EVERY == 0 {
            demo::gpu_enhance(&tile)
        } else {
            tile
        });
    }
    Ok(demo::aggregate(&tiles))
}

/// For each node, how many functions of each code it ran.
fn print_stages(done: &ExecutionResult, names: &Names) {
    let dag = done.results.dag();
    let mut per_node: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for (function, node) in done.allocations() {
        let code = dag
            .index_of(function.as_str())
            .map(|i| dag.function(i).code().to_string())
            .unwrap_or_default();
        *per_node
            .entry(names.of(&node))
            .or_default()
            .entry(code)
            .or_default() += 1;
    }
    for (node, codes) in per_node {
        let total: usize = codes.values().sum();
        let codes: Vec<String> = codes
            .into_iter()
            .map(|(code, n)| format!("{n} {code}"))
            .collect();
        println!("  {node:<12} ran {total:>2}: {}", codes.join(", "));
    }
}

/// The human-readable names of the nodes.
struct Names(Vec<DiscoveredNode>);

impl Names {
    fn of(&self, node: &NodeId) -> String {
        self.0
            .iter()
            .find(|n| n.node == *node)
            .map_or_else(|| node.to_string(), |n| n.name.clone())
    }

    fn of_function(&self, done: &ExecutionResult, function: &str) -> String {
        done.results
            .node(function)
            .map_or_else(|| "?".to_owned(), |node| self.of(node))
    }
}

/// A node process started by this program; killed and reaped when dropped.
struct NodeProcess {
    name: String,
    child: Child,
    output: watch::Receiver<Output>,
}

/// What a node process has printed so far.
#[derive(Default)]
struct Output {
    /// Its address, from its `listening` line.
    address: Option<String>,
    /// The number of peers in its last `peers` line.
    peers: usize,
    /// Its standard output has closed: it has exited (or is exiting).
    closed: bool,
    /// Its last few lines, for error messages.
    recent: VecDeque<String>,
}

impl NodeProcess {
    /// Starts `exe node --key KEY --name NAME FLAGS [--bootstrap ADDRESS]`.
    fn spawn(
        exe: &Path,
        key: &Path,
        name: &str,
        flags: &[&str],
        bootstrap: Option<&String>,
    ) -> Result<NodeProcess, BoxError> {
        let mut command = Command::new(exe);
        command
            .arg("node")
            .arg("--key")
            .arg(key)
            .args(["--name", name])
            .args(flags);
        if let Some(address) = bootstrap {
            command.args(["--bootstrap", address]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting {name}: {e}"))?;
        let stdout = child.stdout.take().ok_or("the node's stdout is piped")?;
        let (tx, output) = watch::channel(Output::default());
        // Reads the node's lines as they come; the state is a watch, so nothing queues.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                tx.send_modify(|out| out.read(line));
            }
            tx.send_modify(|out| out.closed = true);
        });
        Ok(NodeProcess {
            name: name.to_owned(),
            child,
            output,
        })
    }

    fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `done` holds for its output (or it exits, or the deadline passes).
    async fn wait_until(
        &mut self,
        what: &str,
        done: impl Fn(&Output) -> bool,
    ) -> Result<(), BoxError> {
        let timed_out = tokio::time::timeout(
            DEADLINE,
            self.output.wait_for(|out| done(out) || out.closed),
        )
        .await
        .is_err();
        let out = self.output.borrow();
        if done(&out) {
            return Ok(());
        }
        let why = if timed_out {
            format!("no {what} within {DEADLINE:?}")
        } else {
            format!("exited before {what}")
        };
        Err(format!("{}: {why}; its last lines: {:?}", self.name, out.recent).into())
    }

    /// Its address, from its `listening` line.
    async fn address(&mut self) -> Result<String, BoxError> {
        self.wait_until("listening line", |out| out.address.is_some())
            .await?;
        Ok(self.output.borrow().address.clone().unwrap_or_default())
    }

    /// Waits until it knows `n` peers.
    async fn wait_peers(&mut self, n: usize) -> Result<(), BoxError> {
        self.wait_until(&format!("`peers {n}` line"), |out| out.peers >= n)
            .await
    }

    /// Tells it to stop: SIGTERM (where there is none, it is killed).
    fn stop(&mut self) -> Result<(), BoxError> {
        #[cfg(unix)]
        {
            let pid = i32::try_from(self.child.id())?;
            let pid = nix::unistd::Pid::from_raw(pid);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        }
        #[cfg(not(unix))]
        self.child.kill()?;
        Ok(())
    }

    /// Waits for it to exit (its standard output closes), then reaps it.
    async fn wait_exit(&mut self) -> Result<ExitStatus, BoxError> {
        self.wait_until("exit", |out| out.closed).await?;
        Ok(self.child.wait()?)
    }
}

impl Output {
    fn read(&mut self, line: String) {
        if let Some(address) = line.strip_prefix("listening ") {
            self.address.get_or_insert_with(|| address.to_owned());
        } else if let Some(peers) = line.strip_prefix("peers ") {
            let count = peers.split(' ').next().and_then(|n| n.parse().ok());
            self.peers = count.unwrap_or(self.peers);
        }
        if self.recent.len() == 8 {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        // Nothing to do for a process already reaped.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, BoxError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "handoff-cluster-example-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
