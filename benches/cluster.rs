//! Remote execution between two cluster nodes on loopback, each with its own thread and
//! actix `System` (as two processes would be), timed end to end through
//! `NodeHandle::execute` on the coordinating node, beside the raw request-response rate
//! of the same network stack (two bare `handoff_net` nodes, no actors), so that the remote
//! figures read as a fraction of the transport's own limit.
//!
//! `cargo bench --bench cluster` prints, after a warm-up:
//! - raw: the round trip of one request (a Hello, answered by the receiver's network task
//!   itself), requests per second with many in flight, and the time to fetch a 10 MB value
//!   served straight from memory;
//! - the round trip of one remote trivial function (a one-function DAG pinned to the
//!   worker);
//! - fanout: 10,000 trivial functions pinned to the worker, all in flight at once, and one
//!   aggregate over all of them on the coordinator;
//! - costed: the same fanout with each function costing `cpu: 1` (the worker has 64);
//! - chain: 1,000 functions pinned to the worker, each taking the previous one's result;
//! - payload: a chain of 10 functions passing a 10 MB buffer along, alternating between
//!   the two nodes (9 transfers of 10 MB);
//! - the time to fetch a 10 MB value from the worker;
//! - stream: items per second through a stream `x → a → b → c` of trivial functions whose
//!   middle stage is pinned to the worker (every item goes there and back, in chunks).
//!
//! `ROUNDS`, `FANOUT`, `CHAIN`, `ITEMS` and `RUNS` (environment) change the sizes; `ONLY` (a
//! comma-separated list of `raw`, `rtt`, `fanout`, `costed`, `chain`, `payload`, `fetch`, `stream`) runs only
//! those parts (for profiling one). After the table
//! it prints one `json {...}` line per measurement (seconds; the per-unit figure in
//! seconds).
//!
//! Without the `--bench` argument (how `cargo test` runs this target) it runs in quick
//! mode: tiny sizes, a short warm-up; only the correctness checks matter there.

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use handoff::net::Multiaddr;
use handoff::{
    ClusterKey, ClusterNode, Dag, DagId, ExecuteOptions, Function, FunctionId, List, NetConfig,
    NodeConfig, NodeHandle, NodeId, Registry, Resources, Shared, ValidatedDag, Value,
};
use handoff_net::{NetEvent, Request, Response, RpcError};

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register("one", || 1_i64).expect("register");
    r.register("inc", |x: i64| x + 1).expect("register");
    r.register("sum", |xs: List<i64>| xs.iter().sum::<i64>())
        .expect("register");
    r.register("blob", |n: usize| bytes::Bytes::from(vec![7_u8; n]))
        .expect("register");
    r.register("pass", |b: Shared<bytes::Bytes>| {
        Value::from_arc(b.into_arc())
    })
    .expect("register");
    r
}

/// True when `part` is to run (see `ONLY`).
fn wanted(part: &str) -> bool {
    std::env::var("ONLY").map_or(true, |only| only.split(',').any(|p| p.trim() == part))
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
    // Named, so that a profile tells the worker's thread from the coordinator's.
    let thread = std::thread::Builder::new().name("worker".to_owned());
    let spawned = thread.spawn(move || {
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
    spawned.expect("the worker's thread starts");
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

/// Starts a bare network node (no actors) on its own thread, answering fetches of one
/// value (`value` of DAG `raw`, `size` bytes) straight from memory; Hello is answered by
/// its network task. Returns its address and a sender that stops it.
fn spawn_raw_server(key: ClusterKey, size: usize) -> (Multiaddr, std_mpsc::SyncSender<()>) {
    let (ready_tx, ready_rx) = std_mpsc::sync_channel(1);
    let (stop_tx, stop_rx) = std_mpsc::sync_channel::<()>(1);
    std::thread::spawn(move || {
        actix::System::new().block_on(async move {
            let (client, mut events) = handoff_net::start(net(&key, "raw-server", None))
                .await
                .expect("raw server starts");
            let encoded = Value::new(bytes::Bytes::from(vec![3_u8; size]))
                .to_msgpack()
                .expect("encoded");
            let address = client
                .listen_addresses()
                .await
                .expect("addresses")
                .into_iter()
                .next()
                .expect("an address");
            ready_tx.send(address).expect("bench waiting");
            let server = client.clone();
            actix::spawn(async move {
                while let Some(event) = events.recv().await {
                    if let NetEvent::InboundRequest {
                        request, channel, ..
                    } = event
                    {
                        let response = match request {
                            Request::Fetch(fetch) => fetch.answer(&encoded),
                            other => Response::Error(RpcError::Unsupported {
                                request: other.kind(),
                            }),
                        };
                        let _ = server.respond(channel, response).await;
                    }
                }
            });
            let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            let _ = client.shutdown().await;
        });
    });
    (ready_rx.recv().expect("raw server ready"), stop_tx)
}

/// Times the raw request-response stack from a bare client node to a bare server node.
async fn raw(
    key: &ClusterKey,
    quick: bool,
    rounds: usize,
    runs: usize,
    size: usize,
) -> Vec<String> {
    let (address, stop) = spawn_raw_server(key.clone(), size);
    let (client, mut events) = handoff_net::start(net(key, "raw-client", None))
        .await
        .expect("raw client starts");
    actix::spawn(async move { while events.recv().await.is_some() {} });
    let server = client.dial(address).await.expect("raw server reachable");
    let mut json = Vec::new();
    for _ in 0..if quick { 2 } else { 200 } {
        client.hello(&server).await.expect("hello");
    }
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        client.hello(&server).await.expect("hello");
        times.push(start.elapsed());
    }
    json.push(summary(
        "raw: one request (round trip)",
        times,
        1,
        "request",
    ));

    // As many in flight as the per-peer cap allows (128 by default), less a few.
    let (requests, window) = if quick { (50, 8) } else { (20_000, 120) };
    let mut times = Vec::with_capacity(runs);
    for run in 0..runs + 1 {
        let start = Instant::now();
        let answered = futures::stream::iter(0..requests)
            .map(|_| client.hello(&server))
            .buffer_unordered(window)
            .filter(|r| futures::future::ready(r.is_ok()))
            .count()
            .await;
        let elapsed = start.elapsed();
        assert_eq!(answered, requests, "every request answered");
        if run > 0 {
            times.push(elapsed);
        }
    }
    json.push(summary(
        &format!("raw: {requests} requests, {window} in flight"),
        times,
        requests,
        "request",
    ));

    let (dag, function) = (DagId::new("raw"), FunctionId::new("value"));
    let mut times = Vec::with_capacity(runs);
    for run in 0..runs + 1 {
        let start = Instant::now();
        let value = client
            .fetch_value(&server, &dag, &function)
            .await
            .expect("fetched");
        let elapsed = start.elapsed();
        let bytes = value.get::<bytes::Bytes>().expect("bytes");
        assert_eq!(bytes.len(), size);
        if run > 0 {
            times.push(elapsed);
        }
    }
    json.push(summary(&fetch_label("raw: fetch", size), times, 1, "fetch"));
    let _ = client.shutdown().await;
    let _ = stop.send(());
    json
}

fn fetch_label(what: &str, size: usize) -> String {
    if size == 10_000_000 {
        format!("{what} a 10 MB value")
    } else {
        format!("{what} a {size} B value")
    }
}

/// Runs `make(run)` `runs` times after one warm-up run, checking each result; returns
/// the times.
async fn time_runs(
    node: &NodeHandle,
    runs: usize,
    make: impl Fn(usize) -> ValidatedDag,
    check: impl Fn(&handoff::Results),
) -> Vec<Duration> {
    let mut times = Vec::with_capacity(runs);
    for run in 0..runs + 1 {
        let dag = make(run);
        let start = Instant::now();
        let done = node
            .execute(dag, ExecuteOptions::default())
            .await
            .expect("runs");
        let elapsed = start.elapsed();
        check(&done.results);
        if run > 0 {
            times.push(elapsed);
        }
    }
    times
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test` does not: quick mode.
    let quick = !std::env::args().any(|a| a == "--bench");
    // In quick mode the moved values are 100 kB: 10 MB takes seconds in a debug build.
    let (rounds, fanout, chain, runs, warmup, size) = if quick {
        println!("quick mode (no --bench): tiny sizes, correctness only");
        (3, 20, 10, 1, 2, 100_000)
    } else {
        (
            env("ROUNDS", 300),
            env("FANOUT", 10_000),
            env("CHAIN", 1_000),
            env("RUNS", 10).max(1),
            50,
            10_000_000,
        )
    };
    let key = ClusterKey::generate();
    let (worker, address, stop) = spawn_worker(key.clone(), runs + 1, size);
    actix::System::new().block_on(async move {
        let mut json = if wanted("raw") {
            raw(&key, quick, rounds, runs, size).await
        } else {
            Vec::new()
        };
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
        let here = c.id().clone();
        let node = c.node();

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
        if wanted("rtt") {
            for i in 0..warmup {
                let done = node.execute(one(i), ExecuteOptions::default()).await;
                assert_eq!(
                    done.expect("runs").results.get::<i64>("f"),
                    Ok(i as i64 + 1)
                );
            }
            let mut times = Vec::with_capacity(rounds);
            for i in 0..rounds {
                let dag = one(i);
                let start = Instant::now();
                let done = node.execute(dag, ExecuteOptions::default()).await;
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
        }

        // `fanout` trivial functions pinned to the worker, each costing `cost` when given,
        // and their sum on this node.
        let fanout_dag = |name: &str, run: usize, cost: Option<Resources>| {
            let mut dag = Dag::with_id(format!("{name}-{run}"));
            for i in 0..fanout {
                let mut f = Function::new(format!("f{i}"), "one").pinned(worker.clone());
                if let Some(cost) = &cost {
                    f = f.with_cost(cost.clone());
                }
                dag.add_function(f);
            }
            dag.with(
                Function::new("total", "sum")
                    .args((0..fanout).map(|i| format!("f{i}")))
                    .as_list()
                    .pinned(here.clone()),
            )
            .validate()
            .expect("valid")
        };
        let sums_to_fanout = |results: &handoff::Results| {
            assert_eq!(results.get::<i64>("total"), Ok(fanout as i64));
        };

        if wanted("fanout") {
            let times = time_runs(
                node,
                runs,
                |run| fanout_dag("fanout", run, None),
                sums_to_fanout,
            )
            .await;
            json.push(summary(
                &format!("fanout: {fanout} remote functions + 1 aggregate"),
                times,
                fanout + 1,
                "function",
            ));
        }

        if wanted("costed") {
            // The path users take: each function costs a cpu, so the coordinator reserves
            // it on the worker (cpu: 64) and the worker on its own tracker, per function.
            let cpu = Some(Resources::new().cpu(1));
            let times = time_runs(
                node,
                runs,
                |run| fanout_dag("costed", run, cpu.clone()),
                sums_to_fanout,
            )
            .await;
            json.push(summary(
                &format!("costed fanout: {fanout} remote functions of cpu 1 + 1 aggregate"),
                times,
                fanout + 1,
                "function",
            ));
        }

        if wanted("chain") {
            let chain_dag = |run: usize| {
                let mut dag = Dag::with_id(format!("chain-{run}"))
                    .with(Function::new("c0", "one").pinned(worker.clone()));
                for i in 1..chain {
                    dag.add_function(
                        Function::new(format!("c{i}"), "inc")
                            .arg(format!("c{}", i - 1))
                            .pinned(worker.clone()),
                    );
                }
                dag.validate().expect("valid")
            };
            let last = format!("c{}", chain - 1);
            let times = time_runs(node, runs, chain_dag, |results| {
                assert_eq!(results.get::<i64>(&last), Ok(chain as i64));
            })
            .await;
            json.push(summary(
                &format!("chain: {chain} remote functions"),
                times,
                chain,
                "hop",
            ));
        }

        if wanted("payload") {
            // p0 makes the buffer on the worker; each next hop runs on the other node.
            let hops = 10;
            let payload_dag = |run: usize| {
                let on = |i: usize| {
                    if i.is_multiple_of(2) {
                        worker.clone()
                    } else {
                        here.clone()
                    }
                };
                let mut dag = Dag::with_id(format!("payload-{run}"))
                    .with(Function::new("p0", "blob").extra_arg(size).pinned(on(0)));
                for i in 1..hops {
                    dag.add_function(
                        Function::new(format!("p{i}"), "pass")
                            .arg(format!("p{}", i - 1))
                            .pinned(on(i)),
                    );
                }
                dag.validate().expect("valid")
            };
            let last = format!("p{}", hops - 1);
            let times = time_runs(node, runs, payload_dag, |results| {
                let buffer = results.get::<bytes::Bytes>(&last).expect("bytes");
                assert_eq!(buffer.len(), size);
            })
            .await;
            let label = if size == 10_000_000 {
                format!("payload: {hops} hops of 10 MB, alternating nodes")
            } else {
                format!("payload: {hops} hops of {size} B, alternating nodes")
            };
            json.push(summary(&label, times, hops - 1, "transfer"));
        }

        if wanted("fetch") {
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
            json.push(summary(
                &format!("{} from the worker", fetch_label("fetch", size)),
                times,
                1,
                "fetch",
            ));
        }

        if wanted("stream") {
            // A stream `x → a → b → c` of `inc`s whose middle stage is pinned to the worker:
            // every item goes there and back, a chunk (64 items) per request.
            let items: i64 = if quick {
                2_000
            } else {
                env("ITEMS", 200_000) as i64
            };
            let dag = Dag::new()
                .with(Function::input("x"))
                .with(Function::new("a", "inc").arg("x"))
                .with(Function::new("b", "inc").arg("a").pinned(worker.clone()))
                .with(Function::new("c", "inc").arg("b"))
                .validate()
                .expect("valid");
            let mut times = Vec::with_capacity(runs);
            for run in 0..runs + 1 {
                let start = Instant::now();
                let mut stream = node
                    .stream(dag.clone(), handoff::StreamOptions::new())
                    .await
                    .expect("stream starts");
                let mut results = stream.results().expect("results");
                let reader = actix::spawn(async move {
                    let mut expected = 3_i64;
                    while let Some(result) = futures::StreamExt::next(&mut results).await {
                        let value = result.expect("no item error").get::<i64>().expect("i64");
                        assert_eq!(value, expected, "results in push order");
                        expected += 1;
                    }
                    expected - 3
                });
                stream.push_all(0..items).await.expect("pushed");
                let stats = stream.stop().await;
                assert_eq!(reader.await.expect("reader"), items);
                assert_eq!(stats.stages[1].nodes, vec![worker.clone()]);
                if run > 0 {
                    times.push(start.elapsed());
                }
            }
            json.push(summary(
                &format!("stream: {items} items, middle stage remote"),
                times,
                items as usize,
                "item",
            ));
        }

        for line in &json {
            println!("json {line}");
        }
        let _ = c.shutdown().await;
    });
    let _ = stop.send(());
}
