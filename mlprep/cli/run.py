"""``mlprep run``: a plan's notebooks, chained (papermill)."""

from __future__ import annotations

import argparse
import sys

from mlprep.cli.common import Subparsers, param_sources
from mlprep.params import parse_cli


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


def add_commands(sub: Subparsers) -> None:
    """``mlprep run``: a plan's notebooks."""
    run = sub.add_parser("run", help="run the stage notebooks headless (papermill), chained", description=(
        "Runs a plan's notebooks in order, each stage's outputs passed on as the next one's parameters, into "
        "RUNS/<run-id>/ (executed notebooks, logs, summary.json, report.html). Unchanged stages are skipped. "
        "Prints the report's path last; exits 1 if a stage fails, 2 on a bad parameter."))
    run.add_argument("--plan", default="conf/run/demo.yaml", help="run plan (default: %(default)s)")
    run.add_argument("--param", "-p", action="append", metavar="NAME=VALUE",
                     help="run parameter, or STAGE.NAME for a notebook parameter (repeatable)")
    param_sources(run)
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
