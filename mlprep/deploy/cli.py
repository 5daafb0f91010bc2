"""``mlprep deploy plan`` (``apply``, ``status`` and ``destroy`` are issue 7's next steps)."""

from __future__ import annotations

import argparse
import json


def cmd_plan(a: argparse.Namespace) -> int:
    from mlprep.deploy.costs import Sizes
    from mlprep.deploy.plan import Target, write_plan

    target = Target(region=a.region, bucket=a.bucket, glue_role=a.glue_role, flink_role=a.flink_role,
                    sagemaker_role=a.sagemaker_role, states_role=a.states_role, prefix=a.prefix)
    sizes = Sizes(runs_per_day=a.runs_per_day, glue_workers=a.glue_workers, glue_worker_type=a.glue_worker_type,
                  flink_parallelism=a.flink_parallelism, kinesis_shards=a.kinesis_shards,
                  endpoint_instance=a.endpoint_instance)
    plan = write_plan(a.out, job_config=a.job, spec=a.spec, pipeline_module=a.pipeline, target=target, sizes=sizes,
                      prices=a.prices)
    print(json.dumps({"resources": len(plan["resources"]), "total_usd_per_day": plan["total_usd_per_day"]}))
    print(f"{a.out}/SUMMARY.md")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    dep = sub.add_parser("deploy", help="plan an AWS deployment (Glue, Managed Flink, SageMaker, Step Functions)")
    dsub = dep.add_subparsers(dest="cmd", required=True)
    p = dsub.add_parser("plan", help="write and check every artifact and request into a folder (creates nothing)")
    p.add_argument("--out", required=True)
    p.add_argument("--job", default="conf/batch/transactions.yaml", help="batch job config")
    p.add_argument("--spec", default="conf/features/transactions.yaml", help="feature spec")
    p.add_argument("--pipeline", default="pipelines.fraud.pipeline", help="module with get_pipeline(...)")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--bucket", default="mlprep-demo")
    p.add_argument("--prefix", default="mlprep", help="prefix of every resource name")
    for role in ("glue", "flink", "sagemaker", "states"):
        p.add_argument(f"--{role}-role", default=f"arn:aws:iam::123456789012:role/mlprep-{role}")
    p.add_argument("--prices", help="price table (default conf/deploy/prices.yaml)")
    p.add_argument("--runs-per-day", type=int, default=1)
    p.add_argument("--glue-workers", type=int, default=2)
    p.add_argument("--glue-worker-type", default="G.1X")
    p.add_argument("--flink-parallelism", type=int, default=2)
    p.add_argument("--kinesis-shards", type=int, default=1)
    p.add_argument("--endpoint-instance", default="ml.m5.large")
    p.set_defaults(fn=cmd_plan)
