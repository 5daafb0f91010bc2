"""Write a pipeline's definition JSON, offline: no network, no AWS credentials.

    python pipelines/get_pipeline_definition.py --out build/fraud.json \
        [--module-name pipelines.fraud.pipeline] [--kwargs '{"default_bucket": "my-bucket"}']

Beside ``--out`` goes ``<name>.code/``: the step code at the content-hashed ``s3://`` keys the
definition names (``mlprep pipeline run`` and ``mlprep pipeline upsert`` put it in place). The
output is byte-identical across runs for the same code and arguments.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(module_name: str, kwargs: dict) -> tuple[str, list]:
    """(definition JSON text, code bundles) for ``module.get_pipeline(**kwargs)``."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    mod = importlib.import_module(module_name)
    pipeline = mod.get_pipeline(**kwargs)
    text = json.dumps(json.loads(pipeline.definition()), indent=2) + "\n"
    bundles = []
    if hasattr(mod, "code_bundles"):
        b = {k: v for k, v in kwargs.items() if k in ("default_bucket", "base_job_prefix")}
        bundles = list(mod.code_bundles(**b).values())
    return text, bundles


def write(out: Path, module_name: str = "pipelines.fraud.pipeline", kwargs: dict | None = None) -> Path:
    from mlprep.pipeline import staging

    text, bundles = build(module_name, kwargs or {})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    staging.write_sidecar(out, bundles)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--module-name", default="pipelines.fraud.pipeline",
                    help="module with get_pipeline(...) (default: %(default)s)")
    ap.add_argument("-kwargs", "--kwargs", default="{}", help="JSON object of get_pipeline keyword arguments")
    ap.add_argument("-f", "--out", "--file-name", dest="out", required=True, help="definition JSON to write")
    a = ap.parse_args(argv)
    try:
        kwargs = json.loads(a.kwargs)
        if not isinstance(kwargs, dict):
            raise ValueError("not an object")
    except ValueError as e:
        ap.error(f"--kwargs: expected a JSON object ({e})")
    print(write(Path(a.out), a.module_name, kwargs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
