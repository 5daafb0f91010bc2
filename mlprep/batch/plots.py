"""Matplotlib figures of a batch run: row accounting, null rates, amounts, quality outcomes."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def row_accounting(summary: dict[str, Any], ax: plt.Axes | None = None) -> plt.Axes:
    """A bar per outcome (written, quarantined, deduplicated, filtered) next to rows read."""
    ax = ax or plt.subplots(figsize=(6, 3))[1]
    rows = summary["rows"]
    names = ["read", "written", "quarantined", "deduplicated", "filtered"]
    vals = [rows.get(n, 0) for n in names]
    bars = ax.barh(names[::-1], vals[::-1], color=["#888", "#2a7", "#d62", "#e90", "#69c"][::-1])
    ax.bar_label(bars, labels=[f"{v:,}" for v in vals[::-1]], padding=3)
    ax.set_title("Row accounting: read = written + quarantined + deduplicated + filtered")
    ax.set_xlim(0, max([*vals, 1]) * 1.2)
    return ax


def null_rates(df: pd.DataFrame, ax: plt.Axes | None = None) -> plt.Axes:
    """Share of nulls per column of the output, in percent."""
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    rates = df.isna().mean().sort_values() * 100
    ax.barh(rates.index.astype(str), rates.values, color="#69c")
    ax.set_xlabel("null values (%)")
    ax.set_title("Null rate per output column")
    return ax


def amount_distribution(df: pd.DataFrame, column: str = "amount", ax: plt.Axes | None = None) -> plt.Axes:
    """Histogram of a positive amount on a log scale."""
    ax = ax or plt.subplots(figsize=(6, 3))[1]
    v = df[column].dropna()
    v = v[v > 0]
    if len(v):
        bins = np.logspace(np.log10(v.min()), np.log10(v.max()), 50)
        ax.hist(v, bins=bins, color="#2a7")
        ax.set_xscale("log")
    ax.set_xlabel(column)
    ax.set_ylabel("rows")
    ax.set_title(f"Distribution of {column}")
    return ax


def quality_outcomes(quality: dict[str, Any], ax: plt.Axes | None = None) -> plt.Axes:
    """One row per rule: green passed, red failed (error), orange failed (warn)."""
    rules = quality.get("rules", [])
    ax = ax or plt.subplots(figsize=(10, 0.35 * max(len(rules), 2) + 0.8))[1]
    colors = ["#2a7" if r["passed"] else ("#d62" if r["severity"] == "error" else "#e90") for r in rules]
    y = np.arange(len(rules))[::-1]
    ax.barh(y, [1] * len(rules), color=colors)
    for yi, r in zip(y, rules, strict=True):
        m = r["metric"]
        txt = f"{r['rule']}  [{r['severity']}]" + (f"  metric={m}" if m is not None else "")
        ax.text(0.01, yi, txt, va="center", fontsize=8, color="white")
    ax.set_yticks([])
    ax.set_xticks([])
    ax.set_title("Data-quality rules (green: passed, red: failed error, orange: failed warning)")
    return ax
