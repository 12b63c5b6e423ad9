//! Replays the fuzzer's regression corpus (`handoff-net/tests/fuzz-corpus`) with every
//! check of the fuzzer, the allocation bound included, and runs a short deterministic
//! fuzzing round. Each test reads its inputs on a thread with the 2 MiB stack of a tokio
//! worker, where a node decodes frames.

use handoff_fuzz::generate;
use handoff_fuzz::mutate::{mutate, mutate_frame};
use handoff_fuzz::rng::Rng;
use handoff_fuzz::{Harness, Target, Verdict, corpus_dir, corpus_files};

fn on_a_worker_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("the checks ran to the end");
}

#[test]
fn the_regression_corpus_passes_every_check() {
    on_a_worker_stack(|| {
        let harness = Harness::new();
        let files = corpus_files(&corpus_dir()).expect("the corpus directory");
        assert!(files.len() >= 30, "the corpus has {} files", files.len());
        for (target, path) in files {
            let bytes = std::fs::read(&path).expect("read");
            let name = path.display();
            let verdict = harness
                .check(target, &bytes)
                .unwrap_or_else(|finding| panic!("{name}: {finding}"));
            // Seeds are valid messages; findings and hand-made attacks are refused.
            let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if file.contains("-seed-") {
                assert_eq!(verdict, Verdict::Accepted, "{name}");
            } else {
                assert_eq!(verdict, Verdict::Refused, "{name}");
            }
        }
    });
}

#[test]
fn a_short_fuzzing_round_finds_nothing() {
    on_a_worker_stack(|| {
        let harness = Harness::new();
        let mut rng = Rng::new(0x5eed);
        let signer = harness.signer_node().clone();
        let mut accepted = 0;
        for i in 0..6_000_u32 {
            let target = Target::ALL[i as usize % 3];
            let valid = match target {
                Target::Request => frame(&encode(&generate::request(&mut rng, &signer))),
                Target::Response => frame(&encode(&generate::response(&mut rng, &signer))),
                Target::Announcement => encode(&generate::announcement(&mut rng, &signer)),
            };
            let mut input = valid;
            let mutated = i % 4 != 0;
            if mutated {
                if target == Target::Announcement {
                    mutate(&mut rng, &mut input, &[]);
                } else {
                    mutate_frame(&mut rng, &mut input, &[]);
                }
            }
            match harness.check(target, &input) {
                Ok(Verdict::Accepted) => accepted += 1,
                // Every valid request and response is accepted (announcements may be
                // generated for another node, another version or negative amounts).
                Ok(Verdict::Refused) => assert!(
                    mutated || target == Target::Announcement,
                    "a valid {target} was refused: {input:x?}"
                ),
                Err(finding) => panic!("{target} input {input:x?}: {finding}"),
            }
        }
        assert!(accepted >= 1_000, "{accepted} accepted");
    });
}

fn encode<T: serde::Serialize>(message: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(message).expect("encode")
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(body.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(body);
    out
}
