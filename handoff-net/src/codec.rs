//! The framing of the request-response protocol: a `u32` big-endian length, then that
//! many bytes of MessagePack. The length is checked against the limit *before* anything
//! is allocated, on reads and on writes; the body's buffer grows with the bytes that
//! arrive, not with the length announced; and the body's MessagePack is checked for
//! declared lengths beyond its bytes and for deep nesting before serde decodes it
//! ([`structure`]). Whatever a peer sends, reading a frame never panics and allocates in
//! proportion to the bytes received (the fuzzer in `fuzz/` checks both).

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::protocol::{Request, Response};

mod structure;

/// Why a frame was refused. It reaches libp2p inside an `io::Error` (kind `InvalidData`
/// on reads, `InvalidInput` on writes); [`FrameError::of`] finds it again.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is above the limit: refused before reading or allocating the body.
    #[error("{direction} frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Whether a request or a response.
        direction: Direction,
        /// The length announced (or, on writes, the encoded length).
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The body is not a valid message.
    #[error("malformed {direction} frame of {len} bytes: {source}")]
    Decode {
        /// Whether a request or a response.
        direction: Direction,
        /// The length of the body.
        len: u64,
        /// What the decoder said.
        #[source]
        source: rmp_serde::decode::Error,
    },
    /// The message could not be encoded.
    #[error("{direction} could not be encoded: {source}")]
    Encode {
        /// Whether a request or a response.
        direction: Direction,
        /// What the encoder said.
        #[source]
        source: rmp_serde::encode::Error,
    },
}

impl FrameError {
    /// The frame error inside an `io::Error` returned by the codec, if that is what it holds.
    pub fn of(error: &io::Error) -> Option<&FrameError> {
        error.get_ref()?.downcast_ref::<FrameError>()
    }
}

/// Which way a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A request.
    Request,
    /// A response.
    Response,
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Request => "request",
            Direction::Response => "response",
        })
    }
}

/// The request-response codec of [`RPC_PROTOCOL`](crate::RPC_PROTOCOL): rmp-serde in
/// length-prefixed frames, with a maximum size per direction.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    max_request_bytes: u32,
    max_response_bytes: u32,
}

impl Codec {
    /// A codec refusing requests above `max_request_bytes` and responses above
    /// `max_response_bytes` (the body, without the 4-byte prefix).
    pub fn new(max_request_bytes: u32, max_response_bytes: u32) -> Self {
        Codec {
            max_request_bytes,
            max_response_bytes,
        }
    }

    /// Reads one request frame (what libp2p calls through the `Codec` trait).
    pub async fn read_request_from<T: AsyncRead + Unpin>(&self, io: &mut T) -> io::Result<Request> {
        read_frame(io, Direction::Request, self.max_request_bytes).await
    }

    /// Reads one response frame.
    pub async fn read_response_from<T: AsyncRead + Unpin>(
        &self,
        io: &mut T,
    ) -> io::Result<Response> {
        read_frame(io, Direction::Response, self.max_response_bytes).await
    }

    /// Writes one request frame.
    pub async fn write_request_to<T: AsyncWrite + Unpin>(
        &self,
        io: &mut T,
        request: &Request,
    ) -> io::Result<()> {
        write_frame(io, Direction::Request, self.max_request_bytes, request).await
    }

    /// Writes one response frame. A chunk whose bytes alone exceed the limit is refused
    /// before it is encoded (encoding it would copy the whole of it first).
    pub async fn write_response_to<T: AsyncWrite + Unpin>(
        &self,
        io: &mut T,
        response: &Response,
    ) -> io::Result<()> {
        if let Response::Chunk(chunk) = response
            && chunk.bytes.len() as u64 > u64::from(self.max_response_bytes)
        {
            return Err(too_large_to_write(
                Direction::Response,
                chunk.bytes.len() as u64,
                self.max_response_bytes,
            ));
        }
        write_frame(io, Direction::Response, self.max_response_bytes, response).await
    }
}

async fn read_frame<T, M>(io: &mut T, direction: Direction, max: u32) -> io::Result<M>
where
    T: AsyncRead + Unpin,
    M: DeserializeOwned,
{
    let mut prefix = [0_u8; 4];
    io.read_exact(&mut prefix).await?;
    let len = u32::from_be_bytes(prefix);
    if len > max {
        // Logged at debug: the event loop logs refused frames with their peer, rationed.
        tracing::debug!("refused a {direction} frame of {len} bytes: the maximum is {max}");
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            FrameError::TooLarge {
                direction,
                len: u64::from(len),
                max: u64::from(max),
            },
        ));
    }
    let body = read_body(io, direction, len).await?;
    decode(&body).map_err(|source| {
        tracing::debug!("refused a malformed {direction} frame of {len} bytes: {source}");
        io::Error::new(
            io::ErrorKind::InvalidData,
            FrameError::Decode {
                direction,
                len: u64::from(len),
                source,
            },
        )
    })
}

/// Decodes one MessagePack message from untrusted bytes: its shape is checked first
/// ([`structure::check`]: declared lengths within the bytes, bounded nesting, nothing
/// after it), so that serde never allocates for items that are not there.
pub(crate) fn decode<M: DeserializeOwned>(bytes: &[u8]) -> Result<M, rmp_serde::decode::Error> {
    structure::check(bytes)?;
    rmp_serde::from_slice(bytes)
}

/// How much of a frame's body is allocated before any of it has arrived. The buffer then
/// grows with the bytes received, doubling up to the announced length: a peer that
/// announces a large frame and sends little (or opens many streams that way) costs what
/// it sends, not what it announces.
const FIRST_READ_BYTES: usize = 8 << 10;

/// Reads the `len` bytes of a frame's body (`len` already checked against the limit).
async fn read_body<T>(io: &mut T, direction: Direction, len: u32) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin,
{
    let len = len as usize;
    let mut body = vec![0_u8; len.min(FIRST_READ_BYTES)];
    let mut filled = 0;
    while filled < len {
        if filled == body.len() {
            let grown = body.len().saturating_mul(2).min(len);
            body.reserve_exact(grown - body.len());
            body.resize(grown, 0);
        }
        match io.read(&mut body[filled..]).await {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{direction} frame cut short: {filled} of {len} bytes"),
                ));
            }
            Ok(read) => filled += read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(body)
}

async fn write_frame<T, M>(
    io: &mut T,
    direction: Direction,
    max: u32,
    message: &M,
) -> io::Result<()>
where
    T: AsyncWrite + Unpin,
    M: Serialize,
{
    let body = rmp_serde::to_vec_named(message).map_err(|source| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            FrameError::Encode { direction, source },
        )
    })?;
    let len = match u32::try_from(body.len()) {
        Ok(len) if len <= max => len,
        _ => return Err(too_large_to_write(direction, body.len() as u64, max)),
    };
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&body).await?;
    io.flush().await
}

/// The error of a frame of `len` bytes refused on write (logged: this node tried it).
fn too_large_to_write(direction: Direction, len: u64, max: u32) -> io::Error {
    tracing::warn!("refused to send a {direction} frame of {len} bytes: the maximum is {max}");
    io::Error::new(
        io::ErrorKind::InvalidInput,
        FrameError::TooLarge {
            direction,
            len,
            max: u64::from(max),
        },
    )
}

impl libp2p::request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read_request_from(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read_response_from(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.write_request_to(io, &request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.write_response_to(io, &response).await
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures::executor::block_on;
    use futures::io::Cursor;
    use proptest::prelude::*;

    use super::*;

    const SMALL: u32 = 1024;

    fn codec() -> Codec {
        Codec::new(SMALL, 4 * SMALL)
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    /// A reader that counts the bytes taken from it, and records the largest buffer
    /// (bytes already read plus room offered) the codec had allocated for a body.
    struct Counting {
        inner: Cursor<Vec<u8>>,
        taken: usize,
        largest_buffer: usize,
    }

    impl Counting {
        fn new(bytes: Vec<u8>) -> Self {
            Counting {
                inner: Cursor::new(bytes),
                taken: 0,
                largest_buffer: 0,
            }
        }
    }

    impl AsyncRead for Counting {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            // After the 4-byte prefix, `buf` is the unfilled end of the body's buffer.
            if self.taken >= 4 {
                self.largest_buffer = self.largest_buffer.max(self.taken - 4 + buf.len());
            }
            let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
            if let Poll::Ready(Ok(n)) = poll {
                self.taken += n;
            }
            poll
        }
    }

    #[test]
    fn requests_and_responses_round_trip() {
        let mut wire = Cursor::new(Vec::new());
        let hello = Request::Hello {
            version: "v".into(),
            name: "n".into(),
        };
        block_on(codec().write_request_to(&mut wire, &hello)).expect("write");
        wire.set_position(0);
        match block_on(codec().read_request_from(&mut wire)).expect("read") {
            Request::Hello { version, name } => {
                assert_eq!((version, name), ("v".into(), "n".into()))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn an_oversized_length_is_refused_before_reading_the_body() {
        // Claims 4 GiB - 1 bytes: allocating that would abort the test.
        let mut bytes = u32::MAX.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0_u8; 64]);
        let mut reader = Counting::new(bytes);
        let err = block_on(codec().read_request_from(&mut reader)).expect_err("too large");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        match FrameError::of(&err) {
            Some(FrameError::TooLarge {
                direction: Direction::Request,
                len,
                max,
            }) => {
                assert_eq!(*len, u64::from(u32::MAX));
                assert_eq!(*max, u64::from(SMALL));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(reader.taken, 4, "only the length prefix was read");

        // Responses have their own limit: 2 KiB passes the response limit (4 KiB) but not
        // the request limit (1 KiB).
        let len = 2 * SMALL;
        let mut wire = Cursor::new(len.to_be_bytes().to_vec());
        let err = block_on(codec().read_request_from(&mut wire)).expect_err("too large");
        assert!(matches!(
            FrameError::of(&err),
            Some(FrameError::TooLarge { .. })
        ));
        let mut wire = Cursor::new(len.to_be_bytes().to_vec());
        let err = block_on(codec().read_response_from(&mut wire)).expect_err("cut short");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn oversized_messages_are_refused_on_write() {
        let mut wire = Cursor::new(Vec::new());
        let big = Request::Hello {
            version: "v".into(),
            name: "x".repeat(2 * SMALL as usize),
        };
        let err = block_on(codec().write_request_to(&mut wire, &big)).expect_err("too large");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(matches!(
            FrameError::of(&err),
            Some(FrameError::TooLarge {
                direction: Direction::Request,
                ..
            })
        ));
        assert!(wire.get_ref().is_empty(), "nothing was written");
    }

    #[test]
    fn a_chunk_larger_than_a_response_frame_is_refused_before_it_is_encoded() {
        use handoff_core::{DagId, FunctionId};

        use crate::protocol::Chunk;
        let bytes = bytes::Bytes::from(vec![0_u8; 8 * SMALL as usize]);
        let chunk = Response::Chunk(Chunk {
            dag: DagId::new("d"),
            function: FunctionId::new("f"),
            offset: 0,
            total_len: bytes.len() as u64,
            bytes,
        });
        let mut wire = Cursor::new(Vec::new());
        let err = block_on(codec().write_response_to(&mut wire, &chunk)).expect_err("too large");
        // The length refused is the chunk's own: its frame was never encoded (that would
        // report the encoded length, fields and all).
        assert!(matches!(
            FrameError::of(&err),
            Some(FrameError::TooLarge {
                direction: Direction::Response,
                len,
                ..
            }) if *len == u64::from(8 * SMALL)
        ));
        assert!(wire.get_ref().is_empty(), "nothing was written");
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let mut wire = Cursor::new(frame(&[0xc1, 0xff, 0x00, 0x13]));
        let err = block_on(codec().read_request_from(&mut wire)).expect_err("garbage");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(matches!(
            FrameError::of(&err),
            Some(FrameError::Decode {
                direction: Direction::Request,
                len: 4,
                ..
            })
        ));
        let mut empty = Cursor::new(Vec::new());
        let err = block_on(codec().read_response_from(&mut empty)).expect_err("empty");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(FrameError::of(&err).is_none());
    }

    /// One request of each kind, and responses of each kind, as a peer would send them.
    fn sample_requests() -> Vec<Request> {
        use handoff_core::{
            CallError, CodeName, DagId, Function, FunctionId, NodeId, Resources, Value, ValueError,
        };

        use crate::protocol::{
            ArgumentSource, ExecuteRequest, FetchRequest, FinishedReport, Outcome,
        };
        let (dag, f) = (DagId::new("dag"), FunctionId::new("f"));
        vec![
            Request::Hello {
                version: "handoff/1".into(),
                name: "worker".into(),
            },
            Request::Execute(ExecuteRequest {
                dag: dag.clone(),
                function: Function::new("g", "sum")
                    .arg("f")
                    .extra_arg(2_i64)
                    .with_cost(Resources::new().cpu(1).memory(64))
                    .timeout(std::time::Duration::from_secs(3))
                    .backoff(handoff_core::Backoff::default()),
                inline: vec![Function::new("i", "double").inline().extra_arg(1_u8)],
                arguments: vec![
                    ArgumentSource::Remote {
                        function: f.clone(),
                        node: NodeId::new("node"),
                    },
                    ArgumentSource::Inline {
                        function: FunctionId::new("h"),
                        value: Value::new((1_i64, "two".to_owned())),
                    },
                ],
                attempt: 1,
                timeout_ms: Some(500),
                report_start: true,
            }),
            Request::Fetch(FetchRequest {
                dag: dag.clone(),
                function: f.clone(),
                offset: 7,
                max_len: 1 << 20,
            }),
            Request::Resources {
                node: NodeId::new("node"),
            },
            Request::Register {
                capabilities: Resources::new().cpu(4).with("licence", 2),
            },
            Request::Finished(FinishedReport {
                dag: dag.clone(),
                function: f.clone(),
                attempt: 2,
                outcome: Outcome::Failed {
                    error: CallError::Argument {
                        code: CodeName::new("sum"),
                        position: 1,
                        source: ValueError::NotAList {
                            found: "i64".into(),
                        },
                    },
                },
            }),
            Request::Finished(FinishedReport {
                dag: dag.clone(),
                function: f.clone(),
                attempt: 1,
                outcome: Outcome::Stored {
                    size: 9,
                    value: Some(Value::new(42_i64)),
                },
            }),
            Request::Forget { dag },
            Request::StageRun(Box::new(crate::protocol::StageRunRequest {
                key: handoff_actors::StageKey {
                    stream: 3,
                    function: f.clone(),
                    worker: 1,
                },
                spec: std::sync::Arc::new(handoff_actors::StageSpec {
                    plan: handoff_core::StagePlan {
                        function: 1,
                        inline: vec![handoff_core::InlineEval {
                            function: 2,
                            args: vec![handoff_core::ArgSource::Slot(0)],
                        }],
                        args: vec![handoff_core::ArgSource::Inline(0)],
                        slot: 1,
                        releases: vec![0],
                    },
                    function: Function::new("f", "square")
                        .arg("i")
                        .batch(8, std::time::Duration::from_millis(5)),
                    inline: vec![Function::new("i", "double").inline().arg("x")],
                }),
                items: vec![handoff_actors::StageItem {
                    seq: 7,
                    row: vec![Some(Value::new(3_i64)), None],
                }],
            })),
            Request::StageClose {
                key: handoff_actors::StageKey {
                    stream: 3,
                    function: f,
                    worker: 1,
                },
            },
        ]
    }

    fn sample_responses() -> Vec<Response> {
        use handoff_core::{DagId, FunctionId, Resources};

        use crate::protocol::{Chunk, RequestKind, RpcError};
        vec![
            Response::Hello {
                version: "handoff/1".into(),
                name: "worker".into(),
            },
            Response::Chunk(Chunk {
                dag: DagId::new("dag"),
                function: FunctionId::new("f"),
                offset: 4,
                total_len: 64,
                bytes: bytes::Bytes::from(vec![9_u8; 32]),
            }),
            Response::Ack,
            Response::Error(RpcError::InsufficientResources {
                needed: Resources::new().cpu(8),
                free: Resources::new().cpu(2),
            }),
            Response::Error(RpcError::Unsupported {
                request: RequestKind::Fetch,
            }),
            Response::StageRan(vec![
                handoff_actors::StageAnswer::Done(handoff_core::Value::new(9_i64)),
                handoff_actors::StageAnswer::Failed {
                    function: FunctionId::new("f"),
                    error: handoff_core::CallError::UnknownCode {
                        code: handoff_core::CodeName::new("square"),
                    },
                },
            ]),
        ]
    }

    /// Frames: requests first, then responses, each with whether it is a request.
    fn sample_frames() -> Vec<(bool, Vec<u8>)> {
        let requests = sample_requests().into_iter().map(|r| {
            let body = rmp_serde::to_vec_named(&r).expect("encode");
            (true, frame(&body))
        });
        let responses = sample_responses().into_iter().map(|r| {
            let body = rmp_serde::to_vec_named(&r).expect("encode");
            (false, frame(&body))
        });
        requests.chain(responses).collect()
    }

    /// Reads `bytes` as a request or a response; a refusal must be a typed error.
    fn read_any(request: bool, bytes: Vec<u8>) -> Result<(), io::Error> {
        let big = Codec::new(1 << 20, 1 << 20);
        let mut wire = Cursor::new(bytes);
        let result = if request {
            block_on(big.read_request_from(&mut wire)).map(|_| ())
        } else {
            block_on(big.read_response_from(&mut wire)).map(|_| ())
        };
        if let Err(e) = &result {
            let typed = match e.kind() {
                io::ErrorKind::InvalidData => FrameError::of(e).is_some(),
                io::ErrorKind::UnexpectedEof => true,
                _ => false,
            };
            assert!(typed, "an untyped error: {e:?}");
        }
        result
    }

    #[test]
    fn every_kind_of_message_round_trips_and_every_cut_is_refused() {
        for (request, bytes) in sample_frames() {
            read_any(request, bytes.clone()).expect("a valid frame");
            for cut in 0..bytes.len() {
                let err = read_any(request, bytes[..cut].to_vec()).expect_err("cut short");
                assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
            }
        }
    }

    #[test]
    fn the_body_buffer_grows_with_the_bytes_received() {
        // 1 MiB announced (the limit), 10 bytes sent: the old reader allocated the whole
        // megabyte up front, for every such stream.
        let big = Codec::new(1 << 20, 1 << 20);
        let mut bytes = (1_u32 << 20).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0x81; 10]);
        let mut reader = Counting::new(bytes);
        let err = block_on(big.read_request_from(&mut reader)).expect_err("cut short");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(reader.largest_buffer, FIRST_READ_BYTES);

        // A whole 1 MiB body is read into a buffer of exactly 1 MiB.
        let request = Request::Hello {
            version: "v".into(),
            name: "x".repeat((1 << 20) - 64),
        };
        let body = rmp_serde::to_vec_named(&request).expect("encode");
        let mut reader = Counting::new(frame(&body));
        block_on(big.read_request_from(&mut reader)).expect("read");
        assert_eq!(reader.largest_buffer, body.len());
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        // A Hello with an unknown field nested 100 000 arrays deep. Before the structure
        // check, rmp-serde recursed into it up to its own limit of 1024 levels, which
        // overflowed a 2 MiB stack in debug builds and aborted the process. Now it is
        // refused before serde sees it: even a 64 KiB stack is enough.
        let mut body = rmp_serde::to_vec_named(&Request::Hello {
            version: "v".into(),
            name: "n".into(),
        })
        .expect("encode");
        // {"Hello": {version, name}} -> {"Hello": {version, name, x: [[[…]]]}}
        assert_eq!(body[7], 0x82);
        body[7] = 0x83;
        body.extend_from_slice(&[0xa1, b'x']);
        body.extend(std::iter::repeat_n(0x91, 100_000));
        body.push(0xc0);
        let err = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || {
                let big = Codec::new(1 << 20, 1 << 20);
                block_on(big.read_request_from(&mut Cursor::new(frame(&body))))
                    .expect_err("refused")
            })
            .expect("spawn")
            .join()
            .expect("no stack overflow");
        match FrameError::of(&err) {
            Some(FrameError::Decode { source, .. }) => assert!(
                matches!(source, rmp_serde::decode::Error::DepthLimitExceeded),
                "{source}"
            ),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn huge_declared_lengths_and_trailing_bytes_are_decode_errors() {
        // {"Execute": {"arguments": array of 2^32 - 1 items}} in 26 bytes: serde would
        // have allocated room for 1 MiB of arguments.
        let mut body = vec![0x81, 0xa7];
        body.extend_from_slice(b"Execute");
        body.extend_from_slice(&[0x81, 0xa9]);
        body.extend_from_slice(b"arguments");
        body.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
        let err = block_on(codec().read_request_from(&mut Cursor::new(frame(&body))))
            .expect_err("refused");
        assert!(
            matches!(FrameError::of(&err), Some(FrameError::Decode { .. })),
            "{err}"
        );
        // A valid message with bytes after it, inside the frame.
        let mut body = rmp_serde::to_vec_named(&Response::Ack).expect("encode");
        block_on(codec().read_response_from(&mut Cursor::new(frame(&body)))).expect("valid");
        body.push(0xc0);
        let err = block_on(codec().read_response_from(&mut Cursor::new(frame(&body))))
            .expect_err("trailing byte");
        assert!(
            matches!(FrameError::of(&err), Some(FrameError::Decode { .. })),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut wire = Cursor::new(bytes.clone());
            let _ = block_on(codec().read_request_from(&mut wire));
            let mut wire = Cursor::new(bytes.clone());
            let _ = block_on(codec().read_response_from(&mut wire));
            // The same bytes behind a valid length prefix reach the decoder.
            let mut wire = Cursor::new(frame(&bytes));
            let _ = block_on(codec().read_request_from(&mut wire));
            let mut wire = Cursor::new(frame(&bytes));
            let _ = block_on(codec().read_response_from(&mut wire));
        }

        #[test]
        fn mutated_valid_frames_never_panic(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)
        ) {
            let request = Request::Fetch(crate::FetchRequest {
                dag: handoff_core::DagId::new("dag"),
                function: handoff_core::FunctionId::new("f"),
                offset: 7,
                max_len: 1 << 20,
            });
            let mut body = rmp_serde::to_vec_named(&request).expect("encode");
            for (at, x) in flips {
                let i = at % body.len();
                body[i] ^= x;
            }
            let mut wire = Cursor::new(frame(&body));
            let _ = block_on(codec().read_request_from(&mut wire));
        }

        /// Any valid message of any kind, with bytes flipped, inserted, removed, or the
        /// length prefix changed: never a panic, always a typed error or a message.
        #[test]
        fn mutated_messages_of_every_kind_are_typed_errors_or_messages(
            pick in any::<prop::sample::Index>(),
            edits in proptest::collection::vec((0_u8..4, any::<prop::sample::Index>(), any::<u8>()), 1..8),
            prefix in proptest::option::of(any::<u32>()),
        ) {
            let frames = sample_frames();
            let (request, sample) = &frames[pick.index(frames.len())];
            let mut body = sample[4..].to_vec();
            for (op, at, byte) in edits {
                let i = at.index(body.len() + 1);
                match op {
                    0 if i < body.len() => body[i] ^= byte.max(1),
                    1 => body.insert(i, byte),
                    2 if i < body.len() => {
                        body.remove(i);
                    }
                    _ => body.truncate(i),
                }
            }
            let len = prefix.unwrap_or(body.len() as u32);
            let mut bytes = len.to_be_bytes().to_vec();
            bytes.extend_from_slice(&body);
            let _ = read_any(*request, bytes);
        }

        /// A length header (array, map, string, binary, extension) declaring more than the
        /// bytes left, put before any value of a valid message or at its end: refused before
        /// serde allocates. (Inside a string or binary it is only data: the message can stay
        /// valid.)
        #[test]
        fn lengths_beyond_the_bytes_are_refused(
            pick in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            marker in prop::sample::select(vec![0xc6_u8, 0xc9, 0xdb, 0xdd, 0xdf]),
            extra in 0_u32..=u32::MAX / 2,
        ) {
            let frames = sample_frames();
            let (request, sample) = &frames[pick.index(frames.len())];
            let mut body = sample[4..].to_vec();
            let mut starts = structure::value_starts(&body).expect("a valid message");
            starts.push(body.len());
            let i = starts[at.index(starts.len())];
            // At least as many items (or bytes) as the whole body holds.
            let declared = (body.len() as u32).saturating_add(extra);
            let mut header = vec![marker];
            header.extend_from_slice(&declared.to_be_bytes());
            if marker == 0xc9 {
                header.push(0x01);
            }
            body.splice(i..i, header);
            let err = read_any(*request, frame(&body)).expect_err("refused");
            prop_assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        }

        /// A frame announcing up to the limit and cut short anywhere: the buffer for its
        /// body is never larger than the first read or twice the bytes received.
        #[test]
        fn the_body_buffer_follows_the_bytes_received(
            declared in 0_u32..=(1 << 20),
            sent in 0_usize..100_000,
        ) {
            let big = Codec::new(1 << 20, 1 << 20);
            let sent = sent.min(declared as usize);
            let mut bytes = declared.to_be_bytes().to_vec();
            bytes.extend(std::iter::repeat_n(0x91_u8, sent));
            let mut reader = Counting::new(bytes);
            let _ = block_on(big.read_request_from(&mut reader));
            let bound = FIRST_READ_BYTES.max(2 * sent).min(declared as usize);
            prop_assert!(reader.largest_buffer <= bound, "{} > {}", reader.largest_buffer, bound);
        }
    }
}
