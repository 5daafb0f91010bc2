"""The fraud pipeline's step scripts, run as SageMaker would run them, on real stream features."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from typing import ClassVar

import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

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


class _Recording(HistGradientBoostingClassifier):
    """Notes the OpenMP threads each prediction may use (at module level: it is pickled)."""

    threads: ClassVar[list[int]] = []

    def _raw_predict(self, X, *a, **kw):
        from threadpoolctl import threadpool_info

        self.threads.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp")
        return super()._raw_predict(X, *a, **kw)


def test_evaluate_scores_every_test_row_and_pictures_importance_on_a_stratified_sample(tmp_path):
    """Metrics on the whole test set; permutation importance on at most IMPORTANCE_ROWS rows that
    keep every (rare) positive; predictions on one OpenMP thread (a team per small prediction
    cost 30 s of barrier waits on a busy 2-core machine)."""
    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from pipelines.fraud import evaluate

    threads = _Recording.threads
    threads.clear()
    rng = np.random.default_rng(1)
    n, features = 5000, ["a", "b", "c"]
    X = pd.DataFrame(rng.normal(size=(n, 3)), columns=features)
    y = (X["a"] + rng.normal(scale=2, size=n) > 4).astype(int)
    assert 10 < y.sum() < 200
    model = _Recording(max_iter=10).fit(X, y)
    threads.clear()
    (tmp_path / "model").mkdir()
    joblib.dump({"model": model, "features": features}, tmp_path / "model" / "model.joblib")
    (tmp_path / "test").mkdir()
    X.assign(is_fraud=y)[["is_fraud", *features]].to_csv(tmp_path / "test" / "data.csv", index=False)
    rep = evaluate.evaluate(tmp_path / "model", tmp_path / "test", tmp_path / "out")
    seen = list(threads)
    m = rep["binary_classification_metrics"]
    assert m["test_rows"] == n and m["positives"] == int(y.sum())
    p = model.predict_proba(X)[:, 1]
    assert m["roc_auc"]["value"] == roc_auc_score(y, p)
    assert rep["feature_importance_rows"] == evaluate.IMPORTANCE_ROWS < n
    assert next(iter(rep["feature_importance"])) == "a"
    assert len(seen) > 3 * 3 and set(seen) == {1}
    rows = evaluate.importance_sample(y.to_numpy())
    assert len(rows) == evaluate.IMPORTANCE_ROWS and (np.diff(rows) > 0).all()
    assert y.to_numpy()[rows].sum() == y.sum()  # every positive kept
    assert (evaluate.importance_sample(y.to_numpy()) == rows).all()  # seeded
    many = np.r_[np.ones(4000, int), np.zeros(1000, int)]  # positives the majority: both classes kept
    s = evaluate.importance_sample(many)
    assert len(s) == evaluate.IMPORTANCE_ROWS and many[s].sum() == evaluate.IMPORTANCE_ROWS // 2
    assert (evaluate.importance_sample(y.to_numpy()[:1500]) == np.arange(1500)).all()
