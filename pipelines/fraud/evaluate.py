"""Evaluation step: the trained model on the test set -> evaluation.json (the PropertyFile the
pipeline's condition reads) with ROC AUC, PR AUC, precision, recall, and the curves' points, all
on the whole test set; and a picture of the features' importance (permutation importance on a
stratified sample of at most ``IMPORTANCE_ROWS`` test rows)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tarfile
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from threadpoolctl import threadpool_limits

LABEL = "is_fraud"
IMPORTANCE_ROWS = 2000  # each of the 26 features x 3 repeats predicts these rows again


def load_model(model_dir: Path) -> dict:
    """model.tar.gz (as SageMaker packs SM_MODEL_DIR) or a folder with model.joblib."""
    tar = model_dir / "model.tar.gz"
    if tar.exists():
        with tarfile.open(tar) as t:
            t.extractall(model_dir / "_unpacked", filter="data")
        model_dir = model_dir / "_unpacked"
    return joblib.load(model_dir / "model.joblib")


def evaluate(model_dir: Path, test_dir: Path, out_dir: Path, threshold: float = 0.5) -> dict:
    # one OpenMP thread: a prediction here is a few thousand rows (~0.02 s), too small to gain from
    # a thread team; permutation importance's ~80 predictions each paid a team's start and barrier
    # waits (30-36 s on a busy 2-core machine; 1.7 s of CPU single-threaded, the same numbers)
    with threadpool_limits(limits=1, user_api="openmp"):
        return _evaluate(model_dir, test_dir, out_dir, threshold)


def _evaluate(model_dir: Path, test_dir: Path, out_dir: Path, threshold: float) -> dict:
    bundle = load_model(model_dir)
    test = pd.read_csv(test_dir / "data.csv")
    y = test[LABEL].to_numpy()
    p = bundle["model"].predict_proba(test[bundle["features"]])[:, 1]
    pred = (p >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    fpr, tpr, _ = roc_curve(y, p) if both else (np.array([0, 1]), np.array([0, 1]), None)
    prec, rec, _ = precision_recall_curve(y, p) if both else (np.array([1, 0]), np.array([0, 1]), None)
    take = np.linspace(0, len(fpr) - 1, min(len(fpr), 200)).astype(int)
    take_pr = np.linspace(0, len(prec) - 1, min(len(prec), 200)).astype(int)
    rows = importance_sample(y)
    report = {
        "binary_classification_metrics": {
            "roc_auc": {"value": float(roc_auc_score(y, p)) if both else None},
            "pr_auc": {"value": float(average_precision_score(y, p)) if both else None},
            "precision": {"value": float(precision_score(y, pred, zero_division=0))},
            "recall": {"value": float(recall_score(y, pred, zero_division=0))},
            "confusion_matrix": confusion_matrix(y, pred, labels=[0, 1]).tolist(),
            "test_rows": len(y), "positives": int(y.sum()), "threshold": threshold,
        },
        "curves": {"roc": {"fpr": fpr[take].tolist(), "tpr": tpr[take].tolist()},
                   "pr": {"precision": prec[take_pr].tolist(), "recall": rec[take_pr].tolist()}},
        "feature_importance": _importance(bundle, test.iloc[rows], y[rows]) if both else {},
        "feature_importance_rows": len(rows) if both else 0,
        "test_sha256": hashlib.sha256((test_dir / "data.csv").read_bytes()).hexdigest(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "evaluation.json").write_text(json.dumps(report, indent=2))
    return report


def importance_sample(y: np.ndarray, rows: int = IMPORTANCE_ROWS, seed: int = 0) -> np.ndarray:
    """Positions of the rows permutation importance is computed on, in test-set order: all of them
    up to ``rows``; beyond, every positive while they are at most half (the few that decide ROC
    AUC), and a seeded draw of each class to fill ``rows``."""
    if len(y) <= rows:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y != 1)
    n_pos = min(len(pos), rows // 2)
    n_neg = min(len(neg), rows - n_pos)
    take = [rng.choice(pos, n_pos, replace=False), rng.choice(neg, n_neg, replace=False)]
    return np.sort(np.concatenate(take))


def _importance(bundle: dict, test: pd.DataFrame, y: np.ndarray) -> dict[str, float]:
    """Permutation importance on ROC AUC (seeded, few repeats, on the sample it is given: a
    picture, not a verdict)."""
    from sklearn.inspection import permutation_importance

    r = permutation_importance(bundle["model"], test[bundle["features"]], y, scoring="roc_auc",
                               n_repeats=3, random_state=0)
    return {f: float(v) for f, v in sorted(zip(bundle["features"], r.importances_mean, strict=True),
                                           key=lambda kv: -kv[1])}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-dir", default=os.path.join(os.environ.get("MLPREP_OPT_ML", "/opt/ml"), "processing"))
    ap.add_argument("--threshold", type=float, default=0.5)
    a = ap.parse_args()
    b = Path(a.base_dir)
    r = evaluate(b / "model", b / "test", b / "evaluation", a.threshold)
    print(json.dumps(r["binary_classification_metrics"]))
