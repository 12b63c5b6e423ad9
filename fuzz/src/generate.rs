//! Random valid messages of the protocol (requests, responses, announcements) and random
//! MessagePack: the seeds the fuzzer mutates.

use std::time::Duration;

use bytes::Bytes;
use handoff_core::{
    Amount, Backoff, CallError, CodeName, DagId, Function, FunctionId, NodeId, Resources, Value,
    ValueError,
};
use handoff_core::{ArgSource, InlineEval, StagePlan};
use handoff_net::{
    Announcement, ArgumentSource, Chunk, ExecuteAnswer, ExecuteRequest, FetchRequest,
    FinishedReport, NodeState, Outcome, PROTOCOL_VERSION, Request, RequestKind, Response, RpcError,
    StageAnswer, StageItem, StageKey, StageRunRequest, StageSpec,
};

use crate::rng::Rng;

const WORDS: &[&str] = &[
    "",
    "a",
    "f",
    "g",
    "dag",
    "double",
    "sum",
    "cpu",
    "gpu",
    "memory",
    "licence",
    "worker-1",
    "é✓ü",
    "load_data",
    "gpu_process",
    "format_result",
];

fn string(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 => "x".repeat(rng.below(300)),
        1 => (0..rng.below(24))
            .map(|_| char::from(b'a' + rng.below(26) as u8))
            .collect(),
        _ => (*rng.pick(WORDS)).to_owned(),
    }
}

/// A random node id: `signer` (the node whose announcements the harness checks) or not.
fn node(rng: &mut Rng, signer: &NodeId) -> NodeId {
    if rng.chance(1, 2) {
        signer.clone()
    } else {
        NodeId::new(string(rng))
    }
}

fn amount(rng: &mut Rng) -> Amount {
    Amount::from_micros(match rng.below(6) {
        0 => i64::MAX,
        1 => i64::MIN,
        2 => -1,
        3 => rng.next_u64() as i64,
        _ => rng.below(64) as i64 * Amount::SCALE / 2,
    })
}

fn resources(rng: &mut Rng) -> Resources {
    let mut out = Resources::new();
    for _ in 0..rng.below(4) {
        out = out.with(string(rng), amount(rng));
    }
    out
}

/// A random value, as a typed local value or as opaque MessagePack.
fn value(rng: &mut Rng) -> Value {
    match rng.below(7) {
        0 => Value::new(rng.next_u64() as i64),
        1 => Value::new(string(rng)),
        2 => {
            let len = rng.below(200);
            Value::new(Bytes::from(rng.bytes(len)))
        }
        3 => Value::new((rng.next_u64() as i64, string(rng))),
        4 => Value::new((0..rng.below(8)).map(|i| i as u32).collect::<Vec<_>>()),
        5 => Value::from_msgpack(Bytes::from(msgpack(rng, 3))),
        _ => Value::new(()),
    }
}

fn duration(rng: &mut Rng) -> Duration {
    match rng.below(4) {
        0 => Duration::MAX,
        1 => Duration::ZERO,
        _ => Duration::from_millis(rng.below(100_000) as u64),
    }
}

fn function(rng: &mut Rng, signer: &NodeId) -> Function {
    let mut f = Function::new(string(rng), string(rng));
    for _ in 0..rng.below(4) {
        f = f.arg(string(rng));
    }
    for _ in 0..rng.below(3) {
        f = f.extra_arg(rng.next_u64() as i64);
    }
    if rng.chance(1, 3) {
        f = f.with_cost(resources(rng));
    }
    match rng.below(4) {
        0 => f = f.pinned(node(rng, signer)),
        1 => f = f.collocated_with(string(rng)),
        2 => f = f.inline(),
        _ => {}
    }
    if rng.chance(1, 3) {
        f = f.max_retries(rng.next_u64() as u32);
    }
    if rng.chance(1, 3) {
        f = f.timeout(duration(rng));
    }
    if rng.chance(1, 3) {
        f = f.backoff(match rng.below(3) {
            0 => Backoff::None,
            1 => Backoff::Fixed(duration(rng)),
            _ => Backoff::Exponential {
                base: duration(rng),
                max: duration(rng),
                jitter: rng.chance(1, 2),
            },
        });
    }
    if rng.chance(1, 4) {
        f = f.priority(rng.next_u64() as i32);
    }
    if rng.chance(1, 4) {
        f = f.as_list();
    }
    f
}

fn value_error(rng: &mut Rng) -> ValueError {
    match rng.below(3) {
        0 => ValueError::TypeMismatch {
            expected: string(rng),
            found: string(rng),
            reason: string(rng),
        },
        1 => ValueError::Encode {
            type_name: string(rng),
            reason: string(rng),
        },
        _ => ValueError::NotAList { found: string(rng) },
    }
}

fn call_error(rng: &mut Rng, signer: &NodeId) -> CallError {
    let code = CodeName::new(string(rng));
    match rng.below(8) {
        0 => CallError::UnknownCode { code },
        1 => CallError::Arity {
            code,
            expected: rng.below(9),
            got: rng.next_u64() as usize,
        },
        2 => CallError::Argument {
            code,
            position: rng.below(9),
            source: value_error(rng),
        },
        3 => CallError::Failed {
            code,
            message: string(rng),
        },
        4 => CallError::TimedOut {
            code,
            after: duration(rng),
        },
        5 => CallError::Panicked {
            code,
            message: string(rng),
        },
        6 => CallError::NodeLost {
            code,
            node: node(rng, signer),
            running: rng.chance(1, 2),
        },
        _ => CallError::Unavailable {
            code,
            node: node(rng, signer),
            reason: string(rng),
        },
    }
}

const KINDS: &[RequestKind] = &[
    RequestKind::Hello,
    RequestKind::Execute,
    RequestKind::Fetch,
    RequestKind::Resources,
    RequestKind::Register,
    RequestKind::Finished,
    RequestKind::Started,
    RequestKind::Forget,
    RequestKind::StageRun,
    RequestKind::StageClose,
];

fn rpc_error(rng: &mut Rng, signer: &NodeId) -> RpcError {
    match rng.below(11) {
        8 => RpcError::StageNotOpened {
            function: FunctionId::new(string(rng)),
            error: Box::new(call_error(rng, signer)),
        },
        9 => RpcError::TooManyStages {
            limit: rng.next_u64() as u32,
        },
        0 => RpcError::VersionMismatch {
            ours: string(rng),
            theirs: string(rng),
        },
        1 => RpcError::NotFound {
            dag: DagId::new(string(rng)),
            function: FunctionId::new(string(rng)),
        },
        2 => RpcError::OutOfRange {
            dag: DagId::new(string(rng)),
            function: FunctionId::new(string(rng)),
            offset: rng.next_u64(),
            total_len: rng.next_u64(),
        },
        3 => RpcError::UnknownCode {
            code: CodeName::new(string(rng)),
        },
        4 => RpcError::UnknownNode {
            node: node(rng, signer),
        },
        5 => RpcError::InsufficientResources {
            needed: resources(rng),
            free: resources(rng),
        },
        6 => RpcError::Busy {
            pending: rng.next_u64() as u32,
            limit: rng.next_u64() as u32,
        },
        7 => RpcError::Unsupported {
            request: *rng.pick(KINDS),
        },
        _ => RpcError::ShuttingDown,
    }
}

fn fetch(rng: &mut Rng) -> FetchRequest {
    FetchRequest {
        dag: DagId::new(string(rng)),
        function: FunctionId::new(string(rng)),
        offset: match rng.below(3) {
            0 => rng.next_u64(),
            _ => rng.below(256) as u64,
        },
        max_len: match rng.below(3) {
            0 => u32::MAX,
            _ => rng.below(256) as u32,
        },
    }
}

/// A random request of any kind.
pub fn request(rng: &mut Rng, signer: &NodeId) -> Request {
    match rng.below(12) {
        0 => Request::Hello {
            version: if rng.chance(3, 4) {
                PROTOCOL_VERSION.to_owned()
            } else {
                string(rng)
            },
            name: string(rng),
        },
        1 => Request::Execute(execute(rng, signer)),
        2 => Request::Fetch(fetch(rng)),
        3 => Request::Resources {
            node: node(rng, signer),
        },
        4 => Request::Register {
            capabilities: resources(rng),
        },
        5 => Request::Finished(finished(rng, signer)),
        6 => Request::Started {
            dag: DagId::new(string(rng)),
            function: FunctionId::new(string(rng)),
            attempt: rng.next_u64() as u32,
        },
        7 => Request::ExecuteBatch((0..rng.below(4)).map(|_| execute(rng, signer)).collect()),
        8 => Request::FinishedBatch((0..rng.below(4)).map(|_| finished(rng, signer)).collect()),
        9 => Request::StageRun(Box::new(StageRunRequest {
            key: stage_key(rng),
            spec: std::sync::Arc::new(StageSpec {
                plan: stage_plan(rng),
                function: function(rng, signer),
                inline: (0..rng.below(3)).map(|_| function(rng, signer)).collect(),
            }),
            items: (0..rng.below(4))
                .map(|_| StageItem {
                    seq: rng.next_u64(),
                    row: (0..rng.below(5))
                        .map(|_| rng.chance(1, 2).then(|| value(rng)))
                        .collect(),
                })
                .collect(),
        })),
        10 => Request::StageClose {
            key: stage_key(rng),
        },
        _ => Request::Forget {
            dag: DagId::new(string(rng)),
        },
    }
}

fn stage_key(rng: &mut Rng) -> StageKey {
    StageKey {
        stream: rng.next_u64(),
        function: FunctionId::new(string(rng)),
        worker: rng.next_u64() as u32,
    }
}

fn arg_source(rng: &mut Rng) -> ArgSource {
    let at = match rng.below(3) {
        0 => rng.next_u64() as usize,
        _ => rng.below(8),
    };
    if rng.chance(1, 2) {
        ArgSource::Slot(at)
    } else {
        ArgSource::Inline(at)
    }
}

/// A random stage plan (indices in range or not).
fn stage_plan(rng: &mut Rng) -> StagePlan {
    StagePlan {
        function: rng.below(8),
        inline: (0..rng.below(3))
            .map(|_| InlineEval {
                function: rng.below(8),
                args: (0..rng.below(3)).map(|_| arg_source(rng)).collect(),
            })
            .collect(),
        args: (0..rng.below(4)).map(|_| arg_source(rng)).collect(),
        slot: rng.below(8),
        releases: (0..rng.below(3)).map(|_| rng.below(8)).collect(),
    }
}

/// A random execute request.
fn execute(rng: &mut Rng, signer: &NodeId) -> ExecuteRequest {
    ExecuteRequest {
        dag: DagId::new(string(rng)),
        function: function(rng, signer),
        inline: (0..rng.below(3)).map(|_| function(rng, signer)).collect(),
        arguments: (0..rng.below(4))
            .map(|_| {
                if rng.chance(1, 2) {
                    ArgumentSource::Remote {
                        function: FunctionId::new(string(rng)),
                        node: node(rng, signer),
                    }
                } else {
                    ArgumentSource::Inline {
                        function: FunctionId::new(string(rng)),
                        value: value(rng),
                    }
                }
            })
            .collect(),
        attempt: rng.next_u64() as u32,
        timeout_ms: rng.chance(1, 2).then(|| rng.next_u64()),
        report_start: rng.chance(1, 2),
    }
}

/// A random report.
fn finished(rng: &mut Rng, signer: &NodeId) -> FinishedReport {
    FinishedReport {
        dag: DagId::new(string(rng)),
        function: FunctionId::new(string(rng)),
        attempt: rng.next_u64() as u32,
        outcome: if rng.chance(1, 2) {
            Outcome::Stored {
                size: rng.next_u64(),
                value: rng.chance(1, 2).then(|| value(rng)),
            }
        } else {
            Outcome::Failed {
                error: call_error(rng, signer),
            }
        },
    }
}

/// A random response of any kind.
pub fn response(rng: &mut Rng, signer: &NodeId) -> Response {
    match rng.below(8) {
        6 => Response::StageRan(
            (0..rng.below(4))
                .map(|_| {
                    if rng.chance(1, 2) {
                        StageAnswer::Done(value(rng))
                    } else {
                        StageAnswer::Failed {
                            function: FunctionId::new(string(rng)),
                            error: call_error(rng, signer),
                        }
                    }
                })
                .collect(),
        ),
        0 => Response::Hello {
            version: PROTOCOL_VERSION.to_owned(),
            name: string(rng),
        },
        1 => Response::Accepted {
            dag: DagId::new(string(rng)),
            function: FunctionId::new(string(rng)),
            attempt: rng.next_u64() as u32,
        },
        2 => {
            let len = rng.below(300);
            let bytes = Bytes::from(rng.bytes(len));
            Response::Chunk(Chunk {
                dag: DagId::new(string(rng)),
                function: FunctionId::new(string(rng)),
                offset: rng.below(1000) as u64,
                total_len: bytes.len() as u64 + rng.below(1000) as u64,
                bytes,
            })
        }
        3 => Response::Resources {
            node: node(rng, signer),
            capabilities: resources(rng),
            free: resources(rng),
        },
        4 => Response::Ack,
        5 => Response::Executed(
            (0..rng.below(4))
                .map(|_| match rng.below(3) {
                    0 => ExecuteAnswer::Accepted,
                    1 => ExecuteAnswer::Finished(finished(rng, signer)),
                    _ => ExecuteAnswer::Refused(rpc_error(rng, signer)),
                })
                .collect(),
        ),
        _ => Response::Error(rpc_error(rng, signer)),
    }
}

/// A random announcement, most often a valid one from `signer`.
pub fn announcement(rng: &mut Rng, signer: &NodeId) -> Announcement {
    let state = NodeState::new(resources(rng))
        .with_free(resources(rng))
        .with_code_names((0..rng.below(5)).map(|_| string(rng)));
    Announcement {
        node: if rng.chance(7, 8) {
            signer.clone()
        } else {
            NodeId::new(string(rng))
        },
        name: string(rng),
        version: if rng.chance(7, 8) {
            PROTOCOL_VERSION.to_owned()
        } else {
            string(rng)
        },
        seq: rng.next_u64(),
        addresses: (0..rng.below(3))
            .map(|_| format!("/ip4/127.0.0.1/tcp/{}", rng.below(65536)))
            .collect(),
        state,
    }
}

/// Random MessagePack, nested at most `depth` levels.
pub fn msgpack(rng: &mut Rng, depth: usize) -> Vec<u8> {
    let mut out = Vec::new();
    write_msgpack(rng, depth, &mut out);
    out
}

fn write_msgpack(rng: &mut Rng, depth: usize, out: &mut Vec<u8>) {
    use rmp::encode;
    let container = depth > 0 && rng.chance(1, 3);
    // Writing to a Vec cannot fail.
    match rng.below(if container { 9 } else { 7 }) {
        0 => {
            let _ = encode::write_nil(out);
        }
        1 => {
            let _ = encode::write_bool(out, rng.chance(1, 2));
        }
        2 => {
            let _ = encode::write_sint(out, rng.next_u64() as i64);
        }
        3 => {
            let _ = encode::write_uint(out, rng.next_u64() >> rng.below(64));
        }
        4 => {
            let _ = encode::write_f64(out, f64::from_bits(rng.next_u64()));
        }
        5 => {
            let _ = encode::write_str(out, &string(rng));
        }
        6 => {
            let len = rng.below(40);
            let _ = encode::write_bin(out, &rng.bytes(len));
        }
        7 => {
            let len = rng.below(5);
            let _ = encode::write_array_len(out, len as u32);
            for _ in 0..len {
                write_msgpack(rng, depth - 1, out);
            }
        }
        _ => {
            let len = rng.below(4);
            let _ = encode::write_map_len(out, len as u32);
            for _ in 0..2 * len {
                write_msgpack(rng, depth - 1, out);
            }
        }
    }
}
