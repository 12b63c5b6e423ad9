//! Joining a cluster: discovery through a bootstrap node, announcements, the cluster key
//! keeping other nodes out, protocol-version refusal, shutdown, and running inside actix.

mod common;

use std::time::{Duration, Instant};

use common::{builder, guarded, init_tracing, key, node, wait_announced, wait_for};
use handoff_core::{CodeName, Resources};
use handoff_net::{
    DialError, GoneReason, NetEvent, NodeState, PROTOCOL_VERSION, Refusal, RequestError, Security,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_discover_each_other_through_one_bootstrap_node() {
    init_tracing();
    let key = key();
    let state = |cpu: u32, code: &str| {
        NodeState::new(Resources::new().cpu(cpu).memory(1000 * cpu)).with_code_names([code])
    };
    let mut a = node(builder(key.clone(), "a").state(state(1, "load"))).await;
    let mut b = node(
        builder(key.clone(), "b")
            .state(state(2, "resize"))
            .bootstrap(a.address.clone()),
    )
    .await;
    let mut c = node(
        builder(key.clone(), "c")
            .state(state(3, "blur"))
            .bootstrap(a.address.clone()),
    )
    .await;
    let (ac, bc, cc) = (a.client.clone(), b.client.clone(), c.client.clone());

    wait_announced(&mut a, &[&bc, &cc]).await;
    wait_announced(&mut b, &[&ac, &cc]).await;
    wait_announced(&mut c, &[&ac, &bc]).await;

    let expectations = [
        (&a, [(&bc, 2, "b", "resize"), (&cc, 3, "c", "blur")]),
        (&b, [(&ac, 1, "a", "load"), (&cc, 3, "c", "blur")]),
        (&c, [(&ac, 1, "a", "load"), (&bc, 2, "b", "resize")]),
    ];
    for (me, expected) in expectations {
        let peers = me.client.peers().await.expect("peers");
        assert_eq!(
            peers.len(),
            2,
            "{} sees exactly the two others",
            me.client.name()
        );
        for (client, cpu, name, code) in expected {
            let peer = peers
                .iter()
                .find(|p| &p.node == client.node_id())
                .expect("peer announced");
            assert_eq!(peer.name, name);
            assert_eq!(peer.version, PROTOCOL_VERSION);
            assert_eq!(
                peer.state.capabilities,
                Resources::new().cpu(cpu).memory(1000 * cpu)
            );
            assert_eq!(peer.state.free, peer.state.capabilities);
            assert_eq!(peer.state.code_names, vec![CodeName::new(code)]);
            assert!(!peer.addresses.is_empty());
        }
    }
    // b and c found each other through a's gossip, with addresses to reach each other.
    let hello = guarded("hello", b.client.hello(c.client.node_id()))
        .await
        .expect("b reaches c directly");
    assert_eq!(hello.name, "c");

    for n in [&a, &b, &c] {
        n.client.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_announced_at_once() {
    init_tracing();
    let key = key();
    let mut a = node(builder(key.clone(), "a")).await;
    let mut b = node(
        builder(key.clone(), "b")
            .state(NodeState::new(Resources::new().cpu(4)))
            .bootstrap(a.address.clone()),
    )
    .await;
    let bc = b.client.clone();
    wait_announced(&mut a, &[&bc]).await;
    let ac = a.client.clone();
    wait_announced(&mut b, &[&ac]).await;

    let busy = NodeState::new(Resources::new().cpu(4))
        .with_free(Resources::new().cpu(1))
        .with_code_names(["resize", "blur"]);
    b.client.announce(busy.clone()).await.expect("announce");
    let seen = wait_for("b's change", &mut a.events, |event| match event {
        NetEvent::PeerAnnounced(announcement) if announcement.state == busy => Some(announcement),
        _ => None,
    })
    .await;
    assert_eq!(&seen.node, b.client.node_id());
    let peers = a.client.peers().await.expect("peers");
    assert_eq!(peers[0].state, busy);
    // An announcement over the limit is refused before it is sent.
    let huge = NodeState::default().with_code_names((0..20_000).map(|i| format!("code-{i}")));
    assert!(matches!(
        b.client.announce(huge).await,
        Err(handoff_net::AnnounceError::TooLarge { max: 65_536, .. })
    ));
    // The node still announces normally afterwards.
    b.client
        .announce(busy.clone())
        .await
        .expect("announce again");

    // A node that stops is gone from the others' tables.
    b.client.shutdown().await.expect("shutdown");
    let gone = wait_for("b gone", &mut a.events, |event| match event {
        NetEvent::PeerGone { node, reason } => Some((node, reason)),
        _ => None,
    })
    .await;
    assert_eq!(gone, (b.client.node_id().clone(), GoneReason::Disconnected));
    assert!(a.client.peers().await.expect("peers").is_empty());
    assert!(matches!(
        b.client.peers().await,
        Err(handoff_net::ClientError::Stopped)
    ));
    // Its listener is closed: nothing answers at its address any more.
    let err = a.client.dial(b.address.clone()).await.expect_err("closed");
    assert!(matches!(err, DialError::Unreachable { .. }), "{err}");
    a.client.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_another_key_or_no_key_cannot_join() {
    init_tracing();
    let key = key();
    let mut a = node(builder(key.clone(), "a")).await;
    let mut b = node(builder(key.clone(), "b").bootstrap(a.address.clone())).await;
    let bc = b.client.clone();
    wait_announced(&mut a, &[&bc]).await;

    let connection_timeout = Duration::from_secs(1);
    let outsiders = [
        (
            "other key",
            node(
                builder(handoff_net::ClusterKey::generate(), "intruder")
                    .bootstrap(a.address.clone()),
            )
            .await,
        ),
        (
            "no key",
            node(builder(Security::Insecure, "insecure").bootstrap(a.address.clone())).await,
        ),
    ];
    for (what, outsider) in &outsiders {
        let started = Instant::now();
        let err = guarded("outsider dial", outsider.client.dial(a.address.clone()))
            .await
            .expect_err("an outsider cannot connect");
        let took = started.elapsed();
        println!("{what}: dial failed after {took:?}: {err}");
        assert!(
            took < connection_timeout + Duration::from_secs(2),
            "{what}: the dial fails within the connection timeout, took {took:?}"
        );
        if *what == "other key" {
            assert!(matches!(err, DialError::Handshake { .. }), "{what}: {err}");
            assert!(err.to_string().contains("likely cluster key mismatch"));
        }
        assert!(
            outsider
                .client
                .connected()
                .await
                .expect("connected")
                .is_empty()
        );
        assert!(outsider.client.peers().await.expect("peers").is_empty());
        // Nor can it send a request to a cluster member.
        let err = outsider
            .client
            .hello(a.client.node_id())
            .await
            .expect_err("no connection");
        assert!(
            matches!(
                err,
                RequestError::DialFailure { .. } | RequestError::ConnectionClosed { .. }
            ),
            "{what}: {err}"
        );
    }
    // The cluster never saw them.
    let members = [a.client.node_id().clone(), b.client.node_id().clone()];
    for n in [&a, &b] {
        for peer in n.client.connected().await.expect("connected") {
            assert!(members.contains(&peer), "only members are connected");
        }
        for peer in n.client.peers().await.expect("peers") {
            assert!(members.contains(&peer.node), "only members are announced");
        }
    }
    b.events.close();
    for (_, outsider) in &outsiders {
        outsider.client.shutdown().await.expect("shutdown");
    }
    a.client.shutdown().await.expect("shutdown");
    b.client.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_another_protocol_version_is_refused() {
    init_tracing();
    let key = key();
    let mut a = node(builder(key.clone(), "a")).await;
    let mut old = node(builder(key.clone(), "old").protocol_version_for_tests("handoff/0")).await;

    // The connection opens (same key), then identify shows the versions differ.
    let a_id = guarded("dial", old.client.dial(a.address.clone()))
        .await
        .expect("the transport connects");
    assert_eq!(&a_id, a.client.node_id());
    let expected_by_a = Refusal::VersionMismatch {
        ours: PROTOCOL_VERSION.to_owned(),
        theirs: "handoff/0".to_owned(),
    };
    let refused = wait_for("a refuses old", &mut a.events, |event| match event {
        NetEvent::PeerRefused { node, reason } => Some((node, reason)),
        _ => None,
    })
    .await;
    assert_eq!(refused, (old.client.node_id().clone(), expected_by_a));
    let refused = wait_for("old refuses a", &mut old.events, |event| match event {
        NetEvent::PeerRefused { node, reason } => Some((node, reason)),
        _ => None,
    })
    .await;
    assert_eq!(refused.0, a_id);

    let err = old.client.hello(&a_id).await.expect_err("refused");
    match err {
        RequestError::Refused { ours, theirs, .. } => {
            assert_eq!(ours, "handoff/0");
            assert_eq!(theirs, PROTOCOL_VERSION);
        }
        other => panic!("unexpected {other}"),
    }
    let err = a
        .client
        .hello(old.client.node_id())
        .await
        .expect_err("refused");
    assert!(matches!(err, RequestError::Refused { .. }), "{err}");
    assert!(a.client.peers().await.expect("peers").is_empty());
    assert!(old.client.peers().await.expect("peers").is_empty());
    a.client.shutdown().await.expect("shutdown");
    old.client.shutdown().await.expect("shutdown");
}

#[test]
fn the_network_layer_runs_inside_an_actix_system() {
    init_tracing();
    actix_rt::System::new().block_on(async {
        let key = key();
        let a = node(builder(key.clone(), "a")).await;
        let b = node(builder(key.clone(), "b")).await;
        let a_id = guarded("dial", b.client.dial(a.address.clone()))
            .await
            .expect("dial");
        let hello = guarded("hello", b.client.hello(&a_id))
            .await
            .expect("hello");
        assert_eq!(hello.name, "a");
        assert_eq!(hello.version, PROTOCOL_VERSION);
        a.client.shutdown().await.expect("shutdown");
        b.client.shutdown().await.expect("shutdown");
    });
}
