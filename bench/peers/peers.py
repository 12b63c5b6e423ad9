#!/usr/bin/env python3
"""Handoff's benchmark workloads, written the idiomatic way for Dask and Ray.

Mirrors `benches/workloads.rs`: the same DAGs, the same functions, the same result
checks, the same table and `json {...}` lines (plus a `system` field and a `runs` field).

Systems:
- `dask-threaded`: a raw task graph, computed once by the threaded scheduler with 2
  threads.
- `dask-distributed`: `LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`,
  futures (`client.map` per set of independent tasks, `client.submit`, futures passed
  to downstream tasks).
- `ray`: `ray.init(num_cpus=2)`, remote functions, ObjectRefs passed downstream,
  `ray.get` at the end.
The costed workloads (`costed`, `mixed`, `wide`) start their clusters with resources:
see below.

Each (system, workload) pair runs in a child process of its own, under a time limit
and a memory cap (the sum of the resident memory of the child and every process it
started: Dask's workers, Ray's raylet, GCS and workers); a pair that does not finish is
reported as such (`status` field) instead of stopping the run. Every child starts its
cluster and times that start-up (until a first trivial task's result is back); the
start-up row is the median, min and max over the children.

As in the Rust harness, building the graph is not timed where the system separates it
from running it (threaded Dask: the task graph is built, then computed once);
Ray and Dask's futures have no such split (submitting a task starts it), so their
timing starts at the first submission.

Environment:
- `QUICK=1`: tiny sizes (those of the Rust harness's quick mode), one run, no warm-up.
- `RUNS` (default 10), `WARMUP` (default 2): runs per workload and warm-up runs.
- `PEER_BUDGET_S` (default 30): a workload stops taking more runs (at least one) once
  its runs took this long, and more warm-up runs once they took a third of it; the
  `runs` field says how many runs were timed.
- `PEER_BIG` (default 20000): functions in the `big` workload for the peers (the Rust
  harness runs 1,000,000; the peers' time per function is what compares).
- `PEER_LIMIT_S` (default 300), `PEER_BIG_LIMIT_S` (default 180): time limit of one
  child (start-up, warm-up and runs of one workload).
- `PEER_MEM_GIB` (default 12): memory cap of one child and its processes.
- `PEER_SYSTEMS` (default all): comma-separated systems to run.
- `PEER_WORKLOADS` (default all): comma-separated workload keys (fanout, single, chain,
  layers, payload, payload-small, sleep, big, costed, mixed, wide).
- `PEER_COSTED` (default `1000,4000`; quick mode: 100, as the Rust harness): the sizes of
  the costed fanouts (the Rust harness's `COSTED`, default `1000,10000,100000`; Ray and
  Dask take ~0.5 ms per costed function on 2 cores; `run.sh` adds these sizes to the
  harness's `COSTED` so that every peer row has a Handoff row of the same name). The
  `costed` child's time limit is `PEER_LIMIT_S` per size.

The costed workloads (`costed` in benches/workloads.rs, run there on one node of
`cpu: 2, memory: 1000`), each with the peer's own resource API. Ray runs all three on
`ray.init(num_cpus=2, _memory=1000)` (`_memory`: the node's reservable memory in bytes,
standing for the Rust node's `memory: 1000`, whose unit is abstract; only the mixed
layers ask for memory). Their start-ups count in the `startup` row with the others.
- `costed` (rows `costed fanout N uncosted|cpu1|cpu0.5`): N trivial functions each asking
  for 1 cpu, then 0.5 cpu, and the sum of their results (asking for nothing), beside
  the plain fanout of the same size in the same cluster (`x_uncosted`: the costed row's
  time per function over the uncosted one's). At most one warm-up run, at most 3 runs
  at 100,000 and more, as in the Rust harness.
  Ray: `ray.remote(num_cpus=1)` / `ray.remote(num_cpus=0.5)` functions; the sum is the
  `fanout` workload's plain remote function. Ray's task default is already
  `num_cpus=1`, so its "uncosted" row (the plain fanout, written the idiomatic way, as
  the `fanout` workload) asks for what its `cpu1` row asks for: Ray has no free task
  but `num_cpus=0`, which nobody writes for real work.
  Dask: `client.map(..., resources={"CPU": 1})` (then 0.5) on
  `LocalCluster(n_workers=2, threads_per_worker=1, resources={"CPU": 1})`: CPU 2 in all,
  as the Rust node. A Dask worker never runs more tasks than it has threads, so at
  `cpu: 0.5` at most 2 run at once (Handoff and Ray: 4). Dask's uncosted fanout can be
  slower than its costed one: its scheduler holds unrestricted root tasks back and
  hands them to workers as threads free up (`worker-saturation`, root-task queuing),
  while a task with resource restrictions is never root-ish and goes to a worker at
  once.
- `mixed` (row `mixed layers 20x100`, quick `3x10`): the `layers` DAG, function k (in the
  order the Rust harness adds them: layer by layer) asking for cpu `[0.5, 1, 2][k % 3]`
  and memory `[100, 400, 200][(k // 3) % 3]`, as `mixed_layers`. Ray: one remote
  function per (cpu, memory) pair (`num_cpus=`, `memory=`). Dask: `resources={"CPU": c,
  "MEMORY": m}`, a `client.map` per layer and cost (9 per layer, instead of one DAG
  submitted at once), on ONE worker of 2 threads with
  `resources={"CPU": 2, "MEMORY": 1000}`: Dask places a task on a single worker holding
  all it asks for, so the `cpu: 2` functions need a worker of CPU 2, and two such
  workers would hold CPU 4.
- `wide` (row `wide behind 10000 narrow`, quick 100): the costed fanout at `cpu: 1`, a
  free function `gate`, and `wide` (`cpu: 2`, priority 1, taking `gate`'s result) that
  returns when it started; `wide_wait_s` is the median wait from the submission to
  that start (µs since the Unix epoch, comparable across the peers' processes). At most
  5 runs, no warm-up, as in the Rust harness. Ray has no task priority: `wide` is
  `num_cpus=2` with none, and `gate` is `num_cpus=0` (free, as Handoff's; with Ray's
  default of 1 cpu it would queue behind the narrow ones). Dask, on the one-worker
  cluster of `mixed`: `wide` with `resources={"CPU": 2}, priority=1`, and `gate` with
  `priority=1` but no resources (Dask has no free task: every task takes a thread, so
  without the priority `gate` would wait behind the narrow ones).
- dask-threaded has no resources: its costed rows are reported with status
  `unsupported`, not run.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SYSTEMS = ("dask-threaded", "dask-distributed", "ray")
WORKLOADS = (
    "big",
    "fanout",
    "single",
    "chain",
    "layers",
    "payload",
    "payload-small",
    "sleep",
    "costed",
    "mixed",
    "wide",
)
# The workloads that ask for resources (`costed` in benches/workloads.rs).
COSTED_KEYS = ("costed", "mixed", "wide")
# The costed fanouts' rows: label and cpu per function (0: the plain fanout).
COSTED_LABELS = (("uncosted", 0.0), ("cpu1", 1.0), ("cpu0.5", 0.5))
# The mixed layers' costs, drawn as `mixed_layers` draws them.
MIXED_CPU = (0.5, 1.0, 2.0)
MIXED_MEMORY = (100, 400, 200)
# The Rust node of the costed workloads: `cpu: 2, memory: 1000`.
NODE_CPU = 2
NODE_MEMORY = 1000


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass
class Sizes:
    """The sizes of `benches/workloads.rs` (quick mode: its quick sizes)."""

    quick: bool
    runs: int
    warmup: int
    budget_s: float
    fanout: int
    chain: int
    width: int
    depth: int
    sleepers: int
    nap_ms: int
    big: int
    # The costed workloads: fanout sizes, the mixed layers' (width, depth), the narrow
    # functions in front of the wide one.
    costed: list[int] = field(default_factory=list)
    mixed: tuple[int, int] = (100, 20)
    wide_narrow: int = 10_000

    @staticmethod
    def from_env() -> Sizes:
        quick = os.environ.get("QUICK", "") not in ("", "0")
        if quick:
            return Sizes(
                True,
                1,
                0,
                60.0,
                100,
                10,
                10,
                3,
                4,
                10,
                env_int("PEER_BIG", 2_000),
                costed=[100],
                mixed=(10, 3),
                wide_narrow=100,
            )
        return Sizes(
            False,
            max(env_int("RUNS", 10), 1),
            max(env_int("WARMUP", 2), 0),
            float(env_int("PEER_BUDGET_S", 30)),
            10_000,
            1000,
            100,
            20,
            16,
            100,
            max(env_int("PEER_BIG", 20_000), 4),
            costed=env_sizes("PEER_COSTED", [1000, 4000]),
            mixed=(100, 20),
            wide_narrow=10_000,
        )


def env_sizes(name: str, default: list[int]) -> list[int]:
    """A comma-separated list of sizes (the unparsable ones skipped, as the Rust
    harness's `COSTED`)."""
    value = os.environ.get(name)
    if value is None:
        return default
    return [int(s) for s in (x.strip() for x in value.split(",")) if s.isdigit() and int(s) > 0]


# ---------------------------------------------------------------------------------------
# The functions, as in `registry()` of benches/workloads.rs.


def one() -> int:
    return 1


def one_of(_i: int) -> int:
    """`one` for `client.map`, which hands each task an element."""
    return 1


def inc(x: int) -> int:
    return x + 1


def add(a: int, b: int) -> int:
    return a + b


def nxt(a: int, b: int) -> int:
    return max(a, b) + 1


def total(*xs: int) -> int:
    return sum(xs)


def stamp(_: int) -> int:
    """When it ran, in µs since the Unix epoch (the Rust harness's `stamp`)."""
    return time.time_ns() // 1000


def pass_(b: bytes) -> bytes:
    return b


def nap(ms: int) -> tuple[int, float, float]:
    """Sleeps `ms`; returns `ms` and when it slept (a system-wide monotonic clock), so
    that the driver can count how many ran at once, across processes."""
    start = time.monotonic()
    time.sleep(ms / 1000)
    return ms, start, time.monotonic()


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end before a start at a tie)."""
    edges = sorted(
        [(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1])
    )
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


# ---------------------------------------------------------------------------------------
# Memory: resident set of this process and every process it started.


def tree_rss() -> int:
    import psutil

    me = psutil.Process()
    total_rss = 0
    for p in [me, *me.children(recursive=True)]:
        try:
            total_rss += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total_rss


class PeakSampler:
    """Samples `tree_rss()` every `interval` seconds in a thread; keeps the peak."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peak = tree_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, tree_rss())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss())
        return self.peak


# ---------------------------------------------------------------------------------------
# One system: start-up, and how it runs a DAG.


class System:
    """A peer: `start` brings it up; each workload is a method returning
    `(seconds, check)` for one run, `check` called outside the timing."""

    name = ""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        pass


# The clusters of `dask-distributed`, by layout (see `layout`): 2 workers of 1 thread;
# the same with CPU 1 each (the costed fanouts); one worker of 2 threads holding the
# Rust node's `cpu: 2, memory: 1000` (the mixed layers and the wide function, which need
# CPU 2 on one worker). Dask's resources are abstract names: "CPU", "MEMORY".
DASK_LAYOUTS: dict[str, dict[str, Any]] = {
    "plain": {"n_workers": 2, "threads_per_worker": 1},
    "costed": {"n_workers": 2, "threads_per_worker": 1, "resources": {"CPU": 1}},
    "node": {
        "n_workers": 1,
        "threads_per_worker": 2,
        "resources": {"CPU": NODE_CPU, "MEMORY": NODE_MEMORY},
    },
}


def layout(system: str, key: str) -> str:
    """The cluster a workload needs: the workloads of one layout can share a child."""
    if key not in COSTED_KEYS:
        return "plain"
    if system == "ray":
        # One `ray.init(num_cpus=2, _memory=1000)` for all of them, as the Rust node.
        return "costed"
    return "costed" if key == "costed" else "node"


def mixed_cost(k: int) -> tuple[float, int]:
    """Function k's (cpu, memory) in the mixed layers, as `mixed_layers` draws it."""
    return MIXED_CPU[k % 3], MIXED_MEMORY[(k // 3) % 3]


class DaskSystem(System):
    def __init__(self, distributed: bool, layout: str = "plain") -> None:
        self.distributed = distributed
        self.layout = layout
        self.name = "dask-distributed" if distributed else "dask-threaded"
        self.client = None
        self.cluster = None

    def start(self) -> None:
        import dask

        if self.distributed:
            from dask.distributed import Client, LocalCluster

            self.cluster = LocalCluster(
                processes=True,
                dashboard_address=None,
                **DASK_LAYOUTS[self.layout],
            )
            self.client = Client(self.cluster)
            self.compute_opts: dict[str, Any] = {}
        else:
            dask.config.set(scheduler="threads", num_workers=2)
            self.compute_opts = {"scheduler": "threads", "num_workers": 2}
        # Ready when a first trivial task's result is back.
        assert self.compute(dask.delayed(one)()) == (1,)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def compute(self, *graphs: Any) -> tuple:
        import dask

        return dask.compute(*graphs, **self.compute_opts)

    def get(self, dsk: dict, keys: list) -> tuple[float, list]:
        """Threaded: computes `keys` of the raw task graph `dsk`, timed."""
        import dask.threaded

        start = time.perf_counter()
        out = dask.threaded.get(dsk, keys, num_workers=2)
        return time.perf_counter() - start, list(out)

    # The workloads. Threaded: a raw task graph (`{key: (function, *argument keys)}`)
    # built untimed, then computed once, asking for every sink so that every function
    # runs (Dask culls what no requested key needs). Raw graphs, not `dask.delayed`: on
    # this machine computing 10,000 `Delayed` objects took 15-25 s, ten times the same
    # graph written raw (each `Delayed` is a graph layer of its own).
    # Distributed: futures (`client.map` for a set of independent tasks, e.g. a layer,
    # `client.submit` for one, futures passed to downstream tasks, the result gathered
    # at the end), timed from the first submission: a `delayed` graph of 2,000 trivial
    # tasks took ~10x longer on the LocalCluster than the same tasks from `client.map`.

    def submit(self, fn: Callable, *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False)

    def map(self, fn: Callable, *columns: list) -> list:
        """One task per element (one message to the scheduler for all of them)."""
        return self.client.map(fn, *columns, pure=False)

    def fanout(self, n: int) -> tuple[float, Callable[[], None]]:
        if self.distributed:
            start = time.perf_counter()
            parts = self.map(one_of, range(n))
            out = self.submit(total, *parts).result()
            elapsed = time.perf_counter() - start
            return elapsed, lambda: check_eq(out, n, "total")
        dsk: dict = {f"f{i}": (one,) for i in range(n)}
        dsk["total"] = (total, *(f"f{i}" for i in range(n)))
        elapsed, (out,) = self.get(dsk, ["total"])
        return elapsed, lambda: check_eq(out, n, "total")

    def single(self) -> tuple[float, Callable[[], None]]:
        if self.distributed:
            start = time.perf_counter()
            out = self.submit(one).result()
            elapsed = time.perf_counter() - start
            return elapsed, lambda: check_eq(out, 1, "one")
        elapsed, (out,) = self.get({"one": (one,)}, ["one"])
        return elapsed, lambda: check_eq(out, 1, "one")

    def chain(self, n: int) -> tuple[float, Callable[[], None]]:
        if self.distributed:
            start = time.perf_counter()
            node = self.submit(one)
            for _ in range(1, n):
                node = self.submit(inc, node)
            out = node.result()
            elapsed = time.perf_counter() - start
            return elapsed, lambda: check_eq(out, n, f"c{n - 1}")
        dsk: dict = {"c0": (one,)}
        for i in range(1, n):
            dsk[f"c{i}"] = (inc, f"c{i - 1}")
        elapsed, (out,) = self.get(dsk, [f"c{n - 1}"])
        return elapsed, lambda: check_eq(out, n, f"c{n - 1}")

    def layers(self, width: int, depth: int) -> tuple[float, Callable[[], None]]:
        want = 1 << (depth - 1)
        if self.distributed:
            start = time.perf_counter()
            layer = self.map(one_of, range(width))
            for _ in range(1, depth):
                layer = self.map(add, layer, layer[1:] + layer[:1])
            # Every function has run once the whole last layer is back.
            out = self.client.gather(layer)
            elapsed = time.perf_counter() - start
            return elapsed, lambda: check_all(out, want, f"layer {depth - 1}")
        dsk = layered(width, depth, add)
        elapsed, out = self.get(dsk, [f"l{depth - 1}_{j}" for j in range(width)])
        return elapsed, lambda: check_all(out, want, f"layer {depth - 1}")

    def payload_setup(self, buffer: bytes) -> Any:
        # Distributed: the buffer is scattered to a worker once, outside the timing,
        # as the Rust harness makes its buffer once; threaded: the object itself.
        if self.distributed:
            return self.client.scatter(buffer)
        return buffer

    def payload(self, source: Any, buffer: bytes, hops: int) -> tuple[float, Callable[[], None]]:
        if self.distributed:
            start = time.perf_counter()
            node = self.submit(pass_, source)
            for _ in range(1, hops):
                node = self.submit(pass_, node)
            out = node.result()
            elapsed = time.perf_counter() - start
            return elapsed, lambda: check_buffer(out, buffer, same_object=False)
        # The buffer is data in the graph, under a key of its own.
        dsk: dict = {"buffer": source, "p0": (pass_, "buffer")}
        for i in range(1, hops):
            dsk[f"p{i}"] = (pass_, f"p{i - 1}")
        elapsed, (out,) = self.get(dsk, [f"p{hops - 1}"])
        return elapsed, lambda: check_buffer(out, buffer, same_object=True)

    def sleep(self, n: int, ms: int) -> tuple[float, Callable[[], None]]:
        if self.distributed:
            start = time.perf_counter()
            out = self.client.gather(self.map(nap, [ms] * n))
            elapsed = time.perf_counter() - start
            return elapsed, lambda: check_naps(list(out), n, ms)
        dsk = {f"s{i}": (nap, ms) for i in range(n)}
        elapsed, out = self.get(dsk, list(dsk))
        return elapsed, lambda: check_naps(out, n, ms)

    def big(self, width: int, depth: int) -> tuple[float, float, Callable[[], None]]:
        if self.distributed:
            # Submitted layer by layer; a layer's futures are dropped once the next
            # one holds them, so the scheduler frees what is no longer needed.
            start = time.perf_counter()
            layer = self.map(one_of, range(width))
            for _ in range(1, depth):
                layer = self.map(nxt, layer, layer[1:] + layer[:1])
            out = self.client.gather(layer)
            elapsed = time.perf_counter() - start
            return 0.0, elapsed, lambda: check_all(list(out), depth, "last layer")
        # Only the last layer is asked for (every function is an ancestor of it), so
        # the scheduler frees the rest as it goes.
        build_start = time.perf_counter()
        dsk = layered(width, depth, nxt)
        build = time.perf_counter() - build_start
        elapsed, out = self.get(dsk, [f"l{depth - 1}_{j}" for j in range(width)])
        return build, elapsed, lambda: check_all(out, depth, "last layer")

    # The costed workloads (distributed only: the threaded scheduler has no resources).

    def costed_fanout(self, n: int, cpu: float) -> tuple[float, Callable[[], None]]:
        resources = {"CPU": cpu} if cpu else None
        start = time.perf_counter()
        parts = self.client.map(one_of, range(n), resources=resources, pure=False)
        out = self.submit(total, *parts).result()
        elapsed = time.perf_counter() - start
        return elapsed, lambda: check_eq(out, n, "total")

    def mixed(self, width: int, depth: int) -> tuple[float, Callable[[], None]]:
        """A `client.map` per layer and cost: function k = layer * width + j."""

        def groups(layer: int) -> dict[tuple[float, int], list[int]]:
            by_cost: dict[tuple[float, int], list[int]] = {}
            for j in range(width):
                by_cost.setdefault(mixed_cost(layer * width + j), []).append(j)
            return by_cost

        def resources(cost: tuple[float, int]) -> dict[str, float]:
            return {"CPU": cost[0], "MEMORY": cost[1]}

        start = time.perf_counter()
        layer: list = [None] * width
        for cost, js in groups(0).items():
            futures = self.client.map(one_of, js, resources=resources(cost), pure=False)
            for j, f in zip(js, futures, strict=True):
                layer[j] = f
        for d in range(1, depth):
            above, layer = layer, [None] * width
            for cost, js in groups(d).items():
                futures = self.client.map(
                    add,
                    [above[j] for j in js],
                    [above[(j + 1) % width] for j in js],
                    resources=resources(cost),
                    pure=False,
                )
                for j, f in zip(js, futures, strict=True):
                    layer[j] = f
        out = self.client.gather(layer)
        elapsed = time.perf_counter() - start
        return elapsed, lambda: check_all(list(out), 1 << (depth - 1), f"layer {depth - 1}")

    def wide(self, n: int) -> tuple[float, int, Callable[[], None]]:
        submitted = time.time_ns() // 1000
        start = time.perf_counter()
        parts = self.client.map(one_of, range(n), resources={"CPU": 1}, pure=False)
        tot = self.submit(total, *parts)
        gate = self.client.submit(one, priority=1, pure=False)
        wide = self.client.submit(stamp, gate, resources={"CPU": NODE_CPU}, priority=1, pure=False)
        out, started = self.client.gather([tot, wide])
        elapsed = time.perf_counter() - start
        return elapsed, started - submitted, lambda: check_eq(out, n, "total")


def layered(width: int, depth: int, code: Callable) -> dict:
    """The raw task graph of `layers()` in benches/workloads.rs."""
    dsk: dict = {f"l0_{j}": (one,) for j in range(width)}
    for layer in range(1, depth):
        for j in range(width):
            dsk[f"l{layer}_{j}"] = (code, f"l{layer - 1}_{j}", f"l{layer - 1}_{(j + 1) % width}")
    return dsk


class RaySystem(System):
    name = "ray"

    def __init__(self, layout: str = "plain") -> None:
        self.layout = layout

    def start(self) -> None:
        import ray

        # The costed workloads: the Rust node's `memory: 1000` as the node's reservable
        # memory (bytes for Ray), which only the mixed layers ask for.
        memory = {"_memory": NODE_MEMORY} if self.layout != "plain" else {}
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="error",
            **memory,
        )
        self.f_one = ray.remote(one)
        self.f_inc = ray.remote(inc)
        self.f_add = ray.remote(add)
        self.f_next = ray.remote(nxt)
        self.f_total = ray.remote(total)
        self.f_pass = ray.remote(pass_)
        self.f_nap = ray.remote(num_cpus=1)(nap)
        if self.layout != "plain":
            # The costed functions: `one` at 1 and 0.5 cpu, `one` and `add` at every
            # (cpu, memory) of the mixed layers, the free gate, the wide stamp.
            self.f_costed = {cpu: ray.remote(num_cpus=cpu)(one) for _, cpu in COSTED_LABELS if cpu}
            self.f_mixed_one = {}
            self.f_mixed_add = {}
            for cpu in MIXED_CPU:
                for memory_ in MIXED_MEMORY:
                    self.f_mixed_one[cpu, memory_] = ray.remote(num_cpus=cpu, memory=memory_)(one)
                    self.f_mixed_add[cpu, memory_] = ray.remote(num_cpus=cpu, memory=memory_)(add)
            self.f_gate = ray.remote(num_cpus=0)(one)
            self.f_stamp = ray.remote(num_cpus=NODE_CPU)(stamp)
        assert ray.get(self.f_one.remote()) == 1

    def stop(self) -> None:
        import ray

        ray.shutdown()

    # Submitting a task starts it: the timing covers submission and `ray.get`.

    def fanout(self, n: int) -> tuple[float, Callable[[], None]]:
        import ray

        start = time.perf_counter()
        parts = [self.f_one.remote() for _ in range(n)]
        out = ray.get(self.f_total.remote(*parts))
        elapsed = time.perf_counter() - start
        return elapsed, lambda: check_eq(out, n, "total")

    def single(self) -> tuple[float, Callable[[], None]]:
        import ray

        start = time.perf_counter()
        out = ray.get(self.f_one.remote())
        elapsed = time.perf_counter() - start
        return elapsed, lambda: check_eq(out, 1, "one")

    def chain(self, n: int) -> tuple[float, Callable[[], None]]:
        import ray

        start = time.perf_counter()
        ref = self.f_one.remote()
        for _ in range(1, n):
            ref = self.f_inc.remote(ref)
        out = ray.get(ref)
        elapsed = time.perf_counter() - start
        return elapsed, lambda: check_eq(out, n, f"c{n - 1}")

    def layers(self, width: int, depth: int) -> tuple[float, Callable[[], None]]:
        import ray

        start = time.perf_counter()
        layer = [self.f_one.remote() for _ in range(width)]
        for _ in range(1, depth):
            layer = [self.f_add.remote(layer[j], layer[(j + 1) % width]) for j in range(width)]
        # Every function has run once the whole last layer is back.
        out = ray.get(layer)
        elapsed = time.perf_counter() - start
        return elapsed, lambda: check_all(out, 1 << (depth - 1), f"layer {depth - 1}")

    def payload_setup(self, buffer: bytes) -> Any:
        import ray

        # Put in the object store once, outside the timing, as the Rust harness makes
        # its buffer once.
        return ray.put(buffer)

    def payload(self, source: Any, buffer: bytes, hops: int) -> tuple[float, Callable[[], None]]:
        import ray

        start = time.perf_counter()
        ref = self.f_pass.remote(source)
        for _ in range(1, hops):
            ref = self.f_pass.remote(ref)
        out = ray.get(ref)
        elapsed = time.perf_counter() - start
        return elapsed, lambda: check_buffer(out, buffer, same_object=False)

    def sleep(self, n: int, ms: int) -> tuple[float, Callable[[], None]]:
        import ray

        start = time.perf_counter()
        out = ray.get([self.f_nap.remote(ms) for _ in range(n)])
        elapsed = time.perf_counter() - start
        return elapsed, lambda: check_naps(out, n, ms)

    def big(self, width: int, depth: int) -> tuple[float, float, Callable[[], None]]:
        import ray

        start = time.perf_counter()
        layer = [self.f_one.remote() for _ in range(width)]
        for _ in range(1, depth):
            layer = [self.f_next.remote(layer[j], layer[(j + 1) % width]) for j in range(width)]
        out = ray.get(layer)
        elapsed = time.perf_counter() - start
        return 0.0, elapsed, lambda: check_all(out, depth, "last layer")

    def costed_fanout(self, n: int, cpu: float) -> tuple[float, Callable[[], None]]:
        if not cpu:
            return self.fanout(n)
        import ray

        f = self.f_costed[cpu]
        start = time.perf_counter()
        parts = [f.remote() for _ in range(n)]
        out = ray.get(self.f_total.remote(*parts))
        elapsed = time.perf_counter() - start
        return elapsed, lambda: check_eq(out, n, "total")

    def mixed(self, width: int, depth: int) -> tuple[float, Callable[[], None]]:
        import ray

        start = time.perf_counter()
        layer = [self.f_mixed_one[mixed_cost(j)].remote() for j in range(width)]
        for d in range(1, depth):
            layer = [
                self.f_mixed_add[mixed_cost(d * width + j)].remote(layer[j], layer[(j + 1) % width])
                for j in range(width)
            ]
        out = ray.get(layer)
        elapsed = time.perf_counter() - start
        return elapsed, lambda: check_all(out, 1 << (depth - 1), f"layer {depth - 1}")

    def wide(self, n: int) -> tuple[float, int, Callable[[], None]]:
        import ray

        f = self.f_costed[1.0]
        submitted = time.time_ns() // 1000
        start = time.perf_counter()
        parts = [f.remote() for _ in range(n)]
        tot = self.f_total.remote(*parts)
        wide = self.f_stamp.remote(self.f_gate.remote())
        out, started = ray.get([tot, wide])
        elapsed = time.perf_counter() - start
        return elapsed, started - submitted, lambda: check_eq(out, n, "total")


# ---------------------------------------------------------------------------------------
# Checks, as the Rust harness asserts them.


class CheckFailed(Exception):
    pass


def check_eq(got: Any, want: Any, what: str) -> None:
    if got != want:
        raise CheckFailed(f"{what}: got {got!r}, want {want!r}")


def check_all(got: list, want: Any, what: str) -> None:
    bad = [x for x in got if x != want]
    if bad or not got:
        raise CheckFailed(
            f"{what}: {len(bad)} of {len(got)} differ from {want!r} (e.g. {bad[:1]!r})"
        )


def check_buffer(got: Any, buffer: bytes, same_object: bool) -> None:
    if same_object:
        # In one process the buffer is handed along, never copied (as in Rust).
        if got is not buffer:
            raise CheckFailed("p9: the buffer was copied along the chain")
    elif len(got) != len(buffer) or got != buffer:
        raise CheckFailed(f"p9: got {len(got)} bytes, not the {len(buffer)} sent")


def check_naps(out: list, n: int, ms: int) -> None:
    if len(out) != n:
        raise CheckFailed(f"{len(out)} sleepers returned, want {n}")
    for i, (slept, _, _) in enumerate(out):
        check_eq(slept, ms, f"s{i}")
    peak = most_at_once([(s, e) for _, s, e in out])
    if not 1 <= peak <= 2:
        raise CheckFailed(f"{peak} ran at once on 2 cpus")


# ---------------------------------------------------------------------------------------
# Rows: the Rust harness's table line and JSON object.


def emit_row(
    system: str,
    name: str,
    samples: list[float],
    per_unit: float,
    unit: str,
    note: str,
    **extra: Any,
) -> None:
    samples = sorted(samples)
    median, lo, hi = samples[len(samples) // 2], samples[0], samples[-1]
    print(
        f"{system:<17} {name:<26} median {median * 1e3:>9.3f} ms  min {lo * 1e3:>9.3f} ms  "
        f"max {hi * 1e3:>9.3f} ms  | {note}",
        flush=True,
    )
    row = {
        "name": name,
        "median_s": median,
        "min_s": lo,
        "max_s": hi,
        "per_unit": per_unit,
        "unit": unit,
        "system": system,
        "runs": len(samples),
        **extra,
    }
    print("json " + json.dumps(row), flush=True)


def emit_failure(system: str, name: str, status: str, message: str, **extra: Any) -> None:
    print(f"{system:<17} {name:<26} {message}", flush=True)
    row = {
        "name": name,
        "median_s": None,
        "min_s": None,
        "max_s": None,
        "per_unit": None,
        "unit": None,
        "system": system,
        "runs": 0,
        "status": status,
        "error": message,
        **extra,
    }
    print("json " + json.dumps(row), flush=True)


def workload_names(key: str, sizes: Sizes) -> list[str]:
    """Every row name of a workload, exactly as benches/workloads.rs names them."""
    if key == "costed":
        return [f"costed fanout {n} {label}" for n in sizes.costed for label, _ in COSTED_LABELS]
    if key == "mixed":
        width, depth = sizes.mixed
        return [f"mixed layers {depth}x{width}"]
    if key == "wide":
        return [f"wide behind {sizes.wide_narrow} narrow"]
    return [workload_name(key, sizes)]


def workload_name(key: str, sizes: Sizes) -> str:
    """The row name of a one-row workload, exactly as benches/workloads.rs names it."""
    return {
        "fanout": f"fanout {sizes.fanout} + sum",
        "single": "single function",
        "chain": f"chain {sizes.chain}",
        "layers": f"layers {sizes.depth}x{sizes.width}",
        "payload": "payload 10 x 10 MB",
        "payload-small": "payload 10 x 10 B",
        "sleep": f"sleep-parallel {sizes.sleepers}x{sizes.nap_ms}ms cpu2",
        "big": f"big {big_shape(sizes.big)[2]} execute",
    }[key]


def big_shape(n: int) -> tuple[int, int, int]:
    """√n layers of √n, as the Rust harness shapes `big`: (width, depth, functions)."""
    width = max(round(math.sqrt(n)), 2)
    depth = max(n // width, 2)
    return width, depth, width * depth


# ---------------------------------------------------------------------------------------
# The child: one system, one workload.


def run_child(system_name: str, keys: list[str]) -> int:
    sizes = Sizes.from_env()
    # The keys of one child share a layout (`main` groups them so).
    kind = layout(system_name, keys[0])
    system: System = (
        RaySystem(kind)
        if system_name == "ray"
        else DaskSystem(system_name == "dask-distributed", kind)
    )
    start = time.perf_counter()
    system.start()
    print(f"startup_s {time.perf_counter() - start}", flush=True)
    try:
        for key in keys:
            if key == "big":
                run_big(system, sizes)
            elif key == "costed":
                run_costed(system, sizes)
            elif key == "mixed":
                run_mixed(system, sizes)
            elif key == "wide":
                run_wide(system, sizes)
            else:
                run_timed(system, key, sizes)
    finally:
        system.stop()
    return 0


def run_big(system: System, sizes: Sizes) -> None:
    width, depth, n = big_shape(sizes.big)
    before = tree_rss()
    sampler = PeakSampler()
    build, elapsed, check = system.big(width, depth)  # type: ignore[attr-defined]
    peak = sampler.stop()
    check()
    per_fn = elapsed * 1e6 / n
    note = (
        f"{per_fn:>7.3f} µs/fn; {depth} layers x {width}; peak RSS (driver + workers) "
        f"{peak / 2**20:.1f} MiB, {(peak - before) // n} B/fn above the RSS before"
    )
    if build:
        note += f"; graph built in {build:.3f} s (untimed)"
    emit_row(
        system.name,
        workload_name("big", sizes),
        [elapsed],
        per_fn,
        "µs/fn",
        note,
        functions=n,
        build_s=build,
        peak_rss_bytes=peak,
        rss_before_bytes=before,
        bytes_per_function=(peak - before) // n,
    )


def run_timed(system: System, key: str, sizes: Sizes) -> None:
    name = workload_name(key, sizes)
    buffer = bytes([7]) * (10 << 20 if key == "payload" else 10)
    source = system.payload_setup(buffer) if key.startswith("payload") else None  # type: ignore[attr-defined]

    def once() -> float:
        if key == "fanout":
            elapsed, check = system.fanout(sizes.fanout)  # type: ignore[attr-defined]
        elif key == "single":
            elapsed, check = system.single()  # type: ignore[attr-defined]
        elif key == "chain":
            elapsed, check = system.chain(sizes.chain)  # type: ignore[attr-defined]
        elif key == "layers":
            elapsed, check = system.layers(sizes.width, sizes.depth)  # type: ignore[attr-defined]
        elif key.startswith("payload"):
            elapsed, check = system.payload(source, buffer, 10)  # type: ignore[attr-defined]
        elif key == "sleep":
            elapsed, check = system.sleep(sizes.sleepers, sizes.nap_ms)  # type: ignore[attr-defined]
        else:
            raise ValueError(f"unknown workload {key}")
        check()
        return elapsed

    samples = sample(once, sizes.warmup, sizes.runs, sizes.budget_s)
    median = sorted(samples)[len(samples) // 2]
    if key == "sleep":
        ideal = sizes.nap_ms * sizes.sleepers / 2 / 1000
        emit_row(
            system.name,
            name,
            samples,
            median / ideal,
            "x ideal",
            f"makespan {median:.3f} s = {median / ideal:.3f} x ideal {ideal:.3f} s (never more than 2 at once)",
            ideal_s=ideal,
        )
        return
    per, unit = {
        "fanout": (sizes.fanout + 1, "fn"),
        "single": (1, "execution"),
        "chain": (sizes.chain - 1, "hop"),
        "layers": (sizes.depth * sizes.width, "fn"),
        "payload": (9, "hop"),
        "payload-small": (9, "hop"),
    }[key]
    per_unit = median * 1e6 / per
    emit_row(
        system.name,
        name,
        samples,
        per_unit,
        f"µs/{unit}",
        f"{per_unit:>7.3f} µs/{unit} ({per / median:.0f} {unit}/s)",
    )


def sample(once: Callable[[], float], warmup: int, runs: int, budget_s: float) -> list[float]:
    """`warmup` untimed runs, then up to `runs` timed ones, within the budget."""
    warm = 0.0
    for _ in range(warmup):
        # A slow workload is warm after its first run: its warm-up stops at a third of
        # its budget.
        if warm > budget_s / 3:
            break
        warm += once()
    samples: list[float] = []
    spent = 0.0
    while len(samples) < runs and (not samples or spent < budget_s):
        samples.append(once())
        spent += samples[-1]
    return samples


def emit_per_unit(
    system: str, name: str, samples: list[float], per: int, unit: str, note: str = "", **extra: Any
) -> float:
    """A row per unit of work (the Rust harness's `report`); returns µs per unit."""
    median = sorted(samples)[len(samples) // 2]
    per_unit = median * 1e6 / per
    text = f"{per_unit:>7.3f} µs/{unit} ({per / median:.0f} {unit}/s)"
    emit_row(system, name, samples, per_unit, f"µs/{unit}", text + note, **extra)
    return per_unit


def run_costed(system: System, sizes: Sizes) -> None:
    """Each size's fanout uncosted, at `cpu: 1` and at `cpu: 0.5`, as `costed`."""
    for n in sizes.costed:
        # The Rust harness: at most one warm-up, at most 3 runs from 100,000 on.
        runs = min(sizes.runs, 3) if n >= 100_000 else sizes.runs
        free = 0.0
        for label, cpu in COSTED_LABELS:

            def once(n: int = n, cpu: float = cpu) -> float:
                elapsed, check = system.costed_fanout(n, cpu)  # type: ignore[attr-defined]
                check()
                return elapsed

            samples = sample(once, min(sizes.warmup, 1), runs, sizes.budget_s)
            name = f"costed fanout {n} {label}"
            if not cpu:
                free = emit_per_unit(system.name, name, samples, n + 1, "fn")
                continue
            median = sorted(samples)[len(samples) // 2]
            x = median * 1e6 / (n + 1) / free if free else None
            note = f"; {x:.2f} x the uncosted fanout per function" if x else ""
            extra = {"x_uncosted": x} if x else {}
            emit_per_unit(system.name, name, samples, n + 1, "fn", note, **extra)


def run_mixed(system: System, sizes: Sizes) -> None:
    width, depth = sizes.mixed

    def once() -> float:
        elapsed, check = system.mixed(width, depth)  # type: ignore[attr-defined]
        check()
        return elapsed

    samples = sample(once, sizes.warmup, sizes.runs, sizes.budget_s)
    emit_per_unit(system.name, f"mixed layers {depth}x{width}", samples, width * depth, "fn")


def run_wide(system: System, sizes: Sizes) -> None:
    """No warm-up, at most 5 runs, as the Rust harness; the wide function's wait."""
    n = sizes.wide_narrow
    waits: list[int] = []

    def once() -> float:
        elapsed, waited, check = system.wide(n)  # type: ignore[attr-defined]
        check()
        waits.append(waited)
        return elapsed

    samples = sample(once, 0, min(sizes.runs, 5), sizes.budget_s)
    wait = sorted(waits)[len(waits) // 2] / 1e6
    emit_per_unit(
        system.name,
        f"wide behind {n} narrow",
        samples,
        n + 3,
        "fn",
        f"; the wide function started {wait * 1e3:.3f} ms after the submission (median)",
        wide_wait_s=wait,
    )


# ---------------------------------------------------------------------------------------
# The parent: every (system, workload) in a child, under a time limit and a memory cap.


@dataclass
class Outcome:
    rc: int | None = None
    status: str = "ok"
    message: str = ""
    startup: float | None = None
    rows: int = 0
    peak: int = 0
    seen: dict = field(default_factory=dict)
    names: set = field(default_factory=set)


def supervise(system: str, keys: list[str], limit_s: float, cap: int) -> Outcome:
    """Runs one child, forwarding its output; kills it and every process it started
    when it runs past `limit_s` or their resident memory passes `cap` bytes."""
    import psutil

    child = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--child", system, ",".join(keys)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    outcome = Outcome()
    errors: list[str] = []

    def read_stdout() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("startup_s "):
                outcome.startup = float(line.split()[1])
                continue
            if line.startswith("json "):
                outcome.rows += 1
                try:
                    outcome.names.add(json.loads(line[5:]).get("name"))
                except ValueError:
                    pass
            sys.stdout.write(line)
            sys.stdout.flush()

    def read_stderr() -> None:
        assert child.stderr is not None
        for line in child.stderr:
            errors.append(line.rstrip())
            del errors[:-40]

    readers = [threading.Thread(target=read_stdout), threading.Thread(target=read_stderr)]
    for r in readers:
        r.start()
    root = psutil.Process(child.pid)
    # Every process seen in the tree, so that none outlives the child (Ray's daemons).
    outcome.seen = {child.pid: root}
    start = time.monotonic()

    def kill_all() -> None:
        for p in list(outcome.seen.values()):
            try:
                p.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass

    try:
        watch(child, root, outcome, start, limit_s, cap, kill_all)
    finally:
        if child.poll() is None:
            kill_all()
    outcome.rc = child.wait()
    # Whatever the child started and left behind (a crashed driver's daemons), before
    # waiting for the end of its output, which they might hold open.
    kill_all()
    for r in readers:
        r.join()
    return finish(outcome, errors)


def watch(child, root, outcome: Outcome, start: float, limit_s: float, cap: int, kill_all) -> None:  # noqa: ANN001
    """Samples the child's tree until it exits, past its limit or its memory cap."""
    import psutil

    while child.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        rss = 0
        for p in procs:
            outcome.seen.setdefault(p.pid, p)
            try:
                rss += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        outcome.peak = max(outcome.peak, rss)
        if rss > cap:
            outcome.status = "oom"
            outcome.message = (
                f"out of memory: driver and workers passed the {cap / 2**30:.0f} GiB cap"
            )
            kill_all()
            break
        if time.monotonic() - start > limit_s:
            outcome.status = "timeout"
            outcome.message = f"did not finish within {limit_s:.0f} s"
            kill_all()
            break
        time.sleep(0.2)


def finish(outcome: Outcome, errors: list[str]) -> Outcome:
    """Names what went wrong with a child that exited by itself without its row."""
    if outcome.status == "ok" and outcome.rc != 0:
        if outcome.rc == -signal.SIGKILL:
            outcome.status = "oom"
            outcome.message = "killed (SIGKILL: out of memory?)"
        else:
            tail = [e for e in errors if e.strip()][-1:] or [f"exit status {outcome.rc}"]
            outcome.status = "error"
            outcome.message = f"failed: {tail[0][:300]}"
        if any("MemoryError" in e for e in errors):
            outcome.status = "oom"
            outcome.message = "out of memory (MemoryError)"
    if outcome.status != "ok" and errors:
        print(
            f"  (last lines of its standard error: {' | '.join(errors[-5:])[:2000]})",
            file=sys.stderr,
        )
    return outcome


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for package in ("dask", "distributed", "ray", "psutil"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        return run_child(sys.argv[2], sys.argv[3].split(","))
    sizes = Sizes.from_env()
    systems = [s for s in os.environ.get("PEER_SYSTEMS", ",".join(SYSTEMS)).split(",") if s]
    keys = [k for k in os.environ.get("PEER_WORKLOADS", ",".join(WORKLOADS)).split(",") if k]
    for s in systems:
        if s not in SYSTEMS:
            print(f"unknown system {s!r} (known: {', '.join(SYSTEMS)})", file=sys.stderr)
            return 2
    for k in keys:
        if k not in WORKLOADS:
            print(f"unknown workload {k!r} (known: {', '.join(WORKLOADS)})", file=sys.stderr)
            return 2
    limit = float(env_int("PEER_LIMIT_S", 300))
    big_limit = float(env_int("PEER_BIG_LIMIT_S", 180))
    cap = env_int("PEER_MEM_GIB", 12) * 2**30
    print(
        "peers: "
        + " ".join(f"{k}={v}" for k, v in versions().items())
        + f"; runs {sizes.runs} after {sizes.warmup} warm-up (budget {sizes.budget_s:.0f} s per workload)"
        + (", quick mode" if sizes.quick else ""),
        flush=True,
    )
    print("json " + json.dumps({"name": "versions", "system": "peers", **versions()}), flush=True)
    failed = 0

    def key_limit(key: str) -> float:
        if key == "big":
            return big_limit
        # The costed fanouts: three rows per size.
        return limit * max(len(sizes.costed), 1) if key == "costed" else limit

    for system in systems:
        startups: list[float] = []
        runnable = keys
        if system == "dask-threaded":
            # No resources in the threaded scheduler: the costed rows say so.
            runnable = [k for k in keys if k not in COSTED_KEYS]
            for key in keys:
                if key in COSTED_KEYS:
                    for name in workload_names(key, sizes):
                        emit_failure(
                            system,
                            name,
                            "unsupported",
                            "unsupported (the threaded scheduler has no resources)",
                        )
        # Each workload in a child of its own, under its own limit; in quick mode one
        # child per cluster layout runs them all (one start-up instead of one per
        # workload).
        if sizes.quick:
            by_layout: dict[str, list[str]] = {}
            for key in runnable:
                by_layout.setdefault(layout(system, key), []).append(key)
            groups = list(by_layout.values())
        else:
            groups = [[k] for k in runnable]
        for group in groups:
            group_limit = sum(key_limit(k) for k in group)
            outcome = supervise(system, group, group_limit, cap)
            if outcome.startup is not None:
                startups.append(outcome.startup)
            for key in group:
                for name in workload_names(key, sizes):
                    if name in outcome.names:
                        continue
                    status = "error" if outcome.status == "ok" else outcome.status
                    failed += status == "error"
                    extra: dict[str, Any] = {"limit_s": group_limit}
                    if key == "big":
                        extra["functions"] = big_shape(sizes.big)[2]
                        extra["peak_rss_bytes"] = outcome.peak
                    message = outcome.message or "no result"
                    emit_failure(system, name, status, message, **extra)
        if system != "dask-threaded" and startups:
            emit_row(
                system,
                "startup",
                startups,
                sorted(startups)[len(startups) // 2],
                "s",
                f"cluster start-up until a first task's result, over {len(startups)} starts",
            )
    # A check that failed is a broken benchmark: say so in the exit status. A time limit
    # or the memory cap is a result.
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
