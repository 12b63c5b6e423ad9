//! Pictures of a DAG: Graphviz DOT and Mermaid text, before a run (functions,
//! dependencies, costs, placements) and after (coloured by node, failures marked,
//! durations). Pure text; render DOT with `dot -Tsvg`, paste Mermaid into Markdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::dag::ValidatedDag;
use crate::function::Placement;
use crate::ids::NodeId;

/// What one function did in a run, for [`Graph::ran`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRun {
    /// The node its last attempt ran on.
    pub node: NodeId,
    /// How long its attempts ran, all together.
    pub duration: Duration,
    /// How many attempts it took.
    pub attempts: u32,
    /// Whether it ended without a value (its last attempt failed or was cancelled).
    pub failed: bool,
}

/// Fill colours given to nodes, in the order of their names (cycled beyond eight).
const PALETTE: [&str; 8] = [
    "#a6cee3", "#b2df8a", "#fdbf6f", "#cab2d6", "#ffff99", "#fb9a99", "#8dd3c7", "#d9d9d9",
];

/// A DAG to draw, with what each function did when it has run.
///
/// ```
/// # mod handoff { pub use handoff_core::*; }
/// use handoff::{Dag, Function, Graph, Resources};
///
/// let dag = Dag::with_id("demo")
///     .with(Function::new("source", "identity").extra_arg(1_i64))
///     .with(Function::new("sink", "double").arg("source").with_cost(Resources::new().cpu(2)))
///     .validate()?;
/// let dot = Graph::new(&dag).to_dot();
/// assert!(dot.contains("\"source\" -> \"sink\""));
/// let mermaid = Graph::new(&dag).to_mermaid();
/// assert!(mermaid.starts_with("flowchart TD"));
/// # Ok::<(), handoff_core::ValidationError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Graph<'a> {
    dag: &'a ValidatedDag,
    runs: Vec<Option<FunctionRun>>,
    names: BTreeMap<NodeId, String>,
}

impl<'a> Graph<'a> {
    /// The DAG as it is before running.
    pub fn new(dag: &'a ValidatedDag) -> Self {
        Graph {
            dag,
            runs: vec![None; dag.len()],
            names: BTreeMap::new(),
        }
    }

    /// Shows nodes by these names (the ones their operators gave them) instead of their
    /// ids, with the end of the id where two share a name ([`node_label`]).
    pub fn node_names(mut self, names: BTreeMap<NodeId, String>) -> Self {
        self.names = names;
        self
    }

    /// How `node` is shown.
    fn node(&self, node: &NodeId) -> String {
        node_label(node, &self.names)
    }

    /// Records what function `id` did; an id that is not in the DAG is ignored.
    pub fn ran(mut self, id: &str, run: FunctionRun) -> Self {
        if let Some(i) = self.dag.index_of(id) {
            self.runs[i] = Some(run);
        }
        self
    }

    /// The nodes that ran something, sorted, each with its fill colour.
    fn colours(&self) -> BTreeMap<&NodeId, &'static str> {
        let mut nodes: BTreeMap<&NodeId, &'static str> =
            self.runs.iter().flatten().map(|r| (&r.node, "")).collect();
        for (k, colour) in nodes.values_mut().enumerate() {
            *colour = PALETTE[k % PALETTE.len()];
        }
        nodes
    }

    /// The lines of a function's label: id, code, cost, placement, then what it did.
    fn label(&self, i: usize) -> Vec<String> {
        let f = self.dag.function(i);
        let mut lines = vec![f.id().to_string()];
        let mut code = f.code().to_string();
        if f.is_inline() {
            code.push_str(" (inline)");
        }
        lines.push(code);
        if let Some(cost) = f.cost().filter(|c| !c.is_empty()) {
            let cost: Vec<String> = cost.iter().map(|(n, a)| format!("{n}={a}")).collect();
            lines.push(cost.join(" "));
        }
        match f.placement() {
            Placement::Any => {}
            Placement::Pinned(node) => lines.push(format!("pinned to {}", self.node(node))),
            Placement::Collocated(with) => lines.push(format!("with {with}")),
        }
        if let Some(run) = &self.runs[i] {
            let mut line = format!(
                "{} on {}",
                format_duration(run.duration),
                self.node(&run.node)
            );
            if run.attempts > 1 {
                let _ = write!(line, ", {} attempts", run.attempts);
            }
            if run.failed {
                line.push_str(", FAILED");
            }
            lines.push(line);
        }
        lines
    }

    /// The DAG in Graphviz DOT: one box per function (dashed for inline ones), an edge
    /// per argument; after a run, filled with its node's colour (with a legend), failed
    /// functions drawn in red with a double border.
    pub fn to_dot(&self) -> String {
        let colours = self.colours();
        let mut out = String::new();
        let _ = writeln!(out, "digraph {} {{", dot_quote(self.dag.id().as_str()));
        out.push_str("    rankdir=TB;\n");
        out.push_str("    node [shape=box, style=\"rounded\", fontname=\"Helvetica\"];\n");
        out.push_str("    edge [color=\"#555555\"];\n");
        for i in 0..self.dag.len() {
            let f = self.dag.function(i);
            let label = self.label(i).join("\\n");
            let mut attrs = vec![format!("label={}", dot_quote_label(&label))];
            let mut style = vec!["rounded"];
            if f.is_inline() {
                style.push("dashed");
            }
            if let Some(run) = &self.runs[i] {
                style.push("filled");
                if let Some(colour) = colours.get(&run.node) {
                    attrs.push(format!("fillcolor=\"{colour}\""));
                }
                if run.failed {
                    attrs.push("color=\"#d62728\", penwidth=2, peripheries=2".to_owned());
                }
            }
            attrs.insert(1, format!("style=\"{}\"", style.join(",")));
            let _ = writeln!(
                out,
                "    {} [{}];",
                dot_quote(f.id().as_str()),
                attrs.join(", ")
            );
        }
        for i in 0..self.dag.len() {
            let to = self.dag.function(i).id();
            for &a in self.dag.args(i) {
                let from = self.dag.function(a as usize).id();
                let _ = writeln!(
                    out,
                    "    {} -> {};",
                    dot_quote(from.as_str()),
                    dot_quote(to.as_str())
                );
            }
        }
        if !colours.is_empty() {
            out.push_str("    subgraph cluster_legend {\n        label=\"nodes\";\n");
            for (k, (node, colour)) in colours.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "        \"legend {k}\" [label={}, style=\"filled\", fillcolor=\"{colour}\"];",
                    dot_quote(&self.node(node))
                );
            }
            out.push_str("    }\n");
        }
        out.push_str("}\n");
        out
    }

    /// The DAG as a Mermaid flowchart: one node per function (ids numbered `f0`, `f1`,
    /// … in the DAG's order, labels quoted), an edge per argument; after a run, a class
    /// per cluster node with its fill colour, and a `failed` class.
    pub fn to_mermaid(&self) -> String {
        let colours = self.colours();
        let index: BTreeMap<&NodeId, usize> =
            colours.keys().enumerate().map(|(k, n)| (*n, k)).collect();
        let mut out = String::from("flowchart TD\n");
        for i in 0..self.dag.len() {
            let label = self
                .label(i)
                .iter()
                .map(|l| mermaid_escape(l))
                .collect::<Vec<_>>()
                .join("<br/>");
            let (open, close) = if self.dag.function(i).is_inline() {
                ("([", "])")
            } else {
                ("[", "]")
            };
            let _ = writeln!(out, "    f{i}{open}\"{label}\"{close}");
        }
        for i in 0..self.dag.len() {
            for &a in self.dag.args(i) {
                let _ = writeln!(out, "    f{a} --> f{i}");
            }
        }
        for (node, colour) in &colours {
            let _ = writeln!(
                out,
                "    classDef node{} fill:{colour},stroke:#333333",
                index[node]
            );
        }
        if self.runs.iter().flatten().any(|r| r.failed) {
            out.push_str("    classDef failed stroke:#d62728,stroke-width:3px\n");
        }
        for (i, run) in self.runs.iter().enumerate() {
            if let Some(run) = run {
                let _ = writeln!(out, "    class f{i} node{}", index[&run.node]);
                if run.failed {
                    let _ = writeln!(out, "    class f{i} failed");
                }
            }
        }
        out
    }
}

/// `1.234 s`, `12.3 ms`, `45 µs`.
pub(crate) fn format_duration(d: Duration) -> String {
    let micros = d.as_micros();
    if micros >= 1_000_000 {
        format!("{:.3} s", d.as_secs_f64())
    } else if micros >= 1_000 {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{micros} µs")
    }
}

/// A DOT identifier: always quoted, `"` and `\` escaped.
fn dot_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A DOT label whose `\n` separators are kept as line breaks (the lines themselves
/// escaped).
fn dot_quote_label(label: &str) -> String {
    let lines: Vec<String> = label
        .split("\\n")
        .map(|l| {
            let q = dot_quote(l);
            q[1..q.len() - 1].to_owned()
        })
        .collect();
    format!("\"{}\"", lines.join("\\n"))
}

/// Mermaid label text: quotes and markup characters as HTML entities.
fn mermaid_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '#' => out.push_str("#35;"),
            _ => out.push(c),
        }
    }
    out
}

/// How a node is shown to people: its name when `names` has one, followed by the last six
/// characters of its id when another node in `names` has the same name; else its id.
///
/// ```
/// # mod handoff { pub use handoff_core::*; }
/// use std::collections::BTreeMap;
/// use handoff::{NodeId, node_label};
/// let names = BTreeMap::from([
///     (NodeId::new("12D3KooWaaaaaa"), "gpu".to_owned()),
///     (NodeId::new("12D3KooWbbbbbb"), "cpu".to_owned()),
///     (NodeId::new("12D3KooWcccccc"), "cpu".to_owned()),
/// ]);
/// assert_eq!(node_label(&NodeId::new("12D3KooWaaaaaa"), &names), "gpu");
/// assert_eq!(node_label(&NodeId::new("12D3KooWcccccc"), &names), "cpu (…cccccc)");
/// assert_eq!(node_label(&NodeId::new("local"), &names), "local");
/// ```
pub fn node_label(node: &NodeId, names: &BTreeMap<NodeId, String>) -> String {
    let Some(name) = names.get(node) else {
        return node.to_string();
    };
    if names.iter().filter(|(_, n)| *n == name).count() > 1 {
        let id = node.as_str();
        let tail = id
            .char_indices()
            .rev()
            .nth(5)
            .map_or(id, |(at, _)| &id[at..]);
        format!("{name} (…{tail})")
    } else {
        name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dag, Function, Resources};

    fn sample() -> ValidatedDag {
        Dag::with_id("sample")
            .with(Function::new("source", "parse").extra_arg("42".to_owned()))
            .with(
                Function::new("transform", "multiply")
                    .arg("source")
                    .extra_arg(2_i64)
                    .with_cost(Resources::new().cpu(2).memory(1000)),
            )
            .with(
                Function::new("offset", "identity")
                    .extra_arg(1_i64)
                    .inline(),
            )
            .with(
                Function::new("sink \"quoted\"", "format")
                    .args(["transform", "offset"])
                    .pinned("node-a"),
            )
            .validate()
            .expect("a valid DAG")
    }

    #[test]
    fn every_function_and_argument_is_drawn() {
        let dag = sample();
        let dot = Graph::new(&dag).to_dot();
        for f in dag.functions() {
            assert!(dot.contains(&dot_quote(f.id().as_str())), "{}", f.id());
        }
        assert_eq!(dot.matches(" -> ").count(), 3);
        assert!(dot.contains("cpu=2 memory=1000"));
        assert!(dot.contains("pinned to node-a"));
        assert!(dot.contains(r#""sink \"quoted\"""#));
        let mermaid = Graph::new(&dag).to_mermaid();
        assert_eq!(mermaid.matches(" --> ").count(), 3);
        assert!(mermaid.contains("sink #quot;quoted#quot;"));
    }

    #[test]
    fn a_run_colours_by_node_and_marks_failures() {
        let dag = sample();
        let run = |node: &str, failed| FunctionRun {
            node: NodeId::new(node),
            duration: Duration::from_millis(12),
            attempts: if failed { 2 } else { 1 },
            failed,
        };
        let graph = Graph::new(&dag)
            .ran("source", run("node-b", false))
            .ran("transform", run("node-a", true))
            .ran("not there", run("node-c", false));
        let dot = graph.to_dot();
        assert_eq!(dot.matches("fillcolor=\"#a6cee3\"").count(), 2); // node-a + legend
        assert_eq!(dot.matches("fillcolor=\"#b2df8a\"").count(), 2); // node-b + legend
        assert!(!dot.contains("node-c"));
        assert!(dot.contains("12.0 ms on node-a, 2 attempts, FAILED"));
        let mermaid = graph.to_mermaid();
        let (source, transform) = (dag.index_of("source"), dag.index_of("transform"));
        let (source, transform) = (source.expect("source"), transform.expect("transform"));
        assert!(mermaid.contains(&format!(
            "class f{transform} node0\n    class f{transform} failed"
        )));
        assert!(mermaid.contains(&format!("class f{source} node1\n")));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(Duration::from_micros(45)), "45 µs");
        assert_eq!(format_duration(Duration::from_micros(12_345)), "12.3 ms");
        assert_eq!(format_duration(Duration::from_millis(1234)), "1.234 s");
    }
}
