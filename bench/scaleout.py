"""How each engine's cost grows with the work: the embedded engines against the scale-out ones,
side by side in one run, at several sizes.

    python bench/scaleout.py --sizes 1000000,2000000,5000000 --out bench/results/scaleout.json

Streams: the demo feature spec (5-minute tumbling, 10-minute hopping every minute, 10-minute
sessions; six aggregates each) over the same events.jsonl replay, by mlprep's embedded engine
and by the spec compiled to Flink SQL on PyFlink's local mini-cluster (`make flink-venv`);
Flink's start-up is measured on a one-event file and reported apart. Batch: the demo batch job
on the embedded DuckDB engine and on Spark local[2] (`--engine spark`; the same accounting is
asserted), Spark's session start reported apart. Each run is a fresh process; peak RSS is its own (Flink: the driver and JVM together,
sampled every 0.2 s).

The data's event-time span grows with its size (7 days per million rows), as real traffic grows
by time; ``--fixed-span`` adds the stream on the same rows over 7 days (denser as it grows).
``--baseline REV`` also runs the stream with another git revision's mlprep on the same data, in
the same run (sizes up to ``--baseline-max``), and reports the speed-up in events/s and CPU.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "conf" / "features" / "transactions.yaml"
JOB = ROOT / "conf" / "batch" / "transactions.yaml"

# the process's own peak RSS: VmHWM (ru_maxrss keeps the parent's peak across fork + exec, so a
# child of this 1 GB driver would report at least 1 GB)
HWM = """
def hwm_mb():
    with open("/proc/self/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("VmHWM:")) / 1024
"""

EMBEDDED_STREAM = HWM + """
import json, sys, time, resource
t0 = time.perf_counter()
from mlprep.stream.runner import run_stream
s = run_stream(sys.argv[1], sys.argv[2], sys.argv[3])
wall = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "events": s["events"], "emitted": s["emitted"],
                  "peak_rss_mb": hwm_mb()}))
"""

EMBEDDED_BATCH = HWM + """
import json, sys, time, resource
t0 = time.perf_counter()
from mlprep.batch.job import run_job
r = run_job(sys.argv[1], {"data_dir": sys.argv[2], "out_dir": sys.argv[3]}, progress=False)
wall = time.perf_counter() - t0
print(json.dumps({"wall_s": wall, "rows": r.rows,
                  "peak_rss_mb": hwm_mb()}))
"""

SPARK_BATCH = """
import json, sys, time
t0 = time.perf_counter()
from mlprep.batch.engines.spark import SparkEngine, session
from mlprep.batch.job import run_job
spark = session("local[2]")
started = time.perf_counter() - t0
r = run_job(sys.argv[1], {"data_dir": sys.argv[2], "out_dir": sys.argv[3]}, engine=SparkEngine(spark), progress=False)
wall = time.perf_counter() - t0
spark.stop()
print(json.dumps({"wall_s": wall, "session_s": started, "rows": r.rows}))
"""


def _sampled(cmd: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> tuple[str, int]:
    """Run ``cmd``; its stdout and the peak RSS (bytes) of its whole process tree, sampled."""
    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    peak = 0
    while proc.poll() is None:
        try:
            root = psutil.Process(proc.pid)
            peak = max(peak, sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]))
        except psutil.Error:
            pass
        time.sleep(0.2)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(err[-3000:])
    return out, peak


def _py(code: str, *args: str, path: Path | None = None) -> dict:
    """A fresh Python process (with ``path``: importing mlprep from there; run outside the
    checkout, whose folder ``-c`` would put first); peak RSS of its whole tree (a JVM for
    Spark), sampled."""
    env = {**os.environ, "PYTHONPATH": str(path)} if path else None
    out, peak = _sampled([sys.executable, "-c", code, *args], env, cwd=tempfile.gettempdir())
    r = json.loads(out.strip().splitlines()[-1])
    r["peak_rss_mb"] = max(r.get("peak_rss_mb", 0), peak / 2**20)
    return r


def _flink(sql: Path) -> dict:
    """PyFlink's driver and its JVM: wall time, and peak RSS of the whole process tree (sampled)."""
    from mlprep.stream.flink import FLINK_PYTHON

    t0 = time.perf_counter()
    _out, peak = _sampled([str(FLINK_PYTHON), str(ROOT / "mlprep" / "stream" / "flink_job.py"), str(sql)])
    return {"wall_s": time.perf_counter() - t0, "peak_rss_mb": peak / 2**20}


def _count_rows(folder: Path) -> int:
    return sum(sum(1 for _ in open(f)) for f in folder.rglob("part-*"))


def _stream_row(e: dict, n: int) -> dict:
    return {"wall_s": round(e["wall_s"], 2), "cpu_s": round(e["cpu_s"], 2), "events_per_s": round(n / e["wall_s"]),
            "cpu_us_per_event": round(e["cpu_s"] / n * 1e6, 2), "peak_rss_mb": round(e["peak_rss_mb"]),
            "feature_rows": e["emitted"]}


def _baseline(rev: str, d: Path) -> Path:
    """The mlprep package of git revision ``rev``, exported under ``d``."""
    subprocess.run(f"git -C {ROOT} archive {rev} mlprep | tar -x -C {d}", shell=True, check=True)
    return d


def _embedded_stream(r: dict, n: int, d: Path, data: Path, baseline: Path | None, fixed: Path | None) -> None:
    """The embedded engine on ``data``; the baseline revision's on the same data (same run, so
    the ratio holds on a noisy machine); and on ``fixed`` (the same rows over 7 days)."""
    e = _py(EMBEDDED_STREAM, str(SPEC), str(data / "events.jsonl"), str(d / f"emb{n}"))
    r["stream_embedded"] = _stream_row(e, n)
    if baseline:
        old = _py(EMBEDDED_STREAM, str(SPEC), str(data / "events.jsonl"), str(d / f"base{n}"), path=baseline)
        assert old["emitted"] == e["emitted"], (old["emitted"], e["emitted"])  # the same feature rows
        r["stream_embedded_baseline"] = _stream_row(old, n)
        r["stream_speedup_over_baseline"] = {"events_per_s": round(old["wall_s"] / e["wall_s"], 2),
                                             "cpu": round(old["cpu_s"] / e["cpu_s"], 2)}
    if fixed:
        r["stream_embedded_fixed_span"] = _stream_row(
            _py(EMBEDDED_STREAM, str(SPEC), str(fixed / "events.jsonl"), str(d / f"fix{n}")), n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,2000000,5000000")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "scaleout.json"))
    ap.add_argument("--baseline", metavar="REV", help="also run the stream with this git revision's mlprep")
    ap.add_argument("--baseline-max", type=int, default=1_000_000, help="sizes up to this run the baseline too")
    ap.add_argument("--fixed-span", action="store_true",
                    help="also run the stream on the same rows over a fixed 7 days (denser as it grows)")
    a = ap.parse_args()
    from mlprep.datasets.payments import generate
    from mlprep.stream.flink import Endpoint, compile_sql
    from mlprep.stream.spec import load_spec

    spec = load_spec(SPEC)
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "sizes": {},
               "data": "mlprep data generate --rows N --days 7*N/1M (the span grows with the size, as traffic"
                       " does; users = rows/50)", "baseline": a.baseline}
    with tempfile.TemporaryDirectory(prefix="scaleout-") as tmp:
        d = Path(tmp)
        base = _baseline(a.baseline, Path(tempfile.mkdtemp(dir=d))) if a.baseline else None
        one = d / "one.jsonl"
        one.write_text('{"user_id": "u1", "ts": "2026-11-01T00:00:00.000Z", "amount": 1.0, "merchant_id": "m1"}\n')
        sql = d / "one.sql"
        sql.write_text(compile_sql(spec, Endpoint("filesystem", path=str(one)), Endpoint("filesystem", path=str(d / "o1"))))
        results["flink_startup_s"] = round(_flink(sql)["wall_s"], 2)
        results["embedded_stream_startup_s"] = round(_py(EMBEDDED_STREAM, str(SPEC), str(one), str(d / "e1"))["wall_s"], 2)
        tiny = d / "tiny"
        generate(tiny, rows=1000, seed=1)
        sb = _py(SPARK_BATCH, str(JOB), str(tiny), str(d / "sb1"))
        results["spark_startup_s"] = round(sb["session_s"], 2)
        results["spark_batch_1000_rows_s"] = round(sb["wall_s"], 2)
        results["embedded_batch_1000_rows_s"] = round(_py(EMBEDDED_BATCH, str(JOB), str(tiny), str(d / "eb1"))["wall_s"], 2)
        for n in (int(x) for x in a.sizes.split(",")):
            data, fixed = d / f"data{n}", d / f"fixed{n}" if a.fixed_span else None
            generate(data, rows=n, seed=7, days=max(7, round(7 * n / 1_000_000)))
            if fixed:
                generate(fixed, rows=n, seed=7)
            r: dict = {}
            _embedded_stream(r, n, d, data, base if n <= a.baseline_max else None, fixed)
            e = r["stream_embedded"]
            sql = d / f"job{n}.sql"
            sql.write_text(compile_sql(spec, Endpoint("filesystem", path=str(data / "events.jsonl")),
                                       Endpoint("filesystem", path=str(d / f"flink{n}"))))
            f = _flink(sql)
            run_s = max(f["wall_s"] - results["flink_startup_s"], 1e-3)
            r["stream_flink_local"] = {"wall_s": round(f["wall_s"], 2), "events_per_s": round(n / f["wall_s"]),
                                       "events_per_s_after_startup": round(n / run_s),
                                       "peak_rss_mb": round(f["peak_rss_mb"]),
                                       "feature_rows": _count_rows(d / f"flink{n}")}
            b = _py(EMBEDDED_BATCH, str(JOB), str(data), str(d / f"batch{n}"))
            r["batch_embedded"] = {"wall_s": round(b["wall_s"], 2), "rows_per_s": round(n / b["wall_s"]),
                                   "peak_rss_mb": round(b["peak_rss_mb"])}
            sp = _py(SPARK_BATCH, str(JOB), str(data), str(d / f"spark{n}"))
            assert sp["rows"] == b["rows"], (sp["rows"], b["rows"])  # the same job, the same accounting
            r["batch_spark_local"] = {"wall_s": round(sp["wall_s"], 2), "rows_per_s": round(n / sp["wall_s"]),
                                      "rows_per_s_after_startup": round(n / max(sp["wall_s"] - sp["session_s"], 1e-3)),
                                      "peak_rss_mb": round(sp["peak_rss_mb"])}
            r["stream_ratio_flink_over_embedded"] = round(f["wall_s"] / e["wall_s"], 1)
            r["batch_ratio_spark_over_embedded"] = round(sp["wall_s"] / b["wall_s"], 1)
            results["sizes"][str(n)] = r
            print(json.dumps({n: r}), flush=True)
            for p in (data, fixed or data, *(d / f"{x}{n}" for x in ("emb", "base", "fix", "flink", "batch", "spark"))):
                subprocess.run(["rm", "-rf", str(p)], check=False)
    sizes = sorted(int(k) for k in results["sizes"])
    if len(sizes) > 1:  # flat means the largest size runs at the smallest's rate
        lo, hi = (results["sizes"][str(k)]["stream_embedded"] for k in (sizes[0], sizes[-1]))
        results["stream_embedded_largest_over_smallest"] = {
            "events_per_s": round(hi["events_per_s"] / lo["events_per_s"], 3),
            "cpu_per_event": round(hi["cpu_us_per_event"] / lo["cpu_us_per_event"], 3)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
