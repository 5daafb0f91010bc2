"""``mlprep pipeline|registry|endpoint`` commands (added to the main parser by ``mlprep.cli``)."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path

from mlprep.errors import ConfigError


def _home(a: argparse.Namespace) -> Path:
    from mlprep.pipeline.executor import default_home

    return Path(a.home).resolve() if a.home else default_home()


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

    rec = load_execution(_home(a), a.pipeline_name, a.execution_id)
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


def cmd_registry(a: argparse.Namespace) -> int:
    from mlprep.pipeline.registry import Registry

    reg = Registry(_home(a))
    if a.action == "list":
        rows = reg.packages(a.ref)
        if a.json:
            print(json.dumps([reg.describe(r) for r in rows], indent=2, default=str))
        for r in rows if not a.json else []:
            m = (r.get("Metrics") or {}).get("binary_classification_metrics", {})
            auc = (m.get("roc_auc") or {}).get("value")
            print(f"{r['Name']:<32} {r['ModelApprovalStatus']:<22} {r['CreationTime']}  "
                  f"roc_auc={auc if auc is None else round(auc, 4)}")
        return 0
    if not a.ref:
        raise ConfigError("REF", f"registry {a.action} needs a model package (GROUP/VERSION or ARN)")
    status = {"approve": "Approved", "reject": "Rejected"}[a.action]
    r = reg.set_status(a.ref, status, a.description)
    print(f"{r['Name']}: {r['ModelApprovalStatus']}")
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    from mlprep.pipeline import serve

    if a.host not in ("127.0.0.1", "localhost", "::1") and not a.allow_remote:
        raise ConfigError("--host", f"{a.host} exposes the model beyond this machine: add --allow-remote")
    if a.max_connections < 1:
        raise ConfigError("--max-connections", f"must be at least 1, got {a.max_connections}")
    serve.serve(_home(a), a.ref, a.host, a.port, Path(a.ready_file) if a.ready_file else None, a.max_bytes,
                allow_remote=a.allow_remote, max_connections=a.max_connections)
    return 0


def cmd_endpoints(a: argparse.Namespace) -> int:
    from mlprep.pipeline import serve
    from mlprep.pipeline.registry import Registry

    reg = Registry(_home(a))
    if a.action == "list":
        for e in reg.endpoints():
            state = "InService" if serve.alive(int(e["Pid"])) else "Stopped"
            print(f"{e['EndpointName']:<28} {state:<10} {e['Url']}  model={e['ModelName']}")
        return 0
    if not a.name:
        raise ConfigError("NAME", f"endpoint {a.action} needs an endpoint name")
    e = reg.endpoint(a.name)
    if a.action == "stop":
        serve.stop(int(e["Pid"]))
        reg.delete_endpoint(a.name)
        print(f"{a.name}: stopped")
        return 0
    body = Path(a.file).read_bytes() if a.file else (a.body or "").encode()
    req = urllib.request.Request(e["Url"] + "/invocations", data=body, method="POST",
                                 headers={"Content-Type": a.content_type, "Accept": a.accept})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            sys.stdout.write(r.read().decode() + "\n")
    except urllib.error.HTTPError as err:
        print(f"error: HTTP {err.code}: {err.read().decode()}", file=sys.stderr)
        return 1
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    def home(p: argparse.ArgumentParser) -> None:
        p.add_argument("--home", help="mlprep's local folder (default $MLPREP_HOME or ./.mlprep)")

    pipe = sub.add_parser("pipeline", help="SageMaker pipelines: run locally, or on AWS").add_subparsers(
        dest="cmd", required=True)
    r = pipe.add_parser("run", help="execute a pipeline definition JSON locally", description=(
        "Executes the definition (no Docker, no AWS): Processing/Training as local jobs with the SageMaker "
        "container conventions, the registry and endpoints locally. Prints the execution record's path; "
        "exits 1 if the execution fails."))
    r.add_argument("definition", help="pipeline definition JSON (e.g. from pipelines/get_pipeline_definition.py)")
    r.add_argument("--param", "-p", action="append", metavar="NAME=VALUE", help="pipeline parameter (repeatable)")
    home(r)
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
    home(s)
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

    reg = sub.add_parser("registry", help="the local model registry")
    reg.add_argument("action", choices=["list", "approve", "reject"])
    reg.add_argument("ref", nargs="?", help="list: a group; approve/reject: GROUP/VERSION or ARN")
    reg.add_argument("--description", help="approval description")
    reg.add_argument("--json", action="store_true")
    home(reg)
    reg.set_defaults(fn=cmd_registry)

    ep = sub.add_parser("endpoint", help="local endpoints").add_subparsers(dest="cmd", required=True)
    sv = ep.add_parser("serve", help="serve a model package or model over HTTP (SageMaker contract)")
    sv.add_argument("ref", help="model package (ARN, GROUP/VERSION, or GROUP for its latest approved) or model name")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    sv.add_argument("--allow-remote", action="store_true",
                    help="allow a --host other than loopback, and requests for any Host name")
    sv.add_argument("--max-connections", type=int, default=64,
                    help="connections served at once; more are answered 503 (default %(default)s)")
    sv.add_argument("--max-bytes", type=int, default=6 * 1024 * 1024, help="request size limit")
    sv.add_argument("--ready-file", help=argparse.SUPPRESS)
    home(sv)
    sv.set_defaults(fn=cmd_serve)
    for action in ("list", "stop", "invoke"):
        c = ep.add_parser(action, help=f"{action} local endpoints")
        if action != "list":
            c.add_argument("name")
        else:
            c.set_defaults(name=None)
        if action == "invoke":
            c.add_argument("--body", help="request body")
            c.add_argument("--file", help="request body from a file")
            c.add_argument("--content-type", default="text/csv")
            c.add_argument("--accept", default="application/json")
        home(c)
        c.set_defaults(fn=cmd_endpoints, action=action)
