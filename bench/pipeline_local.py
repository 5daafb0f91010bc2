"""The fraud pipeline executed locally, against its floor: the same step scripts run directly
one after another (no executor: no staging, no container conventions, no registry, no endpoint).

    python bench/pipeline_local.py --rows 20000 --out bench/results/pipeline_local.json

Reported, in one run on the same data: building the definition with the SDK (offline),
`mlprep pipeline run` cold (every step executes, endpoint started), the same run again (steps
served from the cache), and the direct scripts; ratio = executor cold / direct. SageMaker's own
local mode needs Docker (absent here); on AWS the abalone example takes about an hour.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRAUD = ROOT / "pipelines" / "fraud" / "pipeline.py"


def timed(cmd: list[str], **kw) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{p.stderr[-3000:]}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "pipeline_local.json"))
    a = ap.parse_args()
    from mlprep.batch.job import run_job
    from mlprep.datasets.payments import generate
    from mlprep.pipeline import build, serve
    from mlprep.pipeline.registry import Registry
    from mlprep.pipeline.storage import Storage
    from mlprep.stream.runner import run_stream

    stage_inputs = build.load_module(f"{FRAUD}:get_pipeline").stage_inputs  # by path: sys.path untouched

    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-pipe-") as tmp:
        d = Path(tmp)
        data = generate(d / "data", rows=a.rows, seed=7)
        run_job(ROOT / "conf" / "batch" / "transactions.yaml", {"data_dir": str(d / "data"), "out_dir": str(d / "out")},
                progress=False)
        run_stream(ROOT / "conf" / "features" / "transactions.yaml", str(data.events), d / "stream", progress=False)
        home = d / "home"
        stage_inputs(Storage(root=home / "s3"), data.labels, d / "out" / "curated" / "transactions",
                     d / "stream" / "offline")
        definition = d / "mlprep-fraud.json"
        r = {"definition_s": timed([py, str(ROOT / "pipelines" / "get_pipeline_definition.py"), "--out", str(definition)])}
        run = [py, "-m", "mlprep", "pipeline", "run", str(definition), "--home", str(home), "--quiet"]
        r["executor_cold_s"] = timed(run)
        r["executor_cached_s"] = timed(run)
        for e in Registry(home).endpoints():
            serve.stop(int(e["Pid"]))

        # the floor: the scripts by hand, on the same inputs
        base = d / "direct"
        shutil.copytree(home / "s3" / "mlprep-demo" / "mlprep-fraud" / "input", base / "input")
        env = {**os.environ, "SM_CHANNEL_TRAIN": str(base / "train"), "SM_CHANNEL_VALIDATION": str(base / "validation"),
               "SM_MODEL_DIR": str(base / "model")}
        steps = ROOT / "pipelines" / "fraud"
        t = time.perf_counter()
        timed([py, str(steps / "preprocess.py"), "--base-dir", str(base), "--train-end", "2026-11-05",
               "--validation-end", "2026-11-06"])
        timed([py, str(steps / "train.py")], env=env)
        timed([py, str(steps / "evaluate.py"), "--base-dir", str(base)])
        r["direct_scripts_s"] = time.perf_counter() - t
    r = {k: round(v, 2) for k, v in r.items()}
    r["executor_overhead_ratio"] = round(r["executor_cold_s"] / r["direct_scripts_s"], 2)
    r["cached_vs_cold_ratio"] = round(r["executor_cached_s"] / r["executor_cold_s"], 2)
    result = {"rows": a.rows, "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "target": "whole local execution under 60 s", **r}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
