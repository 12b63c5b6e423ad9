//! `fuzz-codec`: a mutational fuzzer for the wire codec and the announcement decoder
//! that runs on stable Rust (no coverage instrumentation: it mutates valid messages and
//! keeps the mutants that still decode as seeds).
//!
//! ```text
//! cargo run --release -p handoff-fuzz --bin fuzz-codec -- --seconds 600 --out target/fuzz
//! ```
//!
//! Every input goes through the checks of [`handoff_fuzz::Harness::check`]. A failing
//! input is written to the output directory as `<target>-<kind>-<hash>.bin`; copy it into
//! `handoff-net/tests/fuzz-corpus/` to keep it as a regression case. A supervisor process
//! runs the fuzzing in a child process: if the child dies (a stack overflow, an abort,
//! an allocation over the hard cap), it replays the child's last stretch of inputs,
//! writing each to disk first, and keeps the one that killed it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use handoff_fuzz::generate;
use handoff_fuzz::mutate::{mutate, mutate_frame};
use handoff_fuzz::rng::Rng;
use handoff_fuzz::{Finding, Harness, Target, Verdict, alloc_bound, corpus_dir, corpus_files};

/// Inputs per epoch: each epoch starts from fresh seeds and its own random stream, so a
/// crash is replayed from the start of its epoch only.
const EPOCH: u64 = 100_000;
/// How often a worker reports progress.
const PROGRESS_EVERY: u64 = 5_000;
/// The most mutants kept as seeds per target.
const MAX_SEEDS: usize = 4_096;
/// Files written per kind of finding (they are all counted).
const FILES_PER_SIGNATURE: usize = 3;

const USAGE: &str = "\
fuzz-codec: fuzzes handoff-net's codec and announcement decoder

USAGE: fuzz-codec [--seconds N] [--iterations N] [--seed N] [--out DIR]
                  [--corpus DIR] [--target request|response|announcement]...
                  [--replay FILE...]

  --seconds N     stop after N seconds (default 60)
  --iterations N  stop after N inputs (default: no limit)
  --seed N        the random seed (default 1); a run is reproducible from it
  --out DIR       where findings are written (default target/fuzz-findings)
  --corpus DIR    extra seeds: files named <target>-*.bin (default: the regression
                  corpus, handoff-net/tests/fuzz-corpus)
  --target T      fuzz only this target (repeatable; default all three)
  --stack-kib N   the stack of the thread that reads the inputs (default 2048, the
                  stack of tokio's worker threads, where libp2p decodes frames)
  --replay FILE   check these files (named <target>-*.bin) and exit";

#[derive(Debug, Clone)]
struct Options {
    seconds: u64,
    iterations: Option<u64>,
    seed: u64,
    out: PathBuf,
    corpus: PathBuf,
    targets: Vec<Target>,
    replay: Vec<PathBuf>,
    stack_kib: u64,
    worker: bool,
    first_epoch: u64,
    /// Replays epoch `first_epoch` up to this iteration, writing each input to `out`
    /// before checking it.
    record_until: Option<u64>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        seconds: 60,
        iterations: None,
        seed: 1,
        out: PathBuf::from("target/fuzz-findings"),
        corpus: corpus_dir(),
        targets: Vec::new(),
        replay: Vec::new(),
        stack_kib: 2048,
        worker: false,
        first_epoch: 0,
        record_until: None,
    };
    let mut it = args.iter();
    let number = |v: Option<&String>, flag: &str| -> Result<u64, String> {
        v.and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{flag} takes a number"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => options.seconds = number(it.next(), arg)?,
            "--iterations" => options.iterations = Some(number(it.next(), arg)?),
            "--seed" => options.seed = number(it.next(), arg)?,
            "--out" => options.out = it.next().ok_or("--out takes a directory")?.into(),
            "--corpus" => options.corpus = it.next().ok_or("--corpus takes a directory")?.into(),
            "--target" => {
                let name = it.next().ok_or("--target takes a name")?;
                let target = Target::ALL
                    .into_iter()
                    .find(|t| t.name() == name)
                    .ok_or_else(|| format!("unknown target `{name}`"))?;
                options.targets.push(target);
            }
            "--stack-kib" => options.stack_kib = number(it.next(), arg)?,
            "--replay" => options.replay.extend(it.by_ref().map(PathBuf::from)),
            "--worker" => options.worker = true,
            "--first-epoch" => options.first_epoch = number(it.next(), arg)?,
            "--record-until" => options.record_until = Some(number(it.next(), arg)?),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument `{other}`\n\n{USAGE}")),
        }
    }
    if options.targets.is_empty() {
        options.targets = Target::ALL.to_vec();
    }
    Ok(options)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    if options.replay.is_empty()
        && let Err(e) = std::fs::create_dir_all(&options.out)
    {
        eprintln!("cannot create {}: {e}", options.out.display());
        return ExitCode::from(2);
    }
    if !options.replay.is_empty() || options.worker {
        // Inputs are read on a thread with the stack of a tokio worker, as in a node.
        let stack = usize::try_from(options.stack_kib.saturating_mul(1024)).unwrap_or(usize::MAX);
        let run = move || {
            if options.replay.is_empty() {
                worker(&options);
                ExitCode::SUCCESS
            } else {
                replay(&options.replay)
            }
        };
        match std::thread::Builder::new().stack_size(stack).spawn(run) {
            Ok(thread) => thread.join().unwrap_or(ExitCode::FAILURE),
            Err(e) => {
                eprintln!("cannot start the fuzzing thread: {e}");
                ExitCode::from(2)
            }
        }
    } else {
        supervise(&options, &args)
    }
}

fn replay(files: &[PathBuf]) -> ExitCode {
    silence_panics();
    let harness = Harness::new();
    let mut failed = 0;
    for path in files {
        let Some(target) = Target::of_file(path) else {
            eprintln!("{}: the name names no target", path.display());
            failed += 1;
            continue;
        };
        match std::fs::read(path) {
            Ok(bytes) => match harness.check(target, &bytes) {
                Ok(verdict) => println!("{}: {verdict:?}", path.display()),
                Err(finding) => {
                    println!("{}: {finding}", path.display());
                    failed += 1;
                }
            },
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                failed += 1;
            }
        }
    }
    println!("{} passed, {failed} failed", files.len() - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn silence_panics() {
    std::panic::set_hook(Box::new(|_| {}));
}

/// Runs workers until the time or the iterations are spent; a worker that dies has its
/// last inputs replayed to find the one that killed it.
fn supervise(options: &Options, args: &[String]) -> ExitCode {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(options.seconds);
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("cannot find this program: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "fuzz-codec: seed {}, {} s, targets {:?}, findings in {}",
        options.seed,
        options.seconds,
        options.targets.iter().map(|t| t.name()).collect::<Vec<_>>(),
        options.out.display()
    );
    let mut epoch = options.first_epoch;
    let mut executions = 0_u64;
    let mut findings = 0_u64;
    let mut crashes = 0_u64;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let iterations_left = options.iterations.map(|n| n.saturating_sub(executions));
        if left.is_zero() || iterations_left == Some(0) {
            break;
        }
        let mut child_args: Vec<String> = args.to_vec();
        child_args.extend([
            "--worker".to_owned(),
            "--first-epoch".to_owned(),
            epoch.to_string(),
            "--seconds".to_owned(),
            left.as_secs().max(1).to_string(),
        ]);
        if let Some(n) = iterations_left {
            child_args.extend(["--iterations".to_owned(), n.to_string()]);
        }
        let report = match run_worker(&exe, &child_args) {
            Ok(report) => report,
            Err(e) => {
                eprintln!("cannot run a worker: {e}");
                return ExitCode::from(2);
            }
        };
        executions += report.executions;
        findings += report.findings;
        if report.clean_exit {
            break;
        }
        crashes += 1;
        let (crash_epoch, from) = report.last_progress.unwrap_or((epoch, 0));
        println!(
            "worker died ({}) in epoch {crash_epoch} after iteration {from}: replaying to find the input",
            report.status
        );
        let record = options.out.join("current");
        let mut record_args: Vec<String> = args.to_vec();
        record_args.extend([
            "--worker".to_owned(),
            "--first-epoch".to_owned(),
            crash_epoch.to_string(),
            "--record-until".to_owned(),
            (from + PROGRESS_EVERY + 1).to_string(),
            "--seconds".to_owned(),
            "3600".to_owned(),
        ]);
        let _ = run_worker(&exe, &record_args);
        match (
            std::fs::read(record.with_extension("bin")),
            std::fs::read_to_string(record.with_extension("target")),
        ) {
            (Ok(bytes), Ok(target)) => {
                let _ = std::fs::remove_file(record.with_extension("bin"));
                let _ = std::fs::remove_file(record.with_extension("target"));
                let name = format!("{}-crash-{:016x}.bin", target.trim(), fnv(&bytes));
                let path = options.out.join(name);
                match std::fs::write(&path, &bytes) {
                    Ok(()) => println!("FINDING {}: the worker died on it", path.display()),
                    Err(e) => eprintln!("cannot write {}: {e}", path.display()),
                }
                findings += 1;
            }
            _ => println!("the replay did not die again: the crash was not reproduced"),
        }
        epoch = crash_epoch + 1;
    }
    println!(
        "fuzz-codec: {executions} executions in {:.0} s ({:.0}/s), {findings} findings, {crashes} worker crashes",
        started.elapsed().as_secs_f64(),
        executions as f64 / started.elapsed().as_secs_f64().max(0.001)
    );
    if findings == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

struct WorkerReport {
    executions: u64,
    findings: u64,
    last_progress: Option<(u64, u64)>,
    clean_exit: bool,
    status: String,
}

fn run_worker(exe: &Path, args: &[String]) -> std::io::Result<WorkerReport> {
    let mut child = Command::new(exe)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut report = WorkerReport {
        executions: 0,
        findings: 0,
        last_progress: None,
        clean_exit: false,
        status: String::new(),
    };
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            let mut words = line.split_whitespace();
            match words.next() {
                Some("progress") => {
                    let numbers: Vec<u64> = words.filter_map(|w| w.parse().ok()).collect();
                    if let [epoch, iteration, executions, findings] = numbers[..] {
                        report.last_progress = Some((epoch, iteration));
                        report.executions = executions;
                        report.findings = findings;
                    }
                }
                Some("done") => {
                    let numbers: Vec<u64> = words.filter_map(|w| w.parse().ok()).collect();
                    if let [executions, findings] = numbers[..] {
                        report.executions = executions;
                        report.findings = findings;
                    }
                }
                _ => println!("{line}"),
            }
        }
    }
    let status = child.wait()?;
    report.clean_exit = status.success();
    report.status = status.to_string();
    Ok(report)
}

/// FNV-1a, for file names.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(body.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(body);
    out
}

/// Encodes with field names (as the codec does) or, sometimes, compactly (structs as
/// arrays), which the decoder also accepts.
fn encode<T: serde::Serialize>(rng: &mut Rng, message: &T) -> Vec<u8> {
    let encoded = if rng.chance(1, 8) {
        rmp_serde::to_vec(message)
    } else {
        rmp_serde::to_vec_named(message)
    };
    encoded.unwrap_or_default()
}

/// A fresh valid input for `target`.
fn fresh(rng: &mut Rng, target: Target, harness: &Harness) -> Vec<u8> {
    let signer = harness.signer_node();
    match target {
        Target::Request => {
            let request = generate::request(rng, signer);
            frame(&encode(rng, &request))
        }
        Target::Response => {
            let response = generate::response(rng, signer);
            frame(&encode(rng, &response))
        }
        Target::Announcement => {
            let announcement = generate::announcement(rng, signer);
            encode(rng, &announcement)
        }
    }
}

#[derive(Default)]
struct Stats {
    executions: u64,
    accepted: u64,
    refused: u64,
    largest_peak: usize,
    /// The largest `(peak - fixed allowance) / input length`, with its input length.
    largest_ratio: (f64, usize),
}

struct Worker<'a> {
    options: &'a Options,
    harness: Harness,
    seeds: HashMap<Target, Vec<Vec<u8>>>,
    extra: HashMap<Target, Vec<Vec<u8>>>,
    stats: HashMap<Target, Stats>,
    findings: u64,
    signatures: HashMap<String, usize>,
}

fn worker(options: &Options) {
    silence_panics();
    let mut extra: HashMap<Target, Vec<Vec<u8>>> = HashMap::new();
    if let Ok(files) = corpus_files(&options.corpus) {
        for (target, path) in files {
            if let Ok(bytes) = std::fs::read(&path) {
                extra.entry(target).or_default().push(bytes);
            }
        }
    }
    let mut worker = Worker {
        options,
        harness: Harness::new(),
        seeds: HashMap::new(),
        extra,
        stats: HashMap::new(),
        findings: 0,
        signatures: HashMap::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(options.seconds);
    let mut executions = 0_u64;
    let mut epoch = options.first_epoch;
    'epochs: loop {
        let mut rng = Rng::new(options.seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        worker.reset_seeds(&mut rng);
        for iteration in 0..EPOCH {
            if iteration % PROGRESS_EVERY == 0 {
                println!(
                    "progress {epoch} {iteration} {executions} {}",
                    worker.findings
                );
                let _ = std::io::stdout().flush();
                if Instant::now() >= deadline
                    || options.iterations.is_some_and(|n| executions >= n)
                    || options.record_until.is_some_and(|n| iteration >= n)
                {
                    break 'epochs;
                }
            }
            let target = options.targets[(iteration % options.targets.len() as u64) as usize];
            let input = worker.next_input(&mut rng, target);
            if options.record_until.is_some() {
                let record = options.out.join("current");
                let _ = std::fs::write(record.with_extension("target"), target.name());
                let _ = std::fs::write(record.with_extension("bin"), &input);
            }
            worker.run(target, input, &mut rng);
            executions += 1;
        }
        if options.record_until.is_some() {
            break;
        }
        epoch += 1;
    }
    if options.record_until.is_some() {
        // The replay did not die: nothing to record.
        let record = options.out.join("current");
        let _ = std::fs::remove_file(record.with_extension("bin"));
        let _ = std::fs::remove_file(record.with_extension("target"));
    }
    for target in &options.targets {
        if let Some(s) = worker.stats.get(target) {
            println!(
                "{target}: {} executions, {} accepted, {} refused; largest peak {} bytes; \
                 largest (peak - fixed) / input length {:.1} (input of {} bytes)",
                s.executions,
                s.accepted,
                s.refused,
                s.largest_peak,
                s.largest_ratio.0,
                s.largest_ratio.1
            );
        }
    }
    println!("done {executions} {}", worker.findings);
}

impl Worker<'_> {
    fn reset_seeds(&mut self, rng: &mut Rng) {
        self.seeds.clear();
        for &target in &self.options.targets {
            let mut seeds: Vec<Vec<u8>> =
                (0..64).map(|_| fresh(rng, target, &self.harness)).collect();
            seeds.extend(self.extra.get(&target).cloned().unwrap_or_default());
            self.seeds.insert(target, seeds);
        }
    }

    fn next_input(&mut self, rng: &mut Rng, target: Target) -> Vec<u8> {
        let framed = target != Target::Announcement;
        match rng.below(100) {
            0..=4 => fresh(rng, target, &self.harness),
            5..=7 => {
                let len = rng.below(64);
                let bytes = rng.bytes(len);
                if framed && rng.chance(1, 2) {
                    frame(&bytes)
                } else {
                    bytes
                }
            }
            8..=10 => {
                let bytes = generate::msgpack(rng, 4);
                if framed { frame(&bytes) } else { bytes }
            }
            _ => {
                let seeds = self.seeds.get(&target).map(Vec::as_slice).unwrap_or(&[]);
                if seeds.is_empty() {
                    return fresh(rng, target, &self.harness);
                }
                let mut input = rng.pick(seeds).clone();
                if framed {
                    mutate_frame(rng, &mut input, seeds);
                } else {
                    mutate(rng, &mut input, seeds);
                }
                input
            }
        }
    }

    fn run(&mut self, target: Target, input: Vec<u8>, rng: &mut Rng) {
        let result = self.harness.check(target, &input);
        let peak = self.harness.last_peak();
        let stats = self.stats.entry(target).or_default();
        stats.executions += 1;
        stats.largest_peak = stats.largest_peak.max(peak);
        if !input.is_empty() && peak > alloc_bound(0) {
            let ratio = (peak - alloc_bound(0)) as f64 / input.len() as f64;
            if ratio > stats.largest_ratio.0 {
                stats.largest_ratio = (ratio, input.len());
            }
        }
        match result {
            Ok(Verdict::Accepted) => {
                stats.accepted += 1;
                // A mutant that still decodes is a seed: it reaches deeper than random bytes.
                let seeds = self.seeds.entry(target).or_default();
                if seeds.len() < MAX_SEEDS {
                    seeds.push(input);
                } else if rng.chance(1, 4) {
                    let slot = rng.below(seeds.len());
                    seeds[slot] = input;
                }
            }
            Ok(Verdict::Refused) => stats.refused += 1,
            Err(finding) => self.record(target, &input, &finding),
        }
    }

    fn record(&mut self, target: Target, input: &[u8], finding: &Finding) {
        self.findings += 1;
        let text = finding.to_string();
        // Numbers vary between inputs of the same bug: leave them out of the signature.
        let signature: String = format!("{target} {text}")
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .take(120)
            .collect();
        let count = self.signatures.entry(signature).or_default();
        *count += 1;
        if *count > FILES_PER_SIGNATURE {
            return;
        }
        let name = format!("{target}-{}-{:016x}.bin", finding.kind(), fnv(input));
        let path = self.options.out.join(name);
        let _ = std::fs::write(&path, input);
        println!("FINDING {}: {text}", path.display());
    }
}
