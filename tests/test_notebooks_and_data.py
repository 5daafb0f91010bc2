"""Notebook 01 under papermill, notebook/script pairing, and the sample-data generator."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill as pm
import pytest

from mlprep.datasets.payments import generate
from tests.conftest import JOB, ROOT
from tests.oracle import demo_job

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _batch_notebook(out_nb: Path, **parameters) -> nbformat.NotebookNode:
    pm.execute_notebook(str(ROOT / "notebooks" / "01_batch_etl.ipynb"), str(out_nb),
                        parameters={"config": str(JOB), **parameters},
                        cwd=str(ROOT / "notebooks"), progress_bar=False, kernel_name="python3")
    return nbformat.read(out_nb, as_version=4)


def _text(nb: nbformat.NotebookNode) -> str:
    return "\n".join(o.get("text", "") + json.dumps(o.get("data", {})) for c in nb.cells for o in c.get("outputs", []))


def test_batch_notebook_runs_headless_with_papermill(small_data, tmp_path):
    out_nb = tmp_path / "01.ipynb"
    nb = _batch_notebook(out_nb, data_dir=str(small_data.out_dir), out_dir=str(tmp_path / "out"))
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and str(small_data.out_dir) in injected[0].source
    images = sum(1 for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert images >= 3  # row accounting, null rates + amounts, quality outcomes
    summaries = list((tmp_path / "out" / "curated" / "_runs" / "transactions").glob("*/summary.json"))
    assert len(summaries) == 1
    _, counts = demo_job(small_data.out_dir)
    assert json.loads(summaries[0].read_text())["rows"] == counts
    # run again, as in JupyterLab: the bookmark says nothing is new; the published table's figures stay
    again = _batch_notebook(tmp_path / "01b.ipynb", data_dir=str(small_data.out_dir), out_dir=str(tmp_path / "out"))
    assert "noop - nothing new since" in _text(again)
    assert sum(1 for c in again.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})) >= 3
    assert len(list((tmp_path / "out" / "curated" / "_runs" / "transactions").glob("*/summary.json"))) == 2


def test_batch_notebook_names_a_missing_input_instead_of_making_data(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match=r"data_dir: no transactions.jsonl in .*typo"):
        _batch_notebook(tmp_path / "01.ipynb", data_dir=str(tmp_path / "typo"), out_dir=str(tmp_path / "out"))
    assert not (tmp_path / "typo").exists()
    nb = _batch_notebook(tmp_path / "01g.ipynb", data_dir=str(tmp_path / "gen"), out_dir=str(tmp_path / "out"),
                         generate=True, rows=1000)
    assert (tmp_path / "gen" / "transactions.jsonl").is_file() and "succeeded" in _text(nb)


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebooks_are_stored_clean_with_parameters_and_paired(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)
    paired = nb_path.with_suffix(".py")
    assert paired.exists()
    import jupytext

    script = jupytext.read(paired)
    code = [c.source for c in nb.cells]
    assert code == [c.source for c in script.cells], f"{nb_path.name} and {paired.name} are out of sync (jupytext --sync)"


def _digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.glob("*.jsonl"))}


def test_generator_is_deterministic_and_has_the_promised_shape(tmp_path):
    a = generate(tmp_path / "a", rows=20_000, seed=3)
    b = generate(tmp_path / "b", rows=20_000, seed=3)
    c = generate(tmp_path / "c", rows=20_000, seed=4)
    assert _digest(a.out_dir) == _digest(b.out_dir) != _digest(c.out_dir)
    lines = a.transactions.read_text().splitlines()
    assert len(lines) == 20_000
    recs = [json.loads(x) for x in lines]
    ids = [r["txn_id"] for r in recs]
    assert len(ids) - len(set(ids)) == a.duplicates == 100
    amounts = [r["amount"] for r in recs]
    strings = [x for x in amounts if isinstance(x, str)]
    junk = [x for x in strings if not x.replace(".", "", 1).isdigit()]
    assert 0.05 < len(strings) / len(amounts) < 0.12 and 0.002 < len(junk) / len(amounts) < 0.01
    with_null = sum(any(v is None for v in (*r.values(), *(r["device"] or {}).values())) for r in recs)
    assert 0.005 < with_null / len(recs) < 0.02  # ~1% of records carry a null
    assert all(set(r["device"]) == {"os", "browser", "ip"} for r in recs if r["device"])
    ts = [r["ts"] for r in recs]
    assert ts == sorted(ts)
    events = [json.loads(x)["ts"] for x in a.events.read_text().splitlines()]
    assert sorted(events) == sorted(ts) and events != ts  # same records, some arrive late
    labels = [json.loads(x) for x in a.labels.read_text().splitlines()]
    assert len(labels) == 20_000 - a.duplicates and sum(x["is_fraud"] for x in labels) == a.fraud
    assert 0.005 < a.fraud / len(labels) < 0.05


def test_cli_generate(tmp_path):
    p = subprocess.run([sys.executable, "-m", "mlprep", "data", "generate", "--out", str(tmp_path),
                        "--rows", "1500", "--seed", "1"], capture_output=True, text=True, check=True)
    assert json.loads(p.stdout)["rows"] == 1500
    bad = subprocess.run([sys.executable, "-m", "mlprep", "data", "generate", "--out", str(tmp_path), "--rows", "5"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--rows" in bad.stderr
    none = subprocess.run([sys.executable, "-m", "mlprep", "data", "generate", "--out", str(tmp_path), "--days", "0"],
                          capture_output=True, text=True)
    assert none.returncode == 2 and "--days: must be >= 1" in none.stderr and len(none.stderr.splitlines()) == 1
    # a longer span at the same size: the same number of rows, spread over that many days
    subprocess.run([sys.executable, "-m", "mlprep", "data", "generate", "--out", str(tmp_path / "long"),
                    "--rows", "1500", "--days", "30"], capture_output=True, text=True, check=True)
    ts = sorted(json.loads(x)["ts"] for x in (tmp_path / "long" / "transactions.jsonl").read_text().splitlines())
    days = (dt.datetime.fromisoformat(ts[-1]) - dt.datetime.fromisoformat(ts[0])).days
    assert len(ts) == 1500 and 25 <= days < 30
    assert json.loads((tmp_path / "long" / "dataset.json").read_text())["days"] == 30


def test_stream_notebook_runs_headless_with_papermill(small_data, tmp_path):
    out_nb = tmp_path / "02.ipynb"
    pm.execute_notebook(str(ROOT / "notebooks" / "02_stream_features.ipynb"), str(out_nb),
                        parameters={"spec": str(ROOT / "conf" / "features" / "transactions.yaml"),
                                    "events": str(small_data.events), "out_dir": str(tmp_path / "s"),
                                    "checkpoint": str(tmp_path / "chk")},
                        cwd=str(ROOT / "notebooks"), progress_bar=False, kernel_name="python3")
    nb = nbformat.read(out_nb, as_version=4)
    images = sum(1 for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert images == 3  # features over time, watermark progress, side outputs
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["events"] == 3000 and summary["dead_letters"] > 0
    assert (tmp_path / "chk" / "_latest").exists()


def test_train_deploy_notebook_runs_headless_with_papermill(small_data, tmp_path):
    from mlprep.batch.job import run_job
    from mlprep.stream.runner import run_stream

    run_job(JOB, {"data_dir": str(small_data.out_dir), "out_dir": str(tmp_path / "out")}, progress=False)
    run_stream(ROOT / "conf" / "features" / "transactions.yaml", str(small_data.events), tmp_path / "s",
               progress=False)
    out_nb = tmp_path / "03.ipynb"
    home = tmp_path / "home"
    pm.execute_notebook(str(ROOT / "notebooks" / "03_train_deploy.ipynb"), str(out_nb), parameters={
        "labels": str(small_data.labels), "transactions": str(tmp_path / "out" / "curated" / "transactions"),
        "features": str(tmp_path / "s" / "offline"), "home": str(home), "definition": str(tmp_path / "def.json"),
        "auc_threshold": 0.0, "max_iter": 30, "keep_endpoint": False},
        cwd=str(ROOT / "notebooks"), progress_bar=False, kernel_name="python3")
    nb = nbformat.read(out_nb, as_version=4)
    images = sum(1 for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert images >= 3  # DAG, ROC/PR + confusion, importances
    result = json.loads((home / "result.json").read_text())
    assert result["status"] == "Succeeded" and result["model_package"].endswith("mlprep-fraud-models/1")
    steps = json.loads((home / "executions" / "mlprep-fraud" / result["execution_id"] / "steps.json").read_text())
    assert len(steps["PipelineExecutionSteps"]) == 8
    check = result["endpoint"]
    assert check["stopped"] and len(check["predictions"]) == check["rows"] > 0
    assert all(0 <= p <= 1 for p in check["predictions"])
    from mlprep.pipeline.registry import Registry

    assert Registry(home).endpoints() == []


def test_jupyterlab_serves_the_stage_notebooks(tmp_path):
    """`make lab`'s server, headless: it answers on 127.0.0.1 and lists the three notebooks."""
    import secrets
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(16)
    proc = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                             f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
                             f"--ServerApp.root_dir={ROOT / 'notebooks'}",
                             *(["--allow-root"] if __import__("os").geteuid() == 0 else [])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**__import__("os").environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)})
    try:
        url = f"http://127.0.0.1:{port}/api/contents?token={token}"
        for _ in range(120):
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    listing = json.loads(r.read())
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("JupyterLab did not answer")
        names = {c["name"] for c in listing["content"] if c["type"] == "notebook"}
        assert {"01_batch_etl.ipynb", "02_stream_features.ipynb", "03_train_deploy.ipynb"} <= names
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=10) as r:
            assert r.status == 200 and b"JupyterLab" in r.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/kernelspecs?token={token}", timeout=10) as r:
            assert "python3" in json.loads(r.read())["kernelspecs"]
    finally:
        proc.terminate()
        proc.wait(20)
