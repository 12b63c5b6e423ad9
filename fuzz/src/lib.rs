//! A fuzzer for Handoff's wire codec and announcement decoder that runs on stable Rust,
//! and the checks it (and the replay of its regression corpus) applies to every input.
//!
//! Three targets read untrusted bytes:
//!
//! - [`Target::Request`]: a stream read by [`Codec::read_request_from`] (a `u32`
//!   big-endian length, then that many bytes of MessagePack),
//! - [`Target::Response`]: the same through [`Codec::read_response_from`],
//! - [`Target::Announcement`]: a gossip payload read by [`Announcement::decode`], as if
//!   signed by [`signer`].
//!
//! For each input, [`Harness::check`] asserts that:
//!
//! 1. nothing panics,
//! 2. the most memory allocated at once while reading stays within [`alloc_bound`]: a
//!    fixed allowance plus a constant factor of the bytes *received*, whatever lengths
//!    the bytes *declare* (measured by a counting global allocator, per thread),
//! 3. a refused input is a typed error (`InvalidData` carrying a [`FrameError`], or
//!    `UnexpectedEof` for a stream cut short),
//! 4. an accepted message survives a round trip: encoded again it decodes to the same
//!    encoding, and through the codec when it fits the frame limit,
//! 5. a Fetch request's answer (the one message handler that is a pure function) has
//!    exactly the length the protocol promises.
//!
//! `cargo run --release -p handoff-fuzz --bin fuzz-codec -- --help` runs the fuzzer;
//! `tests/replay.rs` replays the regression corpus with the same checks.

#![forbid(clippy::unwrap_used)]

mod alloc;
pub mod generate;
pub mod mutate;
pub mod rng;

use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::executor::block_on;
use futures::io::Cursor;
use handoff_core::NodeId;
use handoff_net::{
    Announcement, Codec, DEFAULT_MAX_ANNOUNCEMENT_BYTES, DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES, FrameError, Keypair, PROTOCOL_VERSION, PeerId, Request, Response,
    node_id_of,
};

pub use alloc::{HARD_CAP_BYTES, measure};

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// The fixed part of [`alloc_bound`]: room for the first read buffer of a frame's body,
/// error values and the decoder's own state.
pub const ALLOC_FIXED_BYTES: usize = 64 << 10;

/// The proportional part of [`alloc_bound`], per byte of input. Decoding legitimately
/// takes several times the bytes of its input: an id of zero characters is one byte on
/// the wire, and a 16-byte slot in its list plus a 16-byte shared string in memory, with
/// the list's capacity doubling as it fills. A valid request of 100 000 empty argument
/// ids (corpus file `request-seed-100k-empty-argument-ids.bin`) peaks at 38 bytes per
/// byte received; the fuzzer's random inputs stay below 2.
pub const ALLOC_PER_INPUT_BYTE: usize = 48;

/// The most bytes reading an input of `len` bytes may have allocated at once.
pub fn alloc_bound(len: usize) -> usize {
    ALLOC_FIXED_BYTES.saturating_add(ALLOC_PER_INPUT_BYTE.saturating_mul(len))
}

/// What reads the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// [`Codec::read_request_from`].
    Request,
    /// [`Codec::read_response_from`].
    Response,
    /// [`Announcement::decode`].
    Announcement,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 3] = [Target::Request, Target::Response, Target::Announcement];

    /// The target's name, the prefix of its corpus files (`request-….bin`).
    pub fn name(self) -> &'static str {
        match self {
            Target::Request => "request",
            Target::Response => "response",
            Target::Announcement => "announcement",
        }
    }

    /// The target a corpus file is for, from its name's prefix.
    pub fn of_file(path: &Path) -> Option<Target> {
        let name = path.file_name()?.to_str()?;
        Target::ALL
            .into_iter()
            .find(|t| name.starts_with(&format!("{}-", t.name())))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the target took an input that passed every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Decoded as a message.
    Accepted,
    /// Refused with a typed error.
    Refused,
}

/// A check that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Reading the input panicked.
    Panic {
        /// The panic's message.
        message: String,
    },
    /// Reading the input allocated more than [`alloc_bound`] allows.
    Allocation {
        /// The most bytes allocated at once.
        peak: usize,
        /// The bound.
        bound: usize,
    },
    /// The input was refused with an error of an unexpected kind.
    UnexpectedError {
        /// The error.
        error: String,
    },
    /// An accepted message did not survive a round trip, or a handler's answer broke
    /// the protocol's promise.
    Inconsistent {
        /// What differed.
        detail: String,
    },
}

impl Finding {
    /// A short name for the kind of finding, used in file names.
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::Panic { .. } => "panic",
            Finding::Allocation { .. } => "alloc",
            Finding::UnexpectedError { .. } => "error",
            Finding::Inconsistent { .. } => "roundtrip",
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Panic { message } => write!(f, "panicked: {message}"),
            Finding::Allocation { peak, bound } => {
                write!(f, "allocated {peak} bytes at once; the bound is {bound}")
            }
            Finding::UnexpectedError { error } => write!(f, "unexpected error: {error}"),
            Finding::Inconsistent { detail } => write!(f, "inconsistent: {detail}"),
        }
    }
}

/// The peer whose announcements the harness checks: the Ed25519 key of 32 bytes of
/// `0x11`, so that corpus files stay valid across runs.
pub fn signer() -> PeerId {
    match Keypair::ed25519_from_bytes([0x11; 32]) {
        Ok(keypair) => keypair.public().to_peer_id(),
        // 32 bytes always make an Ed25519 secret key.
        Err(_) => PeerId::random(),
    }
}

/// A value stored on the "receiving node" that Fetch requests read.
const SAMPLE_VALUE_LEN: usize = 100;

/// The checks of one input. Cheap to build; build one per thread.
pub struct Harness {
    codec: Codec,
    signer: PeerId,
    signer_node: NodeId,
    sample: Bytes,
    last_peak: Cell<usize>,
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

/// The message of a caught panic.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

impl Harness {
    /// The checks, with the default frame limits of a node.
    pub fn new() -> Self {
        let signer = signer();
        Harness {
            codec: Codec::new(DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_RESPONSE_BYTES),
            signer_node: node_id_of(&signer),
            signer,
            sample: Bytes::from((0..SAMPLE_VALUE_LEN as u8).collect::<Vec<u8>>()),
            last_peak: Cell::new(0),
        }
    }

    /// The node id of [`signer`].
    pub fn signer_node(&self) -> &NodeId {
        &self.signer_node
    }

    /// The most bytes the last [`check`](Self::check) allocated at once while reading its
    /// input (0 if it panicked).
    pub fn last_peak(&self) -> usize {
        self.last_peak.get()
    }

    /// Runs `input` through `target` and applies every check. Panics are caught (a
    /// panic hook may still print them; the fuzzer installs a silent one).
    pub fn check(&self, target: Target, input: &[u8]) -> Result<Verdict, Finding> {
        self.last_peak.set(0);
        match catch_unwind(AssertUnwindSafe(|| self.check_inner(target, input))) {
            Ok(result) => result,
            Err(payload) => Err(Finding::Panic {
                message: panic_message(payload.as_ref()),
            }),
        }
    }

    fn check_inner(&self, target: Target, input: &[u8]) -> Result<Verdict, Finding> {
        match target {
            Target::Request => {
                let (read, peak) =
                    measure(|| block_on(self.codec.read_request_from(&mut Cursor::new(input))));
                self.last_peak.set(peak);
                within_bound(peak, input.len())?;
                match read {
                    Ok(request) => {
                        self.request_round_trip(&request)?;
                        if let Request::Fetch(fetch) = &request {
                            self.fetch_answer(fetch)?;
                        }
                        Ok(Verdict::Accepted)
                    }
                    Err(error) => typed(&error),
                }
            }
            Target::Response => {
                let (read, peak) =
                    measure(|| block_on(self.codec.read_response_from(&mut Cursor::new(input))));
                self.last_peak.set(peak);
                within_bound(peak, input.len())?;
                match read {
                    Ok(response) => {
                        self.response_round_trip(&response)?;
                        Ok(Verdict::Accepted)
                    }
                    Err(error) => typed(&error),
                }
            }
            Target::Announcement => {
                let (decoded, peak) = measure(|| {
                    Announcement::decode(
                        input,
                        Some(self.signer),
                        DEFAULT_MAX_ANNOUNCEMENT_BYTES,
                        PROTOCOL_VERSION,
                    )
                });
                self.last_peak.set(peak);
                within_bound(peak, input.len())?;
                match decoded {
                    Ok(announcement) => {
                        self.announcement_round_trip(&announcement)?;
                        Ok(Verdict::Accepted)
                    }
                    Err(error) => {
                        let _ = error.to_string();
                        Ok(Verdict::Refused)
                    }
                }
            }
        }
    }

    fn request_round_trip(&self, request: &Request) -> Result<(), Finding> {
        let _ = (request.kind(), format!("{request:?}"));
        let first = encode(request)?;
        let again: Request = decode(&first)?;
        let second = encode(&again)?;
        same(&first, &second, "request re-encoded")?;
        if first.len() <= DEFAULT_MAX_REQUEST_BYTES as usize {
            let mut wire = Cursor::new(Vec::new());
            block_on(self.codec.write_request_to(&mut wire, request)).map_err(|e| {
                Finding::Inconsistent {
                    detail: format!("a decoded request could not be written: {e}"),
                }
            })?;
            wire.set_position(0);
            let back = block_on(self.codec.read_request_from(&mut wire)).map_err(|e| {
                Finding::Inconsistent {
                    detail: format!("a written request could not be read back: {e}"),
                }
            })?;
            same(&first, &encode(&back)?, "request through the codec")?;
        }
        Ok(())
    }

    fn response_round_trip(&self, response: &Response) -> Result<(), Finding> {
        let _ = (response.kind(), format!("{response:?}"));
        let first = encode(response)?;
        let again: Response = decode(&first)?;
        let second = encode(&again)?;
        same(&first, &second, "response re-encoded")?;
        if first.len() <= DEFAULT_MAX_RESPONSE_BYTES as usize {
            let mut wire = Cursor::new(Vec::new());
            block_on(self.codec.write_response_to(&mut wire, response)).map_err(|e| {
                Finding::Inconsistent {
                    detail: format!("a decoded response could not be written: {e}"),
                }
            })?;
            wire.set_position(0);
            let back = block_on(self.codec.read_response_from(&mut wire)).map_err(|e| {
                Finding::Inconsistent {
                    detail: format!("a written response could not be read back: {e}"),
                }
            })?;
            same(&first, &encode(&back)?, "response through the codec")?;
        }
        Ok(())
    }

    fn announcement_round_trip(&self, announcement: &Announcement) -> Result<(), Finding> {
        let bytes = encode(announcement)?;
        if bytes.len() > DEFAULT_MAX_ANNOUNCEMENT_BYTES {
            return Ok(());
        }
        match Announcement::decode(
            &bytes,
            Some(self.signer),
            DEFAULT_MAX_ANNOUNCEMENT_BYTES,
            PROTOCOL_VERSION,
        ) {
            Ok(back) if back == *announcement => Ok(()),
            Ok(back) => Err(Finding::Inconsistent {
                detail: format!("announcement changed: {announcement:?} became {back:?}"),
            }),
            Err(e) => Err(Finding::Inconsistent {
                detail: format!("a re-encoded announcement was refused: {e}"),
            }),
        }
    }

    /// `FetchRequest::answer` on the sample value: exactly `min(max_len, total - offset)`
    /// bytes from `offset`, or `OutOfRange` past the end.
    fn fetch_answer(&self, fetch: &handoff_net::FetchRequest) -> Result<(), Finding> {
        let total = self.sample.len() as u64;
        match fetch.answer(&self.sample) {
            Response::Chunk(chunk) if fetch.offset <= total => {
                let expected = u64::from(fetch.max_len).min(total - fetch.offset);
                let start = fetch.offset as usize;
                if chunk.bytes.len() as u64 == expected
                    && chunk.offset == fetch.offset
                    && chunk.total_len == total
                    && chunk.bytes[..] == self.sample[start..start + expected as usize]
                {
                    Ok(())
                } else {
                    Err(Finding::Inconsistent {
                        detail: format!("fetch answer {chunk:?} to {fetch:?}"),
                    })
                }
            }
            Response::Error(handoff_net::RpcError::OutOfRange { .. }) if fetch.offset > total => {
                Ok(())
            }
            other => Err(Finding::Inconsistent {
                detail: format!("fetch answer {other:?} to {fetch:?}"),
            }),
        }
    }
}

fn within_bound(peak: usize, len: usize) -> Result<(), Finding> {
    let bound = alloc_bound(len);
    if peak > bound {
        Err(Finding::Allocation { peak, bound })
    } else {
        Ok(())
    }
}

/// A refusal must be `InvalidData` with a [`FrameError`] inside, or `UnexpectedEof`.
fn typed(error: &io::Error) -> Result<Verdict, Finding> {
    let _ = error.to_string();
    match (error.kind(), FrameError::of(error)) {
        (io::ErrorKind::InvalidData, Some(frame)) => {
            let _ = frame.to_string();
            Ok(Verdict::Refused)
        }
        (io::ErrorKind::UnexpectedEof, None) => Ok(Verdict::Refused),
        _ => Err(Finding::UnexpectedError {
            error: format!("{:?}: {error}", error.kind()),
        }),
    }
}

fn encode<T: serde::Serialize>(message: &T) -> Result<Vec<u8>, Finding> {
    rmp_serde::to_vec_named(message).map_err(|e| Finding::Inconsistent {
        detail: format!("a decoded message could not be encoded: {e}"),
    })
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Finding> {
    rmp_serde::from_slice(bytes).map_err(|e| Finding::Inconsistent {
        detail: format!("a re-encoded message could not be decoded: {e}"),
    })
}

fn same(a: &[u8], b: &[u8], what: &str) -> Result<(), Finding> {
    if a == b {
        Ok(())
    } else {
        Err(Finding::Inconsistent {
            detail: format!(
                "{what}: {} bytes became {} different bytes",
                a.len(),
                b.len()
            ),
        })
    }
}

/// The regression corpus: `handoff-net/tests/fuzz-corpus` in the workspace.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../handoff-net/tests/fuzz-corpus")
}

/// The files of a corpus directory, sorted, with their targets (files whose name names
/// no target are skipped).
pub fn corpus_files(dir: &Path) -> io::Result<Vec<(Target, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "bin")
            && let Some(target) = Target::of_file(&path)
        {
            files.push((target, path));
        }
    }
    files.sort();
    Ok(files)
}
