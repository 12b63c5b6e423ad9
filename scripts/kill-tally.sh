#!/usr/bin/env bash
# Kills a worker process in the middle of a DAG, ROUNDS times (20 by default), each time
# at a different moment, and writes the tally: one line per round and `tally <ok>/<rounds>`.
#
#   scripts/kill-tally.sh [OUTPUT]     (default OUTPUT: target/kill-tally.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${ROUNDS:-20}"
out="${1:-target/kill-tally.txt}"
mkdir -p "$(dirname "$out")"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
KILL_ROUNDS="$rounds" cargo test --release --test cluster a_worker_killed_mid_dag_does_not_stop_it \
    -- --nocapture >"$log" 2>&1 || status=$?
{
    echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -srm), $(nproc) cores, ${rounds} rounds"
    grep -E '^(round [0-9]+:|tally )' "$log" || echo "no rounds ran; see the test output below"
} >"$out"
if [ "$status" -ne 0 ]; then
    tail -n 40 "$log" >>"$out"
fi
cat "$out"
exit "$status"
