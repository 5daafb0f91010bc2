"""An independent, per-event Python simulation of the windowing semantics (the test oracle).

Events are ``(key, t_ms, value)`` or ``(key, t_ms, value, distinct_value)`` in arrival order:
aggregations run over ``value``; count_distinct over ``distinct_value`` when given (a spec may
count distinct merchants while summing amounts), else over ``value``."""

from __future__ import annotations

import math
from collections import defaultdict


def windows_of(t: int, wtype: str, size: int, slide: int | None) -> list[int]:
    if wtype == "tumbling":
        return [t - t % size]
    last = t - t % slide
    return [last - j * slide for j in range(size // slide)]


def aggregates(items: list[tuple]) -> dict:
    """Every aggregation over ``(t, arrival, value, distinct_value)`` items: count (all events),
    sum/mean/max/min/std (sample) over non-null values, distinct non-null, first/last by time
    then arrival."""
    xs = [v for _, _, v, _ in items if v is not None]
    n = len(xs)
    mean = math.fsum(xs) / n if n else None
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else None
    ordered = sorted((t, i, v) for t, i, v, _ in items if v is not None)
    return {"count": len(items), "sum": math.fsum(xs) if n else None, "mean": mean,
            "max": max(xs) if n else None, "min": min(xs) if n else None, "std": std,
            "distinct": len({d for *_, d in items if d is not None}),
            "first": ordered[0][2] if ordered else None, "last": ordered[-1][2] if ordered else None}


def _item(i: int, event: tuple) -> tuple:
    _key, t, v, *rest = event
    return t, i, v, rest[0] if rest else v


def simulate(events, wtype, size, slide, bound, lateness, column=None):
    """Tumbling or hopping windows. Returns (final aggregates per (key, start), late indexes)."""
    max_ts = None
    groups = defaultdict(list)
    late = []
    for i, e in enumerate(events):
        key, t = e[0], e[1]
        wm = None if max_ts is None else max_ts - bound
        starts = windows_of(t, wtype, size, slide)
        ok = [s for s in starts if wm is None or s + size + lateness > wm]
        if not ok:
            late.append(i)
        for s in ok:
            groups[(key, s)].append(_item(i, e))
        max_ts = t if max_ts is None else max(max_ts, t)
    return {g: aggregates(items) for g, items in groups.items()}, late


def simulate_sessions(events, gap, bound, lateness, batch):
    """Session windows event by event; sessions close (for good) when the watermark, advanced
    at batch boundaries as Flink's periodic watermarks are, passes end + lateness.
    Returns ({(key, start): aggregates + "end"}, late event indexes)."""
    max_ts = None
    open_: dict = defaultdict(list)  # key -> [[start, end, items]]
    closed = []
    late = []
    for i, e in enumerate(events):
        key, t = e[0], e[1]
        if i % batch == 0 and max_ts is not None:  # the watermark reaches the windows
            wm = max_ts - bound
            for k in list(open_):
                keep = []
                for s in open_[k]:
                    (closed.append((k, s)) if s[1] + lateness <= wm else keep.append(s))
                open_[k] = keep
        wm = None if max_ts is None else max_ts - bound
        lo, hi, items = t, t + gap, [_item(i, e)]
        merged = True
        sessions = open_[key]
        while merged:
            merged = False
            for s in sessions:
                if s[0] <= hi and s[1] >= lo and not s[3:]:
                    lo, hi = min(lo, s[0]), max(hi, s[1])
                    s.append("x")  # visited
                    merged = True
        touching = [s for s in sessions if s[3:]]
        for s in sessions:
            del s[3:]
        if wm is not None and hi + lateness <= wm:
            late.append(i)
        else:
            for s in touching:
                items += s[2]
            open_[key] = [s for s in sessions if s not in touching] + [[lo, hi, items]]
        max_ts = t if max_ts is None else max(max_ts, t)
    final = closed + [(k, s) for k, ss in open_.items() for s in ss]
    return {(k, s0): {**aggregates(items), "end": s1} for k, (s0, s1, items) in final}, late
