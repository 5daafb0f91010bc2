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
# # 02 · Streaming features (Kinesis Data Analytics-style)
#
# Per-user windowed features over the event stream, with watermarks, allowed lateness and a
# late-data output, written to an offline store (SageMaker Feature Store layout) and an online
# store. The features are declared in `conf/features/transactions.yaml`. Headless:
# `papermill notebooks/02_stream_features.ipynb out.ipynb -p events PATH -p out_dir DIR`.

# %% tags=["parameters"]
spec: str = "../conf/features/transactions.yaml"  # feature spec (YAML)
events: str = "../demo/data/events.jsonl"  # JSON-lines replay file, or kinesis://STREAM
out_dir: str = "../demo/out/stream"  # offline/, online.sqlite, dead_letters/, late/, metrics/
checkpoint: str = ""  # checkpoint folder (empty: none); a restarted run resumes exactly
speedup: float = 0.0  # pace the replay by event time (0: as fast as possible)
block_kb: int = 256  # replay block size (a micro-batch)
generate: bool = False  # write sample data beside the events file first if it is missing
rows: int = 20_000  # events to generate (with generate)
seed: int = 7

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import polars as pl

from mlprep.datasets import payments
from mlprep.runner import outputs
from mlprep.stream import plots
from mlprep.stream.runner import run_stream
from mlprep.stream.spec import load_spec

if not events.startswith("kinesis://") and not Path(events).exists():
    if not generate:
        raise FileNotFoundError(f"events: {Path(events).resolve()} does not exist (make sample data with"
                                f" `mlprep data generate --out {Path(events).parent}`, or set generate = True)")
    payments.generate(Path(events).parent, rows=rows, seed=seed)

feature_spec = load_spec(spec)
summary = run_stream(feature_spec, events, out_dir, checkpoint=checkpoint or None,
                     speedup=speedup or None, progress=True, block_bytes=block_kb << 10)
pd.Series(summary).to_frame("value")

# %% [markdown]
# ## Features over time for the most active users

# %%
group = f"{feature_spec.name}_{feature_spec.windows[0].name}"
w = feature_spec.windows[0].name
offline = pl.read_parquet(Path(out_dir) / "offline" / group / "**" / "*.parquet", hive_partitioning=True)
top_users = offline.group_by("user_id").agg(pl.col(f"txn_count_{w}").sum()).sort(
    f"txn_count_{w}", descending=True)["user_id"].head(3).to_list()
plots.features_over_time(out_dir, group, [f"txn_count_{w}", f"amount_sum_{w}"], top_users)
outputs.figure(plt.gcf(), "features_over_time")
plt.show()

# %% [markdown]
# ## Watermark, open windows, late events and dead letters

# %%
plots.watermark_progress(out_dir)
plt.show()
plots.side_outputs(out_dir)
plt.show()

# %% [markdown]
# ## The online store: the latest feature vector of a user

# %%
from mlprep.stream.stores import OnlineStore

store = OnlineStore(Path(out_dir) / "online.sqlite", feature_spec)
latest = store.get(group, top_users[0])
store.close()
latest

# %%
# outputs for the next stage (mlprep run passes them on)
outputs.save({"offline": str(Path(out_dir) / "offline"), "feature_groups": summary["feature_groups"],
              "run_summary": str(Path(out_dir) / "summary.json"),
              "summary": {"features": len(feature_spec.feature_names()), "stream": {
                  k: summary[k] for k in ("events", "dead_letters", "late", "emitted", "events_per_s")}}})
