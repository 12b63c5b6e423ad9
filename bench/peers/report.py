#!/usr/bin/env python3
"""Writes the side-by-side section of BENCHMARKS.md from the `json {...}` lines of
`cargo bench --bench workloads`, `cargo bench --bench cluster` and `peers.py`.

The section is the text between `<!-- peers:begin -->` and `<!-- peers:end -->`; it is
replaced, or appended when the file has no such markers. Rows are matched by name:
Handoff's local rows (benches/workloads.rs) make one table each; a peer row with the
same name goes into that table; a row whose name starts with a table's name followed by
a space (`fanout 10000 + sum +events`, or a cluster row named `chain 1000 across 2
nodes`) is shown in that table as a variant; `big N ...` rows share one table whatever
N; anything else (new workloads, cluster measurements that match no local workload)
is listed in a table of its own, so that new rows never break the report. Unknown JSON
fields are ignored. The costed workloads' rows (`costed fanout N uncosted|cpu1|cpu0.5`,
`mixed layers DxW`, `wide behind N narrow`) share one table, per function, with each
system's ratio to its own uncosted fanout and the target "costed fanout ≥ 300× Ray's".

Usage: report.py --workloads LOG --cluster LOG --peers LOG --into BENCHMARKS.md
       [--results OUT.jsonl] [--rustc VERSION] [--command CMD] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

BEGIN = "<!-- peers:begin -->"
END = "<!-- peers:end -->"
PEERS = ("dask-threaded", "dask-distributed", "ray")
REMOTE_PEERS = ("dask-distributed", "ray")
LOCAL = "handoff"
REMOTE = "handoff (2 nodes)"
# Cluster rows that measure what a local workload measures, under another name.
ALIASES = {"one remote trivial function (round trip)": "single function"}
# The costed workloads of benches/workloads.rs (`costed`), shown in a table of their own.
COSTED_RE = re.compile(
    r"^(costed fanout (\d+) (uncosted|cpu[\d.]+)|mixed layers \d+x\d+|wide behind \d+ narrow)$"
)
# The target: Handoff's costed fanout at least this many times faster than Ray's.
COSTED_TARGET = 300


def json_lines(path: str | None) -> list[dict[str, Any]]:
    """The objects of the `json {...}` lines of a log (none when it is missing)."""
    if not path or not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("json "):
                continue
            try:
                row = json.loads(line[5:])
            except ValueError:
                print(
                    f"report: skipped a line that is not JSON: {line.strip()[:120]}",
                    file=sys.stderr,
                )
                continue
            if isinstance(row, dict) and "name" in row:
                rows.append(row)
    return rows


def num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def fmt_s(s: Any) -> str:
    s = num(s)
    if s is None:
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def fmt_ratio(r: float | None) -> str:
    if r is None:
        return "—"
    if r >= 100:
        return f"{r:,.0f}×"
    if r >= 10:
        return f"{r:.1f}×"
    return f"{r:.2f}×"


def fmt_per_unit(row: dict[str, Any]) -> str:
    value, unit = num(row.get("per_unit")), row.get("unit")
    if value is None or not isinstance(unit, str):
        return "—"
    if unit.startswith("s/"):
        # The cluster bench reports seconds per unit.
        value, unit = value * 1e6, "µs/" + unit[2:]
    if unit == "s":
        return fmt_s(value)
    if unit.startswith("µs/") and value >= 1000:
        value, unit = value / 1000, "ms/" + unit[3:]
    if unit == "x ideal":
        return f"{value:.3f} × ideal"
    return f"{value:,.2f} {unit}" if value < 1000 else f"{value:,.0f} {unit}"


def fmt_bytes(b: Any) -> str:
    b = num(b)
    return "—" if b is None else f"{b / 2**20:,.0f} MiB"


def ratio(
    peer: dict[str, Any] | None, base: dict[str, Any] | None, key: str = "median_s"
) -> float | None:
    """How many times the peer's figure is Handoff's (above 1: Handoff is faster)."""
    if not peer or not base:
        return None
    p, b = num(peer.get(key)), num(base.get(key))
    if p is None or b is None or b <= 0:
        return None
    return p / b


@dataclass
class Table:
    """One workload: Handoff's row, the peers' rows, variants."""

    name: str
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    variants: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def label(row: dict[str, Any]) -> str:
    return row.get("system") or LOCAL


def build_tables(local: list, cluster: list, peers: list) -> tuple[list[Table], Table, list, list]:
    """Tables of ordinary workloads, the `big` table, cluster rows that match no
    workload, peer start-up rows."""
    tables: dict[str, Table] = {}
    big = Table("big")
    big_re = re.compile(r"^big \d+ ")

    def table_for(name: str) -> tuple[Table | None, str]:
        """The table a row belongs to and the row's suffix ("" when it is the base)."""
        if name in tables:
            return tables[name], ""
        for t in sorted(tables.values(), key=lambda t: -len(t.name)):
            if name.startswith(t.name + " "):
                return t, name[len(t.name) + 1 :]
        return None, name

    for row in local:
        name = row["name"]
        if big_re.match(name):
            big.variants.append((LOCAL, row))
            continue
        t, suffix = table_for(name)
        if t is None:
            tables[name] = Table(name, {LOCAL: row})
        else:
            t.variants.append((f"{LOCAL} ({suffix})", row))
    startups = []
    for row in peers:
        name, system = row["name"], label(row)
        if name == "versions":
            continue
        if name == "startup":
            startups.append(row)
        elif big_re.match(name):
            big.variants.append((system, row))
        else:
            t, suffix = table_for(name)
            if t is None:
                t = tables.setdefault(name, Table(name))
            if suffix:
                t.variants.append((f"{system} ({suffix})", row))
            else:
                t.rows[system] = row
    unmatched = []
    for row in cluster:
        name = ALIASES.get(row["name"], row["name"])
        t, suffix = table_for(name)
        if t is None:
            unmatched.append(row)
        elif REMOTE not in t.rows:
            t.rows[REMOTE] = {**row, "shown_name": row["name"]}
        else:
            t.variants.append((f"{REMOTE} ({suffix or row['name']})", row))
    return list(tables.values()), big, unmatched, startups


def cell_time(row: dict[str, Any], key: str) -> str:
    if row.get("status") and row.get("status") != "ok":
        return "—"
    return fmt_s(row.get(key))


def status_note(row: dict[str, Any]) -> str:
    if row.get("status") and row.get("status") != "ok":
        return f"**{row.get('error') or row['status']}**"
    return ""


def fastest_peer(t: Table) -> tuple[str, dict[str, Any]] | None:
    done = [(s, r) for s, r in t.rows.items() if s in PEERS and num(r.get("median_s")) is not None]
    return min(done, key=lambda sr: sr[1]["median_s"]) if done else None


def workload_table(t: Table) -> list[str]:
    base, remote = t.rows.get(LOCAL), t.rows.get(REMOTE)
    head = "| system | median | min | max | per unit | runs | ÷ Handoff (1 node) |"
    sep = "|---|---|---|---|---|---|---|"
    if remote:
        head += " ÷ Handoff (2 nodes) |"
        sep += "---|"
    out = [f"### {t.name}", "", head, sep]
    order = [LOCAL, REMOTE, *PEERS] + sorted(s for s in t.rows if s not in (LOCAL, REMOTE, *PEERS))
    for system in order:
        row = t.rows.get(system)
        if row is None:
            continue
        shown = system if system != REMOTE else f"{REMOTE}: {row.get('shown_name', row['name'])}"
        note = status_note(row)
        cells = [
            shown,
            note or cell_time(row, "median_s"),
            cell_time(row, "min_s"),
            cell_time(row, "max_s"),
            fmt_per_unit(row) if not note else "—",
            str(row.get("runs", "—")),
            fmt_ratio(ratio(row, base)) if system not in (LOCAL,) else "1",
        ]
        if remote:
            cells.append(fmt_ratio(ratio(row, remote)) if system in REMOTE_PEERS else "")
        out.append("| " + " | ".join(cells) + " |")
    for shown, row in t.variants:
        cells = [
            shown,
            cell_time(row, "median_s"),
            cell_time(row, "min_s"),
            cell_time(row, "max_s"),
            fmt_per_unit(row),
            str(row.get("runs", "—")),
            "",
        ]
        if remote:
            cells.append("")
        out.append("| " + " | ".join(cells) + " |")
    best = fastest_peer(t)
    if base and best:
        out += [
            "",
            f"Fastest peer: {best[0]}, {fmt_ratio(ratio(best[1], base))} Handoff's median"
            + (
                f" ({fmt_ratio(ratio(best[1], remote))} Handoff's across 2 nodes)."
                if remote
                else "."
            ),
        ]
    return out + [""]


def big_table(big: Table) -> list[str]:
    if not big.variants:
        return []
    handoff_exec = next(
        (r for s, r in big.variants if s == LOCAL and r["name"].endswith(" execute")), None
    )
    out = [
        "### big: a layered DAG (√n layers of √n, each function taking 2 of the layer above)",
        "",
        "| system | functions | step | time | per function | peak RSS | bytes/function at peak | per function ÷ Handoff's execution |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for system, row in big.variants:
        m = re.match(r"^big (\d+) (.*)$", row["name"])
        functions = row.get("functions") or (int(m.group(1)) if m else None)
        step = m.group(2) if m else row["name"]
        note = status_note(row)
        per_fn = fmt_per_unit(row) if not note else "—"
        r = None if system == LOCAL else ratio(row, handoff_exec, "per_unit")
        peak = row.get("peak_rss_bytes")
        cells = [
            system,
            f"{functions:,}" if isinstance(functions, int) else "—",
            step,
            note or fmt_s(row.get("median_s")),
            per_fn,
            fmt_bytes(peak) if peak is not None else "",
            f"{row['bytes_per_function']:,}"
            if isinstance(row.get("bytes_per_function"), int)
            else "",
            fmt_ratio(r) if system != LOCAL else "",
        ]
        out.append("| " + " | ".join(cells) + " |")
    out += [
        "",
        "Handoff's peak RSS is its one process's (`VmHWM`): on the allocate row, the peak "
        "through building, validating and allocating; on the execute row, the peak of the "
        "whole workload. A peer's is the most resident "
        "memory seen at once, summed over the driver and every process it started "
        "(workers, Ray's raylet and GCS), sampled every 100 ms; bytes/function are above "
        "the same measure just before the DAG was built. Peers compute only the last "
        "layer's results (intermediate ones are freed as they go); Handoff keeps every "
        "result until the execution's reply.",
        "",
    ]
    return out


def costed_cell(row: dict[str, Any] | None) -> str:
    """Median, time per function, the ratio to the same system's uncosted fanout, the
    wide function's wait."""
    if row is None:
        return ""
    note = status_note(row)
    if note:
        return note
    text = f"{fmt_s(row.get('median_s'))}, {fmt_per_unit(row)}"
    x = num(row.get("x_uncosted"))
    if x is not None:
        text += f" ({x:.2f}× uncosted)"
    wait = num(row.get("wide_wait_s"))
    if wait is not None:
        text += f"; wide started after {fmt_s(wait)}"
    return text


def costed_section(tables: list[Table]) -> list[str]:
    """One table for the costed workloads, and the target against Ray."""
    if not tables:
        return []
    peers = [p for p in REMOTE_PEERS if any(p in t.rows for t in tables)]
    head = "| workload | Handoff (1 node) | " + " | ".join(peers)
    head += " | " + " | ".join(f"{p} ÷ Handoff" for p in peers) + " |"
    out = [
        "### Costed work (resources)",
        "",
        head,
        "|---|---|" + "---|" * (2 * len(peers)),
    ]
    checked: list[tuple[str, float]] = []
    for t in tables:
        base = t.rows.get(LOCAL)
        cells = [t.name, costed_cell(base)]
        cells += [costed_cell(t.rows.get(p)) for p in peers]
        cells += [fmt_ratio(ratio(t.rows.get(p), base)) if base else "" for p in peers]
        out.append("| " + " | ".join(cells) + " |")
        m = COSTED_RE.match(t.name)
        if m and m.group(3) and m.group(3) != "uncosted":
            r = ratio(t.rows.get("ray"), base)
            if r is not None:
                checked.append((t.name, r))
    out += [
        "",
        "Per function: the median over the number of functions in the DAG (the fanouts' "
        "sum and the wide row's gate and wide function included). `× uncosted`: the "
        "costed row's time per function over the uncosted fanout of the same size, same "
        "system, same run. "
        "Handoff's node holds `cpu: 2, memory: 1000`; Ray asks `num_cpus` (and `memory`) "
        "of `ray.init(num_cpus=2, _memory=1000)`; dask-distributed asks "
        '`resources={"CPU": ...}` of 2 workers of CPU 1 (fanouts) or of one worker of 2 '
        'threads and `{"CPU": 2, "MEMORY": 1000}` (mixed layers, wide: a `cpu: 2` task '
        "needs one worker holding it); dask-threaded has no resources (not run). Ray's "
        "plain tasks already ask for 1 cpu, and Dask queues unrestricted root tasks on its "
        "scheduler but sends restricted ones at once (its costed fanout can beat its "
        "uncosted one). See `bench/peers/peers.py` for what differs from the Rust harness.",
        "",
    ]
    if checked:
        low = min(checked, key=lambda c: c[1])
        met = "met" if low[1] >= COSTED_TARGET else "not met"
        each = ", ".join(f"{name[len('costed fanout ') :]}: {fmt_ratio(r)}" for name, r in checked)
        out += [
            f"Target \"costed fanout ≥ {COSTED_TARGET}× Ray's\" (Ray's median over Handoff's, "
            f"every size and cost both ran): **{met}** (lowest {fmt_ratio(low[1])}; {each}).",
            "",
        ]
    else:
        out += [
            f'Target "costed fanout ≥ {COSTED_TARGET}× Ray\'s": not measured (no costed '
            "fanout of the same size from both Handoff and Ray).",
            "",
        ]
    return out


def summary_table(tables: list[Table], big: Table) -> list[str]:
    out = [
        "| workload | Handoff (1 node) | Handoff (2 nodes) | dask-threaded | dask-distributed | ray | fastest peer ÷ Handoff |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in tables:
        base = t.rows.get(LOCAL)
        if base is None:
            continue

        def cell(system: str, t: Table = t) -> str:
            row = t.rows.get(system)
            if row is None:
                return ""
            note = status_note(row)
            return note or fmt_s(row.get("median_s"))

        best = fastest_peer(t)
        r = f"{fmt_ratio(ratio(best[1], base))} ({best[0]})" if best else "—"
        out.append(
            f"| {t.name} | {cell(LOCAL)} | {cell(REMOTE)} | {cell('dask-threaded')} | "
            f"{cell('dask-distributed')} | {cell('ray')} | {r} |"
        )
    execs = {s: r for s, r in big.variants if r["name"].endswith(" execute")}
    if LOCAL in execs:
        base = execs[LOCAL]

        def per_fn(system: str) -> str:
            row = execs.get(system)
            if row is None:
                return ""
            return status_note(row) or f"{fmt_per_unit(row)} ({row.get('functions', '?'):,} fns)"

        done = [
            (s, r) for s, r in execs.items() if s in PEERS and num(r.get("per_unit")) is not None
        ]
        best = min(done, key=lambda sr: sr[1]["per_unit"]) if done else None
        r = f"{fmt_ratio(ratio(best[1], base, 'per_unit'))} ({best[0]})" if best else "—"
        out.append(
            f"| big, execution per function | {per_fn(LOCAL)} |  | {per_fn('dask-threaded')} | "
            f"{per_fn('dask-distributed')} | {per_fn('ray')} | {r} |"
        )
    return out + [""]


def machine() -> str:
    model = "unknown CPU"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kb = int(next(x for x in f if x.startswith("MemTotal:")).split()[1])
            mem = f", {kb / 2**20:.0f} GiB memory"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{model}, {os.cpu_count()} cores{mem}, {platform.system()}"


def section(args: argparse.Namespace, local: list, cluster: list, peers: list) -> str:
    tables, big, unmatched, startups = build_tables(local, cluster, peers)
    costed = [t for t in tables if COSTED_RE.match(t.name)]
    tables = [t for t in tables if not COSTED_RE.match(t.name)]
    versions = next((r for r in peers if r.get("name") == "versions"), {})
    # When the run ended: the peers' log was written last (now, when there is none).
    ended = os.path.getmtime(args.peers) if args.peers and os.path.exists(args.peers) else None
    now = datetime.datetime.fromtimestamp(
        ended if ended is not None else datetime.datetime.now().timestamp(), datetime.timezone.utc
    ).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        BEGIN,
        "## Side by side with Dask and Ray",
        "",
        "<!-- Written by bench/peers/report.py: re-run the command below rather than editing by hand. -->",
        "",
        f"Command: `{args.command}`"
        + (" (**quick mode: tiny sizes, one run, figures meaningless**)" if args.quick else ""),
        "",
        f"Measured in one run ending {now}, back to back, on {machine()}; {args.rustc or 'rustc ?'}; "
        f"Python {versions.get('python', '?')}, dask {versions.get('dask', '?')}, "
        f"distributed {versions.get('distributed', '?')}, ray {versions.get('ray', '?')}.",
        "",
        "How each system runs the workloads (`bench/peers/peers.py` mirrors "
        "`benches/workloads.rs`: same DAGs, same functions, same result checks, median, "
        "min and max of the runs after the warm-up):",
        "",
        "- **handoff**: `cargo bench --bench workloads`, one node in the bench process; "
        "`handoff (2 nodes)`: `cargo bench --bench cluster`, two cluster nodes on 127.0.0.1 "
        "(rows whose name matches a local workload are shown in its table).",
        "- **dask-threaded**: a raw task graph (`{key: (function, *argument keys)}`) built, "
        "then computed once by the threaded scheduler, 2 threads, asking for every sink "
        "(`dask.delayed` took ten times longer for 10,000 tasks: a graph layer per call).",
        "- **dask-distributed**: `LocalCluster(n_workers=2, threads_per_worker=1, "
        "processes=True)`; futures (`client.map` for each set of independent tasks, `client.submit`, futures passed to downstream tasks, "
        "the result gathered at the end).",
        "- **ray**: `ray.init(num_cpus=2)`, remote functions, ObjectRefs passed downstream, "
        "`ray.get` at the end; sleepers with `num_cpus=1`.",
        "- **costed work** (`costed fanout`, `mixed layers`, `wide behind`): each peer's "
        "resource API (Ray's `num_cpus` / `memory`, Dask's `resources=`), on clusters "
        "holding 2 cpus like Handoff's `cpu: 2` node; their own table below.",
        "",
        "A peer's timing starts at its first submission (Ray, Dask futures) or at "
        "`dask.threaded.get` (graph built untimed, like Handoff's `Dag`) and ends when "
        "every function has run and the results asked for are back; each "
        "workload runs in a fresh process with the system started anew; cluster start-up "
        "is timed on its own below. The 10 MB buffer is made once, outside the timing "
        "(`ray.put` / `client.scatter` for the multi-process peers). `÷ Handoff` is the "
        "peer's median over Handoff's: above 1, Handoff is that many times faster.",
        "",
        "### Summary (medians)",
        "",
        *summary_table(tables, big),
    ]
    fan = next((t for t in tables if t.name.startswith("fanout") and LOCAL in t.rows), None)
    best = fastest_peer(fan) if fan else None
    if fan and best:
        r = ratio(best[1], fan.rows[LOCAL])
        met = "met" if r is not None and r >= 100 else "not met"
        lines += [
            f'Target "Handoff\'s fanout ≥ 100× the fastest peer": **{met}** '
            f"({fmt_ratio(r)}, against {best[0]}).",
            "",
        ]
    for t in tables:
        lines += workload_table(t)
    lines += costed_section(costed)
    lines += big_table(big)
    if startups:
        lines += [
            "### Cluster start-up",
            "",
            "| system | median | min | max | starts |",
            "|---|---|---|---|---|",
        ]
        for row in startups:
            lines.append(
                f"| {label(row)} | {fmt_s(row.get('median_s'))} | {fmt_s(row.get('min_s'))} | "
                f"{fmt_s(row.get('max_s'))} | {row.get('runs', '—')} |"
            )
        lines += [
            "",
            "From the start of the peer's cluster (`LocalCluster` + `Client`, `ray.init`) "
            "to a first trivial task's result, once per workload process.",
            "",
        ]
    if unmatched:
        lines += [
            "### Handoff across 2 nodes: other measurements",
            "",
            "| measurement | median | min | max | per unit |",
            "|---|---|---|---|---|",
        ]
        for row in unmatched:
            lines.append(
                f"| {row['name']} | {fmt_s(row.get('median_s'))} | {fmt_s(row.get('min_s'))} | "
                f"{fmt_s(row.get('max_s'))} | {fmt_per_unit(row)} |"
            )
        lines.append("")
    lines.append(END)
    return "\n".join(lines) + "\n"


def replace_section(path: str, text: str) -> None:
    try:
        with open(path, encoding="utf-8") as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    if BEGIN in old and END in old and old.index(BEGIN) < old.index(END):
        new = old[: old.index(BEGIN)] + text + old[old.index(END) + len(END) :].lstrip("\n")
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + text
    with open(path, "w", encoding="utf-8") as f:
        f.write(new)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", help="output of cargo bench --bench workloads")
    p.add_argument("--cluster", help="output of cargo bench --bench cluster")
    p.add_argument("--peers", help="output of peers.py")
    p.add_argument("--into", required=True, help="the Markdown file whose section is replaced")
    p.add_argument("--results", help="also write every row, with system and scope, as JSON lines")
    p.add_argument("--rustc", default="", help="rustc --version")
    p.add_argument("--command", default="bench/peers/run.sh")
    p.add_argument("--quick", action="store_true", help="mark the section as a quick run")
    args = p.parse_args()
    local = [{**r, "system": LOCAL, "scope": "1 node"} for r in json_lines(args.workloads)]
    cluster = [{**r, "system": REMOTE, "scope": "2 nodes"} for r in json_lines(args.cluster)]
    peers = json_lines(args.peers)
    if not local:
        print("report: no rows from the workloads bench", file=sys.stderr)
        return 1
    if args.results:
        with open(args.results, "w", encoding="utf-8") as f:
            for row in local + cluster + peers:
                f.write(json.dumps(row) + "\n")
    replace_section(args.into, section(args, local, cluster, peers))
    print(f"report: wrote the section into {args.into}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
