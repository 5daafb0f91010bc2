"""Matplotlib figures of a stream run: features over time, watermark progress, side outputs."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import polars as pl


def features_over_time(out: str | Path, group: str, features: list[str], keys: list[str],
                       entity: str = "user_id", ax: plt.Axes | None = None) -> plt.Axes:
    """The final value of each window (by window end) for a few keys."""
    df = pl.read_parquet(Path(out) / "offline" / group / "**" / "*.parquet", hive_partitioning=True)
    df = df.sort("write_time").group_by([entity, "window_start"], maintain_order=True).last()
    axes = ax or plt.subplots(len(features), 1, figsize=(11, 2.6 * len(features)), sharex=True)[1]
    axes = axes if hasattr(axes, "__len__") else [axes]
    for a, f in zip(axes, features, strict=True):
        for k in keys:
            d = df.filter(pl.col(entity) == k).sort("event_time")
            # windows without events have no row: points, not a line that would invent values
            a.plot(d["event_time"].to_list(), d[f].to_list(), marker="o", ms=3, lw=0.4, label=k)
        a.set_ylabel(f)
    axes[0].legend(loc="upper right", fontsize=8)
    axes[0].set_title(f"{group}: features per window (x = window end)")
    return axes[-1]


def watermark_progress(out: str | Path, ax: plt.Axes | None = None) -> plt.Axes:
    """Event time seen vs watermark, and open windows, as the run went on."""
    m = pl.read_parquet(Path(out) / "metrics" / "*.parquet").sort("block")
    ax = ax or plt.subplots(figsize=(11, 3))[1]
    ev = pl.from_epoch(m["max_event_time"], time_unit="ms")
    wm = pl.from_epoch(m["watermark"].clip(lower_bound=m["max_event_time"].min() - 3_600_000), time_unit="ms")
    ax.plot(m["seconds"], ev, marker=".", label="max event time")
    ax.plot(m["seconds"], wm, marker=".", label="watermark", linestyle="--")
    ax.set_xlabel("processing time (s)")
    ax.legend(loc="upper left")
    ax2 = ax.twinx()
    ax2.plot(m["seconds"], m["open_windows"], color="#999", marker=".", alpha=0.6, label="open windows")
    ax2.set_ylabel("open windows")
    ax.set_title("Watermark and open windows during the run")
    return ax


def side_outputs(out: str | Path, ax: plt.Axes | None = None) -> plt.Axes:
    """Dead letters by reason and late events by window."""
    out = Path(out)
    counts: dict[str, int] = {}
    if (out / "dead_letters").exists():
        d = pl.read_parquet(out / "dead_letters" / "*.parquet")
        for r, n in d.group_by("reason").len().iter_rows():
            counts[f"dead: {r}"] = n
    if (out / "late").exists():
        late = pl.read_parquet(out / "late" / "*.parquet")
        for w, n in late.group_by("window").len().iter_rows():
            counts[f"late: {w}"] = n
    ax = ax or plt.subplots(figsize=(8, 0.4 * max(len(counts), 2) + 1))[1]
    bars = ax.barh(list(counts), list(counts.values()), color="#d62")
    ax.bar_label(bars, padding=3)
    ax.set_title("Dead letters and late events (none lost: each is kept with its reason)")
    return ax
