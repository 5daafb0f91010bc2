"""Seeded card-payments data set for a fraud use case.

``generate(out_dir, rows, seed)`` writes, deterministically for a given ``(rows, seed)``:

- ``transactions.jsonl``: one JSON object per line, in event-time order: ``txn_id``, ``user_id``,
  ``merchant_id``, ``amount`` (a JSON number; ~8% a numeric string, ~0.5% junk such as ``"N/A"``),
  ``currency``, ``ts`` (ISO 8601 UTC, milliseconds), ``device`` {``os``, ``browser``, ``ip``}.
  About 1% of values are null and ~0.5% of ``txn_id`` are duplicates (re-sent records).
- ``users.db``: SQLite database with table ``users`` (user_id, signup_date, country, segment,
  updated_at), standing in for an RDS table.
- ``labels.jsonl``: ``txn_id``, ``user_id``, ``ts``, ``is_fraud`` (0/1) for every distinct txn.
- ``events.jsonl``: the same records as an event stream: ordered by arrival, which is event
  time plus a delay; ~1% of events arrive late by up to 30 s.

Planted fraud patterns, which windowed features can catch: bursts of 5-12 transactions by one
user within ~2 minutes on a device new to that user; high amounts at night (00-05 UTC); a new
device. Vectorised with numpy/pyarrow: ~1M rows in a few seconds.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

START = np.datetime64("2026-11-01T00:00:00", "ms")
DAYS = 7
OS = np.array(["ios", "android", "windows", "macos", "linux"])
BROWSER = np.array(["safari", "chrome", "firefox", "edge", "app"])
CURRENCIES = np.array(["USD", "EUR", "GBP"])
COUNTRIES = np.array(["US", "GB", "DE", "FR", "ES", "IT", "NL", "PL"])
SEGMENTS = np.array(["consumer", "premium", "business"])
JUNK = np.array(["N/A", "", "abc", "12,50", "--"])


@dataclass(frozen=True)
class GeneratedData:
    """Paths and counts of one generated data set."""

    out_dir: Path
    rows: int
    users: int
    duplicates: int
    fraud: int

    @property
    def transactions(self) -> Path:
        return self.out_dir / "transactions.jsonl"

    @property
    def events(self) -> Path:
        return self.out_dir / "events.jsonl"

    @property
    def labels(self) -> Path:
        return self.out_dir / "labels.jsonl"

    @property
    def users_db(self) -> Path:
        return self.out_dir / "users.db"


def _quoted(a: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise('"', a, '"', "")


def _ids(prefix: str, nums: np.ndarray, width: int) -> pa.Array:
    """``prefix`` + zero-padded number, e.g. ``u0000042``; vectorised (np.char.mod is slow)."""
    digits = pc.utf8_lpad(pc.cast(pa.array(nums, pa.int64()), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _iso_ms(ms: np.ndarray) -> pa.Array:
    """ISO 8601 UTC text with milliseconds for offsets in ms from START."""
    t = pa.array(START + ms.astype("timedelta64[ms]"))
    return pc.strftime(t, format="%Y-%m-%dT%H:%M:%SZ")


def _json_str_or_null(a: np.ndarray | pa.Array, null: np.ndarray) -> pa.Array:
    """JSON text of a string column: ``"value"`` or ``null`` where ``null`` is true."""
    return pc.if_else(pa.array(null), "null", _quoted(pa.array(a)))


def generate(out_dir: str | Path, rows: int = 10_000, seed: int = 7) -> GeneratedData:
    """Write the data set to ``out_dir`` (created if missing) and return its description.

    ``rows`` is the exact number of lines in ``transactions.jsonl`` (duplicates included),
    at least 1,000.
    """
    if rows < 1000:
        raise ValueError(f"rows: must be >= 1000, got {rows}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_users = max(100, rows // 50)

    # --- users: a home device each, and a dimension table ----------------------------------
    home_os = rng.integers(0, len(OS), n_users)
    home_browser = rng.integers(0, len(BROWSER), n_users)
    home_ip = rng.integers(0, 2**32, n_users, dtype=np.uint64)
    fraud_users = rng.choice(n_users, size=max(5, n_users // 50), replace=False)

    # --- transaction skeleton: base traffic, fraud bursts, duplicates ---------------------
    n_dup = rows // 200
    n_burst_txn = max(20, rows // 100)
    n_base = rows - n_dup - n_burst_txn
    period_ms = DAYS * 86_400_000
    # users' activity is skewed: a few heavy users, a long tail
    weights = 1.0 / np.arange(1, n_users + 1) ** 0.6
    weights /= weights.sum()
    base_user = rng.choice(n_users, size=n_base, p=weights)
    base_ts = rng.integers(0, period_ms, n_base)
    base_amount = np.round(rng.lognormal(3.3, 1.1, n_base), 2)
    # night-time high amounts: part of the planted signal
    night = (base_ts % 86_400_000) < 5 * 3_600_000
    base_amount = np.where(night & (rng.random(n_base) < 0.03), base_amount * 25, base_amount)
    base_newdev = rng.random(n_base) < 0.03

    burst_user, burst_ts = [], []
    left = n_burst_txn
    while left > 0:
        k = int(min(left, rng.integers(5, 13)))
        u = rng.choice(fraud_users)
        t0 = rng.integers(0, period_ms - 600_000)
        burst_user.append(np.full(k, u))
        burst_ts.append(np.sort(t0 + rng.integers(0, 120_000, k)))
        left -= k
    b_user = np.concatenate(burst_user)
    b_ts = np.concatenate(burst_ts)
    b_amount = np.round(rng.lognormal(4.5, 0.8, n_burst_txn), 2)

    user = np.concatenate([base_user, b_user])
    ts = np.concatenate([base_ts, b_ts])
    amount = np.concatenate([base_amount, b_amount])
    newdev = np.concatenate([base_newdev, np.ones(n_burst_txn, bool)])
    is_burst = np.concatenate([np.zeros(n_base, bool), np.ones(n_burst_txn, bool)])
    order = np.argsort(ts, kind="stable")
    user, ts, amount, newdev, is_burst = (a[order] for a in (user, ts, amount, newdev, is_burst))
    n = len(user)
    txn_num = np.arange(1, n + 1)

    # labels, before duplicates are added (one label per distinct transaction)
    hour = (ts % 86_400_000) // 3_600_000
    p = np.full(n, 0.002)
    p = np.where(newdev, 0.06, p)
    p = np.where((hour < 5) & (amount > 500), 0.35, p)
    p = np.where(is_burst, 0.92, p)
    fraud = rng.random(n) < p

    # duplicates: re-sent copies placed right after their original
    dup_src = np.sort(rng.choice(n, size=n_dup, replace=False))
    idx = np.sort(np.concatenate([np.arange(n), dup_src]), kind="stable")

    os_i = np.where(newdev, rng.integers(0, len(OS), n), home_os[user])
    br_i = np.where(newdev, rng.integers(0, len(BROWSER), n), home_browser[user])
    ip = np.where(newdev, rng.integers(0, 2**32, n, dtype=np.uint64), home_ip[user])
    merchant = rng.integers(1, max(50, n // 200) + 1, n)
    currency = CURRENCIES[np.where(rng.random(n) < 0.8, 0, rng.integers(1, 3, n))]

    # --- JSON lines, built column-wise -----------------------------------------------------
    def cols(sel: np.ndarray, rng_c: np.random.Generator) -> pa.Array:
        m = len(sel)
        nulls = rng_c.random((5, m)) < 0.002  # ~1% of values null across fields
        am = amount[sel]
        am_txt = pc.cast(pa.array(am), pa.string())
        kind = rng_c.random(m)
        amount_json = pc.if_else(
            pa.array(kind < 0.08), _quoted(am_txt), am_txt
        )  # ~8% numeric strings
        junk = pa.array(JUNK[rng_c.integers(0, len(JUNK), m)])
        amount_json = pc.if_else(pa.array(kind > 0.995), _quoted(junk), amount_json)
        amount_json = pc.if_else(pa.array(nulls[0]), "null", amount_json)
        ip_v = ip[sel]
        ip_txt = pc.binary_join_element_wise(
            *[pc.cast(pa.array(((ip_v >> s) & 255).astype(np.int64)), pa.string()) for s in (24, 16, 8, 0)], "."
        )
        device = pc.binary_join_element_wise(
            '{"os":', _json_str_or_null(OS[os_i[sel]], nulls[3]),
            ',"browser":', _quoted(pa.array(BROWSER[br_i[sel]])),
            ',"ip":', _quoted(ip_txt), "}", "",
        )
        device = pc.if_else(pa.array(rng_c.random(m) < 0.002), "null", device)
        return pc.binary_join_element_wise(
            '{"txn_id":', _quoted(_ids("t", txn_num[sel], 9)),
            ',"user_id":', _json_str_or_null(_ids("u", user[sel], 7), nulls[1]),
            ',"merchant_id":', _quoted(_ids("m", merchant[sel], 5)),
            ',"amount":', amount_json,
            ',"currency":', _json_str_or_null(currency[sel], nulls[2]),
            ',"ts":"', _iso_ms(ts[sel]), '","device":', device, "}", "",
        )

    chunk = 250_000
    lines_by_row: list[pa.Array] = []
    for i, start in enumerate(range(0, len(idx), chunk)):
        lines_by_row.append(cols(idx[start : start + chunk], np.random.default_rng([seed, i])))
    lines = pa.chunked_array(lines_by_row)
    _write_lines(out / "transactions.jsonl", lines)

    # events: arrival order = event time + delay; ~1% late by up to 30 s
    ts_rows = ts[idx]
    erng = np.random.default_rng([seed, 99])
    delay = np.where(erng.random(len(idx)) < 0.01, erng.integers(1_000, 30_001, len(idx)), 0)
    arrival = np.argsort(ts_rows + delay, kind="stable")
    _write_lines(out / "events.jsonl", lines.take(pa.array(arrival)))

    # labels: one row per distinct transaction
    label_lines = pc.binary_join_element_wise(
        '{"txn_id":"', _ids("t", txn_num, 9),
        '","user_id":"', _ids("u", user, 7),
        '","ts":"', _iso_ms(ts), '","is_fraud":', pa.array(fraud.astype(int).astype(str)),
        "}", "",
    )
    _write_lines(out / "labels.jsonl", label_lines)

    _write_users(out / "users.db", n_users, np.random.default_rng([seed, 7]))
    meta = {"rows": rows, "users": n_users, "duplicates": int(n_dup), "fraud": int(fraud.sum()),
            "seed": seed, "start": str(START), "days": DAYS}
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return GeneratedData(out, rows, n_users, int(n_dup), int(fraud.sum()))


def _write_lines(path: Path, lines: pa.Array | pa.ChunkedArray) -> None:
    chunks = lines.chunks if isinstance(lines, pa.ChunkedArray) else [lines]
    with open(path, "wb") as f:
        for c in chunks:
            if len(c):
                # write the Arrow value buffer directly: no per-line Python objects
                c = pc.binary_join_element_wise(c, "\n", "")
                offsets = np.frombuffer(c.buffers()[1], np.int32, len(c) + 1, c.offset * 4)
                f.write(memoryview(c.buffers()[2])[offsets[0] : offsets[-1]])


def _write_users(path: Path, n_users: int, rng: np.random.Generator) -> None:
    path.unlink(missing_ok=True)
    signup = START - rng.integers(1, 1500, n_users).astype("timedelta64[D]")
    rows = zip(
        np.char.mod("u%07d", np.arange(n_users)).tolist(),
        np.datetime_as_string(signup, unit="D").tolist(),
        COUNTRIES[rng.integers(0, len(COUNTRIES), n_users)].tolist(),
        SEGMENTS[rng.choice(3, n_users, p=[0.8, 0.15, 0.05])].tolist(),
        np.datetime_as_string(signup + np.timedelta64(1, "D"), unit="s").tolist(),
        strict=True,
    )
    with sqlite3.connect(path) as con:
        con.execute(
            "CREATE TABLE users (user_id TEXT PRIMARY KEY, signup_date TEXT, country TEXT,"
            " segment TEXT, updated_at TEXT)"
        )
        con.executemany("INSERT INTO users VALUES (?, ?, ?, ?, ?)", rows)
    con.close()
