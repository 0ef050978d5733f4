"""A bounded load test of ``aniportraitgan serve`` on 127.0.0.1: N clients for a fixed time.

The server is the real command in its own process (the bundled demo model, 64 px portraits);
each client is a Gradio API client that renders new poses and expressions back to back, so
nearly every request misses the result cache. It checks that no request fails and that the
server's memory is flat: its resident size, sampled every 0.2 s, peaks in the measured run
within a margin of its peak in the warm-up before it, and is no higher once the clients leave.

``python tests/test_webapp_load.py --clients 8 --seconds 60`` prints the numbers that
docs/animation.md records.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason="the web app needs the [web] extra (gradio)")

from aniportraitgan.webapp import EXPRESSIONS, RANGES  # noqa: E402
from aniportraitgan.webapp.app import free_port  # noqa: E402

MEMORY_MARGIN_MB = 40.0


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


def start_server(threads: int = 2, timeout: float = 90.0):
    """(process, url) of ``aniportraitgan serve --ckpt demo`` on a free loopback port."""
    port = free_port()
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aniportraitgan", "serve", "--ckpt", "demo", "--port", str(port),
         "--threads", str(threads)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if line.startswith("serving "):
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # drain
            return proc, f"http://127.0.0.1:{port}/"
    proc.kill()
    raise RuntimeError("the server did not start:\n" + "".join(lines[-30:]))


def _random_args(rng: random.Random) -> list:
    angles = [rng.randint(int(lo), int(hi)) for lo, hi in RANGES.values()]
    exps = [round(rng.random(), 2) for _ in EXPRESSIONS]
    return [rng.choice((0, 3, 7)), 0.7, "portrait", 64, *angles, *exps, *([0] * 52)]


def _summary(latencies: list[float], errors: list[str], clients: int, seconds: float, wall: float) -> dict:
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")

    return {"clients": clients, "seconds": seconds, "requests": len(lat), "errors": errors,
            "throughput_per_s": len(lat) / wall, "p50_s": pct(0.5), "p95_s": pct(0.95),
            "max_s": lat[-1] if lat else None}


def run_clients(url: str, clients: int, phases: list[float], between=lambda phase: None) -> list[dict]:
    """``clients`` threads rendering for each phase's seconds (``between(i)`` runs after phase i
    while the clients wait); per phase the latencies, errors and throughput."""
    from gradio_client import Client

    results: list[list] = [[[], []] for _ in phases]  # per phase: latencies, errors
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        rng = random.Random(i)
        c = Client(url, verbose=False, analytics_enabled=False, download_files=False)
        for p, seconds in enumerate(phases):
            barrier.wait()
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t0 = time.perf_counter()
                try:
                    c.predict(*_random_args(rng), api_name="/render")
                    dt, err = time.perf_counter() - t0, None
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    dt, err = None, f"{type(exc).__name__}: {exc}"
                with lock:
                    (results[p][0].append(dt) if err is None else results[p][1].append(err))
            barrier.wait()
        c.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    out = []
    for p, seconds in enumerate(phases):
        barrier.wait(timeout=120)  # all clients connected (first phase) or done waiting
        t0 = time.perf_counter()
        barrier.wait(timeout=seconds + 120)
        out.append(_summary(*results[p], clients, seconds, time.perf_counter() - t0))
        between(p)
    for t in threads:
        t.join(30)
    return out


class MemorySampler:
    """Resident size of a process every ``period`` seconds, in a thread."""

    def __init__(self, pid: int, period: float = 0.2) -> None:
        self.pid, self.period, self.samples = pid, period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.samples.append((time.monotonic(), _rss_mb(self.pid)))

    def between(self, t0: float, t1: float) -> dict:
        mb = sorted(m for t, m in self.samples if t0 <= t <= t1)
        return {"median_mb": mb[len(mb) // 2], "max_mb": mb[-1]} if mb else {}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def load_test(clients: int, seconds: float, warmup: float | None = None) -> dict:
    """Warm-up (default: half of ``seconds``), then the measured run; the server's memory in each
    (sampled every 0.2 s) and once more after the clients are gone."""
    proc, url = start_server()
    marks = [time.monotonic()]
    try:
        mem = MemorySampler(proc.pid)
        phases = [seconds / 2 if warmup is None else warmup, seconds]
        warm, main = run_clients(url, clients, phases, between=lambda p: marks.append(time.monotonic()))
        time.sleep(2.0)
        after = _rss_mb(proc.pid)
        mem.stop()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {"warmup": warm, "run": main, "memory_warmup": mem.between(marks[0], marks[1]),
            "memory_run": mem.between(marks[1], marks[2]), "rss_after_mb": after, "exit_code": proc.returncode}


@pytest.mark.slow  # reason: a server start (~15 s), then 4 clients for 10 s of warm-up and 14 s of load
@pytest.mark.timeout(300)
def test_concurrent_clients_no_errors_flat_memory():
    result = load_test(clients=4, seconds=14, warmup=10)
    run = result["run"]
    assert not result["warmup"]["errors"] and not run["errors"], run["errors"][:3]
    assert run["requests"] >= 14, run
    growth = result["memory_run"]["max_mb"] - result["memory_warmup"]["max_mb"]
    assert growth < MEMORY_MARGIN_MB, result
    assert result["rss_after_mb"] < result["memory_warmup"]["max_mb"] + MEMORY_MARGIN_MB, result
    assert result["exit_code"] == 143, result  # SIGTERM: the server closed and said why
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=30.0, help="measured run (default 30)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up before it (default: half the run)")
    a = ap.parse_args()
    print(json.dumps(load_test(a.clients, a.seconds, a.warmup), indent=1))
