"""Streaming aggregation benchmark: mlprep's streaming engine against a plain Python dict loop,
the pandas batch groupby (the oracle) and, when installed, PyFlink.

    python bench/stream_agg.py --events 2000000 --out bench/results/stream_agg.json

N events, 50k keys, ~1% arriving out of order by up to 30 s; a 5-minute tumbling window with
count / sum / mean / max / count_distinct. PyFlink runs the same window as Flink SQL
(bench/flink_window.py) in its own environment, `make flink-venv`; its wall time includes the
JVM and job start-up, also reported alone (`startup_s`). Events are generated in memory first (the same
arrival order for everyone), so the figures are the aggregation's, not JSON parsing's. mlprep
runs as a true stream: micro-batches, per-event watermark (bound 30 s), late handling, and a
checkpoint of its state every 10 batches. Each contender runs in its own process; peak RSS is
that process's VmHWM.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["mlprep", "python_loop", "pandas_batch", "pyflink"]
SIZE = 300_000
BOUND = 30_000


def make_events(n: int, seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    rate = 200  # events per second of event time: a 5-minute window holds ~60k events
    t = np.sort(rng.integers(0, n * 1000 // rate, n)).astype(np.int64) + 1_793_491_200_000
    delay = np.where(rng.random(n) < 0.01, rng.integers(1, BOUND, n), 0)
    order = np.argsort(t + delay, kind="stable")
    return {"key": rng.integers(0, 50_000, n)[order], "t": t[order],
            "amount": np.round(rng.lognormal(3, 1, n), 2)[order], "merchant": rng.integers(0, 5_000, n)[order]}


def run_mlprep(ev: dict[str, np.ndarray], batch: int = 65_536) -> tuple[Callable[[], dict], list[float]]:
    import polars as pl

    from mlprep.stream.engine import Aggregator, save_state
    from mlprep.stream.spec import load_spec

    spec = load_spec({"name": "b", "entity": ["key"], "event_time": {"field": "t", "format": "epoch_ms"},
                      "fields": {"amount": "double", "merchant": "long"}, "max_out_of_orderness": BOUND,
                      "allowed_lateness": 0, "windows": [{"type": "tumbling", "size": SIZE}],
                      "aggregations": [{"name": "n", "function": "count"},
                                       {"name": "s", "function": "sum", "column": "amount"},
                                       {"name": "m", "function": "mean", "column": "amount"},
                                       {"name": "x", "function": "max", "column": "amount"},
                                       {"name": "d", "function": "count_distinct", "column": "merchant"}]})
    n = len(ev["t"])
    df = pl.DataFrame({"key": ev["key"], "_t": ev["t"], "_seq": np.arange(n, dtype=np.int64),
                       "_pos": np.arange(n, dtype=np.int64), "amount": ev["amount"], "merchant": ev["merchant"]})
    agg = Aggregator(spec)
    out, lags = [], []
    with tempfile.TemporaryDirectory() as ck:
        for i, start in enumerate(range(0, n, batch)):
            arrived = time.perf_counter()
            r = agg.process(df.slice(start, batch))
            if not r.emitted.is_empty():
                lags.append((time.perf_counter() - arrived) * 1000)
                out.append(r.emitted)
            if i % 10 == 9:
                save_state(agg, ck)
        r = agg.flush()
        out.append(r.emitted)
    res = pl.concat([o for o in out if not o.is_empty()], how="diagonal_relaxed")
    return lambda: _to_dict(res["key"], res["window_start"], res["n_5m"], res["s_5m"], res["x_5m"], res["d_5m"]), lags


def run_python_loop(ev: dict[str, np.ndarray]) -> tuple[Callable[[], dict], list[float]]:
    """The same semantics, one event at a time, in plain Python dicts (windows fire in start
    order from a heap as the watermark passes their end)."""
    import heapq

    state: dict[tuple[int, int], list] = {}
    by_start: dict[int, list[int]] = {}
    starts: list[int] = []
    max_ts = None
    out = {}
    keys, ts, am, me = (ev[k].tolist() for k in ("key", "t", "amount", "merchant"))
    for k, t, a, m in zip(keys, ts, am, me, strict=True):
        start = t - t % SIZE
        if max_ts is not None and start + SIZE <= max_ts - BOUND:
            continue  # late
        s = state.get((k, start))
        if s is None:
            s = state[(k, start)] = [0, 0.0, float("-inf"), set()]
            if start not in by_start:
                by_start[start] = []
                heapq.heappush(starts, start)
            by_start[start].append(k)
        s[0] += 1
        s[1] += a
        s[2] = max(s[2], a)
        s[3].add(m)
        if max_ts is None or t > max_ts:
            max_ts = t
            while starts and starts[0] + SIZE <= max_ts - BOUND:  # fire and purge
                st = heapq.heappop(starts)
                for key in by_start.pop(st):
                    v = state.pop((key, st))
                    out[(key, st)] = (v[0], v[1], v[2], len(v[3]))
    for g, v in state.items():
        out[g] = (v[0], v[1], v[2], len(v[3]))
    return lambda: out, []


def run_pandas_batch(ev: dict[str, np.ndarray]) -> tuple[Callable[[], dict], list[float]]:
    import pandas as pd

    df = pd.DataFrame(ev)
    df["start"] = df["t"] - df["t"] % SIZE
    g = df.groupby(["key", "start"]).agg(n=("t", "size"), s=("amount", "sum"), x=("amount", "max"),
                                         d=("merchant", "nunique")).reset_index()
    return lambda: _to_dict(g["key"], g["start"], g["n"], g["s"], g["x"], g["d"]), []


def _to_dict(k, s, n, sm, x, d) -> dict:
    return {(int(a), int(b)): (int(c), float(e), float(f), int(h))
            for a, b, c, e, f, h in zip(*(list(c) for c in (k, s, n, sm, x, d)), strict=True)}


def matches(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    return all(x[0] == y[0] and x[3] == y[3] and abs(x[1] - y[1]) <= 1e-9 * max(1, abs(y[1])) and x[2] == y[2]
               for k in a for x, y in [(a[k], b[k])])


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(name: str, n: int, out: str) -> None:
    ev = make_events(n)
    base_rss = peak_rss_mb()
    if name == "pyflink":
        return child_pyflink(ev, n, out)
    fn = {"mlprep": run_mlprep, "python_loop": run_python_loop, "pandas_batch": run_pandas_batch}[name]
    # libraries are loaded before the clock starts: the figure is throughput, not start-up
    import pandas  # noqa: F401
    import polars  # noqa: F401

    import mlprep.stream.engine
    import mlprep.stream.spec  # noqa: F401
    t = time.perf_counter()
    result, lags = fn(ev)  # the run; turning its result into Python for the comparison is not timed
    wall = time.perf_counter() - t
    peak = peak_rss_mb()  # before the comparison builds Python objects
    res = result()
    oracle = run_pandas_batch(ev)[0]() if name != "pandas_batch" else res
    Path(out).write_text(json.dumps({
        "wall_s": round(wall, 3), "events_per_s": round(n / wall), "peak_rss_mb": round(peak, 1),
        "rss_before_run_mb": round(base_rss, 1), "matches_oracle": matches(res, oracle),
        "p99_emit_lag_ms": round(float(np.percentile(lags, 99)), 2) if lags else None, "windows": len(res)}))


FLINK_PYTHON = Path(os.environ.get("MLPREP_FLINK_PYTHON", ROOT / ".venv-flink" / "bin" / "python"))


def _tree_rss_mb(root: int) -> float:
    """Resident memory of a process and all its descendants (from /proc), in MB."""
    parent: dict[int, int] = {}
    rss: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "status").read_text().splitlines()
        except OSError:
            continue
        info = dict(line.split(":", 1) for line in fields if ":" in line)
        parent[int(d.name)] = int(info.get("PPid", "0").strip())
        rss[int(d.name)] = int(info.get("VmRSS", "0 kB").split()[0])

    def under(pid: int) -> bool:
        while pid > 1:
            if pid == root:
                return True
            pid = parent.get(pid, 0)
        return False

    return sum(v for p, v in rss.items() if under(p)) / 1024


def child_pyflink(ev: dict[str, np.ndarray], n: int, out: str) -> None:
    """Flink SQL on the local mini-cluster, in its own environment (`make flink-venv`)."""
    import resource
    import shutil

    if not FLINK_PYTHON.exists():
        raise SystemExit(3)
    script = ROOT / "bench" / "flink_window.py"
    with tempfile.TemporaryDirectory() as d:
        csv, res = Path(d) / "events.csv", Path(d) / "out"
        cols = np.column_stack([ev["key"], ev["t"], ev["amount"], ev["merchant"]])
        np.savetxt(csv, cols, fmt=["%d", "%d", "%.2f", "%d"], delimiter=",")
        np.savetxt(Path(d) / "one.csv", cols[:1], fmt=["%d", "%d", "%.2f", "%d"], delimiter=",")
        t = time.perf_counter()  # start-up: the same job on one event
        subprocess.run([str(FLINK_PYTHON), str(script), str(Path(d) / "one.csv"), str(Path(d) / "o1")],
                       check=True, capture_output=True)
        startup = time.perf_counter() - t
        shutil.rmtree(Path(d) / "o1", ignore_errors=True)
        t = time.perf_counter()
        proc = subprocess.Popen([str(FLINK_PYTHON), str(script), str(csv), str(res)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak = 0.0
        while proc.poll() is None:  # the JVM is a grandchild: sample the whole process tree
            peak = max(peak, _tree_rss_mb(proc.pid))
            time.sleep(0.2)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit("pyflink job failed")
        peak = max(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
        got = {}
        for f in res.rglob("part-*"):
            for line in f.read_text().splitlines():
                k, ws, cnt, sm, mx, dd = line.split(",")
                got[(int(k), int(ws))] = (int(cnt), float(sm), float(mx), int(dd))
    oracle = run_pandas_batch(ev)[0]()
    Path(out).write_text(json.dumps({
        "wall_s": round(wall, 3), "events_per_s": round(n / wall), "startup_s": round(startup, 3),
        "events_per_s_after_startup": round(n / max(wall - startup, 1e-9)), "peak_rss_mb": round(peak, 1),
        "matches_oracle": matches(got, oracle), "p99_emit_lag_ms": None, "windows": len(got)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "stream_agg.json"))
    ap.add_argument("--only", nargs="*", default=NAMES, choices=NAMES)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], int(a.child[1]), a.child[2])
        return
    results = []
    with tempfile.TemporaryDirectory() as d:
        for name in a.only:
            f = Path(d) / f"{name}.json"
            p = subprocess.run([sys.executable, __file__, "--child", name, str(a.events), str(f)],
                               env=dict(os.environ, MLPREP_PROGRESS="0"))
            if p.returncode == 3:
                results.append({"name": name, "skipped": f"no PyFlink environment at {FLINK_PYTHON} (make flink-venv)"})
                print(f"{name:13s} skipped (not installed)", flush=True)
                continue
            if p.returncode != 0:
                raise SystemExit(f"{name} failed")
            r = {"name": name, **json.loads(f.read_text())}
            results.append(r)
            print(f"{name:13s} {r['wall_s']:8.2f} s {r['events_per_s']:>12,} ev/s {r['peak_rss_mb']:8.0f} MB"
                  f" matches={r['matches_oracle']} p99 lag={r['p99_emit_lag_ms']} ms", flush=True)
    by = {r["name"]: r for r in results if "wall_s" in r}
    ratios = {f"mlprep_speed_over_{k}": round(by["mlprep"]["events_per_s"] / v["events_per_s"], 2)
              for k, v in by.items() if k != "mlprep" and "mlprep" in by}
    doc = {"events": a.events, "keys": 50_000, "window": "tumbling 5m", "results": results, "ratios": ratios,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "date": time.strftime("%Y-%m-%d")}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
