"""`mlprep deploy apply|diff|status|destroy` end to end against moto's server on 127.0.0.1:
create, a second apply that changes nothing, updates, problems named before anything is
created (missing role, wrong account, denied permission with moto's IAM enforcement), a call
the endpoint does not implement named with what was done before it, destroy; the shipped code
(wheel, Flink zip) checked with real tools."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as md
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import boto3
import pytest

from mlprep.deploy import bundle
from mlprep.deploy.apply import DeployError, Deployment
from mlprep.deploy.costs import Sizes
from mlprep.deploy.plan import Target, write_plan
from tests.conftest import ROOT, _free_port
from tests.oracle import assert_same_table

ACCOUNT = "123456789012"
SECRET = "deploy-secret-value-77"


def _target(prefix: str, account: str = ACCOUNT, **roles) -> Target:
    default = {f"{r}_role": f"arn:aws:iam::{account}:role/mlprep-{r}" for r in ("glue", "flink", "sagemaker", "states")}
    return Target(bucket=f"{prefix}-bucket", prefix=prefix, **{**default, **roles})


def _plan(tmp_path_factory, name: str, target: Target, sizes: Sizes | None = None) -> Path:
    out = tmp_path_factory.mktemp(name)
    write_plan(out, job_config=ROOT / "conf/batch/transactions.yaml", spec=ROOT / "conf/features/transactions.yaml",
               target=target, sizes=sizes)
    return out


def _roles(url: str, env: dict | None = None, names=("glue", "flink", "sagemaker", "states", "sagemaker-v2",
                                                     "states-v2")) -> None:
    iam = boto3.client("iam", endpoint_url=url, **(env or {}))
    for n in names:
        with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
            iam.create_role(RoleName=f"mlprep-{n}", AssumeRolePolicyDocument="{}")


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlprep", "deploy", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=300)


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    base = _target("e2e")
    return {"base": _plan(tmp_path_factory, "base", base),
            "roles": _plan(tmp_path_factory, "roles", _target(
                "e2e", sagemaker_role=f"arn:aws:iam::{ACCOUNT}:role/mlprep-sagemaker-v2",
                states_role=f"arn:aws:iam::{ACCOUNT}:role/mlprep-states-v2")),
            "sizes": _plan(tmp_path_factory, "sizes", _target(
                "e2e", sagemaker_role=f"arn:aws:iam::{ACCOUNT}:role/mlprep-sagemaker-v2",
                states_role=f"arn:aws:iam::{ACCOUNT}:role/mlprep-states-v2"),
                Sizes(glue_workers=3, kinesis_shards=2))}


def _rows(text: str) -> dict[str, str]:
    """`deploy diff/apply` lines -> {resource: action}."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"\s*(create|update|-)\s+(.+?)(\s+\(.*\))?$", line)
        if m:
            out[m.group(2)] = m.group(1)
    return out


def test_apply_is_idempotent_updates_and_destroys(moto_server, plans):
    _roles(moto_server)
    env = {"AWS_SECRET_ACCESS_KEY": SECRET}  # moto accepts any secret; it must not show up anywhere
    base, url = plans["base"], moto_server

    p = _cli("diff", str(base), "--endpoint-url", url, env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[-1]) == {"create": 9}
    assert "iam:SimulatePrincipalPolicy: not implemented by this endpoint" in p.stderr  # moto's gap, said

    p = _cli("apply", str(base), "--endpoint-url", url, env=env)
    assert p.returncode == 0, p.stderr
    assert set(_rows(p.stdout).values()) == {"create"} and len(_rows(p.stdout)) == 9
    plan = json.loads((base / "plan.json").read_text())

    # what exists is what the plan says
    s3 = boto3.client("s3", endpoint_url=url)
    manifest = json.loads((base / "code" / "manifest.json").read_text())
    for uri, digest in manifest.items():
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == digest and key.split("/")[-2] == digest[:16]
    for uri in plan["code"]["pipeline"]:
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] > 0
    job = boto3.client("glue", endpoint_url=url).get_job(JobName="e2e-transactions")["Job"]
    assert job["Command"]["ScriptLocation"] == plan["code"]["glue_script"] and job["NumberOfWorkers"] == 2
    assert job["DefaultArguments"]["--additional-python-modules"] == plan["code"]["mlprep_wheel"]
    app = boto3.client("kinesisanalyticsv2", endpoint_url=url).describe_application(
        ApplicationName="e2e-user-txn-features")["ApplicationDetail"]
    loc = app["ApplicationConfigurationDescription"]["ApplicationCodeConfigurationDescription"][
        "CodeContentDescription"]["S3ApplicationCodeLocationDescription"]
    assert f"s3://{plan['target']['bucket']}/{loc['FileKey']}" == plan["code"]["flink_zip"]
    sm = boto3.client("sagemaker", endpoint_url=url).describe_pipeline(PipelineName="e2e-fraud")
    assert json.loads(sm["PipelineDefinition"]) == json.loads((base / plan["files"]["pipeline_definition"]).read_text())
    arn = f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:e2e-pipeline"
    sfn = boto3.client("stepfunctions", endpoint_url=url)
    machine = sfn.describe_state_machine(stateMachineArn=arn)
    assert json.loads(machine["definition"]) == json.loads((base / "stepfunctions/state_machine.json").read_text())
    assert machine["loggingConfiguration"]["destinations"][0]["cloudWatchLogsLogGroup"]["logGroupArn"].endswith(
        "log-group:/aws/vendedlogs/states/e2e-pipeline:*")
    streams = boto3.client("kinesis", endpoint_url=url).list_streams()["StreamNames"]
    assert {"e2e-events", "e2e-features"} <= set(streams)

    # a second apply changes nothing (and an identical re-plan is byte-identical, so it would not either)
    p = _cli("apply", str(base), "--endpoint-url", url, env=env)
    assert p.returncode == 0 and json.loads(p.stdout.splitlines()[-1]) == {"none": 9}, p.stdout + p.stderr

    sfn.start_execution(stateMachineArn=arn, input=json.dumps({"data_dir": "s3://e2e-bucket/raw"}))
    p = _cli("status", str(base), "--endpoint-url", url, "--json", env=env)
    status = {r["resource"]: r for r in json.loads(p.stdout)}
    assert status["kinesis stream e2e-events"]["state"] == "ACTIVE, 1 shards"
    assert status["glue job e2e-transactions"]["state"] == "never run"
    assert status["state machine e2e-pipeline"]["state"].startswith("last execution ")
    assert status["s3 code 8 objects"]["state"] == "8/8 uploaded"
    assert all(r["drift"] == "" for r in status.values())

    # new roles for the pipeline and the state machine: those two are updated, nothing else
    d = Deployment(plans["roles"], url)
    changes, _ = d.diff()
    assert {c.resource: c.action for c in changes if c.action != "none"} == {
        "sagemaker pipeline e2e-fraud": "update", "state machine e2e-pipeline": "update"}
    assert "roleArn" in next(c.detail for c in changes if c.resource == "state machine e2e-pipeline")
    d.apply(echo=lambda s: None)
    assert sfn.describe_state_machine(stateMachineArn=arn)["roleArn"].endswith("role/mlprep-states-v2")
    assert {c.action for c in Deployment(plans["roles"], url).diff()[0]} == {"none"}
    # the old plan now shows drift
    drift = {r["resource"]: r["drift"] for r in Deployment(base, url).status()}
    assert drift["sagemaker pipeline e2e-fraud"] == "definition, RoleArn"

    # more shards and Glue workers: the streams are resharded; moto has no UpdateJob, which is named
    p = _cli("apply", str(plans["sizes"]), "--endpoint-url", url, env=env)
    assert p.returncode == 1
    assert "the endpoint does not implement glue:UpdateJob (to update glue job e2e-transactions)" in p.stderr
    assert "done before it: update kinesis stream e2e-events, update kinesis stream e2e-features" in p.stderr
    summary = boto3.client("kinesis", endpoint_url=url).describe_stream_summary(StreamName="e2e-events")
    assert summary["StreamDescriptionSummary"]["OpenShardCount"] == 2
    # applying again continues where it stopped: what was done is not done twice
    left = {c.resource: c.action for c in Deployment(plans["sizes"], url).diff()[0] if c.action != "none"}
    assert left == {"glue job e2e-transactions": "update"}, left
    p = _cli("apply", str(plans["sizes"]), "--endpoint-url", url, env=env)
    assert p.returncode == 1 and "done before it: nothing" in p.stderr and "update  kinesis" not in p.stdout

    # destroy: everything but the bucket; moto cannot delete a Flink application, which is named
    p = _cli("destroy", str(plans["sizes"]), "--endpoint-url", url, env=env)
    assert p.returncode == 2 and "--yes" in p.stderr
    p = _cli("destroy", str(plans["sizes"]), "--endpoint-url", url, "--yes", env=env)
    assert p.returncode == 1
    assert "the endpoint does not implement kinesisanalytics:DeleteApplication" in p.stderr
    after = {r["resource"]: r["state"] for r in Deployment(plans["sizes"], url).status()}
    assert after.pop("s3 bucket e2e-bucket") == "exists"
    assert after.pop("flink application e2e-user-txn-features").startswith("STARTING")
    assert set(after.values()) == {"absent"}, after
    assert s3.list_objects_v2(Bucket="e2e-bucket").get("KeyCount", 0) == 0  # old code versions too

    # no credentials anywhere in the plan folders
    for folder in plans.values():
        for f in folder.rglob("*"):
            if f.is_file():
                data = f.read_bytes()
                assert SECRET.encode() not in data and b"testing" not in data, f


def test_problems_are_named_before_anything_is_created(moto_server, tmp_path_factory):
    _roles(moto_server)
    other = _plan(tmp_path_factory, "acct", _target("acct", account="210987654321"))
    with pytest.raises(DeployError) as e:
        Deployment(other, moto_server).apply(echo=lambda s: None)
    assert e.value.problems == [
        "the plan's roles are in account 210987654321, the credentials are for account 123456789012"]
    norole = _plan(tmp_path_factory, "norole", _target(
        "norole", flink_role=f"arn:aws:iam::{ACCOUNT}:role/team/flink-does-not-exist"))
    with pytest.raises(DeployError) as e:
        Deployment(norole, moto_server).apply(echo=lambda s: None)
    assert e.value.problems == ["role 'flink-does-not-exist' (flink_role: arn:aws:iam::123456789012:role/team/"
                                "flink-does-not-exist) does not exist"]
    # a plan edited by hand is checked again: a broken state machine, code that is not what was planned
    sm = norole / "stepfunctions" / "state_machine.json"
    doc = json.loads(sm.read_text())
    doc["States"]["StartPipeline"]["Next"] = "Nowhere"
    sm.write_text(json.dumps(doc))
    wheel = next((norole / "code").rglob("*.whl"))
    wheel.write_bytes(wheel.read_bytes() + b"x")
    with pytest.raises(DeployError) as e:
        Deployment(norole, moto_server).apply(echo=lambda s: None)
    text = "\n".join(e.value.problems)
    assert "does not match its sha256" in text and "goes to 'Nowhere', which is not a state" in text
    buckets = {b["Name"] for b in boto3.client("s3", endpoint_url=moto_server).list_buckets()["Buckets"]}
    assert not {"acct-bucket", "norole-bucket"} & buckets
    # no credentials at all
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_CONFIG_FILE="/nonexistent",
               AWS_EC2_METADATA_DISABLED="true")
    p = subprocess.run([sys.executable, "-m", "mlprep", "deploy", "apply", str(other), "--endpoint-url", moto_server],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert p.returncode == 1 and "no AWS credentials" in p.stderr


@pytest.fixture
def iam_enforcing_moto():
    """A moto server that checks IAM policies after its first 8 requests (which make the users
    and roles below)."""
    port = _free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "8"}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            boto3.client("s3", endpoint_url=url).list_buckets()  # unauthenticated request 1
            break
        except Exception:
            time.sleep(0.1)
    admin = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
    iam = boto3.client("iam", endpoint_url=url, **admin)
    iam.create_user(UserName="deployer")
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Action": ["glue:GetJob", "states:DescribeStateMachine"], "Resource": "*"}]}
    iam.put_user_policy(UserName="deployer", PolicyName="deploy", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="deployer")["AccessKey"]
    _roles(url, admin, names=("glue", "flink", "sagemaker", "states"))
    yield url, {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    proc.kill()
    proc.wait(10)


def test_a_denied_permission_is_named_and_nothing_is_created(iam_enforcing_moto, plans):
    url, creds = iam_enforcing_moto
    p = _cli("apply", str(plans["base"]), "--endpoint-url", url, env=creds)
    assert p.returncode == 1, p.stderr
    assert "missing permission glue:GetJob (to read glue job e2e-transactions)" in p.stderr
    assert "missing permission states:DescribeStateMachine (to read state machine e2e-pipeline)" in p.stderr
    assert creds["AWS_SECRET_ACCESS_KEY"] not in p.stdout + p.stderr
    kw = {"endpoint_url": url, "aws_access_key_id": creds["AWS_ACCESS_KEY_ID"],
          "aws_secret_access_key": creds["AWS_SECRET_ACCESS_KEY"], "region_name": "us-east-1"}
    assert boto3.client("s3", **kw).list_buckets()["Buckets"] == []
    assert boto3.client("glue", **kw).list_jobs()["JobNames"] == []
    assert boto3.client("kinesis", **kw).list_streams()["StreamNames"] == []
    assert boto3.client("sagemaker", **kw).list_pipelines()["PipelineSummaries"] == []


def test_the_wheel_installs_and_declares_what_the_batch_engine_imports(tmp_path):
    whl = tmp_path / bundle.wheel_name()
    whl.write_bytes(bundle.wheel())
    assert bundle.wheel() == whl.read_bytes()  # reproducible: same code, same key
    target = tmp_path / "site"
    uv = Path(sys.executable).with_name("uv")
    subprocess.run([str(uv), "pip", "install", "-q", "--no-deps", "--target", str(target), str(whl)], check=True)
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import mlprep.batch.engines.spark, mlprep.batch.job; "
             "import mlprep; print(mlprep.__file__); "
             "import json; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", probe, str(target)], capture_output=True, text=True, check=True,
                         cwd=tmp_path).stdout.splitlines()
    assert out[0].startswith(str(target))
    dist = md.Distribution.at(next(target.glob("mlprep-*.dist-info")))
    declared = {re.split(r"[<>=~!;\[ ]", r)[0].lower() for r in dist.requires or []}
    assert declared == set(bundle.BATCH_RUNTIME)
    # every third-party module the batch engine loads comes from a declared requirement, its
    # dependencies, or Spark (which Glue provides)
    allowed_dists, todo = set(), [*declared, "pyspark"]
    while todo:
        name = todo.pop()
        if name in allowed_dists:
            continue
        allowed_dists.add(name)
        try:
            reqs = md.distribution(name).requires or []
        except md.PackageNotFoundError:
            continue
        todo += [re.split(r"[<>=~!;\[ (]", r)[0].lower().replace("_", "-") for r in reqs if "extra ==" not in r]
    # ... or is an optional import of those (pyarrow tries cloudpickle, fsspec zstandard): what
    # importing the requirements alone loads, the interpreter's start-up hooks included
    alone = ("import json, sys, duckdb, pyarrow.parquet, pandas, numpy, yaml, pydantic, fsspec.compression, s3fs, "
             "tqdm, pyspark.sql; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    baseline = set(json.loads(subprocess.run([sys.executable, "-c", alone], capture_output=True, text=True,
                                             check=True).stdout))
    owners = md.packages_distributions()
    loaded = set(json.loads(out[1])) - baseline
    third_party = {m for m in loaded if m in owners and m not in sys.stdlib_module_names and m != "mlprep"}
    stray = {m: owners[m] for m in third_party
             if not {d.lower().replace("_", "-") for d in owners[m]} & allowed_dists}
    assert stray == {}
    assert "polars" in owners and "polars" not in loaded  # the probe sees imports: the stream engine's are absent


def test_the_flink_zip_runs_its_sql_from_the_application_properties(tmp_path, plans):
    plan = json.loads((plans["base"] / "plan.json").read_text())
    zpath = plans["base"] / "code" / "s3" / plan["code"]["flink_zip"].removeprefix("s3://")
    with zipfile.ZipFile(zpath) as z:
        assert sorted(z.namelist()) == ["main.py", "user_txn_features.sql"]
        z.extractall(tmp_path / "app")
    assert (tmp_path / "app" / "main.py").read_bytes() == (ROOT / "mlprep/stream/flink_job.py").read_bytes()
    app = json.loads((plans["base"] / "flink" / "application.json").read_text())
    groups = app["ApplicationConfiguration"]["EnvironmentProperties"]["PropertyGroups"]
    (tmp_path / "props.json").write_text(json.dumps(groups))  # the file Managed Flink writes
    spec = importlib.util.spec_from_file_location("flink_main", tmp_path / "app" / "main.py")
    main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main)
    main.APPLICATION_PROPERTIES = str(tmp_path / "props.json")
    sql = Path(main.managed_script())
    assert sql == tmp_path / "app" / "user_txn_features.sql"
    statements = main.statements(sql.read_text())
    assert statements[-1].startswith("EXECUTE STATEMENT SET") and "'connector' = 'kinesis'" in sql.read_text()
    summary = (plans["base"] / "SUMMARY.md").read_text()
    assert "--flink-connector-jar" in summary  # the jar it still needs is said


def test_deploy_notebook_plans_draws_and_applies_under_papermill(moto_server, tmp_path):
    import nbformat
    import papermill as pm

    _roles(moto_server)
    os.environ["AWS_SECRET_ACCESS_KEY"] = SECRET  # what a user's environment holds; must not be written
    try:
        out_nb = tmp_path / "04.ipynb"
        pm.execute_notebook(str(ROOT / "notebooks" / "04_deploy.ipynb"), str(out_nb), parameters={
            "out_dir": str(tmp_path / "plan"), "bucket": "nb-bucket", "prefix": "nb", "apply": True,
            "endpoint_url": moto_server}, cwd=str(ROOT / "notebooks"), progress_bar=False, kernel_name="python3")
    finally:
        os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    nb = nbformat.read(out_nb, as_version=4)
    images = sum(1 for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert images == 2  # the state machine, the costs
    text = out_nb.read_text()
    assert SECRET not in text
    deployed = json.loads((tmp_path / "plan" / "deployed.json").read_text())
    assert [c["action"] for c in deployed["changes"]] == ["create"] * 9
    status = Deployment(tmp_path / "plan", moto_server).status()
    assert len(status) == 9 and all(r["state"] not in ("absent", "") for r in status), status  # every one exists
    assert all(r["drift"] == "" for r in status)  # ... exactly as planned
    job = boto3.client("glue", endpoint_url=moto_server).get_job(JobName="nb-transactions")["Job"]
    assert job["Role"] == f"arn:aws:iam::{ACCOUNT}:role/mlprep-glue"


GLUE_PYTHON = ROOT / ".venv-glue" / "bin" / "python"


def test_the_planned_glue_job_runs_on_glue_5_spark_3_5(plans, small_data, tmp_path):
    """The plan's Glue script with the plan's wheel, on Spark 3.5 / pandas 2.2 as on Glue 5.0
    (`make glue-venv`), gives the embedded engine's output and commits."""

    from mlprep.batch.job import read_output, run_job

    assert GLUE_PYTHON.exists(), "run `make glue-venv` (make test builds it)"
    plan = json.loads((plans["base"] / "plan.json").read_text())
    local = lambda uri: plans["base"] / "code" / "s3" / uri.removeprefix("s3://")  # noqa: E731
    site = tmp_path / "site"
    uv = Path(sys.executable).with_name("uv")
    subprocess.run([str(uv), "pip", "install", "-q", "--no-deps", "--target", str(site),
                    str(local(plan["code"]["mlprep_wheel"]))], check=True)
    # the environment holds what Glue 5.0 has plus the wheel's requirements, nothing else of ours
    wanted = {re.split(r"[<>=~!; ]", r)[0].lower()
              for r in md.Distribution.at(next(site.glob("mlprep-*.dist-info"))).requires}
    lines = [x.strip() for x in (ROOT / "conf/glue/requirements.in").read_text().splitlines()
             if x.strip() and not x.startswith("#")]
    assert wanted == {re.split(r"[<>=~!; ]", x)[0].lower() for x in lines} - {"pyspark"}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "glue_stub"), str(site)]),
           "PYSPARK_PYTHON": str(GLUE_PYTHON), "GLUE_STUB_COMMIT_FILE": str(tmp_path / "commit.json")}
    p = subprocess.run([str(GLUE_PYTHON), str(local(plan["code"]["glue_script"])), "--JOB_NAME", "e2e-transactions",
                        "--data_dir", str(small_data.out_dir), "--out_dir", str(tmp_path / "glue-out")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "pyspark 3.5" in subprocess.run([str(GLUE_PYTHON), "-c", "import pyspark; print('pyspark', pyspark.__version__)"],
                                           capture_output=True, text=True).stdout
    assert json.loads((tmp_path / "commit.json").read_text()) == {"job": "e2e-transactions", "state": "committed"}
    du = run_job(ROOT / "conf/batch/transactions.yaml", {"data_dir": str(small_data.out_dir),
                                                         "out_dir": str(tmp_path / "duck")}, progress=False)
    summary = json.loads(next((tmp_path / "glue-out" / "curated" / "_runs").rglob("summary.json")).read_text())
    assert summary["rows"] == du.rows and summary["engine"]["version"].startswith("3.5")
    assert_same_table(read_output(str(tmp_path / "glue-out" / "curated" / "transactions")),
                      read_output(du.summary["output"]["path"]))


def test_destroy_delete_bucket_removes_the_bucket_and_its_objects(moto_server, tmp_path_factory):
    _roles(moto_server)
    plan = _plan(tmp_path_factory, "delbucket", _target("delb"))
    assert _cli("apply", str(plan), "--endpoint-url", moto_server).returncode == 0
    s3 = boto3.client("s3", endpoint_url=moto_server)
    assert s3.list_objects_v2(Bucket="delb-bucket")["KeyCount"] > 0
    p = _cli("destroy", str(plan), "--endpoint-url", moto_server, "--yes", "--delete-bucket")
    # every resource is tried; moto cannot delete a Flink application, which is named
    assert p.returncode == 1 and "kinesisanalytics:DeleteApplication" in p.stderr
    assert "delb-bucket" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    after = {r["resource"]: r["state"] for r in Deployment(plan, moto_server).status()}
    assert after.pop("s3 bucket delb-bucket") == "absent"
    assert after.pop("flink application delb-user-txn-features").startswith("STARTING")
    assert set(after.values()) == {"absent"}, after


class _Throttler:
    """A real HTTP proxy in front of moto that answers the first call of every JSON-protocol
    operation with ThrottlingException (AWS's way to say "slow down"), then passes it on."""

    def __init__(self, upstream: str) -> None:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        host = urlsplit(upstream)
        self.throttled: list[str] = []
        self.passed: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a) -> None:
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target = self.headers.get("X-Amz-Target")
                if target and target not in outer.throttled:
                    outer.throttled.append(target)
                    err = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
                    self.send_response(400)
                    for k, v in (("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", "ThrottlingException"),
                                 ("Content-Length", str(len(err)))):
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(err)
                    return
                if target:
                    outer.passed.append(target)
                con = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
                con.request(self.command, self.path, body, {k: v for k, v in self.headers.items()})
                r = con.getresponse()
                data = r.read()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_apply_retries_when_aws_throttles(moto_server, tmp_path_factory):
    _roles(moto_server)
    plan = _plan(tmp_path_factory, "throttle", _target("thr"))
    proxy = _Throttler(moto_server)
    try:
        p = _cli("apply", str(plan), "--endpoint-url", proxy.url)
    finally:
        proxy.server.shutdown()
    assert p.returncode == 0, p.stderr
    # every operation was refused once, retried, and then done: Glue, Kinesis, Flink, SageMaker, Step Functions
    assert len(proxy.throttled) >= 10 and set(proxy.throttled) <= set(proxy.passed)
    services = {t.split(".")[0].split("_")[0] for t in proxy.throttled}
    assert {"AWSGlue", "Kinesis", "SageMaker", "AWSStepFunctions"} <= services, services
    assert {r["state"] for r in Deployment(plan, moto_server).status()} and all(
        r["state"] != "absent" and r["drift"] == "" for r in Deployment(plan, moto_server).status())
