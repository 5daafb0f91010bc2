"""The local executor on hand-written definitions (any definition runs, not only the SDK's):
retries, DependsOn, execution variables, timeouts, a real S3 API; and the SageMaker API calls
against moto's server."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import boto3

from mlprep.pipeline import aws, staging
from mlprep.pipeline.executor import Executor
from mlprep.pipeline.storage import Storage
from tests.conftest import ROOT

FLAKY = """
import os, signal, sys
from pathlib import Path
marker = Path(sys.argv[1])
out = Path(os.environ["MLPREP_OPT_ML"]) / "processing" / "out"
if not marker.exists():
    marker.write_text("first attempt")
    os.kill(os.getpid(), signal.SIGKILL)  # as if the instance were lost
(out / "result.txt").write_text(sys.argv[2] + " " + os.environ["STAGE"])
"""

FAILS = "import sys; print('about to fail'); sys.exit(3)"
SLOW = "import time; time.sleep(30)"


def _processing(name, code_uri, args, *, out_uri=None, retry=None, depends=(), env=None, max_runtime=600):
    step = {"Name": name, "Type": "Processing", "DependsOn": list(depends), "Arguments": {
        "AppSpecification": {"ImageUri": "any", "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/s.py"],
                             "ContainerArguments": args},
        "ProcessingInputs": [{"InputName": "code", "S3Input": {"S3Uri": code_uri,
                              "LocalPath": "/opt/ml/processing/input/code", "S3DataType": "S3Prefix"}}],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "out", "S3Output": {
            "S3Uri": out_uri or {"Std:Join": {"On": "/", "Values": ["s3://bkt/runs", {"Get": "Execution.PipelineExecutionId"}, name]}},
            "LocalPath": "/opt/ml/processing/out", "S3UploadMode": "EndOfJob"}}]},
        "Environment": env or {"STAGE": "x"}, "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime},
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1}}}}
    if retry:
        step["RetryPolicies"] = [retry]
    return step


def _write(tmp_path, name, script, steps, params=()):
    code = staging.CodeBundle("s3://bkt/code/s.py", script.encode())
    d = tmp_path / f"{name}.json"
    d.write_text(json.dumps({"Version": "2020-12-01", "Parameters": list(params), "Steps": steps}))
    staging.write_sidecar(d, [code])
    return d


def test_killed_job_is_retried_by_policy_and_downstream_waits(tmp_path):
    marker = tmp_path / "marker"
    retry = {"ExceptionType": ["SageMaker.JOB_INTERNAL_ERROR"], "IntervalSeconds": 0, "BackoffRate": 1.0, "MaxAttempts": 2}
    steps = [_processing("A", "s3://bkt/code/s.py", [str(marker), {"Get": "Parameters.Word"}], retry=retry,
                         env={"STAGE": {"Get": "Execution.PipelineName"}}),
             _processing("B", "s3://bkt/code/s.py", [str(tmp_path / "other-marker"), "b"], depends=["A"])]
    (tmp_path / "other-marker").write_text("B is not killed")
    d = _write(tmp_path, "flaky", FLAKY, steps, [{"Name": "Word", "Type": "String", "DefaultValue": "hello"}])
    ex = Executor(d, home=tmp_path / "home", progress=False).run({"Word": "bonjour"}, execution_id="e1")
    assert ex.status == "Succeeded", ex.failure
    a, b = ex.list_steps()["PipelineExecutionSteps"]
    assert (a["StepName"], a["AttemptCount"], b["StepName"], b["AttemptCount"]) == ("A", 2, "B", 1)
    s = Storage(root=tmp_path / "home" / "s3")
    assert s.get_bytes("s3://bkt/runs/e1/A/result.txt") == b"bonjour flaky"
    assert "SIGKILL" not in a.get("FailureReason", "")


def test_algorithm_errors_are_not_retried_and_dependents_do_not_run(tmp_path):
    retry = {"ExceptionType": ["SageMaker.JOB_INTERNAL_ERROR"], "IntervalSeconds": 0, "MaxAttempts": 5}
    d = _write(tmp_path, "fails", FAILS, [_processing("A", "s3://bkt/code/s.py", ["--api-token", "s3cr3t-v"],
                                                      retry=retry),
                                          _processing("B", "s3://bkt/code/s.py", [], depends=["A"])])
    ex = Executor(d, home=tmp_path / "home", progress=False).run()
    assert ex.status == "Failed" and ex.failure == "Step A failed: AlgorithmError: exit code 3"
    steps = ex.list_steps()["PipelineExecutionSteps"]
    assert [(s["StepName"], s["StepStatus"], s["AttemptCount"]) for s in steps] == [("A", "Failed", 1)]
    logged = (ex.folder / "logs" / "A.log").read_text()
    assert "about to fail" in logged and "--api-token ***" in logged and "s3cr3t-v" not in logged


def test_max_runtime_stops_the_job(tmp_path):
    d = _write(tmp_path, "slow", SLOW, [_processing("A", "s3://bkt/code/s.py", [], max_runtime=1)])
    ex = Executor(d, home=tmp_path / "home", progress=False).run()
    step = ex.list_steps()["PipelineExecutionSteps"][0]
    assert step["StepStatus"] == "Failed" and "MaxRuntimeInSeconds (1 s) exceeded" in step["FailureReason"]
    assert step["Seconds"] < 10


def test_runs_against_a_real_s3_api(tmp_path, moto_server):
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket="bkt")
    (tmp_path / "m").write_text("not killed")
    d = _write(tmp_path, "ons3", FLAKY, [_processing("A", "s3://bkt/code/s.py", [str(tmp_path / "m"), "s3"],
                                                      out_uri="s3://bkt/out/A")])
    p = subprocess.run([sys.executable, "-m", "mlprep", "pipeline", "run", str(d), "--home", str(tmp_path / "h"),
                        "--s3-endpoint", moto_server], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    body = boto3.client("s3", endpoint_url=moto_server).get_object(Bucket="bkt", Key="out/A/result.txt")["Body"]
    assert body.read() == b"s3 x"
    assert not (tmp_path / "h" / "s3").exists()  # nothing went to the local folder


def test_upsert_start_describe_against_the_sagemaker_api(tmp_path, moto_server):
    p = subprocess.run([sys.executable, str(ROOT / "pipelines" / "get_pipeline_definition.py"), "--out",
                        str(tmp_path / "fraud.json")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket="mlprep-demo")
    role = "arn:aws:iam::123456789012:role/mlprep-sm"
    r1 = aws.upsert(tmp_path / "fraud.json", "mlprep-fraud-test", role, moto_server)
    assert r1["Created"] and len(r1["CodeUploaded"]) == 5
    r2 = aws.upsert(tmp_path / "fraud.json", "mlprep-fraud-test", role, moto_server)
    assert not r2["Created"] and r2["CodeUploaded"] == [] and r2["PipelineArn"] == r1["PipelineArn"]
    cli = [sys.executable, "-m", "mlprep", "pipeline"]
    out = subprocess.run([*cli, "describe", "--name", "mlprep-fraud-test", "--endpoint-url", moto_server],
                         capture_output=True, text=True, check=True).stdout
    desc = json.loads(out)
    assert desc["PipelineDefinition"] == json.loads((tmp_path / "fraud.json").read_text())
    assert desc["RoleArn"] == role
    started = subprocess.run([*cli, "start", "--name", "mlprep-fraud-test", "--endpoint-url", moto_server,
                              "--param", "AucThreshold=0.7"], capture_output=True, text=True, check=True).stdout
    assert ":pipeline/mlprep-fraud-test/execution/" in json.loads(started)["PipelineExecutionArn"]
    s3 = boto3.client("s3", endpoint_url=moto_server)
    for b in staging.read_sidecar(tmp_path / "fraud.json"):
        key = b.uri.removeprefix("s3://mlprep-demo/")
        assert s3.get_object(Bucket="mlprep-demo", Key=key)["Body"].read() == b.data
    p = subprocess.run([*cli, "upsert", str(tmp_path / "fraud.json"), "--name", "x", "--role-arn", "admin",
                        "--endpoint-url", moto_server], capture_output=True, text=True)
    assert p.returncode == 2 and "--role-arn: not an IAM role ARN" in p.stderr


def _bench_model_builder():
    """bench/endpoint.py's model builder, loaded without touching sys.path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_endpoint", ROOT / "bench" / "endpoint.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_an_endpoint_update_is_blue_green(tmp_path):
    """Deploying a new model to a live endpoint: the new server answers before the endpoint points
    to it, the old one keeps answering through the switch and then goes; a client that reads the
    endpoint's address before each request never fails."""
    import threading
    import urllib.request

    from mlprep.pipeline import serve
    from mlprep.pipeline.registry import Registry

    home = tmp_path / "home"
    storage = Storage(root=home / "s3")
    bench = _bench_model_builder()
    bench.build_model(home)  # stages s3://bench/model.tar.gz and code.tar.gz
    container = {"Image": "local", "ModelDataUrl": {"Get": "Parameters.ModelData"},
                 "Environment": {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "s3://bench/code.tar.gz"}}
    definition = {"Version": "2020-12-01", "Parameters": [{"Name": "ModelData", "Type": "String",
                                                           "DefaultValue": "s3://bench/model.tar.gz"}],
                  "Steps": [
                      {"Name": "M", "Type": "Model", "Arguments": {"ExecutionRoleArn": "arn:aws:iam::1:role/r",
                                                                    "PrimaryContainer": container}},
                      {"Name": "C", "Type": "EndpointConfig", "Arguments": {
                          "EndpointConfigName": {"Std:Join": {"On": "-", "Values": ["cfg", {"Get": "Execution.PipelineExecutionId"}]}},
                          "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": {"Get": "Steps.M.ModelName"}}]}},
                      {"Name": "E", "Type": "Endpoint", "Arguments": {
                          "EndpointName": "ep", "EndpointConfigName": {"Get": "Steps.C.EndpointConfigName"}}}]}
    path = tmp_path / "def.json"
    path.write_text(json.dumps(definition))
    reg = Registry(home)
    try:
        assert Executor(path, home=home, progress=False).run().status == "Succeeded"
        blue = reg.endpoint("ep")
        row = b"0" + b",0" * 25
        results, stop = [], threading.Event()

        def client():
            while not stop.is_set():
                url = reg.endpoint("ep")["Url"]
                try:
                    req = urllib.request.Request(url + "/invocations", row, {"Content-Type": "text/csv"})
                    with urllib.request.urlopen(req, timeout=10) as r:
                        results.append((url, json.loads(r.read())["predictions"][0]))
                except OSError as e:
                    results.append((url, e))

        t = threading.Thread(target=client)
        t.start()
        # a second model (another seed: other predictions) deployed to the same endpoint
        bench.build_model(tmp_path / "other", seed=8)
        storage.put_bytes("s3://bench/model2.tar.gz", Storage(root=tmp_path / "other" / "s3").get_bytes("s3://bench/model.tar.gz"))
        ex = Executor(path, home=home, progress=False).run({"ModelData": "s3://bench/model2.tar.gz"})
        time.sleep(0.5)
        stop.set()
        t.join(20)
        green = reg.endpoint("ep")
        assert ex.status == "Succeeded" and green["Url"] != blue["Url"] and green["Pid"] != blue["Pid"]
        assert not serve.alive(int(blue["Pid"])) and serve.alive(int(green["Pid"]))
        failures = [r for r in results if not isinstance(r[1], float)]
        assert failures == [] and {u for u, _ in results} == {blue["Url"], green["Url"]}, failures[:3]
        answers = {u: {p for v, p in results if v == u} for u in (blue["Url"], green["Url"])}
        assert len(answers[blue["Url"]]) == len(answers[green["Url"]]) == 1  # one model each
        assert answers[blue["Url"]] != answers[green["Url"]]  # and the second is the new model
    finally:
        for e in reg.endpoints():
            serve.stop(int(e["Pid"]))
