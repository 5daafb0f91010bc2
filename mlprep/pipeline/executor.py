"""Execute a SageMaker pipeline definition (the JSON, not SDK objects) on this machine.

One execution: parameters resolved (defaults + overrides, typed), code staged beside the
definition put in place, then steps in dependency order: Processing and Training as local jobs
(``containers``), Condition, Fail, Model / RegisterModel / EndpointConfig (``registry``) and
Endpoint (a local server, ``serve``). Honoured: DependsOn, CacheConfig, RetryPolicies,
PropertyFiles, ExecutionVariables. Step records follow ListPipelineExecutionSteps; each step
has a log. Layout under ``home`` (default ``./.mlprep``)::

    s3/<bucket>/<key>                       the local S3 (unless an S3 endpoint is given)
    executions/<pipeline>/<id>/execution.json, steps.json, logs/<step>.log, jobs/<step>/
    cache/<pipeline>/<step>/<key>.json      cached step results
    registry/                               models, packages, endpoints (``registry``)

Two deliberate differences from the service: a cache key includes a fingerprint of the step's
S3 inputs (new data under the same URI is not a cache hit), and steps run one at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlprep.errors import ConfigError
from mlprep.pipeline import containers, definition, serve, staging
from mlprep.pipeline.containers import JobFailed
from mlprep.pipeline.expressions import Context, ExpressionError
from mlprep.pipeline.registry import ACCOUNT, REGION, Registry, RegistryError
from mlprep.pipeline.storage import Storage, StorageError

log = logging.getLogger("mlprep.pipeline")
JOB_TYPES = {"Processing", "Training"}
_DURATION = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")


def default_home() -> Path:
    import os

    return Path(os.environ.get("MLPREP_HOME", ".mlprep")).resolve()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_duration(text: str) -> timedelta:
    """ISO 8601 durations as CacheConfig.ExpireAfter uses them (P30D, PT1H, P1W...)."""
    m = _DURATION.match(text or "")
    if not m or not any(m.groups()):
        raise ConfigError("CacheConfig.ExpireAfter", f"not an ISO 8601 duration: {text!r}")
    y, mo, w, d, h, mi, s = (int(g or 0) for g in m.groups())
    return timedelta(days=365 * y + 30 * mo + 7 * w + d, hours=h, minutes=mi, seconds=s)


@dataclass
class StepRecord:
    StepName: str
    StepStatus: str = "Starting"
    StartTime: str = field(default_factory=_now)
    EndTime: str | None = None
    StepDisplayName: str | None = None
    StepDescription: str | None = None
    FailureReason: str | None = None
    Metadata: dict = field(default_factory=dict)
    AttemptCount: int = 0
    CacheHitResult: dict | None = None
    Seconds: float = 0.0  # mlprep's addition: wall time
    Log: str | None = None

    def public(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Execution:
    pipeline: str
    id: str
    folder: Path
    status: str = "Executing"
    failure: str | None = None
    parameters: dict = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    started: str = field(default_factory=_now)
    ended: str | None = None
    properties: dict[str, dict] = field(default_factory=dict)

    @property
    def arn(self) -> str:
        return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:pipeline/{self.pipeline}/execution/{self.id}"

    def step(self, name: str) -> StepRecord | None:
        return next((s for s in self.steps if s.StepName == name), None)

    def output_uri(self, step: str, name: str) -> str:
        """Where processing step ``step`` put its output ``name`` (its ``S3Output.S3Uri``)."""
        if step not in self.properties:
            raise KeyError(f"step {step} has no properties in execution {self.id} (not run, or failed)")
        outputs = (self.properties[step].get("ProcessingOutputConfig") or {}).get("Outputs") or []
        for o in outputs:
            if o.get("OutputName") == name:
                return o["S3Output"]["S3Uri"]
        have = ", ".join(o.get("OutputName", "?") for o in outputs) or "none"
        raise KeyError(f"step {step} has no output {name!r} (outputs: {have})")

    def describe(self) -> dict:
        """DescribePipelineExecution's shape."""
        d = {"PipelineArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:pipeline/{self.pipeline}",
             "PipelineExecutionArn": self.arn, "PipelineExecutionStatus": self.status,
             "CreationTime": self.started, "LastModifiedTime": self.ended or _now(),
             "PipelineParameters": [{"Name": k, "Value": str(v)} for k, v in self.parameters.items()]}
        if self.failure:
            d["FailureReason"] = self.failure
        return d

    def list_steps(self) -> dict:
        """ListPipelineExecutionSteps' shape (in the order the steps started)."""
        return {"PipelineExecutionSteps": [s.public() for s in self.steps]}

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, doc in (("execution.json", {**self.describe(), "Properties": self.properties}),
                          ("steps.json", self.list_steps())):
            tmp = self.folder / f".{name}.tmp"
            tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
            tmp.replace(self.folder / name)


class _StepFailed(Exception):
    def __init__(self, reason: str, exception_type: str | None = None, log_tail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.exception_type, self.log_tail = reason, exception_type, log_tail


class Executor:
    def __init__(self, definition_path: str | Path, home: str | Path | None = None,
                 s3_root: str | Path | None = None, s3_endpoint: str | None = None,
                 pipeline_name: str | None = None, progress: bool = True) -> None:
        self.path = Path(definition_path)
        self.definition = definition.load(self.path)
        self.home = Path(home).resolve() if home else default_home()
        self.storage = Storage(endpoint=s3_endpoint) if s3_endpoint else Storage(
            root=Path(s3_root) if s3_root else self.home / "s3")
        self.registry = Registry(self.home)
        self.pipeline = pipeline_name or self.path.stem
        if not re.fullmatch(r"[A-Za-z0-9](-*[A-Za-z0-9]){0,255}", self.pipeline):
            raise ConfigError("--pipeline-name", f"{self.pipeline!r}: letters, digits and hyphens only")
        self.progress = progress

    def run(self, parameters: dict[str, Any] | None = None, execution_id: str | None = None,
            until: str | None = None) -> Execution:
        """Execute; ``until`` runs only that step and the steps it depends on (e.g. to compare
        candidates up to evaluation without registering or deploying them)."""
        values = self.definition.resolve_parameters(parameters or {})
        wanted = self._closure(until) if until else None
        eid = execution_id or secrets.token_hex(6)
        ex = Execution(self.pipeline, eid, self.home / "executions" / self.pipeline / eid, parameters=values)
        for b in staging.read_sidecar(self.path):  # the code this definition was built with
            self.storage.put_if_changed(b.uri, b.data)
        start = datetime.now(UTC)
        exec_vars = {"PipelineExecutionId": eid, "PipelineExecutionArn": ex.arn, "PipelineName": self.pipeline,
                     "PipelineArn": ex.describe()["PipelineArn"], "StartDateTime": start.isoformat(),
                     "CurrentDateTime": start.isoformat()}
        ctx = Context(values, exec_vars, ex.properties, read_json=lambda uri: json.loads(self.storage.get_bytes(uri)))
        outcomes: dict[str, bool] = {}
        ex.save()
        total = len(self.definition.order)
        for i, name in enumerate(self.definition.order, 1):
            step = self.definition.steps[name]
            if wanted is not None and name not in wanted:
                continue
            if not self._runnable(step, ex, outcomes):
                continue
            ctx.execution["CurrentDateTime"] = datetime.now(UTC).isoformat()
            rec = StepRecord(name, StepDisplayName=step.display_name, StepDescription=step.description,
                             Log=str(ex.folder / "logs" / f"{name}.log"))
            ex.steps.append(rec)
            ex.save()
            self._say(f"[{i}/{total}] {name} ({step.type}) ...")
            t0 = time.monotonic()
            try:
                self._run_step(step, rec, ctx, ex, outcomes)
                rec.StepStatus = "Succeeded"
            except _StepFailed as e:
                rec.StepStatus, rec.FailureReason = "Failed", e.reason
                ex.status, ex.failure = "Failed", f"Step {name} failed: {e.reason}"
                if e.log_tail:
                    self._say(f"--- last lines of {rec.Log}\n{e.log_tail}\n---")
            rec.EndTime, rec.Seconds = _now(), round(time.monotonic() - t0, 3)
            extra = " (cache hit)" if rec.CacheHitResult else ""
            self._say(f"[{i}/{total}] {name}: {rec.StepStatus} in {rec.Seconds:.1f} s{extra}"
                      + (f": {rec.FailureReason}" if rec.FailureReason else ""))
            ex.save()
            if ex.status == "Failed":
                break
        if ex.status == "Executing":
            ex.status = "Succeeded"
        ex.ended = _now()
        ex.save()
        return ex

    def _closure(self, step: str) -> set[str]:
        if step not in self.definition.steps:
            raise ConfigError("--until", f"no step {step!r} (steps: {', '.join(self.definition.order)})")
        out, todo = set(), [step]
        while todo:
            n = todo.pop()
            if n not in out:
                out.add(n)
                todo += self.definition.steps[n].upstream
        return out

    def _say(self, text: str) -> None:
        if self.progress:  # the terminal line; the log record only when nothing is printed
            print(text, file=sys.stderr, flush=True)
            log.debug(text)
        else:
            log.info(text)

    def _runnable(self, step: definition.Step, ex: Execution, outcomes: dict[str, bool]) -> bool:
        if step.branch and outcomes.get(step.branch[0]) is not step.branch[1]:
            return False
        for u in step.upstream:
            r = ex.step(u)
            if r is None or r.StepStatus != "Succeeded":
                return False
        return True

    # --- one step, with retries and caching
    def _run_step(self, step: definition.Step, rec: StepRecord, ctx: Context, ex: Execution,
                  outcomes: dict[str, bool]) -> None:
        rec.StepStatus = "Executing"
        try:
            args = ctx.resolve(_without_branches(step))
        except ExpressionError as e:
            rec.AttemptCount = 1
            raise _StepFailed(f"cannot resolve the step's arguments: {e}") from None
        if step.type == "Condition":
            rec.AttemptCount = 1
            try:
                ok = all(ctx.condition(c) for c in step.arguments.get("Conditions") or [])
            except (ExpressionError, KeyError) as e:
                raise _StepFailed(f"cannot evaluate the condition: {e}") from None
            outcomes[step.name] = ok
            rec.Metadata = {"Condition": {"Outcome": str(ok).capitalize()}}
            ex.properties[step.name] = {"Outcome": ok}
            return
        if step.type == "Fail":
            rec.AttemptCount = 1
            msg = args.get("ErrorMessage") or ""
            rec.Metadata = {"Fail": {"ErrorMessage": msg}}
            raise _StepFailed(str(msg))
        key = self._cache_key(step, ctx) if step.cache and step.cache.get("Enabled") else None
        if key and self._cache_hit(step, key, rec, ex, ctx):
            return
        attempts: dict[int, int] = {}
        while True:
            rec.AttemptCount += 1
            try:
                props, meta = self._execute(step, args, ex, rec)
                break
            except _StepFailed as e:
                delay = self._retry_delay(step, e.exception_type, attempts)
                if delay is None:
                    raise
                self._say(f"    {step.name}: attempt {rec.AttemptCount} failed ({e.exception_type}: "
                          f"{e.reason}); retrying in {delay:g} s")
                time.sleep(delay)
        ex.properties[step.name] = props
        rec.Metadata = meta
        if step.type in JOB_TYPES:
            ctx.property_files[step.name] = self._property_files(step, props)
        if key:
            self._cache_store(step, key, ex, props, ctx.property_files.get(step.name, {}))

    def _retry_delay(self, step: definition.Step, exception_type: str | None,
                     attempts: dict[int, int]) -> float | None:
        for i, policy in enumerate(step.retry_policies):
            if exception_type and exception_type in (policy.get("ExceptionType") or []):
                n = attempts.get(i, 0)
                if n >= int(policy.get("MaxAttempts", 0)):
                    return None
                attempts[i] = n + 1
                return float(policy.get("IntervalSeconds", 1)) * float(policy.get("BackoffRate", 2.0)) ** n
        return None

    def _execute(self, step: definition.Step, args: dict, ex: Execution, rec: StepRecord) -> tuple[dict, dict]:
        logfile = ex.folder / "logs" / f"{step.name}.log"
        job_name = f"pipelines-{ex.id}-{step.name}"[:63].rstrip("-")
        try:
            if step.type in JOB_TYPES:
                kind = "processing-job" if step.type == "Processing" else "training-job"
                job = containers.Job(job_name, f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{kind}/{job_name.lower()}",
                                     ex.folder / "jobs" / step.name / f"attempt-{rec.AttemptCount}" / "opt_ml",
                                     logfile, self.storage)
                if step.type == "Processing":
                    return containers.run_processing(args, job), {"ProcessingJob": {"Arn": job.arn}}
                return containers.run_training(args, job), {"TrainingJob": {"Arn": job.arn}}
            if step.type == "Model":
                name = f"{self.pipeline}-{ex.id}-{step.name}"[:63]
                r = self.registry.create_model(self.storage, name, args)
                return self.registry.describe(r), {"Model": {"Arn": r["ModelArn"]}}
            if step.type == "RegisterModel":
                r = self.registry.create_model_package(self.storage, args, self._metrics(args))
                return self.registry.describe(r), {"RegisterModel": {"Arn": r["ModelPackageArn"]}}
            if step.type == "EndpointConfig":
                r = self.registry.create_endpoint_config(args)
                return r, {"EndpointConfig": {"Arn": r["EndpointConfigArn"]}}
            if step.type == "Endpoint":
                r = self._deploy(args, logfile)
                return r, {"Endpoint": {"Arn": r["EndpointArn"]}}
        except JobFailed as e:
            raise _StepFailed(e.reason, e.exception_type, e.log_tail) from None
        except StorageError as e:
            raise _StepFailed(str(e), containers.SERVICE) from None
        except (RegistryError, FileNotFoundError, KeyError, RuntimeError) as e:
            raise _StepFailed(f"{type(e).__name__}: {e}") from None
        raise _StepFailed(f"unsupported step type {step.type}")

    def _metrics(self, args: dict) -> dict:
        """The model quality statistics attached to a package, read now (kept with the version)."""
        uri = (((args.get("ModelMetrics") or {}).get("ModelQuality") or {}).get("Statistics") or {}).get("S3Uri")
        if not uri:
            return {}
        try:
            return json.loads(self.storage.get_bytes(uri))
        except (OSError, ValueError) as e:
            raise RegistryError(f"model metrics at {uri}: {e}") from None

    def _deploy(self, args: dict, logfile: Path) -> dict:
        name, config = args.get("EndpointName"), args.get("EndpointConfigName")
        if not name or not config:
            raise RegistryError("Endpoint needs EndpointName and EndpointConfigName")
        cfg = self.registry.endpoint_config(config)
        model = cfg["ProductionVariants"][0]["ModelName"]
        old = None
        with contextlib.suppress(RegistryError):
            old = self.registry.endpoint(name)
        info = serve.start_background(self.home, model, logfile.with_name(f"endpoint-{name}.log"))
        rec = {"EndpointName": name, "EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{name.lower()}",
               "EndpointConfigName": config, "EndpointStatus": "InService", "Url": info["url"],
               "Pid": info["pid"], "ModelName": model, "CreationTime": _now()}
        # blue/green: the new server answers, the record points to it, then the old one drains and goes
        self.registry.save_endpoint(rec)
        if old and old.get("Pid") and old.get("Pid") != info["pid"] and serve.alive(int(old["Pid"])):
            time.sleep(serve.SWITCH_GRACE)  # a client that read the old address just now still gets through
            serve.stop(int(old["Pid"]))
        return rec

    def _property_files(self, step: definition.Step, props: dict) -> dict[str, str]:
        outs = {o["OutputName"]: o["S3Output"]["S3Uri"]
                for o in (props.get("ProcessingOutputConfig") or {}).get("Outputs", []) if "S3Output" in o}
        files = {}
        for pf in step.property_files:
            base = outs.get(pf.get("OutputName"))
            if base is None:
                raise _StepFailed(f"property file {pf.get('PropertyFileName')}: no output named "
                                  f"{pf.get('OutputName')!r}")
            files[pf["PropertyFileName"]] = f"{base.rstrip('/')}/{pf['FilePath'].lstrip('/')}"
        return files

    # --- cache
    def _cache_key(self, step: definition.Step, ctx: Context) -> str:
        """Arguments with execution variables left symbolic (an execution id must not defeat the
        cache) and step references resolved, plus a fingerprint of the S3 inputs."""
        symbolic = Context(ctx.parameters, {k: f"{{Execution.{k}}}" for k in ctx.execution}, ctx.properties,
                           ctx.read_json, ctx.property_files)
        args = symbolic.resolve(_without_branches(step))
        inputs = [i["S3Input"]["S3Uri"] for i in args.get("ProcessingInputs") or [] if "S3Input" in i]
        inputs += [c["DataSource"]["S3DataSource"]["S3Uri"] for c in args.get("InputDataConfig") or []
                   if "S3DataSource" in (c.get("DataSource") or {})]
        hp = args.get("HyperParameters") or {}
        if hp.get("sagemaker_submit_directory"):
            inputs.append(str(hp["sagemaker_submit_directory"]).strip('"'))
        prints = {}
        for uri in inputs:
            try:
                prints[uri] = self.storage.fingerprint(uri) if "{Execution." not in uri else "?"
            except (OSError, StorageError):
                prints[uri] = "missing"
        doc = json.dumps({"type": step.type, "args": args, "inputs": prints}, sort_keys=True, default=str)
        return hashlib.sha256(doc.encode()).hexdigest()[:32]

    def _cache_path(self, step: definition.Step, key: str) -> Path:
        return self.home / "cache" / self.pipeline / step.name / f"{key}.json"

    def _cache_hit(self, step: definition.Step, key: str, rec: StepRecord, ex: Execution, ctx: Context) -> bool:
        p = self._cache_path(step, key)
        if not p.is_file():
            return False
        entry = json.loads(p.read_text())
        age = datetime.now(UTC) - datetime.fromisoformat(entry["time"])
        if step.cache.get("ExpireAfter") and age > parse_duration(step.cache["ExpireAfter"]):
            return False
        for uri in entry.get("outputs", []):  # the results must still be there
            if not self.storage.list(uri):
                return False
        ex.properties[step.name] = entry["properties"]
        ctx.property_files[step.name] = entry.get("property_files", {})
        rec.CacheHitResult = {"SourcePipelineExecutionArn": entry["execution"]}
        rec.Metadata = entry.get("metadata", {})
        return True

    def _cache_store(self, step: definition.Step, key: str, ex: Execution, props: dict, files: dict) -> None:
        outputs = [o["S3Output"]["S3Uri"] for o in (props.get("ProcessingOutputConfig") or {}).get("Outputs", [])
                   if "S3Output" in o]
        if "ModelArtifacts" in props:
            outputs.append(props["ModelArtifacts"]["S3ModelArtifacts"])
        entry = {"time": datetime.now(UTC).isoformat(), "execution": ex.arn, "properties": props,
                 "property_files": files, "outputs": outputs, "metadata": ex.step(step.name).Metadata}
        p = self._cache_path(step, key)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(entry, indent=2, default=str))


def _without_branches(step: definition.Step) -> Any:
    if step.type == "Condition":
        return {k: v for k, v in step.arguments.items() if k not in ("IfSteps", "ElseSteps")}
    return step.arguments


def load_execution(home: Path, pipeline: str, execution_id: str | None = None) -> dict:
    """The saved record of an execution (the latest if no id): describe + steps."""
    base = home / "executions" / pipeline
    if execution_id is None:
        runs = sorted(base.glob("*/execution.json"), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise ConfigError("--pipeline-name", f"no executions of {pipeline!r} under {home}")
        folder = runs[-1].parent
    else:
        folder = base / execution_id
    return {**json.loads((folder / "execution.json").read_text()),
            **json.loads((folder / "steps.json").read_text())}
