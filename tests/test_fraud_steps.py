"""The fraud pipeline's step scripts, run as SageMaker would run them, on real stream features."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from mlprep.datasets.payments import generate
from mlprep.stream.runner import run_stream
from tests.conftest import ROOT

STEPS = ROOT / "pipelines" / "fraud"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fraud")
    data = generate(d / "data", rows=20_000, seed=3)
    run_stream(ROOT / "conf" / "features" / "transactions.yaml", str(data.events), d / "stream")
    base = d / "processing"
    (base / "input" / "labels").mkdir(parents=True)
    shutil.copy(data.labels, base / "input" / "labels" / "labels.jsonl")
    shutil.copytree(d / "stream" / "offline", base / "input" / "features")
    return d, data


def _run(script, *args, env=None):
    import os

    p = subprocess.run([sys.executable, str(STEPS / script), *args], capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_preprocess_train_evaluate_and_serve(workdir):
    d, data = workdir
    base = d / "processing"
    rep = _run("preprocess.py", "--base-dir", str(base), "--train-end", "2026-11-05",
               "--validation-end", "2026-11-06", "--ttl-hours", "2")
    assert sum(s["rows"] for s in rep["splits"].values()) == data.rows - data.duplicates
    assert "txn_count_5m" in rep["features"] and "txn_count_session10m" in rep["features"]
    m = _run("train.py", "--max_iter", "100", env={
        "SM_CHANNEL_TRAIN": str(base / "train"), "SM_CHANNEL_VALIDATION": str(base / "validation"),
        "SM_MODEL_DIR": str(d / "model")})
    assert m["train_rows"] == rep["splits"]["train"]["rows"]
    (base / "model").mkdir()
    shutil.copy(d / "model" / "model.joblib", base / "model" / "model.joblib")
    ev = _run("evaluate.py", "--base-dir", str(base))
    assert ev["test_rows"] == rep["splits"]["test"]["rows"] and ev["positives"] > 20
    # the planted bursts show in the recent-window features (seeded data and model: ~0.71)
    assert ev["roc_auc"]["value"] > 0.65
    report = json.loads((base / "evaluation" / "evaluation.json").read_text())
    assert len(report["curves"]["roc"]["fpr"]) > 2 and report["feature_importance"]

    from pipelines.fraud import inference

    bundle = inference.model_fn(str(d / "model"))
    feats = bundle["features"]
    df = inference.input_fn(",".join("1" for _ in feats), "text/csv")
    body, ctype = inference.output_fn(inference.predict_fn(df, bundle), "application/json")
    assert ctype == "application/json" and 0 <= json.loads(body)["predictions"][0] <= 1
    with pytest.raises(inference.PayloadError, match="expected"):
        inference.predict_fn(inference.input_fn("1,2", "text/csv"), bundle)
    with pytest.raises(inference.PayloadError, match="missing features"):
        inference.predict_fn(inference.input_fn('[{"txn_count_5m": 1}]', "application/json"), bundle)
    with pytest.raises(inference.PayloadError, match="unsupported content type"):
        inference.input_fn("x", "application/xml")
