"""A definition on SageMaker itself: ``upsert`` (code uploaded to its content-hashed keys, then
CreatePipeline or UpdatePipeline), ``start`` and ``describe``. boto3 takes the endpoint from
``endpoint_url`` or AWS_ENDPOINT_URL (moto's server in the tests), credentials from its usual chain.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlprep.awsnames import role_arn
from mlprep.pipeline import staging


def _client(service: str, endpoint_url: str | None):
    import boto3

    return boto3.client(service, endpoint_url=endpoint_url)


def upsert(definition: str | Path, name: str, role: str, endpoint_url: str | None = None,
           description: str | None = None) -> dict:
    """Create or update pipeline ``name``; returns {PipelineArn, Created, CodeUploaded}."""
    role_arn(role, "--role-arn")
    path = Path(definition)
    text = path.read_text()
    json.loads(text)  # fail here, not in the service, on a broken file
    s3 = _client("s3", endpoint_url)
    uploaded = []
    for b in staging.read_sidecar(path):
        bucket, key = b.uri.removeprefix("s3://").split("/", 1)
        try:
            head = s3.head_object(Bucket=bucket, Key=key)
            same = head.get("ContentLength") == len(b.data)
        except Exception:  # absent (404) or unreadable: upload
            same = False
        if not same:
            s3.put_object(Bucket=bucket, Key=key, Body=b.data)
            uploaded.append(b.uri)
    sm = _client("sagemaker", endpoint_url)
    args: dict[str, Any] = {"PipelineName": name, "PipelineDefinition": text, "RoleArn": role}
    if description:
        args["PipelineDescription"] = description
    from botocore.exceptions import ClientError

    try:
        sm.describe_pipeline(PipelineName=name)
        exists = True
    except ClientError as e:  # AWS says ResourceNotFound; moto says ValidationException
        err = e.response.get("Error", {})
        if err.get("Code") != "ResourceNotFound" and "could not find" not in err.get("Message", "").lower():
            raise
        exists = False
    arn = (sm.update_pipeline(**args) if exists else sm.create_pipeline(**args))["PipelineArn"]
    return {"PipelineArn": arn, "Created": not exists, "CodeUploaded": uploaded}


def start(name: str, parameters: dict[str, Any] | None = None, endpoint_url: str | None = None) -> dict:
    sm = _client("sagemaker", endpoint_url)
    r = sm.start_pipeline_execution(
        PipelineName=name, PipelineParameters=[{"Name": k, "Value": str(v)} for k, v in (parameters or {}).items()])
    return {"PipelineExecutionArn": r["PipelineExecutionArn"]}


def describe(name: str, endpoint_url: str | None = None) -> dict:
    """DescribePipeline with the definition parsed, and the latest executions."""
    sm = _client("sagemaker", endpoint_url)
    d = sm.describe_pipeline(PipelineName=name)
    d.pop("ResponseMetadata", None)
    d["PipelineDefinition"] = json.loads(d["PipelineDefinition"])
    ex = sm.list_pipeline_executions(PipelineName=name).get("PipelineExecutionSummaries", [])
    d["Executions"] = ex[:10]
    return d
