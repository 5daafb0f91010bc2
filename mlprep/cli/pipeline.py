"""``mlprep pipeline run|steps|upsert|start|describe``: SageMaker pipelines, locally or on AWS."""

from __future__ import annotations

import argparse
import json
import sys

from mlprep.cli.common import Subparsers, add_home, home
from mlprep.errors import ConfigError


def cmd_run(a: argparse.Namespace) -> int:
    from mlprep.params import parse_cli
    from mlprep.pipeline.executor import Executor

    if a.s3_root and a.s3_endpoint:
        raise ConfigError("--s3-root", "give --s3-root or --s3-endpoint, not both")
    ex = Executor(a.definition, home=a.home, s3_root=a.s3_root, s3_endpoint=a.s3_endpoint,
                  pipeline_name=a.pipeline_name, progress=not a.quiet).run(parse_cli(a.param), a.execution_id,
                                                                           until=a.until)
    if ex.status != "Succeeded":
        print(f"error: execution {ex.id} {ex.status}: {ex.failure}", file=sys.stderr)
    print(ex.folder / "execution.json")
    return 0 if ex.status == "Succeeded" else 1


def cmd_steps(a: argparse.Namespace) -> int:
    from mlprep.pipeline.executor import load_execution

    rec = load_execution(home(a), a.pipeline_name, a.execution_id)
    print(json.dumps(rec if a.json else rec["PipelineExecutionSteps"], indent=2, default=str))
    return 0


def cmd_upsert(a: argparse.Namespace) -> int:
    from mlprep.pipeline import aws

    print(json.dumps(aws.upsert(a.definition, a.name, a.role_arn, a.endpoint_url, a.description), indent=2))
    return 0


def cmd_start(a: argparse.Namespace) -> int:
    from mlprep.params import parse_cli
    from mlprep.pipeline import aws

    print(json.dumps(aws.start(a.name, parse_cli(a.param), a.endpoint_url), indent=2))
    return 0


def cmd_describe(a: argparse.Namespace) -> int:
    from mlprep.pipeline import aws

    print(json.dumps(aws.describe(a.name, a.endpoint_url), indent=2, default=str))
    return 0


def add_commands(sub: Subparsers) -> None:
    pipe = sub.add_parser("pipeline", help="SageMaker pipelines: run locally, or on AWS").add_subparsers(
        dest="cmd", required=True)
    r = pipe.add_parser("run", help="execute a pipeline definition JSON locally", description=(
        "Executes the definition (no Docker, no AWS): Processing/Training as local jobs with the SageMaker "
        "container conventions, the registry and endpoints locally. Prints the execution record's path; "
        "exits 1 if the execution fails."))
    r.add_argument("definition", help="pipeline definition JSON (e.g. from pipelines/get_pipeline_definition.py)")
    r.add_argument("--param", "-p", action="append", metavar="NAME=VALUE", help="pipeline parameter (repeatable)")
    add_home(r)
    r.add_argument("--s3-root", help="folder that holds s3://BUCKET/KEY as BUCKET/KEY (default HOME/s3)")
    r.add_argument("--s3-endpoint", help="a real S3 API instead of a folder (e.g. http://127.0.0.1:5000)")
    r.add_argument("--pipeline-name", help="name of the pipeline (default: the file's stem)")
    r.add_argument("--execution-id", help="execution id (default: random)")
    r.add_argument("--until", metavar="STEP", help="run only STEP and the steps it depends on")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    r.set_defaults(fn=cmd_run)
    s = pipe.add_parser("steps", help="step statuses of a local execution (ListPipelineExecutionSteps)")
    s.add_argument("pipeline_name")
    s.add_argument("--execution-id", help="default: the latest")
    s.add_argument("--json", action="store_true", help="with the execution's description and properties")
    add_home(s)
    s.set_defaults(fn=cmd_steps)
    for name, fn, help_ in (("upsert", cmd_upsert, "create or update the pipeline on SageMaker"),
                            ("start", cmd_start, "start an execution on SageMaker"),
                            ("describe", cmd_describe, "describe the pipeline on SageMaker")):
        c = pipe.add_parser(name, help=help_)
        if name == "upsert":
            c.add_argument("definition")
            c.add_argument("--role-arn", required=True, help="SageMaker execution role ARN")
            c.add_argument("--description")
        c.add_argument("--name", required=True, help="pipeline name")
        if name == "start":
            c.add_argument("--param", "-p", action="append", metavar="NAME=VALUE")
        c.add_argument("--endpoint-url", help="SageMaker/S3 API endpoint (default: AWS_ENDPOINT_URL or AWS)")
        c.set_defaults(fn=fn)
