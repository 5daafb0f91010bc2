"""``mlprep deploy plan|diff|apply|status|destroy``: the AWS deployment."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from typing import Any

from mlprep.cli.common import Subparsers


def cmd_plan(a: argparse.Namespace) -> int:
    from mlprep.deploy.costs import Sizes
    from mlprep.deploy.plan import Target, write_plan

    target = Target(region=a.region, bucket=a.bucket, glue_role=a.glue_role, flink_role=a.flink_role,
                    sagemaker_role=a.sagemaker_role, states_role=a.states_role, prefix=a.prefix)
    sizes = Sizes(runs_per_day=a.runs_per_day, glue_workers=a.glue_workers, glue_worker_type=a.glue_worker_type,
                  flink_parallelism=a.flink_parallelism, kinesis_shards=a.kinesis_shards,
                  endpoint_instance=a.endpoint_instance)
    plan = write_plan(a.out, job_config=a.job, spec=a.spec, pipeline=a.pipeline, target=target, sizes=sizes,
                      prices=a.prices, flink_connector_jar=a.flink_connector_jar)
    print(json.dumps({"resources": len(plan["resources"]), "total_usd_per_day": plan["total_usd_per_day"]}))
    print(f"{a.out}/SUMMARY.md")
    return 0


def _table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(width[c]) for c in cols).rstrip())
    for r in rows:
        print("  ".join(str(r[c]).ljust(width[c]) for c in cols).rstrip())


def _counts(changes: Iterable[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in changes:
        out[c.action] = out.get(c.action, 0) + 1
    return out


def cmd_diff(a: argparse.Namespace) -> int:
    from dataclasses import asdict

    from mlprep.deploy.apply import Deployment

    changes, warnings = Deployment(a.dir, a.endpoint_url).diff()
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    _table([asdict(c) for c in changes])
    print(json.dumps(_counts(changes)))
    return 0


def cmd_apply(a: argparse.Namespace) -> int:
    from mlprep.deploy.apply import Deployment

    changes = Deployment(a.dir, a.endpoint_url).apply()
    print(json.dumps(_counts(changes)))
    return 0


def cmd_status(a: argparse.Namespace) -> int:
    from mlprep.deploy.apply import Deployment

    rows = Deployment(a.dir, a.endpoint_url).status()
    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        _table(rows)
    return 0


def cmd_destroy(a: argparse.Namespace) -> int:
    from mlprep.deploy.apply import Deployment

    if not a.yes:
        print(f"error: --yes: destroy deletes the resources of {a.dir}; pass --yes to confirm", file=sys.stderr)
        return 2
    changes = Deployment(a.dir, a.endpoint_url).destroy(delete_bucket=a.delete_bucket)
    print(json.dumps(_counts(changes)))
    return 0


def _stops(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A stopped deployment exits 1 (a wrong argument or plan exits 2, as everywhere)."""
    def run(a: argparse.Namespace) -> int:
        from mlprep.deploy.apply import DeployError

        try:
            return fn(a)
        except DeployError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return run


def add_commands(sub: Subparsers) -> None:
    dep = sub.add_parser("deploy", help="deploy to AWS: Glue job, Managed Flink, SageMaker pipeline, Step Functions")
    dsub = dep.add_subparsers(dest="cmd", required=True)
    p = dsub.add_parser("plan", help="write and check every artifact and request into a folder (creates nothing)")
    p.add_argument("--out", required=True)
    p.add_argument("--job", help="batch job config (default: conf/batch/transactions.yaml in the current folder)")
    p.add_argument("--spec", help="feature spec (default: conf/features/transactions.yaml in the current folder)")
    p.add_argument("--pipeline", metavar="REF",
                   help="the SageMaker pipeline: module:function, path/to/pipeline.py:function (a factory such as "
                        "get_pipeline(region, role, default_bucket, pipeline_name)) or a built definition .json "
                        "with its .code/ folder (default: pipelines/fraud/pipeline.py:get_pipeline in the current "
                        "folder)")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--bucket", default="mlprep-demo")
    p.add_argument("--prefix", default="mlprep", help="prefix of every resource name")
    for role in ("glue", "flink", "sagemaker", "states"):
        p.add_argument(f"--{role}-role", default=f"arn:aws:iam::123456789012:role/mlprep-{role}")
    p.add_argument("--prices", help="price table YAML (default: mlprep's own, mlprep/deploy/prices.yaml)")
    p.add_argument("--runs-per-day", type=int, default=1)
    p.add_argument("--glue-workers", type=int, default=2)
    p.add_argument("--glue-worker-type", default="G.1X")
    p.add_argument("--flink-parallelism", type=int, default=2)
    p.add_argument("--kinesis-shards", type=int, default=1)
    p.add_argument("--endpoint-instance", default="ml.m5.large")
    p.add_argument("--flink-connector-jar", help="Kinesis SQL connector jar to put in the Flink application zip")
    p.set_defaults(fn=cmd_plan)
    for name, fn, text in (("diff", cmd_diff, "what apply would create or update (reads only)"),
                           ("apply", cmd_apply, "create or update everything in a plan folder (idempotent)"),
                           ("status", cmd_status, "each resource: absent / state / drift from the plan"),
                           ("destroy", cmd_destroy, "delete the plan's resources (the bucket stays unless asked)")):
        p = dsub.add_parser(name, help=text)
        p.add_argument("dir", help="plan folder (from deploy plan)")
        p.add_argument("--endpoint-url", help="AWS endpoint (e.g. a moto server); default: AWS_ENDPOINT_URL or AWS")
        if name == "status":
            p.add_argument("--json", action="store_true")
        if name == "destroy":
            p.add_argument("--yes", action="store_true", help="confirm")
            p.add_argument("--delete-bucket", action="store_true", help="also empty and delete the bucket")
        p.set_defaults(fn=_stops(fn))
