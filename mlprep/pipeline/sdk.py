"""The sagemaker SDK v3, offline: everything it needs to build a definition with no network and
no AWS credentials, kept in one place.

- role validation off (``SAGEMAKER_VALIDATE_ROLE=false``): otherwise ModelTrainer calls IAM;
- a region before import: ``sagemaker.ai_registry`` creates a boto3 client at import time;
- telemetry opted out through the SDK's own config file (``SAGEMAKER_USER_CONFIG_OVERRIDE``);
- the default bucket set on the session, so the SDK never calls S3 to create or check one;
- code given as ``s3://`` URIs (see ``staging``), so the SDK uploads nothing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

DEFAULT_REGION = "us-east-1"
# A placeholder identity: definitions name a role ARN; nothing here is a credential.
DEFAULT_ROLE = "arn:aws:iam::000000000000:role/mlprep-sagemaker-execution"

_CONFIG = """SchemaVersion: '1.0'
SageMaker:
  PythonSDK:
    Modules:
      TelemetryOptOut: true
"""


def prepare_environment(region: str | None = None) -> str:
    """Set the environment the SDK reads at import and build time; returns the region used."""
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    os.environ.setdefault("AWS_DEFAULT_REGION", region)
    os.environ["SAGEMAKER_VALIDATE_ROLE"] = "false"
    if "SAGEMAKER_USER_CONFIG_OVERRIDE" not in os.environ:
        cfg = Path(tempfile.gettempdir()) / "mlprep-sagemaker-config.yaml"
        if not cfg.exists() or cfg.read_text() != _CONFIG:
            tmp = cfg.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(_CONFIG)
            tmp.replace(cfg)
        os.environ["SAGEMAKER_USER_CONFIG_OVERRIDE"] = str(cfg)
    return region


def quiet() -> None:
    """The SDK logs every applied config key and every field it pops from a definition at INFO /
    WARNING; that is noise for a definition build."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message="Running within a PipelineSession")
    names = [n for n in logging.root.manager.loggerDict if n == "sagemaker" or n.startswith("sagemaker.")]
    for name in {"sagemaker", *names}:
        logging.getLogger(name).setLevel(logging.ERROR)


def pipeline_session(bucket: str, region: str | None = None) -> Any:
    """A ``PipelineSession`` that builds step arguments without calling AWS.

    Credentials are not needed: botocore only signs when a call is made, and none is.
    """
    region = prepare_environment(region)
    import boto3
    from sagemaker.core.workflow.pipeline_context import PipelineSession

    quiet()
    boto = boto3.Session(region_name=region)
    session = PipelineSession(boto_session=boto, default_bucket=bucket)
    session._default_bucket = bucket  # the SDK would otherwise create/check the bucket over S3
    return session
