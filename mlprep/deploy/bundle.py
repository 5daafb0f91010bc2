"""The code a deployment uploads, built reproducibly so its content-hashed S3 keys only change
when the code does (a second ``deploy plan`` + ``apply`` on unchanged code uploads nothing):

- the mlprep wheel the Glue job installs (``--additional-python-modules``): the ``mlprep``
  package with the batch engine's runtime requirements only — a Glue worker has Spark, and
  pip-installing JupyterLab or the SageMaker SDK there would cost minutes per job start;
- the Managed Flink application's zip: ``main.py`` (``mlprep/stream/flink_job.py``, which
  imports nothing from mlprep), the compiled SQL and, when given, the Kinesis connector jar
  under ``lib/`` (Managed Flink loads the jar named by the ``jarfile`` run option).

Archives have sorted members, fixed timestamps and modes (as ``mlprep.pipeline.staging``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import tomllib
import zipfile
from pathlib import Path

from mlprep import __version__

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "mlprep"
# what ``mlprep.batch`` (embedded and Spark engines) imports at run time; tests/test_deploy_apply.py
# checks the import closure against this list
BATCH_RUNTIME = ("duckdb", "pyarrow", "pandas", "numpy", "pyyaml", "pydantic", "fsspec", "s3fs", "tqdm")
# pyproject's bounds, tightened for Glue: pyarrow 26 needs numpy 2 at import without declaring it, and
# Glue 5.x keeps numpy 1.26, so pip would "upgrade" pyarrow into a broken job (found by the Spark 3.5 test)
GLUE_BOUNDS = {"pyarrow": "pyarrow>=18,<26"}
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, _EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, members[name])
    return out.getvalue()


def _requirement_name(req: str) -> str:
    return req.split(";")[0].split("[")[0].split(">")[0].split("<")[0].split("=")[0].split("~")[0].strip().lower()


def wheel_name() -> str:
    return f"mlprep-{__version__}-py3-none-any.whl"


def wheel() -> bytes:
    """A PEP 427 wheel of ``mlprep/`` (``*.py`` and ``py.typed``) whose requirements are
    ``BATCH_RUNTIME`` with pyproject.toml's version bounds."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [GLUE_BOUNDS.get(_requirement_name(r), r) for r in project["dependencies"]
            if _requirement_name(r) in BATCH_RUNTIME]
    members = {str(p.relative_to(ROOT)): p.read_bytes() for p in sorted(PACKAGE.rglob("*"))
               if p.is_file() and (p.suffix == ".py" or p.name == "py.typed") and "__pycache__" not in p.parts}
    info = f"mlprep-{__version__}.dist-info"
    members[f"{info}/METADATA"] = "\n".join(
        ["Metadata-Version: 2.1", "Name: mlprep", f"Version: {__version__}", f"Summary: {project['description']}",
         f"Requires-Python: {project['requires-python']}", *[f"Requires-Dist: {r}" for r in reqs], ""]).encode()
    members[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: mlprep.deploy.bundle\nRoot-Is-Purelib: true\n"
                                b"Tag: py3-none-any\n")
    members[f"{info}/entry_points.txt"] = b"[console_scripts]\nmlprep = mlprep.cli:main\n"
    record = [f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}"
              for n, d in sorted(members.items())]
    members[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    return _zip(members)


def flink_zip(sql: str, sql_name: str, connector_jar: Path | None = None) -> bytes:
    """The application code: ``main.py``, ``<sql_name>`` and ``lib/<jar>`` if given."""
    members = {"main.py": (ROOT / "mlprep" / "stream" / "flink_job.py").read_bytes(), sql_name: sql.encode()}
    if connector_jar is not None:
        members[f"lib/{Path(connector_jar).name}"] = Path(connector_jar).read_bytes()
    return _zip(members)
