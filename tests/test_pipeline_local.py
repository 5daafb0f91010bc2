"""The fraud pipeline's definition executed locally, end to end, on real data from the batch
job and the stream; results checked against independent recomputation (scikit-learn, pandas)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import joblib
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from mlprep.batch.job import run_job
from mlprep.datasets.payments import generate
from mlprep.pipeline import serve
from mlprep.pipeline.executor import Executor
from mlprep.pipeline.registry import Registry, RegistryError
from mlprep.pipeline.storage import Storage
from mlprep.stream.runner import run_stream
from pipelines.fraud.pipeline import stage_inputs
from tests.conftest import JOB, ROOT


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    d = tmp_path_factory.mktemp("fraudpipe")
    data = generate(d / "data", rows=20_000, seed=7)
    run_job(JOB, {"data_dir": str(d / "data"), "out_dir": str(d / "out")}, progress=False)
    run_stream(ROOT / "conf" / "features" / "transactions.yaml", str(data.events), d / "stream", progress=False)
    p = subprocess.run([sys.executable, str(ROOT / "pipelines" / "get_pipeline_definition.py"), "--out",
                        str(d / "def" / "mlprep-fraud.json")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    home = d / "home"
    stage_inputs(Storage(root=home / "s3"), data.labels, d / "out" / "curated" / "transactions",
                 d / "stream" / "offline")
    ex = Executor(d / "def" / "mlprep-fraud.json", home=home, progress=False).run()
    yield d, home, ex
    for e in Registry(home).endpoints():
        serve.stop(int(e["Pid"]))


def _steps(ex):
    return {s["StepName"]: s for s in ex.list_steps()["PipelineExecutionSteps"]}


def test_execution_succeeds_with_every_step_recorded(ws):
    _d, _home, ex = ws
    assert ex.status == "Succeeded", ex.failure
    steps = _steps(ex)
    assert list(steps) == ["PreprocessFraudData", "TrainFraudModel", "EvaluateFraudModel", "CheckAucFraudModel",
                           "RegisterFraudModel", "CreateFraudModel", "FraudEndpointConfig", "FraudEndpoint"]
    assert all(s["StepStatus"] == "Succeeded" and s["AttemptCount"] == 1 for s in steps.values())
    assert steps["CheckAucFraudModel"]["Metadata"] == {"Condition": {"Outcome": "True"}}
    assert steps["TrainFraudModel"]["Metadata"]["TrainingJob"]["Arn"].startswith("arn:aws:sagemaker:")
    assert "AucTooLowFail" not in steps
    saved = json.loads((ex.folder / "steps.json").read_text())
    assert saved == ex.list_steps()
    for s in steps.values():  # a log per step
        assert s["Log"].endswith(f"{s['StepName']}.log")
    assert "$ " in (ex.folder / "logs" / "TrainFraudModel.log").read_text()


def test_model_artifact_and_evaluation_match_an_independent_recomputation(ws):
    d, home, ex = ws
    storage = Storage(root=home / "s3")
    uri = ex.properties["TrainFraudModel"]["ModelArtifacts"]["S3ModelArtifacts"]
    assert uri.endswith(f"/pipelines-{ex.id}-TrainFraudModel/output/model.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(storage.get_bytes(uri))) as t:
        assert "model.joblib" in t.getnames()
        bundle = joblib.load(t.extractfile("model.joblib"))
    outputs = {o["OutputName"]: o["S3Output"]["S3Uri"]
               for o in ex.properties["PreprocessFraudData"]["ProcessingOutputConfig"]["Outputs"]}
    assert outputs["test"] == f"s3://mlprep-demo/mlprep-fraud/executions/{ex.id}/test"
    test = pd.read_csv(io.BytesIO(storage.get_bytes(outputs["test"] + "/data.csv")))
    train = pd.read_csv(io.BytesIO(storage.get_bytes(outputs["train"] + "/data.csv")))
    labels = pd.read_json(d / "data" / "labels.jsonl", lines=True)
    assert len(train) + len(test) < len(labels)  # validation rows are in neither
    assert list(test.columns[:1]) == ["is_fraud"] and "amount" in test.columns and "txn_count_5m" in test.columns
    p = bundle["model"].predict_proba(test[bundle["features"]])[:, 1]
    ev = json.loads(storage.get_bytes(
        ex.properties["EvaluateFraudModel"]["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
        + "/evaluation.json"))
    m = ev["binary_classification_metrics"]
    assert m["roc_auc"]["value"] == pytest.approx(roc_auc_score(test["is_fraud"], p), abs=1e-12)
    assert m["pr_auc"]["value"] == pytest.approx(average_precision_score(test["is_fraud"], p), abs=1e-12)
    assert m["test_rows"] == len(test) and m["positives"] == int(test["is_fraud"].sum())
    assert m["roc_auc"]["value"] > 0.65


def test_registry_holds_the_version_with_metrics_and_checks_artifacts(ws):
    d, home, ex = ws
    reg = Registry(home)
    pkgs = reg.packages("mlprep-fraud-models")  # other tests may have registered later versions
    pkg = pkgs[0]
    assert pkg["ModelPackageVersion"] == 1 and all(p["ModelApprovalStatus"] != "Approved" for p in pkgs)
    assert pkg["ModelApprovalStatus"] == "PendingManualApproval"
    assert pkg["ModelPackageArn"] == ex.properties["RegisterFraudModel"]["ModelPackageArn"]
    auc = pkg["Metrics"]["binary_classification_metrics"]["roc_auc"]["value"]
    assert auc > 0.65
    cli = [sys.executable, "-m", "mlprep", "registry"]
    out = subprocess.run([*cli, "list", "--home", str(home)], capture_output=True, text=True, check=True).stdout
    assert "mlprep-fraud-models/1" in out and "PendingManualApproval" in out
    with pytest.raises(RegistryError, match="no approved version"):
        reg.package("mlprep-fraud-models")
    subprocess.run([*cli, "approve", "mlprep-fraud-models/1", "--home", str(home)], check=True, capture_output=True)
    assert reg.package("mlprep-fraud-models")["ModelApprovalStatus"] == "Approved"
    # `mlprep endpoint serve GROUP` serves its latest approved version
    info = serve.start_background(home, "mlprep-fraud-models", d / "serve-pkg.log")
    try:
        assert info["model"] == "mlprep-fraud-models/1"
        with urllib.request.urlopen(info["url"] + "/ping", timeout=10) as r:
            assert r.status == 200
    finally:
        serve.stop(int(info["pid"]))
    # a tampered artifact is refused before anything is unpickled
    art = reg.root / "artifacts" / pkg["Artifacts"]["model"]["sha256"]
    original = art.read_bytes()
    try:
        art.write_bytes(original[:-10] + b"0123456789")
        with pytest.raises(RegistryError, match="does not match its sha256"):
            reg.verified_artifacts(pkg, d / "unpack")
    finally:
        art.write_bytes(original)
    subprocess.run([*cli, "reject", "mlprep-fraud-models/1", "--home", str(home)], check=True, capture_output=True)
    with pytest.raises(RegistryError, match="is Rejected"):
        reg.resolve_serving("mlprep-fraud-models/1")


def _post(url, body, ctype="text/csv", accept="application/json"):
    req = urllib.request.Request(url + "/invocations", data=body, method="POST",
                                 headers={"Content-Type": ctype, "Accept": accept})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode(), r.headers["Content-Type"]
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers["Content-Type"]


def test_deployed_endpoint_serves_the_sagemaker_contract(ws):
    _d, home, ex = ws
    ep = Registry(home).endpoint("mlprep-fraud-endpoint")
    url = ep["Url"]
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url + "/ping", timeout=10) as r:
        assert r.status == 200
    storage = Storage(root=home / "s3")
    outputs = {o["OutputName"]: o["S3Output"]["S3Uri"]
               for o in ex.properties["PreprocessFraudData"]["ProcessingOutputConfig"]["Outputs"]}
    test = pd.read_csv(io.BytesIO(storage.get_bytes(outputs["test"] + "/data.csv"))).head(50)
    # the model the endpoint serves now (another test may have deployed a newer version)
    uri = Registry.container(Registry(home).model(ep["ModelName"]))["ModelDataUrl"]
    with tarfile.open(fileobj=io.BytesIO(storage.get_bytes(uri))) as t:
        bundle = joblib.load(t.extractfile("model.joblib"))
    expected = bundle["model"].predict_proba(test[bundle["features"]])[:, 1]
    x = test[bundle["features"]]
    code, body, ctype = _post(url, x.to_csv(index=False, header=False).encode())
    assert code == 200 and ctype == "application/json"
    assert json.loads(body)["predictions"] == pytest.approx(list(expected), abs=1e-12)
    code, body, _ = _post(url, x.to_csv(index=False).encode(), accept="text/csv")  # with a header row
    assert code == 200 and [float(v) for v in body.split()] == pytest.approx(list(expected), abs=1e-6)
    inst = json.dumps({"instances": json.loads(x.head(3).to_json(orient="records"))}).encode()
    code, body, _ = _post(url, inst, "application/json")
    assert code == 200 and json.loads(body)["predictions"] == pytest.approx(list(expected[:3]), abs=1e-12)
    # malformed payloads: 4xx with a message, and the server keeps serving
    assert _post(url, b"1,2,3")[:2][0] == 400 and "expected" in _post(url, b"1,2,3")[1]
    assert _post(url, b"{not json", "application/json")[0] == 400
    assert _post(url, b"\xff\xfe", "text/csv")[0] == 400
    assert _post(url, b"a", "application/xml")[0] == 415
    assert _post(url, b"1" * (7 * 1024 * 1024))[0] == 413
    # concurrent requests are all answered
    one = x.head(1).to_csv(index=False, header=False).encode()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: _post(url, one), range(40)))
    assert all(r[0] == 200 for r in results)
    assert all(abs(json.loads(r[1])["predictions"][0] - expected[0]) < 1e-12 for r in results)


def test_second_run_hits_the_cache_and_new_data_does_not(ws):
    d, home, first = ws
    registered = len(Registry(home).packages("mlprep-fraud-models"))
    ex = Executor(d / "def" / "mlprep-fraud.json", home=home, progress=False).run()
    assert ex.status == "Succeeded"
    steps = _steps(ex)
    for name in ("PreprocessFraudData", "TrainFraudModel", "EvaluateFraudModel"):
        assert steps[name]["CacheHitResult"] == {"SourcePipelineExecutionArn": first.arn}
    assert ex.properties["TrainFraudModel"] == first.properties["TrainFraudModel"]
    # a changed hyperparameter re-trains (and so re-evaluates) but reuses the preprocessing
    ex2 = Executor(d / "def" / "mlprep-fraud.json", home=home, progress=False).run({"MaxIter": 60})
    s2 = _steps(ex2)
    assert "CacheHitResult" in s2["PreprocessFraudData"]
    assert "CacheHitResult" not in s2["TrainFraudModel"] and "CacheHitResult" not in s2["EvaluateFraudModel"]
    # new data under the same URI is not a cache hit (SageMaker would reuse the old result)
    storage = Storage(root=home / "s3")
    labels = storage.get_bytes("s3://mlprep-demo/mlprep-fraud/input/labels/labels.jsonl")
    storage.put_bytes("s3://mlprep-demo/mlprep-fraud/input/labels/labels.jsonl",
                      b"\n".join(labels.splitlines()[:-100]) + b"\n")
    try:
        ex3 = Executor(d / "def" / "mlprep-fraud.json", home=home, progress=False).run({"MaxIter": 60})
        assert "CacheHitResult" not in _steps(ex3)["PreprocessFraudData"]
    finally:
        storage.put_bytes("s3://mlprep-demo/mlprep-fraud/input/labels/labels.jsonl", labels)
    assert len(Registry(home).packages("mlprep-fraud-models")) == registered + 3  # ex, ex2, ex3
    # --until: up to evaluation only (a candidate compared, not registered or deployed)
    ex4 = Executor(d / "def" / "mlprep-fraud.json", home=home, progress=False).run(
        {"FeatureGroups": "none"}, until="EvaluateFraudModel")
    assert ex4.status == "Succeeded"
    assert list(_steps(ex4)) == ["PreprocessFraudData", "TrainFraudModel", "EvaluateFraudModel"]
    assert len(Registry(home).packages("mlprep-fraud-models")) == registered + 3


def _cli_run(d, home, *params):
    cmd = [sys.executable, "-m", "mlprep", "pipeline", "run", str(d / "def" / "mlprep-fraud.json"), "--home",
           str(home)]
    for p in params:
        cmd += ["--param", p]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_condition_false_ends_in_the_fail_step(ws):
    d, home, _ = ws
    p = _cli_run(d, home, "AucThreshold=0.99")
    assert p.returncode == 1
    record = p.stdout.strip().splitlines()[-1]
    with open(record.replace("execution.json", "steps.json")) as f:
        rec = json.load(f)
    steps = {s["StepName"]: s for s in rec["PipelineExecutionSteps"]}
    assert steps["CheckAucFraudModel"]["Metadata"]["Condition"]["Outcome"] == "False"
    fail = steps["AucTooLowFail"]
    assert fail["StepStatus"] == "Failed"
    assert fail["FailureReason"].startswith("Test ROC AUC 0.") and fail["FailureReason"].endswith("threshold 0.99")
    assert "RegisterFraudModel" not in steps and "FraudEndpoint" not in steps
    assert "AucTooLowFail failed" in p.stderr


def test_bad_parameters_and_a_failing_step_are_reported(ws):
    d, home, _ = ws
    p = _cli_run(d, home, "MaxIter=many")
    assert p.returncode == 2 and "--param MaxIter: expected Integer, got 'many'" in p.stderr
    p = _cli_run(d, home, "Bogus=1")
    assert p.returncode == 2 and "--param Bogus: not a parameter" in p.stderr
    p = _cli_run(d, home, "TrainEnd=not-a-date")
    assert p.returncode == 1
    assert "PreprocessFraudData" in p.stderr and "AlgorithmError: exit code 1" in p.stderr
    assert "--- last lines of" in p.stderr and "Traceback" in p.stderr  # the log's tail is shown


def _auc(storage, ex) -> float:
    uri = ex.properties["EvaluateFraudModel"]["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    return json.loads(storage.get_bytes(uri + "/evaluation.json"))["binary_classification_metrics"]["roc_auc"]["value"]


def test_stream_features_lift_the_test_auc_as_the_readme_says(ws):
    """The README's headline, on its data (20,000 rows, seed 7): test ROC AUC 0.682 without the
    stream's window features, 0.754 with them. Asserted with a margin that a model without the
    stream features cannot meet."""
    d, home, ex = ws
    storage = Storage(root=home / "s3")
    without = Executor(d / "def" / "mlprep-fraud.json", home=home, progress=False).run(
        {"FeatureGroups": "none"}, until="EvaluateFraudModel")
    with_auc, without_auc = _auc(storage, ex), _auc(storage, without)
    print(f"ROC AUC with stream features {with_auc:.4f}, without {without_auc:.4f}")
    assert with_auc == pytest.approx(0.754, abs=0.015) and without_auc == pytest.approx(0.682, abs=0.015)
    assert with_auc - without_auc >= 0.05
