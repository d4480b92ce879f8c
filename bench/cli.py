"""The command line's own cost: start-up, a container start and an exec through the CLI, each
side by side with what it wraps, interleaved, medians (wall and CPU time of the process).

1. ``virtfleet --help`` vs ``python -c pass``.
2. ``virtfleet vm start c1`` of a stopped container (process start to exit) vs the same
   start through the API (``Client.change_state`` with ``wait_s``: one request answered
   once the container runs). Stops are not timed.
3. ``virtfleet exec c1 -- true`` vs ``runc exec c1 true`` on the same container (the
   daemon's runtime and state directory).
With BENCH_OLD_SRC=<a checkout's src> the CLI of that checkout runs as a third arm in
the same runs (e.g. the previous commit: ``git archive HEAD~1 src | tar -x -C /tmp/old``),
against the same daemon. Bytecode is cached (in a temporary directory) as an installed
package's is.
Usage: .venv/bin/python bench/cli.py [RUNS]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _daemon import VIRTFLEET, BenchDaemon
from container import remove_cgroup_parent

OLD_SRC = os.environ.get("BENCH_OLD_SRC")
PYCACHE = tempfile.mkdtemp(prefix="vfbpyc", dir="/tmp")
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV["PYTHONPYCACHEPREFIX"] = PYCACHE
OLD_ENV = {**ENV, "PYTHONPATH": OLD_SRC or ""}
Timing = tuple[float, float]  # wall, CPU (ms)


def run(argv: list[str], env: dict[str, str] = ENV) -> Timing:
    """``argv`` to its exit: wall and CPU (user + sys) milliseconds."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = (time.perf_counter() - t0) * 1000
    assert os.waitstatus_to_exitcode(status) == 0, argv
    return wall, (usage.ru_utime + usage.ru_stime) * 1000


def timed(fn: Callable[[], object]) -> Timing:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000, float("nan")


def interleave(
    arms: dict[str, Callable[[], Timing]], runs: int, between: Callable[[], None]
) -> None:
    times: dict[str, list[Timing]] = {name: [] for name in arms}
    for _ in range(2):  # warm-up: bytecode caches written, page cache filled
        for fn in arms.values():
            fn()
            between()
    for i in range(runs):
        order = list(arms) if i % 2 == 0 else list(reversed(arms))
        for name in order:
            times[name].append(arms[name]())
            between()
    for name, got in times.items():
        wall = statistics.median(w for w, _ in got)
        cpu = statistics.median(c for _, c in got)
        print(f"  {name:32s} wall median {wall:7.1f} ms   CPU median {cpu:7.1f} ms  (n={runs})")


def cli(*args: str, old: bool = False) -> Callable[[], Timing]:
    argv = [VIRTFLEET, *args]
    return lambda: run(argv, OLD_ENV if old else ENV)


def with_old(arms: dict[str, Callable[[], Timing]], label: str, *args: str) -> None:
    arms[label] = cli(*args)
    if OLD_SRC:
        arms[f"{label} (old)"] = cli(*args, old=True)


def bench_help(runs: int) -> None:
    print("virtfleet --help vs python -c pass")
    arms = {"python -c pass": lambda: run([sys.executable, "-c", "pass"])}
    with_old(arms, "virtfleet --help", "--help")
    interleave(arms, runs, lambda: None)


def bench_start(d: BenchDaemon, runs: int) -> None:
    print("start of a stopped container: CLI (process start to exit) vs API")
    data = ["--data-dir", str(d.data_dir)]

    def stop() -> None:
        op = d.client.change_state("c1", "stop", force=True, timeout_s=30, wait_s=60)
        assert op.status == "success", op
        time.sleep(0.2)  # the kernel tears the container down after the runtime returns

    def api() -> Timing:
        return timed(lambda: d.client.change_state("c1", "start", False, 30, wait_s=60))

    arms: dict[str, Callable[[], Timing]] = {"API (one PUT with wait_s)": api}
    with_old(arms, "virtfleet vm start c1", *data, "vm", "start", "c1")
    interleave(arms, runs, stop)


def bench_exec(d: BenchDaemon, runs: int) -> None:
    print("exec: CLI (process start to exit) vs the runtime's own exec")
    op = d.client.change_state("c1", "start", False, 30, wait_s=60)
    assert op.status == "success", op
    record = json.loads((d.data_dir / "oci" / "run" / "c1" / "record.json").read_text())
    root = d.data_dir / "oci" / "state"
    runtime = [record["runtime"], "--root", str(root), "exec", "c1", "true"]
    arms = {f"{Path(record['runtime']).name} exec c1 true": lambda: run(runtime)}
    with_old(
        arms, "virtfleet exec c1 -- true", "--data-dir", str(d.data_dir), "exec", "c1", "--", "true"
    )
    interleave(arms, runs, lambda: None)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    bench_help(runs)
    d = BenchDaemon()
    try:
        op = d.client.build_image("ctiny", builder="container-tiny")
        assert d.client.wait_operation(op.id, timeout_s=300).status == "success"
        op = d.client.create_instance({"name": "c1", "kind": "container", "image": "ctiny"})
        assert d.client.wait_operation(op.id, timeout_s=60).status == "success"
        bench_start(d, runs)
        bench_exec(d, runs)
    finally:
        parent = json.loads(next((d.data_dir / "oci" / "run").glob("*/config.json")).read_text())
        d.close()
        remove_cgroup_parent(parent["linux"]["cgroupsPath"].split("/")[1])
        subprocess.run(["rm", "-rf", PYCACHE], check=False)


if __name__ == "__main__":
    main()
