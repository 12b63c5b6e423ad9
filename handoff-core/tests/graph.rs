//! Graph export: snapshots of the DOT and Mermaid text of a fixed DAG (before and after a
//! run), and the DOT we write parsed by a DOT parser (and drawn by Graphviz's `dot` where
//! it is installed).

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

/// The ids of the node statements of a DOT source (in every subgraph, unquoted), as a
/// DOT parser written in Rust reads it: the check that needs no Graphviz install. Its
/// error when the source is not DOT.
fn parse_dot(source: &str) -> Result<Vec<String>, String> {
    use graphviz_rust::dot_structures::{Graph as Dot, Id, Stmt};
    fn unquote(id: &Id) -> String {
        match id {
            Id::Escaped(quoted) => {
                let inner = quoted
                    .strip_prefix('"')
                    .and_then(|s| s.strip_suffix('"'))
                    .unwrap_or(quoted);
                // `\"` and (as Graphviz reads ids) `\\` stand for the character after them.
                let mut out = String::with_capacity(inner.len());
                let mut chars = inner.chars();
                while let Some(c) = chars.next() {
                    match (c, chars.clone().next()) {
                        ('\\', Some(next @ ('"' | '\\'))) => {
                            out.push(next);
                            chars.next();
                        }
                        _ => out.push(c),
                    }
                }
                out
            }
            Id::Html(s) | Id::Plain(s) | Id::Anonymous(s) => s.clone(),
        }
    }
    fn walk(stmts: &[Stmt], ids: &mut Vec<String>) {
        for stmt in stmts {
            match stmt {
                Stmt::Node(node) => ids.push(unquote(&node.id.0)),
                Stmt::Subgraph(sub) => walk(&sub.stmts, ids),
                _ => {}
            }
        }
    }
    let graph = graphviz_rust::parse(source)?;
    let Dot::DiGraph { stmts, .. } = graph else {
        return Err("not a digraph".to_owned());
    };
    let mut ids = Vec::new();
    walk(&stmts, &mut ids);
    Ok(ids)
}

/// Runs Graphviz's `dot -Tsvg` on `source`: its SVG, what `dot` said, or `None` when
/// Graphviz is not installed (the parser above checks the syntax without it).
fn render(source: &str) -> Option<Result<String, String>> {
    let mut child = match Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Err(format!("cannot run Graphviz's `dot`: {e}"))),
    };
    let run = move || {
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
    };
    Some(run())
}

#[test]
fn the_output_is_valid_dot() {
    let dag = fixed();
    for source in [Graph::new(&dag).to_dot(), after_run(&dag).to_dot()] {
        let ids = parse_dot(&source).unwrap_or_else(|e| panic!("not DOT:\n{source}\n{e}"));
        for f in dag.functions() {
            assert!(ids.iter().any(|id| id == f.id().as_str()), "{ids:?}");
        }
        // Where Graphviz is installed, it draws it too.
        if let Some(svg) = render(&source) {
            let svg = svg.unwrap_or_else(|e| panic!("dot refused:\n{source}\n{e}"));
            assert!(svg.contains("<svg"), "{svg}");
            for f in dag.functions() {
                assert!(svg.contains(&format!("<title>{}</title>", f.id())), "{svg}");
            }
        }
    }
    // Ids and labels that need quoting.
    let odd = Dag::with_id("odd \"one\"")
        .with(Function::new("a \"b\" \\ c", "x{y}").extra_arg(1_i64))
        .with(Function::new("d;e -> f", "z").arg("a \"b\" \\ c"))
        .validate()
        .expect("a valid DAG");
    let source = Graph::new(&odd).to_dot();
    let ids = parse_dot(&source).unwrap_or_else(|e| panic!("not DOT:\n{source}\n{e}"));
    assert!(ids.iter().any(|id| id == "d;e -> f"), "{ids:?}");
    assert!(ids.iter().any(|id| id == "a \"b\" \\ c"), "{ids:?}");
    if let Some(svg) = render(&source) {
        svg.unwrap_or_else(|e| panic!("dot refused:\n{source}\n{e}"));
    }
}

/// The check above can fail: the parser refuses DOT broken the ways a writer could
/// break it (a quote left unescaped, a brace or a bracket left open, a bare arrow).
#[test]
fn malformed_dot_is_refused() {
    let good = Graph::new(&fixed()).to_dot();
    assert!(parse_dot(&good).is_ok());
    let broken = [
        good.replacen("\"source\" [", "\"sou\"rce\" [", 1),
        good.trim_end().trim_end_matches('}').to_owned(),
        good.replacen("];", ";", 1),
        good.replacen("\"source\" -> \"transform\";", "\"source\" -> ;", 1),
        "graph { a -> b }".to_owned(),
    ];
    for source in broken {
        assert_ne!(source, good);
        assert!(parse_dot(&source).is_err(), "accepted:\n{source}");
    }
}
