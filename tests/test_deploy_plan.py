"""`mlprep deploy plan`: every artifact written and checked before anything is created; the
state machine passes a structural ASL check that catches broken ones; costs from the table;
no credentials in the plan."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from mlprep.deploy import asl, costs
from mlprep.errors import ConfigError
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIAPLANTESTKEY0001", "AWS_SECRET_ACCESS_KEY": "plan-secret-value-42"}
    p = subprocess.run([sys.executable, "-m", "mlprep", "deploy", "plan", "--out", str(out), "--region", "eu-west-1",
                        "--bucket", "acme-ml", "--runs-per-day", "4"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def test_plan_writes_every_artifact(plan_dir):
    plan = json.loads((plan_dir / "plan.json").read_text())
    for f in plan["files"].values():
        assert (plan_dir / f).is_file(), f
    job = json.loads((plan_dir / "glue" / "mlprep-transactions.job.json").read_text())
    assert job["Role"] == "arn:aws:iam::123456789012:role/mlprep-glue"
    script = (plan_dir / "glue" / "mlprep-transactions.py").read_bytes()
    digest = hashlib.sha256(script).hexdigest()[:16]
    assert job["Command"]["ScriptLocation"] == f"s3://acme-ml/mlprep/code/glue/{digest}/mlprep-transactions.py"
    assert job["DefaultArguments"]["--additional-python-modules"] == plan["code"]["mlprep_wheel"]
    manifest = json.loads((plan_dir / "code" / "manifest.json").read_text())
    assert manifest[job["Command"]["ScriptLocation"]] == hashlib.sha256(script).hexdigest()
    sql = (plan_dir / "flink" / "user_txn_features.sql").read_text()
    assert "'stream.arn' = 'arn:aws:kinesis:eu-west-1:123456789012:stream/mlprep-events'" in sql
    app = json.loads((plan_dir / "flink" / "application.json").read_text())
    cfg = app["ApplicationConfiguration"]["FlinkApplicationConfiguration"]
    assert cfg["CheckpointConfiguration"]["CheckpointingEnabled"] and cfg["ParallelismConfiguration"]["Parallelism"] == 2
    definition = json.loads((plan_dir / plan["files"]["pipeline_definition"]).read_text())
    assert "s3://acme-ml/" in json.dumps(definition)
    assert (plan_dir / "SUMMARY.md").read_text().count("|") > 20


def test_state_machine_is_valid_and_the_check_catches_broken_ones(plan_dir):
    sm = json.loads((plan_dir / "stepfunctions" / "state_machine.json").read_text())
    assert asl.validate(sm) == []
    assert sm["States"]["RunGlueJob"]["Resource"] == "arn:aws:states:::glue:startJobRun.sync"
    assert all("TimeoutSeconds" in s for s in sm["States"].values() if s["Type"] == "Task")
    assert all(s.get("Catch") and s.get("Retry") for s in sm["States"].values() if s["Type"] == "Task")
    broken = copy.deepcopy(sm)
    broken["States"]["StartPipeline"]["Next"] = "Nowhere"
    del broken["States"]["RunGlueJob"]["TimeoutSeconds"]
    broken["States"]["RunGlueJob"]["Retry"][0]["BackoffRate"] = 0.5
    broken["States"]["Orphan"] = {"Type": "Pass", "End": True}
    broken["States"]["DescribePipelineExecution"]["Catch"] = [{"ErrorEquals": [], "Next": "DeploymentFailed"}]
    problems = " | ".join(asl.validate(broken))
    assert "StartPipeline: goes to 'Nowhere', which is not a state" in problems
    assert "RunGlueJob: a Task needs TimeoutSeconds" in problems
    assert "RunGlueJob.Retry[0]: BackoffRate must be >= 1.0" in problems
    assert "Orphan: unreachable from StartAt" in problems
    assert "DescribePipelineExecution.Catch[0]: ErrorEquals must be a non-empty list" in problems
    assert asl.validate({"StartAt": "A", "States": {"A": {"Type": "Pass"}}}) == [
        "state machine.States.A: needs Next or End: true", "state machine: no reachable terminal state"]


def test_costs_follow_the_sizes_and_the_price_table(plan_dir):
    plan = json.loads((plan_dir / "plan.json").read_text())
    rows = {r["item"]: r for r in plan["costs_per_day"]}
    assert rows["Glue job"]["quantity"] == "1.33 DPU-hours"  # 2 x G.1X x 10 min x 4 runs
    assert rows["Glue job"]["usd_per_day"] == round(0.44 * 2 * 10 / 60 * 4, 2)
    assert rows["Managed Flink application"]["usd_per_day"] == round(0.11 * 3 * 24, 2)
    assert plan["total_usd_per_day"] == round(sum(r["usd_per_day"] for r in plan["costs_per_day"]), 2)
    with pytest.raises(ConfigError, match=r"no price for SageMaker instance 'ml\.p9\.huge'"):
        costs.estimate(costs.Sizes(endpoint_instance="ml.p9.huge"), costs.load_prices())


def test_no_credentials_in_the_plan(plan_dir):
    for p in plan_dir.rglob("*"):
        if p.is_file() and p.suffix != ".gz":
            text = p.read_text(errors="replace")
            assert "plan-secret-value-42" not in text and "AKIAPLANTESTKEY0001" not in text, p


def test_bad_roles_and_names_fail_before_anything_is_written(tmp_path):
    base = [sys.executable, "-m", "mlprep", "deploy", "plan", "--out", str(tmp_path / "p")]
    p = subprocess.run([*base, "--glue-role", "admin"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2 and "--glue-role: not an IAM role ARN: 'admin'" in p.stderr
    p = subprocess.run([*base, "--flink-role", "arn:aws:iam::999999999999:role/x"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2 and "roles of different accounts" in p.stderr
    p = subprocess.run([*base, "--bucket", "Bad_Bucket"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2 and "--bucket: not an S3 bucket name" in p.stderr
    assert not (tmp_path / "p").exists()


def _files(d):
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_a_plan_from_any_folder_names_its_inputs_and_matches_the_default(plan_dir, tmp_path):
    """From an empty folder, with the job, spec and pipeline file given: the same plan, byte for byte."""
    cwd, out = tmp_path / "empty", tmp_path / "plan"
    cwd.mkdir()
    p = subprocess.run([sys.executable, "-m", "mlprep", "deploy", "plan", "--out", str(out), "--region", "eu-west-1",
                        "--bucket", "acme-ml", "--runs-per-day", "4",
                        "--job", str(ROOT / "conf" / "batch" / "transactions.yaml"),
                        "--spec", str(ROOT / "conf" / "features" / "transactions.yaml"),
                        "--pipeline", f"{ROOT / 'pipelines' / 'fraud' / 'pipeline.py'}:get_pipeline"],
                       capture_output=True, text=True, cwd=cwd)
    assert p.returncode == 0, p.stderr[-3000:]
    assert _files(out) == _files(plan_dir)
    assert list(cwd.iterdir()) == []


def test_a_missing_default_says_which_option_to_pass(tmp_path):
    base = [sys.executable, "-m", "mlprep", "deploy", "plan", "--out", str(tmp_path / "p")]
    p = subprocess.run(base, capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2  # everything missing is named at once
    assert p.stderr.strip() == ("error: deploy plan: the demo's files are not in the current folder: pass "
                                "--job PATH --spec PATH --pipeline REF")
    p = subprocess.run([*base, "--spec", str(ROOT / "conf/features/transactions.yaml"), "--pipeline", "x:y"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip() == ("error: --job: no job config given and conf/batch/transactions.yaml is not in the "
                                "current folder: pass --job PATH")
    given = ["--job", str(ROOT / "conf/batch/transactions.yaml"), "--spec", str(ROOT / "conf/features/transactions.yaml")]
    p = subprocess.run([*base, *given], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2 and "--pipeline: no pipeline given and pipelines/fraud/pipeline.py is not in the " \
                                 "current folder" in p.stderr
    for ref, said in (("no_such_module_x:get_pipeline", "no module named 'no_such_module_x'"),
                      (f"{tmp_path / 'nope.py'}:get_pipeline", "no such file"),
                      (f"{ROOT / 'pipelines' / 'fraud' / 'pipeline.py'}:build_it", "has no function build_it()"),
                      ("not a ref!", "not module:function")):
        p = subprocess.run([*base, *given, "--pipeline", ref], capture_output=True, text=True, cwd=tmp_path)
        assert p.returncode == 2 and said in p.stderr, (ref, p.stderr)
    assert not (tmp_path / "p").exists()


def test_a_built_definition_is_deployed_as_built(plan_dir, tmp_path):
    from mlprep.deploy.plan import Target, write_plan

    built = plan_dir / "sagemaker" / "mlprep-fraud.json"
    out = tmp_path / "plan"
    write_plan(out, job_config=ROOT / "conf/batch/transactions.yaml", spec=ROOT / "conf/features/transactions.yaml",
               pipeline=str(built), target=Target(region="eu-west-1", bucket="acme-ml"), sizes=costs.Sizes(runs_per_day=4))
    assert _files(out) == _files(plan_dir)  # the definition and its staged code copied, named by its file
    job = {"job_config": ROOT / "conf/batch/transactions.yaml", "spec": ROOT / "conf/features/transactions.yaml"}
    roles = {f"{r}_role": f"arn:aws:iam::111122223333:role/{r}" for r in ("glue", "flink", "sagemaker", "states")}
    for target, said in ((Target(region="eu-west-1", bucket="other-bucket"), "built for bucket acme-ml, the plan's "
                          "is other-bucket"),
                         (Target(region="us-east-1", bucket="acme-ml"), "built for region eu-west-1, the plan's is "
                          "us-east-1"),
                         (Target(region="eu-west-1", bucket="acme-ml", **roles), "built for account 123456789012, "
                          "the plan's is 111122223333")):
        with pytest.raises(ConfigError, match=said):
            write_plan(tmp_path / "other", **job, pipeline=str(built), target=target)
    # not JSON, not a definition, or without its code folder: said before anything is written
    shutil.copy(built, tmp_path / "copied.json")
    (tmp_path / "text.json").write_text("not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    for name, said in (("text.json", "is not JSON"), ("list.json", "is not a pipeline definition"),
                       ("copied.json", "its code folder copied.code/ is missing")):
        with pytest.raises(ConfigError, match=said):
            write_plan(tmp_path / "other", **job, pipeline=str(tmp_path / name),
                       target=Target(region="eu-west-1", bucket="acme-ml"))
    assert not (tmp_path / "other").exists()


def test_pipeline_references():
    from mlprep.pipeline import build

    assert build.parse_ref("pipelines.fraud.pipeline") == build.Ref("module", "pipelines.fraud.pipeline")
    assert build.parse_ref("pkg.churn:make") == build.Ref("module", "pkg.churn", "make")
    assert build.parse_ref("a/b/pipeline.py:get_pipeline") == build.Ref("file", "a/b/pipeline.py")
    assert build.parse_ref("build/x.json").kind == "definition"
    assert [build.parse_ref(r).name for r in ("pipelines.fraud.pipeline", "pkg.churn:make",
                                              "/x/pipelines/fraud/pipeline.py", "x/churn.py:f", "b/mlprep-fraud.json")] \
        == ["fraud", "churn", "fraud", "churn", "mlprep-fraud"]
    fraud = build.load_factory(f"{ROOT / 'pipelines' / 'fraud' / 'pipeline.py'}:get_pipeline")
    assert fraud.module is build.load_module(str(ROOT / "pipelines" / "fraud" / "pipeline.py"))  # loaded once
    assert fraud.module.__name__ not in ("pipelines.fraud.pipeline", "pipeline")


def test_impossible_sizes_prices_and_factories_are_refused(tmp_path):
    from mlprep.deploy.plan import write_plan

    given = {"job_config": ROOT / "conf/batch/transactions.yaml", "spec": ROOT / "conf/features/transactions.yaml"}
    fraud = f"{ROOT / 'pipelines' / 'fraud' / 'pipeline.py'}:get_pipeline"
    for sizes, said in ((costs.Sizes(runs_per_day=-1), "--runs-per-day: must be at least 0, got -1"),
                        (costs.Sizes(kinesis_shards=0), "--kinesis-shards: must be at least 1, got 0"),
                        (costs.Sizes(flink_parallelism=0), "--flink-parallelism: must be at least 1, got 0"),
                        (costs.Sizes(glue_workers=1), "--glue-workers: must be at least 2, got 1")):
        with pytest.raises(ConfigError, match=said):
            write_plan(tmp_path / "p", **given, pipeline=fraud, sizes=sizes)
    prices = tmp_path / "prices.yaml"
    table = costs.load_prices()
    for bad, said in ((-1, "expected a price >= 0, got -1"), ("abc", "expected a price in USD, got 'abc'")):
        prices.write_text(json.dumps({**table, "glue_dpu_hour": bad}))
        with pytest.raises(ConfigError, match=rf"--prices glue_dpu_hour: {said}"):
            costs.estimate(costs.Sizes(), costs.load_prices(prices))
    (tmp_path / "factories.py").write_text("def none(**kw):\n    return None\n\ndef two(a, b):\n    return a\n")
    for ref, said in (("factories.py:none", "returned NoneType, not a Pipeline"),
                      ("factories.py:two", "takes no default_bucket")):
        with pytest.raises(ConfigError, match=said):
            write_plan(tmp_path / "p", **given, pipeline=str(tmp_path / ref))
    assert not (tmp_path / "p").exists()
