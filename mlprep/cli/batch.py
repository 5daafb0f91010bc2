"""``mlprep batch run|export-glue|bookmark``."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from mlprep.cli.common import Subparsers, param_sources, progress
from mlprep.errors import ConfigError, MlprepError
from mlprep.params import parse_cli


def cmd_run(a: argparse.Namespace) -> int:
    from mlprep.batch.job import run_job

    if a.engine not in ("embedded", "duckdb", "spark"):
        raise ConfigError("--engine", f"embedded (duckdb) or spark, got {a.engine!r}")
    if a.master != "local[2]" and a.engine != "spark":
        raise ConfigError("--master", "a Spark master is for --engine spark")
    engine = None
    if a.engine == "spark":
        from mlprep.batch.engines.spark import SparkEngine

        engine = SparkEngine(master=a.master)
    try:
        r = run_job(a.config, parse_cli(a.param, a.params_file, a.secret), engine=engine, progress=progress(a),
                    secrets=a.secret or (), memory_limit=a.memory_limit)
    except ConfigError:
        raise  # exit 2: nothing ran
    except MlprepError as e:
        path = getattr(e, "summary_path", None)
        print(f"error: {e}", file=sys.stderr)
        if path:
            print(path)
        return 1
    rows = r.rows
    print(f"{r.status}: read {rows['read']} = written {rows['written']} + quarantined {rows['quarantined']}"
          f" + deduplicated {rows['deduplicated']} + filtered {rows['filtered']}", file=sys.stderr)
    print(r.summary_path)
    return 0


def cmd_export_glue(a: argparse.Namespace) -> int:
    from mlprep.batch.glue import export

    paths = export(a.config, a.out, role=a.role, script_location=a.script_location, mlprep_wheel=a.mlprep_wheel,
                   worker_type=a.worker_type, workers=a.workers)
    for p in paths.values():
        print(p)
    return 0


def cmd_bookmark(a: argparse.Namespace) -> int:
    from mlprep.batch import job

    params = parse_cli(a.param)
    if a.action == "show":
        print(json.dumps(job.bookmark_show(a.config, params), indent=2, sort_keys=True))
    elif a.action == "reset":
        v = job.bookmark_write(a.config, params, None)
        print(f"bookmark reset (version {v}): the next run reprocesses all input and replaces the table")
    else:
        if not a.source:
            raise ConfigError("--source", "required for bookmark set")
        if a.key is None and a.processed is None:
            raise ConfigError("--key", "bookmark set needs --key VALUE (SQL) or --processed PATH (files)")
        key: Any = a.key
        if key is not None:
            with contextlib.suppress(ValueError):
                key = int(key)
        v = job.bookmark_set(a.config, params, a.source, key=key, processed=a.processed)
        print(f"bookmark set (version {v})")
    return 0


def add_commands(sub: Subparsers) -> None:
    """``mlprep batch run|export-glue|bookmark``."""
    batch = sub.add_parser("batch", help="Glue-style batch jobs").add_subparsers(dest="cmd", required=True)
    r = batch.add_parser("run", help="run a batch job", description=(
        "Run a job config. Prints the run summary's path on the last line; exits 1 on failure."))
    r.add_argument("config", help="job config (YAML)")
    r.add_argument("--param", "-p", action="append", metavar="NAME=VALUE", help="job parameter (repeatable)")
    param_sources(r)
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--engine", default="embedded", help="embedded (DuckDB, default; also: duckdb) or spark (pip install mlprep[spark])")
    r.add_argument("--master", default="local[2]", help="Spark master URL for --engine spark (default local[2])")
    r.add_argument("--memory-limit", metavar="SIZE", help="memory of the embedded DuckDB, which spills to disk past it"
                                                          " (e.g. 2GB or 25%% of RAM; default $MLPREP_MEMORY_LIMIT,"
                                                          " else RAM/24, at least 1GiB)")
    r.set_defaults(fn=cmd_run)
    eg = batch.add_parser("export-glue", help="write the job as an AWS Glue job (script + CreateJob arguments)")
    eg.add_argument("config", help="job config (YAML)")
    eg.add_argument("--out", required=True, help="folder for <job>.py and <job>.job.json")
    eg.add_argument("--role", default="arn:aws:iam::123456789012:role/GlueJobRole", help="Glue job role ARN")
    eg.add_argument("--script-location", help="s3:// URI the script will be uploaded to")
    eg.add_argument("--mlprep-wheel", help="s3:// URI of the mlprep wheel for --additional-python-modules")
    eg.add_argument("--worker-type", default="G.1X")
    eg.add_argument("--workers", type=int, default=2)
    eg.set_defaults(fn=cmd_export_glue)
    b = batch.add_parser("bookmark", help="show, reset or set a job's bookmark", description=(
        "show: print it; reset: the next run reprocesses everything and replaces the table;"
        " set: move a SQL source's key (--key) or mark files as processed (--processed)."))
    b.add_argument("action", choices=["show", "reset", "set"])
    b.add_argument("config", help="job config (YAML)")
    b.add_argument("--param", "-p", action="append", metavar="NAME=VALUE", help="job parameter (repeatable)")
    b.add_argument("--source", help="source name (set)")
    b.add_argument("--key", help="last processed incremental key (set, SQL sources)")
    b.add_argument("--processed", help="path or glob of files to mark processed (set, file sources)")
    b.set_defaults(fn=cmd_bookmark)
