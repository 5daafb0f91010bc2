"""Point-in-time joins against a brute-force oracle: no feature from the future, TTL respected."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlprep.features.pit import point_in_time_join, split_by_time

T0 = pd.Timestamp("2026-11-01")


def _brute(labels, feats, ttl):
    out = []
    for _, lab in labels.iterrows():
        cand = feats[(feats.user_id == lab.user_id) & (feats.event_time <= lab.ts)]
        if ttl is not None:
            cand = cand[cand.event_time >= lab.ts - ttl]
        if cand.empty:
            out.append(None)
            continue
        best = cand[cand.event_time == cand.event_time.max()].sort_values("write_time", kind="stable").iloc[-1]
        out.append(best.f)
    return out


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([None, 10, 60]))
def test_point_in_time_join_matches_brute_force(seed, ttl_min):
    rng = np.random.default_rng(seed)
    n_f, n_l = 60, 40
    feats = pd.DataFrame({
        "user_id": rng.choice(["a", "b", "c"], n_f),
        "event_time": T0 + pd.to_timedelta(rng.integers(0, 240, n_f) * 5, unit="min"),
        "write_time": T0 + pd.to_timedelta(rng.integers(0, 10_000, n_f), unit="s"),
        "f": rng.normal(size=n_f), "is_deleted": False})
    labels = pd.DataFrame({"user_id": rng.choice(["a", "b", "c", "d"], n_l),
                           "ts": T0 + pd.to_timedelta(rng.integers(0, 72_000, n_l), unit="s"),
                           "is_fraud": rng.integers(0, 2, n_l)})
    ttl = None if ttl_min is None else pd.Timedelta(minutes=ttl_min)
    got = point_in_time_join(labels, feats, ["user_id"], ttl=ttl)
    assert len(got) == len(labels) and (got["is_fraud"].values == labels["is_fraud"].values).all()
    exp = _brute(labels, feats, ttl)
    for g, e in zip(got["f"], exp, strict=True):
        assert (pd.isna(g) and e is None) or g == e
    known = got.dropna(subset=["feature_time"])
    assert (pd.to_datetime(known["feature_time"]) <= pd.to_datetime(known["ts"])).all()  # nothing from the future


def test_a_window_is_known_at_its_end_not_before():
    feats = pd.DataFrame({"user_id": ["u"], "event_time": [T0 + pd.Timedelta(minutes=5)], "f": [7.0]})
    labels = pd.DataFrame({"user_id": ["u", "u"], "ts": [T0 + pd.Timedelta(minutes=5) - pd.Timedelta(milliseconds=1),
                                                         T0 + pd.Timedelta(minutes=5)]})
    assert point_in_time_join(labels, feats, ["user_id"])["f"].tolist()[1] == 7.0
    assert pd.isna(point_in_time_join(labels, feats, ["user_id"])["f"].tolist()[0])


def test_split_by_time():
    df = pd.DataFrame({"ts": pd.date_range("2026-11-01", periods=7, freq="D"), "x": range(7)})
    tr, va, te = split_by_time(df, "ts", "2026-11-04", "2026-11-06")
    assert tr["x"].tolist() == [0, 1, 2] and va["x"].tolist() == [3, 4] and te["x"].tolist() == [5, 6]
    with pytest.raises(ValueError, match="train_end"):
        split_by_time(df, "ts", "2026-11-06", "2026-11-04")


def test_labels_join_the_stream_offline_store(small_data, tmp_path):
    import polars as pl

    from mlprep.stream.runner import run_stream
    from tests.conftest import ROOT

    run_stream(ROOT / "conf" / "features" / "transactions.yaml", str(small_data.events), tmp_path / "s")
    feats = pl.read_parquet(tmp_path / "s" / "offline" / "user_txn_features_10m_every1m" / "**" / "*.parquet",
                            hive_partitioning=True).to_pandas()
    labels = pd.read_json(small_data.labels, lines=True)
    got = point_in_time_join(labels, feats, ["user_id"], ttl=pd.Timedelta(hours=2))
    assert len(got) == len(labels) == small_data.rows - small_data.duplicates
    known = got.dropna(subset=["feature_time"])
    assert len(known) > 0.3 * len(got)  # 100 users over 7 days: many labels have no recent window
    assert (pd.to_datetime(known["feature_time"]) <= pd.to_datetime(known["ts"]).dt.tz_localize(None)).all()
    # the window that ends at or before the label and starts 10 minutes earlier: its count is exact
    row = known.iloc[len(known) // 2]
    ev = pd.read_json(small_data.events, lines=True)
    ev = ev[(ev.user_id == row.user_id) & ev.amount.apply(lambda a: isinstance(a, int | float) and a > 0)]
    ts = pd.to_datetime(ev.ts).dt.tz_localize(None)
    end = pd.Timestamp(row.feature_time)
    n = ((ts >= end - pd.Timedelta(minutes=10)) & (ts < end)).sum()
    assert row["txn_count_10m_every1m"] == n
