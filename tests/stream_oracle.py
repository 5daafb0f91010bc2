"""An independent, per-event Python simulation of the windowing semantics (the test oracle)."""

from __future__ import annotations

import math
from collections import defaultdict


def windows_of(t: int, wtype: str, size: int, slide: int | None) -> list[int]:
    if wtype == "tumbling":
        return [t - t % size]
    last = t - t % slide
    return [last - j * slide for j in range(size // slide)]


def simulate(events, wtype, size, slide, bound, lateness, column):
    """events: (key, t_ms, value) in arrival order. Returns (final per (key, start): dict of
    count/sum/mean/max/stddev/distinct, late event indexes)."""
    max_ts = None
    groups = defaultdict(list)
    late = []
    for i, (key, t, v) in enumerate(events):
        wm = None if max_ts is None else max_ts - bound
        starts = windows_of(t, wtype, size, slide)
        ok = [s for s in starts if wm is None or s + size + lateness > wm]
        if not ok:
            late.append(i)
        for s in ok:
            groups[(key, s)].append(v)
        max_ts = t if max_ts is None else max(max_ts, t)
    out = {}
    for g, vs in groups.items():
        xs = [x for x in vs if x is not None]
        n = len(xs)
        mean = sum(xs) / n if n else None
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else None
        out[g] = {"count": len(vs), "sum": sum(xs) if n else None, "mean": mean,
                  "max": max(xs) if n else None, "std": std, "distinct": len(set(xs))}
    return out, late
