//! Replays the fuzzer's regression corpus (`tests/fuzz-corpus`, see its README) through
//! the codec and the announcement decoder: seeds decode and re-encode to the same bytes,
//! everything else is refused with a typed error, and nothing panics. The fuzzer's own
//! replay (`cargo test -p handoff-fuzz`) applies the allocation bound on top.

use std::io;
use std::path::{Path, PathBuf};

use futures::executor::block_on;
use futures::io::Cursor;
use handoff_net::{
    Announcement, Codec, DEFAULT_MAX_ANNOUNCEMENT_BYTES, DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES, FrameError, Keypair, PROTOCOL_VERSION,
};

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the corpus directory")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    files
}

/// A refusal is `InvalidData` carrying a [`FrameError`], or `UnexpectedEof`.
fn assert_typed(name: &str, error: &io::Error) {
    match error.kind() {
        io::ErrorKind::InvalidData => {
            assert!(FrameError::of(error).is_some(), "{name}: {error:?}")
        }
        io::ErrorKind::UnexpectedEof => {}
        _ => panic!("{name}: an untyped error {error:?}"),
    }
}

/// Checks one corpus file; returns whether it was accepted.
fn replay(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a file name")
        .to_owned();
    let bytes = std::fs::read(path).expect("read");
    let codec = Codec::new(DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_RESPONSE_BYTES);
    if name.starts_with("request-") {
        match block_on(codec.read_request_from(&mut Cursor::new(&bytes[..]))) {
            Ok(request) => {
                let mut wire = Cursor::new(Vec::new());
                block_on(codec.write_request_to(&mut wire, &request)).expect("re-encode");
                assert_eq!(wire.get_ref()[..], bytes[..], "{name} re-encodes the same");
                true
            }
            Err(e) => {
                assert_typed(&name, &e);
                false
            }
        }
    } else if name.starts_with("response-") {
        match block_on(codec.read_response_from(&mut Cursor::new(&bytes[..]))) {
            Ok(response) => {
                let mut wire = Cursor::new(Vec::new());
                block_on(codec.write_response_to(&mut wire, &response)).expect("re-encode");
                assert_eq!(wire.get_ref()[..], bytes[..], "{name} re-encodes the same");
                true
            }
            Err(e) => {
                assert_typed(&name, &e);
                false
            }
        }
    } else if name.starts_with("announcement-") {
        // The fuzzer checks announcements as signed by the key of 32 bytes of 0x11.
        let signer = Keypair::ed25519_from_bytes([0x11; 32])
            .expect("key")
            .public()
            .to_peer_id();
        match Announcement::decode(
            &bytes,
            Some(signer),
            DEFAULT_MAX_ANNOUNCEMENT_BYTES,
            PROTOCOL_VERSION,
        ) {
            Ok(announcement) => {
                let again = rmp_serde::to_vec_named(&announcement).expect("encode");
                assert_eq!(again, bytes, "{name} re-encodes the same");
                true
            }
            Err(e) => {
                let _ = e.to_string();
                false
            }
        }
    } else {
        panic!("{name}: the name names no target (request-, response-, announcement-)");
    }
}

#[test]
fn the_fuzz_corpus_is_refused_or_round_trips() {
    // On a thread with the 2 MiB stack of a tokio worker, where a node decodes frames:
    // some files once overflowed such a stack.
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let files = corpus();
            assert!(files.len() >= 30, "{} corpus files", files.len());
            for path in files {
                let accepted = replay(&path);
                let seed = path.to_string_lossy().contains("-seed-");
                assert_eq!(accepted, seed, "{}: accepted {accepted}", path.display());
            }
        })
        .expect("spawn")
        .join()
        .expect("every corpus file behaved");
}
