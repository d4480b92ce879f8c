"""Metrics collection overhead and ``/metrics`` scrape latency.

1. Collection cost with 50 running instances: ``virtfleet serve --driver fake
   --metrics-interval 1`` (SQLite store: history writes included) with 0 and then 50
   started instances, idle otherwise; the daemon's own CPU time (psutil, all threads)
   over ``SECONDS`` divided by the collection rounds it did (``virtfleet_metrics_
   collections_total``). Per instance per sample = (cost at 50 - cost at 0) / 50.
   The fake driver has no processes, so this is the platform's share: store scan,
   driver stats call, rates, history (3 tiers), alert rules, plus a /proc miss per pid.
2. What a real VM adds: the same with the QEMU driver and 0 vs 1 booted tiny TCG guest
   (psutil process + vCPU threads, cgroup files, three QMP queries). 50 real TCG guests
   do not fit on this 2-core machine shared with other work, so the 50-VM figure is
   estimated as 50 x the real per-VM cost (which includes the platform's share that
   the fake run measures alone) and labelled as such.
3. ``GET /metrics`` latency with the 50 fake instances, over the Unix socket (httpx).

Usage: .venv/bin/python bench/metrics.py [SECONDS] [SCRAPES]
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

VIRTFLEET = str(Path(sys.executable).parent / "virtfleet")
ROUNDS = re.compile(r"^virtfleet_metrics_collections_total (\S+)$", re.MULTILINE)


class Daemon:
    def __init__(self, driver: str) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="vfmb", dir="/tmp"))
        log = open(self.data_dir / "daemon.log", "ab")  # noqa: SIM115 - owned by the child
        argv = [VIRTFLEET, "--data-dir", str(self.data_dir), "serve", "--listen", "none"]
        self.proc = subprocess.Popen(
            [*argv, "--driver", driver, "--metrics-interval", "1"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        transport = httpx.HTTPTransport(uds=str(self.data_dir / "api.sock"))
        self.http = httpx.Client(transport=transport, base_url="http://virtfleet", timeout=300)
        self._wait(lambda: self._get("/1.0") is not None, 60)
        self._op(self.http.post("/1.0/images", json={"name": "tiny"}))

    def _get(self, path: str) -> httpx.Response | None:
        try:
            return self.http.get(path)
        except httpx.TransportError:
            return None

    @staticmethod
    def _wait(cond: object, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if cond():  # type: ignore[operator]
                return
            time.sleep(0.1)
        raise TimeoutError("condition not met in time")

    def _op(self, reply: httpx.Response) -> None:
        assert reply.status_code == 202, reply.text
        op = reply.json()["id"]
        done = self.http.get(f"/1.0/operations/{op}/wait", params={"timeout_s": 280}).json()
        assert done["status"] == "success", done

    def start_instances(self, count: int) -> None:
        for i in range(count):
            body = {"name": f"b{i}", "image": "tiny", "memory_mib": 128, "start": True}
            self._op(self.http.post("/1.0/instances", json=body))

    def wait_marker(self, name: str) -> None:
        log = self.data_dir / "run" / name / "serial.log"
        self._wait(lambda: log.exists() and b"VIRTFLEET-READY" in log.read_bytes(), 120)

    def rounds(self) -> float:
        text = self.http.get("/metrics").text
        match = ROUNDS.search(text)
        assert match, "no collections counter"
        return float(match.group(1))

    def cpu_per_round_ms(self, seconds: float) -> float:
        """The daemon's CPU time per collection round over ``seconds`` of idling."""
        proc = psutil.Process(self.proc.pid)
        r0, t0 = self.rounds(), sum(proc.cpu_times()[:2])
        time.sleep(seconds)
        r1, t1 = self.rounds(), sum(proc.cpu_times()[:2])
        return 1000 * (t1 - t0) / (r1 - r0)

    def scrape_latency_ms(self, count: int) -> list[float]:
        times = []
        for _ in range(count):
            start = time.perf_counter()
            reply = self.http.get("/metrics")
            times.append(1000 * (time.perf_counter() - start))
            assert reply.status_code == 200
        return times

    def close(self) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for proc in psutil.process_iter(["cmdline"]):  # only QEMUs of this data dir
            if str(self.data_dir) in " ".join(proc.info["cmdline"] or []):
                proc.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(driver: str, counts: tuple[int, int], seconds: float, scrapes: int) -> dict[str, float]:
    daemon = Daemon(driver)
    try:
        results = {f"cpu_ms_{counts[0]}": daemon.cpu_per_round_ms(seconds)}
        daemon.start_instances(counts[1])
        if driver == "qemu":
            daemon.wait_marker("b0")
        time.sleep(3)  # past the first rounds with the new instances
        results[f"cpu_ms_{counts[1]}"] = daemon.cpu_per_round_ms(seconds)
        if scrapes:
            daemon.scrape_latency_ms(20)  # warm-up
            times = daemon.scrape_latency_ms(scrapes)
            results |= {"scrape_p50": statistics.median(times), "scrape_p99": pct(times, 0.99)}
            results["scrape_bytes"] = len(daemon.http.get("/metrics").content)
        return results
    finally:
        daemon.close()


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    scrapes = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    os.environ.setdefault("VIRTFLEET_CACHE_DIR", "/var/cache/virtfleet")
    fake = measure("fake", (0, 50), seconds, scrapes)
    per_fake = (fake["cpu_ms_50"] - fake["cpu_ms_0"]) / 50
    print(f"fake driver: {fake['cpu_ms_0']:.2f} ms/round with 0, {fake['cpu_ms_50']:.2f} with 50")
    print(f"  -> {per_fake:.3f} ms agent CPU per instance per sample")
    print(
        f"/metrics with 50 instances: p50 {fake['scrape_p50']:.2f} ms, "
        f"p99 {fake['scrape_p99']:.2f} ms, {fake['scrape_bytes'] / 1024:.1f} KiB "
        f"({scrapes} scrapes)"
    )
    real = measure("qemu", (0, 1), seconds, 0)
    per_real = real["cpu_ms_1"] - real["cpu_ms_0"]
    print(f"qemu driver: {real['cpu_ms_0']:.2f} ms/round with 0, {real['cpu_ms_1']:.2f} with 1 VM")
    print(f"  -> {per_real:.3f} ms agent CPU per real VM per sample")
    estimate = 50 * per_real
    print(
        f"estimate for 50 real VMs: {estimate:.1f} ms per round = "
        f"{estimate / 10_000 * 100:.2f} % of one core at the default 10 s interval"
    )


if __name__ == "__main__":
    main()
