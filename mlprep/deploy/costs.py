"""What a plan costs to run per day, from a price table (mlprep's own, ``mlprep/deploy/prices.yaml``,
or one the user edits and gives as ``--prices``) and the sizes of the plan."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mlprep.errors import ConfigError
from mlprep.yamlconf import load_yaml, read_mapping

PACKAGED_PRICES = "mlprep/deploy/prices.yaml"  # shipped as package data
DPU_PER_WORKER = {"G.025X": 0.25, "G.1X": 1, "G.2X": 2, "G.4X": 4, "G.8X": 8}


@dataclass
class Sizes:
    """How big and how often (per day); the costs scale with these."""

    runs_per_day: int = 1
    glue_worker_type: str = "G.1X"
    glue_workers: int = 2
    glue_minutes_per_run: float = 10
    flink_parallelism: int = 2  # KPUs (parallelism per KPU 1)
    kinesis_shards: int = 1
    processing_instance: str = "ml.m5.xlarge"
    processing_minutes_per_run: float = 10  # preprocess + evaluate
    training_instance: str = "ml.m5.xlarge"
    training_minutes_per_run: float = 15
    endpoint_instance: str = "ml.m5.large"
    endpoint_instances: int = 1
    state_transitions_per_run: int = 200  # polling the pipeline every minute
    data_gb: float = 10

    def check(self) -> None:
        """Counts a deployment can have (a negative or zero one would plan a wrong bill)."""
        for field, option, least in (("runs_per_day", "--runs-per-day", 0), ("glue_workers", "--glue-workers", 2),
                                     ("flink_parallelism", "--flink-parallelism", 1),
                                     ("kinesis_shards", "--kinesis-shards", 1),
                                     ("endpoint_instances", "endpoint_instances", 1)):
            if getattr(self, field) < least:
                raise ConfigError(option, f"must be at least {least}, got {getattr(self, field)}")
        for field in ("glue_minutes_per_run", "processing_minutes_per_run", "training_minutes_per_run",
                      "state_transitions_per_run", "data_gb"):
            if not getattr(self, field) >= 0:
                raise ConfigError(field, f"must be >= 0, got {getattr(self, field)}")


def _usd(value: Any, key: str) -> float:
    """A price: a finite number >= 0."""
    try:
        usd = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--prices {key}", f"expected a price in USD, got {value!r}") from None
    if not 0 <= usd < float("inf"):
        raise ConfigError(f"--prices {key}", f"expected a price >= 0, got {value!r}")
    return usd


def load_prices(path: str | Path | None = None) -> dict[str, Any]:
    """The price table at ``path``, or mlprep's own (on-demand, us-east-1)."""
    if path is None:
        return read_mapping(load_yaml(resources.files("mlprep.deploy").joinpath("prices.yaml").read_text()),
                            "price table", "--prices")
    return read_mapping(str(path), "price table", "--prices")


def estimate(sizes: Sizes, prices: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per billed item: what, quantity per day, unit price, USD per day."""
    def price(key: str) -> float:
        if key not in prices:
            raise ConfigError("--prices", f"the price table has no {key!r}")
        return _usd(prices[key], key)

    def instance(name: str) -> float:
        table = prices.get("sagemaker_instance_hour") or {}
        if name not in table:
            raise ConfigError("--prices", f"no price for SageMaker instance {name!r} (sagemaker_instance_hour)")
        return _usd(table[name], f"sagemaker_instance_hour.{name}")

    if sizes.glue_worker_type not in DPU_PER_WORKER:
        raise ConfigError("--glue-worker-type", f"one of {', '.join(DPU_PER_WORKER)}")
    r = sizes.runs_per_day
    dpu_h = DPU_PER_WORKER[sizes.glue_worker_type] * sizes.glue_workers * max(sizes.glue_minutes_per_run, 1) / 60 * r
    rows = [
        ("Glue job", f"{dpu_h:.2f} DPU-hours", price("glue_dpu_hour"), dpu_h),
        ("Managed Flink application", f"{(sizes.flink_parallelism + 1) * 24} KPU-hours", price("flink_kpu_hour"),
         (sizes.flink_parallelism + 1) * 24),
        ("Kinesis streams (events, features)", f"{2 * sizes.kinesis_shards * 24} shard-hours",
         price("kinesis_shard_hour"), 2 * sizes.kinesis_shards * 24),
        ("SageMaker processing", f"{sizes.processing_minutes_per_run * r / 60:.2f} h {sizes.processing_instance}",
         instance(sizes.processing_instance), sizes.processing_minutes_per_run * r / 60),
        ("SageMaker training", f"{sizes.training_minutes_per_run * r / 60:.2f} h {sizes.training_instance}",
         instance(sizes.training_instance), sizes.training_minutes_per_run * r / 60),
        ("SageMaker endpoint", f"{24 * sizes.endpoint_instances} h {sizes.endpoint_instance}",
         instance(sizes.endpoint_instance), 24 * sizes.endpoint_instances),
        ("Step Functions", f"{sizes.state_transitions_per_run * r} transitions",
         price("step_functions_per_1000_transitions") / 1000, sizes.state_transitions_per_run * r),
        ("S3 storage", f"{sizes.data_gb:g} GB", price("s3_gb_month") / 30, sizes.data_gb),
    ]
    return [{"item": a, "quantity": q, "unit_usd": round(u, 6), "usd_per_day": round(u * n, 2)} for a, q, u, n in rows]


def as_dict(sizes: Sizes) -> dict[str, Any]:
    return asdict(sizes)
