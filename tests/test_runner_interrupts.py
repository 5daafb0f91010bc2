"""`mlprep run` when a user interrupts it, forces it, mistypes it or hands it secrets: Ctrl-C and
SIGTERM end the whole process tree and leave a run that resumes; a forced stage starts clean; a
wrong parameter or a missing input is one line, before any heavy import; a secret never lands in
any file in any encoding."""

from __future__ import annotations

import base64
import html
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import nbformat
import psutil
import pytest

from mlprep.masking import StreamMasker, forms

# a stage that starts a "job" (a child) and a detached "server" (own session), then works a while
JOB_SRC = '''
import json, os, subprocess, sys, time
from pathlib import Path
from mlprep.runner import outputs
stage = Path(out_dir)
leftover = sorted(p.name for p in stage.iterdir() if p.name != "outputs.json")
(stage / "scratch.txt").write_text("partial work")
if sleep_s:
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    Path(workdir, "pids.json").write_text(json.dumps([os.getpid(), job.pid, server.pid]))
    time.sleep(sleep_s)
outputs.save({"leftover": leftover, "n": n})
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
    (tmp_path / "work").mkdir()
    (tmp_path / "inputs").mkdir()
    _notebook(tmp_path / "nb" / "job.ipynb", 'out_dir: str = "."\nworkdir: str = "."\nsleep_s: float = 0.0\nn: int = 1',
              JOB_SRC)
    _notebook(tmp_path / "nb" / "after.ipynb", 'n: int = 0', "from mlprep.runner import outputs\n"
              "outputs.save({'n': n + 1})")
    plan = tmp_path / "plan.yaml"
    plan.write_text("""
parameters:
  inputs: {type: path, default: inputs, must_exist: true, help: "input folder"}
stages:
  - name: job
    notebook: nb/job.ipynb
    parameters: {out_dir: "${stage_dir}", workdir: ../work}
  - name: after
    notebook: nb/after.ipynb
    parameters: {n: "${job.n}"}
""")
    return tmp_path, plan


def _cli(tmp: Path, plan: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "mlprep", "run", "--plan", str(plan), "--runs-dir", str(tmp / "runs"), *args]


def _wait_for(path: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)
    time.sleep(0.3)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_ends_the_whole_tree_marks_the_run_interrupted_and_resume_completes_it(project, sig, code):
    tmp, plan = project
    proc = subprocess.Popen(_cli(tmp, plan, "--run-id", "r1", "-p", "job.sleep_s=300", "--no-output"),
                            cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(tmp / "work" / "pids.json")
    pids = json.loads((tmp / "work" / "pids.json").read_text())  # kernel, job, detached server
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last == f"interrupted ({sig.name}) in stage job at cell 3; resume with: mlprep run --resume r1"
    time.sleep(0.5)
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == []
    s = json.loads((tmp / "runs" / "r1" / "summary.json").read_text())
    assert s["status"] == "interrupted"
    assert [(x["name"], x["status"]) for x in s["stages"]] == [("job", "interrupted"), ("after", "not_run")]
    assert s["stages"][0]["cell"] == 3  # after the injected parameters
    assert not list((tmp / "runs" / "_stages").glob("*/done.json"))  # never "done" without its outputs
    # the next run (and --resume) start the interrupted stage again from a clean folder
    (tmp / "work" / "pids.json").unlink()
    p = subprocess.run(_cli(tmp, plan, "--resume", "r1", "-p", "job.sleep_s=0"), cwd=tmp, capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    s = json.loads((tmp / "runs" / "r1" / "summary.json").read_text())
    assert s["status"] == "succeeded" and [x["status"] for x in s["stages"]] == ["succeeded", "succeeded"]
    assert s["outputs"]["job"]["leftover"] == [] and s["outputs"]["after"]["n"] == 2


def test_a_forced_stage_starts_from_a_clean_folder_and_done_holds_the_outputs(project):
    tmp, plan = project
    base = _cli(tmp, plan, "--no-output")
    assert subprocess.run(base, cwd=tmp, capture_output=True).returncode == 0
    (done,) = list((tmp / "runs" / "_stages").glob("job-*/done.json"))
    assert json.loads(done.read_text())["outputs"]["leftover"] == []
    (done.parent / "outputs.json").unlink()  # done.json alone says what the stage handed on
    p = subprocess.run(base, cwd=tmp, capture_output=True, text=True)
    assert p.returncode == 0 and "job: unchanged since run" in p.stderr
    p = subprocess.run([*base, "--force", "--only", "job"], cwd=tmp, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    s = json.loads((Path(p.stdout.strip().splitlines()[-1]).parent / "summary.json").read_text())
    assert s["outputs"]["job"]["leftover"] == []  # scratch.txt of the first run is gone
    assert [x["status"] for x in s["stages"]] == ["succeeded", "skipped"]


def test_mistakes_are_one_line_and_come_before_any_heavy_import(project):
    tmp, plan = project
    cases = [
        (["-p", "nope=1"], "error: --param nope: not a run parameter"),
        (["-p", "job.n=many"], "error: stage job: parameter n: expected int, got 'many'"),
        (["-p", f"inputs={tmp / 'typo'}"], f"error: --param inputs: {tmp / 'typo'} does not exist (input folder)"),
        (["--resume", "NO_SUCH_ID"], "error: --resume: no run 'NO_SUCH_ID' in"),
        (["-f", str(tmp / "missing.yaml")], "error: -f " + str(tmp / "missing.yaml") + ": No such file"),
        (["--secret", "job.api_token"], "error: --secret job.api_token: set MLPREP_SECRET_JOB_API_TOKEN"),
        (["--from", "nostage"], "error: --from: no stage 'nostage'"),
        (["-f", str(tmp / "broken.yaml")], "error: -f " + str(tmp / "broken.yaml") + ": not a YAML mapping (line 2)"),
        (["-f", str(tmp / "listed.yaml")], "error: stage job: parameter n: expected int, got [1, 2]"),
    ]
    (tmp / "broken.yaml").write_text("inputs: [demo/data\n")
    (tmp / "listed.yaml").write_text("job: {n: [1, 2]}\n")
    probe = ("import sys; from mlprep.cli import main; rc = main(sys.argv[1:]);"
             "heavy = [m for m in ('papermill', 'nbformat', 'jsonschema', 'pandas', 'nbclient') if m in sys.modules];"
             "print('HEAVY', heavy); sys.exit(rc)")
    for args, message in cases:
        p = subprocess.run([sys.executable, "-c", probe, "run", "--plan", str(plan), "--runs-dir", str(tmp / "runs"),
                            *args], cwd=tmp, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert p.returncode == 2, (args, p.stderr)
        assert p.stderr.strip().count("\n") == 0 and p.stderr.startswith(message), (args, p.stderr)
        assert "HEAVY []" in p.stdout, (args, p.stdout)
    assert not list((tmp / "runs").glob("*/logs/*.log")) if (tmp / "runs").exists() else True


def test_parameters_from_a_file_and_secrets_from_the_environment(project):
    tmp, plan = project
    (tmp / "params.yaml").write_text("job:\n  n: 41\n")
    env = {**os.environ, "MLPREP_SECRET_JOB_WORKDIR": str(tmp / "work")}
    p = subprocess.run(_cli(tmp, plan, "-f", str(tmp / "params.yaml"), "--secret", "job.workdir", "--run-id", "f1"),
                       cwd=tmp, capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    s = json.loads((tmp / "runs" / "f1" / "summary.json").read_text())
    assert s["outputs"]["after"]["n"] == 42
    run = json.loads((tmp / "runs" / "f1" / "run.json").read_text())
    assert run["parameters"] == {"job.n": 41, "job.workdir": "***"} and run["secrets"] == ["job.workdir"]
    for f in (tmp / "runs" / "f1").rglob("*"):
        if f.is_file():
            assert str(tmp / "work") not in f.read_text(errors="replace"), f


SECRET = 'Pa"ss\\w0rd<&>é9'

LEAKS = r'''
import base64, json, sys, time, urllib.parse
from IPython.display import HTML, display
from mlprep.runner import outputs
print(api_token[:7], end="")            # one secret, two writes
print(api_token[7:])
sys.stdout.write("A:" + api_token[:5])  # two writes the kernel sends as two outputs
sys.stdout.flush()
time.sleep(0.5)
sys.stdout.write(api_token[5:] + "\n")
print(repr(api_token), json.dumps(api_token), json.dumps(api_token, ensure_ascii=False))
print("b64", base64.b64encode(api_token.encode()).decode(), base64.b64encode(b"xy" + api_token.encode()).decode())
print("url", urllib.parse.quote(api_token, safe=""), urllib.parse.quote_plus(api_token))
sys.stderr.write("err " + api_token + "\n")
display(HTML("<b>" + __import__("html").escape(api_token) + "</b>"))
api_token
'''


def test_a_secret_never_lands_in_any_file_in_any_encoding(tmp_path):
    (tmp_path / "nb").mkdir()
    _notebook(tmp_path / "nb" / "s.ipynb", 'api_token: str = ""', LEAKS + '\noutputs.save({"echo": api_token, '
              '"nested": {"t": [api_token]}, "summary": {"token": api_token}})\n')
    plan = tmp_path / "plan.yaml"
    plan.write_text("stages:\n  - name: s\n    notebook: nb/s.ipynb\n")
    p = subprocess.run(_cli(tmp_path, plan, "--secret", "s.api_token", "--run-id", "x"), cwd=tmp_path,
                       capture_output=True, text=True, env={**os.environ, "MLPREP_SECRET_S_API_TOKEN": SECRET})
    assert p.returncode == 0, p.stderr
    needles = forms(SECRET)
    assert {SECRET, json.dumps(SECRET)[1:-1], html.escape(SECRET), quote(SECRET, safe=""), quote_plus(SECRET),
            base64.b64encode(SECRET.encode()).decode()} <= set(needles)
    files = [f for f in (tmp_path / "runs").rglob("*") if f.is_file()]
    assert any(f.suffix == ".ipynb" for f in files) and any(f.name == "done.json" for f in files)
    for f in files:
        text = f.read_text(errors="replace")
        for n in needles:
            assert n not in text, (f, n)
    for n in needles:
        assert n not in p.stderr and n not in p.stdout
    for f in (f for f in files if f.suffix == ".ipynb"):  # outputs read together, as Jupyter shows them
        for cell in json.loads(f.read_text())["cells"]:
            shown = "".join("".join(o.get("text", "")) for o in cell.get("outputs", []))
            assert SECRET not in shown and "A:***" in shown if "A:" in shown else True
    log = (tmp_path / "runs" / "x" / "logs" / "s.log").read_text()
    assert "***" in log and "b64 ***" in log and "url ***" in log


def test_the_stream_masker_catches_a_secret_split_across_writes():
    m = StreamMasker(["hunter2-xyz"])
    pieces = ["user=hun", "ter2", "-xyz done\n", "h", "unter2-xy", "z\n"]
    out = "".join(m.feed(x) for x in pieces) + m.flush()
    assert out == "user=*** done\n***\n"
    m = StreamMasker(["hunter2-xyz"])
    assert m.feed("nothing secret here\n") == "nothing secret here\n"  # no hold-back without a prefix


def test_a_secret_too_short_to_mask_is_named_in_a_warning(tmp_path):
    (tmp_path / "nb").mkdir()
    _notebook(tmp_path / "nb" / "s.ipynb", 'api_token: str = ""', "print(len(api_token))\n")
    plan = tmp_path / "plan.yaml"
    plan.write_text("stages:\n  - name: s\n    notebook: nb/s.ipynb\n")
    p = subprocess.run(_cli(tmp_path, plan, "--secret", "s.api_token"), cwd=tmp_path, capture_output=True,
                       text=True, env={**os.environ, "MLPREP_SECRET_S_API_TOKEN": "ab"})
    assert p.returncode == 0, p.stderr
    assert "warning: secret s.api_token is shorter than 4 characters: it is not masked in outputs" in p.stderr
