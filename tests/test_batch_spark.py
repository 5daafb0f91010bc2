"""The demo batch job on Spark (local[2]) against the embedded engine: same rows, schema,
values, quarantine and quality outcomes; bookmarks and publish as the embedded engine's."""

from __future__ import annotations

import pandas as pd
import pytest

pyspark = pytest.importorskip("pyspark")

from mlprep.batch.job import read_output, run_job  # noqa: E402
from mlprep.batch.spark import run_job_spark, session  # noqa: E402
from tests.conftest import JOB  # noqa: E402


@pytest.fixture(scope="module")
def spark():
    s = session("local[2]")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def both(small_data, spark, tmp_path_factory):
    d = tmp_path_factory.mktemp("parity")
    params = {"data_dir": str(small_data.out_dir)}
    sp = run_job_spark(JOB, {**params, "out_dir": str(d / "spark")}, spark=spark, progress=False)
    du = run_job(JOB, {**params, "out_dir": str(d / "duck")}, progress=False)
    return sp, du, d


def test_rows_quarantine_and_quality_match(both):
    sp, du, _ = both
    assert sp.status == du.status == "succeeded"
    assert sp.summary["engine"]["name"] == "spark"
    assert sp.rows == du.rows
    r = sp.rows
    assert r["read"] == r["written"] + r["quarantined"] + r["deduplicated"] + r["filtered"]
    assert sp.summary["quarantine"]["by_reason"] == du.summary["quarantine"]["by_reason"]
    assert sp.summary["quarantine"]["by_stage"] == du.summary["quarantine"]["by_stage"]
    q_sp = pd.read_parquet(sp.summary["quarantine"]["file"])
    q_du = pd.read_parquet(du.summary["quarantine"]["file"])
    key = ["position", "stage", "reason"]
    assert sorted(map(tuple, q_sp[key].values.tolist())) == sorted(map(tuple, q_du[key].values.tolist()))
    assert [(x["rule"], x["passed"]) for x in sp.summary["quality"]["rules"]] == \
        [(x["rule"], x["passed"]) for x in du.summary["quality"]["rules"]]
    for a, b in zip(sp.summary["quality"]["rules"], du.summary["quality"]["rules"], strict=True):
        if isinstance(a.get("metric"), float):
            assert a["metric"] == pytest.approx(b["metric"], rel=1e-9)


def test_output_schema_partitions_and_values_match(both):
    sp, du, _ = both
    import json
    from pathlib import Path

    manifests = [json.loads((Path(r.summary["output"]["path"]) / "_mlprep" / "manifest.json").read_text())
                 for r in (sp, du)]
    assert manifests[0]["schema"] == manifests[1]["schema"]  # types as the embedded engine names them
    assert sp.summary["output"]["partitions"] == du.summary["output"]["partitions"]
    a = read_output(sp.summary["output"]["path"]).sort_values("txn_id").reset_index(drop=True)
    b = read_output(du.summary["output"]["path"]).sort_values("txn_id").reset_index(drop=True)
    assert list(a.columns) == list(b.columns)
    assert dict(a.dtypes.astype(str)) == dict(b.dtypes.astype(str))
    assert len(a) == len(b) == sp.rows["written"]
    for c in a.columns:
        if pd.api.types.is_float_dtype(a[c]):
            assert a[c].sum() == pytest.approx(b[c].sum(), rel=1e-9), c
            assert ((a[c] - b[c]).abs().fillna(0) <= 1e-9 * (1 + b[c].abs().fillna(0))).all(), c
        else:
            assert a[c].astype(str).tolist() == b[c].astype(str).tolist(), c
    # Spark's day-of-week numbering is not DuckDB's: the config's isodow is translated
    assert set(a["day_of_week"]) <= set(range(1, 8))
    iso = pd.to_datetime(a["ts"]).dt.dayofweek + 1
    assert (a["day_of_week"] == iso).all()


def test_files_per_partition_and_bookmarks(both, small_data, spark):
    sp, _, d = both
    from pathlib import Path

    out = Path(sp.summary["output"]["path"])
    for part in out.iterdir():
        if part.is_dir() and part.name.startswith("dt="):
            assert len(list(part.glob("*.parquet"))) == 1  # no small files
    again = run_job_spark(JOB, {"data_dir": str(small_data.out_dir), "out_dir": str(d / "spark")}, spark=spark,
                          progress=False)
    assert again.status == "noop"  # the bookmark saw these files
