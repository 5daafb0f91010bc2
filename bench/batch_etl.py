"""Batch ETL benchmark: the mlprep job against hand-written DuckDB SQL, pandas and polars.

    python bench/batch_etl.py --rows 5000000 --out bench/results/batch_etl.json
    python bench/batch_etl.py --rows 30000000 --only mlprep duckdb_sql duckdb_sql_bounded \\
        --out bench/results/batch_etl_30m.json

All do the same ETL on the same seeded data (cast amount, flatten device, require fields,
dedupe on txn_id keeping the earliest, join users, hour / ISO day-of-week / per-user amount
z-score, Parquet partitioned by day). Each runs in its own process, so CPU seconds (user + system,
from wait4), wall time and peak RSS (VmHWM) are its own; ``--rounds`` runs them alternating and
reports each figure's median, since the machine may be shared. mlprep runs with its default
memory limit (or ``--memory-limit``); ``duckdb_sql`` with DuckDB's own (80% of RAM) and
``duckdb_sql_bounded`` with mlprep's limit and a spill folder (``--sql-memory-limit`` bounds
``duckdb_sql`` too, for sizes where 80% of RAM would crowd the machine). Outputs are compared on
aggregates; ratios are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "conf" / "batch" / "transactions.yaml"
NAMES = ["mlprep", "duckdb_sql", "duckdb_sql_bounded", "pandas", "polars"]


def run_mlprep(data: Path, out: Path) -> None:
    from mlprep.batch.job import run_job

    run_job(JOB, {"data_dir": str(data), "out_dir": str(out)}, progress=False)


def _users_arrow(data: Path):
    import sqlite3

    import pyarrow as pa

    with sqlite3.connect(data / "users.db") as con:
        cur = con.execute("SELECT * FROM users")
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
    return pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})


def run_duckdb_sql(data: Path, out: Path, memory_limit: str = "") -> None:
    import duckdb

    con = duckdb.connect(config={"memory_limit": memory_limit} if memory_limit else {})
    if memory_limit:  # spills past it, as mlprep does
        con.execute(f"SET temp_directory = '{out / '_spill'}'")
    con.register("users", _users_arrow(data))
    target = out / "curated" / "transactions"
    target.mkdir(parents=True)
    con.execute(f"""
    COPY (
      WITH raw AS (
        SELECT row_number() OVER () AS pos, * FROM read_json('{data}/transactions.jsonl',
          format = 'newline_delimited', ignore_errors = true,
          columns = {{txn_id: 'VARCHAR', user_id: 'VARCHAR', merchant_id: 'VARCHAR', amount: 'VARCHAR',
                     currency: 'VARCHAR', ts: 'VARCHAR', device: 'STRUCT(os VARCHAR, browser VARCHAR, ip VARCHAR)'}})
      ), typed AS (
        SELECT pos, txn_id, user_id, merchant_id, try_cast(amount AS DOUBLE) AS amount, currency,
               try_cast(ts AS TIMESTAMP) AS ts, device.os AS device_os, device.browser AS device_browser,
               device.ip AS device_ip
        FROM raw WHERE amount IS NULL OR try_cast(amount AS DOUBLE) IS NOT NULL
      ), kept AS (
        SELECT * FROM typed
        WHERE txn_id IS NOT NULL AND user_id IS NOT NULL AND amount IS NOT NULL AND ts IS NOT NULL AND amount > 0
        QUALIFY row_number() OVER (PARTITION BY txn_id ORDER BY ts, pos) = 1
      )
      SELECT k.* EXCLUDE (pos), u.signup_date, u.country, u.segment, u.updated_at,
             hour(k.ts) AS hour, isodow(k.ts) AS day_of_week,
             coalesce((k.amount - avg(k.amount) OVER w) / nullif(stddev_pop(k.amount) OVER w, 0), 0) AS amount_z,
             strftime(k.ts, '%Y-%m-%d') AS dt
      FROM kept k LEFT JOIN users u USING (user_id)
      WINDOW w AS (PARTITION BY k.user_id)
    ) TO '{target}' (FORMAT parquet, PARTITION_BY (dt), COMPRESSION zstd)
    """).fetchall()
    con.close()
    shutil.rmtree(out / "_spill", ignore_errors=True)


def run_duckdb_sql_bounded(data: Path, out: Path) -> None:
    from mlprep.batch.job import memory_setting

    run_duckdb_sql(data, out, memory_setting(None).duckdb)


def run_pandas(data: Path, out: Path) -> None:
    import sqlite3

    import numpy as np
    import pandas as pd

    df = pd.read_json(data / "transactions.jsonl", lines=True, dtype=False)
    dev = pd.json_normalize(df["device"].where(df["device"].notna(), None).tolist())
    df = df.drop(columns="device")
    for c in ("os", "browser", "ip"):
        df[f"device_{c}"] = dev.get(c, None)
    amount = pd.to_numeric(df["amount"], errors="coerce")
    df = df[df["amount"].isna() | amount.notna()].copy()
    df["amount"] = amount[df.index].astype("float64")
    df["ts"] = pd.to_datetime(df["ts"], utc=True, errors="coerce").dt.tz_localize(None)
    df = df.dropna(subset=["txn_id", "user_id", "amount", "ts"])
    df = df[df["amount"] > 0]
    df["pos"] = np.arange(len(df))
    df = df.sort_values(["ts", "pos"], kind="stable").drop_duplicates("txn_id", keep="first").drop(columns="pos")
    with sqlite3.connect(data / "users.db") as con:
        users = pd.read_sql("SELECT * FROM users", con)
    df = df.merge(users, on="user_id", how="left")
    df["hour"] = df["ts"].dt.hour
    df["day_of_week"] = df["ts"].dt.day_of_week + 1
    g = df.groupby("user_id")["amount"]
    std = g.transform(lambda s: s.std(ddof=0))
    df["amount_z"] = ((df["amount"] - g.transform("mean")) / std.replace(0, np.nan)).fillna(0.0)
    df["dt"] = df["ts"].dt.strftime("%Y-%m-%d")
    df.to_parquet(out / "curated" / "transactions", partition_cols=["dt"], index=False)


def run_polars(data: Path, out: Path) -> None:
    import polars as pl

    users = pl.from_arrow(_users_arrow(data))
    schema = {"txn_id": pl.String, "user_id": pl.String, "merchant_id": pl.String, "amount": pl.String,
              "currency": pl.String, "ts": pl.String,
              "device": pl.Struct({"os": pl.String, "browser": pl.String, "ip": pl.String})}
    df = pl.scan_ndjson(data / "transactions.jsonl", schema=schema, ignore_errors=True).with_row_index("pos")
    amount = pl.col("amount").cast(pl.Float64, strict=False)
    df = (df.filter(pl.col("amount").is_null() | amount.is_not_null())
          .with_columns(amount.alias("amount"),
                        pl.col("ts").str.to_datetime("%Y-%m-%dT%H:%M:%S%.3fZ", strict=False).alias("ts"),
                        pl.col("device").struct.field("os").alias("device_os"),
                        pl.col("device").struct.field("browser").alias("device_browser"),
                        pl.col("device").struct.field("ip").alias("device_ip"))
          .drop("device")
          .drop_nulls(["txn_id", "user_id", "amount", "ts"])
          .filter(pl.col("amount") > 0)
          .sort(["ts", "pos"])
          .unique("txn_id", keep="first", maintain_order=True)
          .drop("pos")
          .join(users.lazy(), on="user_id", how="left")
          .with_columns(pl.col("ts").dt.hour().cast(pl.Int64).alias("hour"),
                        pl.col("ts").dt.weekday().cast(pl.Int64).alias("day_of_week"),
                        ((pl.col("amount") - pl.col("amount").mean().over("user_id"))
                         / pl.col("amount").std(ddof=0).over("user_id")).alias("amount_z"),
                        pl.col("ts").dt.strftime("%Y-%m-%d").alias("dt"))
          .with_columns(pl.when(pl.col("amount_z").is_nan() | pl.col("amount_z").is_infinite() | pl.col("amount_z").is_null())
                        .then(0.0).otherwise(pl.col("amount_z")).alias("amount_z"))
          .collect())
    target = out / "curated" / "transactions"
    df.write_parquet(target, partition_by="dt")


def aggregates(out: Path) -> dict[str, float]:
    import duckdb

    glob = f"{out}/curated/transactions/**/*.parquet"
    r = duckdb.connect().execute(
        f"SELECT count(*), count(DISTINCT txn_id), sum(amount), sum(hour), sum(day_of_week),"
        f" sum(amount_z), count(device_os), count(country), count(DISTINCT dt)"
        f" FROM read_parquet('{glob}', hive_partitioning = true)").fetchall()[0]
    keys = ["rows", "txn_ids", "sum_amount", "sum_hour", "sum_dow", "sum_amount_z", "device_os", "country", "days"]
    return dict(zip(keys, [float(x) for x in r], strict=True))


def agrees(a: dict[str, float], b: dict[str, float]) -> bool:
    return all(abs(a[k] - b[k]) <= 1e-6 * max(1.0, abs(b[k])) + (1e-6 if k == "sum_amount_z" else 0) for k in a)


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not wait4's ru_maxrss: that one keeps the
    high-water mark of the parent's memory copied at fork, across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


RUNNERS = {"mlprep": run_mlprep, "duckdb_sql": run_duckdb_sql, "duckdb_sql_bounded": run_duckdb_sql_bounded,
           "pandas": run_pandas, "polars": run_polars}


def child(name: str, data: str, out: str) -> None:
    if name == "duckdb_sql" and os.environ.get("BENCH_SQL_MEMORY_LIMIT"):
        run_duckdb_sql(Path(data), Path(out), os.environ["BENCH_SQL_MEMORY_LIMIT"])
    else:
        RUNNERS[name](Path(data), Path(out))
    (Path(out) / "_peak_rss_mb").write_text(str(peak_rss_mb()))


def measure(name: str, data: Path, out: Path) -> dict[str, float]:
    """One run in a child process: wall time, CPU seconds (user + system) and peak RSS."""
    load = os.getloadavg()[0]
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", name, str(data), str(out)],
                            env=dict(os.environ, MLPREP_PROGRESS="0"))
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if status != 0:
        raise RuntimeError(f"{name} failed (status {status})")
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(float((out / "_peak_rss_mb").read_text()), 1),
            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def run_all(names: list[str], data: Path, work: Path, rounds: int) -> tuple[list[dict], dict[str, dict]]:
    """Every contender ``rounds`` times, alternating; the medians, each run, the aggregates."""
    runs: dict[str, list[dict]] = {n: [] for n in names}
    aggs: dict[str, dict] = {}
    for i in range(rounds):
        for name in names:
            out = work / name
            out.mkdir()
            m = measure(name, data, out)
            aggs[name] = aggregates(out)
            runs[name].append(m)
            print(f"round {i + 1} {name:19s} {m['cpu_s']:8.2f} CPU-s {m['wall_s']:8.2f} s {m['peak_rss_mb']:8.0f} MB"
                  f"  load {m['load_before']}->{m['load_after']}", flush=True)
            shutil.rmtree(out)
    results = [{"name": n, **{k: round(_median([r[k] for r in runs[n]]), 2) for k in ("cpu_s", "wall_s", "peak_rss_mb")},
                "runs": runs[n]} for n in names]
    return results, aggs


def ratios_of(results: list[dict]) -> dict[str, float]:
    by = {r["name"]: r for r in results}
    out = {}
    if "mlprep" in by:
        m = by["mlprep"]
        for other in NAMES[1:]:
            if other in by:
                for k, short in (("cpu_s", "cpu"), ("wall_s", "wall"), ("peak_rss_mb", "rss")):
                    out[f"mlprep_{short}_over_{other}"] = round(m[k] / by[other][k], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--data", help="a folder `mlprep data generate` wrote (kept); default: generate --rows into a temp folder")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each contender, alternating (medians reported)")
    ap.add_argument("--memory-limit", help="mlprep's --memory-limit (default: its own default)")
    ap.add_argument("--sql-memory-limit", help="duckdb_sql's memory_limit (default DuckDB's own, 80%% of RAM)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "batch_etl.json"))
    ap.add_argument("--only", nargs="*", default=NAMES, choices=NAMES)
    ap.add_argument("--note", default="", help="what else ran on the machine, kept in the results")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.memory_limit:
        os.environ["MLPREP_MEMORY_LIMIT"] = a.memory_limit
    if a.sql_memory_limit:
        os.environ["BENCH_SQL_MEMORY_LIMIT"] = a.sql_memory_limit
    if a.child:
        child(*a.child)
        return
    from mlprep.batch.job import memory_setting
    from mlprep.datasets.payments import generate

    work = Path(tempfile.mkdtemp(prefix="mlprep-bench-"))
    try:
        data = Path(a.data) if a.data else work / "data"
        if not a.data:
            t = time.perf_counter()
            generate(data, a.rows, a.seed)
            print(f"generated {a.rows:,} rows in {time.perf_counter() - t:.1f} s", flush=True)
        meta = json.loads((data / "dataset.json").read_text())
        results, aggs = run_all(a.only, data, work, a.rounds)
        ref = aggs.get("mlprep") or next(iter(aggs.values()))
        for r in results:
            r["agrees"] = agrees(aggs[r["name"]], ref)
            r["aggregates"] = aggs[r["name"]]
        limit = memory_setting(None).to_dict()
        doc = {"rows": meta["rows"], "seed": meta.get("seed", a.seed), "rounds": a.rounds,
               "input_bytes": (data / "transactions.jsonl").stat().st_size,
               "mlprep_memory_limit": {k: limit[k] for k in ("limit", "set_by", "bytes")},
               "duckdb_sql_memory_limit": a.sql_memory_limit or "DuckDB default (80% of RAM)",
               "results": results, "ratios": ratios_of(results), "note": a.note,
               "machine": {"cpus": os.cpu_count(), "ram_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
                           "python": platform.python_version()},
               "date": time.strftime("%Y-%m-%d")}
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(doc, indent=2) + "\n")
        report(results, doc["ratios"])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(results: list[dict], ratios: dict[str, float]) -> None:
    by = {r["name"]: r for r in results}
    m = by.get("mlprep", results[0])
    print(f"\n{'name':19s} {'CPU s':>8s} {'x mlprep':>9s} {'wall s':>8s} {'peak MB':>8s} {'x mlprep':>9s} agrees")
    for r in results:
        print(f"{r['name']:19s} {r['cpu_s']:8.2f} {r['cpu_s'] / m['cpu_s']:9.2f} {r['wall_s']:8.2f} {r['peak_rss_mb']:8.0f}"
              f" {r['peak_rss_mb'] / m['peak_rss_mb']:9.2f} {r['agrees']}")
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
