//! The framing of the request-response protocol: a `u32` big-endian length, then that
//! many bytes of MessagePack. The length is checked against the limit *before* anything
//! is allocated, on reads and on writes.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::protocol::{Request, Response};

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

    /// Writes one response frame.
    pub async fn write_response_to<T: AsyncWrite + Unpin>(
        &self,
        io: &mut T,
        response: &Response,
    ) -> io::Result<()> {
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
        tracing::warn!("refused a {direction} frame of {len} bytes: the maximum is {max}");
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            FrameError::TooLarge {
                direction,
                len: u64::from(len),
                max: u64::from(max),
            },
        ));
    }
    // len <= max: the allocation is bounded by the configured limit.
    let mut body = Vec::with_capacity(len as usize);
    let read = io.take(u64::from(len)).read_to_end(&mut body).await?;
    if read != len as usize {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{direction} frame cut short: {read} of {len} bytes"),
        ));
    }
    rmp_serde::from_slice(&body).map_err(|source| {
        tracing::warn!("refused a malformed {direction} frame of {len} bytes: {source}");
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
        _ => {
            tracing::warn!(
                "refused to send a {direction} frame of {} bytes: the maximum is {max}",
                body.len()
            );
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                FrameError::TooLarge {
                    direction,
                    len: body.len() as u64,
                    max: u64::from(max),
                },
            ));
        }
    };
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&body).await?;
    io.flush().await
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

    /// A reader that counts the bytes taken from it.
    struct Counting {
        inner: Cursor<Vec<u8>>,
        taken: usize,
    }

    impl AsyncRead for Counting {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
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
        let mut reader = Counting {
            inner: Cursor::new(bytes),
            taken: 0,
        };
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
    }
}
