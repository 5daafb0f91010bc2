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
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlprep.awsnames import role_arn
from mlprep.deploy import asl, bundle, costs
from mlprep.errors import ConfigError
from mlprep.pipeline import staging

ROOT = Path(__file__).resolve().parents[2]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")


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


def write_plan(out: str | Path, *, job_config: str | Path, spec: str | Path,
               pipeline_module: str = "pipelines.fraud.pipeline", target: Target | None = None,
               sizes: costs.Sizes | None = None, prices: str | Path | None = None,
               flink_connector_jar: str | Path | None = None) -> dict[str, Any]:
    target, sizes = target or Target(), sizes or costs.Sizes()
    target.check()
    if flink_connector_jar is not None and not str(flink_connector_jar).endswith(".jar"):
        raise ConfigError("--flink-connector-jar", f"not a .jar file: {flink_connector_jar}")
    if flink_connector_jar is not None and not Path(flink_connector_jar).is_file():
        raise ConfigError("--flink-connector-jar", f"no such file: {flink_connector_jar}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from mlprep.batch.glue import export
    from mlprep.stream.flink import Endpoint, compile_sql
    from mlprep.stream.spec import load_spec
    from mlprep.yamlconf import read_mapping

    job_raw = read_mapping(str(job_config), "job config", "--job")
    fspec = load_spec(spec)
    p = target.prefix
    names = {"glue_job": f"{p}-{job_raw['name']}", "flink_app": f"{p}-{fspec.name}".replace("_", "-"),
             "events_stream": f"{p}-events", "features_stream": f"{p}-features",
             "pipeline": f"{p}-fraud", "state_machine": f"{p}-pipeline", **target.names}
    code_prefix = f"{p}/code"

    glue = export(job_config, out / "glue", role=target.glue_role, job_name=names["glue_job"],
                  worker_type=sizes.glue_worker_type, workers=sizes.glue_workers)
    # code goes to content-hashed keys: the job points at the exact script and wheel it was planned with
    script = staging.bundle(glue["script"].read_bytes(), target.bucket, f"{code_prefix}/glue", glue["script"].name)
    whl = staging.bundle(bundle.wheel(), target.bucket, f"{code_prefix}/wheels", bundle.wheel_name())
    job = json.loads(glue["job"].read_text())
    job["Command"]["ScriptLocation"] = script.uri
    job["DefaultArguments"]["--additional-python-modules"] = whl.uri
    glue["job"].write_text(json.dumps(job, indent=2) + "\n")

    arn = f"arn:aws:kinesis:{target.region}:{target.account}:stream"
    sql = compile_sql(fspec, Endpoint("kinesis", stream_arn=f"{arn}/{names['events_stream']}", region=target.region),
                      Endpoint("kinesis", stream_arn=f"{arn}/{names['features_stream']}", region=target.region),
                      sizes.flink_parallelism)
    (out / "flink").mkdir(exist_ok=True)
    sql_path = out / "flink" / f"{fspec.name}.sql"
    sql_path.write_text(sql)
    flink_code = staging.bundle(bundle.flink_zip(sql, sql_path.name, flink_connector_jar), target.bucket,
                                f"{code_prefix}/flink", f"{fspec.name}.zip")
    run_options = {"python": "main.py"}
    if flink_connector_jar is not None:
        run_options["jarfile"] = f"lib/{Path(flink_connector_jar).name}"
    app = {"ApplicationName": names["flink_app"], "RuntimeEnvironment": "FLINK-1_20",
           "ServiceExecutionRole": target.flink_role,
           "ApplicationConfiguration": {
               "ApplicationCodeConfiguration": {"CodeContentType": "ZIPFILE", "CodeContent": {"S3ContentLocation": {
                   "BucketARN": f"arn:aws:s3:::{target.bucket}",
                   "FileKey": flink_code.uri.split("/", 3)[3]}}},
               "FlinkApplicationConfiguration": {
                   "CheckpointConfiguration": {"ConfigurationType": "CUSTOM", "CheckpointingEnabled": True,
                                               "CheckpointInterval": 60_000, "MinPauseBetweenCheckpoints": 5_000},
                   "ParallelismConfiguration": {"ConfigurationType": "CUSTOM", "Parallelism": sizes.flink_parallelism,
                                                "ParallelismPerKPU": 1, "AutoScalingEnabled": False},
                   "MonitoringConfiguration": {"ConfigurationType": "CUSTOM", "MetricsLevel": "APPLICATION",
                                               "LogLevel": "INFO"}},
               "EnvironmentProperties": {"PropertyGroups": [
                   {"PropertyGroupId": "kinesis.analytics.flink.run.options", "PropertyMap": run_options},
                   {"PropertyGroupId": "mlprep", "PropertyMap": {"sql": sql_path.name}}]}},
           "Tags": [{"Key": "mlprep:spec", "Value": fspec.name}]}
    (out / "flink" / "application.json").write_text(json.dumps(app, indent=2) + "\n")

    sys.path.insert(0, str(ROOT))
    from pipelines.get_pipeline_definition import write as write_definition

    definition = write_definition(out / "sagemaker" / f"{names['pipeline']}.json", pipeline_module,
                                  {"default_bucket": target.bucket, "region": target.region,
                                   "role": target.sagemaker_role, "pipeline_name": names["pipeline"]})

    declared = list(job_raw.get("parameters") or {})
    machine = asl.state_machine(names["glue_job"], names["pipeline"], declared, ["FeaturesUri", "LabelsUri"])
    asl.check(machine, "stepfunctions/state_machine.json")
    (out / "stepfunctions").mkdir(exist_ok=True)
    (out / "stepfunctions" / "state_machine.json").write_text(json.dumps(machine, indent=2) + "\n")
    log_group = f"/aws/vendedlogs/states/{names['state_machine']}"
    log_arn = f"arn:aws:logs:{target.region}:{target.account}:log-group:{log_group}:*"
    create = {"name": names["state_machine"], "roleArn": target.states_role, "type": "STANDARD",
              "definition": "<stepfunctions/state_machine.json>",
              "loggingConfiguration": {"level": "ERROR", "includeExecutionData": False,
                                       "destinations": [{"cloudWatchLogsLogGroup": {"logGroupArn": log_arn}}]},
              "tags": [{"key": "mlprep:plan", "value": p}]}
    (out / "stepfunctions" / "create_state_machine.json").write_text(json.dumps(create, indent=2) + "\n")

    code = [script, whl, flink_code]
    staging.write_bundles(out / "code", code)

    price_table = costs.load_prices(prices or ROOT / "conf" / "deploy" / "prices.yaml")
    bill = costs.estimate(sizes, price_table)
    plan = {"target": {k: v for k, v in vars(target).items() if k != "names"}, "names": {**names, "log_group": log_group},
            "flink_connector_jar": Path(flink_connector_jar).name if flink_connector_jar else None,
            "code": {"glue_script": script.uri, "mlprep_wheel": whl.uri, "flink_zip": flink_code.uri,
                     "pipeline": [b.uri for b in staging.read_sidecar(definition)]},
            "sizes": costs.as_dict(sizes), "costs_per_day": bill,
            "total_usd_per_day": round(sum(r["usd_per_day"] for r in bill), 2),
            "files": {"glue_script": str(glue["script"].relative_to(out)), "glue_job": str(glue["job"].relative_to(out)),
                      "flink_sql": str(sql_path.relative_to(out)), "flink_application": "flink/application.json",
                      "pipeline_definition": str(definition.relative_to(out)),
                      "state_machine": "stepfunctions/state_machine.json"},
            "resources": [
                {"service": "s3", "kind": "bucket", "name": target.bucket},
                {"service": "kinesis", "kind": "stream", "name": names["events_stream"], "shards": sizes.kinesis_shards},
                {"service": "kinesis", "kind": "stream", "name": names["features_stream"], "shards": sizes.kinesis_shards},
                {"service": "s3", "kind": "code", "name": f"{len(code) + len(staging.read_sidecar(definition))} "
                                                          f"objects under s3://{target.bucket}/{code_prefix}/"},
                {"service": "glue", "kind": "job", "name": names["glue_job"]},
                {"service": "kinesisanalyticsv2", "kind": "application", "name": names["flink_app"]},
                {"service": "sagemaker", "kind": "pipeline", "name": names["pipeline"]},
                {"service": "logs", "kind": "log group", "name": log_group},
                {"service": "stepfunctions", "kind": "state machine", "name": names["state_machine"]}]}
    (out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    (out / "SUMMARY.md").write_text(_summary(plan))
    return plan


def _summary(plan: dict[str, Any]) -> str:
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
              "## Cost per day (on-demand, from conf/deploy/prices.yaml)", "",
              "| item | quantity / day | unit USD | USD / day |", "| --- | --- | ---: | ---: |"]
    lines += [f"| {r['item']} | {r['quantity']} | {r['unit_usd']:g} | {r['usd_per_day']:.2f} |"
              for r in plan["costs_per_day"]]
    lines += [f"| **total** | | | **{plan['total_usd_per_day']:.2f}** |", ""]
    return "\n".join(lines)
