"""A schema catalog: every run records its inputs' and output's schemas as versions, and
reports drift between runs (columns added, removed or retyped). Optionally synced to an AWS Glue
Data Catalog (database, table with partition keys, partitions) through boto3.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from mlprep.batch.publish import write_json_atomic
from mlprep.io.fs import filesystem, is_remote, join

Schema = dict[str, str]  # column -> type


def drift(old: Schema | None, new: Schema) -> dict[str, Any]:
    """``{"added": {...}, "removed": {...}, "retyped": {col: [old, new]}}`` (empty dicts if none)."""
    old = old or {}
    return {
        "added": {c: t for c, t in new.items() if c not in old},
        "removed": {c: t for c, t in old.items() if c not in new},
        "retyped": {c: [old[c], t] for c, t in new.items() if c in old and old[c] != t},
    }


def _read(path: str) -> dict[str, Any] | None:
    if is_remote(path):
        fs, p = filesystem(path)
        if not fs.exists(p):
            return None
        with fs.open(p, "r") as f:
            return json.load(f)
    p = Path(path)
    return json.loads(p.read_text()) if p.exists() else None


def record(catalog_dir: str, dataset: str, kind: str, schema: Schema, run_id: str,
           extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Add a schema version for ``dataset`` if it changed; return the drift against the last one."""
    path = join(catalog_dir, f"{dataset}.json")
    entry = _read(path) or {"dataset": dataset, "kind": kind, "versions": []}
    last = entry["versions"][-1]["schema"] if entry["versions"] else None
    d = drift(last, schema)
    if last is None or any(d.values()):
        entry["versions"].append({"version": len(entry["versions"]) + 1, "run_id": run_id,
                                  "schema": schema, "drift": d if last is not None else None,
                                  **(extra or {})})
        write_json_atomic(path, entry)
    return d if last is not None else drift(schema, schema)


def current(catalog_dir: str, dataset: str) -> dict[str, Any] | None:
    return _read(join(catalog_dir, f"{dataset}.json"))


_GLUE_TYPES = {"VARCHAR": "string", "BIGINT": "bigint", "INTEGER": "int", "DOUBLE": "double",
               "FLOAT": "float", "BOOLEAN": "boolean", "TIMESTAMP": "timestamp", "DATE": "date",
               "SMALLINT": "smallint", "TINYINT": "tinyint"}


def glue_type(duck: str) -> str:
    if duck.startswith("DECIMAL"):
        return duck.lower()
    return _GLUE_TYPES.get(duck, "string")


def sync_glue(database: str, table: str, location: str, schema: Schema, partition_keys: list[str],
              partitions: list[dict[str, str]], endpoint_url: str | None = None) -> None:
    """Create or update the Glue database, table (Parquet SerDe) and partitions."""
    import boto3

    glue = boto3.client("glue", endpoint_url=endpoint_url)
    with contextlib.suppress(glue.exceptions.AlreadyExistsException):
        glue.create_database(DatabaseInput={"Name": database})
    sd = {
        "Columns": [{"Name": c, "Type": glue_type(t)} for c, t in schema.items() if c not in partition_keys],
        "Location": location,
        "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
        "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
        "SerdeInfo": {"SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"},
    }
    tin = {"Name": table, "StorageDescriptor": sd, "TableType": "EXTERNAL_TABLE",
           "PartitionKeys": [{"Name": k, "Type": "string"} for k in partition_keys],
           "Parameters": {"classification": "parquet"}}
    try:
        glue.create_table(DatabaseName=database, TableInput=tin)
    except glue.exceptions.AlreadyExistsException:
        glue.update_table(DatabaseName=database, TableInput=tin)
    existing: dict[tuple[str, ...], str] = {}
    for page in glue.get_paginator("get_partitions").paginate(DatabaseName=database, TableName=table):
        existing |= {tuple(p["Values"]): p["StorageDescriptor"]["Location"] for p in page["Partitions"]}
    new = []
    for part in partitions:
        values = [part[k] for k in partition_keys]
        psd = dict(sd, Location=join(location, *[f"{k}={part[k]}" for k in partition_keys]))
        if tuple(values) not in existing:
            new.append({"Values": values, "StorageDescriptor": psd})
        elif existing[tuple(values)] != psd["Location"]:  # a new version moved it (S3 layout)
            glue.update_partition(DatabaseName=database, TableName=table, PartitionValueList=values,
                                  PartitionInput={"Values": values, "StorageDescriptor": psd})
    for i in range(0, len(new), 100):
        glue.batch_create_partition(DatabaseName=database, TableName=table,
                                    PartitionInputList=new[i:i + 100])
