"""An independent pandas implementation of the demo batch job, used as the test oracle."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd


def demo_job(data_dir: Path) -> tuple[pd.DataFrame, dict[str, int]]:
    """(output rows sorted by txn_id, counts) of conf/batch/transactions.yaml, in plain pandas."""
    recs, quarantined = [], 0
    with open(data_dir / "transactions.jsonl", "rb") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                assert isinstance(r, dict)
            except Exception:
                quarantined += 1
                continue
            dev = r.get("device") or {}
            amount = r.get("amount")
            if isinstance(amount, str):
                try:
                    amount = float(amount)
                except ValueError:
                    quarantined += 1
                    continue
            recs.append({"_pos": i, "txn_id": r.get("txn_id"), "user_id": r.get("user_id"),
                         "merchant_id": r.get("merchant_id"), "amount": None if amount is None else float(amount),
                         "currency": r.get("currency"), "ts": r.get("ts"), "device_os": dev.get("os"),
                         "device_browser": dev.get("browser"), "device_ip": dev.get("ip")})
    df = pd.DataFrame(recs)
    df["ts"] = pd.to_datetime(df["ts"], utc=True).dt.tz_localize(None)
    missing = df[["txn_id", "user_id", "amount", "ts"]].isna().any(axis=1)
    quarantined += int(missing.sum())
    df = df[~missing]
    filtered = int((df["amount"] <= 0).sum())
    df = df[df["amount"] > 0]
    before = len(df)
    df = df.sort_values(["ts", "_pos"], kind="stable").drop_duplicates("txn_id", keep="first")
    deduplicated = before - len(df)
    with sqlite3.connect(data_dir / "users.db") as con:
        users = pd.read_sql("SELECT * FROM users", con)
    df = df.merge(users, on="user_id", how="left")
    df["hour"] = df["ts"].dt.hour
    df["day_of_week"] = df["ts"].dt.day_of_week + 1
    g = df.groupby("user_id")["amount"]
    std = g.transform(lambda s: s.std(ddof=0))
    z = (df["amount"] - g.transform("mean")) / std.replace(0, np.nan)
    df["amount_z"] = z.fillna(0.0)
    df["dt"] = df["ts"].dt.strftime("%Y-%m-%d")
    df = df.drop(columns="_pos").sort_values("txn_id").reset_index(drop=True)
    counts = {"read": sum(1 for ln in open(data_dir / "transactions.jsonl", "rb") if ln.strip()),
              "written": len(df), "quarantined": quarantined, "deduplicated": deduplicated,
              "filtered": filtered}
    return df, counts


def assert_same_table(a: pd.DataFrame, b: pd.DataFrame, key: str = "txn_id") -> None:
    """Two engines' outputs hold the same rows: same columns and length, floats within 1e-9
    relative (sums differ in the last digits across engines), everything else as text."""
    a = a.sort_values(key).reset_index(drop=True)
    b = b.sort_values(key).reset_index(drop=True)
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for c in a.columns:
        if pd.api.types.is_float_dtype(a[c]):
            assert ((a[c] - b[c]).abs().fillna(0) <= 1e-9 * (1 + b[c].abs().fillna(0))).all(), c
        else:
            assert a[c].astype(str).tolist() == b[c].astype(str).tolist(), c
