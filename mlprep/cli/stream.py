"""``mlprep stream run|backfill|compile``."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from mlprep.cli.common import Subparsers, progress
from mlprep.errors import ConfigError


def cmd_run(a: argparse.Namespace) -> int:
    from mlprep.stream.runner import run_stream

    if a.flush_rows < 1:
        raise ConfigError("--flush-rows", f"must be at least 1, got {a.flush_rows}")
    s = run_stream(a.spec, a.source, a.out, speedup=a.speedup, progress=progress(a),
                   checkpoint=a.checkpoint, block_bytes=size_bytes("--block-size", a.block_size),
                   flush_rows=a.flush_rows)
    print(f"{s['events']} events: {s['dead_letters']} dead letters, {s['filtered']} filtered, {s['late']} late;"
          f" {s['emitted']} feature rows, {s['events_per_s']} events/s", file=sys.stderr)
    print(str(Path(a.out) / "summary.json"))
    return 0


def size_bytes(option: str, text: str) -> int:
    """``4096``, ``64k``, ``4M``, ``1G`` (binary multiples) as bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)i?[bB]?\s*", text or "")
    if not m or int(m.group(1)) < 1:
        raise ConfigError(option, f"expected a size such as 65536, 64k or 4M, got {text!r}")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]


def cmd_backfill(a: argparse.Namespace) -> int:
    from mlprep.stream.runner import backfill

    s = backfill(a.spec, a.source, a.out)
    print(f"{s['events']} events -> {s['offline_rows']} feature rows in {s['seconds']} s", file=sys.stderr)
    print(str(Path(a.out) / "summary.json"))
    return 0


def cmd_compile(a: argparse.Namespace) -> int:
    from mlprep.stream.flink import Endpoint, compile_sql
    from mlprep.stream.spec import load_spec

    if a.target != "flink-sql":
        raise ConfigError("--target", f"unknown target {a.target!r} (flink-sql)")
    if a.parallelism < 1:
        raise ConfigError("--parallelism", f"must be at least 1, got {a.parallelism}")
    region = _region(a)
    source = (Endpoint("kinesis", stream_arn=a.source_stream_arn, region=region) if a.source_stream_arn
              else Endpoint("filesystem", path=a.source_path))
    sink = (Endpoint("kinesis", stream_arn=a.sink_stream_arn, region=region) if a.sink_stream_arn
            else Endpoint("filesystem", path=a.sink_path))
    sql = compile_sql(load_spec(a.spec), source, sink, a.parallelism)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(sql)
    print(out)
    return 0


def _region(a: argparse.Namespace) -> str:
    """The streams' region: the ARNs', which must agree with each other and with --region."""
    from mlprep.awsnames import stream_region

    found = {stream_region(arn, option): option for arn, option in ((a.source_stream_arn, "--source-stream-arn"),
                                                                     (a.sink_stream_arn, "--sink-stream-arn")) if arn}
    if a.region is not None:
        found.setdefault(a.region, "--region")
    if len(found) > 1:
        raise ConfigError("--region", f"the streams' regions differ: {', '.join(f'{o} {r}' for r, o in found.items())}")
    return next(iter(found), "us-east-1")


def add_commands(sub: Subparsers) -> None:
    """``mlprep stream run|backfill|compile``."""
    stream = sub.add_parser("stream", help="streaming features (KDA-style)").add_subparsers(dest="cmd", required=True)
    sr = stream.add_parser("run", help="aggregate an event stream with a feature spec", description=(
        "Windowed per-key features with watermarks and allowed lateness; writes the offline store"
        " (SageMaker layout), the online store (SQLite), dead letters and late events under --out."))
    sr.add_argument("spec", help="feature spec (YAML)")
    sr.add_argument("--source", required=True, help="JSON-lines or Parquet file/folder (local or s3://), or kinesis://STREAM")
    sr.add_argument("--out", required=True, help="output folder")
    sr.add_argument("--checkpoint", help="checkpoint folder: a killed run restarted with it resumes exactly")
    sr.add_argument("--speedup", type=float, help="pace the replay by event time, this many times real time")
    sr.add_argument("--block-size", default="4M", metavar="BYTES",
                    help="JSON lines: bytes of whole lines per micro-batch (e.g. 64k, 4M; default %(default)s);"
                         " small blocks replay a small file as a real stream (windows fire as it goes)")
    sr.add_argument("--flush-rows", type=int, default=1_000_000, metavar="N",
                    help="write the offline store whenever N feature rows wait (default %(default)s):"
                         " memory is bounded by N, not by the run")
    sr.add_argument("--no-progress", action="store_true", help="no progress bar")
    sr.set_defaults(fn=cmd_run)
    bf = stream.add_parser("backfill", help="compute a spec's features over history, in batch", description=(
        "The same spec over a whole historical file at once (no intermediate firing): the feature"
        " values equal the stream's final ones, which guards against training/serving skew."))
    bf.add_argument("spec", help="feature spec (YAML)")
    bf.add_argument("--source", required=True, help="JSON-lines file in arrival order")
    bf.add_argument("--out", required=True, help="output folder")
    bf.set_defaults(fn=cmd_backfill)
    sc = stream.add_parser("compile", help="compile a feature spec for another engine (Flink SQL)", description=(
        "Flink SQL for Managed Service for Apache Flink or a local Flink: a source table with the spec's "
        "WATERMARK, a typed view, TUMBLE/HOP/SESSION window functions and the aggregates, one sink per window. "
        "Filesystem connectors by default (--source-path/--sink-path), Kinesis with --*-stream-arn."))
    sc.add_argument("spec", help="feature spec (YAML)")
    sc.add_argument("--target", default="flink-sql", help="flink-sql (default)")
    sc.add_argument("--out", required=True, help="SQL file to write")
    sc.add_argument("--source-path", default="s3://BUCKET/events/", help="events (JSON lines) for the filesystem source")
    sc.add_argument("--sink-path", default="s3://BUCKET/features/", help="folder for the filesystem sinks (one per window)")
    sc.add_argument("--source-stream-arn", help="Kinesis stream ARN of the events (Managed Flink)")
    sc.add_argument("--sink-stream-arn", help="Kinesis stream ARN for the features")
    sc.add_argument("--region", help="AWS region of the Kinesis streams (default: the ARNs', else us-east-1)")
    sc.add_argument("--parallelism", type=int, default=2)
    sc.set_defaults(fn=cmd_compile)
