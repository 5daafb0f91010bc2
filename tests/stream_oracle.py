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
    firsts: dict = {}
    late = []
    for i, (key, t, v) in enumerate(events):
        wm = None if max_ts is None else max_ts - bound
        starts = windows_of(t, wtype, size, slide)
        ok = [s for s in starts if wm is None or s + size + lateness > wm]
        if not ok:
            late.append(i)
        for s in ok:
            groups[(key, s)].append(v)
            if v is not None:
                firsts.setdefault((key, s), []).append((t, i, v))
        max_ts = t if max_ts is None else max(max_ts, t)
    out = {}
    for g, vs in groups.items():
        xs = [x for x in vs if x is not None]
        n = len(xs)
        mean = sum(xs) / n if n else None
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else None
        ordered = sorted(firsts.get(g, []))
        out[g] = {"count": len(vs), "sum": sum(xs) if n else None, "mean": mean,
                  "max": max(xs) if n else None, "min": min(xs) if n else None, "std": std,
                  "distinct": len(set(xs)), "first": ordered[0][2] if ordered else None,
                  "last": ordered[-1][2] if ordered else None}
    return out, late


def simulate_sessions(events, gap, bound, lateness, batch):
    """Session windows event by event; sessions close (for good) when the watermark, advanced
    at batch boundaries as Flink's periodic watermarks are, passes end + lateness.
    Returns ({(key, start): (end, count, sum)}, late event indexes)."""
    max_ts = None
    open_: dict = defaultdict(list)  # key -> [[start, end, values]]
    closed = []
    late = []
    for i, (key, t, v) in enumerate(events):
        if i % batch == 0 and max_ts is not None:  # the watermark reaches the windows
            wm = max_ts - bound
            for k in list(open_):
                keep = []
                for s in open_[k]:
                    (closed.append((k, s)) if s[1] + lateness <= wm else keep.append(s))
                open_[k] = keep
        wm = None if max_ts is None else max_ts - bound
        lo, hi, vals = t, t + gap, [v]
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
                vals += s[2]
            open_[key] = [s for s in sessions if s not in touching] + [[lo, hi, vals]]
        max_ts = t if max_ts is None else max(max_ts, t)
    final = closed + [(k, s) for k, ss in open_.items() for s in ss]
    out = {}
    for k, (s0, s1, vals) in final:
        xs = [x for x in vals if x is not None]
        out[(k, s0)] = (s1, len(vals), sum(xs) if xs else None)
    return out, late
