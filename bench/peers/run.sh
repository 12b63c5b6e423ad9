#!/usr/bin/env bash
# Handoff's benchmark harness and the same workloads in Dask and Ray, back to back, then
# the side-by-side section of BENCHMARKS.md (between <!-- peers:begin --> and
# <!-- peers:end -->) rewritten from their results.
#
#   bench/peers/run.sh            # the full run (about 15 minutes on 2 cores)
#   QUICK=1 bench/peers/run.sh    # a smoke run of the whole pipeline: tiny sizes, one run;
#                                 # writes target/peers/<time>/BENCHMARKS.md, not the real one
#
# Needs python3 (3.11 tested) with venv, and PyPI: the peers are installed into
# bench/peers/.venv from bench/peers/requirements.txt. Every log and a results.jsonl of all
# rows go to target/peers/<time>/. Knobs, passed through: RUNS, BIG (the Rust harness),
# ROUNDS, FANOUT (the cluster bench), RUNS, WARMUP, PEER_BIG, PEER_BUDGET_S, PEER_LIMIT_S,
# PEER_BIG_LIMIT_S, PEER_MEM_GIB, PEER_SYSTEMS, PEER_WORKLOADS, PEER_COSTED (peers.py, see
# its header), COSTED (the Rust harness's costed fanout sizes: the peers' PEER_COSTED sizes
# are added to it, so that every peer row has a Handoff row of the same name).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
here=bench/peers
venv=$here/.venv
out=target/peers/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
quick=${QUICK:-}
[ "$quick" = 0 ] && quick=

# (a) The virtualenv with the peers.
if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -m venv "$venv" 2>/dev/null; then
        rm -rf "$venv"
        echo "run.sh: python3 -m venv failed; installing python3-venv" >&2
        apt-get update -qq && apt-get install -y -qq python3-venv
        python3 -m venv "$venv"
    fi
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"

# The knobs as given (before the costed sizes below), for the report's command line.
knobs=$(env | grep -E '^(RUNS|WARMUP|BIG|COSTED|ROUNDS|FANOUT|PEER_[A-Z_]+)=' | sort | tr '\n' ' ' || true)

# The Rust harness's costed fanout sizes and the peers' (peers.py's defaults), together.
# Quick mode: both use their quick sizes (100), whatever these say.
if [ -z "$quick" ]; then
    COSTED=$(printf '%s,%s\n' "${COSTED:-1000,10000,100000}" "${PEER_COSTED:-1000,4000}" |
        tr ',' '\n' | { grep -E '^[0-9]+$' || true; } | sort -n -u | paste -sd, -)
    export COSTED
fi

# (b) Handoff's harness (release, the `bench` profile), then the peers.
bench() {
    local name=$1
    if [ -n "$quick" ]; then
        # Built as `cargo bench` builds it, run without `--bench`: the harness's quick mode.
        local exe
        exe=$(cargo bench --locked --bench "$name" --no-run --message-format=json |
            "$venv/bin/python" -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$name" | tail -n 1)
        "$exe"
    else
        cargo bench --locked --bench "$name"
    fi
}
echo "== cargo bench --bench workloads" >&2
bench workloads | tee "$out/workloads.log"
echo "== cargo bench --bench cluster" >&2
bench cluster | tee "$out/cluster.log"
echo "== $here/peers.py" >&2
peers_status=0
"$venv/bin/python" "$here/peers.py" | tee "$out/peers.log" || peers_status=$?

# (c) The report.
target=BENCHMARKS.md
command="bench/peers/run.sh"
if [ -n "$quick" ]; then
    cp BENCHMARKS.md "$out/BENCHMARKS.md"
    target=$out/BENCHMARKS.md
    command="QUICK=1 bench/peers/run.sh"
fi
"$venv/bin/python" "$here/report.py" \
    --workloads "$out/workloads.log" --cluster "$out/cluster.log" --peers "$out/peers.log" \
    --into "$target" --results "$out/results.jsonl" --rustc "$(rustc --version)" \
    --command "${knobs}${command}" ${quick:+--quick}
echo "run.sh: logs and results.jsonl in $out; section written into $target" >&2
if [ "$peers_status" != 0 ]; then
    echo "run.sh: peers.py exited with $peers_status (a result check failed; see its rows)" >&2
fi
exit "$peers_status"
