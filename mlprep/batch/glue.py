"""A batch job exported as an AWS Glue job: the script (PySpark, ``getResolvedOptions``,
``job.init`` / ``job.commit``) and the CreateJob arguments.

The script runs the job on Glue's Spark with ``mlprep.batch.engines.spark.SparkEngine`` (mlprep installed on the
workers through ``--additional-python-modules``), so the Glue job has the same quarantine, row
accounting, quality rules, bookmarks (in the output table's ``_mlprep/``, hence Glue's own job
bookmarks off) and atomic publish as a local run. The job config is embedded in the script;
its parameters become job arguments (``--data_dir s3://...``).
"""

from __future__ import annotations

import json
import pprint
from pathlib import Path
from typing import Any

from mlprep import __version__
from mlprep.awsnames import role_arn
from mlprep.batch.config import load_job
from mlprep.errors import ConfigError
from mlprep.yamlconf import read_mapping

GLUE_VERSION = "5.0"  # Spark 3.5, Python 3.11

SCRIPT = '''"""AWS Glue job {name!r}, exported by mlprep {version} (mlprep batch export-glue).

Job arguments: --JOB_NAME (set by Glue){arg_doc}
"""

import sys

from awsglue.context import GlueContext
from awsglue.job import Job
from awsglue.utils import getResolvedOptions
from pyspark.context import SparkContext

from mlprep.batch.engines.spark import SparkEngine
from mlprep.batch.job import run_job

JOB_CONFIG = {config}
PARAMETERS = {params!r}  # job parameters, passed as --NAME VALUE
PARTITION_KEYS = {partition_keys!r}  # the output's partitionKeys (Hive-style folders, Glue Data Catalog)

args = getResolvedOptions(sys.argv, ["JOB_NAME", *[p for p in PARAMETERS if "--" + p in sys.argv]])
glue_context = GlueContext(SparkContext.getOrCreate())
spark = glue_context.spark_session
spark.conf.set("spark.sql.session.timeZone", "UTC")
job = Job(glue_context)
job.init(args["JOB_NAME"], args)

result = run_job(JOB_CONFIG, {{p: args[p] for p in PARAMETERS if p in args}}, engine=SparkEngine(spark), progress=False)
print(f"{{result.status}}: {{result.rows}} -> {{result.summary_path}}")
job.commit()
'''


def export(config: str | Path, out: str | Path, *, role: str = "arn:aws:iam::123456789012:role/GlueJobRole",
           script_location: str | None = None, mlprep_wheel: str | None = None, worker_type: str = "G.1X",
           workers: int = 2, timeout_minutes: int = 60, job_name: str | None = None) -> dict[str, Path]:
    """Write ``<out>/<job>.py`` and ``<out>/<job>.job.json`` (CreateJob arguments)."""
    role_arn(role, "--role")
    if workers < 2:
        raise ConfigError("--workers", "Glue needs at least 2 workers")
    raw = read_mapping(config, "job config", "config")
    declared = raw.get("parameters") or {}
    # validate with placeholder values: a broken config fails here, not on Glue
    load_job(raw, {k: (v or {}).get("default") or _placeholder((v or {}).get("type", "str"))
                   for k, v in declared.items()})
    name = job_name or raw["name"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arg_doc = "".join(f", --{k}" for k in declared)
    parts = list((raw.get("output") or {}).get("partition_by") or {})
    script = SCRIPT.format(name=name, version=__version__, arg_doc=arg_doc,
                           config=pprint.pformat(raw, sort_dicts=False, width=110),
                           params=list(declared), partition_keys=parts)
    script_path = out / f"{name}.py"
    script_path.write_text(script)
    wheel = mlprep_wheel or f"s3://YOUR-BUCKET/mlprep/mlprep-{__version__}-py3-none-any.whl"
    defaults: dict[str, Any] = {
        "--job-language": "python",
        "--additional-python-modules": wheel,
        "--job-bookmark-option": "job-bookmark-disable",  # mlprep's bookmarks live with the output
        "--enable-glue-datacatalog": "true",
        "--enable-metrics": "true",
        "--enable-continuous-cloudwatch-log": "true",
    }
    for k, v in declared.items():
        if (v or {}).get("default") is not None:
            defaults[f"--{k}"] = str(v["default"])
    job = {"Name": name, "Description": raw.get("description", ""), "Role": role,
           "Command": {"Name": "glueetl", "ScriptLocation": script_location or f"s3://YOUR-BUCKET/glue/{name}.py",
                       "PythonVersion": "3"},
           "GlueVersion": GLUE_VERSION, "WorkerType": worker_type, "NumberOfWorkers": workers,
           "Timeout": timeout_minutes, "MaxRetries": 0, "ExecutionProperty": {"MaxConcurrentRuns": 1},
           "DefaultArguments": defaults, "Tags": {"mlprep:job": name}}
    job_path = out / f"{name}.job.json"
    job_path.write_text(json.dumps(job, indent=2) + "\n")
    return {"script": script_path, "job": job_path}


def _placeholder(kind: str) -> Any:
    return {"int": 0, "float": 0.0, "bool": False, "date": "2026-01-01"}.get(kind, "/tmp")
