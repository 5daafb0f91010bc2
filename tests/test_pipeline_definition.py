"""The fraud pipeline's definition: built by the official SDK offline, reproducible, and read
back by the local executor's parser."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from mlprep.errors import ConfigError
from mlprep.pipeline import definition, staging
from tests.conftest import ROOT

# Any DNS lookup or connection fails in the child: the build must not need the network.
NO_NETWORK = f"""
import socket, sys
def refuse(*a, **k):
    raise OSError("network disabled in this test")
socket.getaddrinfo = refuse
socket.socket.connect = refuse
socket.create_connection = refuse
import runpy
script = {str(ROOT / "pipelines" / "get_pipeline_definition.py")!r}
sys.argv = [script, "--out", sys.argv[1]]
runpy.run_path(script, run_name="__main__")
"""


def _build_offline(out):
    env = {"PATH": os.environ["PATH"], "HOME": str(out.parent)}  # no AWS variables, no credentials
    p = subprocess.run([sys.executable, "-c", NO_NETWORK, str(out)], env=env, capture_output=True, text=True,
                       cwd=out.parent)
    assert p.returncode == 0, p.stderr[-3000:]
    return out.read_bytes()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("def")
    (d / "a").mkdir()
    (d / "b").mkdir()
    return _build_offline(d / "a" / "fraud.json"), _build_offline(d / "b" / "fraud.json"), d


def test_definition_is_byte_identical_offline_and_without_credentials(built):
    a, b, d = built
    assert a == b
    assert (d / "a" / "fraud.code" / "manifest.json").read_bytes() == (d / "b" / "fraud.code" / "manifest.json").read_bytes()


def test_definition_shape(built):
    doc = json.loads(built[0])
    assert doc["Version"] == "2020-12-01"
    names = [p["Name"] for p in doc["Parameters"]]
    for p in ("FeaturesUri", "LabelsUri", "TrainEnd", "ValidationEnd", "MaxIter", "LearningRate", "AucThreshold",
              "ModelApprovalStatus", "ProcessingInstanceType", "TrainingInstanceType"):
        assert p in names
    steps = {s["Name"]: s for s in doc["Steps"]}
    assert [s["Type"] for s in doc["Steps"]] == ["Processing", "Training", "Processing", "Condition"]
    cond = steps["CheckAucFraudModel"]["Arguments"]
    assert cond["Conditions"][0]["Type"] == "GreaterThanOrEqualTo"
    assert cond["Conditions"][0]["LeftValue"]["Std:JsonGet"]["Path"] == "binary_classification_metrics.roc_auc.value"
    assert [s["Type"] for s in cond["IfSteps"]] == ["RegisterModel", "Model", "EndpointConfig", "Endpoint"]
    assert [s["Type"] for s in cond["ElseSteps"]] == ["Fail"]
    reg = cond["IfSteps"][0]["Arguments"]
    assert reg["ModelApprovalStatus"] == {"Get": "Parameters.ModelApprovalStatus"}
    assert reg["ModelMetrics"]["ModelQuality"]["Statistics"]["ContentType"] == "application/json"
    train = steps["TrainFraudModel"]["Arguments"]
    assert train["HyperParameters"]["sagemaker_program"] == "train.py"
    assert steps["EvaluateFraudModel"]["PropertyFiles"][0]["PropertyFileName"] == "EvaluationReport"
    # no timestamps, random names or local paths leak into the definition
    text = built[0].decode()
    today = datetime.now(UTC)
    assert str(ROOT) not in text and "/tmp" not in text
    stamp = r"20\d\d-[01]\d-[0-3]\d([T ]|-[0-2]\d-)[0-5]\d|20\d\d[01]\d[0-3]\dT[0-2]\d[0-5]\d"  # the SDK's name stamps
    assert not re.search(stamp, text)  # no build time
    assert today.strftime("%Y-%m-%d") not in text and today.strftime("%Y%m%d") not in text


def test_code_keys_are_content_hashes(built):
    _, _, d = built
    bundles = staging.read_sidecar(d / "a" / "fraud.json")
    text = (d / "a" / "fraud.json").read_text()
    assert len(bundles) == 5
    for b in bundles:
        digest = b.uri.rsplit("/", 2)[1]
        assert hashlib.sha256(b.data).hexdigest().startswith(digest)
        assert b.uri in text or b.uri.rsplit("/", 1)[0] + "/" in text
    src = next(b for b in bundles if b.uri.endswith("preprocess.py"))
    assert src.data == (ROOT / "pipelines" / "fraud" / "preprocess.py").read_bytes()
    # archives are reproducible byte for byte
    files = {"train.py": ROOT / "pipelines" / "fraud" / "train.py"}
    assert staging.tar_gz(files) == staging.tar_gz(files)


def test_parser_orders_steps_and_types_parameters(built):
    d = definition.parse(json.loads(built[0]))
    order = d.order
    assert order.index("PreprocessFraudData") < order.index("TrainFraudModel") < order.index("EvaluateFraudModel")
    assert order.index("CreateFraudModel") < order.index("FraudEndpointConfig") < order.index("FraudEndpoint")
    assert d.steps["FraudEndpoint"].branch == ("CheckAucFraudModel", True)
    assert d.steps["AucTooLowFail"].branch == ("CheckAucFraudModel", False)
    vals = d.resolve_parameters({"MaxIter": "50", "AucThreshold": "0.7"})
    assert vals["MaxIter"] == 50 and vals["AucThreshold"] == 0.7 and vals["TrainEnd"] == "2026-11-05"
    with pytest.raises(ConfigError, match=r"--param MaxIter: expected Integer, got 'abc'"):
        d.resolve_parameters({"MaxIter": "abc"})
    with pytest.raises(ConfigError, match="--param Nope: not a parameter"):
        d.resolve_parameters({"Nope": "1"})
    with pytest.raises(ConfigError, match="ModelApprovalStatus: must be one of"):
        d.resolve_parameters({"ModelApprovalStatus": "Maybe"})


def test_parser_rejects_cycles_unknown_refs_and_types():
    def step(name, deps=(), typ="Fail"):
        return {"Name": name, "Type": typ, "Arguments": {}, "DependsOn": list(deps)}

    with pytest.raises(ConfigError, match="dependency cycle: A -> B -> A"):
        definition.parse({"Steps": [step("A", ["B"]), step("B", ["A"])]})
    with pytest.raises(ConfigError, match="unknown step 'Z'"):
        definition.parse({"Steps": [step("A", ["Z"])]})
    with pytest.raises(ConfigError, match="step type 'Lambda' is not supported"):
        definition.parse({"Steps": [step("A", typ="Lambda")]})
