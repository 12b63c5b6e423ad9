//! Graph export: snapshots of the DOT and Mermaid text of a fixed DAG (before and after a
//! run), and Graphviz's `dot` accepting what we write.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use handoff_core::{Dag, Function, FunctionRun, Graph, NodeId, Resources, ValidatedDag};

/// The README's example DAG, plus an inline constant and a pinned consumer.
fn fixed() -> ValidatedDag {
    Dag::with_id("readme")
        .with(
            Function::new("source", "parse")
                .extra_arg("42".to_owned())
                .max_retries(0),
        )
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
        .with(Function::new("sink", "format").arg("transform"))
        .with(
            Function::new("audit", "log")
                .args(["transform", "offset"])
                .pinned("node-b"),
        )
        .validate()
        .expect("a valid DAG")
}

fn after_run(dag: &ValidatedDag) -> Graph<'_> {
    let run = |node: &str, ms, attempts, failed| FunctionRun {
        node: NodeId::new(node),
        duration: Duration::from_millis(ms),
        attempts,
        failed,
    };
    Graph::new(dag)
        .ran("source", run("node-a", 3, 1, false))
        .ran("transform", run("node-a", 120, 2, false))
        .ran("sink", run("node-a", 1, 1, false))
        .ran("audit", run("node-b", 40, 1, true))
}

#[test]
fn dot_before_running() {
    insta::assert_snapshot!(Graph::new(&fixed()).to_dot());
}

#[test]
fn mermaid_before_running() {
    insta::assert_snapshot!(Graph::new(&fixed()).to_mermaid());
}

#[test]
fn dot_after_a_run() {
    let dag = fixed();
    insta::assert_snapshot!(after_run(&dag).to_dot());
}

#[test]
fn mermaid_after_a_run() {
    let dag = fixed();
    insta::assert_snapshot!(after_run(&dag).to_mermaid());
}

/// Runs `dot -Tsvg` on `source`; its SVG, or what `dot` said.
fn render(source: &str) -> Result<String, String> {
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run Graphviz's `dot` (install graphviz): {e}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(source.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() || !out.stderr.is_empty() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}

#[test]
fn dot_accepts_the_output() {
    let dag = fixed();
    for source in [Graph::new(&dag).to_dot(), after_run(&dag).to_dot()] {
        let svg = render(&source).unwrap_or_else(|e| panic!("dot refused:\n{source}\n{e}"));
        assert!(svg.contains("<svg"), "{svg}");
        for f in dag.functions() {
            assert!(svg.contains(&format!("<title>{}</title>", f.id())), "{svg}");
        }
    }
    // Ids and labels that need quoting.
    let odd = Dag::with_id("odd \"one\"")
        .with(Function::new("a \"b\" \\ c", "x{y}").extra_arg(1_i64))
        .with(Function::new("d;e -> f", "z").arg("a \"b\" \\ c"))
        .validate()
        .expect("a valid DAG");
    let source = Graph::new(&odd).to_dot();
    render(&source).unwrap_or_else(|e| panic!("dot refused:\n{source}\n{e}"));
}
