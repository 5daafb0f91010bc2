"""The library stands without its checkout: the wheel setuptools builds, installed into a fresh
virtual environment, runs ``deploy plan``, ``stream compile`` and ``batch run`` from an empty
folder, with the installed package's files (package data included).

The fresh environment has no system site-packages and nothing of the checkout on its path: uv
installs the wheel and the dependencies its metadata declares, pinned to requirements.lock's
versions (so they come from uv's cache, as `make` filled it: about 2 s; PyPI only if the cache
lacks one). A dependency the wheel forgot to declare is missing there, as it would be for a user.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

UV = Path(sys.executable).with_name("uv")
JOB = ROOT / "conf" / "batch" / "transactions.yaml"
SPEC = ROOT / "conf" / "features" / "transactions.yaml"
FRAUD = f"{ROOT / 'pipelines' / 'fraud' / 'pipeline.py'}:get_pipeline"
# the installed mlprep alone: no PYTHONPATH, no virtual environment of the checkout
ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


def _uv(*args: str, cwd: Path) -> None:
    """uv from its cache first; from PyPI only if the cache lacks something."""
    p = subprocess.run([str(UV), *args, "--offline"], cwd=cwd, capture_output=True, text=True, env=ENV, timeout=600)
    if p.returncode != 0:
        p = subprocess.run([str(UV), *args], cwd=cwd, capture_output=True, text=True, env=ENV, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ folder of a fresh venv with the mlprep wheel installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # the sources setuptools packages, copied: the build leaves nothing in the checkout
    shutil.copytree(ROOT / "mlprep", src / "mlprep", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    _uv("build", "--wheel", "--out-dir", str(tmp / "dist"), str(src), cwd=tmp)
    (whl,) = (tmp / "dist").glob("mlprep-*.whl")
    _uv("venv", "-q", str(tmp / "venv"), "--python", sys.executable, cwd=tmp)
    _uv("pip", "install", "-q", "--python", str(tmp / "venv" / "bin" / "python"), "-c", str(ROOT / "requirements.lock"),
        str(whl), cwd=tmp)
    return tmp / "venv" / "bin"


@pytest.fixture
def empty(tmp_path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    return d


def _mlprep(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    p = subprocess.run([str(bin_dir / "mlprep"), *args], cwd=cwd, capture_output=True, text=True, env=ENV,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def test_the_installed_package_is_used(installed, empty):
    probe = ("import json, mlprep, mlprep.deploy.costs as c; from importlib import metadata; "
             "print(json.dumps([mlprep.__file__, metadata.version('mlprep'), c.load_prices()['glue_dpu_hour']]))")
    p = subprocess.run([str(installed / "python"), "-c", probe], cwd=empty, capture_output=True, text=True, env=ENV)
    assert p.returncode == 0, p.stderr
    where, version, price = json.loads(p.stdout)
    assert not Path(where).resolve().is_relative_to(ROOT) and Path(where).resolve().is_relative_to(installed.parent)
    assert version == "0.1.0" and price == 0.44  # the price table is package data


def test_deploy_plan_from_an_empty_folder_is_the_checkouts_plan(installed, empty, tmp_path):
    from mlprep.deploy.plan import write_plan

    out = tmp_path / "plan"
    _mlprep(installed, "deploy", "plan", "--out", str(out), "--job", str(JOB), "--spec", str(SPEC),
            "--pipeline", FRAUD, cwd=empty)
    plan = json.loads((out / "plan.json").read_text())
    assert len(plan["resources"]) == 9 and plan["names"]["pipeline"] == "mlprep-fraud"
    for f in plan["files"].values():
        assert (out / f).is_file(), f
    assert list(empty.iterdir()) == []
    # byte for byte what the checkout plans: the Glue wheel from the installed files and metadata,
    # Flink's main.py, the fraud pipeline's pit.py and the price table from the package
    write_plan(tmp_path / "here", job_config=JOB, spec=SPEC, pipeline=FRAUD)
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    here = {str(p.relative_to(tmp_path / "here")): p.read_bytes()
            for p in sorted((tmp_path / "here").rglob("*")) if p.is_file()}
    assert files == here


def test_stream_compile_from_an_empty_folder(installed, empty, tmp_path):
    out = tmp_path / "features.sql"
    _mlprep(installed, "stream", "compile", str(SPEC), "--target", "flink-sql", "--out", str(out), cwd=empty)
    sql = out.read_text()
    assert "WATERMARK FOR" in sql and "INSERT INTO" in sql
    assert list(empty.iterdir()) == []


def test_batch_run_from_an_empty_folder(installed, empty, tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    _mlprep(installed, "data", "generate", "--out", str(data), "--rows", "2000", cwd=empty)
    p = _mlprep(installed, "batch", "run", str(JOB), "--param", f"data_dir={data}", "--param", f"out_dir={out}",
                "--no-progress", cwd=empty)
    summary = json.loads(Path(p.stdout.strip().splitlines()[-1]).read_text())
    assert summary["status"] == "succeeded", summary
    assert any((out / "curated" / "transactions").rglob("*.parquet"))
    assert list(empty.iterdir()) == []
