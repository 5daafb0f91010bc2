"""Processing step: labels + offline-store features -> point-in-time-correct train / validation /
test sets (CSV, label first, as SageMaker's built-in conventions expect).

Runs in a SageMaker processing container (pandas, numpy, pyarrow) or locally with the same
paths under ``--base-dir``:
  <base>/input/labels/*.jsonl|*.parquet    labels: txn_id, user_id, ts, is_fraud
  <base>/input/transactions/**.parquet     curated batch output (optional): per-transaction features
  <base>/input/features/<group>/...        offline store: one folder per feature group
  <base>/train|validation|test/data.csv
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd

# /opt/ml in a container; the job's folder when mlprep runs the pipeline locally
OPT_ML = Path(os.environ.get("MLPREP_OPT_ML", "/opt/ml"))


def _pit() -> ModuleType:
    """pit.py as the pipeline stages it (the "lib" input), loaded by its path; mlprep's own copy
    when run by hand."""
    staged = OPT_ML / "processing" / "input" / "lib" / "pit.py"
    if not staged.is_file():
        from mlprep.features import pit

        return pit
    spec = importlib.util.spec_from_file_location("pit", staged)
    module = importlib.util.module_from_spec(spec)
    sys.modules["pit"] = module
    spec.loader.exec_module(module)
    return module


_PIT = _pit()
point_in_time_join, split_by_time = _PIT.point_in_time_join, _PIT.split_by_time

LABEL = "is_fraud"
# per-transaction features from the batch job's curated table (known at the label's time)
TXN_FEATURES = ["amount", "hour", "day_of_week", "amount_z", "account_age_days"]


def read_any(folder: Path, suffixes: tuple[str, ...] = (".jsonl", ".json", ".parquet", ".csv")) -> pd.DataFrame:
    files = sorted(p for p in folder.rglob("*") if p.suffix in suffixes and not p.name.startswith(("_", ".")))
    if not files:
        raise SystemExit(f"no input files under {folder}")
    parts = []
    for p in files:
        if p.suffix == ".parquet":
            parts.append(pd.read_parquet(p))  # hive folders (year=...) are not features
        elif p.suffix == ".csv":
            parts.append(pd.read_csv(p))
        elif p.suffix in (".jsonl", ".json"):
            parts.append(pd.read_json(p, lines=True))
    return pd.concat(parts, ignore_index=True)


def transaction_features(folder: Path) -> pd.DataFrame | None:
    if not folder.is_dir() or not any(folder.rglob("*.parquet")):
        return None
    t = read_any(folder, (".parquet",))
    signup = pd.to_datetime(t["signup_date"], errors="coerce")
    t["account_age_days"] = (pd.to_datetime(t["ts"]) - signup).dt.total_seconds() / 86400
    return t[["txn_id", *TXN_FEATURES]].drop_duplicates("txn_id")


def build(base: Path, train_end: str, validation_end: str, ttl_hours: float, feature_groups: str = "all") -> dict:
    """Write the three splits; ``feature_groups`` is ``all``, ``none`` or comma-separated group
    names (the stream's window groups to use)."""
    labels = read_any(base / "input" / "labels")
    out = labels[["txn_id", "user_id", "ts", LABEL]].copy()
    txn = transaction_features(base / "input" / "transactions")
    if txn is not None:
        out = out.merge(txn, on="txn_id", how="left", validate="many_to_one")
    feature_root = base / "input" / "features"
    available = sorted(p for p in feature_root.iterdir() if p.is_dir()) if feature_root.is_dir() else []
    if feature_groups == "all":
        groups = available
    elif feature_groups in ("none", ""):
        groups = []
    else:
        wanted = [g.strip() for g in feature_groups.split(",") if g.strip()]
        missing = sorted(set(wanted) - {g.name for g in available})
        if missing:
            raise SystemExit(f"--feature-groups: no feature group {', '.join(missing)} under {feature_root} "
                             f"(available: {', '.join(g.name for g in available)})")
        groups = [g for g in available if g.name in wanted]
    for g in groups:
        feats = read_any(g, (".parquet",))  # beside the data: _feature_group.json
        out = point_in_time_join(out, feats, ["user_id"], ttl=pd.Timedelta(hours=ttl_hours))
        # how old the window is at the label's time: a count from 2 minutes ago means more
        label_t = pd.to_datetime(out["ts"], utc=True).dt.tz_localize(None)
        age = (label_t - pd.to_datetime(out["feature_time"])).dt.total_seconds()
        out = out.drop(columns=["feature_time"]).assign(**{f"age_s_{g.name.split('_')[-1]}": age})
    feature_cols = [c for c in out.columns if c not in ("txn_id", "user_id", "ts", LABEL)]
    out = out.sort_values("ts", kind="stable")
    splits = dict(zip(("train", "validation", "test"),
                      split_by_time(out, "ts", train_end, validation_end), strict=True))
    counts = {}
    for name, df in splits.items():
        d = base / name
        d.mkdir(parents=True, exist_ok=True)
        df[[LABEL, *feature_cols]].to_csv(d / "data.csv", index=False)
        counts[name] = {"rows": len(df), "positives": int(df[LABEL].sum())}
    report = {"features": feature_cols, "groups": [g.name for g in groups], "splits": counts,
              "transaction_features": txn is not None}
    (base / "train" / "features.json").write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-dir", default=str(OPT_ML / "processing"))
    ap.add_argument("--train-end", required=True)
    ap.add_argument("--validation-end", required=True)
    ap.add_argument("--ttl-hours", type=float, default=2.0)
    ap.add_argument("--feature-groups", default="all", help="all, none, or comma-separated group names")
    a = ap.parse_args()
    print(json.dumps(build(Path(a.base_dir), a.train_end, a.validation_end, a.ttl_hours, a.feature_groups)))
