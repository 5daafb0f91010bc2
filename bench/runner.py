"""`mlprep run` against plain papermill on the same notebooks, kernel and parameters: the runner's
own cost per stage, and the time of a run whose every stage is skipped.

    python bench/runner.py --rounds 5 --out bench/results/runner.json
    python bench/runner.py --rounds 5 --real-rows 5000    # also the demo plan's three stages

Two plans. **trivial**: three parameterized notebooks written to a temporary folder (a few
lines each, stage 2 and 3 take the previous stage's output), so the notebooks' own work is
~nothing and what differs is the runner. **demo** (with ``--real-rows``): ``conf/run/demo.yaml``
on freshly generated data; there the work is tens of seconds, so its difference is noisier.

Contenders, each a fresh process as a user would start it, alternated (the order rotates every
round): ``mlprep run --force`` (every stage executes), the ``papermill`` CLI once per stage (the
plain way to run the same notebooks), papermill's Python API running the stages in one process
(one import of papermill: the floor), and ``mlprep run`` with every stage unchanged (skipped);
with ``--baseline-src``, an older mlprep the same two ways.
Reported per contender: median wall seconds and median CPU seconds (user + system of the process
tree, kernels included); overhead per stage = (mlprep - papermill) / stages, as medians of the
per-round differences, so a busy moment hits both sides of a pair.
"""

from __future__ import annotations

import argparse
import ast
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGES = ("s1", "s2", "s3")
BODY = 'y = x + 1\nprint(label, y)\nfrom mlprep.runner import outputs\noutputs.save({"y": y})\n'


# --- the plans ----------------------------------------------------------------------------------
def _notebook(path: Path, params: str, body: str) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def trivial_plan(d: Path) -> tuple[Path, list[tuple[Path, dict]]]:
    """Three notebooks chained by their outputs; returns the plan and, per stage, the notebook
    and the parameters mlprep will give it (for papermill)."""
    (d / "nb").mkdir(parents=True)
    for s in STAGES:
        _notebook(d / "nb" / f"{s}.ipynb", 'x: int = 0  # input\nlabel: str = ""  # printed', BODY)
    refs = ["${start}", "${s1.y}", "${s2.y}"]
    stages = "".join(f"  - name: {s}\n    notebook: nb/{s}.ipynb\n    parameters: {{x: \"{r}\", label: {s}}}\n"
                     for s, r in zip(STAGES, refs, strict=True))
    plan = d / "plan.yaml"
    plan.write_text(f"parameters:\n  start: {{type: int, default: 1}}\nstages:\n{stages}")
    return plan, [(d / "nb" / f"{s}.ipynb", {"x": 1 + i, "label": s}) for i, s in enumerate(STAGES)]


def injected(notebook: Path) -> dict:
    """The parameters papermill injected into an executed notebook (``name = literal`` lines)."""
    nb = json.loads(notebook.read_text())
    for cell in nb["cells"]:
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            tree = ast.parse("".join(cell["source"]))
            return {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)}
    raise SystemExit(f"{notebook}: no injected parameters")


# --- running and timing ---------------------------------------------------------------------------
def timed(cmd: list[str], env: dict[str, str] | None = None, keep: dict | None = None) -> tuple[float, float]:
    """(wall s, CPU s of the whole process tree: its waited-for descendants, kernels included);
    the process's output into ``keep`` if given."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd[:6]))} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    if keep is not None:
        keep.update(stdout=p.stdout, stderr=p.stderr)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def mlprep_cmd(plan: Path, runs: Path, extra: list[str], force: bool) -> list[str]:
    exe = [str(BIN / "mlprep")] if (BIN / "mlprep").exists() else [sys.executable, "-m", "mlprep"]
    return [*exe, "run", "--plan", str(plan), "--runs-dir", str(runs), "--no-output", *extra,
            *(["--force"] if force else [])]


def skipped(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """A run expected to skip every stage; says so on stderr when one ran (its key changed: e.g.
    mlprep's code, which the key hashes, was edited meanwhile)."""
    out: dict = {}
    times = timed(cmd, env, out)
    summary = json.loads((Path(out["stdout"].strip().splitlines()[-1]).parent / "summary.json").read_text())
    ran = [s["name"] for s in summary["stages"] if s["status"] != "skipped"]
    if ran:
        print(f"  not skipped: {', '.join(ran)}\n{out['stderr'][-1500:]}", file=sys.stderr)
        NOT_SKIPPED.append(ran)
    return times


NOT_SKIPPED: list[list[str]] = []


def papermill_cli(stages: list[tuple[Path, dict]], out: Path) -> tuple[float, float]:
    """One ``papermill`` process per stage, as mlprep's child runs it (log output, no bar)."""
    wall = cpu = 0.0
    for nb, params in stages:
        w, c = timed([str(BIN / "papermill"), str(nb), str(out / nb.name), "-k", "python3", "--cwd", str(nb.parent),
                      "--log-output", "--no-progress-bar", "-y", json.dumps(params)])
        wall, cpu = wall + w, cpu + c
    return wall, cpu


API = """import json, sys
import papermill as pm
for nb, out, params in json.loads(sys.argv[1]):
    pm.execute_notebook(nb, out, parameters=params, kernel_name="python3", cwd=str(__import__("pathlib").Path(nb).parent),
                        progress_bar=False, log_output=True)
"""


def papermill_api(stages: list[tuple[Path, dict]], out: Path) -> tuple[float, float]:
    jobs = [(str(nb), str(out / nb.name), params) for nb, params in stages]
    return timed([sys.executable, "-c", API, json.dumps(jobs)])


def clean(folders: list[Path]) -> None:
    """What ``mlprep run --force`` does to a stage folder first, done for papermill too (outside
    the timing), so both sides do the same work."""
    for f in folders:
        shutil.rmtree(f, ignore_errors=True)
        f.mkdir(parents=True)


def rounds(contenders: dict, n: int) -> dict[str, list[tuple[float, float]]]:
    """Each contender once per round, the order rotated every round. A contender returns
    {name: (wall, cpu)} (one unit may time two things that must run in sequence)."""
    names, out = list(contenders), {}
    for r in range(n):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            for k, v in contenders[name]().items():
                out.setdefault(k, []).append(v)
        print(f"  round {r + 1}/{n}: " + ", ".join(f"{k} {v[-1][0]:.2f}s" for k, v in out.items()), file=sys.stderr)
    return out


def summarize(times: dict[str, list[tuple[float, float]]], stages: int) -> dict:
    med = {k: {"wall_s": round(statistics.median(w for w, _ in v), 3),
               "cpu_s": round(statistics.median(c for _, c in v), 3),
               "wall_all_s": [round(w, 2) for w, _ in v]} for k, v in times.items()}
    res: dict = {"stages": stages, "contenders": med}
    for who in ("mlprep", "baseline"):
        for base in ("papermill_cli", "papermill_api"):
            if who in times and base in times:
                pairs = list(zip(times[who], times[base], strict=True))
                res[f"{'' if who == 'mlprep' else 'baseline_'}overhead_per_stage_vs_{base}"] = {
                    "wall_s": round(statistics.median((m[0] - b[0]) / stages for m, b in pairs), 3),
                    "cpu_s": round(statistics.median((m[1] - b[1]) / stages for m, b in pairs), 3),
                    "wall_ratio": round(statistics.median(m[0] / b[0] for m, b in pairs), 3)}
    return res


def bench_trivial(d: Path, n: int, baseline: str | None) -> dict:
    plan, stages = trivial_plan(d / "trivial")
    runs, out = d / "trivial-runs", d / "trivial-pm"
    out.mkdir()
    timed(mlprep_cmd(plan, runs, [], True))  # warm-up: kernelspec lookups, disk cache; leaves stages done
    contenders = {
        "mlprep": lambda: {"mlprep": timed(mlprep_cmd(plan, runs, [], True)),
                           "mlprep_skipped": skipped(mlprep_cmd(plan, runs, [], False))},
        "papermill_cli": lambda: {"papermill_cli": papermill_cli(stages, out)},
        "papermill_api": lambda: {"papermill_api": papermill_api(stages, out)},
    }
    if baseline:  # an older mlprep first on the import path (the run's cwd is not: it is the temp dir)
        env, old_runs = {**os.environ, "PYTHONPATH": baseline}, d / "baseline-runs"
        timed(mlprep_cmd(plan, old_runs, [], True), env)
        contenders["baseline"] = lambda: {"baseline": timed(mlprep_cmd(plan, old_runs, [], True), env),
                                          "baseline_skipped": skipped(mlprep_cmd(plan, old_runs, [], False), env)}
    res = summarize(rounds(contenders, n), len(stages))
    if baseline:
        res["baseline_src"] = baseline
    return res


def bench_demo(d: Path, n: int, rows: int) -> dict:
    """The demo plan's stages on ``rows`` generated rows; papermill gets the very parameters
    mlprep gave each stage (read from the executed notebooks) and the same emptied stage folders."""
    from mlprep.datasets.payments import generate

    generate(d / "data", rows=rows, seed=7)
    plan, runs, out = ROOT / "conf" / "run" / "demo.yaml", d / "demo-runs", d / "demo-pm"
    out.mkdir()
    extra = ["-p", f"data_dir={d / 'data'}", "--run-id", "warm"]
    timed(mlprep_cmd(plan, runs, extra, True))
    summary = json.loads((runs / "warm" / "summary.json").read_text())
    notebooks = [Path(s["notebook"]) for s in summary["stages"]]
    sources = {p.stem: p for p in (ROOT / "notebooks").glob("*.ipynb")}
    stages = [(sources[nb.stem], injected(nb)) for nb in notebooks]
    stage_dirs = sorted(p for p in (runs / "_stages").iterdir() if p.is_dir())
    extra = extra[:2]

    def plain() -> dict:
        clean(stage_dirs)
        return {"papermill_cli": papermill_cli(stages, out)}

    contenders = {
        "mlprep": lambda: {"mlprep": timed(mlprep_cmd(plan, runs, extra, True)),
                           "mlprep_skipped": skipped(mlprep_cmd(plan, runs, extra, False))},
        "papermill_cli": plain,
    }
    return {"rows": rows, **summarize(rounds(contenders, n), len(stages))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--real-rows", type=int, default=0, help="also the demo plan on this many rows (0: not)")
    ap.add_argument("--real-rounds", type=int, default=3)
    ap.add_argument("--baseline-src", help="a folder holding an older mlprep/ (e.g. `git archive COMMIT mlprep | "
                    "tar -x -C DIR`), run as one more contender on the trivial plan")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "runner.json"))
    a = ap.parse_args()
    out = Path(a.out).resolve()
    result: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", "")},
                    "goals": {"overhead_per_stage_s": 0.5, "skipped_run_s": 1.0}}
    with tempfile.TemporaryDirectory(prefix="bench-runner-") as tmp:
        os.chdir(tmp)  # not the checkout: `python -m` puts the working directory first on the import path
        result["trivial"] = bench_trivial(Path(tmp), a.rounds, a.baseline_src and str(Path(a.baseline_src).resolve()))
        if a.real_rows:
            result["demo"] = bench_demo(Path(tmp), a.real_rounds, a.real_rows)
    result["skipped_runs_that_ran_a_stage"] = NOT_SKIPPED
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
