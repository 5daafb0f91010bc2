"""``mlprep deploy plan``: everything a deployment creates, written to a folder and checked,
before anything is created.

    <out>/glue/<job>.py, <job>.job.json           the batch job as a Glue job (CreateJob)
    <out>/flink/<spec>.sql, application.json      the feature spec for Managed Flink (CreateApplication)
    <out>/sagemaker/<pipeline>.json, .code/       the pipeline definition and its staged code
    <out>/stepfunctions/state_machine.json        ASL: Glue job -> pipeline, with Retry/Catch/timeouts
    <out>/stepfunctions/create_state_machine.json CreateStateMachine
    <out>/code/                                   code to upload: Glue script, mlprep wheel, Flink zip
                                                  (manifest.json: content-hashed s3:// keys -> sha256)
    <out>/plan.json                               resources, names, roles, sizes, costs
    <out>/SUMMARY.md                              one page: what will be created, what it costs per day

No credentials are read or written: the plan holds names, ARNs and code only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlprep.awsnames import role_arn
from mlprep.deploy import asl, bundle, costs
from mlprep.errors import ConfigError
from mlprep.pipeline import build, staging

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
# looked for in the current folder when not given (the demo's layout)
DEFAULT_JOB = "conf/batch/transactions.yaml"
DEFAULT_SPEC = "conf/features/transactions.yaml"
FACTORY_KWARGS = ("default_bucket", "region", "role", "pipeline_name")  # what a pipeline factory is given
PIPELINE_PARAMETERS = ["FeaturesUri", "LabelsUri"]  # what the state machine hands the pipeline


@dataclass
class Target:
    """Where and as whom: account region, bucket, roles and resource names."""

    region: str = "us-east-1"
    bucket: str = "mlprep-demo"
    glue_role: str = "arn:aws:iam::123456789012:role/mlprep-glue"
    flink_role: str = "arn:aws:iam::123456789012:role/mlprep-flink"
    sagemaker_role: str = "arn:aws:iam::123456789012:role/mlprep-sagemaker"
    states_role: str = "arn:aws:iam::123456789012:role/mlprep-states"
    prefix: str = "mlprep"
    names: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        accounts = {role_arn(getattr(self, f), f"--{f.replace('_', '-')}")
                    for f in ("glue_role", "flink_role", "sagemaker_role", "states_role")}
        if len(accounts) > 1:
            raise ConfigError("--*-role", f"roles of different accounts: {sorted(accounts)}")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", self.bucket):
            raise ConfigError("--bucket", f"not an S3 bucket name: {self.bucket!r}")
        if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", self.region):
            raise ConfigError("--region", f"not an AWS region: {self.region!r}")
        if not _NAME.match(self.prefix):
            raise ConfigError("--prefix", f"letters, digits, '-', '_', '.': {self.prefix!r}")

    @property
    def account(self) -> str:
        return role_arn(self.glue_role, "--glue-role")


def write_plan(out: str | Path, *, job_config: str | Path | None = None, spec: str | Path | None = None,
               pipeline: str | Path | None = None, target: Target | None = None,
               sizes: costs.Sizes | None = None, prices: str | Path | None = None,
               flink_connector_jar: str | Path | None = None) -> dict[str, Any]:
    """Write every artifact of a deployment into ``out`` and return plan.json's content.

    ``job_config``, ``spec`` and ``pipeline`` (a ``mlprep.pipeline.build`` reference) default to
    the demo's files in the current folder; ``prices`` to mlprep's price table."""
    target, sizes = target or Target(), sizes or costs.Sizes()
    target.check()
    sizes.check()
    _check_jar(flink_connector_jar)
    _name_what_is_missing(job_config, spec, pipeline)
    job_config = _given_or_default(job_config, DEFAULT_JOB, "--job", "job config")
    spec = _given_or_default(spec, DEFAULT_SPEC, "--spec", "feature spec")
    source = _pipeline(pipeline, target)
    from mlprep.stream.spec import load_spec
    from mlprep.yamlconf import read_mapping

    job_raw = read_mapping(str(job_config), "job config", "--job")
    fspec = load_spec(spec)
    ref = source if isinstance(source, build.Ref) else source.ref
    names = _names(target, job_raw["name"], fspec.name, ref)
    pipeline_built = _built(source, target, names)  # before anything is written: a factory may fail
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    glue_files, glue_code = _glue(out, job_config, target, sizes, names)
    sql_path, flink_code = _flink(out, fspec, target, sizes, names, flink_connector_jar)
    definition = _sagemaker(out, pipeline_built, names)
    log_group = _state_machine(out, target, names, list(job_raw.get("parameters") or {}))
    code = [*glue_code, flink_code]
    staging.write_bundles(out / "code", code)
    bill = costs.estimate(sizes, costs.load_prices(prices))
    files = {"glue_script": str(glue_files["script"].relative_to(out)),
             "glue_job": str(glue_files["job"].relative_to(out)), "flink_sql": str(sql_path.relative_to(out)),
             "flink_application": "flink/application.json", "pipeline_definition": str(definition.relative_to(out)),
             "state_machine": "stepfunctions/state_machine.json"}
    plan = _plan_doc(target, sizes, {**names, "log_group": log_group}, flink_connector_jar, code,
                     staging.read_sidecar(definition), bill, files)
    (out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    (out / "SUMMARY.md").write_text(_summary(plan, prices))
    return plan


def _check_jar(jar: str | Path | None) -> None:
    if jar is not None and not str(jar).endswith(".jar"):
        raise ConfigError("--flink-connector-jar", f"not a .jar file: {jar}")
    if jar is not None and not Path(jar).is_file():
        raise ConfigError("--flink-connector-jar", f"no such file: {jar}")


def _given_or_default(given: str | Path | None, default: str, option: str, what: str) -> str | Path:
    """``given``, or ``default`` if the current folder has it (else a ConfigError naming ``option``)."""
    if given is not None:
        return given
    if not Path(default).is_file():
        raise ConfigError(option, f"no {what} given and {default} is not in the current folder: pass {option} PATH")
    return default


def _name_what_is_missing(job_config: Any, spec: Any, pipeline: Any) -> None:
    """All the inputs neither given nor in the current folder, in one line."""
    missing = [f"{option} {what}" for given, default, option, what in (
        (job_config, DEFAULT_JOB, "--job", "PATH"), (spec, DEFAULT_SPEC, "--spec", "PATH"),
        (pipeline, build.DEFAULT_REF.split(":")[0], "--pipeline", "REF")) if given is None and not Path(default).is_file()]
    if len(missing) > 1:
        raise ConfigError("deploy plan", f"the demo's files are not in the current folder: pass {' '.join(missing)}")


def _prefixed(prefix: str, name: str) -> str:
    return name if name.startswith(f"{prefix}-") else f"{prefix}-{name}"


def _names(target: Target, job: str, spec: str, ref: build.Ref) -> dict[str, str]:
    """Every resource's name: the prefix, then the job's, spec's or pipeline's own name."""
    p = target.prefix
    return {"glue_job": f"{p}-{job}", "flink_app": f"{p}-{spec}".replace("_", "-"),
            "events_stream": f"{p}-events", "features_stream": f"{p}-features",
            "pipeline": _prefixed(p, ref.name), "state_machine": f"{p}-pipeline", **target.names}


def _glue(out: Path, job_config: str | Path, target: Target, sizes: costs.Sizes,
          names: dict[str, str]) -> tuple[dict[str, Path], list[staging.CodeBundle]]:
    """The batch job as a Glue job: script and CreateJob request, pointing at the exact script
    and mlprep wheel it was planned with (content-hashed keys)."""
    from mlprep.batch.glue import export

    code_prefix = f"{target.prefix}/code"
    glue = export(job_config, out / "glue", role=target.glue_role, job_name=names["glue_job"],
                  worker_type=sizes.glue_worker_type, workers=sizes.glue_workers)
    script = staging.bundle(glue["script"].read_bytes(), target.bucket, f"{code_prefix}/glue", glue["script"].name)
    whl = staging.bundle(bundle.wheel(), target.bucket, f"{code_prefix}/wheels", bundle.wheel_name())
    job = json.loads(glue["job"].read_text())
    job["Command"]["ScriptLocation"] = script.uri
    job["DefaultArguments"]["--additional-python-modules"] = whl.uri
    glue["job"].write_text(json.dumps(job, indent=2) + "\n")
    return glue, [script, whl]


def _flink(out: Path, fspec: Any, target: Target, sizes: costs.Sizes, names: dict[str, str],
           jar: str | Path | None) -> tuple[Path, staging.CodeBundle]:
    """The feature spec as Flink SQL between the two Kinesis streams, its application zip and
    CreateApplication request."""
    from mlprep.stream.flink import Endpoint, compile_sql

    arn = f"arn:aws:kinesis:{target.region}:{target.account}:stream"
    sql = compile_sql(fspec, Endpoint("kinesis", stream_arn=f"{arn}/{names['events_stream']}", region=target.region),
                      Endpoint("kinesis", stream_arn=f"{arn}/{names['features_stream']}", region=target.region),
                      sizes.flink_parallelism)
    (out / "flink").mkdir(exist_ok=True)
    sql_path = out / "flink" / f"{fspec.name}.sql"
    sql_path.write_text(sql)
    code = staging.bundle(bundle.flink_zip(sql, sql_path.name, jar), target.bucket,
                          f"{target.prefix}/code/flink", f"{fspec.name}.zip")
    app = _flink_application(names["flink_app"], fspec.name, sql_path.name, target, sizes, code, jar)
    (out / "flink" / "application.json").write_text(json.dumps(app, indent=2) + "\n")
    return sql_path, code


def _flink_application(name: str, spec: str, sql_name: str, target: Target, sizes: costs.Sizes,
                       code: staging.CodeBundle, jar: str | Path | None) -> dict[str, Any]:
    """Managed Flink's CreateApplication request."""
    run_options = {"python": "main.py"}
    if jar is not None:
        run_options["jarfile"] = f"lib/{Path(jar).name}"
    return {"ApplicationName": name, "RuntimeEnvironment": "FLINK-1_20",
            "ServiceExecutionRole": target.flink_role,
            "ApplicationConfiguration": {
                "ApplicationCodeConfiguration": {"CodeContentType": "ZIPFILE", "CodeContent": {"S3ContentLocation": {
                    "BucketARN": f"arn:aws:s3:::{target.bucket}",
                    "FileKey": code.uri.split("/", 3)[3]}}},
                "FlinkApplicationConfiguration": {
                    "CheckpointConfiguration": {"ConfigurationType": "CUSTOM", "CheckpointingEnabled": True,
                                                "CheckpointInterval": 60_000, "MinPauseBetweenCheckpoints": 5_000},
                    "ParallelismConfiguration": {"ConfigurationType": "CUSTOM",
                                                 "Parallelism": sizes.flink_parallelism,
                                                 "ParallelismPerKPU": 1, "AutoScalingEnabled": False},
                    "MonitoringConfiguration": {"ConfigurationType": "CUSTOM", "MetricsLevel": "APPLICATION",
                                                "LogLevel": "INFO"}},
                "EnvironmentProperties": {"PropertyGroups": [
                    {"PropertyGroupId": "kinesis.analytics.flink.run.options", "PropertyMap": run_options},
                    {"PropertyGroupId": "mlprep", "PropertyMap": {"sql": sql_name}}]}},
            "Tags": [{"Key": "mlprep:spec", "Value": spec}]}


def _pipeline(pipeline: str | Path | None, target: Target) -> build.Factory | build.Ref:
    """The pipeline to deploy, checked before anything is written: a factory that takes what a
    deployment passes it, or a built definition for this target (bucket, region, account)."""
    ref = build.parse_ref(pipeline if pipeline is not None else build.default_ref())
    if ref.kind == "definition":
        _check_definition(Path(ref.target), target)
        return ref
    factory = build.load_factory(ref)
    missing = [k for k in FACTORY_KWARGS if not build.accepts(factory, k)]
    if missing:
        raise ConfigError("--pipeline", f"{ref.target}: {ref.function}() takes no {', '.join(missing)} "
                                        f"(a deployment passes {', '.join(FACTORY_KWARGS)})")
    return factory


def _built(source: build.Factory | build.Ref, target: Target, names: dict[str, str]
           ) -> tuple[str, list[staging.CodeBundle]]:
    """The pipeline definition and its code: built by its factory for this target, or a built
    definition as it is (checked to be for this target)."""
    if isinstance(source, build.Ref):
        return build.build(source)
    kwargs = dict(zip(FACTORY_KWARGS, (target.bucket, target.region, target.sagemaker_role, names["pipeline"]),
                      strict=True))
    return source.build(kwargs)


def _sagemaker(out: Path, built: tuple[str, list[staging.CodeBundle]], names: dict[str, str]) -> Path:
    """``sagemaker/<pipeline>.json`` and its staged code beside it."""
    path = out / "sagemaker" / f"{names['pipeline']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(built[0])
    staging.write_sidecar(path, built[1])
    return path


def _check_definition(definition: Path, target: Target) -> None:
    """A built definition: SageMaker's JSON with its ``.code/`` sidecar, built for this target."""
    if not definition.is_file():
        raise ConfigError("--pipeline", f"no such definition: {definition}")
    try:
        doc = json.loads(definition.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ConfigError("--pipeline", f"{definition} is not JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("Steps"), list):
        raise ConfigError("--pipeline", f"{definition} is not a pipeline definition (no Steps)")
    code = staging.sidecar_dir(definition)
    try:
        bundles = staging.read_sidecar(definition) if (code / "manifest.json").is_file() else None
    except (OSError, ValueError):
        bundles = None
    if bundles is None:
        raise ConfigError("--pipeline", f"{definition}: its code folder {code.name}/ is missing or damaged "
                                        "(copy it with the definition, or build again)")
    text = json.dumps(doc)
    found = {"bucket": {b.uri.split("/")[2] for b in bundles} - {target.bucket},
             "region": set(re.findall(r"\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws", text)) - {target.region},
             "account": set(re.findall(r"arn:aws:iam::(\d{12}):role/", text)) - {target.account}}
    for what, wanted, option in (("bucket", target.bucket, "default_bucket"), ("region", target.region, "region"),
                                 ("account", target.account, "role")):
        if found[what]:
            raise ConfigError("--pipeline", f"{definition.name} was built for {what} {sorted(found[what])[0]}, the "
                                            f"plan's is {wanted}: build it with this {option}, or plan with its {what}")


def _state_machine(out: Path, target: Target, names: dict[str, str], job_arguments: list[str]) -> str:
    """ASL (Glue job, then the pipeline) checked, and its CreateStateMachine request; returns the
    log group's name."""
    machine = asl.state_machine(names["glue_job"], names["pipeline"], job_arguments, PIPELINE_PARAMETERS)
    asl.check(machine, "stepfunctions/state_machine.json")
    (out / "stepfunctions").mkdir(exist_ok=True)
    (out / "stepfunctions" / "state_machine.json").write_text(json.dumps(machine, indent=2) + "\n")
    log_group = f"/aws/vendedlogs/states/{names['state_machine']}"
    log_arn = f"arn:aws:logs:{target.region}:{target.account}:log-group:{log_group}:*"
    create = {"name": names["state_machine"], "roleArn": target.states_role, "type": "STANDARD",
              "definition": "<stepfunctions/state_machine.json>",
              "loggingConfiguration": {"level": "ERROR", "includeExecutionData": False,
                                       "destinations": [{"cloudWatchLogsLogGroup": {"logGroupArn": log_arn}}]},
              "tags": [{"key": "mlprep:plan", "value": target.prefix}]}
    (out / "stepfunctions" / "create_state_machine.json").write_text(json.dumps(create, indent=2) + "\n")
    return log_group


def _plan_doc(target: Target, sizes: costs.Sizes, names: dict[str, str], jar: str | Path | None,
              code: list[staging.CodeBundle], pipeline_code: list[staging.CodeBundle],
              bill: list[dict[str, Any]], files: dict[str, str]) -> dict[str, Any]:
    """plan.json: target, names, code keys, sizes, costs, files and the resources to create."""
    script, whl, flink_code = code
    return {"target": {k: v for k, v in vars(target).items() if k != "names"}, "names": names,
            "flink_connector_jar": Path(jar).name if jar else None,
            "code": {"glue_script": script.uri, "mlprep_wheel": whl.uri, "flink_zip": flink_code.uri,
                     "pipeline": [b.uri for b in pipeline_code]},
            "sizes": costs.as_dict(sizes), "costs_per_day": bill,
            "total_usd_per_day": round(sum(r["usd_per_day"] for r in bill), 2),
            "files": files, "resources": _resources(target, sizes, names, len(code) + len(pipeline_code))}


def _resources(target: Target, sizes: costs.Sizes, names: dict[str, str], objects: int) -> list[dict[str, Any]]:
    return [
        {"service": "s3", "kind": "bucket", "name": target.bucket},
        {"service": "kinesis", "kind": "stream", "name": names["events_stream"], "shards": sizes.kinesis_shards},
        {"service": "kinesis", "kind": "stream", "name": names["features_stream"], "shards": sizes.kinesis_shards},
        {"service": "s3", "kind": "code", "name": f"{objects} objects under s3://{target.bucket}/{target.prefix}/code/"},
        {"service": "glue", "kind": "job", "name": names["glue_job"]},
        {"service": "kinesisanalyticsv2", "kind": "application", "name": names["flink_app"]},
        {"service": "sagemaker", "kind": "pipeline", "name": names["pipeline"]},
        {"service": "logs", "kind": "log group", "name": names["log_group"]},
        {"service": "stepfunctions", "kind": "state machine", "name": names["state_machine"]}]


def _summary(plan: dict[str, Any], prices: str | Path | None = None) -> str:
    t, n = plan["target"], plan["names"]
    lines = [f"# mlprep deployment plan ({t['region']}, bucket {t['bucket']})", "",
             "## What will be created", ""]
    lines += [f"- {r['service']} {r['kind']} `{r['name']}`" for r in plan["resources"]]
    lines += ["", f"The state machine `{n['state_machine']}` runs Glue job `{n['glue_job']}` (startJobRun.sync), "
              f"then starts SageMaker pipeline `{n['pipeline']}` and polls it every minute; transient errors are "
              "retried with backoff, any other error ends in DeploymentFailed with its cause, every task has a "
              "timeout. The Flink application reads Kinesis stream "
              f"`{n['events_stream']}` and writes features to `{n['features_stream']}`.", "",
              "Incremental runs: the batch job keeps mlprep's bookmark with its output (`_mlprep/`); Glue's own "
              "job bookmarks are off, as they only track GlueContext sources, which mlprep does not read through.",
              "",
              "Code is uploaded to content-hashed keys (plan.json `code`), so an unchanged plan uploads nothing.", ""]
    if not plan["flink_connector_jar"]:
        lines += ["**Before the Flink application can run**: Managed Flink needs the Kinesis SQL connector jar "
                  "(flink-sql-connector-kinesis for Flink 1.20) inside the application zip; plan again with "
                  "`--flink-connector-jar PATH`.", ""]
    lines += [
              f"## Cost per day (on-demand, from {prices or costs.PACKAGED_PRICES})", "",
              "| item | quantity / day | unit USD | USD / day |", "| --- | --- | ---: | ---: |"]
    lines += [f"| {r['item']} | {r['quantity']} | {r['unit_usd']:g} | {r['usd_per_day']:.2f} |"
              for r in plan["costs_per_day"]]
    lines += [f"| **total** | | | **{plan['total_usd_per_day']:.2f}** |", ""]
    return "\n".join(lines)
