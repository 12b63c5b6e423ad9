//! The request-response protocol between two nodes: Hello, Fetch answered through
//! `Client::respond`, frame limits, the in-flight cap, and large values fetched in chunks.

mod common;

use std::time::Instant;

use bytes::Bytes;
use common::{Store, builder, guarded, init_tracing, key, node, serve_fetches, wait_for};
use handoff_core::{DagId, Function, FunctionId, Value};
use handoff_net::{
    ArgumentSource, ExecuteRequest, FetchRequest, FrameError, NetEvent, PROTOCOL_VERSION, Request,
    RequestError, Response, RpcError,
};

fn ids(f: &str) -> (DagId, FunctionId) {
    (DagId::new("dag"), FunctionId::new(f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_and_fetch_round_trip() {
    init_tracing();
    let key = key();
    let a = node(builder(key.clone(), "a")).await;
    let b = node(builder(key.clone(), "b")).await;
    let a_id = guarded("dial", b.client.dial(a.address.clone()))
        .await
        .expect("dial");

    let value = Value::new((42_i64, "answer".to_owned()));
    let mut store = Store::new();
    store.insert(ids("f"), value.to_msgpack().expect("encode"));
    let server = serve_fetches(a.client.clone(), a.events, store);

    let started = Instant::now();
    let hello = guarded("hello", b.client.hello(&a_id))
        .await
        .expect("hello");
    println!(
        "first hello (opens the rpc stream): {:?}",
        started.elapsed()
    );
    assert_eq!(hello.name, "a");
    assert_eq!(hello.version, PROTOCOL_VERSION);

    let (dag, f) = ids("f");
    let fetched = guarded("fetch", b.client.fetch_value(&a_id, &dag, &f))
        .await
        .expect("fetch");
    assert_eq!(
        fetched.get::<(i64, String)>(),
        Ok((42, "answer".to_owned()))
    );

    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        b.client
            .fetch_chunk(
                &a_id,
                FetchRequest {
                    dag: dag.clone(),
                    function: f.clone(),
                    offset: 0,
                    max_len: 1024,
                },
            )
            .await
            .expect("fetch");
    }
    println!(
        "small Fetch round trip (through respond()): {:?} on average over {rounds}",
        started.elapsed() / rounds
    );

    // A value that is not there is a typed remote error.
    let (dag, missing) = ids("missing");
    let err = b
        .client
        .fetch_value(&a_id, &dag, &missing)
        .await
        .expect_err("not found");
    match err {
        handoff_net::FetchError::Request(RequestError::Remote { node, error }) => {
            assert_eq!(node, a_id);
            assert_eq!(
                error,
                RpcError::NotFound {
                    dag,
                    function: missing
                }
            );
        }
        other => panic!("unexpected {other}"),
    }
    // Requests to oneself or to a malformed id fail without touching the network.
    assert!(matches!(
        b.client.hello(b.client.node_id()).await,
        Err(RequestError::LocalNode { .. })
    ));
    assert!(matches!(
        b.client
            .hello(&handoff_core::NodeId::new("not-a-peer"))
            .await,
        Err(RequestError::InvalidNode { .. })
    ));

    a.client.shutdown().await.expect("shutdown");
    let (served, _) = server.await.expect("server");
    assert_eq!(served, 1 + rounds as usize);
    b.client.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_refused_and_the_node_keeps_serving() {
    init_tracing();
    let key = key();
    // The sender allows 8 MiB requests; the receiver keeps the 1 MiB default.
    let sender = node(builder(key.clone(), "sender").max_request_bytes(8 << 20)).await;
    let mut receiver = node(builder(key.clone(), "receiver")).await;
    let receiver_id = guarded("dial", sender.client.dial(receiver.address.clone()))
        .await
        .expect("dial");

    let big = Request::Execute(ExecuteRequest {
        dag: DagId::new("dag"),
        function: Function::new("g", "sum").arg("f"),
        arguments: vec![ArgumentSource::Inline {
            function: FunctionId::new("f"),
            value: Value::new(Bytes::from(vec![7_u8; 2 << 20])),
        }],
        attempt: 1,
        inline: Vec::new(),
        timeout_ms: None,
        report_start: false,
    });
    let err = guarded(
        "oversized request",
        sender.client.request(&receiver_id, big),
    )
    .await
    .expect_err("refused by the receiver");
    println!("oversized request failed as: {err}");
    assert!(
        matches!(
            err,
            RequestError::Io { .. } | RequestError::ConnectionClosed { .. }
        ),
        "{err}"
    );

    // The same connection still serves requests.
    let hello = guarded("hello", sender.client.hello(&receiver_id))
        .await
        .expect("still serving");
    assert_eq!(hello.name, "receiver");
    // The receiver's application saw only requests it could read.
    let small = Request::Register {
        capabilities: handoff_core::Resources::new().cpu(1),
    };
    let client = sender.client.clone();
    let id = receiver_id.clone();
    let pending = tokio::spawn(async move { client.request(&id, small).await });
    let (request, channel) = wait_for(
        "the small request",
        &mut receiver.events,
        |event| match event {
            NetEvent::InboundRequest {
                request, channel, ..
            } => Some((request, channel)),
            _ => None,
        },
    )
    .await;
    assert!(matches!(request, Request::Register { .. }), "{request:?}");
    receiver
        .client
        .respond(channel, Response::Ack)
        .await
        .expect("respond");
    assert!(matches!(
        guarded("ack", pending).await.expect("join"),
        Ok(Response::Ack)
    ));

    // Our own limit applies on writes too: the receiver's default sender cannot send it.
    let too_big = Request::Hello {
        version: PROTOCOL_VERSION.to_owned(),
        name: "x".repeat(2 << 20),
    };
    let sender_id = sender.client.node_id().clone();
    let err = guarded(
        "oversized write",
        receiver.client.request(&sender_id, too_big),
    )
    .await
    .expect_err("refused on write");
    match &err {
        RequestError::Io { source, .. } => assert!(
            matches!(FrameError::of(source), Some(FrameError::TooLarge { .. })),
            "{err}"
        ),
        other => panic!("unexpected {other}"),
    }

    sender.client.shutdown().await.expect("shutdown");
    receiver.client.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_above_the_in_flight_cap_fail_at_once() {
    init_tracing();
    let key = key();
    let mut a = node(builder(key.clone(), "a")).await;
    let b = node(
        builder(key.clone(), "b")
            .max_in_flight_per_peer(2)
            .fetch_window(1),
    )
    .await;
    let a_id = guarded("dial", b.client.dial(a.address.clone()))
        .await
        .expect("dial");
    let register = || Request::Register {
        capabilities: handoff_core::Resources::new(),
    };
    let mut pending = Vec::new();
    for _ in 0..2 {
        let (client, id, request) = (b.client.clone(), a_id.clone(), register());
        pending.push(tokio::spawn(
            async move { client.request(&id, request).await },
        ));
    }
    // Both are in flight once a holds both, unanswered.
    let mut channels = Vec::new();
    while channels.len() < 2 {
        channels.push(
            wait_for("held requests", &mut a.events, |event| match event {
                NetEvent::InboundRequest { channel, .. } => Some(channel),
                _ => None,
            })
            .await,
        );
    }
    let err = b
        .client
        .request(&a_id, register())
        .await
        .expect_err("capped");
    assert!(
        matches!(err, RequestError::TooManyInFlight { limit: 2, .. }),
        "{err}"
    );
    for channel in channels {
        a.client
            .respond(channel, Response::Ack)
            .await
            .expect("respond");
    }
    for p in pending {
        assert!(matches!(
            guarded("ack", p).await.expect("join"),
            Ok(Response::Ack)
        ));
    }
    // Room again.
    let (client, id) = (b.client.clone(), a_id.clone());
    let again = tokio::spawn(async move { client.request(&id, register()).await });
    let channel = wait_for("next request", &mut a.events, |event| match event {
        NetEvent::InboundRequest { channel, .. } => Some(channel),
        _ => None,
    })
    .await;
    a.client
        .respond(channel, Response::Ack)
        .await
        .expect("respond");
    assert!(matches!(
        guarded("ack", again).await.expect("join"),
        Ok(Response::Ack)
    ));
    a.client.shutdown().await.expect("shutdown");
    b.client.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_megabyte_value_is_fetched_in_bounded_chunks() {
    init_tracing();
    let key = key();
    // Response frames are limited to 2 MiB on both sides: any larger frame would fail.
    let limits =
        |b: handoff_net::ConfigBuilder| b.max_response_bytes(2 << 20).fetch_chunk_bytes(1 << 20);
    let a = node(limits(builder(key.clone(), "a"))).await;
    let b = node(limits(builder(key.clone(), "b"))).await;
    let a_id = guarded("dial", b.client.dial(a.address.clone()))
        .await
        .expect("dial");

    let payload: Vec<u8> = (0..10_000_000_u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let value = Value::new(Bytes::from(payload.clone()));
    let encoded = value.to_msgpack().expect("encode");
    let mut store = Store::new();
    store.insert(ids("big"), encoded.clone());
    let server = serve_fetches(a.client.clone(), a.events, store);

    let (dag, f) = ids("big");
    let started = Instant::now();
    let fetched = guarded("fetch 10 MB", b.client.fetch_value(&a_id, &dag, &f))
        .await
        .expect("fetch");
    let took = started.elapsed();
    println!(
        "10 MB value fetched in {took:?} ({:.0} MiB/s)",
        encoded.len() as f64 / (1 << 20) as f64 / took.as_secs_f64()
    );
    assert_eq!(fetched.to_msgpack().expect("bytes"), encoded);
    assert_eq!(
        fetched.get::<Bytes>().expect("decode"),
        Bytes::from(payload)
    );

    // A node that accepts smaller values refuses it after the first chunk.
    let small = node(limits(builder(key.clone(), "small")).max_value_bytes(1 << 20)).await;
    guarded("dial", small.client.dial(a.address.clone()))
        .await
        .expect("dial");
    let err = guarded("too large", small.client.fetch_value(&a_id, &dag, &f))
        .await
        .expect_err("too large");
    assert!(
        matches!(err, handoff_net::FetchError::TooLarge { total_len, max: 1_048_576, .. } if total_len == encoded.len() as u64),
        "{err}"
    );
    small.client.shutdown().await.expect("shutdown");

    a.client.shutdown().await.expect("shutdown");
    let (served, largest) = server.await.expect("server");
    assert_eq!(served, encoded.len().div_ceil(1 << 20) + 1);
    assert_eq!(largest, 1 << 20, "no chunk above the configured size");
    b.client.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_falls_behind_answers_busy() {
    init_tracing();
    let key = key();
    // Room for one event: a second request while the first waits is answered Busy.
    let mut a = node(builder(key.clone(), "a").event_capacity(1)).await;
    let b = node(builder(key.clone(), "b")).await;
    let a_id = guarded("dial", b.client.dial(a.address.clone()))
        .await
        .expect("dial");
    let register = || Request::Register {
        capabilities: handoff_core::Resources::new(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let (client, id, request) = (b.client.clone(), a_id.clone(), register());
        tasks.spawn(async move { client.request(&id, request).await });
    }
    // One of them is refused at once; the other waits in a's event channel (unless an
    // announcement got there first, and both are refused).
    let first = guarded("first answer", tasks.join_next())
        .await
        .expect("a task")
        .expect("join");
    assert!(
        matches!(
            first,
            Err(RequestError::Remote {
                error: RpcError::Busy { limit: 1, .. },
                ..
            })
        ),
        "{first:?}"
    );
    // Read the channel: answer the request held there, if any.
    while let Ok(event) = a.events.try_recv() {
        if let NetEvent::InboundRequest { channel, .. } = event {
            a.client
                .respond(channel, Response::Ack)
                .await
                .expect("respond");
        }
    }
    let second = guarded("second answer", tasks.join_next())
        .await
        .expect("a task")
        .expect("join");
    assert!(
        matches!(
            second,
            Ok(Response::Ack)
                | Err(RequestError::Remote {
                    error: RpcError::Busy { .. },
                    ..
                })
        ),
        "{second:?}"
    );
    a.client.shutdown().await.expect("shutdown");
    b.client.shutdown().await.expect("shutdown");
}
