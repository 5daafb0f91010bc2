"""Build a pipeline and run it: locally with mlprep's executor (``--local``, no Docker, no AWS),
or upsert it to SageMaker and start an execution (credentials and ``--role-arn`` needed; the
endpoint comes from AWS_ENDPOINT_URL when set, e.g. moto's server).

    python pipelines/run_pipeline.py --local [--param Name=value ...]
    python pipelines/run_pipeline.py --role-arn arn:aws:iam::...:role/... [--param Name=value ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines.get_pipeline_definition import write  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--module-name", default="pipelines.fraud.pipeline")
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
    from mlprep.cli import _params

    params = _params(a.param)
    with tempfile.TemporaryDirectory() as tmp:
        import importlib

        name = a.name or getattr(importlib.import_module(a.module_name), "PIPELINE_NAME", "pipeline")
        definition = write(Path(tmp) / f"{name}.json", a.module_name, kwargs)
        if a.local:
            from mlprep.pipeline.executor import Executor

            ex = Executor(definition, home=a.home, pipeline_name=name).run(params)
            print(json.dumps(ex.describe(), indent=2))
            return 0 if ex.status == "Succeeded" else 1
        if not a.role_arn:
            ap.error("--role-arn is required to run on SageMaker (or use --local)")
        from mlprep.pipeline import aws

        aws.upsert(definition, name, a.role_arn)
        print(json.dumps(aws.start(name, params), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
