"""The fraud pipeline executed locally, against its floor: the same step scripts run directly
one after another (no executor: no staging, no container conventions, no registry).

    python bench/pipeline_local.py --rows 20000 --rounds 3 --out bench/results/pipeline_local.json

One data set, one definition (built once with the SDK, offline, timed), then rounds that
alternate (the order rotates) two contenders, each from a fresh copy of the staged inputs:

- **executor**: ``mlprep pipeline run`` cold (every step executes, the endpoint is started and
  answers), then the same run again (steps served from the cache);
- **direct**: ``preprocess.py``, ``train.py`` and ``evaluate.py`` by hand on the same inputs, then
  the trained model served by its own ``inference.py`` handlers behind a bare HTTP server until
  it answers (what the Endpoint step does, without the registry); with ``--baseline-evaluate``,
  an older ``evaluate.py`` on the same model and test set.

Reported as medians over rounds: wall seconds and CPU seconds (the process trees, endpoint
servers included), the ratio executor / direct both for the three scripts alone (the figure
recorded before) and for the whole pipeline (scripts + serving: like for like), and per step the
executor's step time against its script's. SageMaker's own local mode needs Docker (absent here).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRAUD = ROOT / "pipelines" / "fraud"
SCRIPTS = {"PreprocessFraudData": "preprocess", "TrainFraudModel": "train", "EvaluateFraudModel": "evaluate"}
SERVE = """import importlib.util, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
spec = importlib.util.spec_from_file_location("inference", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
model = m.model_fn(sys.argv[2])
class Ping(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
server = HTTPServer(("127.0.0.1", 0), Ping)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str], **kw) -> tuple[float, float]:
    """(wall s, CPU s of the waited-for process tree)."""
    c, t = _cpu(), time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{p.stderr[-3000:]}")
    return time.perf_counter() - t, _cpu() - c


def serve_directly(model_dir: Path) -> tuple[float, float]:
    """Start a bare server of the model's inference handlers; (wall s, CPU s) until it answers."""
    c, t = _cpu(), time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(FRAUD / "inference.py"), str(model_dir)],
                            stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=30) as r:
        assert r.status == 200
    wall = time.perf_counter() - t
    proc.terminate()
    proc.wait()
    return wall, _cpu() - c


def endpoint_cpu_and_stop(home: Path) -> float:
    """CPU seconds of the endpoint servers under ``home`` (detached: not our children), then stop them."""
    import psutil

    from mlprep.pipeline import serve
    from mlprep.pipeline.registry import Registry

    cpu = 0.0
    for e in Registry(home).endpoints():
        try:
            t = psutil.Process(int(e["Pid"])).cpu_times()
            cpu += t.user + t.system
        except psutil.Error:
            pass
        serve.stop(int(e["Pid"]))
    return cpu


def run_executor(definition: Path, staged: Path, home: Path) -> dict:
    """Cold run on a fresh copy of the staged inputs, then a cached run; per-step seconds."""
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(staged, home)
    cmd = [sys.executable, "-m", "mlprep", "pipeline", "run", str(definition), "--home", str(home), "--quiet"]
    wall, cpu = timed(cmd)
    cpu += endpoint_cpu_and_stop(home)
    (execution,) = list((home / "executions").glob("*/*/steps.json"))
    steps = {s["StepName"]: s["Seconds"] for s in json.loads(execution.read_text())["PipelineExecutionSteps"]}
    cached_wall, cached_cpu = timed(cmd)
    cached_cpu += endpoint_cpu_and_stop(home)
    return {"executor": (wall, cpu), "executor_cached": (cached_wall, cached_cpu), "steps": steps}


def run_direct(staged: Path, base: Path, baseline_evaluate: Path | None) -> dict:
    """The scripts by hand on a fresh copy of the same inputs, then the model served (and an older
    evaluate.py on the same model and test set, if given)."""
    shutil.rmtree(base, ignore_errors=True)
    shutil.copytree(staged / "s3" / "mlprep-demo" / "mlprep-fraud" / "input", base / "input")
    env = {**os.environ, "SM_CHANNEL_TRAIN": str(base / "train"), "SM_CHANNEL_VALIDATION": str(base / "validation"),
           "SM_MODEL_DIR": str(base / "model")}
    py, out = sys.executable, {}
    out["preprocess"] = timed([py, str(FRAUD / "preprocess.py"), "--base-dir", str(base), "--train-end", "2026-11-05",
                               "--validation-end", "2026-11-06"])
    out["train"] = timed([py, str(FRAUD / "train.py")], env=env)
    out["evaluate"] = timed([py, str(FRAUD / "evaluate.py"), "--base-dir", str(base)])
    out["serve"] = serve_directly(base / "model")
    if baseline_evaluate:
        out["evaluate_baseline"] = timed([py, str(baseline_evaluate), "--base-dir", str(base)])
    scripts = [out[k] for k in ("preprocess", "train", "evaluate")]
    out["direct_scripts"] = (sum(w for w, _ in scripts), sum(c for _, c in scripts))
    out["direct_whole"] = (out["direct_scripts"][0] + out["serve"][0], out["direct_scripts"][1] + out["serve"][1])
    return out


def prepare(d: Path, rows: int) -> tuple[Path, Path, float]:
    """Data, the batch table and the stream's offline store staged where the pipeline's
    parameters point (``d/staged``); the definition built once. Returns (definition, staged, build s)."""
    from mlprep.batch.job import run_job
    from mlprep.datasets.payments import generate
    from mlprep.pipeline import build
    from mlprep.pipeline.storage import Storage
    from mlprep.stream.runner import run_stream

    stage_inputs = build.load_module(f"{FRAUD / 'pipeline.py'}:get_pipeline").stage_inputs  # by path
    data = generate(d / "data", rows=rows, seed=7)
    run_job(ROOT / "conf" / "batch" / "transactions.yaml", {"data_dir": str(d / "data"), "out_dir": str(d / "out")},
            progress=False)
    run_stream(ROOT / "conf" / "features" / "transactions.yaml", str(data.events), d / "stream", progress=False)
    staged = d / "staged"
    stage_inputs(Storage(root=staged / "s3"), data.labels, d / "out" / "curated" / "transactions",
                 d / "stream" / "offline")
    definition = d / "mlprep-fraud.json"
    build_s, _ = timed([sys.executable, str(ROOT / "pipelines" / "get_pipeline_definition.py"), "--out", str(definition)])
    return definition, staged, build_s


def _med(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def summarize(rounds: list[dict]) -> dict:
    """Medians of each figure, and of the per-round ratios (a busy moment hits both sides)."""
    res: dict = {}
    for k in ("executor", "executor_cached", "direct_scripts", "direct_whole", "preprocess", "train", "evaluate",
              "evaluate_baseline", "serve"):
        if k not in rounds[0]:
            continue
        res[k] = {"wall_s": _med([r[k][0] for r in rounds]), "cpu_s": _med([r[k][1] for r in rounds]),
                  "wall_all_s": [round(r[k][0], 2) for r in rounds]}
    for name, floor in (("scripts", "direct_scripts"), ("whole", "direct_whole")):
        res[f"ratio_vs_{name}"] = {"wall": _med([r["executor"][0] / r[floor][0] for r in rounds]),
                                   "cpu": _med([r["executor"][1] / r[floor][1] for r in rounds])}
    res["steps_s"] = {s: _med([r["steps"][s] for r in rounds]) for s in rounds[0]["steps"]}
    res["step_minus_script_s"] = {s: _med([r["steps"][s] - r[k][0] for r in rounds]) for s, k in SCRIPTS.items()}
    res["endpoint_minus_serve_s"] = _med([r["steps"]["FraudEndpoint"] - r["serve"][0] for r in rounds])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline-evaluate", type=Path, help="an older evaluate.py, timed after the direct scripts "
                    "on the same model and test set (e.g. `git show COMMIT:pipelines/fraud/evaluate.py > FILE`)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "pipeline_local.json"))
    a = ap.parse_args()
    out = Path(a.out).resolve()
    with tempfile.TemporaryDirectory(prefix="bench-pipe-") as tmp:
        d = Path(tmp)
        definition, staged, build_s = prepare(d, a.rows)
        contenders = {"executor": lambda: run_executor(definition, staged, d / "home"),
                      "direct": lambda: run_direct(staged, d / "direct", a.baseline_evaluate)}
        rounds = []
        for r in range(a.rounds):
            names = list(contenders)[r % 2:] + list(contenders)[:r % 2]
            rounds.append({k: v for name in names for k, v in contenders[name]().items()})
            print(f"  round {r + 1}/{a.rounds}: executor {rounds[-1]['executor'][0]:.1f} s, direct scripts "
                  f"{rounds[-1]['direct_scripts'][0]:.1f} s + serve {rounds[-1]['serve'][0]:.1f} s", file=sys.stderr)
    result = {"rows": a.rows, "rounds": a.rounds,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
              "goals": {"ratio_vs_scripts": 1.1, "EvaluateFraudModel_s": 5.0},
              "definition_s": round(build_s, 2), **summarize(rounds)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
