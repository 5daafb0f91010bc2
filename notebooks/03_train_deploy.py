# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Train and deploy (SageMaker Pipelines, run locally)
#
# The fraud pipeline in `pipelines/fraud/pipeline.py` is built with the official `sagemaker`
# SDK — offline, byte for byte the definition SageMaker would get — and that JSON definition is
# executed here, without Docker or an AWS account: point-in-time join of labels with the batch
# table and the stream's offline store, training, evaluation, a condition on test ROC AUC,
# registration, and a local endpoint. Headless:
# `papermill notebooks/03_train_deploy.ipynb out.ipynb -p labels FILE -p features DIR -p transactions DIR`.

# %% tags=["parameters"]
labels: str = "../demo/data/labels.jsonl"  # labels file (txn_id, user_id, ts, is_fraud)
transactions: str = "../demo/out/curated/transactions"  # curated table of the batch job (empty: none)
features: str = "../demo/out/stream/offline"  # offline store of the stream (one folder per group)
home: str = "../demo/out/pipeline"  # executor folder: local S3, executions, registry
definition: str = "../demo/out/pipeline/mlprep-fraud.json"  # where the definition is written
feature_groups: str = "all"  # stream feature groups to train with: all, none, or names
auc_threshold: float = 0.6  # the condition's threshold on test ROC AUC
max_iter: int = 100
learning_rate: float = 0.05
deploy_check_rows: int = 5  # test rows sent to the endpoint
keep_endpoint: bool = True  # leave the local endpoint running (mlprep endpoint stop NAME)
compare_without_stream: bool = True  # also train without the stream window features (up to evaluation)
pipeline: str = "../pipelines/fraud/pipeline.py:get_pipeline"  # the pipeline's factory (module:function or file:function)

# %%
import io
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from mlprep.pipeline import build, plots
from mlprep.pipeline.definition import load
from mlprep.pipeline.executor import Executor
from mlprep.pipeline.registry import Registry
from mlprep.pipeline.serve import Endpoint
from mlprep.pipeline.storage import Storage
from mlprep.runner import outputs

fraud = build.load_factory(pipeline)  # a file is loaded by its path: nothing is added to sys.path
PIPELINE_NAME = fraud.module.PIPELINE_NAME

for name, value in (("labels", labels), ("features", features), ("transactions", transactions)):
    if name == "transactions" and not value:
        continue
    if not Path(value).exists():
        raise FileNotFoundError(f"parameter {name}: {value} does not exist (run notebooks 01 and 02 first)")

# %% [markdown]
# ## The definition, from the SDK

# %%
path = build.write(Path(definition), fraud.ref)
pipeline_def = load(path)
pd.DataFrame([{"step": s.name, "type": s.type, "after": ", ".join(sorted(s.upstream)),
               "branch": f"{s.branch[0]}: {'if' if s.branch[1] else 'else'}" if s.branch else ""}
              for s in (pipeline_def.steps[n] for n in pipeline_def.order)])

# %% [markdown]
# ## Run it locally

# %%
storage = Storage(root=Path(home) / "s3")
inputs = fraud.module.stage_inputs(storage, Path(labels), Path(transactions) if transactions else None, Path(features))
execution = Executor(path, home=home, pipeline_name=PIPELINE_NAME).run({
    "FeatureGroups": feature_groups, "AucThreshold": auc_threshold, "MaxIter": max_iter,
    "LearningRate": learning_rate})
print(execution.status, execution.failure or "")
steps = execution.list_steps()["PipelineExecutionSteps"]
pd.DataFrame(steps)[["StepName", "StepStatus", "AttemptCount", "Seconds"]].assign(
    cache_hit=[bool(s.get("CacheHitResult")) for s in steps])

# %%
plots.dag(pipeline_def, steps)
outputs.figure(plt.gcf(), "pipeline_dag")
plt.show()

# %% [markdown]
# ## Evaluation

# %%
props = execution.properties
eval_uri = execution.output_uri("EvaluateFraudModel", "evaluation")
evaluation = json.loads(storage.get_bytes(eval_uri + "/evaluation.json"))
metrics = evaluation["binary_classification_metrics"]
pd.Series({k: metrics[k]["value"] for k in ("roc_auc", "pr_auc", "precision", "recall")}).to_frame("test")

# %% [markdown]
# What the stream's window features are worth: the same pipeline up to evaluation, without them
# (`FeatureGroups=none`: the batch table's per-transaction features only). Not registered, not deployed.

# %%
baseline = None
if compare_without_stream:
    without = Executor(path, home=home, pipeline_name=PIPELINE_NAME, progress=False).run(
        {"FeatureGroups": "none", "MaxIter": max_iter, "LearningRate": learning_rate}, until="EvaluateFraudModel")
    if without.status == "Succeeded":
        uri = without.output_uri("EvaluateFraudModel", "evaluation")
        baseline = json.loads(storage.get_bytes(uri + "/evaluation.json"))
fig = plt.figure(figsize=(14, 4))
axes = [fig.add_subplot(1, 3, i) for i in (1, 2, 3)]
plots.roc_pr(evaluation, axes[:2], label="with stream features")
if baseline:
    plots.roc_pr(baseline, axes[:2], label="without stream features")
plots.confusion(evaluation, axes[2])
plt.tight_layout()
outputs.figure(fig, "roc_pr_confusion")
plt.show()

# %%
plots.importances(evaluation)
outputs.figure(plt.gcf(), "feature_importance")
plt.show()

# %% [markdown]
# ## Registry and endpoint

# %%
registry = Registry(home)
pd.DataFrame([{"package": p["Name"], "status": p["ModelApprovalStatus"], "created": p["CreationTime"],
               "roc_auc": p["Metrics"].get("binary_classification_metrics", {}).get("roc_auc", {}).get("value")}
              for p in registry.packages()])

# %%
endpoint_check = {}
if execution.status == "Succeeded":
    endpoint = Endpoint(registry, "mlprep-fraud-endpoint")
    test_uri = execution.output_uri("PreprocessFraudData", "test")
    test = pd.read_csv(io.BytesIO(storage.get_bytes(test_uri + "/data.csv")))
    sample = pd.concat([test[test.is_fraud == 1].head(deploy_check_rows), test[test.is_fraud == 0].head(deploy_check_rows)])
    rows = sample.drop(columns="is_fraud").to_csv(index=False, header=False)
    predictions = endpoint.invoke(rows, content_type="text/csv")["predictions"]
    endpoint_check = {"url": endpoint.url, "rows": len(sample), "predictions": predictions}
    display(sample[["is_fraud"]].assign(p_fraud=predictions))
    if not keep_endpoint:
        endpoint.stop()
        endpoint_check["stopped"] = True
endpoint_check.get("url")

# %%
# what the stage hands on (mlprep run passes it on; by hand it goes to HOME/result.json)
test_metrics = {k: metrics[k]["value"] for k in ("roc_auc", "pr_auc", "precision", "recall")}
result = outputs.save({
    "execution_id": execution.id, "status": execution.status, "failure": execution.failure,
    "metrics": test_metrics, "model_package": props.get("RegisterFraudModel", {}).get("ModelPackageArn"),
    "definition": str(path), "endpoint": endpoint_check,
    "summary": {"metrics": {
        "auc_with_stream_features": test_metrics["roc_auc"],
        "auc_without_stream_features": baseline["binary_classification_metrics"]["roc_auc"]["value"] if baseline else None,
        "pr_auc": test_metrics["pr_auc"], "precision": test_metrics["precision"], "recall": test_metrics["recall"]},
        "model_package": props.get("RegisterFraudModel", {}).get("ModelPackageArn"), "endpoint": endpoint_check},
}, default=Path(home) / "result.json")
result["summary"]
