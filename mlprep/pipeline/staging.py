"""Code staged to content-hashed ``s3://`` keys, so a pipeline definition is byte-identical
across runs and step caching works (the SDK's timestamped uploads defeat both:
sagemaker-python-sdk #2736, #4879).

A bundle's key holds the sha256 of its bytes; archives are built deterministically (sorted
members, zero mtimes and owners, gzip without a timestamp). ``write_sidecar`` keeps the staged
bytes beside a definition file (``<definition>.code/``) for ``mlprep pipeline run`` and
``mlprep pipeline upsert`` to put in place.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CodeBundle:
    """Bytes to be stored at ``uri`` (``s3://bucket/prefix/<sha256[:16]>/<name>``)."""

    uri: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def bundle(data: bytes, bucket: str, prefix: str, name: str) -> CodeBundle:
    """``data`` at ``s3://bucket/prefix/<sha256[:16]>/name``."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    return CodeBundle(f"s3://{bucket}/{prefix.strip('/')}/{digest}/{name}", data)


def script(path: Path, bucket: str, prefix: str) -> CodeBundle:
    """One file, e.g. a processing step's ``code``."""
    data = Path(path).read_bytes()
    return bundle(data, bucket, prefix, Path(path).name)


def tar_gz(files: dict[str, Path]) -> bytes:
    """A reproducible ``.tar.gz`` of ``{name in archive: file}``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            data = Path(files[name]).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def source_dir(files: dict[str, Path], bucket: str, prefix: str,
               name: str = "sourcedir.tar.gz") -> CodeBundle:
    """A script-mode ``sagemaker_submit_directory`` archive."""
    data = tar_gz(files)
    return bundle(data, bucket, prefix, name)


def sidecar_dir(definition: Path) -> Path:
    return Path(definition).with_name(Path(definition).stem + ".code")


def write_sidecar(definition: Path, bundles: list[CodeBundle]) -> Path:
    """Write ``<definition>.code/`` (see ``write_bundles``)."""
    return write_bundles(sidecar_dir(definition), bundles)


def write_bundles(d: Path, bundles: list[CodeBundle]) -> Path:
    """Write ``d/manifest.json`` ({uri: sha256}) and the bytes under ``d/s3/<bucket>/<key>``."""
    d = Path(d)
    manifest = {}
    for b in bundles:
        target = d / "s3" / b.uri.removeprefix("s3://")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b.data)
        manifest[b.uri] = b.sha256
    (d / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return d


def read_sidecar(definition: Path) -> list[CodeBundle]:
    """The bundles staged beside ``definition`` (none if there is no sidecar), sha256-checked."""
    return read_bundles(sidecar_dir(definition))


def read_bundles(d: Path) -> list[CodeBundle]:
    """The bundles written by ``write_bundles`` (none if ``d`` has no manifest), sha256-checked."""
    d = Path(d)
    if not (d / "manifest.json").exists():
        return []
    out = []
    for uri, digest in json.loads((d / "manifest.json").read_text()).items():
        data = (d / "s3" / uri.removeprefix("s3://")).read_bytes()
        b = CodeBundle(uri, data)
        if b.sha256 != digest:
            raise ValueError(f"staged code {uri} does not match its sha256 in {d / 'manifest.json'}")
        out.append(b)
    return out
