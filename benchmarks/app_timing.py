"""The app as its users time it, in headless Chromium: redraw after picking a sample, and training under open pages.

``python -m benchmarks.app_timing [--pages 5] [--scenario mnist-superclass] [--json]`` (needs the test extra
and Debian's Chromium):

1. **Redraw**: on the default scenario with ``tracin-rp`` precomputed, click a sample in the
   gallery and time until its proponent cards are drawn (the caption naming the new sample
   and every image loaded); the median over 10 clicks.
2. **Polling cost**: train ``--scenario``'s default model (a) in a plain process with no app
   and (b) in the app's background job while ``--pages`` browser pages show its progress
   bar; the ratio of the two training times (the model's own ``train_seconds``, each in a
   fresh cache). The target is at most 1.3. Meanwhile the CPU seconds of the server, its worker
   processes and the browser are counted: on one machine the browser's rendering competes for
   the same cores, where a person's browser would run on their own machine.
3. **Memory**: one page on each of ``--memory-scenarios`` (uncached, so each asks for its
   own training), all open at once until every page shows its model; the peak resident
   memory of the server and of the server with its worker processes, sampled twice a second.

Each part starts its own ``streamlit run`` on a free port with a temporary cache.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks._proc import status_kib

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _server(cache: str):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "ATTREX_CACHE": cache}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "explorer" / "app.py"),
                             "--server.port", str(port), "--server.headless", "true"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit("the app did not start")


def _train_alone(scenario: str, cache: str) -> float:
    code = ("import torch, sys; from core.data import build; from core.models import train; "
            f"m = train(build({scenario!r})); print(m.train_seconds)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "ATTREX_CACHE": cache},
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _trained_seconds(scenario: str, cache: str) -> float:
    code = ("from core.data import build; from core.models import load_cached; from core.cache import Cache; "
            f"print(load_cached(build({scenario!r}), cache=Cache({cache!r})).train_seconds)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, str]]:
    """Every process: pid -> (parent pid, command line)."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                out[int(d.name)] = (ppid, (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
    return out


def _rss_gib(pid: int) -> float:
    """Resident memory of process ``pid`` in GiB (0 once it is gone)."""
    return (status_kib("VmRSS", pid) or 0) / 2**20


class CpuMeter:
    """Where the CPU goes while it runs: the app's server, its worker processes and the browser, each
    sampled twice a second (a worker's seconds are its last sample before it ended); the peak resident
    memory of the server, and of the server and its workers together."""

    def __init__(self, server: int) -> None:
        self.server, self.seen, self.start, self.rss_gib, self.total_rss_gib = server, {}, {}, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _group(self, pid: int, procs: dict) -> str | None:
        if pid == self.server:
            return "server"
        if procs[pid][0] == self.server:
            return "workers"
        return "browser" if "chromium" in procs[pid][1] else None

    def _sample(self) -> None:
        procs = _processes()
        server = _rss_gib(self.server)
        self.rss_gib = max(self.rss_gib, server)
        workers = sum(_rss_gib(pid) for pid, (ppid, _) in procs.items() if ppid == self.server)
        self.total_rss_gib = max(self.total_rss_gib, server + workers)
        for pid in procs:
            group = self._group(pid, procs)
            cpu = _cpu_seconds(pid) if group else None
            if cpu is not None:
                self.start.setdefault(pid, cpu)
                self.seen[pid] = (group, cpu)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()

    def __enter__(self) -> CpuMeter:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def seconds(self) -> dict[str, float]:
        out = {"server": 0.0, "workers": 0.0, "browser": 0.0}
        for pid, (group, cpu) in self.seen.items():
            out[group] += cpu - self.start[pid]
        return {k: round(v, 1) for k, v in out.items()}


def redraw(browser, log) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        proc, url = _server(cache)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(url)
            log("redraw: waiting for the model and tracin-rp's precompute")
            page.get_by_text("of test #0;").first.wait_for(timeout=900_000)
            times = []
            for row in range(1, 11):
                t0 = time.perf_counter()
                page.get_by_role("button", name=f"#{row}", exact=True).click()
                page.get_by_text(f"of test #{row};").first.wait_for(timeout=60_000)
                page.wait_for_function("[...document.querySelectorAll('img')].every(i => i.complete)", timeout=60_000)
                times.append(time.perf_counter() - t0)
            return {"clicks": len(times), "median_s": statistics.median(times), "max_s": max(times)}
        finally:
            proc.terminate()


def polling(browser, scenario: str, pages: int, log) -> dict:
    with tempfile.TemporaryDirectory() as alone:
        log(f"polling: training {scenario} alone")
        t_alone = _train_alone(scenario, alone)
    with tempfile.TemporaryDirectory() as cache:
        proc, url = _server(cache)
        try:
            with CpuMeter(proc.pid) as meter:
                opened = [browser.new_page() for _ in range(pages)]
                for p in opened:
                    p.goto(f"{url}/?scenario={scenario}", wait_until="commit", timeout=120_000)
                log(f"polling: training {scenario} with {pages} pages open")
                opened[0].get_by_text("Test accuracy").first.wait_for(timeout=1_800_000)
        finally:
            proc.terminate()
        t_pages = _trained_seconds(scenario, cache)
    return {"scenario": scenario, "pages": pages, "alone_s": t_alone, "with_pages_s": t_pages,
            "ratio": t_pages / t_alone, "target": 1.3, "cpu_seconds": meter.seconds(),
            "server_rss_peak_gib": round(meter.rss_gib, 2)}


def memory(browser, scenarios: list[str], log) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        proc, url = _server(cache)
        try:
            with CpuMeter(proc.pid) as meter:
                t0 = time.perf_counter()
                opened = [browser.new_page() for _ in scenarios]
                for p, name in zip(opened, scenarios, strict=True):
                    p.goto(f"{url}/?scenario={name}", wait_until="commit", timeout=120_000)
                log(f"memory: {len(scenarios)} pages, one per scenario, waiting for every model")
                for p, name in zip(opened, scenarios, strict=True):
                    p.get_by_text("Test accuracy").first.wait_for(timeout=3_600_000)
                    log(f"memory: {name} shows its model after {time.perf_counter() - t0:.0f} s, "
                        f"peak so far {meter.total_rss_gib:.2f} GiB")
                seconds = time.perf_counter() - t0
        finally:
            proc.terminate()
    return {"scenarios": scenarios, "seconds": round(seconds, 1), "server_rss_peak_gib": round(meter.rss_gib, 2),
            "server_and_workers_rss_peak_gib": round(meter.total_rss_gib, 2), "cpu_seconds": meter.seconds()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=5)
    ap.add_argument("--scenario", default="mnist-superclass", help="an uncached scenario to train (default mnist-superclass)")
    ap.add_argument("--memory-scenarios", default="mnist,mnist-noisy,fashion-mnist,agnews,cifar10",
                    help="comma-separated uncached scenarios, one page each (part 3)")
    ap.add_argument("--skip", choices=["redraw", "polling", "memory"], action="append", default=[])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    def log(m: str) -> None:
        print(f"[app-timing {time.strftime('%H:%M:%S')}] {m}", file=sys.stderr)

    out: dict = {"cpus": os.cpu_count()}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        if "redraw" not in args.skip:
            out["redraw"] = redraw(browser, log)
            log(f"redraw: {json.dumps(out['redraw'])}")
        if "polling" not in args.skip:
            out["polling"] = polling(browser, args.scenario, args.pages, log)
        if "memory" not in args.skip:
            out["memory"] = memory(browser, args.memory_scenarios.split(","), log)
        browser.close()
    print(json.dumps(out, indent=1) if args.json else out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
