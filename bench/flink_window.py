"""PyFlink side of bench/stream_agg.py: the same 5-minute tumbling aggregation as Flink SQL on
the local mini-cluster. Runs in its own environment (.venv-flink: apache-flink pins pandas 2.2
and pyarrow 16), driven by subprocess:

    .venv-flink/bin/python bench/flink_window.py EVENTS.csv OUT_FOLDER
"""

from __future__ import annotations

import sys
import time


def main(events: str, out: str) -> None:
    from pyflink.table import EnvironmentSettings, TableEnvironment

    t0 = time.perf_counter()
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = env.get_config()
    conf.set("parallelism.default", "2")
    conf.set("table.local-time-zone", "UTC")
    env.execute_sql(f"""
        CREATE TABLE events (k BIGINT, t BIGINT, amount DOUBLE, merchant BIGINT,
          ts AS TO_TIMESTAMP_LTZ(t, 3), WATERMARK FOR ts AS ts - INTERVAL '30' SECOND)
        WITH ('connector' = 'filesystem', 'path' = '{events}', 'format' = 'csv')""")
    env.execute_sql(f"""
        CREATE TABLE results (k BIGINT, ws BIGINT, n BIGINT, s DOUBLE, x DOUBLE, d BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'csv')""")
    # results go to files by Flink itself: collecting rows through the Python gateway is slow
    env.execute_sql("""
        INSERT INTO results
        SELECT k, UNIX_TIMESTAMP(CAST(window_start AS STRING)) * 1000, COUNT(*), SUM(amount), MAX(amount),
               COUNT(DISTINCT merchant)
        FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '5' MINUTES))
        GROUP BY k, window_start, window_end""").wait()
    print(f"{time.perf_counter() - t0:.3f}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
