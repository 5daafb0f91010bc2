"""``mlprep deploy apply|status|destroy``: a plan folder made real through boto3, idempotently.

Every resource is read first and compared with the plan; only what differs is created or
updated, so a second ``apply`` of the same plan changes nothing. Before anything is created,
``preflight`` checks the plan (code sha256, ASL, role ARNs), the credentials' account, that the
plan's IAM roles exist, that every resource can be read, and — through
``iam:SimulatePrincipalPolicy`` where the endpoint offers it — the permissions the changes need;
every problem is reported by name (``missing permission glue:CreateJob``, ``role ... does not
exist``). boto3 finds credentials in its usual chain; mlprep never reads, prints or writes them.

Order of creation: bucket, code objects, Kinesis streams, log group, Glue job, Flink
application, SageMaker pipeline, state machine (each after what it refers to); ``destroy``
goes in reverse and keeps the bucket (it holds data and models) unless asked.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlprep.awsnames import role_arn
from mlprep.deploy import asl
from mlprep.errors import ConfigError, MlprepError
from mlprep.pipeline import staging

log = logging.getLogger("mlprep.deploy")

_IAM_PREFIX = {"stepfunctions": "states", "kinesisanalyticsv2": "kinesisanalytics"}
_S3_ACTION = {"HeadBucket": "s3:ListBucket", "HeadObject": "s3:GetObject", "ListObjectsV2": "s3:ListBucket",
              "DeleteObjects": "s3:DeleteObject", "PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock"}
_MISSING = {"NoSuchEntity", "ResourceNotFoundException", "EntityNotFoundException", "StateMachineDoesNotExist",
            "NoSuchBucket", "NoSuchKey", "404", "ResourceNotFound"}


class DeployError(MlprepError):
    """What stops a deployment, each problem by name."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n  - ".join(["deployment stopped:", *problems]))


@dataclass
class Change:
    """One resource's fate: create, update, none (already as planned), delete, absent, kept."""

    resource: str
    action: str
    detail: str = ""


def _action(e: Exception, service: str) -> str:
    """The IAM action behind a failed call, e.g. ``glue:GetJob``."""
    msg = str(getattr(e, "response", {}).get("Error", {}).get("Message", ""))
    m = re.search(r"not authorized to perform:? ([\w-]+:[\w*]+)", msg)
    if m:
        return m.group(1)
    op = getattr(e, "operation_name", None) or getattr(e, "mlprep_operation", "?")
    if service == "s3":
        return _S3_ACTION.get(op, f"s3:{op}")
    return f"{_IAM_PREFIX.get(service, service)}:{op}"


def _failures() -> tuple[type[Exception], ...]:
    """What a failed call raises: an error answer, or one botocore cannot parse (an endpoint's
    HTML 500 page for an operation it does not implement)."""
    from botocore.exceptions import ClientError
    from botocore.parsers import ResponseParserError

    return ClientError, ResponseParserError


def _code(e: Exception) -> str:
    if "500 Internal Server Error" in str(e) and not hasattr(e, "response"):
        return "unimplemented"
    err = getattr(e, "response", {}).get("Error", {})
    code, msg = str(err.get("Code", "")), str(err.get("Message", ""))
    if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation") or "AccessDenied</Code>" in msg \
            or "not authorized to perform" in msg:
        return "denied"
    if code in _MISSING or "could not find" in msg.lower() or "does not exist" in msg.lower() \
            or "not found" in msg.lower():
        return "missing"
    # an HTML error page instead of an AWS error body (AWS's own 500s, InternalFailure, stay errors)
    if code == "500" or "<!doctype html>" in msg.lower():
        return "unimplemented"
    return "error"


def _explain(e: Exception, what: str, service: str) -> str:
    kind = _code(e)
    if kind == "denied":
        return f"missing permission {_action(e, service)} (to {what})"
    if kind == "unimplemented":
        return f"the endpoint does not implement {_action(e, service)} (to {what})"
    return f"{_action(e, service)} failed (to {what}): {e}"


def _call(fn, *args, **kw):
    """``fn(...)``, or None when the resource does not exist."""
    try:
        return fn(*args, **kw)
    except _failures() as e:
        if _code(e) == "missing":
            return None
        e.mlprep_operation = getattr(fn, "__name__", "?")
        raise


def _name(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


class _Resource:
    kind = ""
    service = ""

    def __init__(self, d: Deployment, name: str):
        self.d, self.name = d, name

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"

    def read(self) -> Any | None:
        raise NotImplementedError

    def differences(self, actual: Any) -> list[str]:
        return []

    def create(self) -> None:
        raise NotImplementedError

    def update(self, actual: Any, diff: list[str]) -> None:
        raise NotImplementedError

    def delete(self, actual: Any) -> None:
        raise NotImplementedError

    def state(self, actual: Any) -> str:
        return "exists"

    def actions(self, action: str) -> list[str]:
        """IAM actions ``action`` (create/update) needs, for the permission simulation."""
        return []


def _diff(want: dict, have: dict, keys, where: str = "") -> list[str]:
    return [f"{where}{k}" for k in keys if k in want and want[k] != have.get(k)]


class Bucket(_Resource):
    kind = "s3 bucket"
    service = "s3"

    def read(self):
        return _call(self.d.client("s3").head_bucket, Bucket=self.name)

    def create(self):
        s3 = self.d.client("s3")
        kw = {} if self.d.region == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": self.d.region}}
        s3.create_bucket(Bucket=self.name, **kw)
        s3.put_public_access_block(Bucket=self.name, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True})

    def delete(self, actual):
        s3 = self.d.client("s3")
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=self.name, Delete={"Objects": keys})
        s3.delete_bucket(Bucket=self.name)

    def actions(self, action):
        return ["s3:CreateBucket", "s3:PutBucketPublicAccessBlock"] if action == "create" else []


class Code(_Resource):
    """The code objects (content-hashed keys; metadata sha256 says what is there)."""

    kind = "s3 code"
    service = "s3"

    def __init__(self, d, bundles):
        super().__init__(d, f"{len(bundles)} objects")
        self.bundles = bundles

    def _split(self, uri):
        return uri.removeprefix("s3://").split("/", 1)

    def read(self):
        s3, have = self.d.client("s3"), {}
        for b in self.bundles:
            bucket, key = self._split(b.uri)
            head = _call(s3.head_object, Bucket=bucket, Key=key)
            if head is not None:
                have[b.uri] = head.get("Metadata", {}).get("sha256")
        return have or None

    def differences(self, actual):
        return [b.uri for b in self.bundles if actual.get(b.uri) != b.sha256]

    def _put(self, todo):
        s3 = self.d.client("s3")
        for b in todo:
            bucket, key = self._split(b.uri)
            s3.put_object(Bucket=bucket, Key=key, Body=b.data, Metadata={"sha256": b.sha256})

    def create(self):
        self._put(self.bundles)

    def update(self, actual, diff):
        self._put([b for b in self.bundles if b.uri in diff])

    def prefixes(self) -> set[tuple[str, str]]:
        """(bucket, prefix) of every code folder: the key up to its content hash."""
        out = set()
        for b in self.bundles:
            bucket, key = self._split(b.uri)
            parts = key.split("/")
            i = next(i for i, p in enumerate(parts) if re.fullmatch(r"[0-9a-f]{16}", p))
            out.add((bucket, "/".join(parts[:i]) + "/"))
        return out

    def delete(self, actual):
        """This plan's objects and earlier versions of them (same folders, other hashes)."""
        s3 = self.d.client("s3")
        for bucket, prefix in sorted(self.prefixes()):
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})

    def state(self, actual):
        return f"{len(actual)}/{len(self.bundles)} uploaded"

    def actions(self, action):
        return ["s3:PutObject"]


class Stream(_Resource):
    kind = "kinesis stream"
    service = "kinesis"

    def __init__(self, d, name, shards):
        super().__init__(d, name)
        self.shards = shards

    def read(self):
        r = _call(self.d.client("kinesis").describe_stream_summary, StreamName=self.name)
        return r and r["StreamDescriptionSummary"]

    def differences(self, actual):
        return [] if actual.get("OpenShardCount", self.shards) == self.shards else ["shards"]

    def _wait(self):
        for _ in range(300):
            if (self.read() or {}).get("StreamStatus") == "ACTIVE":
                return
            time.sleep(1)
        raise DeployError([f"{self}: not ACTIVE after 300 s"])

    def create(self):
        self.d.client("kinesis").create_stream(StreamName=self.name, ShardCount=self.shards,
                                               StreamModeDetails={"StreamMode": "PROVISIONED"})
        self._wait()

    def update(self, actual, diff):
        self.d.client("kinesis").update_shard_count(StreamName=self.name, TargetShardCount=self.shards,
                                                    ScalingType="UNIFORM_SCALING")
        self._wait()

    def delete(self, actual):
        self.d.client("kinesis").delete_stream(StreamName=self.name, EnforceConsumerDeletion=True)

    def state(self, actual):
        return f"{actual['StreamStatus']}, {actual.get('OpenShardCount', '?')} shards"

    def actions(self, action):
        return ["kinesis:CreateStream"] if action == "create" else ["kinesis:UpdateShardCount"]


class LogGroup(_Resource):
    kind = "log group"
    service = "logs"
    retention_days = 30

    def read(self):
        groups = self.d.client("logs").describe_log_groups(logGroupNamePrefix=self.name)["logGroups"]
        return next((g for g in groups if g["logGroupName"] == self.name), None)

    def differences(self, actual):
        return [] if actual.get("retentionInDays") == self.retention_days else ["retentionInDays"]

    def create(self):
        self.d.client("logs").create_log_group(logGroupName=self.name)
        self.update(None, [])

    def update(self, actual, diff):
        self.d.client("logs").put_retention_policy(logGroupName=self.name, retentionInDays=self.retention_days)

    def delete(self, actual):
        self.d.client("logs").delete_log_group(logGroupName=self.name)

    def actions(self, action):
        return ["logs:CreateLogGroup", "logs:PutRetentionPolicy"] if action == "create" else ["logs:PutRetentionPolicy"]


class GlueJob(_Resource):
    kind = "glue job"
    service = "glue"
    _KEYS = ("Description", "Role", "Command", "GlueVersion", "WorkerType", "NumberOfWorkers", "Timeout",
             "MaxRetries", "ExecutionProperty", "DefaultArguments")

    def __init__(self, d, job):
        super().__init__(d, job["Name"])
        self.job = job

    def read(self):
        r = _call(self.d.client("glue").get_job, JobName=self.name)
        return r and r["Job"]

    def differences(self, actual):
        return _diff(self.job, actual, self._KEYS)

    def create(self):
        self.d.client("glue").create_job(**self.job)

    def update(self, actual, diff):
        # UpdateJob replaces the definition: send all of it, not only what changed
        self.d.client("glue").update_job(JobName=self.name, JobUpdate={k: self.job[k] for k in self._KEYS
                                                                        if k in self.job})

    def delete(self, actual):
        self.d.client("glue").delete_job(JobName=self.name)

    def state(self, actual):
        runs = self.d.client("glue").get_job_runs(JobName=self.name, MaxResults=1).get("JobRuns", [])
        return f"last run {runs[0]['JobRunState']}" if runs else "never run"

    def actions(self, action):
        return ["glue:CreateJob" if action == "create" else "glue:UpdateJob", "iam:PassRole"]


class FlinkApp(_Resource):
    kind = "flink application"
    service = "kinesisanalyticsv2"

    def __init__(self, d, app):
        super().__init__(d, app["ApplicationName"])
        self.app = app

    def read(self):
        kda = self.d.client("kinesisanalyticsv2")
        # listed first: moto answers DescribeApplication of an unknown name with a 500
        names, token = [], None
        while True:
            page = kda.list_applications(**({"NextToken": token} if token else {}))
            names += [a["ApplicationName"] for a in page["ApplicationSummaries"]]
            token = page.get("NextToken")
            if not token:
                break
        if self.name not in names:
            return None
        return kda.describe_application(ApplicationName=self.name)["ApplicationDetail"]

    def _want(self):
        c = self.app["ApplicationConfiguration"]
        f = c["FlinkApplicationConfiguration"]
        return {"role": self.app["ServiceExecutionRole"], "runtime": self.app["RuntimeEnvironment"],
                "code": c["ApplicationCodeConfiguration"]["CodeContent"]["S3ContentLocation"],
                "checkpoint": f["CheckpointConfiguration"], "parallelism": f["ParallelismConfiguration"],
                "monitoring": f["MonitoringConfiguration"], "properties": c["EnvironmentProperties"]["PropertyGroups"]}

    @staticmethod
    def _have(a):
        c = a.get("ApplicationConfigurationDescription", {})
        f = c.get("FlinkApplicationConfigurationDescription", {})
        par = {k: v for k, v in f.get("ParallelismConfigurationDescription", {}).items() if k != "CurrentParallelism"}
        return {"role": a.get("ServiceExecutionRole"), "runtime": a.get("RuntimeEnvironment"),
                "code": c.get("ApplicationCodeConfigurationDescription", {}).get("CodeContentDescription", {})
                .get("S3ApplicationCodeLocationDescription"),
                "checkpoint": f.get("CheckpointConfigurationDescription"), "parallelism": par,
                "monitoring": f.get("MonitoringConfigurationDescription"),
                "properties": c.get("EnvironmentPropertyDescriptions", {}).get("PropertyGroupDescriptions")}

    def differences(self, actual):
        want, have = self._want(), self._have(actual)
        return [k for k in want if want[k] != have[k]]

    def create(self):
        self.d.client("kinesisanalyticsv2").create_application(**self.app)

    def update(self, actual, diff):
        w = self._want()
        suffix = lambda d: {f"{k}Update": v for k, v in d.items()}  # noqa: E731 — the API's field naming
        self.d.client("kinesisanalyticsv2").update_application(
            ApplicationName=self.name, CurrentApplicationVersionId=actual["ApplicationVersionId"],
            ServiceExecutionRoleUpdate=w["role"], RuntimeEnvironmentUpdate=w["runtime"],
            ApplicationConfigurationUpdate={
                "ApplicationCodeConfigurationUpdate": {"CodeContentTypeUpdate": "ZIPFILE", "CodeContentUpdate": {
                    "S3ContentLocationUpdate": suffix(w["code"])}},
                "FlinkApplicationConfigurationUpdate": {
                    "CheckpointConfigurationUpdate": suffix(w["checkpoint"]),
                    "ParallelismConfigurationUpdate": suffix(w["parallelism"]),
                    "MonitoringConfigurationUpdate": suffix(w["monitoring"])},
                "EnvironmentPropertyUpdates": {"PropertyGroups": w["properties"]}})

    def delete(self, actual):
        self.d.client("kinesisanalyticsv2").delete_application(ApplicationName=self.name,
                                                              CreateTimestamp=actual["CreateTimestamp"])

    def state(self, actual):
        return f"{actual['ApplicationStatus']}, version {actual['ApplicationVersionId']}"

    def actions(self, action):
        return [f"kinesisanalytics:{'Create' if action == 'create' else 'Update'}Application", "iam:PassRole"]


class Pipeline(_Resource):
    kind = "sagemaker pipeline"
    service = "sagemaker"

    def __init__(self, d, name, definition: Path, role: str):
        super().__init__(d, name)
        self.definition, self.role = definition.read_text(), role

    def read(self):
        return _call(self.d.client("sagemaker").describe_pipeline, PipelineName=self.name)

    def differences(self, actual):
        out = [] if json.loads(actual["PipelineDefinition"]) == json.loads(self.definition) else ["definition"]
        return out + ([] if actual.get("RoleArn") == self.role else ["RoleArn"])

    def create(self):
        self.d.client("sagemaker").create_pipeline(PipelineName=self.name, PipelineDefinition=self.definition,
                                                   RoleArn=self.role, Tags=[{"Key": "mlprep:plan",
                                                                             "Value": self.d.prefix}])

    def update(self, actual, diff):
        self.d.client("sagemaker").update_pipeline(PipelineName=self.name, PipelineDefinition=self.definition,
                                                   RoleArn=self.role)

    def delete(self, actual):
        self.d.client("sagemaker").delete_pipeline(PipelineName=self.name)

    def state(self, actual):
        ex = self.d.client("sagemaker").list_pipeline_executions(PipelineName=self.name, MaxResults=1)
        ex = ex.get("PipelineExecutionSummaries", [])
        return f"last execution {ex[0]['PipelineExecutionStatus']}" if ex else "never run"

    def actions(self, action):
        return [f"sagemaker:{'Create' if action == 'create' else 'Update'}Pipeline", "iam:PassRole"]


class StateMachine(_Resource):
    kind = "state machine"
    service = "stepfunctions"

    def __init__(self, d, request: dict, definition: str):
        super().__init__(d, request["name"])
        self.request = {**request, "definition": definition}
        self.arn = f"arn:aws:states:{d.region}:{d.account}:stateMachine:{self.name}"

    def read(self):
        return _call(self.d.client("stepfunctions").describe_state_machine, stateMachineArn=self.arn)

    def differences(self, actual):
        out = [] if json.loads(actual["definition"]) == json.loads(self.request["definition"]) else ["definition"]
        return out + _diff(self.request, actual, ["roleArn", "loggingConfiguration"])

    def create(self):
        self.d.client("stepfunctions").create_state_machine(**self.request)

    def update(self, actual, diff):
        r = self.request
        self.d.client("stepfunctions").update_state_machine(
            stateMachineArn=self.arn, definition=r["definition"], roleArn=r["roleArn"],
            loggingConfiguration=r["loggingConfiguration"])

    def delete(self, actual):
        self.d.client("stepfunctions").delete_state_machine(stateMachineArn=self.arn)

    def state(self, actual):
        ex = self.d.client("stepfunctions").list_executions(stateMachineArn=self.arn, maxResults=1)["executions"]
        return f"last execution {ex[0]['status']}" if ex else "never run"

    def actions(self, action):
        return [f"states:{'Create' if action == 'create' else 'Update'}StateMachine", "iam:PassRole"]


class Deployment:
    """The resources of one plan folder, on the AWS endpoint boto3 is pointed at."""

    ROLES = ("glue_role", "flink_role", "sagemaker_role", "states_role")

    def __init__(self, plan_dir: str | Path, endpoint_url: str | None = None):
        self.dir = Path(plan_dir)
        if not (self.dir / "plan.json").is_file():
            raise ConfigError("DIR", f"no plan.json in {self.dir}: run `mlprep deploy plan --out {self.dir}` first")
        self.plan = json.loads((self.dir / "plan.json").read_text())
        t = self.plan["target"]
        self.region, self.prefix, self.endpoint_url = t["region"], t["prefix"], endpoint_url
        self.account = role_arn(t["glue_role"], "plan.json target.glue_role")
        self._clients: dict[str, Any] = {}
        self._actual: dict[str, Any] = {}

    def client(self, service: str):
        if service not in self._clients:
            import boto3
            from botocore.config import Config

            self._clients[service] = boto3.client(
                service, region_name=self.region, endpoint_url=self.endpoint_url,
                config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=60))
        return self._clients[service]

    # -- what the plan asks for ------------------------------------------------------------
    def _check_local(self) -> tuple[list[staging.CodeBundle], list[str]]:
        problems: list[str] = []
        files = self.plan["files"]
        for key, rel in files.items():
            if not (self.dir / rel).is_file():
                problems.append(f"plan file {rel} ({key}) is missing")
        bundles: list[staging.CodeBundle] = []
        try:
            bundles = staging.read_bundles(self.dir / "code") + staging.read_sidecar(
                self.dir / files["pipeline_definition"])
        except (ValueError, OSError) as e:
            problems.append(f"code: {e}")
        if (self.dir / files["state_machine"]).is_file():
            problems += asl.validate(json.loads((self.dir / files["state_machine"]).read_text()), files["state_machine"])
        for r in self.ROLES:
            try:
                role_arn(self.plan["target"][r], f"plan.json target.{r}")
            except ConfigError as e:
                problems.append(str(e))
        return bundles, problems

    def resources(self) -> list[_Resource]:
        bundles, problems = self._check_local()
        if problems:
            raise DeployError(problems)
        p, t, n, f = self.plan, self.plan["target"], self.plan["names"], self.plan["files"]
        shards = next(r["shards"] for r in p["resources"] if r["kind"] == "stream")
        machine = json.loads((self.dir / f["state_machine"]).read_text())
        request = json.loads((self.dir / "stepfunctions" / "create_state_machine.json").read_text())
        return [Bucket(self, t["bucket"]), Code(self, bundles),
                Stream(self, n["events_stream"], shards), Stream(self, n["features_stream"], shards),
                LogGroup(self, n["log_group"]),
                GlueJob(self, json.loads((self.dir / f["glue_job"]).read_text())),
                FlinkApp(self, json.loads((self.dir / f["flink_application"]).read_text())),
                Pipeline(self, n["pipeline"], self.dir / f["pipeline_definition"], t["sagemaker_role"]),
                StateMachine(self, request, json.dumps(machine))]

    # -- checks -----------------------------------------------------------------------------
    def preflight(self, resources: list[_Resource]) -> tuple[list[Change], list[str]]:
        """Read everything; returns the changes and warnings, or raises DeployError listing
        every problem found (nothing has been created)."""
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        problems, warnings = [], []
        if boto3.Session().get_credentials() is None:
            raise DeployError(["no AWS credentials: set AWS_PROFILE or the AWS_* variables (boto3 reads them; "
                               "mlprep never stores them)"])
        try:
            me = self.client("sts").get_caller_identity()
        except (ClientError, BotoCoreError) as e:
            raise DeployError([f"the credentials do not work: {e}"]) from None
        if me["Account"] != self.account:
            problems.append(f"the plan's roles are in account {self.account}, the credentials are for account "
                            f"{me['Account']}")
        for r in self.ROLES:
            arn = self.plan["target"][r]
            try:
                if _call(self.client("iam").get_role, RoleName=_name(arn)) is None:
                    problems.append(f"role {_name(arn)!r} ({r}: {arn}) does not exist")
            except _failures() as e:
                problems.append(_explain(e, f"check role {arn}", "iam"))
        changes = []
        for res in resources:
            try:
                actual = res.read()
            except _failures() as e:
                problems.append(_explain(e, f"read {res}", res.service))
                continue
            self._actual[str(res)] = actual
            if actual is None:
                changes.append(Change(str(res), "create"))
            else:
                diff = res.differences(actual)
                changes.append(Change(str(res), "update" if diff else "none", ", ".join(diff)))
        if problems:
            raise DeployError(problems)
        needed = sorted({a for res, c in zip(resources, changes, strict=False) if c.action in ("create", "update")
                         for a in res.actions(c.action)})
        if needed:
            denied, warning = self._simulate(me["Arn"], needed)
            if denied:
                raise DeployError([f"missing permission {a}" for a in denied])
            if warning:
                warnings.append(warning)
        return changes, warnings

    def _simulate(self, caller: str, actions: list[str]) -> tuple[list[str], str | None]:
        """Actions the caller may not perform, by IAM's policy simulator; a warning instead when
        the simulator cannot be asked (then a denied call stops ``apply`` by name)."""
        m = re.match(r"arn:(aws[\w-]*):sts::(\d+):assumed-role/([^/]+)/", caller)
        principal = f"arn:{m.group(1)}:iam::{m.group(2)}:role/{m.group(3)}" if m else caller
        if principal.endswith(":root"):
            return [], None
        try:
            r = self.client("iam").simulate_principal_policy(PolicySourceArn=principal, ActionNames=actions)
        except Exception as e:  # denied, not offered, unparseable: the calls themselves will tell
            why = "not implemented by this endpoint" if _code(e) == "unimplemented" else str(e).splitlines()[0][:200]
            return [], (f"permissions not simulated before apply (iam:SimulatePrincipalPolicy: {why}); "
                        "a denied call stops apply and is named")
        return sorted(x["EvalActionName"] for x in r["EvaluationResults"] if x["EvalDecision"] != "allowed"), None

    # -- commands ---------------------------------------------------------------------------
    def diff(self) -> tuple[list[Change], list[str]]:
        """What ``apply`` would do (reads only)."""
        return self.preflight(self.resources())

    def apply(self, echo=print) -> list[Change]:
        resources = self.resources()
        changes, warnings = self.preflight(resources)
        for w in warnings:
            log.warning(w)
        done = []
        for res, ch in zip(resources, changes, strict=False):
            if ch.action in ("create", "update"):
                echo(f"{ch.action:>7}  {res}" + (f"  ({ch.detail})" if ch.detail and len(ch.detail) < 120 else ""))
                try:
                    if ch.action == "create":
                        res.create()
                    else:
                        res.update(self._actual[str(res)], ch.detail.split(", "))
                except _failures() as e:
                    raise DeployError([_explain(e, f"{ch.action} {res}", res.service),
                                       f"done before it: {', '.join(f'{c.action} {c.resource}' for c in done) or 'nothing'}"
                                       "; fix it and apply again (what is done is not repeated)"]) from None
                done.append(ch)
            else:
                echo(f"{'-':>7}  {res}")
        record = {"changes": [asdict(c) for c in changes], "endpoint_url": self.endpoint_url,
                  "state_machine_arn": resources[-1].arn, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (self.dir / "deployed.json").write_text(json.dumps(record, indent=2) + "\n")
        return changes

    def status(self) -> list[dict[str, str]]:
        rows = []
        for res in self.resources():
            try:
                actual = res.read()
                if actual is None:
                    rows.append({"resource": str(res), "state": "absent", "drift": ""})
                    continue
                rows.append({"resource": str(res), "state": res.state(actual),
                             "drift": ", ".join(res.differences(actual))})
            except _failures() as e:
                rows.append({"resource": str(res), "state": "unknown", "drift": _explain(e, f"read {res}", res.service)})
        return rows

    def destroy(self, delete_bucket: bool = False, echo=print) -> list[Change]:
        """Delete in reverse order; the bucket stays unless ``delete_bucket``. Every resource is
        tried; the ones that could not be deleted are raised together."""
        out, failed = [], []
        for res in reversed(self.resources()):
            try:
                actual = res.read()
                if actual is None:
                    out.append(Change(str(res), "absent"))
                elif isinstance(res, Bucket) and not delete_bucket:
                    out.append(Change(str(res), "kept", "holds data and models; --delete-bucket removes it"))
                else:
                    res.delete(actual)
                    out.append(Change(str(res), "delete"))
            except _failures() as e:
                failed.append(_explain(e, f"delete {res}", res.service))
                out.append(Change(str(res), "failed", failed[-1]))
            echo(f"{out[-1].action:>7}  {res}" + (f"  ({out[-1].detail})" if out[-1].detail else ""))
        if failed:
            raise DeployError(failed)
        return out
