"""The ``mlprep`` command line: ``data generate``, ``batch run|bookmark``, ``stream run|backfill``,
``pipeline run|steps|upsert|start|describe``, ``registry``, ``endpoint``."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Protocol

from mlprep import __version__, interrupts, logs
from mlprep.errors import ConfigError, MlprepError
from mlprep.interrupts import Interrupted
from mlprep.params import parse_cli


class Subparsers(Protocol):
    """What ``ArgumentParser.add_subparsers()`` returns, as the command groups use it."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def _progress(a: argparse.Namespace) -> bool:
    """Live bars on a terminal only: in a log or a pipe they are lines of carriage returns."""
    return not a.no_progress and sys.stderr.isatty()


def cmd_data_generate(a: argparse.Namespace) -> int:
    from mlprep.datasets.payments import generate

    if a.rows < 1000:
        raise ConfigError("--rows", f"must be >= 1000, got {a.rows}")
    g = generate(a.out, a.rows, a.seed)
    print(json.dumps({"out": str(g.out_dir), "rows": g.rows, "users": g.users,
                      "duplicates": g.duplicates, "fraud": g.fraud}))
    return 0


def cmd_batch_run(a: argparse.Namespace) -> int:
    from mlprep.batch.job import run_job

    if a.engine not in ("embedded", "spark"):
        raise ConfigError("--engine", f"embedded or spark, got {a.engine!r}")
    try:
        if a.engine == "spark":
            from mlprep.batch.engines.spark import run_job_spark

            r = run_job_spark(a.config, parse_cli(a.param, a.params_file, a.secret), master=a.master,
                              progress=_progress(a))
        else:
            r = run_job(a.config, parse_cli(a.param, a.params_file, a.secret), progress=_progress(a))
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


def cmd_stream_run(a: argparse.Namespace) -> int:
    from mlprep.stream.runner import run_stream

    s = run_stream(a.spec, a.source, a.out, speedup=a.speedup, progress=_progress(a),
                   checkpoint=a.checkpoint, block_bytes=_bytes("--block-size", a.block_size))
    print(f"{s['events']} events: {s['dead_letters']} dead letters, {s['filtered']} filtered, {s['late']} late;"
          f" {s['emitted']} feature rows, {s['events_per_s']} events/s", file=sys.stderr)
    print(str(Path(a.out) / "summary.json"))
    return 0


def _bytes(option: str, text: str) -> int:
    """``4096``, ``64k``, ``4M``, ``1G`` (binary multiples) as bytes."""
    import re

    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)i?[bB]?\s*", text or "")
    if not m or int(m.group(1)) < 1:
        raise ConfigError(option, f"expected a size such as 65536, 64k or 4M, got {text!r}")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]


def cmd_stream_backfill(a: argparse.Namespace) -> int:
    from mlprep.stream.runner import backfill

    s = backfill(a.spec, a.source, a.out)
    print(f"{s['events']} events -> {s['offline_rows']} feature rows in {s['seconds']} s", file=sys.stderr)
    print(str(Path(a.out) / "summary.json"))
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    from mlprep.runner import inspection
    from mlprep.runner.run import Runner

    if a.help_notebook:
        print(inspection.describe(a.help_notebook))
        return 0
    given = parse_cli(a.param, a.params_file, a.secret)
    runner = Runner(a.plan, runs_dir=a.runs_dir, show_output=not a.no_output)
    r = runner.run(given, run_id=a.run_id, only=a.only.split(",") if a.only else None,
                   start_from=a.start_from, resume=a.resume, force=a.force, timeout=a.timeout,
                   secrets=a.secret)
    s = r.stopped_at
    cell = f" at cell {s.cell}" if s is not None and s.cell else ""
    resume = f"mlprep run --resume {r.run_id}" + "".join(f" --secret {n}" for n in a.secret or [])
    if r.interrupted is not None:
        where = f"stage {s.name}{cell}" if s is not None else "the run"
        print(f"interrupted ({r.interrupted.name}) in {where}; resume with: {resume}", file=sys.stderr)
        return r.interrupted.exit_code
    if s is not None:
        print(f"error: stage {s.name} failed{cell}: {s.error}" + (f"\n(log: {s.log}; " if s.log else "\n(")
              + f"resume with: {resume})", file=sys.stderr)
    print(r.report)
    return 0 if r.status == "succeeded" else 1


def cmd_stream_compile(a: argparse.Namespace) -> int:
    from mlprep.stream.flink import Endpoint, compile_sql
    from mlprep.stream.spec import load_spec

    if a.target != "flink-sql":
        raise ConfigError("--target", f"unknown target {a.target!r} (flink-sql)")
    source = (Endpoint("kinesis", stream_arn=a.source_stream_arn, region=a.region) if a.source_stream_arn
              else Endpoint("filesystem", path=a.source_path))
    sink = (Endpoint("kinesis", stream_arn=a.sink_stream_arn, region=a.region) if a.sink_stream_arn
            else Endpoint("filesystem", path=a.sink_path))
    sql = compile_sql(load_spec(a.spec), source, sink, a.parallelism)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(sql)
    print(out)
    return 0


def _param_sources(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--parameters-file", dest="params_file", action="append", metavar="FILE",
                   help="YAML file of parameters (name: value; STAGE: {name: value}); --param wins")
    p.add_argument("--secret", action="append", metavar="NAME",
                   help="a secret parameter, read from the environment variable MLPREP_SECRET_<NAME> "
                        "(or asked for on a terminal): never on the command line, never written")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlprep", description="Notebook-driven ML data prep.")
    p.add_argument("--version", action="version", version=f"mlprep {__version__}")
    p.add_argument("--log-format", choices=["text", "json"], default="text", help="log lines on stderr")
    p.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING, ERROR")
    sub = p.add_subparsers(dest="group", required=True, metavar="{data,batch,stream,pipeline,registry,endpoint,run,deploy}")

    _add_data(sub)
    _add_batch(sub)
    _add_stream(sub)

    from mlprep.deploy.cli import add_commands as deploy_commands
    from mlprep.pipeline.cli import add_commands

    add_commands(sub)
    deploy_commands(sub)

    _add_run(sub)
    return p


def _add_data(sub: Subparsers) -> None:
    """``mlprep data generate``."""
    data = sub.add_parser("data", help="sample data").add_subparsers(dest="cmd", required=True)
    g = data.add_parser("generate", help="write the seeded card-payments data set",
                        description="Write transactions.jsonl, events.jsonl, labels.jsonl and users.db.")
    g.add_argument("--out", required=True, help="output folder (created)")
    g.add_argument("--rows", type=int, default=10_000, help="transactions (>= 1000; default 10000)")
    g.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    g.set_defaults(fn=cmd_data_generate)


def _add_batch(sub: Subparsers) -> None:
    """``mlprep batch run|export-glue|bookmark``."""
    batch = sub.add_parser("batch", help="Glue-style batch jobs").add_subparsers(dest="cmd", required=True)
    r = batch.add_parser("run", help="run a batch job", description=(
        "Run a job config. Prints the run summary's path on the last line; exits 1 on failure."))
    r.add_argument("config", help="job config (YAML)")
    r.add_argument("--param", "-p", action="append", metavar="NAME=VALUE", help="job parameter (repeatable)")
    _param_sources(r)
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--engine", default="embedded", help="embedded (DuckDB, default) or spark (pip install mlprep[spark])")
    r.add_argument("--master", default="local[2]", help="Spark master URL for --engine spark (default local[2])")
    r.set_defaults(fn=cmd_batch_run)
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


def _add_stream(sub: Subparsers) -> None:
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
    sr.add_argument("--no-progress", action="store_true", help="no progress bar")
    sr.set_defaults(fn=cmd_stream_run)
    bf = stream.add_parser("backfill", help="compute a spec's features over history, in batch", description=(
        "The same spec over a whole historical file at once (no intermediate firing): the feature"
        " values equal the stream's final ones, which guards against training/serving skew."))
    bf.add_argument("spec", help="feature spec (YAML)")
    bf.add_argument("--source", required=True, help="JSON-lines file in arrival order")
    bf.add_argument("--out", required=True, help="output folder")
    bf.set_defaults(fn=cmd_stream_backfill)
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
    sc.add_argument("--region", default="us-east-1", help="AWS region of the Kinesis streams")
    sc.add_argument("--parallelism", type=int, default=2)
    sc.set_defaults(fn=cmd_stream_compile)


def _add_run(sub: Subparsers) -> None:
    """``mlprep run``: a plan's notebooks."""
    run = sub.add_parser("run", help="run the stage notebooks headless (papermill), chained", description=(
        "Runs a plan's notebooks in order, each stage's outputs passed on as the next one's parameters, into "
        "RUNS/<run-id>/ (executed notebooks, logs, summary.json, report.html). Unchanged stages are skipped. "
        "Prints the report's path last; exits 1 if a stage fails, 2 on a bad parameter."))
    run.add_argument("--plan", default="conf/run/demo.yaml", help="run plan (default: %(default)s)")
    run.add_argument("--param", "-p", action="append", metavar="NAME=VALUE",
                     help="run parameter, or STAGE.NAME for a notebook parameter (repeatable)")
    _param_sources(run)
    run.add_argument("--only", metavar="STAGES", help="comma-separated stages to run (others must be unchanged)")
    run.add_argument("--from", dest="start_from", metavar="STAGE", help="run from this stage on")
    run.add_argument("--resume", metavar="RUN_ID", help="continue that run from the stage that failed")
    run.add_argument("--force", action="store_true", help="re-run stages even when unchanged")
    run.add_argument("--timeout", type=float, help="whole-run timeout in seconds")
    run.add_argument("--run-id", help="run id (default: time + random)")
    run.add_argument("--runs-dir", default="runs", help="where runs go (default: %(default)s)")
    run.add_argument("--no-output", action="store_true", help="do not stream the notebooks' output")
    run.add_argument("--help-notebook", metavar="NOTEBOOK", help="list a notebook's parameters, types and defaults")
    run.set_defaults(fn=cmd_run)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    logs.setup(a.log_format, a.log_level.upper())
    interrupts.install()
    try:
        return a.fn(a)
    except MlprepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug or an engine's own error: one line here, the traceback in the debug log
        logging.getLogger("mlprep").debug("unexpected error", exc_info=True)
        print(f"error: {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
              " (--log-level DEBUG shows the traceback)", file=sys.stderr)
        return 1
    except Interrupted as e:  # Ctrl-C / SIGTERM: whatever we started goes too, no traceback
        interrupts.kill_tree()
        print(f"interrupted ({e.name}): mlprep {a.group} {getattr(a, 'cmd', '') or ''} stopped".rstrip(),
              file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
