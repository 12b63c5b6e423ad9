//! Remote execution between two cluster nodes on loopback, each with its own thread and
//! actix `System` (as two processes would be), timed end to end through
//! `NodeHandle::execute` on the coordinating node.
//!
//! `cargo bench --bench cluster` prints, after a warm-up:
//! - the round trip of one remote trivial function (a one-function DAG pinned to the
//!   worker: Execute → Accepted → run → Finished with the result inline);
//! - remote dispatch throughput: one DAG of many independent trivial functions pinned to
//!   the worker, all in flight at once;
//! - the time to fetch a 10 MB value from the worker.
//!
//! `ROUNDS`, `FANOUT` and `RUNS` (environment) change the sizes. After the table it prints
//! one `json {...}` line per measurement (seconds; the per-unit figure in seconds).
//!
//! Without the `--bench` argument (how `cargo test` runs this target) it runs in quick
//! mode: tiny sizes, a short warm-up; only the correctness checks matter there.

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use handoff::{
    ClusterKey, ClusterNode, Dag, DagId, ExecuteOptions, Function, FunctionId, Multiaddr,
    NetConfig, NodeConfig, NodeId, Registry, Resources, Value,
};

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register("inc", |x: i64| x + 1).expect("register");
    r
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn net(key: &ClusterKey, name: &str, bootstrap: Option<Multiaddr>) -> NetConfig {
    let mut net = NetConfig::builder(key.clone())
        .name(name)
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"));
    if let Some(address) = bootstrap {
        net = net.bootstrap(address);
    }
    net.build().expect("config")
}

/// The `run`th value the worker holds (10 MB; 100 kB in quick mode).
fn big(run: usize) -> (DagId, FunctionId) {
    (DagId::new(format!("big-{run}")), FunctionId::new("big"))
}

/// Starts the worker on its own thread, holding `values` values of `size` bytes; returns
/// its id and address, and a sender that stops it.
fn spawn_worker(
    key: ClusterKey,
    values: usize,
    size: usize,
) -> (NodeId, Multiaddr, std_mpsc::SyncSender<()>) {
    let (ready_tx, ready_rx) = std_mpsc::sync_channel(1);
    let (stop_tx, stop_rx) = std_mpsc::sync_channel::<()>(1);
    std::thread::spawn(move || {
        actix::System::new().block_on(async move {
            let net = net(&key, "worker", None);
            let config =
                NodeConfig::new(net.node_id(), registry()).capabilities(Resources::new().cpu(64));
            let node = ClusterNode::start(config, net)
                .await
                .expect("worker starts");
            let payload = bytes::Bytes::from(vec![5_u8; size]);
            for run in 0..values {
                let (dag, id) = big(run);
                node.node()
                    .store_value(dag, id, Value::new(payload.clone()))
                    .await
                    .expect("stored");
            }
            let address = node
                .client()
                .listen_addresses()
                .await
                .expect("addresses")
                .into_iter()
                .next()
                .expect("an address");
            ready_tx
                .send((node.id().clone(), address))
                .expect("bench waiting");
            // Wait for the stop signal without blocking the System's thread.
            let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            let _ = node.shutdown().await;
        });
    });
    let (id, address) = ready_rx.recv().expect("worker ready");
    (id, address, stop_tx)
}

/// Prints a line of the table; returns the measurement as a JSON object.
fn summary(label: &str, mut times: Vec<Duration>, per: usize, unit: &str) -> String {
    times.sort();
    let median = times[times.len() / 2];
    let (min, max) = (times[0], times[times.len() - 1]);
    let each = median / per as u32;
    println!(
        "{label:<44} median {median:>10.3?}  min {min:>10.3?}  max {max:>10.3?}  ({each:.2?} per {unit})",
    );
    // The labels and units here hold no character JSON would need escaped.
    format!(
        "{{\"name\":\"{label}\",\"median_s\":{},\"min_s\":{},\"max_s\":{},\"per_unit\":{},\"unit\":\"s/{unit}\"}}",
        median.as_secs_f64(),
        min.as_secs_f64(),
        max.as_secs_f64(),
        each.as_secs_f64(),
    )
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test` does not: quick mode.
    let quick = !std::env::args().any(|a| a == "--bench");
    // In quick mode the fetched value is 100 kB: 10 MB takes seconds in a debug build.
    let (rounds, fanout, runs, warmup, size) = if quick {
        println!("quick mode (no --bench): tiny sizes, correctness only");
        (3, 20, 1, 2, 100_000)
    } else {
        (
            env("ROUNDS", 300),
            env("FANOUT", 2000),
            env("RUNS", 10).max(1),
            50,
            10_000_000,
        )
    };
    let key = ClusterKey::generate();
    let (worker, address, stop) = spawn_worker(key.clone(), runs + 1, size);
    actix::System::new().block_on(async move {
        let net = net(&key, "coordinator", Some(address));
        let config = NodeConfig::new(net.node_id(), registry());
        let c = ClusterNode::start(config, net)
            .await
            .expect("coordinator starts");
        let mut changes = c.peer_changes();
        changes
            .wait_for(|peers| peers.iter().any(|p| p.node == worker))
            .await
            .expect("worker discovered");
        // The resource manager knows the worker once the bridge registered it.
        while c.node().discover_nodes().await.expect("nodes").len() < 2 {
            let _ = tokio::time::timeout(Duration::from_millis(50), changes.changed()).await;
        }

        let one = |i: usize| {
            Dag::with_id(format!("rtt-{i}"))
                .with(
                    Function::new("f", "inc")
                        .extra_arg(i as i64)
                        .pinned(worker.clone()),
                )
                .validate()
                .expect("valid")
        };
        let mut json = Vec::new();
        for i in 0..warmup {
            let done = c.node().execute(one(i), ExecuteOptions::default()).await;
            assert_eq!(
                done.expect("runs").results.get::<i64>("f"),
                Ok(i as i64 + 1)
            );
        }
        let mut times = Vec::with_capacity(rounds);
        for i in 0..rounds {
            let dag = one(i);
            let start = Instant::now();
            let done = c.node().execute(dag, ExecuteOptions::default()).await;
            times.push(start.elapsed());
            assert_eq!(
                done.expect("runs").results.get::<i64>("f"),
                Ok(i as i64 + 1)
            );
        }
        json.push(summary(
            "one remote trivial function (round trip)",
            times,
            1,
            "function",
        ));

        let many = |run: usize| {
            let mut dag = Dag::with_id(format!("many-{run}"));
            for i in 0..fanout {
                dag.add_function(
                    Function::new(format!("f{i}"), "inc")
                        .extra_arg(i as i64)
                        .pinned(worker.clone()),
                );
            }
            dag.validate().expect("valid")
        };
        let mut times = Vec::with_capacity(runs);
        for run in 0..runs + 1 {
            let dag = many(run);
            let start = Instant::now();
            let done = c
                .node()
                .execute(dag, ExecuteOptions::default())
                .await
                .expect("runs");
            let elapsed = start.elapsed();
            assert_eq!(done.results.get::<i64>("f7"), Ok(8));
            if run > 0 {
                times.push(elapsed);
            }
        }
        json.push(summary(
            &format!("{fanout} remote trivial functions in flight"),
            times,
            fanout,
            "function",
        ));

        // The value held on the worker, fetched by the coordinator (a new DAG id each time, so
        // nothing is cached; the worker encodes each once, as it would a fresh result).
        let mut times = Vec::with_capacity(runs);
        for run in 0..runs + 1 {
            let (dag, id) = big(run);
            let start = Instant::now();
            let value = c
                .get_value(&dag, &id, Some(&worker))
                .await
                .expect("fetched");
            let elapsed = start.elapsed();
            assert_eq!(value.get::<bytes::Bytes>().expect("bytes").len(), size);
            if run > 0 {
                times.push(elapsed);
            }
        }
        let label = if size == 10_000_000 {
            "fetch a 10 MB value from the worker".to_owned()
        } else {
            format!("fetch a {size} B value from the worker")
        };
        json.push(summary(&label, times, 1, "fetch"));
        for line in &json {
            println!("json {line}");
        }
        let _ = c.shutdown().await;
    });
    let _ = stop.send(());
}
