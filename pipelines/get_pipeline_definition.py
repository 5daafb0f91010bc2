"""Write a pipeline's definition JSON, offline: no network, no AWS credentials.

    python pipelines/get_pipeline_definition.py --out build/fraud.json \
        [--module-name pipelines/fraud/pipeline.py:get_pipeline] [--kwargs '{"default_bucket": "my-bucket"}']

``--module-name`` is a pipeline reference as ``mlprep deploy plan --pipeline`` takes it
(``package.module:function`` or ``path/to/pipeline.py:function``; default: this folder's fraud
pipeline). Beside ``--out`` goes ``<name>.code/``: the step code at the content-hashed ``s3://``
keys the definition names (``mlprep pipeline run`` and ``mlprep pipeline upsert`` put it in
place). The output is byte-identical across runs for the same code and arguments. The work is
done by ``mlprep.pipeline.build``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mlprep.errors import ConfigError
from mlprep.pipeline import build

FRAUD = f"{Path(__file__).resolve().parent / 'fraud' / 'pipeline.py'}:get_pipeline"


def write(out: Path, ref: str = FRAUD, kwargs: dict[str, Any] | None = None) -> Path:
    """``mlprep.pipeline.build.write`` with this folder's fraud pipeline as the default."""
    return build.write(out, ref, kwargs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--module-name", "--pipeline", dest="pipeline", default=FRAUD,
                    help="pipeline reference: module:function or path/to/pipeline.py:function (default: the fraud "
                         "pipeline beside this script)")
    ap.add_argument("-kwargs", "--kwargs", default="{}", help="JSON object of get_pipeline keyword arguments")
    ap.add_argument("-f", "--out", "--file-name", dest="out", required=True, help="definition JSON to write")
    a = ap.parse_args(argv)
    try:
        kwargs = json.loads(a.kwargs)
        if not isinstance(kwargs, dict):
            raise ValueError("not an object")
    except ValueError as e:
        ap.error(f"--kwargs: expected a JSON object ({e})")
    try:
        print(write(Path(a.out), a.pipeline, kwargs))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
