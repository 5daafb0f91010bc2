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
# # 04 · Deploy to AWS (Glue, Managed Flink, SageMaker Pipelines, Step Functions)
#
# What runs here locally has an AWS home: the batch job becomes a Glue job, the feature spec a
# Managed Flink application on Kinesis, the fraud pipeline a SageMaker pipeline, and a Step
# Functions state machine runs the Glue job and then the pipeline, with retries, timeouts and a
# failure state that carries the cause. By default this notebook only **plans**: it writes and
# checks every artifact and request into `out_dir` and creates nothing. With `apply=True` it
# creates or updates the resources (idempotently) on AWS, or on `endpoint_url` (e.g. a moto
# server). Credentials come from boto3's usual chain (`AWS_PROFILE`, environment, instance
# role) and are never parameters, so they never land in this notebook. Headless:
# `papermill notebooks/04_deploy.ipynb out.ipynb -p out_dir DIR [-p apply True -p endpoint_url URL]`.

# %% tags=["parameters"]
out_dir: str = "../demo/deploy"  # plan folder (written; apply reads it)
job: str = "../conf/batch/transactions.yaml"  # batch job config -> Glue job
spec: str = "../conf/features/transactions.yaml"  # feature spec -> Managed Flink (Flink SQL)
pipeline: str = "../pipelines/fraud/pipeline.py:get_pipeline"  # SageMaker pipeline: file:function, module:function or a built .json
region: str = "us-east-1"
bucket: str = "mlprep-demo"  # S3 bucket for code, data and models
prefix: str = "mlprep"  # prefix of every resource name
account: str = "123456789012"  # AWS account of the four IAM roles below
glue_role: str = "mlprep-glue"  # IAM role names (in account)
flink_role: str = "mlprep-flink"
sagemaker_role: str = "mlprep-sagemaker"
states_role: str = "mlprep-states"
runs_per_day: int = 1  # state machine executions per day (for the cost table)
glue_workers: int = 2
flink_parallelism: int = 2  # KPUs of the Flink application
kinesis_shards: int = 1
apply: bool = False  # create or update the resources (needs credentials)
endpoint_url: str = ""  # an AWS-compatible endpoint such as a moto server; empty for AWS

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from mlprep.deploy import plots
from mlprep.deploy.costs import Sizes
from mlprep.deploy.plan import Target, write_plan
from mlprep.runner import outputs

roles = {f"{r}_role": f"arn:aws:iam::{account}:role/{name}" for r, name in
         (("glue", glue_role), ("flink", flink_role), ("sagemaker", sagemaker_role), ("states", states_role))}
plan = write_plan(out_dir, job_config=job, spec=spec, pipeline=pipeline,
                  target=Target(region=region, bucket=bucket, prefix=prefix, **roles),
                  sizes=Sizes(runs_per_day=runs_per_day, glue_workers=glue_workers,
                              flink_parallelism=flink_parallelism, kinesis_shards=kinesis_shards))
display(Markdown((Path(out_dir) / "SUMMARY.md").read_text()))

# %% [markdown]
# ## The state machine
# Glue job (`startJobRun.sync` waits for it), then the SageMaker pipeline, polled until it ends.
# Every task has a timeout and retries transient errors with backoff; any other error is caught
# (dashed red) into `DeploymentFailed`, which carries the cause.

# %%
machine = json.loads((Path(out_dir) / plan["files"]["state_machine"]).read_text())
plots.state_machine(machine)
outputs.figure(plt.gcf(), "state_machine")
plt.show()

# %% [markdown]
# ## What it costs per day

# %%
plots.costs(plan)
outputs.figure(plt.gcf(), "costs")
plt.show()

# %% [markdown]
# ## The files, and the code uploaded to content-hashed keys

# %%
display(pd.DataFrame([{"artifact": k, "file": v} for k, v in plan["files"].items()]))
pd.DataFrame([{"code": k, "s3 uri": v} for k, v in plan["code"].items() if k != "pipeline"]
             + [{"code": "pipeline", "s3 uri": u} for u in plan["code"]["pipeline"]])

# %% [markdown]
# ## Apply (only when `apply=True`)
# First what would change (reads only; missing roles, a wrong account or a denied permission
# stop here, by name), then the changes, then the state of each resource.

# %%
from mlprep.deploy.apply import Deployment

deployed = None
if apply:
    deployment = Deployment(out_dir, endpoint_url or None)
    changes, warnings = deployment.diff()
    for w in warnings:
        print("warning:", w)
    display(pd.DataFrame([vars(c) for c in changes]))
    deployment.apply()
    deployed = deployment.status()
    display(pd.DataFrame(deployed))
else:
    print(f"plan only: nothing created. To deploy: mlprep deploy apply {out_dir}")

# %%
outputs.save({"plan_dir": str(Path(out_dir).resolve()), "resources": len(plan["resources"]),
              "total_usd_per_day": plan["total_usd_per_day"], "applied": bool(apply),
              "status": deployed})
