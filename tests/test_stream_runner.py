"""The stream runner end to end on the sample events: stores, side outputs, counts."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from mlprep.stream.runner import run_stream
from tests.conftest import ROOT
from tests.stream_oracle import simulate, simulate_sessions

SPEC = ROOT / "conf" / "features" / "transactions.yaml"


def _expected_events(path):
    """Events as the spec reads them, in arrival order, and the dead/filtered counts."""
    ev, dead, filtered = [], {}, 0
    for i, line in enumerate(open(path), 1):
        r = json.loads(line)
        if r.get("user_id") is None:
            dead[i] = "missing key user_id"
            continue
        a = r.get("amount")
        if isinstance(a, str):
            try:
                a = float(a)
            except ValueError:
                dead[i] = "wrong type for amount (expected double)"
                continue
        if a is None or a <= 0:
            filtered += 1
            continue
        t = int(datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).timestamp() * 1000)
        ev.append((r["user_id"], t, float(a), r.get("merchant_id")))
    return ev, dead, filtered


GROUPS = {"5m": ("tumbling", 300_000, None), "10m_every1m": ("hopping", 600_000, 60_000),
          "session10m": ("session", 600_000, None)}
FEATURES = (("txn_count", "count"), ("amount_sum", "sum"), ("amount_mean", "mean"), ("amount_max", "max"),
            ("amount_std", "std"), ("merchants", "distinct"))


def _check_group(out, suffix, expected):
    """The latest write of every window equals the oracle, for every aggregation."""
    off = pl.read_parquet(out / "offline" / f"user_txn_features_{suffix}" / "**" / "*.parquet", hive_partitioning=True)
    final = off.sort("write_time").group_by(["user_id", "window_start"]).last()
    got = {(r["user_id"], r["window_start"]): r for r in final.iter_rows(named=True)}
    assert set(got) == set(expected), suffix
    for g, e in expected.items():
        r = got[g]
        for name, key in FEATURES:
            a, b = r[f"{name}_{suffix}"], e[key]
            if key in ("count", "distinct"):
                assert a == b, (suffix, g, name, a, b)
            else:
                assert (a is None and b is None) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), (suffix, g, name)
        if "end" in e:
            assert r["window_end"] == e["end"]


def test_stream_run_end_to_end(small_data, tmp_path):
    out = tmp_path / "stream"
    s = run_stream(SPEC, str(small_data.events), out)
    ev, dead, filtered = _expected_events(small_data.events)
    assert s["events"] == 3000 and s["dead_letters"] == len(dead) and s["filtered"] == filtered
    dl = pl.read_parquet(out / "dead_letters" / "*.parquet")
    assert dict(zip(dl["_pos"].to_list(), dl["reason"].to_list(), strict=True)) == dead

    # offline store: the latest write of every window of every group equals the oracle's final
    # value, for every aggregation (the file is one micro-batch: sessions close at its end)
    late_counts = 0
    for suffix, (wtype, size, slide) in GROUPS.items():
        if wtype == "session":
            expected, late = simulate_sessions(ev, size, 30_000, 60_000, batch=len(ev) + 1)
        else:
            expected, late = simulate(ev, wtype, size, slide, 30_000, 60_000)
        _check_group(out, suffix, expected)
        late_counts += len(late)
    assert s["late"] == late_counts
    off = pl.read_parquet(out / "offline" / "user_txn_features_5m" / "**" / "*.parquet", hive_partitioning=True)
    assert {"event_time", "write_time", "api_invocation_time", "is_deleted", "year", "hour"} <= set(off.columns)
    expected, _ = simulate(ev, "tumbling", 300_000, None, 30_000, 60_000)
    fg = json.loads((out / "offline" / "user_txn_features_5m" / "_feature_group.json").read_text())
    assert fg["EventTimeFeatureName"] == "event_time" and fg["RecordIdentifierFeatureName"] == "user_id"
    assert {"txn_count_5m", "amount_sum_5m"} <= {f["FeatureName"] for f in fg["FeatureDefinitions"]}

    # online store: the newest window per user
    from mlprep.stream.spec import load_spec
    from mlprep.stream.stores import OnlineStore

    store = OnlineStore(out / "online.sqlite", load_spec(SPEC))
    user, _start = max(expected, key=lambda g: (g[1], g[0]))
    latest_start = max(st for (u, st) in expected if u == user)
    row = store.get("user_txn_features_5m", user)
    assert row["event_time"] == latest_start + 300_000
    assert row["txn_count_5m"] == expected[(user, latest_start)]["count"]
    store.close()


def test_stream_cli(small_data, tmp_path):
    p = subprocess.run([sys.executable, "-m", "mlprep", "stream", "run", str(SPEC), "--source", str(small_data.events),
                        "--out", str(tmp_path / "o"), "--no-progress"], capture_output=True, text=True, check=True)
    assert json.loads(open(p.stdout.strip().splitlines()[-1]).read())["events"] == 3000
    bad = subprocess.run([sys.executable, "-m", "mlprep", "stream", "run", str(SPEC), "--source", str(tmp_path / "nope"),
                          "--out", str(tmp_path / "o2")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr == f"error: --source: no such file or folder: {tmp_path / 'nope'}\n"
    (tmp_path / "empty.jsonl").write_bytes(b"")
    empty = subprocess.run([sys.executable, "-m", "mlprep", "stream", "run", str(SPEC), "--source",
                            str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "o3"), "--no-progress"],
                           capture_output=True, text=True)
    assert empty.returncode == 0 and "Traceback" not in empty.stderr
    assert f"warning mlprep.stream: no events in {tmp_path / 'empty.jsonl'}" in empty.stderr.splitlines()


def test_block_size_replays_a_small_file_as_a_stream(small_data, tmp_path):
    """--block-size 16k: many micro-batches, windows fire while the file is read (not all at the end)."""
    cli = [sys.executable, "-m", "mlprep", "stream", "run", str(SPEC), "--source", str(small_data.events), "--no-progress"]
    subprocess.run([*cli, "--out", str(tmp_path / "small"), "--block-size", "16k"], check=True, capture_output=True)
    subprocess.run([*cli, "--out", str(tmp_path / "big")], check=True, capture_output=True)
    size = small_data.events.stat().st_size
    blocks = {d: len(pl.read_parquet(tmp_path / d / "metrics" / "*.parquet")) for d in ("small", "big")}
    # blocks of whole lines of at most 16 KiB (a line is ~200 bytes: each block ends within one of the limit)
    assert blocks["big"] == 1 and size / (16 << 10) <= blocks["small"] <= size / ((16 << 10) - 400) + 1
    metrics = pl.read_parquet(tmp_path / "small" / "metrics" / "*.parquet").sort("block")
    assert metrics["watermark"].n_unique() > 10 and metrics["watermark"].is_sorted()  # advancing as it goes
    assert _offline(tmp_path / "small").filter(pl.col("kind") == "final").sort("user_id", "window_start").select(
        "user_id", "window_start", "txn_count_5m").equals(_offline(tmp_path / "big").filter(
            pl.col("kind") == "final").sort("user_id", "window_start").select("user_id", "window_start", "txn_count_5m"))
    bad = subprocess.run([*cli, "--out", str(tmp_path / "x"), "--block-size", "lots"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--block-size: expected a size" in bad.stderr
    huge = subprocess.run([*cli, "--out", str(tmp_path / "y"), "--block-size", "100G"], capture_output=True, text=True)
    assert huge.returncode == 2 and "--block-size: must be 1 byte to 2 GiB" in huge.stderr  # was a MemoryError
    assert len(huge.stderr.strip().splitlines()) == 1
    none = subprocess.run([*cli, "--out", str(tmp_path / "z"), "--flush-rows", "0"], capture_output=True, text=True)
    assert none.returncode == 2 and "--flush-rows: must be at least 1" in none.stderr


def test_summary_time_includes_the_last_write(small_data, tmp_path, monkeypatch):
    """seconds and events/s run to the end of the last store write (it was taken before it)."""
    from mlprep.stream import stores

    slow = stores.OfflineStore.flush

    def flush(self, tag):
        time.sleep(1.5)
        return slow(self, tag)

    monkeypatch.setattr(stores.OfflineStore, "flush", flush)
    s = run_stream(SPEC, str(small_data.events), tmp_path / "o", checkpoint_every=10_000)
    assert s["seconds"] >= 1.5 and s["events_per_s"] <= 3000 / 1.5
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["seconds"] == s["seconds"]


def test_a_finished_run_restarts_even_without_its_summary_file(small_data, tmp_path):
    s = run_stream(SPEC, str(small_data.events), tmp_path / "o", checkpoint=tmp_path / "chk")
    (tmp_path / "o" / "summary.json").unlink()  # killed after the last checkpoint, before the file
    again = run_stream(SPEC, str(small_data.events), tmp_path / "o", checkpoint=tmp_path / "chk")
    assert again == s and json.loads((tmp_path / "o" / "summary.json").read_text()) == s
    # the checkpoint belongs to that source: another one is refused, not answered with the old summary
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join(small_data.events.read_text().splitlines()[:100]) + "\n")
    p = subprocess.run([sys.executable, "-m", "mlprep", "stream", "run", str(SPEC), "--source", str(other), "--out",
                        str(tmp_path / "o"), "--checkpoint", str(tmp_path / "chk")], capture_output=True, text=True)
    assert p.returncode == 2 and "made by a run over" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    # and to that spec: an edited one (max for min) is refused too, not resumed with the old state
    edited = tmp_path / "edited.yaml"
    text = Path(SPEC).read_text()
    assert "function: max" in text
    edited.write_text(text.replace("function: max", "function: min"))
    p = subprocess.run([sys.executable, "-m", "mlprep", "stream", "run", str(edited), "--source", str(small_data.events),
                        "--out", str(tmp_path / "o"), "--checkpoint", str(tmp_path / "chk")], capture_output=True, text=True)
    assert p.returncode == 2 and "another version of feature spec" in p.stderr, p.stderr


def _offline(out, suffix="5m"):
    cols = ["user_id", "window_start", "window_end", "kind", "txn_count_5m", "amount_sum_5m", "merchants_5m"]
    df = pl.read_parquet(out / "offline" / f"user_txn_features_{suffix}" / "**" / "*.parquet", hive_partitioning=True)
    return df.select(cols).sort(cols)


def _every_row(out) -> dict[str, pl.DataFrame]:
    """Every row the run wrote to every feature group, all columns but the wall-clock ones."""
    groups = {}
    for g in sorted((out / "offline").iterdir()):
        df = pl.read_parquet(g / "**" / "*.parquet", hive_partitioning=True).drop("write_time", "api_invocation_time")
        groups[g.name] = df.sort(df.columns)
    return groups


@pytest.mark.parametrize("point,flush_rows", [
    ("stream:block=3", 10**9), ("stream:block=8", 10**9), ("stream:commit=2", 10**9), ("stream:commit=4", 10**9),
    ("stream:finishing", 10**9),
    ("stream:block=7", 300), ("stream:commit=3", 300)])  # offline files also written between commits
def test_sigkill_then_restart_gives_the_uninterrupted_output(small_data, tmp_path, point, flush_rows):
    """Nothing lost, nothing doubled: kill at a block or inside a checkpoint, restart, compare.
    With ``flush_rows``, the killed run also wrote offline files between commits, and the
    restart (with the default) writes other ones: the killed run's must go."""
    code = ("import sys; from mlprep.stream.runner import run_stream; "
            "run_stream(sys.argv[1], sys.argv[2], sys.argv[3], checkpoint=sys.argv[4], block_bytes=20_000,"
            " checkpoint_every=3, flush_rows=int(sys.argv[5]))")
    args = [sys.executable, "-c", code, str(SPEC), str(small_data.events)]
    clean = tmp_path / "clean"
    subprocess.run([*args, str(clean), str(tmp_path / "chk_clean"), "1000000"], check=True)
    out, chk = tmp_path / "out", tmp_path / "chk"
    killed = subprocess.run([*args, str(out), str(chk), str(flush_rows)],
                            env={**os.environ, "MLPREP_FAULT_POINT": point})
    assert killed.returncode == -signal.SIGKILL
    last = int((chk / "_latest").read_text().split("-")[1]) if (chk / "_latest").exists() else 0
    uncommitted = list((out / "offline").rglob(f"part-{last + 1:06d}-*.parquet"))
    assert bool(uncommitted) == (flush_rows < 10**9)
    subprocess.run([*args, str(out), str(chk), "1000000"], check=True)
    a, b = _every_row(out), _every_row(clean)
    assert a.keys() == b.keys() and len(a) == 3 and all(a[g].equals(b[g]) for g in a)
    a, b = (json.loads((d / "summary.json").read_text()) for d in (out, clean))
    assert {k: a[k] for k in ("events", "dead_letters", "filtered", "late", "emitted")} == \
        {k: b[k] for k in ("events", "dead_letters", "filtered", "late", "emitted")}
    dead = pl.read_parquet(out / "dead_letters" / "*.parquet")
    assert sorted(dead["_pos"].to_list()) == sorted(pl.read_parquet(clean / "dead_letters" / "*.parquet")["_pos"].to_list())
    from mlprep.stream.spec import load_spec
    from mlprep.stream.stores import OnlineStore

    rows = [sorted(OnlineStore(d / "online.sqlite", load_spec(SPEC)).con.execute(
        'SELECT * FROM "user_txn_features_5m"').fetchall()) for d in (out, clean)]
    assert rows[0] == rows[1]


def test_backfill_equals_the_stream_final_values(small_data, tmp_path):
    """Training/serving parity: batch over history == the stream's last emission per window."""
    p = subprocess.run([sys.executable, "-m", "mlprep", "stream", "backfill", str(SPEC), "--source",
                        str(small_data.events), "--out", str(tmp_path / "bf")], capture_output=True, text=True, check=True)
    assert p.stdout.strip().endswith("summary.json")
    run_stream(SPEC, str(small_data.events), tmp_path / "st", block_bytes=5_000)
    for group in ("user_txn_features_5m", "user_txn_features_10m_every1m", "user_txn_features_session10m"):
        dfs = []
        for d in ("bf", "st"):
            df = pl.read_parquet(tmp_path / d / "offline" / group / "**" / "*.parquet", hive_partitioning=True)
            df = df.sort("write_time").group_by(["user_id", "window_start"], maintain_order=True).last()
            feats = [c for c in df.columns if c.endswith(("_5m", "_10m_every1m", "_session10m"))]
            dfs.append(df.select(["user_id", "window_start", *feats]).sort(["user_id", "window_start"]))
        a, b = dfs
        assert a.shape == b.shape
        for c in a.columns:
            if a[c].dtype == pl.Float64:
                assert ((a[c] - b[c]).abs().fill_null(0) < 1e-9).all() and (a[c].is_null() == b[c].is_null()).all()
            else:
                assert a[c].equals(b[c])


def _final(out, group="user_txn_features_5m"):
    df = pl.read_parquet(out / "offline" / group / "**" / "*.parquet", hive_partitioning=True)
    df = df.sort("write_time").group_by(["user_id", "window_start"], maintain_order=True).last()
    return df.select(["user_id", "window_start", "txn_count_5m", "amount_sum_5m", "merchants_5m"]).sort(
        ["user_id", "window_start"])


@pytest.mark.parametrize("every,kill", [(2, 3), (3, 4)])  # (3, 4): committed mid-round, shard 2 due next
def test_kinesis_source_with_two_shards_and_restart(small_data, moto_server, tmp_path, every, kill):
    import boto3

    kin = boto3.client("kinesis", endpoint_url=moto_server)
    name = f"events-{tmp_path.name[-12:]}".replace("_", "-")
    kin.create_stream(StreamName=name, ShardCount=2)
    lines = small_data.events.read_bytes().splitlines()
    for i in range(0, len(lines), 500):
        kin.put_records(StreamName=name, Records=[
            {"Data": ln, "PartitionKey": json.loads(ln).get("user_id") or "none"} for ln in lines[i:i + 500]])
    shards = kin.list_shards(StreamName=name)["Shards"]
    assert len(shards) == 2
    file_out = tmp_path / "file"
    run_stream(SPEC, str(small_data.events), file_out)
    code = ("import sys; from mlprep.stream.runner import run_stream; "
            f"run_stream(sys.argv[1], sys.argv[2], sys.argv[3], checkpoint=sys.argv[4], checkpoint_every={every})")
    args = [sys.executable, "-c", code, str(SPEC), f"kinesis://{name}", str(tmp_path / "k"), str(tmp_path / "chk")]
    killed = subprocess.run(args, env={**os.environ, "MLPREP_FAULT_POINT": f"stream:block={kill}"})
    assert killed.returncode == -signal.SIGKILL
    subprocess.run(args, check=True)
    clean = [*args[:5], str(tmp_path / "k_clean"), str(tmp_path / "chk_clean")]  # the same stream, never killed
    subprocess.run(clean, check=True)
    a, b = _every_row(tmp_path / "k"), _every_row(tmp_path / "k_clean")
    assert a.keys() == b.keys() and len(a) == 3 and all(a[g].equals(b[g]) for g in a)  # every row
    s = json.loads((tmp_path / "k" / "summary.json").read_text())
    f = json.loads((file_out / "summary.json").read_text())
    assert s["events"] == 3000 and s["dead_letters"] == f["dead_letters"] and s["late"] == 0
    assert _final(tmp_path / "k").equals(_final(file_out))
    dead = pl.read_parquet(tmp_path / "k" / "dead_letters" / "*.parquet")
    assert dead["source"].str.starts_with(f"kinesis://{name}/shardId-").all()


def test_replay_paced_by_event_time(small_data, tmp_path):
    """speedup: 7 days of event time replayed 604,800x faster take about one second."""
    import time

    t = time.perf_counter()
    s = run_stream(SPEC, str(small_data.events), tmp_path / "p", speedup=7 * 86_400, block_bytes=50_000)
    took = time.perf_counter() - t
    assert 0.9 <= took < 10 and s["events"] == 3000


def test_parquet_replay_gives_the_same_features_as_json_lines(small_data, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    recs = [json.loads(x) for x in small_data.events.read_text().splitlines()]
    table = pa.table({
        "user_id": [r["user_id"] for r in recs],
        "ts": pa.array([datetime.fromisoformat(r["ts"].replace("Z", "+00:00")) for r in recs], pa.timestamp("ms", "UTC")),
        "amount": [None if r["amount"] is None else str(r["amount"]) for r in recs],  # junk stays junk
        "merchant_id": [r["merchant_id"] for r in recs]})
    (tmp_path / "pq").mkdir()
    pq.write_table(table.slice(0, 1700), tmp_path / "pq" / "a.parquet")
    pq.write_table(table.slice(1700), tmp_path / "pq" / "b.parquet")
    a = run_stream(SPEC, str(tmp_path / "pq"), tmp_path / "p", checkpoint=tmp_path / "chk", checkpoint_every=1)
    b = run_stream(SPEC, str(small_data.events), tmp_path / "j")
    assert {k: a[k] for k in ("events", "dead_letters", "filtered", "late")} == \
        {k: b[k] for k in ("events", "dead_letters", "filtered", "late")}
    assert _final(tmp_path / "p").equals(_final(tmp_path / "j"))
    dead = pl.read_parquet(tmp_path / "p" / "dead_letters" / "*.parquet")
    assert json.loads(dead["record"][0])["user_id"] is None or "amount" in dead["reason"][0]


def test_a_checkpoint_of_an_older_state_format_is_refused(small_data, tmp_path):
    """State written by an mlprep that kept windows differently is not resumed (it would merge
    wrongly or fail deep inside polars): one line, exit 2."""
    code = ("import sys; from mlprep.stream.runner import run_stream; "
            "run_stream(sys.argv[1], sys.argv[2], sys.argv[3], checkpoint=sys.argv[4], block_bytes=20_000,"
            " checkpoint_every=2)")
    out, chk = tmp_path / "out", tmp_path / "chk"
    killed = subprocess.run([sys.executable, "-c", code, str(SPEC), str(small_data.events), str(out), str(chk)],
                            env={**os.environ, "MLPREP_FAULT_POINT": "stream:block=5"})
    assert killed.returncode == -signal.SIGKILL
    meta_file = chk / (chk / "_latest").read_text().strip() / "meta.json"
    meta = json.loads(meta_file.read_text())
    assert meta["state_format"] == 2
    del meta["state_format"]  # as the first format wrote it
    meta_file.write_text(json.dumps(meta))
    p = subprocess.run([sys.executable, "-m", "mlprep", "stream", "run", str(SPEC), "--source", str(small_data.events),
                        "--out", str(out), "--checkpoint", str(chk)], capture_output=True, text=True)
    assert p.returncode == 2 and "its window state is in format 1" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
