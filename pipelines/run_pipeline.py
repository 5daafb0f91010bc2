"""Build a pipeline and run it: locally with mlprep's executor (``--local``, no Docker, no AWS),
or upsert it to SageMaker and start an execution (credentials and ``--role-arn`` needed; the
endpoint comes from AWS_ENDPOINT_URL when set, e.g. moto's server).

    python pipelines/run_pipeline.py --local [--param Name=value ...]
    python pipelines/run_pipeline.py --role-arn arn:aws:iam::...:role/... [--param Name=value ...]

``--module-name`` takes a pipeline reference as ``mlprep deploy plan --pipeline`` does
(default: the fraud pipeline beside this script).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlprep.errors import ConfigError
from mlprep.params import parse_cli
from mlprep.pipeline import build

FRAUD = f"{Path(__file__).resolve().parent / 'fraud' / 'pipeline.py'}:get_pipeline"


def _run(a: argparse.Namespace, kwargs: dict[str, Any], params: dict[str, Any]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        factory = build.load_factory(a.pipeline)
        name = a.name or getattr(factory.module, "PIPELINE_NAME", "pipeline")
        definition = build.write(Path(tmp) / f"{name}.json", factory.ref, kwargs)
        if a.local:
            from mlprep.pipeline.executor import Executor

            ex = Executor(definition, home=a.home, pipeline_name=name).run(params)
            print(json.dumps(ex.describe(), indent=2))
            return 0 if ex.status == "Succeeded" else 1
        from mlprep.pipeline import aws

        aws.upsert(definition, name, a.role_arn)
        print(json.dumps(aws.start(name, params), indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--module-name", "--pipeline", dest="pipeline", default=FRAUD,
                    help="pipeline reference: module:function or path/to/pipeline.py:function")
    ap.add_argument("-kwargs", "--kwargs", default="{}", help="JSON object of get_pipeline keyword arguments")
    ap.add_argument("--param", action="append", default=[], help="pipeline parameter Name=value")
    ap.add_argument("--local", action="store_true", help="run with mlprep's local executor")
    ap.add_argument("--home", help="local executor's folder (default ./.mlprep)")
    ap.add_argument("-role-arn", "--role-arn", help="SageMaker execution role (AWS runs)")
    ap.add_argument("--name", default=None, help="pipeline name (default: the module's PIPELINE_NAME)")
    a = ap.parse_args(argv)
    kwargs = json.loads(a.kwargs)
    if a.role_arn:
        kwargs["role"] = a.role_arn
    if not a.local and not a.role_arn:
        ap.error("--role-arn is required to run on SageMaker (or use --local)")
    try:
        return _run(a, kwargs, parse_cli(a.param))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
