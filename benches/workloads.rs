//! Local workloads, timed end to end through `NodeHandle::execute` (validation excluded).
//!
//! `cargo bench --bench workloads` prints the median, min and max of several runs after
//! a warm-up, then one `json {...}` line per workload. Every run checks its result.
//!
//! Without the `--bench` argument (how `cargo test` runs this target) it runs in quick
//! mode: tiny sizes, one run, no warm-up; only the correctness checks matter there.
//!
//! Environment: `RUNS` (runs per workload), `BIG` (functions in the `big` workload),
//! `COSTED` (the sizes of the costed fanouts, comma-separated; default
//! `1000,10000,100000`), `ONLY` (a comma-separated list of workloads to run, by the first
//! word of their name: `fanout`, `single`, `chain`, `layers`, `payload`, `big`, `sleep`,
//! `costed`, `mixed`, `wide`; e.g. `ONLY=fanout,chain`; all of them when unset or empty).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use handoff::{
    AllocationStrategy, Dag, ExecuteOptions, Function, List, NodeConfig, NodeHandle, NodeId,
    Registry, Resources, Shared, Value, start_node,
};

/// How many `nap` functions run right now, and the most seen at once.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

fn registry(gauge: Arc<Gauge>) -> Registry {
    let mut r = Registry::new();
    r.register("nap", move |ms: u64| {
        let now = gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
        gauge.peak.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(ms));
        gauge.now.fetch_sub(1, Ordering::SeqCst);
        ms
    })
    .expect("register");
    r.register("next", |a: i64, b: i64| a.max(b) + 1)
        .expect("register");
    r.register("one", || 1_i64).expect("register");
    r.register("stamp", |_: i64| epoch_micros())
        .expect("register");
    r.register("inc", |x: i64| x + 1).expect("register");
    r.register("add", |a: i64, b: i64| a + b).expect("register");
    r.register("sum", |xs: List<i64>| xs.iter().sum::<i64>())
        .expect("register");
    r.register("blob", |n: usize| bytes::Bytes::from(vec![7_u8; n]))
        .expect("register");
    r.register("pass", |b: Shared<bytes::Bytes>| {
        Value::from_arc(b.into_arc())
    })
    .expect("register");
    r
}

fn fanout(n: usize) -> Dag {
    let mut dag = Dag::new();
    for i in 0..n {
        dag.add_function(Function::new(format!("f{i}"), "one"));
    }
    dag.with(
        Function::new("total", "sum")
            .args((0..n).map(|i| format!("f{i}")))
            .as_list(),
    )
}

fn chain(n: usize) -> Dag {
    let mut dag = Dag::new().with(Function::new("c0", "one"));
    for i in 1..n {
        dag.add_function(Function::new(format!("c{i}"), "inc").arg(format!("c{}", i - 1)));
    }
    dag
}

/// `depth` layers of `width` functions, each taking 2 of the layer above and combining
/// them with `code` (`add`: `l{d}_j` is 2^d; `next`: it is d + 1).
fn layers(width: usize, depth: usize, code: &str) -> Dag {
    let mut dag = Dag::new();
    for j in 0..width {
        dag.add_function(Function::new(format!("l0_{j}"), "one"));
    }
    for l in 1..depth {
        for j in 0..width {
            dag.add_function(
                Function::new(format!("l{l}_{j}"), code)
                    .arg(format!("l{}_{j}", l - 1))
                    .arg(format!("l{}_{}", l - 1, (j + 1) % width)),
            );
        }
    }
    dag
}

/// A buffer made once, outside the timing, passed as the first function's extra
/// argument and handed along `hops` functions.
fn payload(hops: usize, buffer: &bytes::Bytes) -> Dag {
    let mut dag = Dag::new().with(Function::new("p0", "pass").extra_arg(buffer.clone()));
    for i in 1..hops {
        dag.add_function(Function::new(format!("p{i}"), "pass").arg(format!("p{}", i - 1)));
    }
    dag
}

/// `n` functions that each sleep `ms` and cost 1 cpu.
fn sleepers(n: usize, ms: u64) -> Dag {
    let mut dag = Dag::new();
    for i in 0..n {
        dag.add_function(
            Function::new(format!("s{i}"), "nap")
                .extra_arg(ms)
                .with_cost(Resources::new().cpu(1)),
        );
    }
    dag
}

/// `n` trivial functions each costing `cpu` (and the sum of their results, free).
fn costed_fanout(n: usize, cpu: f64) -> Dag {
    let mut dag = Dag::new();
    for i in 0..n {
        dag.add_function(
            Function::new(format!("f{i}"), "one").with_cost(Resources::new().cpu(cpu)),
        );
    }
    dag.with(
        Function::new("total", "sum")
            .args((0..n).map(|i| format!("f{i}")))
            .as_list(),
    )
}

/// `layers(width, depth, "add")` where each function costs `cpu` 0.5, 1 or 2 and
/// `memory` 100, 200 or 400 (in turn, so neighbours differ).
fn mixed_layers(width: usize, depth: usize) -> Dag {
    const CPU: [f64; 3] = [0.5, 1.0, 2.0];
    const MEMORY: [u32; 3] = [100, 400, 200];
    let mut dag = Dag::new();
    for (k, f) in layers(width, depth, "add").functions().iter().enumerate() {
        let cost = Resources::new().cpu(CPU[k % 3]).memory(MEMORY[(k / 3) % 3]);
        dag.add_function(f.clone().with_cost(cost));
    }
    dag
}

/// `narrow` trivial functions of `cpu: 1` (and their sum), and one `wide` function of
/// `cpu: 2` and a higher priority that becomes ready once a free function `gate` has run
/// (while the narrow ones hold the node): it returns when it started (µs since the Unix
/// epoch). On a node of `cpu: 2` the wide one needs the whole node, which the narrow ones
/// take back one cpu at a time.
fn wide_behind_narrow(narrow: usize) -> Dag {
    costed_fanout(narrow, 1.0)
        .with(Function::new("gate", "one"))
        .with(
            Function::new("wide", "stamp")
                .arg("gate")
                .priority(1)
                .with_cost(Resources::new().cpu(2)),
        )
}

fn epoch_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Times one execution. With `events`, the execution streams its events into a
/// buffer that large and a task consumes them as they come; with `report`, it records
/// its execution report.
async fn time(
    node: &NodeHandle,
    make: &dyn Fn() -> Dag,
    check: &dyn Fn(&handoff::Results),
    events: usize,
    report: bool,
) -> Duration {
    let dag = make().validate().expect("valid");
    let functions = dag.regular_len();
    let start = Instant::now();
    let options = ExecuteOptions::default().events(events).report(report);
    let mut handle = node.submit(dag, options).await.expect("submit");
    let consumer = handle.events().map(|mut stream| {
        actix::spawn(async move {
            let mut seen = 0_usize;
            while futures::StreamExt::next(&mut stream).await.is_some() {
                seen += 1;
            }
            seen
        })
    });
    let done = handle.await.expect("execute");
    let elapsed = start.elapsed();
    if let Some(consumer) = consumer {
        assert!(
            consumer.await.expect("consumer") > 0,
            "events were delivered"
        );
    }
    check(&done.results);
    if report {
        let report = done.report().expect("asked for a report");
        assert_eq!(report.attempts(), functions, "one attempt per function");
    }
    // Freeing the DAG's values on the node happens when the result is dropped; wait for
    // it here, outside the timing, so it does not land in the next run.
    drop(done);
    assert_eq!(node.stored_values().await.expect("count"), 0);
    elapsed
}

/// One line of the report: seconds, and a per-unit figure with its unit.
struct Row {
    name: String,
    median: f64,
    min: f64,
    max: f64,
    per_unit: f64,
    unit: String,
    /// More JSON fields, already formatted (`"key":value,...`), or empty.
    extra: String,
}

impl Row {
    fn new(name: &str, mut samples: Vec<Duration>, per_unit: f64, unit: &str) -> Self {
        samples.sort();
        Row {
            name: name.to_owned(),
            median: samples[samples.len() / 2].as_secs_f64(),
            min: samples[0].as_secs_f64(),
            max: samples[samples.len() - 1].as_secs_f64(),
            per_unit,
            unit: unit.to_owned(),
            extra: String::new(),
        }
    }

    fn print(&self, note: &str) {
        println!(
            "{:<26} median {:>9.3} ms  min {:>9.3} ms  max {:>9.3} ms  | {note}",
            self.name,
            self.median * 1e3,
            self.min * 1e3,
            self.max * 1e3,
        );
    }

    fn json(&self) -> String {
        let sep = if self.extra.is_empty() { "" } else { "," };
        format!(
            "{{\"name\":{},\"median_s\":{},\"min_s\":{},\"max_s\":{},\"per_unit\":{},\"unit\":{}{sep}{}}}",
            quote(&self.name),
            self.median,
            self.min,
            self.max,
            self.per_unit,
            quote(&self.unit),
            self.extra,
        )
    }
}

/// A JSON string (the names here are plain; this covers the rest anyway).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A row per unit of work: µs per unit and units per second.
fn report(name: &str, per: usize, unit: &str, samples: Vec<Duration>) -> Row {
    let mut row = Row::new(name, samples, 0.0, &format!("µs/{unit}"));
    row.per_unit = row.median * 1e6 / per as f64;
    row.print(&format!(
        "{:>7.3} µs/{unit} ({:.0} {unit}/s)",
        row.per_unit,
        per as f64 / row.median
    ));
    row
}

/// A field of `/proc/self/status` in bytes (`VmRSS`, `VmHWM`); `None` off Linux.
fn memory(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "n/a".to_owned(),
        |b| format!("{:.1} MiB", b as f64 / 1048576.0),
    )
}

fn json_or_null(x: Option<u64>) -> String {
    x.map_or_else(|| "null".to_owned(), |x| x.to_string())
}

/// A name, the number of units timed, the unit, how to build the DAG and how to check it.
type Workload = (
    String,
    usize,
    &'static str,
    Box<dyn Fn() -> Dag>,
    Box<dyn Fn(&handoff::Results)>,
);

/// Sizes: tiny in quick mode, the real ones under `cargo bench`.
struct Sizes {
    runs: usize,
    warmup: usize,
    fanout: usize,
    chain: usize,
    width: usize,
    depth: usize,
    sleepers: usize,
    nap_ms: u64,
    big: usize,
    costed: Vec<usize>,
    wide_narrow: usize,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        let env = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        if quick {
            Sizes {
                runs: 1,
                warmup: 0,
                fanout: 100,
                chain: 10,
                width: 10,
                depth: 3,
                sleepers: 4,
                nap_ms: 10,
                big: 10_000,
                costed: vec![100],
                wide_narrow: 100,
            }
        } else {
            Sizes {
                runs: env("RUNS", 10).max(1),
                warmup: 2,
                fanout: 10_000,
                chain: 1000,
                width: 100,
                depth: 20,
                sleepers: 16,
                nap_ms: 100,
                big: env("BIG", 1_000_000).max(4),
                costed: std::env::var("COSTED")
                    .ok()
                    .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
                    .unwrap_or_else(|| vec![1000, 10_000, 100_000]),
                wide_narrow: 10_000,
            }
        }
    }
}

/// The `big` workload: a layered DAG of about `n` functions (√n layers of √n), each
/// function taking 2 of the layer above. Validation, allocation over 2 nodes and the
/// execution on `node` are timed separately, once each.
async fn big(node: &NodeHandle, n: usize, rows: &mut Vec<Row>) {
    let width = (n as f64).sqrt().round().max(2.0) as usize;
    let depth = (n / width).max(2);
    let n = width * depth;
    let before = memory("VmRSS");
    let start = Instant::now();
    let dag = layers(width, depth, "next");
    let build = start.elapsed();
    let start = Instant::now();
    let dag = dag.validate().expect("valid");
    let validate = start.elapsed();
    let built = memory("VmRSS");
    assert_eq!(dag.len(), n);

    let nodes = [
        (NodeId::new("a"), Resources::new().cpu(2)),
        (NodeId::new("b"), Resources::new().cpu(2)),
    ];
    let start = Instant::now();
    let plan = handoff::allocate(&dag, &nodes, &AllocationStrategy::default()).expect("allocates");
    let allocate = start.elapsed();
    assert_eq!(plan.nodes.len(), n, "every function placed");
    assert!(plan.waiting.is_empty(), "no cost, nothing waits");
    drop(plan);
    // The peak so far: building, validating and allocating (the target's measure).
    let planned = memory("VmHWM");

    let start = Instant::now();
    let done = node
        .execute(dag, ExecuteOptions::default())
        .await
        .expect("execute");
    let execute = start.elapsed();
    assert_eq!(done.results.len(), n);
    let last = format!("l{}_{}", depth - 1, width / 2);
    assert_eq!(
        done.results.get::<i64>(&last).expect("last layer"),
        depth as i64
    );
    drop(done);
    assert_eq!(node.stored_values().await.expect("count"), 0);
    let peak = memory("VmHWM");

    let per_fn = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "big: {depth} layers x {width} = {n} functions, built in {:.3} s (untimed below)",
        build.as_secs_f64()
    );
    let label = format!("big {n} validate");
    let row = Row::new(&label, vec![validate], per_fn(validate), "µs/fn");
    row.print(&format!("{:>7.3} µs/fn", row.per_unit));
    rows.push(row);
    let label = format!("big {n} allocate (2 nodes)");
    let mut row = Row::new(&label, vec![allocate], per_fn(allocate), "µs/fn");
    row.print(&format!(
        "{:>7.3} µs/fn; peak RSS through build + validate + allocate {}",
        row.per_unit,
        mib(planned)
    ));
    row.extra = format!("\"peak_rss_bytes\":{}", json_or_null(planned));
    rows.push(row);
    let label = format!("big {n} execute");
    let mut row = Row::new(&label, vec![execute], per_fn(execute), "µs/fn");
    let delta = |after: Option<u64>| Some(after?.saturating_sub(before?) / n as u64);
    row.print(&format!(
        "{:>7.3} µs/fn; peak RSS {}, {} B/fn at peak, validated DAG {} B/fn",
        row.per_unit,
        mib(peak),
        delta(peak).map_or_else(|| "n/a".to_owned(), |b| b.to_string()),
        delta(built).map_or_else(|| "n/a".to_owned(), |b| b.to_string()),
    ));
    row.extra = format!(
        "\"functions\":{n},\"validate_s\":{},\"allocate_s\":{},\"peak_rss_bytes\":{},\"bytes_per_function\":{},\"dag_bytes_per_function\":{}",
        validate.as_secs_f64(),
        allocate.as_secs_f64(),
        json_or_null(peak),
        json_or_null(delta(peak)),
        json_or_null(delta(built)),
    );
    rows.push(row);
}

/// Whether the workload named `first` (the first word of its name) runs: listed in
/// `ONLY`, or `ONLY` unset or empty.
fn selected(first: &str) -> bool {
    match std::env::var("ONLY") {
        Ok(only) if !only.trim().is_empty() => only
            .split(',')
            .any(|w| w.trim().eq_ignore_ascii_case(first)),
        _ => true,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test` does not: quick mode.
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes = Sizes::new(quick);
    if quick {
        println!("quick mode (no --bench): tiny sizes, correctness only");
    }
    let buffer = bytes::Bytes::from(vec![7_u8; 10 << 20]);
    let small = bytes::Bytes::from(vec![7_u8; 10]);
    let gauge = Arc::new(Gauge::default());
    actix::System::new().block_on(async move {
        let node = start_node(NodeConfig::new("bench", registry(gauge.clone())))
            .await
            .expect("node");
        let mut rows = Vec::new();
        // First, so that its memory figures start from a small process.
        if selected("big") {
            big(&node, sizes.big, &mut rows).await;
        }

        let Sizes {
            fanout: fan,
            chain: hops,
            width,
            depth,
            ..
        } = sizes;
        let workloads: Vec<Workload> = vec![
            (
                format!("fanout {fan} + sum"),
                fan + 1,
                "fn",
                Box::new(move || fanout(fan)),
                Box::new(move |r| assert_eq!(r.get::<i64>("total").expect("total"), fan as i64)),
            ),
            (
                "single function".to_owned(),
                1,
                "execution",
                Box::new(|| Dag::new().with(Function::new("one", "one"))),
                Box::new(|r| assert_eq!(r.get::<i64>("one").expect("one"), 1)),
            ),
            (
                format!("chain {hops}"),
                hops - 1,
                "hop",
                Box::new(move || chain(hops)),
                Box::new(move |r| {
                    let last = format!("c{}", hops - 1);
                    assert_eq!(r.get::<i64>(&last).expect("last"), hops as i64)
                }),
            ),
            (
                format!("layers {depth}x{width}"),
                depth * width,
                "fn",
                Box::new(move || layers(width, depth, "add")),
                Box::new(move |r| {
                    let last = format!("l{}_0", depth - 1);
                    assert_eq!(r.get::<i64>(&last).expect("last"), 1 << (depth - 1))
                }),
            ),
            (
                "payload 10 x 10 MB".to_owned(),
                9,
                "hop",
                Box::new({
                    let buffer = buffer.clone();
                    move || payload(10, &buffer)
                }),
                Box::new({
                    let buffer = buffer.clone();
                    move |r| {
                        let last = r
                            .value("p9")
                            .expect("p9")
                            .shared::<bytes::Bytes>()
                            .expect("bytes");
                        assert_eq!(last.as_ptr(), buffer.as_ptr(), "no copy along the chain");
                    }
                }),
            ),
            (
                "payload 10 x 10 B".to_owned(),
                9,
                "hop",
                Box::new(move || payload(10, &small)),
                Box::new(|r| {
                    assert_eq!(
                        r.value("p9")
                            .expect("p9")
                            .shared::<bytes::Bytes>()
                            .expect("b")
                            .len(),
                        10
                    )
                }),
            ),
        ];
        for (name, per, unit, make, check) in &workloads {
            if !selected(name.split_whitespace().next().unwrap_or_default()) {
                continue;
            }
            for (events, recorded) in [(0, false), (1 << 17, false), (0, true)] {
                if (events > 0 || recorded) && !name.starts_with("fanout") {
                    continue;
                }
                let run = || time(&node, make.as_ref(), check.as_ref(), events, recorded);
                for _ in 0..sizes.warmup {
                    run().await;
                }
                let mut samples = Vec::with_capacity(sizes.runs);
                for _ in 0..sizes.runs {
                    samples.push(run().await);
                }
                let label = match (events > 0, recorded) {
                    (true, _) => format!("{name} +events"),
                    (_, true) => format!("{name} +report"),
                    _ => name.clone(),
                };
                rows.push(report(&label, *per, unit, samples));
            }
        }

        // Sleepers on a node with 2 cpus: at most 2 at once, ideally n * ms / 2.
        if selected("sleep") {
            let (n, ms) = (sizes.sleepers, sizes.nap_ms);
            let cpu2 = start_node(
                NodeConfig::new("bench-cpu2", registry(gauge.clone()))
                    .capabilities(Resources::new().cpu(2)),
            )
            .await
            .expect("node");
            let ideal = Duration::from_millis(ms * n as u64 / 2);
            let make = move || sleepers(n, ms);
            let check = {
                let gauge = gauge.clone();
                move |r: &handoff::Results| {
                    for i in 0..n {
                        assert_eq!(r.get::<u64>(&format!("s{i}")).expect("slept"), ms);
                    }
                    let peak = gauge.peak.swap(0, Ordering::SeqCst);
                    assert!(peak <= 2, "{peak} ran at once on 2 cpus");
                    assert!(peak >= 1, "the sleepers ran");
                }
            };
            for _ in 0..sizes.warmup {
                time(&cpu2, &make, &check, 0, false).await;
            }
            let mut samples = Vec::with_capacity(sizes.runs);
            for _ in 0..sizes.runs {
                samples.push(time(&cpu2, &make, &check, 0, false).await);
            }
            let label = format!("sleep-parallel {n}x{ms}ms cpu2");
            let mut row = Row::new(&label, samples, 0.0, "x ideal");
            row.per_unit = row.median / ideal.as_secs_f64();
            row.print(&format!(
                "makespan {:.3} s = {:.3} x ideal {:.3} s (never more than 2 at once)",
                row.median,
                row.per_unit,
                ideal.as_secs_f64()
            ));
            row.extra = format!("\"ideal_s\":{}", ideal.as_secs_f64());
            rows.push(row);
        }

        costed(&sizes, gauge.clone(), &mut rows).await;

        for row in &rows {
            println!("json {}", row.json());
        }
    });
}

/// The costed workloads, on a node of `cpu: 2` (and `memory: 1000` for the mixed layers):
/// costed fanouts of each size in `COSTED` at `cpu: 1` and `cpu: 0.5`, the uncosted
/// fanout of the same size beside each (the per-function ratio), mixed layers 20 x 100,
/// and the wide request behind narrow ones (how long it waited).
async fn costed(sizes: &Sizes, gauge: Arc<Gauge>, rows: &mut Vec<Row>) {
    let node = start_node(
        NodeConfig::new("bench-costed", registry(gauge))
            .capabilities(Resources::new().cpu(2).memory(1000)),
    )
    .await
    .expect("node");
    let runs = |n: usize| {
        if n >= 100_000 {
            sizes.runs.min(3)
        } else {
            sizes.runs
        }
    };
    if selected("costed") {
        for &n in &sizes.costed {
            let check = move |r: &handoff::Results| {
                assert_eq!(r.get::<i64>("total").expect("total"), n as i64)
            };
            let mut free = 0.0;
            for (label, cpu) in [("uncosted", 0.0), ("cpu1", 1.0), ("cpu0.5", 0.5)] {
                let make = move || {
                    if cpu == 0.0 {
                        fanout(n)
                    } else {
                        costed_fanout(n, cpu)
                    }
                };
                for _ in 0..sizes.warmup.min(1) {
                    time(&node, &make, &check, 0, false).await;
                }
                let mut samples = Vec::new();
                for _ in 0..runs(n) {
                    samples.push(time(&node, &make, &check, 0, false).await);
                }
                let name = format!("costed fanout {n} {label}");
                let mut row = report(&name, n + 1, "fn", samples);
                if cpu == 0.0 {
                    free = row.per_unit;
                } else {
                    let ratio = row.per_unit / free;
                    println!("{:<26} {ratio:.2} x the uncosted fanout per function", "");
                    row.extra = format!("\"x_uncosted\":{ratio}");
                }
                rows.push(row);
            }
        }
    }
    if selected("mixed") {
        let (width, depth) = if sizes.warmup == 0 {
            (10, 3)
        } else {
            (100, 20)
        };
        let make = move || mixed_layers(width, depth);
        let check = move |r: &handoff::Results| {
            let last = format!("l{}_0", depth - 1);
            assert_eq!(r.get::<i64>(&last).expect("last"), 1 << (depth - 1))
        };
        for _ in 0..sizes.warmup {
            time(&node, &make, &check, 0, false).await;
        }
        let mut samples = Vec::new();
        for _ in 0..sizes.runs {
            samples.push(time(&node, &make, &check, 0, false).await);
        }
        let name = format!("mixed layers {depth}x{width}");
        rows.push(report(&name, width * depth, "fn", samples));
    }
    if selected("wide") {
        let n = sizes.wide_narrow;
        let make = move || wide_behind_narrow(n);
        let mut waits = Vec::new();
        let mut samples = Vec::new();
        for _ in 0..sizes.runs.min(5) {
            let submitted = epoch_micros();
            let stamp = std::cell::Cell::new(0_u64);
            let check = |r: &handoff::Results| {
                assert_eq!(r.get::<i64>("total").expect("total"), n as i64);
                stamp.set(r.get::<u64>("wide").expect("wide"));
            };
            samples.push(time(&node, &make, &check, 0, false).await);
            waits.push(Duration::from_micros(stamp.get().saturating_sub(submitted)));
        }
        let name = format!("wide behind {n} narrow");
        let mut row = report(&name, n + 3, "fn", samples);
        waits.sort();
        let wait = waits[waits.len() / 2];
        println!(
            "{:<26} the wide function started {:.3} ms after the submission (median)",
            "",
            wait.as_secs_f64() * 1e3
        );
        row.extra = format!("\"wide_wait_s\":{}", wait.as_secs_f64());
        rows.push(row);
    }
}
