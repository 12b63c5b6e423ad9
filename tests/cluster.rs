//! Cluster nodes as real processes (`handoff-node`) on 127.0.0.1: discovery through a
//! bootstrap node, a [`ClusterNode`] in the test process joining them and executing a DAG
//! on them, the cluster key keeping other nodes out, and the command line's errors.
//!
//! Every child process is killed and reaped when its guard drops (also on panic); child
//! output is read on a thread into a bounded channel, and every wait has a deadline.

// Clusters need the `net` feature (on by default).
#![cfg(feature = "net")]

mod common;
#[path = "../src/bin/handoff-node/demo.rs"]
mod demo;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::procs::{BIN, DEADLINE, Proc, TempDir, chains_dag, key_arg, keygen, rss_kb, signal};

use handoff::net::GetValueError;
use handoff::{
    ClusterKey, ClusterNode, DEFAULT_NODE_GRACE, Dag, DagId, ExecuteError, ExecuteOptions,
    Function, FunctionId, NetConfig, NodeConfig, NodeId, Registry, Resources,
};

#[test]
fn processes_and_an_in_process_node_discover_each_other() {
    let dir = TempDir::new("cluster");
    let key = keygen(&dir, "cluster.key");
    let key_path = key_arg(&key);
    let mut n1 = Proc::spawn("n1", &["--key", &key_path, "--cpu", "2"]);
    let address = n1.address();
    let with_bootstrap = |extra: &[&'static str]| {
        let mut args = vec!["--key", key_path.as_str(), "--bootstrap", address.as_str()];
        args.extend_from_slice(extra);
        args
    };
    let mut n2 = Proc::spawn("n2", &with_bootstrap(&["--cpu", "4", "--gpu", "1"]));
    // n3 takes the key from the environment instead of a file.
    let key_text = std::fs::read_to_string(&key).expect("read the key file");
    let mut n3 = Command::new(BIN);
    n3.args([
        "run",
        "--name",
        "n3",
        "--key-env",
        "--bootstrap",
        address.as_str(),
    ])
    .args(["--cpu", "1", "--memory", "512", "--custom", "licence=2"])
    // n3 lets peers set its capacity (the test registers it remotely below).
    .arg("--allow-remote-registration")
    .env("HANDOFF_CLUSTER_KEY", key_text);
    let mut n3 = Proc::start("n3", n3);

    n1.wait_peers(&["n2:4:1", "n3:1:0"]);
    n2.wait_peers(&["n1:2:0", "n3:1:0"]);
    n3.wait_peers(&["n1:2:0", "n2:4:1"]);

    // A fourth node, in this process, joins through n1.
    let cluster_key = ClusterKey::from_file(&key).expect("read the key keygen wrote");
    let bootstrap = address.parse().expect("multiaddr");
    actix::System::new().block_on(async move {
        let net = NetConfig::builder(cluster_key)
            .name("t")
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"))
            .bootstrap(bootstrap)
            .build()
            .expect("config");
        let node =
            NodeConfig::new(net.node_id(), Registry::new()).capabilities(Resources::new().cpu(1));
        let cluster = ClusterNode::start(node, net).await.expect("start");
        let mut changes = cluster.peer_changes();
        tokio::time::timeout(DEADLINE, changes.wait_for(|peers| peers.len() == 3))
            .await
            .expect("the three processes are discovered in time")
            .expect("bridge running");

        let nodes = cluster.discover_nodes().await.expect("discover");
        assert_eq!(&nodes[0].node, cluster.id(), "self first");
        let names: Vec<_> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names.len(), 4);
        let find = |name: &str| {
            nodes
                .iter()
                .find(|n| n.name == name)
                .unwrap_or_else(|| panic!("{name} discovered: {names:?}"))
                .clone()
        };
        let (p1, p2, p3) = (find("n1"), find("n2"), find("n3"));
        assert_eq!(p1.capabilities, Resources::new().cpu(2));
        assert_eq!(p2.capabilities, Resources::new().cpu(4).gpu(1));
        assert_eq!(
            p3.capabilities,
            Resources::new().cpu(1).memory(512).with("licence", 2)
        );
        // Each process runs the demo registry.
        let demo = demo::registry().expect("the demo registry builds").names();
        for p in [&p1, &p2, &p3] {
            assert_eq!(p.code_names, demo, "{}", p.name);
        }
        // The bridge registered them with the local resource manager.
        let registered = cluster.node().discover_nodes().await.expect("registered");
        assert_eq!(registered.len(), 4, "{registered:?}");

        // Resources over request-response.
        let (capabilities, free) = cluster
            .node_resources(&p2.node)
            .await
            .expect("ask n2")
            .expect("n2 knows itself");
        assert_eq!(capabilities, Resources::new().cpu(4).gpu(1));
        assert_eq!(free, capabilities);
        let gpu = Resources::new().gpu(1);
        assert!(
            cluster
                .resources_available(&p2.node, &gpu)
                .await
                .expect("ask n2")
        );
        assert!(
            !cluster
                .resources_available(&p1.node, &gpu)
                .await
                .expect("ask n1")
        );

        // Fetch is served from the remote store (nothing stored: NotFound).
        let err = cluster
            .get_value(&DagId::new("d"), &FunctionId::new("f"), Some(&p1.node))
            .await
            .expect_err("nothing stored on n1");
        assert!(
            matches!(
                &err,
                GetValueError::Fetch { source }
                    if source.node == p1.node && source.reason.contains("no value for `f`")
            ),
            "{err:?}"
        );
        // A DAG submitted here runs on the processes (this node's registry is empty):
        // pinned functions on their node, the GPU cost on the only node with a GPU, each
        // value fetched from where it was made.
        let dag = Dag::new()
            .with(
                Function::new("one", "identity")
                    .extra_arg(20_i64)
                    .pinned(p1.node.clone()),
            )
            .with(
                Function::new("two", "double")
                    .arg("one")
                    .pinned(p3.node.clone()),
            )
            .with(
                Function::new("three", "add")
                    .arg("two")
                    .extra_arg(2_i64)
                    .with_cost(Resources::new().gpu(1)),
            )
            .validate()
            .expect("valid");
        let done = tokio::time::timeout(
            DEADLINE,
            cluster.node().execute(dag, ExecuteOptions::default()),
        )
        .await
        .expect("executed in time")
        .expect("executed");
        assert_eq!(done.results.get::<i64>("three").expect("an i64"), 42);
        let ran_on = |function: &str| done.results.node(function).cloned();
        assert_eq!(ran_on("one"), Some(p1.node.clone()));
        assert_eq!(ran_on("two"), Some(p3.node.clone()));
        assert_eq!(ran_on("three"), Some(p2.node.clone()));
        // A function failing on another process is reported with its error.
        let failing = Dag::new()
            .with(
                Function::new("boom", "fail")
                    .extra_arg(7_i64)
                    .pinned(p2.node.clone())
                    .max_retries(0),
            )
            .validate()
            .expect("valid");
        let err = tokio::time::timeout(
            DEADLINE,
            cluster.node().execute(failing, ExecuteOptions::default()),
        )
        .await
        .expect("failed in time")
        .expect_err("`fail` fails");
        assert!(
            matches!(&err, ExecuteError::FunctionFailed { function, attempts: 1, .. }
                if function.as_str() == "boom"),
            "{err:?}"
        );
        assert!(err.to_string().contains("fails on purpose"), "{err}");

        // Register sets n3's capacity; n3 announces it.
        cluster
            .register_node(&p3.node, Resources::new().cpu(3))
            .await
            .expect("register on n3");
        let n3_id: NodeId = p3.node.clone();
        tokio::time::timeout(
            DEADLINE,
            changes.wait_for(|peers| {
                peers
                    .iter()
                    .any(|p| p.node == n3_id && p.capabilities == Resources::new().cpu(3))
            }),
        )
        .await
        .expect("n3's new capacity is announced in time")
        .expect("bridge running");
        cluster.shutdown().await.expect("shutdown");
    });

    // n1 learns n3's new capacity too (with or without `t`, which may be gone by then).
    n1.wait_for("n3's new capacity", |line| {
        (line.starts_with("peers ") && line.contains("n3:3:0")).then_some(())
    });
    for proc in [n1, n2, n3] {
        let name = proc.name.clone();
        let status = proc.finish();
        assert!(status.success(), "{name} exited cleanly: {status:?}");
    }
}

#[test]
fn nodes_with_another_key_or_no_key_never_join() {
    let dir = TempDir::new("intruders");
    let key = key_arg(&keygen(&dir, "cluster.key"));
    let other = key_arg(&keygen(&dir, "other.key"));
    let mut n1 = Proc::spawn("n1", &["--key", &key, "--cpu", "1"]);
    let address = n1.address();
    let mut n2 = Proc::spawn(
        "n2",
        &["--key", &key, "--bootstrap", &address, "--cpu", "1"],
    );
    n1.wait_peers(&["n2:1:0"]);
    n2.wait_peers(&["n1:1:0"]);

    let mut intruder = Proc::spawn("intruder", &["--key", &other, "--bootstrap", &address]);
    let mut insecure = Proc::spawn("insecure", &["--insecure", "--bootstrap", &address]);
    for outsider in [&mut intruder, &mut insecure] {
        let line = outsider.wait_for("failed dial", |line| {
            line.starts_with("dial failed").then(|| line.to_owned())
        });
        assert!(line.contains(&address), "{line}");
        // What it means, not libp2p's debug dump of the error.
        for dump in ["Transport(", "Custom {", "Left(", "Right("] {
            assert!(!line.contains(dump), "{line}");
        }
    }
    assert!(
        intruder
            .seen
            .iter()
            .any(|l| l.contains("likely cluster key mismatch")),
        "{:?}",
        intruder.seen
    );
    // A member joining after them is seen; the outsiders never were.
    let mut n3 = Proc::spawn(
        "n3",
        &["--key", &key, "--bootstrap", &address, "--cpu", "1"],
    );
    n1.wait_peers(&["n2:1:0", "n3:1:0"]);
    n3.wait_peers(&["n1:1:0", "n2:1:0"]);
    for outsider in [&mut intruder, &mut insecure] {
        outsider.drain();
        assert!(
            outsider
                .seen
                .iter()
                .all(|l| !l.starts_with("peers ") || l == "peers 0"),
            "{}: {:?}",
            outsider.name,
            outsider.seen
        );
    }
    n1.drain();
    assert!(
        n1.seen
            .iter()
            .all(|l| !l.contains("intruder") && !l.contains("insecure")),
        "{:?}",
        n1.seen
    );
}

#[test]
fn run_without_a_security_choice_fails_and_keygen_writes_a_readable_key() {
    let out = Command::new(BIN)
        .args(["run", "--cpu", "1"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--key <FILE>"), "{stderr}");
    assert!(stderr.contains("--insecure"), "{stderr}");

    let dir = TempDir::new("keygen");
    let path = keygen(&dir, "cluster.key");
    let key = ClusterKey::from_file(&path).expect("readable key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // An existing key is not overwritten.
    let again = Command::new(BIN)
        .arg("keygen")
        .arg(&path)
        .output()
        .expect("keygen");
    assert!(!again.status.success());
    assert_eq!(ClusterKey::from_file(&path).expect("still readable"), key);
}

/// The DAG of the kill test (see [`chains_dag`]: sleeps of 40 + i ms, nothing pinned).
fn kill_dag(round: usize, chains: usize) -> (handoff::ValidatedDag, i64) {
    chains_dag(&format!("kill-{round}"), chains, 40, None)
}

/// SIGKILL of a worker process in the middle of a DAG, at a different moment each round:
/// the DAG still completes with the right result. `KILL_ROUNDS` sets the rounds (5 by
/// default); each prints `round <n>: killed after <k> finished: ok|<error>`, and the test
/// ends with `tally <ok>/<rounds>`.
#[test]
fn a_worker_killed_mid_dag_does_not_stop_it() {
    let rounds: usize = std::env::var("KILL_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let chains = 8;
    let dir = TempDir::new("kill");
    let key = keygen(&dir, "cluster.key");
    let key_path = key_arg(&key);
    let mut survivor = Proc::spawn("survivor", &["--key", &key_path, "--cpu", "2"]);
    let address = survivor.address();
    let mut outcomes = Vec::new();
    actix::System::new().block_on(async move {
        let cluster = coordinator(&key, &address, DEFAULT_NODE_GRACE, 1).await;
        for round in 0..rounds {
            // A fresh victim each round, killed after a different number of finished
            // functions (early, in the middle, late).
            let mut victim = Proc::spawn(
                &format!("victim-{round}"),
                &["--key", &key_path, "--cpu", "2", "--bootstrap", &address],
            );
            victim.address();
            let mut changes = cluster.peer_changes();
            tokio::time::timeout(
                DEADLINE,
                changes.wait_for(|peers| {
                    peers.len() == 2 && peers.iter().any(|p| p.name == format!("victim-{round}"))
                }),
            )
            .await
            .expect("the victim is discovered in time")
            .expect("bridge running");
            let victim_id = cluster
                .discover_nodes()
                .await
                .expect("nodes")
                .into_iter()
                .find(|n| n.name == format!("victim-{round}"))
                .expect("victim listed")
                .node;
            // The resource manager has it once the bridge registered it.
            while !cluster
                .node()
                .discover_nodes()
                .await
                .expect("registered")
                .iter()
                .any(|(n, _)| *n == victim_id)
            {
                let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
            }
            let kill_after = 1 + (round * 7) % (4 * chains);
            let (dag, expected) = kill_dag(round, chains);
            let mut handle = cluster
                .node()
                // No retry allowed: a re-run caused by the victim's death must not count
                // as one (a function's own failure would end the DAG here).
                .submit(dag, ExecuteOptions::default().events(8192).max_retries(0))
                .await
                .expect("submitted");
            let mut events = handle.events().expect("events");
            let mut finished = 0;
            let mut on_victim = 0;
            while finished < kill_after {
                let event = tokio::time::timeout(DEADLINE, futures::StreamExt::next(&mut events))
                    .await
                    .expect("events in time")
                    .expect("the execution runs");
                if let handoff::EventKind::Finished { node, .. } = &event.kind {
                    finished += 1;
                    on_victim += usize::from(*node == victim_id);
                }
            }
            drop(victim); // SIGKILL, then reaped
            let outcome = tokio::time::timeout(DEADLINE, handle).await;
            let line = match outcome {
                Ok(Ok(done)) if done.results.get::<i64>("total") == Ok(expected) => "ok".to_owned(),
                Ok(Ok(done)) => format!("wrong total {:?}", done.results.get::<i64>("total")),
                Ok(Err(error)) => format!("failed: {error}"),
                Err(_) => "hung".to_owned(),
            };
            println!(
                "round {round}: killed after {finished} finished ({on_victim} on the victim): {line}"
            );
            outcomes.push(line);
        }
        let ok = outcomes.iter().filter(|l| *l == "ok").count();
        println!("tally {ok}/{rounds}");
        assert_eq!(ok, rounds, "{outcomes:?}");
        cluster.shutdown().await.expect("shutdown");
    });
    survivor.drain();
}

/// A function that kills every node it runs on (the demo's `crash` aborts the process) is
/// stopped after `max_node_deaths` deaths, and the error blames it alone: not `calm1`,
/// collocated with it (so running beside it when the first node dies), nor `calm2`.
#[test]
fn a_function_that_keeps_killing_its_node_is_stopped_and_blamed() {
    let dir = TempDir::new("crash");
    let key = keygen(&dir, "cluster.key");
    let key_path = key_arg(&key);
    let mut first = Proc::spawn("w0", &["--key", &key_path, "--cpu", "2"]);
    let address = first.address();
    let mut workers = vec![first];
    for i in 1..3 {
        let mut w = Proc::spawn(
            &format!("w{i}"),
            &["--key", &key_path, "--cpu", "2", "--bootstrap", &address],
        );
        w.address();
        workers.push(w);
    }
    actix::System::new().block_on(async move {
        let cluster = coordinator(&key, &address, DEFAULT_NODE_GRACE, 3).await;
        let cpu = || Resources::new().cpu(1);
        let dag = Dag::new()
            .with(
                Function::new("boom", "crash")
                    .extra_arg(1_i64)
                    .with_cost(cpu()),
            )
            .with(
                Function::new("calm1", "sleep_ms")
                    .extra_arg(300_u64)
                    .with_cost(cpu())
                    .collocated_with("boom"),
            )
            .with(
                Function::new("calm2", "sleep_ms")
                    .extra_arg(300_u64)
                    .with_cost(cpu()),
            )
            .validate()
            .expect("valid");
        let options = ExecuteOptions::default().max_node_deaths(2);
        let err = tokio::time::timeout(DEADLINE, cluster.node().execute(dag, options))
            .await
            .expect("ends in time")
            .expect_err("stopped");
        match err {
            ExecuteError::CrashLoop {
                function,
                deaths,
                nodes,
            } => {
                assert_eq!(function.as_str(), "boom");
                assert_eq!(deaths, 2);
                assert_eq!(nodes.len(), 2, "{nodes:?}");
            }
            other => panic!("unexpected {other:?}"),
        }
        cluster.shutdown().await.expect("shutdown");
    });
    // Two workers died running `boom` (their exit may be seen a moment after their
    // connections closed); one is left.
    let end = Instant::now() + DEADLINE;
    let exited = loop {
        let exited: Vec<_> = workers
            .iter_mut()
            .map(|w| w.child.try_wait().expect("try_wait").is_some())
            .collect();
        if exited.iter().filter(|e| **e).count() >= 2 || Instant::now() > end {
            break exited;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(exited.iter().filter(|e| **e).count(), 2, "{exited:?}");
}

/// Many DAGs in a row across three worker processes leave nothing behind on any node: no
/// values, no reservations, no work in progress. `SOAK_DAGS` sets how many (1,000 by
/// default); the resident memory of each worker is printed after the first tenth and at
/// the end.
#[test]
fn many_dags_in_a_row_leave_nothing_behind() {
    let dags: usize = std::env::var("SOAK_DAGS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1000);
    let dir = TempDir::new("soak");
    let key = keygen(&dir, "cluster.key");
    let key_path = key_arg(&key);
    let mut first = Proc::spawn("s0", &["--key", &key_path, "--cpu", "2"]);
    let address = first.address();
    let mut workers = vec![first];
    for i in 1..3 {
        let mut w = Proc::spawn(
            &format!("s{i}"),
            &["--key", &key_path, "--cpu", "2", "--bootstrap", &address],
        );
        w.address();
        workers.push(w);
    }
    let pids: Vec<u32> = workers.iter().map(|w| w.child.id()).collect();
    actix::System::new().block_on(async move {
        let cluster = coordinator(&key, &address, DEFAULT_NODE_GRACE, 3).await;
        let workers: Vec<NodeId> = cluster
            .discover_nodes()
            .await
            .expect("nodes")
            .into_iter()
            .skip(1)
            .map(|n| n.node)
            .collect();
        let cpu = || Resources::new().cpu(1);
        let mut rss_early = Vec::new();
        for round in 0..dags {
            // 20 kB made on one worker, measured on another, summed on a third.
            let dag = Dag::with_id(format!("soak-{round}"))
                .with(
                    Function::new("data", "bytes")
                        .extra_arg(20_000_u64)
                        .extra_arg((round % 251) as u8)
                        .with_cost(cpu()),
                )
                .with(Function::new("size", "len_of").arg("data").with_cost(cpu()))
                .with(
                    Function::new("twice", "double")
                        .arg("size")
                        .with_cost(cpu()),
                )
                .with(
                    Function::new("total", "sum")
                        .args(["size", "twice"])
                        .as_list()
                        .with_cost(cpu()),
                )
                .validate()
                .expect("valid");
            let done = tokio::time::timeout(
                DEADLINE,
                cluster.node().execute(dag, ExecuteOptions::default()),
            )
            .await
            .expect("in time")
            .expect("runs");
            assert_eq!(done.results.get::<i64>("total"), Ok(60_000));
            if round + 1 == dags / 10 {
                rss_early = pids.iter().map(|&p| rss_kb(p)).collect();
            }
        }
        // Every execution's values were forgotten on the workers (asynchronously: look
        // until they are gone), and nothing is reserved or running there.
        for worker in &workers {
            let deadline = tokio::time::Instant::now() + DEADLINE;
            loop {
                let stats = cluster.node_stats(worker).await.expect("stats");
                if stats.values == 0 && stats.free == stats.capacity && stats.serving == 0 {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{worker}: {stats:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let local = cluster.node_stats(cluster.id()).await.expect("stats");
        assert_eq!(
            local.values, 0,
            "the coordinator freed every execution's values"
        );
        let rss_end: Vec<_> = pids.iter().map(|&p| rss_kb(p)).collect();
        println!(
            "soak: {dags} DAGs; worker RSS (kB) after {}: {rss_early:?}, at the end: {rss_end:?}",
            dags / 10
        );
        cluster.shutdown().await.expect("shutdown");
    });
}

/// A worker process that freezes (SIGSTOP: its connections stay open, so no connection
/// closes) is gone once no announcement came from it for the peer time-to-live, and is
/// back when it resumes and announces again.
#[test]
fn a_frozen_worker_is_gone_after_the_time_to_live_and_back_when_it_resumes() {
    let dir = TempDir::new("frozen");
    let key = keygen(&dir, "cluster.key");
    let key_path = key_arg(&key);
    // It announces every 2 s (the default).
    let mut worker = Proc::spawn("frozen", &["--key", &key_path, "--cpu", "1"]);
    let address = worker.address();
    let pid = worker.child.id();
    actix::System::new().block_on(async move {
        let net = NetConfig::builder(ClusterKey::from_file(&key).expect("read the key"))
            .name("watcher")
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"))
            .bootstrap(address.parse().expect("multiaddr"))
            .announce_interval(Duration::from_millis(500))
            .peer_ttl(Duration::from_secs(4))
            .build()
            .expect("config");
        let node = NodeConfig::new(net.node_id(), Registry::new());
        let watcher = ClusterNode::start(node, net).await.expect("start");
        let mut changes = watcher.peer_changes();
        let present =
            |peers: &Vec<handoff::net::DiscoveredNode>| peers.iter().any(|p| p.name == "frozen");
        tokio::time::timeout(DEADLINE, changes.wait_for(present))
            .await
            .expect("discovered in time")
            .expect("bridge running");
        signal(pid, nix::sys::signal::Signal::SIGSTOP);
        let frozen = Instant::now();
        tokio::time::timeout(DEADLINE, changes.wait_for(|peers| !present(peers)))
            .await
            .expect("gone in time")
            .expect("bridge running");
        println!("gone {:?} after it froze", frozen.elapsed());
        signal(pid, nix::sys::signal::Signal::SIGCONT);
        tokio::time::timeout(DEADLINE, changes.wait_for(present))
            .await
            .expect("back in time")
            .expect("bridge running");
        watcher.shutdown().await.expect("shutdown");
    });
    // It was frozen, never dead.
    assert!(worker.child.try_wait().expect("try_wait").is_none());
}

#[test]
fn a_killed_node_that_comes_back_gets_its_work() {
    let dir = TempDir::new("rejoin");
    let key = keygen(&dir, "cluster.key");
    let key_path = key_arg(&key);
    let identity = dir.file("back.identity");
    let identity_path = key_arg(&identity);
    let mut stays = Proc::spawn("stays", &["--key", &key_path, "--cpu", "1"]);
    let address = stays.address();
    let back_args = [
        "--key",
        key_path.as_str(),
        "--cpu",
        "1",
        "--bootstrap",
        address.as_str(),
        "--identity",
        identity_path.as_str(),
    ];
    let mut back = Proc::spawn("back", &back_args);
    back.address();
    let at = address.clone();
    actix::System::new().block_on(async move {
        let cluster = coordinator(&key, &at, DEADLINE, 2).await;
        let mut changes = cluster.peer_changes();
        let find = |peers: &[handoff::net::DiscoveredNode], name: &str| {
            peers
                .iter()
                .find(|p| p.name == name)
                .map(|p| p.node.clone())
        };
        let peers = cluster.discover_nodes().await.expect("nodes");
        let (stays_id, back_id) = (
            find(&peers, "stays").expect("stays"),
            find(&peers, "back").expect("back"),
        );
        let dag = Dag::new()
            .with(
                Function::new("hold", "sleep_ms")
                    .extra_arg(200_u64)
                    .pinned(stays_id.clone()),
            )
            .with(
                Function::new("there", "identity")
                    .arg("hold")
                    .pinned(back_id.clone()),
            )
            .validate()
            .expect("valid");
        // A direct connection to it (a peer known only through gossip is declared gone
        // after the announcement time-to-live; one connected to, as soon as it dies).
        cluster.node_resources(&back_id).await.expect("asked");
        let handle = cluster
            .node()
            .submit(dag, ExecuteOptions::default())
            .await
            .expect("submitted");
        drop(back); // SIGKILL
        tokio::time::timeout(
            DEADLINE,
            changes.wait_for(|peers| peers.iter().all(|p| p.node != back_id)),
        )
        .await
        .expect("seen gone in time")
        .expect("bridge running");
        let mut again = Proc::spawn("back", &back_args);
        let again_address = again.address();
        assert!(
            again_address.ends_with(back_id.as_str()),
            "the same node id"
        );
        let done = tokio::time::timeout(DEADLINE, handle)
            .await
            .expect("in time")
            .expect("runs on the node that came back");
        assert_eq!(done.results.node("there"), Some(&back_id));
        assert_eq!(done.results.get::<i64>("there"), Ok(200));
        cluster.shutdown().await.expect("shutdown");
        again.drain();
    });
    stays.drain();
}

/// Starts a coordinator in this process (no resources, `grace` for lost nodes) joined to
/// `bootstrap`, and waits until its resource manager can run functions on `peers` nodes.
async fn coordinator(key: &Path, bootstrap: &str, grace: Duration, peers: usize) -> ClusterNode {
    let net = NetConfig::builder(ClusterKey::from_file(key).expect("read the key"))
        .name("coordinator")
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"))
        .bootstrap(bootstrap.parse().expect("multiaddr"))
        .build()
        .expect("config");
    let node = NodeConfig::new(net.node_id(), Registry::new()).node_grace(grace);
    let cluster = ClusterNode::start(node, net).await.expect("start");
    let mut changes = cluster.peer_changes();
    tokio::time::timeout(DEADLINE, changes.wait_for(|p| p.len() == peers))
        .await
        .expect("discovered in time")
        .expect("bridge running");
    while cluster.node().discover_nodes().await.expect("nodes").len() < peers + 1 {
        let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
    }
    cluster
}

/// The id of the peer named `name`, connected to directly (so that its death is seen
/// as soon as its connection closes, not after the announcement time-to-live).
async fn connected_peer(cluster: &ClusterNode, name: &str) -> NodeId {
    let node = cluster
        .discover_nodes()
        .await
        .expect("nodes")
        .into_iter()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("{name} discovered"))
        .node;
    cluster.node_resources(&node).await.expect("asked");
    node
}

#[test]
fn a_function_pinned_to_a_killed_worker_fails_after_the_grace_period() {
    let dir = TempDir::new("pinned-dead");
    let key = keygen(&dir, "cluster.key");
    let key_path = key_arg(&key);
    let mut stays = Proc::spawn("stays", &["--key", &key_path, "--cpu", "1"]);
    let address = stays.address();
    let mut victim = Proc::spawn(
        "victim",
        &["--key", &key_path, "--cpu", "1", "--bootstrap", &address],
    );
    victim.address();
    let grace = Duration::from_millis(500);
    actix::System::new().block_on(async move {
        let cluster = coordinator(&key, &address, grace, 2).await;
        let stays_id = connected_peer(&cluster, "stays").await;
        let victim_id = connected_peer(&cluster, "victim").await;
        let dag = Dag::new()
            .with(
                Function::new("hold", "sleep_ms")
                    .extra_arg(300_u64)
                    .pinned(stays_id),
            )
            .with(
                Function::new("there", "identity")
                    .arg("hold")
                    .pinned(victim_id.clone()),
            )
            .validate()
            .expect("valid");
        let handle = cluster
            .node()
            .submit(dag, ExecuteOptions::default())
            .await
            .expect("submitted");
        drop(victim); // SIGKILL
        let err = tokio::time::timeout(DEADLINE, handle)
            .await
            .expect("in time")
            .expect_err("its node never came back");
        match err {
            ExecuteError::Allocation(handoff::AllocationError::NodeDown {
                function,
                node,
                grace: waited,
            }) => {
                assert_eq!(function.as_str(), "there");
                assert_eq!(node, victim_id);
                assert_eq!(waited, grace);
            }
            other => panic!("unexpected {other:?}"),
        }
        cluster.shutdown().await.expect("shutdown");
    });
    stays.drain();
}

/// Picks `prefer` whenever the cost fits there now, else any node where it does.
struct Prefer(NodeId);

impl handoff::Allocator for Prefer {
    fn choose(&self, cost: Option<&Resources>, nodes: &[handoff::NodeView<'_>]) -> Option<usize> {
        nodes
            .iter()
            .position(|n| *n.id == self.0 && n.fits_now(cost))
            .or_else(|| nodes.iter().position(|n| n.fits_now(cost)))
    }
}

/// A worker process dies holding two generations of tiles (a tile and its filtered
/// copy, both too big to travel inline); the aggregate still needs the second: both are
/// recomputed on the survivor and the summary is the one computed locally.
#[test]
fn tiles_lost_with_a_killed_worker_are_recomputed_two_levels_deep() {
    use futures::StreamExt;
    let dir = TempDir::new("lineage");
    let key = keygen(&dir, "cluster.key");
    let key_path = key_arg(&key);
    let mut survivor = Proc::spawn("survivor", &["--key", &key_path, "--cpu", "2"]);
    let address = survivor.address();
    let mut victim = Proc::spawn(
        "victim",
        &["--key", &key_path, "--cpu", "2", "--bootstrap", &address],
    );
    victim.address();
    let at = address.clone();
    actix::System::new().block_on(async move {
        let cluster = coordinator(&key, &at, DEADLINE, 2).await;
        let survivor_id = connected_peer(&cluster, "survivor").await;
        let victim_id = connected_peer(&cluster, "victim").await;
        let cpu = || Resources::new().cpu(1);
        let dag = Dag::new()
            .with(
                Function::new("a", "make_tile")
                    .extra_arg(1_u32)
                    .extra_arg(160_u32)
                    .with_cost(cpu()),
            )
            .with(Function::new("b", "filter").arg("a").with_cost(cpu()))
            .with(
                Function::new("s", "make_tile")
                    .extra_arg(2_u32)
                    .extra_arg(160_u32)
                    .pinned(survivor_id.clone()),
            )
            .with(
                Function::new("w", "hold_tile")
                    .arg("s")
                    .extra_arg(700_u64)
                    .pinned(survivor_id.clone()),
            )
            .with(
                Function::new("agg", "aggregate")
                    .args(["b", "w"])
                    .as_list()
                    .with_cost(cpu()),
            )
            .validate()
            .expect("valid");
        let options = ExecuteOptions::default()
            .allocation_strategy(handoff::AllocationStrategy::Custom(std::sync::Arc::new(
                Prefer(victim_id.clone()),
            )))
            .free_intermediates(["agg"])
            .events(4096);
        let mut handle = cluster
            .node()
            .submit(dag, options)
            .await
            .expect("submitted");
        let mut events = handle.events().expect("events");
        loop {
            let event = tokio::time::timeout(DEADLINE, events.next())
                .await
                .expect("events in time")
                .expect("runs");
            if matches!(&event.kind, handoff::EventKind::Stored { function, node }
                if function.as_str() == "b" && *node == victim_id)
            {
                break;
            }
        }
        drop(victim); // SIGKILL, with `a` and `b` held only there
        let mut recomputed = Vec::new();
        while let Some(event) = tokio::time::timeout(DEADLINE, events.next())
            .await
            .expect("events in time")
        {
            if let handoff::EventKind::Recomputing { function, .. } = &event.kind {
                recomputed.push(function.as_str().to_owned());
            }
        }
        recomputed.sort();
        assert_eq!(recomputed, ["a", "b"]);
        let done = tokio::time::timeout(DEADLINE, handle)
            .await
            .expect("in time")
            .expect("completes");
        let expected = demo::aggregate([
            &demo::filter(&demo::make_tile(1, 160).expect("tile")),
            &demo::make_tile(2, 160).expect("tile"),
        ]);
        assert_eq!(done.results.get::<demo::Summary>("agg"), Ok(expected));
        for f in ["a", "b", "agg"] {
            assert_eq!(done.results.node(f), Some(&survivor_id), "{f}");
        }
        cluster.shutdown().await.expect("shutdown");
    });
    survivor.drain();
}

/// The environment variables that make `coordinator_process` coordinate (it is run by
/// `a_killed_coordinator_leaves_its_workers_clean`, as a child process of this test binary).
const COORDINATE_AT: &str = "HANDOFF_TEST_COORDINATE_AT";
const COORDINATE_KEY: &str = "HANDOFF_TEST_COORDINATE_KEY";
const COORDINATE_WORKER: &str = "HANDOFF_TEST_COORDINATE_WORKER";

/// Not a test on its own (ignored): the coordinator process of
/// `a_killed_coordinator_leaves_its_workers_clean`. It submits a DAG to the worker, prints
/// `running` once the worker holds a value and runs two calls, and waits to be killed.
#[test]
#[ignore = "run as a child process by a_killed_coordinator_leaves_its_workers_clean"]
fn coordinator_process() {
    use futures::StreamExt;
    let (Ok(at), Ok(key), Ok(worker)) = (
        std::env::var(COORDINATE_AT),
        std::env::var(COORDINATE_KEY),
        std::env::var(COORDINATE_WORKER),
    ) else {
        return;
    };
    let worker = NodeId::new(worker);
    actix::System::new().block_on(async move {
        let cluster = coordinator(Path::new(&key), &at, DEADLINE, 1).await;
        let cpu = || Resources::new().cpu(1);
        let dag = Dag::new()
            .with(
                Function::new("big", "bytes")
                    .extra_arg(100_000_u64)
                    .extra_arg(3_u8)
                    .pinned(worker.clone()),
            )
            .with(
                Function::new("held", "gate")
                    .with_cost(cpu())
                    .pinned(worker.clone()),
            )
            .with(
                Function::new("also", "stubborn")
                    .with_cost(cpu())
                    .pinned(worker.clone()),
            )
            .with(
                Function::new("queued", "len_of")
                    .arg("big")
                    .with_cost(Resources::new().cpu(2))
                    .pinned(worker.clone()),
            )
            .validate()
            .expect("valid");
        let mut handle = cluster
            .node()
            .submit(dag, ExecuteOptions::default().events(1024))
            .await
            .expect("submitted");
        let mut events = handle.events().expect("events");
        let mut started = 0;
        let mut stored = false;
        while !(stored && started == 2) {
            let event = events.next().await.expect("runs");
            match &event.kind {
                handoff::EventKind::Stored { function, .. } if function.as_str() == "big" => {
                    stored = true;
                }
                handoff::EventKind::Reserved { function, .. }
                    if function.as_str() == "held" || function.as_str() == "also" =>
                {
                    started += 1;
                }
                _ => {}
            }
        }
        println!("running");
        // Killed here by the test; the handle keeps the execution alive until then.
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)
        })
        .await;
        drop(handle);
    });
}

/// A coordinator process killed in the middle of an execution: after the grace period
/// the worker (in this process) has dropped its value and its pending work, a call still
/// running for it sees `is_cancelled()` and ends, a call that ignores it keeps its
/// reservation until it returns, and nothing they return afterwards is kept.
#[test]
fn a_killed_coordinator_leaves_its_workers_clean() {
    let dir = TempDir::new("coordinator-death");
    let key = keygen(&dir, "cluster.key");
    // The calls the coordinator leaves running wait for their cancellation (checking it
    // as user code does), and count it.
    let cancelled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut registry = demo::registry().expect("demo registry");
    {
        let cancelled = std::sync::Arc::clone(&cancelled);
        registry
            .register_fallible("gate", move || {
                let end = Instant::now() + DEADLINE;
                while !handoff::is_cancelled() {
                    if Instant::now() > end {
                        return Err("never cancelled");
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                cancelled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Returned after the cancellation: must not be kept.
                Ok(1_u64)
            })
            .expect("gate");
    }
    // One call ignores its cancellation and runs until the test lets it return.
    let release = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    {
        let release = std::sync::Arc::clone(&release);
        registry
            .register_fallible("stubborn", move || {
                let (open, changed) = &*release;
                let guard = open.lock().map_err(|_| "poisoned")?;
                let (guard, _) = changed
                    .wait_timeout_while(guard, DEADLINE, |open| !*open)
                    .map_err(|_| "poisoned")?;
                if *guard {
                    Ok(1_u64)
                } else {
                    Err("never released")
                }
            })
            .expect("stubborn");
    }
    let cluster_key = ClusterKey::from_file(&key).expect("read the key");
    actix::System::new().block_on(async move {
        let net = NetConfig::builder(cluster_key)
            .name("worker")
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"))
            .build()
            .expect("config");
        let node = NodeConfig::new(net.node_id(), registry)
            .capabilities(Resources::new().cpu(2))
            .node_grace(Duration::from_millis(300));
        let worker = ClusterNode::start(node, net).await.expect("start");
        let address = worker
            .client()
            .listen_addresses()
            .await
            .expect("addresses")
            .into_iter()
            .next()
            .expect("an address");
        let at = format!("{address}/p2p/{}", worker.id());
        let mut command = Command::new(std::env::current_exe().expect("this test binary"));
        command
            .args(["--exact", "coordinator_process", "--ignored", "--nocapture"])
            .env(COORDINATE_AT, &at)
            .env(COORDINATE_KEY, key_arg(&key))
            .env(COORDINATE_WORKER, worker.id().as_str());
        let mut coordinator = Proc::start("coordinator", command);
        let (tx, rx) = futures::channel::oneshot::channel();
        // The child's output is read on a thread: its waits must not block this System.
        let reader = std::thread::spawn(move || {
            coordinator.wait_for("the running line", |l| (l == "running").then_some(()));
            let _ = tx.send(());
            coordinator
        });
        tokio::time::timeout(DEADLINE, rx)
            .await
            .expect("the coordinator runs its DAG in time")
            .expect("reader thread");
        let node = worker.node().clone();
        let stats = worker.node_stats(worker.id()).await.expect("stats");
        assert_eq!(stats.values, 1, "{stats:?}");
        assert_eq!(stats.free.get("cpu"), handoff::Amount::ZERO, "{stats:?}");
        drop(reader.join().expect("reader")); // SIGKILL
        let clean = |stats: &handoff::net::NodeStats| {
            stats.values == 0 && stats.free == stats.capacity && stats.serving == 0
        };
        // After the grace period the worker drops the value and cancels the two calls:
        // the one that checks ends; the stubborn one keeps its cpu while it runs.
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let stats = loop {
            let stats = worker.node_stats(worker.id()).await.expect("stats");
            if stats.values == 0 && cancelled.load(std::sync::atomic::Ordering::SeqCst) == 1 {
                break stats;
            }
            assert!(tokio::time::Instant::now() < deadline, "{stats:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            stats.free.get("cpu"),
            handoff::Amount::from_f64(1.0).expect("an amount"),
            "{stats:?}"
        );
        // Once it returns, its cpu comes back, and what it returned is not kept.
        {
            let (open, changed) = &*release;
            *open.lock().expect("release") = true;
            changed.notify_all();
        }
        loop {
            let stats = worker.node_stats(worker.id()).await.expect("stats");
            if clean(&stats) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{stats:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(cancelled.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(node.stored_values().await.expect("count"), 0);
        worker.shutdown().await.expect("shutdown");
    });
}

/// A node process is a service: with its standard input closed (as under nohup, systemd
/// or a script's `&`) it keeps running, and SIGINT or SIGTERM stop it gracefully, with a
/// line saying so and exit status 0.
#[test]
fn a_node_runs_without_its_standard_input_and_stops_on_a_signal() {
    let dir = TempDir::new("service");
    let key = keygen(&dir, "cluster.key");
    let key_path = key_arg(&key);
    let mut node = Proc::spawn("svc", &["--key", &key_path, "--cpu", "1"]);
    let address = node.address();
    drop(node.stdin.take());
    // Still running: it sees a node that joins after its standard input closed.
    let other = Proc::spawn(
        "other",
        &["--key", &key_path, "--cpu", "1", "--bootstrap", &address],
    );
    node.wait_peers(&["other:1:0"]);
    signal(node.child.id(), nix::sys::signal::Signal::SIGINT);
    node.wait_for("the stopping line", |line| {
        line.starts_with("stopping on SIGINT: draining")
            .then_some(())
    });
    // It held nothing: the drain ends at once, and says so.
    node.wait_for("the stopped line", |line| {
        (line.starts_with("stopped: drained in")
            && line.ends_with("nothing running, no value held"))
        .then_some(())
    });
    let status = node.wait_exit();
    assert!(status.success(), "svc exited cleanly: {status:?}");
    let name = other.name.clone();
    let mut other = other;
    drop(other.stdin.take());
    signal(other.child.id(), nix::sys::signal::Signal::SIGTERM);
    other.wait_for("the stopping line", |line| {
        line.starts_with("stopping on SIGTERM: draining")
            .then_some(())
    });
    let status = other.wait_exit();
    assert!(status.success(), "{name} exited cleanly: {status:?}");
}

/// A second node started on a port a node listens on already is refused with an error
/// saying so (libp2p's TCP transport would share the port through `SO_REUSEPORT`, and
/// the second node would take some of the first one's connections).
#[test]
fn a_node_refuses_a_port_another_node_listens_on() {
    let dir = TempDir::new("port");
    let key = keygen(&dir, "cluster.key");
    let key_path = key_arg(&key);
    let mut first = Proc::spawn("first", &["--key", &key_path, "--cpu", "1"]);
    let address = first.address();
    let listen = address
        .split("/p2p/")
        .next()
        .expect("an address")
        .to_owned();
    let mut second = Command::new(BIN)
        .args([
            "run", "--name", "second", "--key", &key_path, "--listen", &listen,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    // It must exit by itself; one that starts anyway is killed when the wait ends.
    let end = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = second.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() >= end {
            let _ = second.kill();
            let _ = second.wait();
            break None;
        }
        std::thread::yield_now();
    };
    let status = status.expect("the second node exits instead of starting");
    assert!(!status.success(), "{status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().expect("piped"), &mut stderr)
        .expect("stderr");
    assert!(stderr.contains("in use"), "{stderr}");
    // The first node is undisturbed.
    let status = first.finish();
    assert!(status.success(), "{status:?}");
}

/// Start order does not matter: a node whose bootstrap node is not up yet keeps dialing
/// it (waiting longer each time) and joins once it is.
#[test]
fn a_node_started_before_its_bootstrap_node_joins_it_later() {
    let dir = TempDir::new("order");
    let key = keygen(&dir, "cluster.key");
    let key_path = key_arg(&key);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let mut early = Proc::spawn(
        "early",
        &["--key", &key_path, "--cpu", "1", "--bootstrap", &listen],
    );
    early.wait_for("a failed dial", |line| {
        line.starts_with("dial failed").then_some(())
    });
    let _late = Proc::spawn(
        "late",
        &["--key", &key_path, "--cpu", "2", "--listen", &listen],
    );
    early.wait_peers(&["late:2:0"]);
}

/// `--version` prints the program and its version.
#[test]
fn the_node_program_tells_its_version() {
    let out = Command::new(BIN)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.trim_end().ends_with(env!("CARGO_PKG_VERSION")),
        "{stdout}"
    );
}

/// A key file other users can read is refused, saying how to fix it (keygen writes
/// mode 0600).
#[test]
fn a_key_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("shared-key");
    let key = keygen(&dir, "cluster.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = Command::new(BIN)
        .args(["run", "--key", &key_arg(&key), "--cpu", "1"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("chmod 600"), "{stderr}");
    // `--allow-shared-key` overrides it.
    let out = Command::new(BIN)
        .args(["run", "--key", &key_arg(&key), "--cpu", "1"])
        .args(["--allow-shared-key", "--stop-on-stdin-eof"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with("listening ")),
        "{stdout}"
    );
}

/// Logs written to a file or a pipe carry no terminal colour codes.
#[test]
fn logs_redirected_from_a_terminal_have_no_colour_codes() {
    let dir = TempDir::new("plain-logs");
    let key = keygen(&dir, "cluster.key");
    let mut command = Command::new(BIN);
    command
        .args([
            "run",
            "--name",
            "logs",
            "--key",
            &key_arg(&key),
            "--cpu",
            "1",
        ])
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("run");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    // Once it listens, it has logged its start.
    let listening = lines.find(|l| l.as_ref().is_ok_and(|l| l.starts_with("listening")));
    assert!(listening.is_some(), "the node started");
    signal(child.id(), nix::sys::signal::Signal::SIGTERM);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut stderr)
        .expect("stderr");
    let _ = child.wait();
    assert!(
        stderr.contains("DEBUG"),
        "debug logs were written: {stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "no escape codes: {stderr:?}");
}

/// A worker frozen (`SIGSTOP`) with a function sent to it, for longer than the
/// coordinator waits for silent peers: the function runs again on the other worker and
/// the DAG completes; when the frozen worker resumes and runs its stale attempt, the
/// value is dropped (the ended execution tells it to forget) and its capacity is all free.
#[test]
fn a_frozen_worker_drops_its_stale_value_when_it_resumes() {
    let dir = TempDir::new("frozen");
    let key = keygen(&dir, "cluster.key");
    let key_path = key_arg(&key);
    let mut w1 = Proc::spawn("w1", &["--key", &key_path, "--cpu", "1"]);
    let bootstrap = w1.address();
    let w2 = Proc::spawn(
        "w2",
        &["--key", &key_path, "--cpu", "1", "--bootstrap", &bootstrap],
    );
    actix::System::new().block_on(async {
        // Silent peers are gone after 4 s here (workers announce every 2 s).
        let net = NetConfig::builder(ClusterKey::from_file(&key).expect("read the key"))
            .name("coordinator")
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"))
            .bootstrap(bootstrap.parse().expect("multiaddr"))
            .announce_interval(Duration::from_millis(500))
            .peer_ttl(Duration::from_secs(4))
            .build()
            .expect("config");
        let node =
            NodeConfig::new(net.node_id(), Registry::new()).node_grace(Duration::from_millis(200));
        let cluster = ClusterNode::start(node, net).await.expect("start");
        let mut changes = cluster.peer_changes();
        while cluster.node().discover_nodes().await.expect("nodes").len() < 3 {
            tokio::time::timeout(DEADLINE, changes.changed())
                .await
                .expect("both workers seen in time")
                .expect("bridge running");
        }
        let w1_id = connected_peer(&cluster, "w1").await;
        let w2_id = connected_peer(&cluster, "w2").await;
        let dag = Dag::with_id("frozen")
            .with(
                Function::new("s", "sleep_ms")
                    .extra_arg(3000_u64)
                    .with_cost(Resources::new().cpu(1)),
            )
            .validate()
            .expect("valid");
        // The function is sent to w1, frozen: it runs again on w2 once w1 is gone.
        signal(w1.child.id(), nix::sys::signal::Signal::SIGSTOP);
        let options = ExecuteOptions::default().allocation_strategy(
            handoff::AllocationStrategy::Custom(std::sync::Arc::new(Prefer(w1_id.clone()))),
        );
        let handle = cluster
            .node()
            .submit(dag, options)
            .await
            .expect("submitted");
        let done = tokio::time::timeout(DEADLINE * 2, handle)
            .await
            .expect("an outcome in time")
            .expect("completes on the other worker");
        assert_eq!(done.results.get::<u64>("s"), Ok(3000));
        assert_eq!(done.results.node("s"), Some(&w2_id));
        signal(w1.child.id(), nix::sys::signal::Signal::SIGCONT);
        // The resumed worker ends its stale attempt, and drops what it made.
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let stats = cluster.node_stats(&w1_id).await;
            if let Ok(stats) = &stats
                && stats.values == 0
                && stats.serving == 0
                && stats.free == stats.capacity
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the resumed worker still holds the stale attempt: {stats:?}"
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
        }
        cluster.shutdown().await.expect("shutdown");
    });
    drop((w1, w2));
}

/// `status` joins the cluster for a moment and lists every node by name with its id,
/// address, capacity, free resources and function count; the second node is configured
/// through environment variables only.
#[test]
fn status_lists_every_node_by_name() {
    let dir = TempDir::new("status");
    let key = keygen(&dir, "cluster.key");
    let key_path = key_arg(&key);
    let mut alpha = Proc::spawn("alpha", &["--key", &key_path, "--cpu", "2"]);
    let address = alpha.address();
    let alpha_id = address.rsplit("/p2p/").next().expect("an id").to_owned();
    let mut command = Command::new(BIN);
    command
        .arg("run")
        .env("HANDOFF_KEY_FILE", &key_path)
        .env("HANDOFF_NAME", "beta")
        .env("HANDOFF_CPU", "1")
        .env("HANDOFF_GPU", "1")
        .env("HANDOFF_BOOTSTRAP", &address);
    let mut beta = Proc::start("beta", command);
    beta.address();
    alpha.wait_peers(&["beta:1:1"]);
    let out = Command::new(BIN)
        .args(["status", "--key", &key_path, "--bootstrap", &address])
        .stdin(Stdio::null())
        .output()
        .expect("status");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    let functions = demo::registry().expect("demo").names().len();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0], "nodes 2", "{stdout}");
    assert!(
        lines[1].starts_with(&format!(
            "alpha id {alpha_id} state alive addresses /ip4/127.0.0.1/tcp/"
        )) && lines[1].ends_with(&format!(
            "capacity {{cpu: 2}} free {{cpu: 2}} functions {functions}"
        )),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("beta id ")
            && lines[2].ends_with(&format!(
                "capacity {{cpu: 1, gpu: 1}} free {{cpu: 1, gpu: 1}} functions {functions}"
            )),
        "{stdout}"
    );
    // Without a node to join through, it fails saying so.
    let out = Command::new(BIN)
        .args([
            "status",
            "--key",
            &key_path,
            "--bootstrap",
            "/ip4/127.0.0.1/tcp/1",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("status");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("could not join the cluster"), "{stderr}");
}

/// `run --help` tells every flag with its environment variable and exits 0; a bad flag
/// exits 2 naming it; `--stop-on-stdin-eof` stops the node when its standard input
/// closes, and `--log-format json` writes one JSON object per log line.
#[test]
fn the_command_line_helps_stops_on_eof_when_asked_and_logs_json() {
    let out = Command::new(BIN)
        .args(["run", "--help"])
        .output()
        .expect("help");
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    for text in [
        "--bootstrap",
        "HANDOFF_BOOTSTRAP",
        "--stop-on-stdin-eof",
        "--log-format",
    ] {
        assert!(help.contains(text), "{text} in {help}");
    }
    let out = Command::new(BIN)
        .args(["run", "--insecure", "--gpu", "lots"])
        .output()
        .expect("bad flag");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--gpu"),
        "{out:?}"
    );

    let out = Command::new(BIN)
        .args(["run", "--insecure", "--cpu", "1", "--stop-on-stdin-eof"])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with("listening ")),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().last(),
        Some("stopped: standard input closed"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logs: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(
        logs.iter()
            .any(|l| l["fields"]["message"] == "node started"),
        "{stderr}"
    );
}

/// SIGTERM during a DAG drains the node: peers stop sending it work, what runs there
/// finishes, the coordinator fetches the values it still needs from it, and only then
/// does it leave, exiting 0 with a line saying it drained. Nothing it made is lost, so
/// nothing is recomputed and no function runs twice.
#[test]
fn sigterm_drains_a_node_without_losing_its_values() {
    let dir = TempDir::new("drain");
    let key = keygen(&dir, "cluster.key");
    let key_path = key_arg(&key);
    let mut stay = Proc::spawn("stay", &["--key", &key_path, "--cpu", "2"]);
    let address = stay.address();
    let mut leaver = Proc::spawn(
        "leaver",
        &[
            "--key",
            &key_path,
            "--cpu",
            "2",
            "--bootstrap",
            &address,
            "--drain-timeout",
            "60",
        ],
    );
    leaver.address();
    let chains = 6;
    let (dag, expected) = chains_dag("drain", chains, 600, None);
    let outcome = actix::System::new().block_on(async move {
        let cluster = coordinator(&key, &address, DEFAULT_NODE_GRACE, 2).await;
        let leaver_id = connected_peer(&cluster, "leaver").await;
        let mut handle = cluster
            .node()
            .submit(dag, ExecuteOptions::default().events(8192))
            .await
            .expect("submitted");
        let mut events = handle.events().expect("events");
        // Its first function starts there: stop it.
        let mut seen = Vec::new();
        loop {
            let event = tokio::time::timeout(DEADLINE, futures::StreamExt::next(&mut events))
                .await
                .expect("events in time")
                .expect("the execution runs");
            let started_there = matches!(
                &event.kind,
                handoff::EventKind::Started { node, .. } if *node == leaver_id
            );
            seen.push(event.kind);
            if started_there {
                break;
            }
        }
        signal(leaver.child.id(), nix::sys::signal::Signal::SIGTERM);
        let done = tokio::time::timeout(DEADLINE, handle)
            .await
            .expect("the DAG ends in time")
            .expect("the DAG completes");
        while let Some(event) = futures::StreamExt::next(&mut events).await {
            seen.push(event.kind);
        }
        // The leaver exits on its own once the coordinator told it to forget the DAG.
        let exited = tokio::task::spawn_blocking(move || {
            leaver.wait_for("the draining line", |line| {
                line.starts_with("stopping on SIGTERM: draining")
                    .then_some(())
            });
            let line = leaver.wait_for("the stopped line", |line| {
                line.starts_with("stopped: ").then(|| line.to_owned())
            });
            (line, leaver.wait_exit())
        })
        .await
        .expect("waited");
        cluster.shutdown().await.expect("shutdown");
        (done.results.get::<i64>("total"), seen, leaver_id, exited)
    });
    let (total, seen, leaver_id, (line, status)) = outcome;
    assert_eq!(total, Ok(expected));
    assert!(
        line.starts_with("stopped: drained in") && line.ends_with("nothing running, no value held"),
        "{line}"
    );
    assert!(status.success(), "the drained node exits 0: {status:?}");
    let finished_there = seen
        .iter()
        .filter(|k| matches!(k, handoff::EventKind::Finished { node, .. } if node == &leaver_id))
        .count();
    assert!(
        finished_there >= 1,
        "the leaver finished its work: {seen:?}"
    );
    assert!(
        !seen.iter().any(|k| matches!(
            k,
            handoff::EventKind::Recomputing { .. } | handoff::EventKind::NodeLost { .. }
        )),
        "nothing lost: {seen:?}"
    );
    let mut finished: Vec<&FunctionId> = seen
        .iter()
        .filter_map(|k| match k {
            handoff::EventKind::Finished { function, .. } => Some(function),
            _ => None,
        })
        .collect();
    let all = finished.len();
    finished.sort();
    finished.dedup();
    assert_eq!(finished.len(), all, "no function ran twice: {seen:?}");
    assert_eq!(all, 4 * chains + 1);
    stay.drain();
}

/// A second signal during a drain stops the node at once, saying so, even with values
/// still held there (kept by the execution that made them).
#[test]
fn a_second_signal_stops_a_draining_node_at_once() {
    let dir = TempDir::new("drain-twice");
    let key = keygen(&dir, "cluster.key");
    let key_path = key_arg(&key);
    let mut busy = Proc::spawn("busy", &["--key", &key_path, "--cpu", "1"]);
    let address = busy.address();
    let (line, status) = actix::System::new().block_on(async move {
        let cluster = coordinator(&key, &address, DEFAULT_NODE_GRACE, 1).await;
        let done = keep_a_value_on(&cluster, "busy").await;
        let exited = tokio::task::spawn_blocking(move || {
            signal(busy.child.id(), nix::sys::signal::Signal::SIGTERM);
            busy.wait_for("the draining line", |line| {
                line.starts_with("stopping on SIGTERM: draining")
                    .then_some(())
            });
            signal(busy.child.id(), nix::sys::signal::Signal::SIGINT);
            let line = busy.wait_for("the stopped line", |line| {
                line.starts_with("stopped").then(|| line.to_owned())
            });
            (line, busy.wait_exit())
        })
        .await
        .expect("waited");
        drop(done);
        cluster.shutdown().await.expect("shutdown");
        exited
    });
    assert_eq!(line, "stopped at once on a second SIGINT");
    assert!(status.success(), "{status:?}");
}

/// A drain does not wait for the values of a coordinator that left (nobody is left to
/// fetch them; they would wait out the node grace period of 10 s): it drops them and
/// ends, well within a drain timeout shorter than that grace period.
#[test]
fn a_drain_drops_the_values_of_a_coordinator_that_left() {
    let dir = TempDir::new("drain-orphans");
    let key = keygen(&dir, "cluster.key");
    let key_path = key_arg(&key);
    let mut worker = Proc::spawn(
        "worker",
        &["--key", &key_path, "--cpu", "1", "--drain-timeout", "3"],
    );
    let address = worker.address();
    actix::System::new().block_on(async move {
        let cluster = coordinator(&key, &address, DEFAULT_NODE_GRACE, 1).await;
        let done = keep_a_value_on(&cluster, "worker").await;
        // The coordinator leaves without telling the worker to forget.
        std::mem::forget(done);
        cluster.shutdown().await.expect("shutdown");
    });
    // The worker saw it come and leave.
    worker.wait_peers(&["coordinator:0:0"]);
    worker.wait_for("`peers 0`", |line| (line == "peers 0").then_some(()));
    signal(worker.child.id(), nix::sys::signal::Signal::SIGTERM);
    let line = worker.wait_for("the stopped line", |line| {
        line.starts_with("stopped").then(|| line.to_owned())
    });
    assert!(
        line.starts_with("stopped: drained in") && line.ends_with("nothing running, no value held"),
        "{line}"
    );
    assert!(worker.wait_exit().success());
}

/// Runs a DAG of one function pinned to the peer named `name` with `keep_values`, so its
/// value stays there; checks it did. The result holds the value (forgetting it leaves
/// the value there without a coordinator told to forget it).
async fn keep_a_value_on(cluster: &ClusterNode, name: &str) -> handoff::ExecutionResult {
    let peer = connected_peer(cluster, name).await;
    let dag = Dag::new()
        .with(
            Function::new("kept", "bytes")
                .extra_arg(16_u64)
                .extra_arg(1_u8)
                .pinned(peer.clone()),
        )
        .validate()
        .expect("valid");
    let done = tokio::time::timeout(
        DEADLINE,
        cluster
            .node()
            .execute(dag, ExecuteOptions::default().keep_values(true)),
    )
    .await
    .expect("in time")
    .expect("executes");
    let stats = cluster.node_stats(&peer).await.expect("stats");
    assert_eq!(stats.values, 1, "the value is kept on {name}: {stats:?}");
    done
}
