//! A peer that floods requests is throttled to its inbound cap (the rest answered Busy by
//! the event loop, never reaching the application), and another peer is served meanwhile.

mod common;

use common::{builder, guarded, init_tracing, key, node};
use handoff_core::{NodeId, Resources};
use handoff_net::{NetEvent, Request, RequestError, Response, ResponseChannel, RpcError};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// The victim's cap on inbound requests per peer.
const CAP: usize = 4;
/// How many requests the flooder sends at once.
const FLOOD: usize = 40;

fn register() -> Request {
    Request::Register {
        capabilities: Resources::new().cpu(1),
    }
}

/// Reads the victim's events until `count` inbound requests have arrived, and returns
/// their senders and channels (the requests stay unanswered: the victim is "busy").
async fn inbound(
    events: &mut mpsc::Receiver<NetEvent>,
    count: usize,
) -> Vec<(NodeId, ResponseChannel)> {
    let mut out = Vec::new();
    guarded("inbound requests", async {
        while out.len() < count {
            match events.recv().await.expect("event channel open") {
                NetEvent::InboundRequest { node, channel, .. } => out.push((node, channel)),
                _ => continue,
            }
        }
    })
    .await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_is_throttled_and_another_is_served() {
    init_tracing();
    let key = key();
    let mut victim = node(builder(key.clone(), "victim").max_inbound_per_peer(CAP)).await;
    // The flooder allows itself far more requests in flight than the victim accepts.
    let flooder = node(builder(key.clone(), "flooder").max_in_flight_per_peer(64)).await;
    let honest = node(builder(key.clone(), "honest")).await;
    let victim_id = guarded("dial", flooder.client.dial(victim.address.clone()))
        .await
        .expect("dial");
    guarded("dial", honest.client.dial(victim.address.clone()))
        .await
        .expect("dial");
    let flooder_id = flooder.client.node_id().clone();
    let honest_id = honest.client.node_id().clone();

    let mut flood = JoinSet::new();
    for _ in 0..FLOOD {
        let (client, id) = (flooder.client.clone(), victim_id.clone());
        flood.spawn(async move { client.request(&id, register()).await });
    }
    // The requests the victim holds never complete until it answers, so the first
    // FLOOD - CAP to complete are the refused ones: all Busy, at the cap.
    for _ in 0..FLOOD - CAP {
        let result = guarded("a refused request", flood.join_next())
            .await
            .expect("a task")
            .expect("join");
        assert!(
            matches!(
                &result,
                Err(RequestError::Remote {
                    error: RpcError::Busy {
                        pending: 4,
                        limit: 4
                    },
                    ..
                })
            ),
            "{result:?}"
        );
    }
    // The victim's application got exactly CAP of them.
    let held = inbound(&mut victim.events, CAP).await;
    assert!(held.iter().all(|(node, _)| *node == flooder_id));

    // Meanwhile another peer is served: its requests reach the application, and their
    // answers come back.
    let mut honest_requests = JoinSet::new();
    for _ in 0..CAP {
        let (client, id) = (honest.client.clone(), victim_id.clone());
        honest_requests.spawn(async move { client.request(&id, register()).await });
    }
    for (node, channel) in inbound(&mut victim.events, CAP).await {
        assert_eq!(
            node, honest_id,
            "only the honest peer's requests get through now"
        );
        victim
            .client
            .respond(channel, Response::Ack)
            .await
            .expect("respond");
    }
    while let Some(result) = guarded("honest answers", honest_requests.join_next()).await {
        assert!(matches!(result.expect("join"), Ok(Response::Ack)));
    }

    // The flooder is still at its cap.
    let err = guarded("one more", flooder.client.request(&victim_id, register()))
        .await
        .expect_err("still at the cap");
    assert!(
        matches!(
            err,
            RequestError::Remote {
                error: RpcError::Busy { .. },
                ..
            }
        ),
        "{err}"
    );

    // Once the victim answers, the flooder's held requests complete and it has room again.
    for (_, channel) in held {
        victim
            .client
            .respond(channel, Response::Ack)
            .await
            .expect("respond");
    }
    while let Some(result) = guarded("held answers", flood.join_next()).await {
        assert!(matches!(result.expect("join"), Ok(Response::Ack)));
    }
    let mut again = JoinSet::new();
    for _ in 0..CAP {
        let (client, id) = (flooder.client.clone(), victim_id.clone());
        again.spawn(async move { client.request(&id, register()).await });
    }
    for (node, channel) in inbound(&mut victim.events, CAP).await {
        assert_eq!(node, flooder_id);
        victim
            .client
            .respond(channel, Response::Ack)
            .await
            .expect("respond");
    }
    while let Some(result) = guarded("answers after the flood", again.join_next()).await {
        assert!(matches!(result.expect("join"), Ok(Response::Ack)));
    }

    for client in [&victim.client, &flooder.client, &honest.client] {
        client.shutdown().await.expect("shutdown");
    }
}
