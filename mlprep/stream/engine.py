"""The streaming aggregator: per-key event-time windows with watermarks, allowed lateness and a
late-data output, computed on micro-batches with polars (columnar state, no per-event Python).

Semantics (Flink's, with a watermark advanced after every event):

- Windows are [start, end), aligned to the epoch. Tumbling: ``start = t - t mod size``.
  Hopping: the ``size/slide`` windows whose start is a multiple of ``slide`` in (t - size, t].
  Session: each event opens [t, t + gap); sessions of a key that touch merge.
- Watermark ``W = max event time seen - max_out_of_orderness``. A window *fires* (emit-final)
  once ``W >= end``.
- An event is late for a window when ``end + allowed_lateness <= W`` as it arrives (W from the
  events before it). A late-but-allowed event updates its fired window, which is emitted again
  (an ``update`` row; updates are coalesced per micro-batch). An event late for every one of
  its windows of a window definition goes to the late-data output, with the reason.
- A window's state is dropped once ``W >= end + allowed_lateness``, checked at the end of each
  micro-batch (Flink likewise closes windows when a periodic watermark arrives); for sessions
  this can matter: an event more than out-of-orderness + lateness behind may find its old
  session closed and open a new one. At the end of a bounded input every open window fires
  (``flush``), unlike Spark's availableNow.

Feature values per window: count (events), sum, mean, min, max, stddev (sample, ddof=1; NULL
below 2 values), count_distinct, first / last (by event time, then arrival). NULL values are
ignored by everything but count, as in SQL. Each function's accumulators, their merge and its
value come from ``aggregations``; this module only groups, merges and fires.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mlprep.errors import SourceError
from mlprep.stream.aggregations import (
    AGGREGATIONS,
    accumulators,
    distinct_columns,
    distinct_count,
    merge_rows,
    partial_rows,
)
from mlprep.stream.columns import END, POS, SEQ, START, T
from mlprep.stream.spec import FeatureSpec, Window

NEG_INF = np.iinfo(np.int64).min // 4
PANE = "_pane"  # the slide of a hopping window (a tumbling one's size) an event falls in
STATE_FORMAT = 2  # of checkpointed state: 2 keeps each window's distinct count in its row


@dataclass
class BatchResult:
    """What one micro-batch (or the final flush) produced."""

    windows: dict[str, pl.DataFrame]  # window name -> its emitted rows (keys, window, window_start,
    # window_end, features, kind, watermark); only windows that emitted
    late: pl.DataFrame  # _pos, window, _t, reason
    watermark: int

    @property
    def emitted(self) -> pl.DataFrame:
        """Every window's emitted rows in one frame (features of other windows NULL)."""
        frames = list(self.windows.values())
        if len(frames) <= 1:
            return frames[0] if frames else pl.DataFrame()
        return pl.concat(frames, how="diagonal_relaxed")

    @property
    def rows(self) -> int:
        return sum(len(f) for f in self.windows.values())


class _WindowState:
    """Open windows of one window definition: accumulators per (keys, window_start)."""

    def __init__(self, spec: FeatureSpec, window: Window):
        self.spec, self.w = spec, window
        self.keys = list(spec.entity)
        self.size = window.size
        self.slide = window.slide or window.size  # a pane: the events that share all their windows
        self.k = self.size // self.slide if self.size else 1  # windows per event
        self.values = accumulators(spec.aggregations)  # value column -> its accumulators
        self.distinct = distinct_columns(spec.aggregations)
        self.acc: pl.DataFrame | None = None  # one row per open window
        self.seen: dict[str, pl.DataFrame] = {}  # count_distinct: unique (keys, start, value)

    # -- assignment ----------------------------------------------------------------------------
    def assign(self, ev: pl.DataFrame) -> pl.DataFrame:
        """One row per (event, window it belongs to), with window_start."""
        t = pl.col(T)
        if self.w.type == "tumbling":
            return ev.with_columns((t - t.mod(self.size)).alias(START))
        k = self.size // self.w.slide
        base = (t - t.mod(self.w.slide)).alias("_b")
        offsets = pl.Series("_k", np.arange(k, dtype=np.int64) * self.w.slide)
        return (ev.with_columns(base).join(offsets.to_frame(), how="cross")
                .with_columns((pl.col("_b") - pl.col("_k")).alias(START)).drop("_b", "_k"))

    def add_events(self, ev: pl.DataFrame, lateness: int) -> pl.DataFrame:
        """Add events (with ``_wm``, the watermark each met) to their windows that are still open;
        return those late for every one of them (``_seq``, and the latest window's start).

        Most panes (slides) of a key's events in a micro-batch meet nothing: no open window of
        the key reaches them and no other pane of the key is within a window's size. Each window
        of such a pane holds exactly the pane's events, so one partial row per pane is every
        window's row (``_add_panes``). The others, and keys with events late for some of their
        windows, go by (event, window) rows merged with the open state (``add``)."""
        closed = lambda start: (start + self.size + lateness) <= pl.col("_wm")  # noqa: E731
        ev = ev.with_columns((pl.col(T) - pl.col(T).mod(self.slide)).alias(PANE))
        ev = ev.with_columns(closed(pl.col(PANE)).alias("_all"),  # even its latest window
                             closed(pl.col(PANE) - (self.k - 1) * self.slide).alias("_some"))  # its earliest
        lost = ev.filter(pl.col("_all")).select(SEQ, pl.col(PANE).alias(START))
        ev = ev.filter(~pl.col("_all"))
        ev = ev.with_columns(self._meets(ev).alias("_meets"))
        if ev["_meets"].any():
            rows = self.assign(ev.filter(pl.col("_meets")))
            self.add(rows.filter(~closed(pl.col(START))))
            ev = ev.filter(~pl.col("_meets"))
        self._add_panes(ev)
        return lost

    def _meets(self, ev: pl.DataFrame) -> pl.Series:
        """Per event: may its rows meet other rows of a window? Yes for a pane that an open
        window of its key reaches (it ends after the pane starts), and for every event of a key
        with an event late for some of its windows or with two panes closer than a window's size."""
        keys = [ev.filter(pl.col("_some")).select(self.keys)]
        if self.k > 1:
            kp = ev.select([*self.keys, PANE]).unique().sort([*self.keys, PANE])
            same_key = pl.all_horizontal([pl.col(k) == pl.col(k).shift(1) for k in self.keys])
            keys.append(kp.filter(same_key & ((pl.col(PANE) - pl.col(PANE).shift(1)) < self.size)).select(self.keys))
        flagged = pl.concat(keys).unique().with_columns(pl.lit(True).alias("_key"))
        out = ev.select([*self.keys, PANE]).join(flagged, on=self.keys, how="left", nulls_equal=True,
                                                 maintain_order="left")
        if self.acc is not None and not self.acc.is_empty():
            reach = self.acc.group_by(self.keys).agg((pl.col(START).max() + self.size).alias("_reach"))
            out = out.join(reach, on=self.keys, how="left", nulls_equal=True, maintain_order="left")
            return (out["_key"].fill_null(False) | (out[PANE] < out["_reach"]).fill_null(False)).alias("_meets")
        return out["_key"].fill_null(False).alias("_meets")

    def _add_panes(self, ev: pl.DataFrame) -> None:
        """Open the windows of panes that meet nothing (see ``add_events``): the pane's partial
        row, once per window."""
        if ev.is_empty():
            return
        part = self._partial(ev, PANE)
        offsets = pl.DataFrame({"_k": np.arange(self.k, dtype=np.int64) * self.slide})
        per_window = [(pl.col(PANE) - pl.col("_k")).alias(START)]
        for c in self.distinct:
            d = ev.filter(pl.col(c).is_not_null()).select([*self.keys, PANE, c]).unique()
            part = part.join(d.group_by([*self.keys, PANE]).agg(pl.len().cast(pl.Int64).alias(distinct_count(c))),
                             on=[*self.keys, PANE], how="left", nulls_equal=True).with_columns(
                pl.col(distinct_count(c)).fill_null(0))
            d = d.join(offsets, how="cross").select([*self.keys, *per_window, c])
            prev = self.seen.get(c)
            self.seen[c] = d if prev is None else pl.concat([prev, d.select(prev.columns)], how="vertical_relaxed")
        windows = part.join(offsets, how="cross").with_columns(per_window).drop(PANE, "_k")
        windows = windows.select([*self.keys, START, *(c for c in windows.columns if c not in (*self.keys, START))])
        self.acc = windows if self.acc is None or self.acc.is_empty() else pl.concat(
            [self.acc, windows.select(self.acc.columns)], how="vertical_relaxed")

    # -- accumulate ----------------------------------------------------------------------------
    def _partial(self, rows: pl.DataFrame, by: str = START) -> pl.DataFrame:
        aggs = [partial_rows(), *(acc.partial(c).alias(acc.name(c)) for c, accs in self.values.items() for acc in accs)]
        return rows.group_by([*self.keys, by]).agg(aggs).with_columns(
            pl.lit(True).alias("_dirty"), pl.lit(False).alias("_emitted"))

    def _end(self) -> pl.Expr:
        return pl.col(START) + self.size

    def _merge(self, parts: pl.DataFrame, by: list[str] | None = None,
               extra: list[pl.Expr] | None = None) -> pl.DataFrame:
        aggs = [merge_rows(), *(extra or []),
                *(acc.merge(c).alias(acc.name(c)) for c, accs in self.values.items() for acc in accs),
                *(pl.col(distinct_count(c)).sum() for c in self.distinct if distinct_count(c) in parts.columns),
                pl.col("_dirty").any(), pl.col("_emitted").any()]
        return parts.group_by(by or [*self.keys, START]).agg(aggs)

    def add(self, rows: pl.DataFrame) -> None:
        if rows.is_empty():
            return
        part = self._partial(rows)
        for c in self.distinct:  # each window's number of distinct values grows by its new ones
            part = part.join(self._new_distinct(rows, c), on=[*self.keys, START], how="left").with_columns(
                pl.col(distinct_count(c)).fill_null(0))
        if self.acc is None or self.acc.is_empty():
            self.acc = part
        else:
            on = [*self.keys, START]
            touched = self.acc.join(part.select(on), on=on, how="semi")
            rest = self.acc.join(part.select(on), on=on, how="anti")
            # only partial rows of windows already open have something to merge with; the others
            # (most, for a hopping window over sparse keys) join the state as they are
            hit = part.join(touched.select(on), on=on, how="semi")
            new = part.join(touched.select(on), on=on, how="anti")
            merged = self._merge(pl.concat([touched, hit], how="vertical_relaxed"))
            self.acc = pl.concat([rest, merged.select(rest.columns), new.select(rest.columns)],
                                 how="vertical_relaxed")

    def _new_distinct(self, rows: pl.DataFrame, c: str) -> pl.DataFrame:
        """Add ``rows``' values of ``c`` to the windows' distinct sets; per window, how many
        were new."""
        d = rows.filter(pl.col(c).is_not_null()).select([*self.keys, START, c]).unique()
        prev = self.seen.get(c)
        if prev is not None:  # only values not seen before join the (large) set
            d = d.join(prev, on=[*self.keys, START, c], how="anti", nulls_equal=True)
        self.seen[c] = d if prev is None else pl.concat([prev, d], how="vertical_relaxed")
        return d.group_by([*self.keys, START]).agg(pl.len().cast(pl.Int64).alias(distinct_count(c)))

    # -- fire ----------------------------------------------------------------------------------
    def fire(self, watermark: int, lateness: int) -> pl.DataFrame:
        """Emit windows whose end the watermark has passed (first time: 'final'; changed since:
        'update'); drop windows past their lateness."""
        if self.acc is None or self.acc.is_empty():
            return pl.DataFrame()
        if self.acc.select(self._end().min()).item() > watermark:
            return pl.DataFrame()  # nothing due, nothing to drop (the common case: no scan of the state)
        end = self._end()
        due = (end <= watermark) & pl.col("_dirty")
        out = self.acc.filter(due)
        if not out.is_empty():
            out = self._features(out, watermark)
            self.acc = self.acc.with_columns(
                pl.when(due).then(True).otherwise(pl.col("_emitted")).alias("_emitted"),
                pl.when(due).then(False).otherwise(pl.col("_dirty")).alias("_dirty"))
        keep = (end + lateness) > watermark
        self.acc = self.acc.filter(keep)
        for c in self.distinct:
            self.seen[c] = self.seen[c].join(self.acc.select([*self.keys, START]), on=[*self.keys, START], how="semi")
        return out

    def _features(self, rows: pl.DataFrame, watermark: int) -> pl.DataFrame:
        cols: list[pl.Expr] = [*[pl.col(k) for k in self.keys], pl.lit(self.w.name).alias("window"),
                               pl.col(START), self._end().alias(END)]
        cols += [AGGREGATIONS[a.function].final(a.column or "").alias(f"{a.name}_{self.w.name}")
                 for a in self.spec.aggregations]
        kind = pl.when(pl.col("_emitted")).then(pl.lit("update")).otherwise(pl.lit("final"))
        return rows.select([*cols, kind.alias("kind"), pl.lit(watermark, pl.Int64).alias("watermark")])


class _SessionState(_WindowState):
    """Session windows of one gap: per key, sessions [first event, last event + gap) that merge
    when an event's [t, t + gap) touches them (as Flink's EventTimeSessionWindows do)."""

    def __init__(self, spec: FeatureSpec, window: Window):
        super().__init__(spec, window)
        self.gap = window.gap

    def _end(self) -> pl.Expr:
        return pl.col(END)

    def accept(self, ev: pl.DataFrame, lateness: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(accepted events, late events). An event is late when the session it would join,
        merged with what is open, already ended before the watermark (with the lateness). Only
        events whose own [t, t + gap) is past that point need the open sessions looked at: they
        are rare, and are checked one by one in arrival order."""
        maybe = (pl.col(T) + self.gap + lateness) <= pl.col("_wm")
        if not ev.select(maybe.any()).item():
            return ev, ev.clear()
        ev = ev.with_columns(maybe.alias("_maybe"))
        open_by_key: dict[tuple, list[list[int]]] = {}
        if self.acc is not None and not self.acc.is_empty():
            cand_keys = ev.filter(pl.col("_maybe")).select(self.keys).unique()
            for row in self.acc.join(cand_keys, on=self.keys, how="semi").select([*self.keys, START, END]).iter_rows():
                open_by_key.setdefault(tuple(row[:-2]), []).append([row[-2], row[-1]])
        late_seq = []
        keyed = ev.select([*self.keys, T, SEQ, "_wm", "_maybe"]).iter_rows()
        for row in keyed:
            key, t, seq, wm, maybe_late = tuple(row[: len(self.keys)]), *row[len(self.keys):]
            lo, hi = t, t + self.gap
            sessions = open_by_key.setdefault(key, [])
            changed = True
            while changed:  # merge transitively with what it touches
                changed = False
                for s0, s1 in sessions:
                    if s0 <= hi and s1 >= lo and (s0 < lo or s1 > hi):
                        lo, hi, changed = min(lo, s0), max(hi, s1), True
            if maybe_late and hi + lateness <= wm:
                late_seq.append(seq)
                continue
            sessions[:] = [x for x in sessions if not (x[0] <= hi and x[1] >= lo)] + [[lo, hi]]
        late = ev.filter(pl.col(SEQ).is_in(late_seq))
        return ev.filter(~pl.col(SEQ).is_in(late_seq)).drop("_maybe"), late.drop("_maybe")

    def add(self, rows: pl.DataFrame) -> None:
        """Add accepted events: each is a session [t, t + gap) merged with what it touches. A
        key whose events in the block are more than a gap apart and that has no open session
        just opens them (most keys, when keys are many); the others are merged
        (``_merge_sessions``)."""
        if rows.is_empty():
            return
        part = self._partial(rows.with_columns(pl.col(T).alias(START))).with_columns(
            (pl.col(START) + self.gap).alias(END))
        by_time = part.select([*self.keys, START]).sort([*self.keys, START])
        same_key = pl.all_horizontal([pl.col(k) == pl.col(k).shift(1) for k in self.keys])
        hot = [by_time.filter(same_key & ((pl.col(START) - pl.col(START).shift(1)) <= self.gap)).select(self.keys)]
        if self.acc is not None and not self.acc.is_empty():
            hot.append(self.acc.select(self.keys))
        merging = pl.concat(hot).unique()
        if not merging.is_empty():
            self._merge_sessions(part.join(merging, on=self.keys, how="semi", nulls_equal=True),
                                 rows.join(merging, on=self.keys, how="semi", nulls_equal=True))
            part = part.join(merging, on=self.keys, how="anti", nulls_equal=True)
            rows = rows.join(merging, on=self.keys, how="anti", nulls_equal=True)
        for c in self.distinct:  # one event per session here: 1 if it has a value, else 0
            d = rows.filter(pl.col(c).is_not_null()).select([*self.keys, pl.col(T).alias(START), c]).unique()
            part = part.join(d.group_by([*self.keys, START]).agg(pl.len().cast(pl.Int64).alias(distinct_count(c))),
                             on=[*self.keys, START], how="left", nulls_equal=True).with_columns(
                pl.col(distinct_count(c)).fill_null(0))
            prev = self.seen.get(c)
            self.seen[c] = d if prev is None else pl.concat([prev, d.select(prev.columns)], how="vertical_relaxed")
        if not part.is_empty():
            self.acc = part if self.acc is None or self.acc.is_empty() else pl.concat(
                [self.acc, part.select(self.acc.columns)], how="vertical_relaxed")

    def _merge_sessions(self, part: pl.DataFrame, rows: pl.DataFrame) -> None:
        """Merge the partial rows ``part`` (of ``rows``) with the open sessions of their keys."""
        keys = part.select(self.keys).unique()
        if self.acc is None or self.acc.is_empty():
            touched, rest = part.clear(), None
        else:
            touched = self.acc.join(keys, on=self.keys, how="semi")
            rest = self.acc.join(keys, on=self.keys, how="anti")
        both = pl.concat([touched.select(part.columns), part], how="vertical_relaxed").sort([*self.keys, START])
        # a new session starts where the start is past every end before it (per key)
        prev_end = pl.col(END).cum_max().shift(1).over(self.keys)
        both = both.with_columns(((pl.col(START) > prev_end).fill_null(True)).cum_sum().over(self.keys).alias("_g"))
        many = pl.len().over([*self.keys, "_g"]) > 1
        alone = both.filter(~many).drop("_g")  # most sessions merge with nothing: they stay as they are
        both = both.filter(many)
        merged = self._merge(both, by=[*self.keys, "_g"],
                             extra=[pl.col(START).min().alias("_s"), pl.col(END).max()])
        remap = both.select([*self.keys, START, "_g"]).join(
            merged.select([*self.keys, "_g", pl.col("_s").alias("_new")]), on=[*self.keys, "_g"]).drop("_g")
        merged = merged.with_columns(pl.col("_s").alias(START)).drop("_s", "_g")
        sessions = pl.concat([alone, merged.select(alone.columns)], how="vertical_relaxed")
        for c in self.distinct:
            sessions = sessions.join(self._session_distinct(rows, c, keys, remap), on=[*self.keys, START],
                                     how="left").with_columns(pl.col(distinct_count(c)).fill_null(0))
        self.acc = sessions if rest is None else pl.concat([rest, sessions.select(rest.columns)], how="vertical_relaxed")

    def _session_distinct(self, rows: pl.DataFrame, c: str, keys: pl.DataFrame, remap: pl.DataFrame) -> pl.DataFrame:
        """The distinct values of ``c`` of the sessions of ``keys``, ``rows`` added and merged
        sessions renamed by ``remap`` (keys, old start -> ``_new``); their number per session."""
        d = rows.filter(pl.col(c).is_not_null()).select([*self.keys, pl.col(T).alias(START), c])
        prev = self.seen.get(c)
        other = None
        if prev is not None:
            d = pl.concat([prev.join(keys, on=self.keys, how="semi"), d], how="vertical_relaxed")
            other = prev.join(keys, on=self.keys, how="anti")
        d = (d.join(remap, on=[*self.keys, START], how="left")
             .with_columns(pl.coalesce("_new", START).alias(START)).drop("_new").unique())
        self.seen[c] = d if other is None else pl.concat([other, d.select(other.columns)], how="vertical_relaxed")
        return d.group_by([*self.keys, START]).agg(pl.len().cast(pl.Int64).alias(distinct_count(c)))


class Aggregator:
    """Feed micro-batches of events (``process``), then ``flush`` at the end of the input.

    Events: a polars DataFrame with the entity key columns, ``_t`` (event time, ms since the
    epoch, Int64), ``_seq`` (arrival index), ``_pos`` (source position) and the spec's fields.
    """

    def __init__(self, spec: FeatureSpec):
        self.spec = spec
        self.states = [_SessionState(spec, w) if w.type == "session" else _WindowState(spec, w)
                       for w in spec.windows]
        self.part_max: dict[str, int] = {}  # max event time per source partition (shard)
        self.bound = spec.max_out_of_orderness
        self.lateness = spec.allowed_lateness

    @property
    def max_ts(self) -> int:
        """The watermark's base: the smallest partition maximum, as Flink takes the minimum of
        its source splits' watermarks (a shard that lags holds the watermark back)."""
        return min(self.part_max.values()) if self.part_max else NEG_INF

    @property
    def watermark(self) -> int:
        return self.max_ts - self.bound if self.max_ts > NEG_INF else NEG_INF

    def _watermarks_before(self, t: np.ndarray, parts: np.ndarray | None) -> np.ndarray:
        """The watermark each event meets on arrival (from the events before it), and update
        the partition maxima."""
        if parts is None:
            prev = self.part_max.get("", NEG_INF)
            before = np.maximum.accumulate(np.concatenate(([prev], t[:-1])))
            self.part_max[""] = max(prev, int(t.max()))
            return np.where(before > NEG_INF, before - self.bound, NEG_INF)
        names = sorted(set(self.part_max) | set(np.unique(parts).tolist()))
        big = np.iinfo(np.int64).max
        low = np.full(len(t), big, dtype=np.int64)
        for p in names:
            mine = np.where(parts == p, t, NEG_INF)
            run = np.maximum.accumulate(np.concatenate(([self.part_max.get(p, NEG_INF)], mine[:-1])))
            if p not in self.part_max:  # a partition nobody declared counts from its first event
                run = np.where(run > NEG_INF, run, big)
            low = np.minimum(low, run)
            if (parts == p).any():
                self.part_max[p] = max(self.part_max.get(p, NEG_INF), int(t[parts == p].max()))
        return np.where((low < big) & (low > NEG_INF), low - self.bound, NEG_INF)

    def declare_partitions(self, names: list[str]) -> None:
        """Partitions (shards) the source will read: until each has produced an event, the
        watermark stays back, so a shard read later does not find its windows closed."""
        for p in names:
            self.part_max.setdefault(p, NEG_INF)

    def process(self, ev: pl.DataFrame) -> BatchResult:
        if ev.is_empty():
            return BatchResult({}, pl.DataFrame(), self.watermark)
        t = ev[T].to_numpy()
        parts = ev["_part"].cast(pl.String).to_numpy() if "_part" in ev.columns else None
        ev = ev.with_columns(pl.Series("_wm", self._watermarks_before(t, parts)))
        late_parts = []
        for st in self.states:
            if isinstance(st, _SessionState):
                ok, lost = st.accept(ev, self.lateness)
                if not lost.is_empty():
                    late_parts.append(lost.select(POS, T, pl.lit(st.w.name).alias("window"), pl.format(
                        "late: its session closed (watermark {} on arrival, allowed lateness {} ms)",
                        pl.col("_wm"), pl.lit(self.lateness)).alias("reason")))
                st.add(ok)
                continue
            lost = st.add_events(ev, self.lateness)  # late for every one of its windows: to the late-data output
            if not lost.is_empty():
                late_parts.append(ev.join(lost, on=SEQ).select(
                    POS, T, pl.lit(st.w.name).alias("window"),
                    pl.format("late: window [{}, {}) closed (watermark {} on arrival, allowed lateness {} ms)",
                              START, pl.col(START) + st.size, pl.col("_wm"), pl.lit(self.lateness)).alias("reason")))
        return self._fire(late_parts)

    def flush(self) -> BatchResult:
        """End of a bounded input: the watermark goes to +infinity and every window fires."""
        end = np.iinfo(np.int64).max // 4 + self.bound
        self.part_max = {p: end for p in self.part_max} or {"": end}
        return self._fire([])

    def _fire(self, late_parts: list[pl.DataFrame]) -> BatchResult:
        wm = self.watermark
        fired = {st.w.name: st.fire(wm, self.lateness) for st in self.states}
        late = pl.concat(late_parts) if late_parts else pl.DataFrame()
        return BatchResult({w: f for w, f in fired.items() if not f.is_empty()}, late, wm)

    def open_windows(self) -> int:
        return sum(0 if st.acc is None else len(st.acc) for st in self.states)


def save_state(agg: Aggregator, folder: str | Path) -> dict[str, Any]:
    """Write the aggregator's state (open windows, distinct sets) under ``folder``; return the
    small part (watermark) for the checkpoint's JSON."""
    folder = Path(folder)
    for i, st in enumerate(agg.states):
        if st.acc is not None:
            st.acc.write_parquet(folder / f"acc_{i}.parquet")
        for c, df in st.seen.items():
            df.write_parquet(folder / f"seen_{i}_{c}.parquet")
    return {"part_max": {k: int(v) for k, v in agg.part_max.items()}, "state_format": STATE_FORMAT}


def load_state(agg: Aggregator, folder: str | Path, meta: dict[str, Any]) -> None:
    """The state ``save_state`` wrote (and the checkpoint's JSON part, ``meta``)."""
    folder = Path(folder)
    found = meta.get("state_format", 1)
    if found != STATE_FORMAT:
        raise SourceError(f"checkpoint {folder.name}: its window state is in format {found}, this mlprep"
                          f" reads format {STATE_FORMAT}; start again with another --checkpoint folder")
    agg.part_max = {k: int(v) for k, v in meta["part_max"].items()}
    for i, st in enumerate(agg.states):
        p = folder / f"acc_{i}.parquet"
        st.acc = pl.read_parquet(p) if p.exists() else None
        for c in st.distinct:
            q = folder / f"seen_{i}_{c}.parquet"
            if q.exists():
                st.seen[c] = pl.read_parquet(q)
