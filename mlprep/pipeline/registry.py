"""A local model registry shaped like SageMaker's: models, model package groups with versioned
packages (approval status, metrics), endpoint configs and endpoints.

Artifacts (model.tar.gz and the serving code archive) are copied into a content-addressed store
when a model or package is created; their sha256 is recorded and checked again before anything
is loaded (``verified_artifacts``), so a swapped or corrupted file is refused, not unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any

from mlprep.errors import MlprepError
from mlprep.pipeline.storage import Storage

REGION = "us-east-1"
ACCOUNT = "000000000000"
STATUSES = ("PendingManualApproval", "Approved", "Rejected")


class RegistryError(MlprepError, ValueError):
    """A registry lookup or change that cannot be done (names what)."""


def arn(kind: str, name: str) -> str:
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{kind}/{name.lower()}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


class Registry:
    def __init__(self, home: str | Path) -> None:
        self.root = Path(home) / "registry"

    # --- artifacts
    def _capture(self, storage: Storage, uri: str) -> dict:
        data = storage.get_bytes(uri)
        digest = hashlib.sha256(data).hexdigest()
        path = self.root / "artifacts" / digest
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{digest}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return {"uri": uri, "sha256": digest, "bytes": len(data)}

    def _container_artifacts(self, storage: Storage, container: dict) -> dict:
        arts = {"model": self._capture(storage, container["ModelDataUrl"])}
        code = (container.get("Environment") or {}).get("SAGEMAKER_SUBMIT_DIRECTORY")
        if code:
            arts["code"] = self._capture(storage, code)
        return arts

    def verified_artifacts(self, record: dict, dest: Path) -> dict[str, Path]:
        """Unpack a record's artifacts into ``dest/{model,code}`` after checking each sha256."""
        out = {}
        for kind, a in record["Artifacts"].items():
            path = self.root / "artifacts" / a["sha256"]
            if not path.is_file():
                raise RegistryError(f"{kind} artifact {a['sha256']} of {record.get('Name')} is missing")
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != a["sha256"]:
                raise RegistryError(f"{kind} artifact of {record.get('Name')} does not match its sha256 "
                                    f"{a['sha256']}: refusing to load it")
            target = dest / kind
            target.mkdir(parents=True, exist_ok=True)
            with tarfile.open(fileobj=io.BytesIO(data)) as t:
                t.extractall(target, filter="data")
            out[kind] = target
        return out

    # --- models
    def create_model(self, storage: Storage, name: str, args: dict) -> dict:
        container = args.get("PrimaryContainer") or (args.get("Containers") or [None])[0]
        if not container or "ModelDataUrl" not in container:
            raise RegistryError(f"model {name}: PrimaryContainer.ModelDataUrl is required locally")
        rec = {"Name": name, "ModelName": name, "ModelArn": arn("model", name), "PrimaryContainer": container,
               "ExecutionRoleArn": args.get("ExecutionRoleArn"), "CreationTime": _now(),
               "Artifacts": self._container_artifacts(storage, container)}
        _write(self.root / "models" / f"{name}.json", rec)
        return rec

    def _get(self, kind: str, folder: str, name: str) -> dict:
        p = self.root / folder / f"{name}.json"
        if not p.is_file():
            raise RegistryError(f"no {kind} named {name!r}")
        return _read(p)

    def model(self, name: str) -> dict:
        return self._get("model", "models", name)

    # --- model packages
    def create_model_package(self, storage: Storage, args: dict, metrics: dict | None = None) -> dict:
        group = args.get("ModelPackageGroupName")
        if not group:
            raise RegistryError("RegisterModel: ModelPackageGroupName is required")
        status = args.get("ModelApprovalStatus") or "PendingManualApproval"
        if status not in STATUSES:
            raise RegistryError(f"ModelApprovalStatus must be one of {STATUSES}, got {status!r}")
        containers = (args.get("InferenceSpecification") or {}).get("Containers") or []
        if not containers:
            raise RegistryError("RegisterModel: InferenceSpecification.Containers is empty")
        gdir = self.root / "groups" / group
        if not (gdir / "group.json").exists():
            _write(gdir / "group.json", {"ModelPackageGroupName": group, "CreationTime": _now(),
                                         "ModelPackageGroupArn": arn("model-package-group", group)})
        versions = [int(p.stem) for p in gdir.glob("[0-9]*.json")]
        version = max(versions, default=0) + 1
        rec = {"Name": f"{group}/{version}", "ModelPackageGroupName": group, "ModelPackageVersion": version,
               "ModelPackageArn": arn("model-package", f"{group}/{version}"), "ModelApprovalStatus": status,
               "ModelPackageDescription": args.get("ModelPackageDescription"),
               "InferenceSpecification": args["InferenceSpecification"], "ModelMetrics": args.get("ModelMetrics"),
               "CustomerMetadataProperties": args.get("CustomerMetadataProperties"),
               "Metrics": metrics or {}, "CreationTime": _now(), "LastModifiedTime": _now(),
               "Artifacts": self._container_artifacts(storage, containers[0])}
        _write(gdir / f"{version:06d}.json", rec)
        return rec

    def packages(self, group: str | None = None) -> list[dict]:
        groups = [self.root / "groups" / group] if group else sorted((self.root / "groups").glob("*"))
        out = []
        for g in groups:
            out += [_read(p) for p in sorted(g.glob("[0-9]*.json"))]
        return out

    def package(self, ref: str) -> dict:
        """By ARN, ``group/version`` or ``group`` (its latest approved version)."""
        name = ref.split(":model-package/", 1)[1] if ":model-package/" in ref else ref
        if "/" in name:
            group, _, v = name.rpartition("/")
            p = self.root / "groups" / group / f"{int(v):06d}.json" if v.isdigit() else None
            if p is None or not p.is_file():
                raise RegistryError(f"no model package {ref!r}")
            return _read(p)
        approved = [r for r in self.packages(name) if r["ModelApprovalStatus"] == "Approved"]
        if not approved:
            raise RegistryError(f"model package group {name!r} has no approved version "
                                "(mlprep registry approve GROUP/VERSION)")
        return approved[-1]

    def set_status(self, ref: str, status: str, description: str | None = None) -> dict:
        if status not in STATUSES:
            raise RegistryError(f"status must be one of {STATUSES}")
        rec = self.package(ref)
        rec.update(ModelApprovalStatus=status, ApprovalDescription=description, LastModifiedTime=_now())
        _write(self.root / "groups" / rec["ModelPackageGroupName"] / f"{rec['ModelPackageVersion']:06d}.json",
               rec)
        return rec

    # --- endpoint configs and endpoints
    def create_endpoint_config(self, args: dict) -> dict:
        name = args.get("EndpointConfigName")
        variants = args.get("ProductionVariants") or []
        if not name or not variants:
            raise RegistryError("EndpointConfig needs EndpointConfigName and ProductionVariants")
        for v in variants:
            self.model(v["ModelName"])  # must exist
        rec = {**args, "EndpointConfigArn": arn("endpoint-config", name), "CreationTime": _now()}
        _write(self.root / "endpoint-configs" / f"{name}.json", rec)
        return rec

    def endpoint_config(self, name: str) -> dict:
        return self._get("endpoint config", "endpoint-configs", name)

    def save_endpoint(self, rec: dict) -> None:
        _write(self.root / "endpoints" / f"{rec['EndpointName']}.json", rec)

    def endpoints(self) -> list[dict]:
        return [_read(p) for p in sorted((self.root / "endpoints").glob("*.json"))]

    def endpoint(self, name: str) -> dict:
        return self._get("endpoint", "endpoints", name)

    def delete_endpoint(self, name: str) -> None:
        (self.root / "endpoints" / f"{name}.json").unlink(missing_ok=True)

    def resolve_serving(self, ref: str) -> dict:
        """What ``endpoint serve`` loads: a model package (ARN, group/version, group) or a model."""
        if (self.root / "models" / f"{ref}.json").is_file():
            return self.model(ref)
        rec = self.package(ref)
        if rec["ModelApprovalStatus"] == "Rejected":
            raise RegistryError(f"model package {rec['Name']} is Rejected: it is not served")
        return rec

    @staticmethod
    def container(rec: dict) -> dict:
        return rec.get("PrimaryContainer") or rec["InferenceSpecification"]["Containers"][0]

    def describe(self, rec: dict) -> dict[str, Any]:
        return {k: v for k, v in rec.items() if k != "Artifacts"}
