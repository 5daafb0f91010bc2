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


@dataclass
class _Txns:
    """Distinct transactions in event-time order, one array element each."""

    user: np.ndarray
    ts: np.ndarray  # ms from START
    amount: np.ndarray
    newdev: np.ndarray  # on a device new to the user
    is_burst: np.ndarray
    fraud: np.ndarray | None = None
    device: dict[str, np.ndarray] | None = None  # os_i, br_i, ip, merchant, currency

    @property
    def txn_num(self) -> np.ndarray:
        return np.arange(1, len(self.user) + 1)


def generate(out_dir: str | Path, rows: int = 10_000, seed: int = 7, days: int = DAYS) -> GeneratedData:
    """Write the data set to ``out_dir`` (created if missing) and return its description.

    ``rows`` is the exact number of lines in ``transactions.jsonl`` (duplicates included),
    at least 1,000; ``days``: the event-time span (a longer span at the same rows is sparser
    traffic, as real traffic grows by time, not by density).
    """
    if rows < 1000:
        raise ValueError(f"rows: must be >= 1000, got {rows}")
    if days < 1:
        raise ValueError(f"days: must be >= 1, got {days}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)  # one stream, drawn from in this order: same seed, same data
    n_users = max(100, rows // 50)
    users = _users(rng, n_users)
    n_dup = rows // 200
    n_burst = max(20, rows // 100)
    t = _transactions(rng, users, rows - n_dup - n_burst, n_burst, days * 86_400_000)
    t.fraud = _labels(rng, t)
    idx = _with_duplicates(rng, len(t.user), n_dup)
    t.device = _devices(rng, t, users)

    lines = _transaction_lines(t, idx, seed)
    _write_lines(out / "transactions.jsonl", lines)
    _write_lines(out / "events.jsonl", lines.take(pa.array(_arrival_order(t.ts[idx], seed))))
    _write_lines(out / "labels.jsonl", _label_lines(t))
    _write_users(out / "users.db", n_users, np.random.default_rng([seed, 7]))
    fraud = int(t.fraud.sum())
    meta = {"rows": rows, "users": n_users, "duplicates": int(n_dup), "fraud": fraud,
            "seed": seed, "start": str(START), "days": days}
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return GeneratedData(out, rows, n_users, int(n_dup), fraud)


def _users(rng: np.random.Generator, n_users: int) -> dict[str, np.ndarray]:
    """A home device each, and the users who commit fraud."""
    return {"os": rng.integers(0, len(OS), n_users), "browser": rng.integers(0, len(BROWSER), n_users),
            "ip": rng.integers(0, 2**32, n_users, dtype=np.uint64),
            "fraud": rng.choice(n_users, size=max(5, n_users // 50), replace=False)}


def _transactions(rng: np.random.Generator, users: dict[str, np.ndarray], n_base: int, n_burst: int,
                  period_ms: int) -> _Txns:
    """Base traffic (skewed users, night-time high amounts, some new devices) and fraud bursts."""
    n_users = len(users["os"])
    weights = 1.0 / np.arange(1, n_users + 1) ** 0.6  # a few heavy users, a long tail
    weights /= weights.sum()
    base_user = rng.choice(n_users, size=n_base, p=weights)
    base_ts = rng.integers(0, period_ms, n_base)
    base_amount = np.round(rng.lognormal(3.3, 1.1, n_base), 2)
    night = (base_ts % 86_400_000) < 5 * 3_600_000  # night-time high amounts: part of the planted signal
    base_amount = np.where(night & (rng.random(n_base) < 0.03), base_amount * 25, base_amount)
    base_newdev = rng.random(n_base) < 0.03
    b_user, b_ts = _bursts(rng, users["fraud"], n_burst, period_ms)
    b_amount = np.round(rng.lognormal(4.5, 0.8, n_burst), 2)
    cols = (np.concatenate([base_user, b_user]), np.concatenate([base_ts, b_ts]),
            np.concatenate([base_amount, b_amount]), np.concatenate([base_newdev, np.ones(n_burst, bool)]),
            np.concatenate([np.zeros(n_base, bool), np.ones(n_burst, bool)]))
    order = np.argsort(cols[1], kind="stable")
    return _Txns(*(a[order] for a in cols))


def _bursts(rng: np.random.Generator, fraud_users: np.ndarray, n: int, period_ms: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Runs of 5-12 transactions by one fraud user within two minutes."""
    burst_user, burst_ts = [], []
    left = n
    while left > 0:
        k = int(min(left, rng.integers(5, 13)))
        u = rng.choice(fraud_users)
        t0 = rng.integers(0, period_ms - 600_000)
        burst_user.append(np.full(k, u))
        burst_ts.append(np.sort(t0 + rng.integers(0, 120_000, k)))
        left -= k
    return np.concatenate(burst_user), np.concatenate(burst_ts)


def _labels(rng: np.random.Generator, t: _Txns) -> np.ndarray:
    """Fraud, drawn with the planted patterns' probabilities (one label per distinct transaction)."""
    hour = (t.ts % 86_400_000) // 3_600_000
    p = np.full(len(t.user), 0.002)
    p = np.where(t.newdev, 0.06, p)
    p = np.where((hour < 5) & (t.amount > 500), 0.35, p)
    p = np.where(t.is_burst, 0.92, p)
    return rng.random(len(t.user)) < p


def _with_duplicates(rng: np.random.Generator, n: int, n_dup: int) -> np.ndarray:
    """Row order with re-sent copies placed right after their original."""
    dup_src = np.sort(rng.choice(n, size=n_dup, replace=False))
    return np.sort(np.concatenate([np.arange(n), dup_src]), kind="stable")


def _devices(rng: np.random.Generator, t: _Txns, users: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The device (home, or a new one), merchant and currency of each transaction."""
    n = len(t.user)
    return {"os_i": np.where(t.newdev, rng.integers(0, len(OS), n), users["os"][t.user]),
            "br_i": np.where(t.newdev, rng.integers(0, len(BROWSER), n), users["browser"][t.user]),
            "ip": np.where(t.newdev, rng.integers(0, 2**32, n, dtype=np.uint64), users["ip"][t.user]),
            "merchant": rng.integers(1, max(50, n // 200) + 1, n),
            "currency": CURRENCIES[np.where(rng.random(n) < 0.8, 0, rng.integers(1, 3, n))]}


def _transaction_lines(t: _Txns, idx: np.ndarray, seed: int) -> pa.ChunkedArray:
    """JSON lines, built column-wise in chunks (each chunk with its own seeded generator)."""
    chunk = 250_000
    return pa.chunked_array([_line_chunk(t, idx[start : start + chunk], np.random.default_rng([seed, i]))
                             for i, start in enumerate(range(0, len(idx), chunk))])


def _line_chunk(t: _Txns, sel: np.ndarray, rng_c: np.random.Generator) -> pa.Array:
    m, d = len(sel), t.device
    nulls = rng_c.random((5, m)) < 0.002  # ~1% of values null across fields
    am_txt = pc.cast(pa.array(t.amount[sel]), pa.string())
    kind = rng_c.random(m)
    amount_json = pc.if_else(pa.array(kind < 0.08), _quoted(am_txt), am_txt)  # ~8% numeric strings
    junk = pa.array(JUNK[rng_c.integers(0, len(JUNK), m)])
    amount_json = pc.if_else(pa.array(kind > 0.995), _quoted(junk), amount_json)
    amount_json = pc.if_else(pa.array(nulls[0]), "null", amount_json)
    ip_v = d["ip"][sel]
    ip_txt = pc.binary_join_element_wise(
        *[pc.cast(pa.array(((ip_v >> s) & 255).astype(np.int64)), pa.string()) for s in (24, 16, 8, 0)], ".")
    device = pc.binary_join_element_wise(
        '{"os":', _json_str_or_null(OS[d["os_i"][sel]], nulls[3]),
        ',"browser":', _quoted(pa.array(BROWSER[d["br_i"][sel]])), ',"ip":', _quoted(ip_txt), "}", "")
    device = pc.if_else(pa.array(rng_c.random(m) < 0.002), "null", device)
    return pc.binary_join_element_wise(
        '{"txn_id":', _quoted(_ids("t", t.txn_num[sel], 9)),
        ',"user_id":', _json_str_or_null(_ids("u", t.user[sel], 7), nulls[1]),
        ',"merchant_id":', _quoted(_ids("m", d["merchant"][sel], 5)),
        ',"amount":', amount_json,
        ',"currency":', _json_str_or_null(d["currency"][sel], nulls[2]),
        ',"ts":"', _iso_ms(t.ts[sel]), '","device":', device, "}", "")


def _arrival_order(ts_rows: np.ndarray, seed: int) -> np.ndarray:
    """Arrival = event time + delay; ~1% late by up to 30 s."""
    erng = np.random.default_rng([seed, 99])
    delay = np.where(erng.random(len(ts_rows)) < 0.01, erng.integers(1_000, 30_001, len(ts_rows)), 0)
    return np.argsort(ts_rows + delay, kind="stable")


def _label_lines(t: _Txns) -> pa.Array:
    return pc.binary_join_element_wise(
        '{"txn_id":"', _ids("t", t.txn_num, 9), '","user_id":"', _ids("u", t.user, 7),
        '","ts":"', _iso_ms(t.ts), '","is_fraud":', pa.array(t.fraud.astype(int).astype(str)), "}", "")


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
