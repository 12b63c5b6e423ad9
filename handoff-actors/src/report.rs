//! What an execution did, function by function: the [`ExecutionReport`].
//!
//! When [`ExecuteOptions::report`](crate::ExecuteOptions::report) is set, the execution's
//! coordinator writes each function's instants into a table it owns (one entry per
//! function, one per attempt; nothing per event), and builds the report from it when the
//! execution ends. The derived figures (makespan, critical path, total work, utilisation)
//! are computed here, from that table and the DAG, without I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::oneshot;
use handoff_core::{CallError, DagId, FunctionId, NodeId, ResourceName, ValidatedDag};
use serde::{Deserialize, Serialize};

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// It returned a value.
    Succeeded,
    /// It failed (an error, a panic, a timeout, its node could not run it).
    Failed {
        /// Why, as the error's message.
        error: String,
    },
    /// It was told to stop because the execution was cancelled.
    Cancelled,
}

/// One attempt of a function. Instants are microseconds since the execution started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptReport {
    /// The attempt, from 1.
    pub attempt: u32,
    /// The node it ran on.
    pub node: NodeId,
    /// When it started (for an attempt on another node: when it was sent there; for one
    /// that timed out or was cancelled: when it was handed to its worker).
    pub started_micros: u64,
    /// When it ended (for an attempt on another node: when its answer came back).
    pub finished_micros: u64,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: AttemptOutcome,
}

impl AttemptReport {
    /// How long it ran.
    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.finished_micros.saturating_sub(self.started_micros))
    }
}

/// One regular function of the execution. Instants are microseconds since the
/// execution started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionReport {
    /// The function.
    pub function: FunctionId,
    /// The regular functions whose values it takes (inline ones resolved).
    pub inputs: Vec<FunctionId>,
    /// The node of its last attempt, if any ran.
    pub node: Option<NodeId>,
    /// When all of its dependencies had finished (the first time, if it ran again); for a
    /// function run straight after its only dependency on the same worker (a chain), when
    /// it started.
    pub queued_micros: Option<u64>,
    /// When its first attempt started.
    pub started_micros: Option<u64>,
    /// When its last attempt ended.
    pub finished_micros: Option<u64>,
    /// Whether it produced a value.
    pub succeeded: bool,
    /// The size of its value's MessagePack form, when known: for values made on another
    /// node than the execution's coordinator (the bytes that crossed the network).
    pub size: Option<u64>,
    /// Every attempt, in the order they ended.
    pub attempts: Vec<AttemptReport>,
}

impl FunctionReport {
    /// The time its attempts ran, all together.
    pub fn duration(&self) -> Duration {
        self.attempts.iter().map(AttemptReport::duration).sum()
    }
}

/// How busy one node was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeUsage {
    /// Attempts that ran there.
    pub attempts: u64,
    /// Their durations, summed (microseconds).
    pub busy_micros: u64,
    /// The most attempts that ran there at once (the timeline's slot tracks).
    pub peak_concurrency: u64,
    /// `busy / (peak_concurrency × makespan)`: the share of the slots it used that was
    /// busy over the makespan (0 when nothing ran).
    pub utilisation: f64,
}

/// How much of one resource the execution's attempts held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceUsage {
    /// The amount held on average over the makespan: Σ cost × duration / makespan.
    pub average: f64,
    /// The most held at once, across nodes.
    pub peak: f64,
}

/// What an execution did: per function its node, attempts and instants; for the whole
/// DAG the makespan, the critical path, the total work and how busy each node and
/// resource was. `Display` prints a short summary; it serializes to JSON with serde
/// (`serde_json::to_string(&report)`), and [`to_chrome_trace`](Self::to_chrome_trace)
/// writes a timeline.
///
/// Instants are microseconds since the execution started (`started_at_micros`, since the
/// Unix epoch). Durations are attempts' run times: for functions run on another node they
/// include the round trip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionReport {
    /// The execution's DAG.
    pub dag: DagId,
    /// Whether every function finished.
    pub ok: bool,
    /// When the execution started, in microseconds since the Unix epoch.
    pub started_at_micros: u64,
    /// When it ended, in microseconds since it started.
    pub ended_micros: u64,
    /// From the first attempt's start to the last attempt's end (microseconds).
    pub makespan_micros: u64,
    /// Every attempt's duration, summed (microseconds).
    pub total_work_micros: u64,
    /// The chain of dependent functions with the largest summed durations, first to last.
    pub critical_path: Vec<FunctionId>,
    /// Its summed durations (microseconds).
    pub critical_path_micros: u64,
    /// Every regular function, in the DAG's (topological) order.
    pub functions: Vec<FunctionReport>,
    /// How busy each node was.
    pub nodes: BTreeMap<NodeId, NodeUsage>,
    /// How much of each resource the attempts of functions with a cost held.
    pub resources: BTreeMap<ResourceName, ResourceUsage>,
    /// The names of the nodes that ran something, where known (on a cluster, the names
    /// their operators gave them): [`ExecutionReport::node_label`] shows them.
    #[serde(default)]
    pub node_names: BTreeMap<NodeId, String>,
}

impl ExecutionReport {
    /// From the first attempt's start to the last attempt's end.
    pub fn makespan(&self) -> Duration {
        Duration::from_micros(self.makespan_micros)
    }

    /// Every attempt's duration, summed.
    pub fn total_work(&self) -> Duration {
        Duration::from_micros(self.total_work_micros)
    }

    /// The critical path's summed durations.
    pub fn critical_path_length(&self) -> Duration {
        Duration::from_micros(self.critical_path_micros)
    }

    /// How many attempts ran, all functions together.
    pub fn attempts(&self) -> usize {
        self.functions.iter().map(|f| f.attempts.len()).sum()
    }

    /// How `node` is shown: its name when known, with the end of its id when another
    /// node of this execution has the same name; else its id.
    pub fn node_label(&self, node: &NodeId) -> String {
        handoff_core::node_label(node, &self.node_names)
    }

    /// The function's entry, if it is a regular function of the DAG.
    pub fn function(&self, id: &str) -> Option<&FunctionReport> {
        self.functions.iter().find(|f| f.function.as_str() == id)
    }

    /// The DAG as a picture of this run: each function coloured by its node, with its
    /// duration and attempts; failed ones marked.
    pub fn graph<'a>(&self, dag: &'a ValidatedDag) -> handoff_core::Graph<'a> {
        let mut graph = handoff_core::Graph::new(dag).node_names(self.node_names.clone());
        for f in &self.functions {
            let Some(node) = &f.node else { continue };
            let run = handoff_core::FunctionRun {
                node: node.clone(),
                duration: f.duration(),
                attempts: f.attempts.len() as u32,
                failed: !f.succeeded,
            };
            graph = graph.ran(f.function.as_str(), run);
        }
        graph
    }
}

fn secs(micros: u64) -> String {
    let d = Duration::from_micros(micros);
    if micros >= 1_000_000 {
        format!("{:.3} s", d.as_secs_f64())
    } else if micros >= 1_000 {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{micros} µs")
    }
}

impl fmt::Display for ExecutionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed = self
            .functions
            .iter()
            .flat_map(|f| &f.attempts)
            .filter(|a| matches!(a.outcome, AttemptOutcome::Failed { .. }))
            .count();
        let done = self.functions.iter().filter(|f| f.succeeded).count();
        writeln!(
            f,
            "DAG {}: {}, {}/{} functions done, {} attempts ({} failed)",
            self.dag,
            if self.ok { "ok" } else { "not ok" },
            done,
            self.functions.len(),
            self.attempts(),
            failed,
        )?;
        writeln!(
            f,
            "  makespan {}, total work {}, ended after {}",
            secs(self.makespan_micros),
            secs(self.total_work_micros),
            secs(self.ended_micros),
        )?;
        const SHOWN: usize = 6;
        let mut path: Vec<&str> = self
            .critical_path
            .iter()
            .take(SHOWN)
            .map(FunctionId::as_str)
            .collect();
        if self.critical_path.len() > SHOWN {
            path.push("…");
        }
        writeln!(
            f,
            "  critical path {} over {} functions: {}",
            secs(self.critical_path_micros),
            self.critical_path.len(),
            path.join(" -> "),
        )?;
        for (node, usage) in &self.nodes {
            writeln!(
                f,
                "  node {}: {} attempts, busy {}, up to {} at once, utilisation {:.0}%",
                self.node_label(node),
                usage.attempts,
                secs(usage.busy_micros),
                usage.peak_concurrency,
                usage.utilisation * 100.0,
            )?;
        }
        for (name, usage) in &self.resources {
            writeln!(
                f,
                "  {name}: {:.2} held on average, {} at peak",
                usage.average, usage.peak,
            )?;
        }
        Ok(())
    }
}

/// Assigns each interval `(start, end)` the first slot free at its start (intervals
/// sorted by start; one that starts when another ends may take its slot). Returns the
/// slot of each interval, in the input order, and how many slots were used.
pub(crate) fn pack_slots(intervals: &[(u64, u64)]) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..intervals.len()).collect();
    order.sort_by_key(|&k| (intervals[k].0, intervals[k].1));
    let mut free_at: Vec<u64> = Vec::new();
    let mut slots = vec![0; intervals.len()];
    for k in order {
        let (start, end) = intervals[k];
        let slot = match free_at.iter().position(|&f| f <= start) {
            Some(s) => s,
            None => {
                free_at.push(0);
                free_at.len() - 1
            }
        };
        free_at[slot] = end.max(start);
        slots[k] = slot;
    }
    let used = free_at.len();
    (slots, used)
}

/// The per-function table an execution's coordinator fills when a report was asked for.
pub(crate) struct Recorder {
    started_at: u64,
    queued: Vec<u64>,
    sizes: Vec<u64>,
    /// Every attempt with its function's index, in the order they ended: one flat
    /// vector, so recording allocates nothing per function.
    attempts: Vec<(u32, AttemptReport)>,
    reply: Option<oneshot::Sender<Arc<ExecutionReport>>>,
}

/// `u64::MAX`: not queued yet.
const NEVER: u64 = u64::MAX;

impl Recorder {
    /// A table for `len` functions; the report also goes to `reply` when given.
    pub(crate) fn new(
        len: usize,
        started_at: u64,
        reply: Option<oneshot::Sender<Arc<ExecutionReport>>>,
    ) -> Self {
        Recorder {
            started_at,
            queued: vec![NEVER; len],
            sizes: vec![0; len],
            attempts: Vec::with_capacity(len),
            reply,
        }
    }

    fn since_start(&self, at_micros: u64) -> u64 {
        at_micros.saturating_sub(self.started_at)
    }

    /// Function `index` became ready (only the first time counts).
    pub(crate) fn queued(&mut self, index: u32, at_micros: u64) {
        let at = self.since_start(at_micros);
        let q = &mut self.queued[index as usize];
        if *q == NEVER {
            *q = at;
        }
    }

    /// An attempt ended.
    pub(crate) fn attempt(
        &mut self,
        index: u32,
        attempt: u32,
        node: &NodeId,
        (started, finished): (u64, u64),
        outcome: Result<u64, &CallError>,
    ) {
        let outcome = match outcome {
            Ok(size) => {
                if size > 0 {
                    self.sizes[index as usize] = size;
                }
                AttemptOutcome::Succeeded
            }
            Err(error) => AttemptOutcome::Failed {
                error: error.to_string(),
            },
        };
        self.push(index, attempt, node, started, finished, outcome);
    }

    /// A running attempt was cancelled at `at_micros`.
    pub(crate) fn cancelled(
        &mut self,
        index: u32,
        attempt: u32,
        node: &NodeId,
        started: u64,
        at_micros: u64,
    ) {
        self.push(
            index,
            attempt,
            node,
            started,
            at_micros,
            AttemptOutcome::Cancelled,
        );
    }

    fn push(
        &mut self,
        index: u32,
        attempt: u32,
        node: &NodeId,
        started: u64,
        finished: u64,
        outcome: AttemptOutcome,
    ) {
        let started_micros = self.since_start(started);
        let finished_micros = self.since_start(finished).max(started_micros);
        // A chain successor runs right after its dependency, on the same worker, without
        // being queued by the coordinator: it was ready when it started.
        let queued = &mut self.queued[index as usize];
        if *queued == NEVER {
            *queued = started_micros;
        }
        let report = AttemptReport {
            attempt,
            node: node.clone(),
            started_micros,
            finished_micros,
            outcome,
        };
        self.attempts.push((index, report));
    }

    /// The report, sent to whoever asked for it and returned.
    pub(crate) fn finish(
        mut self,
        dag: &ValidatedDag,
        ok: bool,
        ended_at: u64,
        name_of: impl Fn(&NodeId) -> Option<String>,
    ) -> Arc<ExecutionReport> {
        let ended = self.since_start(ended_at);
        let reply = self.reply.take();
        let mut report = build(dag, ok, ended, self);
        report.node_names = report
            .nodes
            .keys()
            .filter_map(|node| name_of(node).map(|name| (node.clone(), name)))
            .collect();
        let report = Arc::new(report);
        if let Some(reply) = reply {
            let _ = reply.send(Arc::clone(&report));
        }
        report
    }
}

/// The report from the table: pure arithmetic over the DAG and the attempts.
fn build(dag: &ValidatedDag, ok: bool, ended_micros: u64, rec: Recorder) -> ExecutionReport {
    let n = dag.len();
    let Recorder {
        started_at,
        queued,
        sizes,
        attempts,
        ..
    } = rec;
    let mut per_function: Vec<Vec<AttemptReport>> = vec![Vec::new(); n];
    for (index, attempt) in attempts {
        per_function[index as usize].push(attempt);
    }
    let mut functions = Vec::with_capacity(dag.regular_len());
    let mut weight = vec![0_u64; n];
    let (mut first, mut last) = (u64::MAX, 0_u64);
    let mut total_work = 0_u64;
    for (i, attempts) in per_function.into_iter().enumerate() {
        let f = dag.function(i);
        if f.is_inline() {
            continue;
        }
        for a in &attempts {
            first = first.min(a.started_micros);
            last = last.max(a.finished_micros);
            weight[i] += a.finished_micros - a.started_micros;
        }
        total_work += weight[i];
        functions.push(FunctionReport {
            function: f.id().clone(),
            inputs: dag
                .deps(i)
                .iter()
                .map(|&d| dag.function(d as usize).id().clone())
                .collect(),
            node: attempts.last().map(|a| a.node.clone()),
            queued_micros: (queued[i] != NEVER).then_some(queued[i]),
            started_micros: attempts.iter().map(|a| a.started_micros).min(),
            finished_micros: attempts.iter().map(|a| a.finished_micros).max(),
            succeeded: attempts
                .iter()
                .any(|a| a.outcome == AttemptOutcome::Succeeded),
            size: (sizes[i] > 0).then_some(sizes[i]),
            attempts,
        });
    }
    let makespan = last.saturating_sub(first.min(last));
    let (critical_path, critical_path_micros) = critical_path(dag, &weight);
    let nodes = node_usage(&functions, makespan);
    let resources = resource_usage(dag, &functions, makespan);
    ExecutionReport {
        dag: dag.id().clone(),
        ok,
        started_at_micros: started_at,
        ended_micros,
        makespan_micros: makespan,
        total_work_micros: total_work,
        critical_path,
        critical_path_micros,
        functions,
        nodes,
        resources,
        node_names: BTreeMap::new(),
    }
}

/// The longest path by summed weights through the regular dependencies (the DAG's order
/// is topological).
fn critical_path(dag: &ValidatedDag, weight: &[u64]) -> (Vec<FunctionId>, u64) {
    let n = dag.len();
    let mut best = vec![0_u64; n];
    let mut from = vec![u32::MAX; n];
    for i in 0..n {
        if dag.function(i).is_inline() {
            continue;
        }
        let (pred, above) = dag
            .deps(i)
            .iter()
            .map(|&d| (d, best[d as usize]))
            .max_by_key(|&(d, b)| (b, std::cmp::Reverse(d)))
            .unwrap_or((u32::MAX, 0));
        best[i] = above + weight[i];
        from[i] = pred;
    }
    let Some(end) = (0..n)
        .filter(|&i| !dag.function(i).is_inline())
        .max_by_key(|&i| (best[i], std::cmp::Reverse(i)))
    else {
        return (Vec::new(), 0);
    };
    let mut path = vec![dag.function(end).id().clone()];
    let mut at = from[end];
    while at != u32::MAX {
        path.push(dag.function(at as usize).id().clone());
        at = from[at as usize];
    }
    path.reverse();
    (path, best[end])
}

fn node_usage(functions: &[FunctionReport], makespan: u64) -> BTreeMap<NodeId, NodeUsage> {
    let mut per_node: BTreeMap<&NodeId, Vec<(u64, u64)>> = BTreeMap::new();
    for a in functions.iter().flat_map(|f| &f.attempts) {
        per_node
            .entry(&a.node)
            .or_default()
            .push((a.started_micros, a.finished_micros));
    }
    per_node
        .into_iter()
        .map(|(node, intervals)| {
            let busy: u64 = intervals.iter().map(|(s, e)| e - s).sum();
            let (_, peak) = pack_slots(&intervals);
            let capacity = peak as f64 * makespan as f64;
            let usage = NodeUsage {
                attempts: intervals.len() as u64,
                busy_micros: busy,
                peak_concurrency: peak as u64,
                utilisation: if capacity > 0.0 {
                    busy as f64 / capacity
                } else {
                    0.0
                },
            };
            (node.clone(), usage)
        })
        .collect()
}

fn resource_usage(
    dag: &ValidatedDag,
    functions: &[FunctionReport],
    makespan: u64,
) -> BTreeMap<ResourceName, ResourceUsage> {
    // (instant, change) per resource, to find the peak; amount × µs for the average.
    let mut changes: BTreeMap<&ResourceName, Vec<(u64, f64)>> = BTreeMap::new();
    let mut held: BTreeMap<&ResourceName, f64> = BTreeMap::new();
    for f in functions {
        let Some(cost) = dag
            .index_of(f.function.as_str())
            .and_then(|i| dag.function(i).cost())
        else {
            continue;
        };
        for (name, amount) in cost.iter() {
            let amount = amount.as_f64();
            for a in &f.attempts {
                *held.entry(name).or_default() +=
                    amount * (a.finished_micros - a.started_micros) as f64;
                let c = changes.entry(name).or_default();
                c.push((a.started_micros, amount));
                c.push((a.finished_micros, -amount));
            }
        }
    }
    changes
        .into_iter()
        .map(|(name, mut c)| {
            // Releases before acquisitions at the same instant.
            c.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.total_cmp(&y.1)));
            let (mut now, mut peak) = (0.0_f64, 0.0_f64);
            for (_, change) in c {
                now += change;
                peak = peak.max(now);
            }
            let total = held.get(name).copied().unwrap_or(0.0);
            let average = if makespan > 0 {
                total / makespan as f64
            } else {
                0.0
            };
            (name.clone(), ResourceUsage { average, peak })
        })
        .collect()
}

/// The report of a submitted execution, delivered when it ends (see
/// [`ExecutionHandle::report`](crate::ExecutionHandle::report)), whether it succeeded,
/// failed or was cancelled. Resolves to `None` if the execution's coordinator stopped
/// without one.
#[derive(Debug)]
pub struct PendingReport(pub(crate) oneshot::Receiver<Arc<ExecutionReport>>);

impl Future for PendingReport {
    type Output = Option<Arc<ExecutionReport>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(Result::ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use handoff_core::{Dag, Function, Resources};

    #[test]
    fn slots_are_packed_first_free() {
        let (slots, used) = pack_slots(&[(0, 10), (5, 15), (10, 20), (12, 13), (30, 31)]);
        assert_eq!(slots, vec![0, 1, 0, 2, 0]);
        assert_eq!(used, 3);
        assert_eq!(pack_slots(&[]), (vec![], 0));
    }

    #[test]
    fn figures_follow_from_the_attempts() {
        let dag = Dag::with_id("d")
            .with(Function::new("a", "x").with_cost(Resources::new().cpu(2)))
            .with(Function::new("b", "x").arg("a"))
            .with(
                Function::new("c", "x")
                    .arg("a")
                    .with_cost(Resources::new().cpu(1)),
            )
            .with(Function::new("d", "x").args(["b", "c"]))
            .validate()
            .expect("valid");
        let node = NodeId::new("n");
        let mut rec = Recorder::new(dag.len(), 1000, None);
        let idx = |id: &str| dag.index_of(id).expect("known") as u32;
        let error = CallError::NodeLost {
            code: handoff_core::CodeName::new("x"),
            node: node.clone(),
            running: true,
        };
        // a: 0..10; b: 10..15; c fails 10..20 then runs 20..40; d: 40..41.
        rec.queued(idx("a"), 1000);
        rec.attempt(idx("a"), 1, &node, (1000, 1010), Ok(0));
        rec.attempt(idx("b"), 1, &node, (1010, 1015), Ok(7));
        rec.attempt(idx("c"), 1, &node, (1010, 1020), Err(&error));
        rec.attempt(idx("c"), 2, &node, (1020, 1040), Ok(0));
        rec.attempt(idx("d"), 1, &node, (1040, 1041), Ok(0));
        let report = rec.finish(&dag, true, 1050, |_| None);
        assert_eq!(report.makespan_micros, 41);
        assert_eq!(report.ended_micros, 50);
        assert_eq!(report.total_work_micros, 10 + 5 + 10 + 20 + 1);
        assert_eq!(report.critical_path_micros, 10 + 30 + 1);
        let path: Vec<&str> = report.critical_path.iter().map(|f| f.as_str()).collect();
        assert_eq!(path, ["a", "c", "d"]);
        assert_eq!(report.attempts(), 5);
        let b = report.function("b").expect("b");
        assert_eq!(b.size, Some(7));
        assert_eq!(b.inputs, vec![FunctionId::new("a")]);
        assert_eq!(report.function("a").and_then(|a| a.queued_micros), Some(0));
        let usage = &report.nodes[&node];
        assert_eq!(
            (usage.attempts, usage.busy_micros, usage.peak_concurrency),
            (5, 46, 2)
        );
        let cpu = &report.resources[&ResourceName::new("cpu")];
        assert_eq!(cpu.peak, 2.0);
        assert!((cpu.average - (2.0 * 10.0 + 30.0) / 41.0).abs() < 1e-9);
        let text = report.to_string();
        assert!(
            text.contains("4/4 functions done, 5 attempts (1 failed)"),
            "{text}"
        );
        assert!(text.contains("a -> c -> d"), "{text}");
    }
}
