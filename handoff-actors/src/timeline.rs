//! An execution's timeline in the Chrome trace event format (JSON), which Perfetto
//! (<https://ui.perfetto.dev>) and `chrome://tracing` open.
//!
//! One process per node, one thread per worker slot on it (attempts packed into the first
//! free slot), one complete slice (`"ph": "X"`) per attempt. Retries are named
//! `function (attempt n)`; failed attempts are coloured red and cancelled ones grey,
//! with the outcome and the error in their arguments. A value consumed on another node
//! than the one that made it is a flow arrow from the producing slice to the consuming
//! one, with its size when known.

use std::collections::BTreeMap;

use handoff_core::NodeId;
use serde_json::{Value as Json, json};

use crate::report::{AttemptOutcome, ExecutionReport, pack_slots};

impl ExecutionReport {
    /// The timeline as Chrome trace event JSON (the object form, with `traceEvents`).
    /// Timestamps are microseconds since the execution started.
    ///
    /// ```
    /// # fn show(report: &handoff_actors::ExecutionReport) -> std::io::Result<()> {
    /// std::fs::write("timeline.json", report.to_chrome_trace())?;
    /// // Open timeline.json in https://ui.perfetto.dev or chrome://tracing.
    /// # Ok(()) }
    /// ```
    pub fn to_chrome_trace(&self) -> String {
        self.chrome_trace().to_string()
    }

    /// The timeline as a JSON value (see [`to_chrome_trace`](Self::to_chrome_trace)).
    pub fn chrome_trace(&self) -> Json {
        // Processes: nodes in name order, from 1.
        let nodes: BTreeMap<&NodeId, u64> = self
            .nodes
            .keys()
            .enumerate()
            .map(|(k, n)| (n, k as u64 + 1))
            .collect();
        // Each attempt's slot on its node, and where each function's value was made.
        let mut per_node: BTreeMap<&NodeId, Vec<(usize, usize)>> = BTreeMap::new();
        for (fi, f) in self.functions.iter().enumerate() {
            for (ai, a) in f.attempts.iter().enumerate() {
                per_node.entry(&a.node).or_default().push((fi, ai));
            }
        }
        let mut slot_of: BTreeMap<(usize, usize), u64> = BTreeMap::new();
        let mut events = Vec::new();
        for (node, attempts) in &per_node {
            let pid = nodes.get(node).copied().unwrap_or(0);
            let intervals: Vec<(u64, u64)> = attempts
                .iter()
                .map(|&(fi, ai)| {
                    let a = &self.functions[fi].attempts[ai];
                    (a.started_micros, a.finished_micros)
                })
                .collect();
            let (slots, used) = pack_slots(&intervals);
            events.push(json!({
                "ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                "args": { "name": format!("node {}", self.node_label(node)) },
            }));
            events.push(json!({
                "ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
                "args": { "sort_index": pid },
            }));
            for slot in 0..used {
                events.push(json!({
                    "ph": "M", "name": "thread_name", "pid": pid, "tid": slot + 1,
                    "args": { "name": format!("slot {}", slot + 1) },
                }));
            }
            for (&(fi, ai), slot) in attempts.iter().zip(slots) {
                slot_of.insert((fi, ai), slot as u64 + 1);
            }
        }
        for (fi, f) in self.functions.iter().enumerate() {
            for (ai, a) in f.attempts.iter().enumerate() {
                let name = if a.attempt > 1 {
                    format!("{} (attempt {})", f.function, a.attempt)
                } else {
                    f.function.to_string()
                };
                let mut args = json!({
                    "function": f.function.as_str(),
                    "attempt": a.attempt,
                    "node": a.node.as_str(),
                });
                let (cat, colour) = match &a.outcome {
                    AttemptOutcome::Succeeded => ("succeeded", None),
                    AttemptOutcome::Failed { error } => {
                        args["error"] = json!(error);
                        ("failed", Some("terrible"))
                    }
                    AttemptOutcome::Cancelled => ("cancelled", Some("grey")),
                };
                args["outcome"] = json!(cat);
                if let (AttemptOutcome::Succeeded, Some(size)) = (&a.outcome, f.size) {
                    args["bytes"] = json!(size);
                }
                let mut slice = json!({
                    "ph": "X",
                    "name": name,
                    "cat": cat,
                    "pid": nodes.get(&a.node).copied().unwrap_or(0),
                    "tid": slot_of.get(&(fi, ai)).copied().unwrap_or(0),
                    "ts": a.started_micros,
                    "dur": a.finished_micros - a.started_micros,
                    "args": args,
                });
                if let Some(colour) = colour {
                    slice["cname"] = json!(colour);
                }
                events.push(slice);
            }
        }
        // Flow arrows: from the attempt that made a value to each attempt that took it on
        // another node.
        let index: BTreeMap<&str, usize> = self
            .functions
            .iter()
            .enumerate()
            .map(|(k, f)| (f.function.as_str(), k))
            .collect();
        let mut flow = 0_u64;
        for (fi, f) in self.functions.iter().enumerate() {
            for input in &f.inputs {
                let Some(&pi) = index.get(input.as_str()) else {
                    continue;
                };
                let producer = &self.functions[pi];
                let Some(pa) = producer
                    .attempts
                    .iter()
                    .rposition(|a| a.outcome == AttemptOutcome::Succeeded)
                else {
                    continue;
                };
                let made = &producer.attempts[pa];
                for (ai, a) in f.attempts.iter().enumerate() {
                    if a.node == made.node || a.started_micros < made.finished_micros {
                        continue;
                    }
                    flow += 1;
                    let name = format!("{input} → {}", f.function);
                    let mut args = json!({ "value": input.as_str() });
                    if let Some(size) = producer.size {
                        args["bytes"] = json!(size);
                    }
                    events.push(json!({
                        "ph": "s", "id": flow, "name": name, "cat": "fetch",
                        "pid": nodes.get(&made.node).copied().unwrap_or(0),
                        "tid": slot_of.get(&(pi, pa)).copied().unwrap_or(0),
                        "ts": made.started_micros,
                        "args": args,
                    }));
                    events.push(json!({
                        "ph": "f", "bp": "e", "id": flow, "name": name, "cat": "fetch",
                        "pid": nodes.get(&a.node).copied().unwrap_or(0),
                        "tid": slot_of.get(&(fi, ai)).copied().unwrap_or(0),
                        "ts": a.started_micros,
                    }));
                }
            }
        }
        json!({
            "traceEvents": events,
            "displayTimeUnit": "ms",
            "otherData": {
                "dag": self.dag.as_str(),
                "ok": self.ok,
                "started_at_micros": self.started_at_micros,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use handoff_core::{DagId, FunctionId, NodeId};
    use serde_json::Value as Json;

    use crate::report::{
        AttemptOutcome, AttemptReport, ExecutionReport, FunctionReport, NodeUsage,
    };

    fn function(id: &str, inputs: &[&str], attempts: Vec<AttemptReport>) -> FunctionReport {
        FunctionReport {
            function: FunctionId::new(id),
            inputs: inputs.iter().map(|&i| FunctionId::new(i)).collect(),
            node: attempts.last().map(|a| a.node.clone()),
            queued_micros: Some(0),
            started_micros: attempts.first().map(|a| a.started_micros),
            finished_micros: attempts.last().map(|a| a.finished_micros),
            succeeded: true,
            size: Some(1234),
            attempts,
        }
    }

    fn attempt(
        node: &str,
        attempt: u32,
        span: (u64, u64),
        outcome: AttemptOutcome,
    ) -> AttemptReport {
        AttemptReport {
            attempt,
            node: NodeId::new(node),
            started_micros: span.0,
            finished_micros: span.1,
            outcome,
        }
    }

    #[test]
    fn values_crossing_nodes_are_flows_between_their_slices() {
        let failed = AttemptOutcome::Failed {
            error: "boom".to_owned(),
        };
        let ok = AttemptOutcome::Succeeded;
        let functions = vec![
            function("make", &[], vec![attempt("a", 1, (0, 10), ok.clone())]),
            // Same node: no arrow.
            function(
                "near",
                &["make"],
                vec![attempt("a", 1, (10, 20), ok.clone())],
            ),
            // Another node, after a failed attempt: an arrow to each attempt there.
            function(
                "far",
                &["make"],
                vec![
                    attempt("b", 1, (12, 15), failed),
                    attempt("b", 2, (15, 30), ok.clone()),
                ],
            ),
        ];
        let usage = NodeUsage {
            attempts: 0,
            busy_micros: 0,
            peak_concurrency: 1,
            utilisation: 0.0,
        };
        let report = ExecutionReport {
            dag: DagId::new("d"),
            ok: true,
            started_at_micros: 0,
            ended_micros: 30,
            makespan_micros: 30,
            total_work_micros: 0,
            critical_path: Vec::new(),
            critical_path_micros: 0,
            functions,
            nodes: [("a", usage.clone()), ("b", usage)]
                .into_iter()
                .map(|(n, u)| (NodeId::new(n), u))
                .collect(),
            resources: BTreeMap::new(),
            node_names: BTreeMap::new(),
        };
        let trace: Json = serde_json::from_str(&report.to_chrome_trace()).expect("JSON");
        let events = trace["traceEvents"].as_array().expect("events");
        let of = |ph: &str| -> Vec<&Json> { events.iter().filter(|e| e["ph"] == ph).collect() };
        assert_eq!(of("X").len(), 4);
        let (starts, ends) = (of("s"), of("f"));
        assert_eq!((starts.len(), ends.len()), (2, 2));
        for (s, f) in starts.iter().zip(&ends) {
            assert_eq!(s["id"], f["id"]);
            assert_eq!((s["pid"].as_u64(), f["pid"].as_u64()), (Some(1), Some(2)));
            assert_eq!(s["args"]["bytes"], 1234);
            assert_eq!(f["bp"], "e");
        }
        assert_eq!(
            ends.iter().map(|f| f["ts"].as_u64()).collect::<Vec<_>>(),
            [Some(12), Some(15)]
        );
        let failed: Vec<&Json> = of("X")
            .into_iter()
            .filter(|x| x["cat"] == "failed")
            .collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0]["args"]["error"], "boom");
        assert_eq!(failed[0]["cname"], "terrible");
        let retried = of("X")
            .into_iter()
            .filter(|x| x["name"] == "far (attempt 2)")
            .count();
        assert_eq!(retried, 1);
        // Two processes named after their nodes, one slot each.
        let names: Vec<&Json> = events
            .iter()
            .filter(|e| e["name"] == "process_name")
            .map(|e| &e["args"]["name"])
            .collect();
        assert_eq!(names, [&Json::from("node a"), &Json::from("node b")]);
    }
}
