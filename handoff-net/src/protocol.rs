//! The messages of the request-response protocol between nodes ([`RPC_PROTOCOL`]).
//!
//! Every message is MessagePack with named fields (`rmp_serde::to_vec_named`), so fields
//! can be added with `#[serde(default)]` without breaking older peers of the same
//! [`PROTOCOL_VERSION`]. Values travel as their MessagePack bytes ([`Value`]'s serde form).

use bytes::Bytes;
use handoff_actors::{StageAnswer, StageItem, StageKey, StageSpec};
use handoff_core::{CallError, CodeName, DagId, Function, FunctionId, NodeId, Resources, Value};
use serde::{Deserialize, Serialize};

/// The version of the Handoff wire protocol. Peers compare it when they connect (identify's
/// `protocol_version`) and in [`Request::Hello`]; a peer with another version is refused and
/// disconnected.
pub const PROTOCOL_VERSION: &str = "handoff/3";

/// The libp2p protocol name of the request-response protocol.
pub const RPC_PROTOCOL: &str = "/handoff/rpc/1";

/// A request from one node to another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Says who the sender is. The event loop answers it itself with [`Response::Hello`],
    /// or with [`RpcError::VersionMismatch`] (and then refuses the peer).
    Hello {
        /// The sender's [`PROTOCOL_VERSION`].
        version: String,
        /// The sender's human-readable name.
        name: String,
    },
    /// Runs a function on the receiver. Answered with the outcome ([`Response::Finished`])
    /// when the function ends quickly, else with [`Response::Accepted`] (or an error) and the
    /// outcome later as a [`Request::Finished`] from the receiver, so that a long function
    /// never runs into the request timeout.
    Execute(ExecuteRequest),
    /// Reads (a chunk of) a value stored on the receiver. Answered with [`Response::Chunk`].
    Fetch(FetchRequest),
    /// Asks what the receiver knows of `node`'s resources. Answered with
    /// [`Response::Resources`] or [`RpcError::UnknownNode`].
    Resources {
        /// The node asked about (the receiver itself, or a node it tracks).
        node: NodeId,
    },
    /// Sets the receiver's own capacity (the seed's `register_node` aimed at a remote
    /// node); the receiver registers it with its tracker and announces it. Answered with
    /// [`Response::Ack`].
    Register {
        /// The receiver's new capacity.
        capabilities: Resources,
    },
    /// Reports the outcome of an [`Request::Execute`] the sender accepted earlier. Answered
    /// with [`Response::Ack`].
    Finished(FinishedReport),
    /// Says that an [`ExecuteRequest`] with `report_start` is about to call its code.
    /// Answered with [`Response::Ack`]; the sender's code runs only after the answer.
    Started {
        /// The DAG.
        dag: DagId,
        /// The function.
        function: FunctionId,
        /// The attempt.
        attempt: u32,
    },
    /// Asks what the receiver holds and has reserved right now (for checking that nothing
    /// leaks). Answered with [`Response::Stats`].
    Stats,
    /// Drops every value of a DAG the receiver holds (the execution that made them has
    /// ended and its caller has what it keeps). Answered with [`Response::Ack`].
    Forget {
        /// The DAG.
        dag: DagId,
    },
    /// Runs several functions on the receiver: what the sender had queued for it when a
    /// request slot freed up (one exchange then carries many small functions). Answered
    /// with [`Response::Executed`], one [`ExecuteAnswer`] per request, in order; the ones
    /// answered [`ExecuteAnswer::Accepted`] are reported later with
    /// [`Request::FinishedBatch`] (or [`Request::Finished`]).
    ExecuteBatch(Vec<ExecuteRequest>),
    /// Reports the outcomes of several executions the sender accepted earlier. Answered
    /// with [`Response::Ack`].
    FinishedBatch(Vec<FinishedReport>),
    /// Runs a stream stage's function on a batch of items at a stage worker the sender's
    /// stream placed on the receiver (opened, its init code run, by the first such
    /// request; one without items only opens it). Answered with [`Response::StageRan`],
    /// one [`StageAnswer`] per item, in order, or an error (the worker could not open).
    StageRun(Box<StageRunRequest>),
    /// Closes a stage worker the sender's stream placed on the receiver: it drops the
    /// worker and its state. Answered with [`Response::Ack`].
    StageClose {
        /// The worker.
        key: StageKey,
    },
}

/// A batch of items for a stage worker (see [`Request::StageRun`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRunRequest {
    /// The worker.
    pub key: StageKey,
    /// The stage (its plan, function and inline functions), in every request, so that a
    /// worker can be opened by whichever comes first.
    pub spec: std::sync::Arc<StageSpec>,
    /// The items.
    pub items: Vec<StageItem>,
}

impl Request {
    /// The kind of request, for logs and errors.
    pub fn kind(&self) -> RequestKind {
        match self {
            Request::Hello { .. } => RequestKind::Hello,
            Request::Execute(_) => RequestKind::Execute,
            Request::Fetch(_) => RequestKind::Fetch,
            Request::Resources { .. } => RequestKind::Resources,
            Request::Register { .. } => RequestKind::Register,
            Request::Finished(_) => RequestKind::Finished,
            Request::Forget { .. } => RequestKind::Forget,
            Request::Started { .. } => RequestKind::Started,
            Request::Stats => RequestKind::Stats,
            Request::ExecuteBatch(_) => RequestKind::ExecuteBatch,
            Request::FinishedBatch(_) => RequestKind::FinishedBatch,
            Request::StageRun(_) => RequestKind::StageRun,
            Request::StageClose { .. } => RequestKind::StageClose,
        }
    }
}

/// The kinds of [`Request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RequestKind {
    /// [`Request::Hello`].
    Hello,
    /// [`Request::Execute`].
    Execute,
    /// [`Request::Fetch`].
    Fetch,
    /// [`Request::Resources`].
    Resources,
    /// [`Request::Register`].
    Register,
    /// [`Request::Finished`].
    Finished,
    /// [`Request::Forget`].
    Forget,
    /// [`Request::Started`].
    Started,
    /// [`Request::Stats`].
    Stats,
    /// [`Request::ExecuteBatch`].
    ExecuteBatch,
    /// [`Request::FinishedBatch`].
    FinishedBatch,
    /// [`Request::StageRun`].
    StageRun,
    /// [`Request::StageClose`].
    StageClose,
}

impl std::fmt::Display for RequestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Runs one function of a DAG on the receiving node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecuteRequest {
    /// The DAG the function belongs to (and the namespace of its result).
    pub dag: DagId,
    /// The function: its code name, extra arguments (constants, carried inline), cost,
    /// timeout and retry settings.
    pub function: Function,
    /// The inline functions among its arguments (and theirs), evaluated in place.
    #[serde(default)]
    pub inline: Vec<Function>,
    /// Where the result of each regular function it depends on lives (directly or
    /// through inline arguments).
    pub arguments: Vec<ArgumentSource>,
    /// Which attempt this is (1 for the first), echoed in [`FinishedReport`].
    pub attempt: u32,
    /// The longest the attempt may run, in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Report with a [`Request::Started`] (and its acknowledgement) before calling the code,
    /// so that the sender knows it was running if this node dies.
    #[serde(default)]
    pub report_start: bool,
}

/// Where one argument of an [`ExecuteRequest`] comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ArgumentSource {
    /// The result of `function` is stored on `node`: the executing node fetches it from
    /// there (or reads it locally when `node` is itself).
    Remote {
        /// The function whose result it is.
        function: FunctionId,
        /// The node that stores it.
        node: NodeId,
    },
    /// The value travels inside the request (small values only: a request is limited to
    /// the receiver's maximum request size).
    Inline {
        /// The function whose result it is.
        function: FunctionId,
        /// The value.
        value: Value,
    },
}

impl ArgumentSource {
    /// The function whose result this argument is.
    pub fn function(&self) -> &FunctionId {
        match self {
            ArgumentSource::Remote { function, .. } | ArgumentSource::Inline { function, .. } => {
                function
            }
        }
    }
}

/// Reads up to `max_len` bytes of the MessagePack form of a stored value, from `offset`.
///
/// A value of any size is read in bounded frames: ask for offset 0, learn the
/// [`Chunk::total_len`], and ask for the next offsets until all bytes are in
/// (`Client::fetch_value` does this).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    /// The DAG.
    pub dag: DagId,
    /// The function whose result is asked for.
    pub function: FunctionId,
    /// The first byte asked for.
    pub offset: u64,
    /// How many bytes to send back: exactly `min(max_len, total_len - offset)`, as
    /// [`answer`](Self::answer) does (the fetcher pipelines requests for the next offsets,
    /// and rejects chunks of another length). A chunk longer than the receiver's response
    /// frame can carry is refused with [`RpcError::ChunkTooLarge`]
    /// ([`answer_within`](Self::answer_within)).
    pub max_len: u32,
}

impl FetchRequest {
    /// The answer to this request from `encoded`, the value's whole MessagePack form: the
    /// chunk asked for (sliced without a copy), or [`RpcError::OutOfRange`] when the
    /// offset lies past the end.
    pub fn answer(&self, encoded: &Bytes) -> Response {
        let total_len = encoded.len() as u64;
        if self.offset > total_len {
            return Response::Error(RpcError::OutOfRange {
                dag: self.dag.clone(),
                function: self.function.clone(),
                offset: self.offset,
                total_len,
            });
        }
        // offset <= total_len <= usize::MAX here.
        let start = usize::try_from(self.offset).unwrap_or(encoded.len());
        let end = start
            .saturating_add(self.max_len as usize)
            .min(encoded.len());
        Response::Chunk(Chunk {
            dag: self.dag.clone(),
            function: self.function.clone(),
            offset: self.offset,
            total_len,
            bytes: encoded.slice(start..end),
        })
    }

    /// Like [`answer`](Self::answer), on a node whose response frames carry at most
    /// `max_response_bytes`: a chunk longer than such a frame holds (the limit less
    /// [`CHUNK_OVERHEAD_BYTES`](crate::CHUNK_OVERHEAD_BYTES)) is refused with
    /// [`RpcError::ChunkTooLarge`] before anything is encoded, instead of being encoded
    /// whole only for the codec to refuse the frame.
    pub fn answer_within(&self, encoded: &Bytes, max_response_bytes: u32) -> Response {
        let max = max_response_bytes.saturating_sub(crate::config::CHUNK_OVERHEAD_BYTES);
        let total_len = encoded.len() as u64;
        let len = u64::from(self.max_len).min(total_len.saturating_sub(self.offset));
        if len > u64::from(max) {
            return Response::Error(RpcError::ChunkTooLarge {
                dag: self.dag.clone(),
                function: self.function.clone(),
                len,
                max,
            });
        }
        self.answer(encoded)
    }
}

/// A piece of the MessagePack form of a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// The DAG.
    pub dag: DagId,
    /// The function whose result it is.
    pub function: FunctionId,
    /// Where `bytes` start in the whole.
    pub offset: u64,
    /// The length of the whole.
    pub total_len: u64,
    /// The bytes.
    pub bytes: Bytes,
}

/// The outcome of an [`ExecuteRequest`], reported by the node that ran it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinishedReport {
    /// The DAG.
    pub dag: DagId,
    /// The function.
    pub function: FunctionId,
    /// The attempt, as in the [`ExecuteRequest`].
    pub attempt: u32,
    /// What happened.
    pub outcome: Outcome,
}

/// What became of an executed function.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Outcome {
    /// The result is stored on the reporting node, which serves it through
    /// [`Request::Fetch`].
    Stored {
        /// The size of its MessagePack form, in bytes.
        size: u64,
        /// The result itself, when it is small (at most [`INLINE_RESULT_BYTES`](crate::INLINE_RESULT_BYTES)).
        #[serde(default)]
        value: Option<Value>,
    },
    /// The function failed, or could not run on the reporting node.
    Failed {
        /// Why.
        error: CallError,
    },
}

/// What a node holds and has reserved ([`Request::Stats`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    /// Values in its result store, over all DAGs.
    pub values: u64,
    /// Its capacity.
    pub capacity: Resources,
    /// What of it is free.
    pub free: Resources,
    /// Functions it is running (or about to run) for other nodes' executions.
    pub serving: u64,
    /// Stage workers of other nodes' streams open here.
    #[serde(default)]
    pub stages: u64,
}

/// A reply to a [`Request`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// Answers [`Request::Hello`].
    Hello {
        /// The receiver's [`PROTOCOL_VERSION`].
        version: String,
        /// The receiver's human-readable name.
        name: String,
    },
    /// Answers [`Request::Execute`]: the function will run; a [`Request::Finished`] follows.
    Accepted {
        /// The DAG.
        dag: DagId,
        /// The function.
        function: FunctionId,
        /// The attempt.
        attempt: u32,
    },
    /// Answers [`Request::Execute`] when the function ended quickly: its outcome (no
    /// [`Request::Finished`] follows).
    Finished(FinishedReport),
    /// Answers [`Request::Fetch`].
    Chunk(Chunk),
    /// Answers [`Request::Resources`].
    Resources {
        /// The node.
        node: NodeId,
        /// Its total capabilities.
        capabilities: Resources,
        /// What is free now.
        free: Resources,
    },
    /// Answers [`Request::Stats`].
    Stats(NodeStats),
    /// Answers [`Request::Register`], [`Request::Finished`] and [`Request::FinishedBatch`].
    Ack,
    /// The request was refused or failed.
    Error(RpcError),
    /// Answers [`Request::ExecuteBatch`]: one answer per request, in order.
    Executed(Vec<ExecuteAnswer>),
    /// Answers [`Request::StageRun`]: one answer per item, in order.
    StageRan(Vec<StageAnswer>),
}

/// What became of one function of a [`Request::ExecuteBatch`], as far as the receiver
/// can say when it answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ExecuteAnswer {
    /// It runs (or waits for its reservation): its outcome follows in a
    /// [`Request::FinishedBatch`].
    Accepted,
    /// It ended quickly: its outcome (no report follows).
    Finished(FinishedReport),
    /// It will not run here (e.g. [`RpcError::UnknownCode`]).
    Refused(RpcError),
}

impl Response {
    /// The name of the variant, for errors about unexpected responses.
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Hello { .. } => "Hello",
            Response::Accepted { .. } => "Accepted",
            Response::Finished(_) => "Finished",
            Response::Chunk(_) => "Chunk",
            Response::Resources { .. } => "Resources",
            Response::Stats(_) => "Stats",
            Response::Ack => "Ack",
            Response::Error(_) => "Error",
            Response::Executed(_) => "Executed",
            Response::StageRan(_) => "StageRan",
        }
    }
}

/// Why a node refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RpcError {
    /// The two nodes speak different protocol versions.
    #[error("protocol version mismatch: the receiver has `{ours}`, the sender `{theirs}`")]
    VersionMismatch {
        /// The receiver's version.
        ours: String,
        /// The sender's version.
        theirs: String,
    },
    /// The value asked for is not stored on the receiver.
    #[error("no value for `{function}` of DAG `{dag}` here")]
    NotFound {
        /// The DAG.
        dag: DagId,
        /// The function.
        function: FunctionId,
    },
    /// A fetch asked for bytes past the end of the value.
    #[error("offset {offset} is past the end of `{function}` of DAG `{dag}` ({total_len} bytes)")]
    OutOfRange {
        /// The DAG.
        dag: DagId,
        /// The function.
        function: FunctionId,
        /// The offset asked for.
        offset: u64,
        /// The value's length.
        total_len: u64,
    },
    /// A fetch asked for a chunk longer than the receiver's response frame can carry
    /// ([`FetchRequest::answer_within`]).
    #[error(
        "a chunk of {len} bytes of `{function}` of DAG `{dag}` was asked for: responses here carry at most {max}"
    )]
    ChunkTooLarge {
        /// The DAG.
        dag: DagId,
        /// The function.
        function: FunctionId,
        /// The length of the chunk asked for (within the value).
        len: u64,
        /// The longest chunk a response carries here.
        max: u32,
    },
    /// The receiver has no code of that name in its registry.
    #[error("no code named `{code}` here")]
    UnknownCode {
        /// The code name.
        code: CodeName,
    },
    /// The receiver knows nothing of that node.
    #[error("unknown node {node}")]
    UnknownNode {
        /// The node.
        node: NodeId,
    },
    /// The receiver cannot reserve what the function costs.
    #[error("insufficient resources: needs {needed}, {free} free")]
    InsufficientResources {
        /// The cost.
        needed: Resources,
        /// What is free.
        free: Resources,
    },
    /// The receiver has too much work queued to accept the request now; retry later.
    #[error("busy: {pending} requests pending (limit {limit})")]
    Busy {
        /// Requests waiting.
        pending: u32,
        /// The limit.
        limit: u32,
    },
    /// The receiver does not serve this kind of request.
    #[error("{request} requests are not served here")]
    Unsupported {
        /// The kind of request.
        request: RequestKind,
    },
    /// The receiver is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The request would change an execution the sender does not coordinate: its DAG
    /// id is one the receiver's own execution goes by, or another coordinator's (the
    /// part after the DAG's own id names its owner).
    #[error("DAG `{dag}` belongs to another coordinator")]
    NotOwner {
        /// The DAG id named.
        dag: DagId,
    },
    /// The receiver sets its capacity on its own word only: it was not started with
    /// remote registration allowed.
    #[error("this node does not let peers set its capacity")]
    RegistrationRefused,
    /// A stage worker could not be opened on the receiver (a code its registry lacks,
    /// a failing init code).
    #[error("stage worker of `{function}` not opened: {error}")]
    StageNotOpened {
        /// The stage's function.
        function: FunctionId,
        /// Why.
        error: Box<CallError>,
    },
    /// The sender's streams have as many stage workers open on the receiver as it allows.
    #[error("{limit} stage workers already open here for the sender's streams")]
    TooManyStages {
        /// The limit.
        limit: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(offset: u64, max_len: u32) -> FetchRequest {
        FetchRequest {
            dag: DagId::new("d"),
            function: FunctionId::new("f"),
            offset,
            max_len,
        }
    }

    #[test]
    fn fetch_answers_slice_the_encoded_value() {
        let encoded = Bytes::from_static(b"0123456789");
        match fetch(4, 3).answer(&encoded) {
            Response::Chunk(chunk) => {
                assert_eq!(&chunk.bytes[..], b"456");
                assert_eq!(chunk.total_len, 10);
                assert_eq!(chunk.offset, 4);
            }
            other => panic!("unexpected {other:?}"),
        }
        match fetch(8, 100).answer(&encoded) {
            Response::Chunk(chunk) => assert_eq!(&chunk.bytes[..], b"89"),
            other => panic!("unexpected {other:?}"),
        }
        match fetch(10, 100).answer(&encoded) {
            Response::Chunk(chunk) => assert!(chunk.bytes.is_empty()),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            fetch(11, 1).answer(&encoded),
            Response::Error(RpcError::OutOfRange {
                offset: 11,
                total_len: 10,
                ..
            })
        ));
    }

    #[test]
    fn chunks_longer_than_a_response_frame_are_refused() {
        let encoded = Bytes::from_static(b"0123456789");
        // Responses of this size carry chunks of at most 4 bytes.
        let max_response = crate::config::CHUNK_OVERHEAD_BYTES + 4;
        assert!(matches!(
            fetch(0, u32::MAX).answer_within(&encoded, max_response),
            Response::Error(RpcError::ChunkTooLarge {
                len: 10,
                max: 4,
                ..
            })
        ));
        // What is left of the value is what counts, whatever `max_len` says.
        match fetch(7, u32::MAX).answer_within(&encoded, max_response) {
            Response::Chunk(chunk) => assert_eq!(&chunk.bytes[..], b"789"),
            other => panic!("unexpected {other:?}"),
        }
        match fetch(0, 4).answer_within(&encoded, max_response) {
            Response::Chunk(chunk) => assert_eq!(&chunk.bytes[..], b"0123"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            fetch(11, u32::MAX).answer_within(&encoded, max_response),
            Response::Error(RpcError::OutOfRange { .. })
        ));
    }

    #[test]
    fn requests_round_trip_through_msgpack() {
        let request = Request::Execute(ExecuteRequest {
            dag: DagId::new("d"),
            function: Function::new("g", "double").arg("f").extra_arg(2_i64),
            arguments: vec![
                ArgumentSource::Remote {
                    function: FunctionId::new("f"),
                    node: NodeId::new("n"),
                },
                ArgumentSource::Inline {
                    function: FunctionId::new("h"),
                    value: Value::new(7_i64),
                },
            ],
            attempt: 1,
            inline: Vec::new(),
            timeout_ms: None,
            report_start: false,
        });
        let bytes = rmp_serde::to_vec_named(&request).expect("encode");
        let back: Request = rmp_serde::from_slice(&bytes).expect("decode");
        match back {
            Request::Execute(execute) => {
                assert_eq!(execute.function.code().as_str(), "double");
                assert_eq!(execute.function.extra_args()[0].get::<i64>(), Ok(2));
                assert_eq!(execute.arguments[0].function().as_str(), "f");
                match &execute.arguments[1] {
                    ArgumentSource::Inline { value, .. } => assert_eq!(value.get::<i64>(), Ok(7)),
                    other => panic!("unexpected {other:?}"),
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
