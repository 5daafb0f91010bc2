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
# # 01 · Batch ETL (Glue-style)
#
# Extract card transactions (JSON lines) and users (a SQL table), type and flatten them, drop
# duplicates, quarantine bad records with the reason, check data quality, and publish partitioned
# Parquet atomically. The job itself is declared in `conf/batch/transactions.yaml`; this notebook
# only runs it and shows what happened. Headless:
# `papermill notebooks/01_batch_etl.ipynb out.ipynb -p data_dir DATA -p out_dir OUT`.

# %% tags=["parameters"]
config: str = "../conf/batch/transactions.yaml"  # job config (YAML)
data_dir: str = "../demo/data"  # input folder (transactions.jsonl, users.db)
out_dir: str = "../demo/out"  # curated/, quarantine/ and the catalog go here
generate: bool = False  # write sample data into data_dir first if it has none
rows: int = 20_000  # rows to generate (with generate)
seed: int = 7  # seed of the generated data
max_error_rate: float = 0.05  # fail the job past this share of quarantined records

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from mlprep.batch import plots
from mlprep.batch.job import read_output, run_job
from mlprep.datasets import payments
from mlprep.runner import outputs

if not (Path(data_dir) / "transactions.jsonl").exists():
    if not generate:
        raise FileNotFoundError(f"data_dir: no transactions.jsonl in {Path(data_dir).resolve()} (make sample data"
                                f" with `mlprep data generate --out {data_dir}`, or set generate = True)")
    payments.generate(data_dir, rows=rows, seed=seed)

result = run_job(config, {"data_dir": data_dir, "out_dir": out_dir, "max_error_rate": max_error_rate})
# nothing new since the last run (its bookmark): the published table and its run's figures stay
summary = result.summary.get("previous", result.summary) if result.status == "noop" else result.summary
print(result.status, "-", result.summary["output"].get("note") or result.summary_path)
pd.DataFrame([summary["rows"]])

# %% [markdown]
# ## Row accounting
# Every record read is written, quarantined (with a reason), deduplicated or filtered.

# %%
plots.row_accounting(summary)
outputs.figure(plt.gcf(), "row_accounting")
plt.show()
pd.Series(summary["quarantine"]["by_reason"], name="quarantined records").to_frame()

# %% [markdown]
# ## Quarantine: what was rejected, why, and where it came from

# %%
q_file = summary["quarantine"].get("file")
quarantine = pd.read_parquet(q_file) if q_file else pd.DataFrame()
quarantine[["source", "position", "stage", "reason"]].head(10) if len(quarantine) else "nothing quarantined"

# %% [markdown]
# ## The published table

# %%
df = read_output(summary["output"]["path"]) if summary["status"] == "succeeded" else pd.DataFrame()
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
if len(df):
    plots.null_rates(df, axes[0])
    plots.amount_distribution(df, "amount", axes[1])
plt.tight_layout()
plt.show()
df.head()

# %% [markdown]
# ## Data quality (DQDL rules, evaluated before publishing)

# %%
plots.quality_outcomes(summary["quality"])
outputs.figure(plt.gcf(), "data_quality")
plt.show()
pd.DataFrame(summary["quality"]["rules"])[["rule", "severity", "passed", "metric"]]

# %% [markdown]
# ## Schema catalog and drift since the previous run

# %%
summary.get("catalog", {}).get("drift") or "no schema drift"

# %%
# outputs for the next stage (mlprep run passes them on)
outputs.save({"curated": summary["output"]["path"], "run_summary": str(result.summary_path),
              "status": result.status,
              "summary": {"rows": summary["rows"], "quality": {
                  "passed": sum(r["passed"] for r in summary["quality"]["rules"]),
                  "rules": len(summary["quality"]["rules"])}}})
