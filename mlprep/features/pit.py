"""Point-in-time-correct training sets: each label gets, per feature group, the latest feature
row known at the label's time — never one from the future, never one older than a TTL.

Kept free of other mlprep imports (pandas and numpy only), so that the same file can run in a
SageMaker processing container.

A feature row with ``event_time = e`` (a window's end) is known from ``e`` on: it is joined to
labels at ``t >= e``. Several writes for one (key, event_time) — corrections of a window by
late events — resolve to the latest ``write_time``. Labels without a fresh enough row get NULL
features (the training step decides how to treat them).
"""

from __future__ import annotations

import pandas as pd

SYSTEM = ("write_time", "api_invocation_time", "is_deleted", "year", "month", "day", "hour", "kind",
          "window_start", "window_end", "window")


def latest_writes(features: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per (keys, event_time): the last written (corrections win); deleted rows dropped."""
    f = features
    if "is_deleted" in f.columns:
        f = f[~f["is_deleted"].astype(bool)]
    if "write_time" in f.columns:
        f = f.sort_values("write_time", kind="stable")
    return f.drop_duplicates([*keys, "event_time"], keep="last")


def point_in_time_join(labels: pd.DataFrame, features: pd.DataFrame, keys: list[str],
                       label_time: str = "ts", ttl: pd.Timedelta | None = None,
                       prefix: str = "") -> pd.DataFrame:
    """``labels`` (keys, label_time, ...) with the feature columns of ``features`` (keys,
    ``event_time``, features...) as of each label's time; same rows, same order as ``labels``.

    ``ttl``: a feature row older than this at the label's time is not used.
    """
    f = latest_writes(features, keys)
    cols = [c for c in f.columns if c not in (*keys, "event_time", *SYSTEM)]
    f = f[[*keys, "event_time", *cols]].rename(columns={c: prefix + c for c in cols})
    left = labels.reset_index(drop=True).assign(_row=lambda d: range(len(d)))
    lt = pd.to_datetime(left[label_time], utc=True).dt.tz_localize(None).astype("datetime64[ms]")
    rt = pd.to_datetime(f["event_time"], utc=True).dt.tz_localize(None).astype("datetime64[ms]")
    left = left.assign(_t=lt).sort_values("_t", kind="stable")
    right = f.assign(_t=rt).drop(columns="event_time").sort_values("_t", kind="stable")
    right = right.rename(columns={"_t": "_ft"}).assign(_t=lambda d: d["_ft"])
    out = pd.merge_asof(left, right, on="_t", by=keys, direction="backward", allow_exact_matches=True,
                        tolerance=ttl)
    out = out.sort_values("_row").drop(columns=["_row", "_t"]).rename(columns={"_ft": f"{prefix}feature_time"})
    return out.reset_index(drop=True)


def split_by_time(df: pd.DataFrame, time_col: str, train_end: str, validation_end: str
                  ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train: time < train_end; validation: train_end <= time < validation_end; test: the rest."""
    t = pd.to_datetime(df[time_col], utc=True)
    a, b = pd.Timestamp(train_end, tz="UTC"), pd.Timestamp(validation_end, tz="UTC")
    if not a < b:
        raise ValueError(f"train_end ({train_end}) must be before validation_end ({validation_end})")
    return df[t < a], df[(t >= a) & (t < b)], df[t >= b]
