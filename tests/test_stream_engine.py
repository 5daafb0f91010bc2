"""The streaming aggregator against a per-event Python simulation of the semantics."""

from __future__ import annotations

import math
import random

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlprep.stream.engine import Aggregator
from mlprep.stream.spec import load_spec
from tests.stream_oracle import simulate


def _spec(wtype="tumbling", size="1m", slide=None, bound="10s", lateness="20s"):
    w = {"type": wtype, "size": size, **({"slide": slide} if slide else {})}
    return load_spec({
        "name": "t", "entity": ["k"], "event_time": {"field": "ts", "format": "epoch_ms"},
        "fields": {"v": "double"}, "max_out_of_orderness": bound, "allowed_lateness": lateness,
        "windows": [w],
        "aggregations": [{"name": "n", "function": "count"}, {"name": "s", "function": "sum", "column": "v"},
                         {"name": "m", "function": "mean", "column": "v"}, {"name": "x", "function": "max", "column": "v"},
                         {"name": "sd", "function": "stddev", "column": "v"},
                         {"name": "d", "function": "count_distinct", "column": "v"},
                         {"name": "lo", "function": "min", "column": "v"},
                         {"name": "f", "function": "first", "column": "v"},
                         {"name": "l", "function": "last", "column": "v"}]})


def _events(n, seed, keys=20, span_ms=600_000, late_frac=0.05, max_delay=60_000):
    rng = random.Random(seed)
    ts = sorted(rng.randrange(0, span_ms) for _ in range(n))
    arrival = [t + (rng.randrange(0, max_delay) if rng.random() < late_frac else 0) for t in ts]
    order = sorted(range(n), key=lambda i: (arrival[i], i))
    ev = []
    for i in order:
        v = None if rng.random() < 0.05 else float(rng.randrange(0, 50))
        ev.append((f"k{rng.randrange(keys)}", ts[i], v))
    return ev


def _run(spec, ev, batch):
    agg = Aggregator(spec)
    df = pl.DataFrame({"k": [e[0] for e in ev], "_t": np.array([e[1] for e in ev], np.int64),
                       "_seq": np.arange(len(ev), dtype=np.int64), "_pos": np.arange(1, len(ev) + 1, dtype=np.int64),
                       "v": [e[2] for e in ev]}, schema_overrides={"v": pl.Float64})
    emitted, late = [], []
    for i in range(0, len(ev), batch):
        r = agg.process(df.slice(i, batch))
        for part, acc in ((r.emitted, emitted), (r.late, late)):
            if not part.is_empty():
                acc.append(part)
        if not r.emitted.is_empty():  # a window is never emitted before the watermark passes its end
            assert (r.emitted["window_end"] <= r.watermark).all()
    r = agg.flush()
    if not r.emitted.is_empty():
        emitted.append(r.emitted)
    return pl.concat(emitted, how="diagonal_relaxed"), (pl.concat(late) if late else pl.DataFrame())


AGGREGATES = (("n", "count"), ("d", "distinct"), ("s", "sum"), ("m", "mean"), ("x", "max"), ("sd", "std"),
              ("lo", "min"), ("f", "first"), ("l", "last"))


def _same_aggregates(row: dict, expected: dict, suffix: str, group) -> None:
    """Every aggregation of the spec: counts exactly, floats to 1e-9 relative."""
    for name, key in AGGREGATES:
        a, b = row[f"{name}_{suffix}"], expected[key]
        if key in ("count", "distinct"):
            assert a == b, (group, name, a, b)
        else:
            assert (a is None and b is None) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), (group, name, a, b)


def _check(spec, ev, batch):
    w = spec.windows[0]
    expected, late_idx = simulate(ev, w.type, w.size, w.slide, spec.max_out_of_orderness, spec.allowed_lateness, "v")
    emitted, late = _run(spec, ev, batch)
    final = emitted.group_by(["k", "window_start"]).agg(pl.all().sort_by("watermark").last())
    got = {(r["k"], r["window_start"]): r for r in final.iter_rows(named=True)}
    assert set(got) == set(expected)
    for g, e in expected.items():
        _same_aggregates(got[g], e, w.name, g)
    late_pos = sorted(late["_pos"].to_list()) if not late.is_empty() else []
    assert late_pos == [i + 1 for i in late_idx]
    return emitted


@pytest.mark.parametrize("batch", [1, 7, 1000, 100_000])
def test_tumbling_matches_the_per_event_simulation(batch):
    ev = _events(3000, seed=1)
    emitted = _check(_spec(), ev, batch)
    assert (emitted["kind"] == "final").any()
    if batch <= 7:  # small batches see windows fire, then late-but-allowed events correct them
        assert (emitted["kind"] == "update").any()


@pytest.mark.parametrize("batch", [5, 500])
def test_hopping_matches_the_per_event_simulation(batch):
    _check(_spec("hopping", "1m", "20s"), _events(2000, seed=2), batch)


@pytest.mark.parametrize("wtype,size,slide", [("hopping", "10m", "1m"), ("hopping", "5m", "150s"), ("tumbling", "5m", None)])
@pytest.mark.parametrize("batch", [40, 600])
def test_sparse_keys_match_the_per_event_simulation(wtype, size, slide, batch):
    """Many keys with a few events each (the engine's shortcut for a key with one pane and no open
    window), beside keys with close panes, open windows and events late for some windows only."""
    ev = _events(2500, seed=3, keys=600, span_ms=4 * 3_600_000, late_frac=0.08, max_delay=400_000)
    dense = _events(500, seed=4, keys=3, span_ms=4 * 3_600_000)
    mixed = [e for i, x in enumerate(ev) for e in ([x, dense[i // 5]] if i % 5 == 0 else [x])]
    _check(_spec(wtype, size, slide), mixed, batch)


def test_late_events_are_reported_with_the_reason():
    ev = [("a", 10_000, 1.0), ("a", 200_000, 2.0), ("a", 20_000, 3.0)]  # the last one is far too late
    emitted, late = _run(_spec(), ev, 10)
    assert late["_pos"].to_list() == [3]
    assert late["reason"][0].startswith("late: window [0, 60000) closed (watermark 190000 on arrival")
    first = emitted.filter(pl.col("window_start") == 0)
    assert first["n_1m"].to_list() == [1] and first["kind"].to_list() == ["final"]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 400))
def test_shuffling_within_the_out_of_orderness_bound_changes_nothing(seed, batch):
    """Events displaced by less than the bound (and never behind the watermark) give the same
    features, whatever the arrival order and batch size."""
    rng = random.Random(seed)
    ev = _events(600, seed=seed, late_frac=0.0)
    bound = 10_000
    # displace each event by up to bound/2 in arrival, keeping event times
    keyed = sorted(ev, key=lambda e: e[1] + rng.randrange(0, bound // 2))
    spec = _spec(bound="10s", lateness="0s")
    a, _ = _run(spec, ev, 50)
    b, late = _run(spec, keyed, batch)
    assert late.is_empty()
    cols = ["k", "window_start", "n_1m", "s_1m", "x_1m", "d_1m"]
    assert a.filter(pl.col("kind") == "final").select(cols).sort(cols).equals(
        b.filter(pl.col("kind") == "final").select(cols).sort(cols))


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda s: s["windows"][0].update(size="5 minutes"), "windows[0].size"),
    (lambda s: s["windows"].append({"type": "hopping", "size": "1h", "slide": "7m"}), "windows[1]"),
    (lambda s: s["aggregations"].append({"name": "z", "function": "median", "column": "v"}), "aggregations[9].function"),
    (lambda s: s.update(max_out_of_orderness="soon"), "max_out_of_orderness"),
    (lambda s: s.pop("entity"), "entity"),
])
def test_spec_errors_name_the_field(mutate, field):
    from mlprep.errors import ConfigError

    raw = _spec().model_dump(exclude_none=True)
    raw["windows"] = [{"type": "tumbling", "size": "1m"}]
    mutate(raw)
    with pytest.raises(ConfigError) as ei:
        load_spec(raw)
    assert ei.value.field == field


@pytest.mark.parametrize("batch,keys", [(1, 8), (13, 8), (400, 8), (10_000, 8), (50, 900), (700, 900)])
def test_session_windows_match_the_simulation(batch, keys):
    """Few keys (sessions merge all the time) and many (most keys have one event per block and
    no open session: the engine opens those without merging)."""
    from tests.stream_oracle import simulate_sessions

    raw = _spec().model_dump(exclude_none=True)  # every aggregation, on session windows
    raw["windows"] = [{"type": "session", "gap": "30s"}]
    spec = load_spec(raw)
    ev = _events(2500, seed=5, keys=keys, span_ms=3_600_000, late_frac=0.08, max_delay=90_000)
    expected, late_idx = simulate_sessions(ev, 30_000, 10_000, 20_000, batch)
    emitted, late = _run(spec, ev, batch)
    # sessions merged after they fired leave their earlier rows behind: keep the last word on
    # each stretch of time (rows not covered by a row of the same key emitted later)
    rows = emitted.sort("watermark").to_dicts()
    final = {}
    for i, r in enumerate(rows):
        if not any(o["k"] == r["k"] and o["window_start"] <= r["window_start"] and o["window_end"] >= r["window_end"]
                   for o in rows[i + 1:]):
            final[(r["k"], r["window_start"])] = r
    assert final.keys() == expected.keys()
    for g, e in expected.items():
        r = final[g]
        assert r["window_end"] == e["end"], g
        _same_aggregates(r, e, "session30s", g)
    assert (sorted(late["_pos"].to_list()) if not late.is_empty() else []) == [i + 1 for i in late_idx]
    assert len(late_idx) > 0 and len(expected) > 100


def _exact_stddev(xs: list[float]) -> float | None:
    """The sample standard deviation of the floats as given, in exact rational arithmetic."""
    from fractions import Fraction

    if len(xs) < 2:
        return None
    q = [Fraction(x) for x in xs]
    mean = sum(q) / len(q)
    return math.sqrt(sum((x - mean) ** 2 for x in q) / (len(q) - 1))


def _grouped_stddev(wtype: str, values: list[float], ts: list[int], batch: int) -> dict[int, float | None]:
    spec = load_spec({
        "name": "t", "entity": ["k"], "event_time": {"field": "ts", "format": "epoch_ms"}, "fields": {"v": "double"},
        "max_out_of_orderness": "0s", "allowed_lateness": "0s",
        "windows": [{"type": "session", "gap": "10m"} if wtype == "session" else {"type": wtype, "size": "1h"}],
        "aggregations": [{"name": "sd", "function": "stddev", "column": "v"}]})
    ev = [("a", t, v) for t, v in zip(ts, values, strict=True)]
    emitted, _ = _run(spec, ev, batch)
    col = f"sd_{spec.windows[0].name}"
    return {r["window_start"]: r[col] for r in emitted.iter_rows(named=True)}


def test_session_stddev_of_large_values_close_together_is_exact():
    """1e8 + 0.1, 0.2, 0.3 in one session: 0.1, not 0 (the sum-of-squares merge cancelled)."""
    xs = [100000000.1, 100000000.2, 100000000.3]
    got = _grouped_stddev("session", xs, [0, 60_000, 120_000], batch=1)
    assert list(got) == [0]
    assert math.isclose(got[0], _exact_stddev(xs), rel_tol=1e-7) and math.isclose(got[0], 0.1, rel_tol=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["session", "tumbling"]), st.floats(-1e12, 1e12, allow_nan=False),
       st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=40), st.integers(1, 7))
def test_grouped_stddev_matches_exact_rational_arithmetic(wtype, offset, deltas, batch):
    """Any offset (values far from 0), any split into micro-batches: within a few ulps of the
    magnitude of the exact answer computed with fractions."""
    xs = [offset + d for d in deltas]
    ts = [i * 1_000 for i in range(len(xs))]  # one session, one tumbling hour
    got = _grouped_stddev(wtype, xs, ts, batch)
    assert list(got) == [0]
    truth = _exact_stddev(xs)
    scale = max(abs(x) for x in xs)
    assert abs(got[0] - truth) <= 64 * 2.0**-52 * scale * math.sqrt(len(xs)) + 1e-12 * truth, (got[0], truth)


def test_the_watermark_is_the_minimum_over_shards():
    """A shard that lags holds the watermark back (as Flink takes the minimum of its splits'
    watermarks); a declared shard that has produced nothing yet holds it back entirely."""
    spec = _spec(bound="0s", lateness="0s")
    agg = Aggregator(spec)
    agg.declare_partitions(["s1", "s2"])

    def batch(rows):
        return pl.DataFrame({"k": [r[0] for r in rows], "_t": [r[1] for r in rows], "_seq": list(range(len(rows))),
                             "_pos": list(range(1, len(rows) + 1)), "v": [1.0] * len(rows), "_part": [r[2] for r in rows]},
                            schema_overrides={"_t": pl.Int64, "_seq": pl.Int64, "_pos": pl.Int64})

    r = agg.process(batch([("a", 10_000, "s1"), ("a", 130_000, "s1")]))  # s2 silent: no watermark yet
    assert r.emitted.is_empty() and agg.watermark < 0
    r = agg.process(batch([("b", 30_000, "s2")]))  # s2 at 30 s: the watermark is 30 s, not 130 s
    assert agg.watermark == 30_000 and r.emitted.is_empty()
    r = agg.process(batch([("b", 70_000, "s2")]))  # s2 passes 60 s: the first minute fires
    assert agg.watermark == 70_000
    assert sorted(r.emitted.select("k", "window_start").rows()) == [("a", 0), ("b", 0)]
    r = agg.process(batch([("a", 190_000, "s1")]))  # s1 runs further ahead: nothing more fires
    assert agg.watermark == 70_000 and r.emitted.is_empty()


@pytest.mark.parametrize("batch", [1, 3])
def test_sessions_touching_at_the_gap_merge(batch):
    """[t, t + gap) and [t + gap, t + 2 gap) touch: one session (Flink's); a millisecond more: two."""
    raw = _spec(bound="0s", lateness="0s").model_dump(exclude_none=True)
    raw["windows"] = [{"type": "session", "gap": "30s"}]
    emitted, _ = _run(load_spec(raw), [("a", 0, 1.0), ("b", 0, 1.0), ("a", 30_000, 2.0), ("b", 30_001, 2.0)], batch)
    got = sorted(emitted.select("k", "window_start", "window_end", "n_session30s").rows())
    assert got == [("a", 0, 60_000, 2), ("b", 0, 30_000, 1), ("b", 30_001, 60_001, 1)]
