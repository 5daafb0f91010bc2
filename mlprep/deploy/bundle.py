"""The code a deployment uploads, built reproducibly so its content-hashed S3 keys only change
when the code does (a second ``deploy plan`` + ``apply`` on unchanged code uploads nothing):

- the mlprep wheel the Glue job installs (``--additional-python-modules``): the ``mlprep``
  package with the batch engine's runtime requirements only — a Glue worker has Spark, and
  pip-installing JupyterLab or the SageMaker SDK there would cost minutes per job start;
- the Managed Flink application's zip: ``main.py`` (``mlprep/stream/flink_job.py``, which
  imports nothing from mlprep), the compiled SQL and, when given, the Kinesis connector jar
  under ``lib/`` (Managed Flink loads the jar named by the ``jarfile`` run option).

Both are built from the mlprep that is imported (a checkout installed with ``pip install -e``,
or a wheel): its package files, and its installed metadata for the description and
requirements. Archives have sorted members, fixed timestamps and modes (as
``mlprep.pipeline.staging``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from collections.abc import Iterator
from importlib import metadata, resources
from importlib.resources.abc import Traversable
from pathlib import Path

from mlprep import __version__
from mlprep.errors import MlprepError

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


def _distribution() -> metadata.PackageMetadata:
    """The installed mlprep's metadata (that of the imported package's version)."""
    try:
        meta = metadata.metadata("mlprep")
    except metadata.PackageNotFoundError:
        raise MlprepError("mlprep is imported but not installed, so its wheel cannot be built: install it "
                          "(pip install -e . in a checkout)") from None
    if meta["Version"] != __version__:
        raise MlprepError(f"the installed mlprep is {meta['Version']}, the imported one {__version__}: reinstall it")
    return meta


def batch_requirements() -> list[str]:
    """The installed mlprep's requirements that ``BATCH_RUNTIME`` names (no extras), Glue bounds applied."""
    reqs = [r for r in metadata.requires("mlprep") or [] if "extra" not in r.partition(";")[2]]
    return [GLUE_BOUNDS.get(_requirement_name(r), r) for r in reqs if _requirement_name(r) in BATCH_RUNTIME]


def _files(folder: Traversable, prefix: str) -> Iterator[tuple[str, Traversable]]:
    for item in folder.iterdir():
        name = f"{prefix}/{item.name}"
        if item.is_dir():
            if item.name != "__pycache__":
                yield from _files(item, name)
        elif item.name.endswith(".py") or item.name == "py.typed":
            yield name, item


def package_files() -> dict[str, bytes]:
    """``{mlprep/...: bytes}``: the imported mlprep's ``*.py`` files and ``py.typed``."""
    return {name: f.read_bytes() for name, f in _files(resources.files("mlprep"), "mlprep")}


def wheel() -> bytes:
    """A PEP 427 wheel of the ``mlprep`` package (``*.py`` and ``py.typed``) whose requirements are
    ``BATCH_RUNTIME`` with the installed mlprep's version bounds."""
    meta = _distribution()
    members = package_files()
    info = f"mlprep-{__version__}.dist-info"
    members[f"{info}/METADATA"] = "\n".join(
        ["Metadata-Version: 2.1", "Name: mlprep", f"Version: {__version__}", f"Summary: {meta['Summary']}",
         f"Requires-Python: {meta['Requires-Python']}", *[f"Requires-Dist: {r}" for r in batch_requirements()],
         ""]).encode()
    members[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: mlprep.deploy.bundle\nRoot-Is-Purelib: true\n"
                                b"Tag: py3-none-any\n")
    members[f"{info}/entry_points.txt"] = b"[console_scripts]\nmlprep = mlprep.cli:main\n"
    record = [f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}"
              for n, d in sorted(members.items())]
    members[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    return _zip(members)


def flink_zip(sql: str, sql_name: str, connector_jar: Path | None = None) -> bytes:
    """The application code: ``main.py``, ``<sql_name>`` and ``lib/<jar>`` if given."""
    main = resources.files("mlprep.stream").joinpath("flink_job.py").read_bytes()
    members = {"main.py": main, sql_name: sql.encode()}
    if connector_jar is not None:
        members[f"lib/{Path(connector_jar).name}"] = Path(connector_jar).read_bytes()
    return _zip(members)
