"""`mlprep run`: notebooks chained under papermill with typed parameters, outputs passed on,
skips by content hash, resume, timeouts, dead kernels, retries and secrets — on small
notebooks written here — and the demo plan end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from mlprep.errors import ConfigError
from mlprep.runner.run import Runner
from tests.conftest import ROOT

A_SRC = '''
import json, os, time
from pathlib import Path
from mlprep.runner import outputs
print("A says", start * 2)
marker = Path(workdir) / "a_runs"
marker.write_text(str(int(marker.read_text()) + 1 if marker.exists() else 1))
if sleep_s:
    time.sleep(sleep_s)
if die and not (Path(workdir) / "died").exists():
    (Path(workdir) / "died").write_text("x")
    os.kill(os.getpid(), 9)
outputs.save({"value": start * 2, "where": out_dir, "summary": {"a_value": start * 2}})
'''

B_SRC = '''
from pathlib import Path
from mlprep.runner import outputs
if (Path(workdir) / "fail_b").exists():
    raise ValueError("B was told to fail")
print("token seen by B:", api_token)
outputs.save({"got": value + 1, "token_len": len(api_token), "summary": {"b_got": value + 1}})
'''


def _notebook(path: Path, params: str, source: str) -> None:
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell(source)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def project(tmp_path):
    (tmp_path / "nb").mkdir()
    (tmp_path / "work").mkdir()  # the notebooks' markers (relative: not an input of the stage)
    _notebook(tmp_path / "nb" / "a.ipynb", 'start: int = 1  # a number\nworkdir: str = "."\nout_dir: str = "."\n'
              'sleep_s: float = 0.0\ndie: bool = False', A_SRC)
    _notebook(tmp_path / "nb" / "b.ipynb", 'value: int = 0\nworkdir: str = "."\napi_token: str = ""', B_SRC)
    plan = tmp_path / "plan.yaml"
    plan.write_text("""
parameters:
  start: {type: int, default: 20}
stages:
  - name: a
    notebook: nb/a.ipynb
    retries: 1
    parameters: {start: "${start}", workdir: ../work, out_dir: "${stage_dir}"}
  - name: b
    notebook: nb/b.ipynb
    parameters: {value: "${a.value}", workdir: ../work}
""")
    return tmp_path, plan


def _runner(tmp, plan, **kw):
    return Runner(plan, runs_dir=tmp / "runs", root=tmp, show_output=False, **kw)


def test_outputs_are_passed_on_and_a_second_run_skips(project):
    tmp, plan = project
    r = _runner(tmp, plan).run({"b.api_token": "tok-123456"})
    assert r.status == "succeeded"
    assert [s.status for s in r.stages] == ["succeeded", "succeeded"]
    assert r.stages[1].outputs["got"] == 41 and r.stages[1].outputs["token_len"] == 10
    s = json.loads((r.folder / "summary.json").read_text())
    assert s["a_value"] == 40 and s["b_got"] == 41
    assert [st["name"] for st in s["stages"]] == ["a", "b"]
    assert all(Path(st["notebook"]).is_file() for st in s["stages"])
    assert "A says 40" in (r.folder / "logs" / "a.log").read_text()
    assert r.stages[0].outputs["where"].startswith(str(tmp / "runs" / "_stages" / "a-"))
    assert (r.folder / "report.html").read_text().count("<tr>") >= 3
    # unchanged: both skipped (A ran once); --force runs them again; a changed parameter re-runs A and B
    r2 = _runner(tmp, plan).run({"b.api_token": "tok-123456"})
    assert [st.status for st in r2.stages] == ["skipped", "skipped"]
    assert (tmp / "work" / "a_runs").read_text() == "1"
    assert (r2.folder / "a.ipynb").is_file()
    r3 = _runner(tmp, plan).run({"b.api_token": "tok-123456"}, force=True, only=["a"])
    assert [st.status for st in r3.stages] == ["succeeded", "skipped"]
    r4 = _runner(tmp, plan).run({"start": "5", "b.api_token": "tok-123456"})
    assert [st.status for st in r4.stages] == ["succeeded", "succeeded"] and r4.stages[1].outputs["got"] == 11


def test_secrets_never_land_in_notebooks_logs_summary_or_report(project):
    tmp, plan = project
    secret = "s3cr3t-Value-42"
    r = _runner(tmp, plan).run({"b.api_token": secret})
    assert r.status == "succeeded" and r.stages[1].outputs["token_len"] == len(secret)
    files = [p for p in r.folder.rglob("*") if p.is_file()] + list((tmp / "runs" / "_stages").rglob("*.json"))
    assert any(p.suffix == ".ipynb" for p in files)
    for p in files:
        assert secret not in p.read_text(errors="replace"), p
    assert "token seen by B: ***" in (r.folder / "logs" / "b.log").read_text()
    assert json.loads((r.folder / "run.json").read_text())["parameters"]["b.api_token"] == "***"


def test_parameters_are_checked_before_any_kernel_starts(project):
    tmp, plan = project
    run = _runner(tmp, plan)
    with pytest.raises(ConfigError, match="--param nope: not a run parameter"):
        run.run({"nope": "1"})
    with pytest.raises(ConfigError, match=r"--param start: expected int, got 'x'"):
        run.run({"start": "x"})
    with pytest.raises(ConfigError, match=r"stage b: parameter value: expected int, got 'many'"):
        run.run({"b.value": "many"})
    with pytest.raises(ConfigError, match=r"stage a: .*has no parameter 'speed'"):
        run.run({"a.speed": "1"})
    assert not (tmp / "runs").exists() or not list((tmp / "runs").glob("*/logs/*.log"))
    cli = [sys.executable, "-m", "mlprep", "run", "--plan", str(plan), "--runs-dir", str(tmp / "runs")]
    p = subprocess.run([*cli, "--param", "b.value=many"], capture_output=True, text=True, cwd=tmp)
    assert p.returncode == 2 and "stage b: parameter value: expected int, got 'many'" in p.stderr
    p = subprocess.run([*cli, "--help-notebook", str(tmp / "nb" / "a.ipynb")], capture_output=True, text=True)
    assert p.returncode == 0 and "start" in p.stdout and "int" in p.stdout and "default 1" in p.stdout
    assert "a number" in p.stdout


def test_a_failing_cell_is_reported_and_resume_continues_from_it(project):
    tmp, plan = project
    (tmp / "work" / "fail_b").write_text("x")
    cli = [sys.executable, "-m", "mlprep", "run", "--plan", str(plan), "--runs-dir", str(tmp / "runs"),
           "--run-id", "r1", "--param", "b.api_token=abcd1234"]
    p = subprocess.run(cli, capture_output=True, text=True, cwd=tmp)
    assert p.returncode == 1
    assert "stage b failed at cell" in p.stderr and "ValueError: B was told to fail" in p.stderr
    assert "mlprep run --resume r1" in p.stderr
    s = json.loads((tmp / "runs" / "r1" / "summary.json").read_text())
    assert [(st["name"], st["status"]) for st in s["stages"]] == [("a", "succeeded"), ("b", "failed")]
    assert "Traceback" in (tmp / "runs" / "r1" / "logs" / "b.log").read_text() or \
        "ValueError" in (tmp / "runs" / "r1" / "logs" / "b.log").read_text()
    (tmp / "work" / "fail_b").unlink()
    p = subprocess.run([sys.executable, "-m", "mlprep", "run", "--plan", str(plan), "--runs-dir", str(tmp / "runs"),
                        "--resume", "r1", "--param", "b.api_token=abcd1234"], capture_output=True, text=True, cwd=tmp)
    assert p.returncode == 0, p.stderr
    s = json.loads((tmp / "runs" / "r1" / "summary.json").read_text())
    # what stage a did earlier in this run stays on record (before: relabelled skipped, log replaced)
    assert [(st["name"], st["status"]) for st in s["stages"]] == [("a", "succeeded"), ("b", "succeeded")]
    assert s["stages"][0]["seconds"] > 0 and s["stages"][0]["attempts"] == 1
    assert not (tmp / "runs" / "r1" / "logs" / "a.log").read_text().startswith("skipped")
    assert (tmp / "work" / "a_runs").read_text() == "1"
    assert p.stdout.strip().splitlines()[-1].endswith("r1/report.html")
    p = subprocess.run([sys.executable, "-m", "mlprep", "run", "--plan", str(plan), "--runs-dir", str(tmp / "runs"),
                        "--resume", "r1"], capture_output=True, text=True, cwd=tmp)
    assert p.returncode == 2 and "b.api_token: a secret is not kept with the run" in p.stderr
    # a run id names a new folder under the runs folder: no other run's record is overwritten
    for bad, says in (("r1", "run r1 exists"), ("../../evil", "letters, digits")):
        p = subprocess.run([*cli[:-4], "--run-id", bad, "--param", "b.api_token=abcd1234"], capture_output=True,
                           text=True, cwd=tmp)
        assert p.returncode == 2 and says in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (tmp.parent / "evil").exists()


def test_a_dead_kernel_is_detected_and_retried(project):
    tmp, plan = project
    r = _runner(tmp, plan).run({"a.die": "true", "b.api_token": "abcd1234"})
    a = r.stages[0]
    assert a.status == "succeeded" and a.attempts == 2  # died once, retried (retries: 1)
    assert (tmp / "work" / "died").exists()
    (tmp / "work" / "died").unlink()
    plan.write_text(plan.read_text().replace("retries: 1", "retries: 0"))
    r = _runner(tmp, plan).run({"a.die": "true", "a.start": "3", "b.api_token": "abcd1234"})
    a = r.stages[0]
    assert a.status == "failed" and a.attempts == 1 and "kernel died" in a.error
    assert r.status == "failed" and r.stages[1].status == "not_run"


def test_stage_and_run_timeouts_stop_the_kernel(project):
    tmp, plan = project
    plan.write_text(plan.read_text().replace("    retries: 1\n", "    retries: 0\n    timeout: 4\n"))
    before = {p.pid for p in psutil.process_iter()}
    t = time.monotonic()
    r = _runner(tmp, plan).run({"a.sleep_s": "60", "b.api_token": "abcd1234"})
    assert time.monotonic() - t < 30
    a = r.stages[0]
    assert a.status == "failed" and "stage timeout (4 s) exceeded" in a.error
    time.sleep(0.5)
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if p.pid not in before
                 and "ipykernel" in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []
    plan.write_text(plan.read_text().replace("    timeout: 4\n", ""))
    r = _runner(tmp, plan).run({"a.sleep_s": "60", "a.start": "7", "b.api_token": "abcd1234"}, timeout=4)
    assert r.stages[0].status == "failed" and "timeout" in r.stages[0].error


def test_only_needs_unchanged_upstream(project):
    tmp, plan = project
    r = _runner(tmp, plan).run({"b.api_token": "abcd1234"}, only=["b"])
    assert r.status == "failed" and [s.status for s in r.stages] == ["failed", "not_run"]
    assert "is needed by a selected stage" in r.stages[0].error
    # a stage that needs nothing upstream runs alone in a fresh project; the others are not selected
    r = _runner(tmp, plan).run({"b.api_token": "abcd1234"}, only=["a"])
    assert r.status == "succeeded" and [s.status for s in r.stages] == ["succeeded", "not_selected"]
    _runner(tmp, plan).run({"b.api_token": "abcd1234"})
    r = _runner(tmp, plan).run({"b.api_token": "zzzz9999"}, only=["b"])
    assert [s.status for s in r.stages] == ["skipped", "succeeded"]
    # --only and --from that leave nothing to run are refused, not reported as a success
    with pytest.raises(ConfigError, match=r"^--from: no stage of --only a is at or after b"):
        _runner(tmp, plan).run({"b.api_token": "abcd1234"}, only=["a"], start_from="b")


def test_path_parameters_are_absolute_against_the_plan_root_wherever_the_run_starts(tmp_path, monkeypatch):
    """One base: the plan's root (``root:``, relative to the plan file), never the working directory."""
    (tmp_path / "nb").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "conf").mkdir()
    (tmp_path / "elsewhere").mkdir()
    _notebook(tmp_path / "nb" / "p.ipynb", 'data: str = "."\nevents: str = "."\nwhere: str = "."',
              "import os\nfrom mlprep.runner import outputs\n"
              "outputs.save({'data': data, 'events': events, 'where': where, 'cwd': os.getcwd()})")
    plan = tmp_path / "conf" / "plan.yaml"
    plan.write_text("""
root: ..
parameters:
  data: {type: path, default: data, must_exist: true, help: input folder}
stages:
  - name: p
    notebook: nb/p.ipynb
    parameters: {data: "${data}", events: "${data}/events.jsonl", where: "${root}"}
""")
    monkeypatch.chdir(tmp_path / "elsewhere")
    runner = Runner(plan, runs_dir=tmp_path / "runs", show_output=False)
    assert runner.plan.root == tmp_path
    assert runner.parameters({})[0] == {"data": str(tmp_path / "data")}
    assert runner.parameters({"data": "s3://bucket/data/"})[0] == {"data": "s3://bucket/data/"}
    with pytest.raises(ConfigError, match=rf"^--param data: {tmp_path / 'typo'} does not exist \(input folder\)$"):
        runner.parameters({"data": "typo"})
    with pytest.raises(ConfigError, match=r"^--param data: not a valid path"):
        runner.parameters({"data": "da\0ta"})
    p = subprocess.run([sys.executable, "-m", "mlprep", "run", "--plan", str(plan), "--runs-dir", str(tmp_path / "runs"),
                        "--param", "data=conf/../data", "--no-output"], capture_output=True, text=True,
                       cwd=tmp_path / "elsewhere")
    assert p.returncode == 0, p.stderr
    outs = json.loads((Path(p.stdout.strip().splitlines()[-1]).parent / "summary.json").read_text())["outputs"]["p"]
    assert outs["data"] == str(tmp_path / "data") and outs["events"] == str(tmp_path / "data" / "events.jsonl")
    assert outs["where"] == str(tmp_path) and outs["cwd"] == str(tmp_path / "nb")  # the kernel: the notebook's folder


def test_the_demo_plan_end_to_end(tmp_path):
    """The three stage notebooks chained, on small data; what the demo's summary promises."""
    runs = tmp_path / "runs"
    subprocess.run([sys.executable, "-m", "mlprep", "data", "generate", "--out", str(tmp_path / "data"),
                    "--rows", "3000"], check=True, capture_output=True)
    p = subprocess.run([sys.executable, "-m", "mlprep", "run", "--plan", str(ROOT / "conf" / "run" / "demo.yaml"),
                        "--runs-dir", str(runs), "--param", f"data_dir={tmp_path / 'data'}",
                        "--param", "auc_threshold=0.0", "--param", "train.max_iter=30", "--no-output"],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-4000:]
    report = Path(p.stdout.strip().splitlines()[-1])
    assert report.name == "report.html" and report.is_file()
    s = json.loads((report.parent / "summary.json").read_text())
    assert [(st["name"], st["status"]) for st in s["stages"]] == [
        ("batch", "succeeded"), ("stream", "succeeded"), ("train", "succeeded")]
    assert all(Path(st["notebook"]).is_file() and st["seconds"] > 0 for st in s["stages"])
    r = s["rows"]
    assert r["read"] == 3000 == r["written"] + r["quarantined"] + r["deduplicated"] + r["filtered"]
    assert s["features"] == 18
    m = s["metrics"]
    assert 0 < m["auc_with_stream_features"] <= 1 and 0 < m["auc_without_stream_features"] <= 1
    assert m["auc_with_stream_features"] != m["auc_without_stream_features"]
    assert s["endpoint"]["rows"] == len(s["endpoint"]["predictions"]) > 0 and s["endpoint"]["stopped"]
    html = report.read_text()
    for fig in ("row accounting", "data quality", "features over time", "roc pr confusion"):
        assert f'alt="{fig}"' in html
    assert "cell 1/" in p.stderr  # progress lines


ENV_SRC = '''
import os
from mlprep.runner import outputs
outputs.save({"worker": os.getppid(), "outputs_env": os.environ["MLPREP_STAGE_OUTPUTS"],
              "secret_env": sorted(k for k in os.environ if k.startswith("MLPREP_SECRET_")), "n": n + 1})
'''


def test_one_papermill_process_runs_every_stage_and_a_stage_secret_stays_in_its_stage(tmp_path):
    """papermill is imported once per run (one child runs the stages in turn), yet each kernel
    sees only its own stage's environment; the child is gone when the run returns."""
    (tmp_path / "nb").mkdir()
    for name, params in (("a", "n: int = 0"), ("b", 'n: int = 0\napi_token: str = ""'), ("c", "n: int = 0")):
        _notebook(tmp_path / "nb" / f"{name}.ipynb", params, ENV_SRC)
    plan = tmp_path / "plan.yaml"
    plan.write_text("""
stages:
  - {name: a, notebook: nb/a.ipynb, parameters: {n: 1}}
  - {name: b, notebook: nb/b.ipynb, parameters: {n: "${a.n}"}}
  - {name: c, notebook: nb/c.ipynb, parameters: {n: "${b.n}"}}
""")
    r = _runner(tmp_path, plan).run({"b.api_token": "tok-abcdef"})
    assert r.status == "succeeded", [s.error for s in r.stages]
    outs = {s.name: s.outputs for s in r.stages}
    assert outs["c"]["n"] == 4
    assert outs["a"]["worker"] == outs["b"]["worker"] == outs["c"]["worker"]
    assert [outs[s]["secret_env"] for s in "abc"] == [[], ["MLPREP_SECRET_API_TOKEN"], []]
    for s in r.stages:
        assert Path(s.outputs["outputs_env"]).parent.name.startswith(f"{s.name}-")
    assert not psutil.pid_exists(outs["a"]["worker"]) or \
        psutil.Process(outs["a"]["worker"]).status() == psutil.STATUS_ZOMBIE
    # a stage whose kernel dies ends its process: the retry and the stages after it get a fresh one
    die = ENV_SRC.replace("outputs.save(", "if not os.path.exists('died'):\n    open('died', 'w').close()\n"
                          "    os.kill(os.getpid(), 9)\noutputs.save(", 1)
    _notebook(tmp_path / "nb" / "b.ipynb", 'n: int = 0\napi_token: str = ""', die)
    plan.write_text(plan.read_text().replace("nb/b.ipynb,", "nb/b.ipynb, retries: 1,"))
    r = _runner(tmp_path, plan).run({"b.api_token": "tok-abcdef"}, force=True)
    assert [(s.status, s.attempts) for s in r.stages] == [("succeeded", 1), ("succeeded", 2), ("succeeded", 1)]
    outs = {s.name: s.outputs for s in r.stages}
    assert outs["a"]["worker"] != outs["b"]["worker"] == outs["c"]["worker"]
