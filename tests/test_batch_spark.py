"""The demo batch job on Spark (local[2]) against the embedded engine: same rows, schema,
values, quarantine and quality outcomes; bookmarks and publish as the embedded engine's."""

from __future__ import annotations

import pandas as pd
import pyspark  # noqa: F401  (a missing engine fails the suite, never skips: mlprep[spark] is in the lock)
import pytest

from mlprep.batch.engines.spark import SparkEngine, session
from mlprep.batch.job import read_output, run_job
from tests.conftest import JOB
from tests.oracle import assert_same_table


@pytest.fixture(scope="module")
def spark():
    s = session("local[2]")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def both(small_data, spark, tmp_path_factory):
    d = tmp_path_factory.mktemp("parity")
    params = {"data_dir": str(small_data.out_dir)}
    sp = run_job(JOB, {**params, "out_dir": str(d / "spark")}, engine=SparkEngine(spark), progress=False)
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
    assert_same_table(a, b)
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
    again = run_job(JOB, {"data_dir": str(small_data.out_dir), "out_dir": str(d / "spark")},
                    engine=SparkEngine(spark), progress=False)
    assert again.status == "noop"  # the bookmark saw these files


def test_exported_glue_job_runs_under_pyspark_and_matches(both, small_data, tmp_path):
    """The exported script, run by plain PySpark with a stand-in `awsglue`, gives the embedded
    engine's output."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    _, du, _ = both
    p = subprocess.run([sys.executable, "-m", "mlprep", "batch", "export-glue", str(JOB), "--out", str(tmp_path / "g"),
                        "--role", "arn:aws:iam::123456789012:role/glue"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    script, job = tmp_path / "g" / "transactions.py", json.loads((tmp_path / "g" / "transactions.job.json").read_text())
    assert job["Command"]["Name"] == "glueetl" and job["GlueVersion"] == "5.0" and job["NumberOfWorkers"] == 2
    assert job["DefaultArguments"]["--job-bookmark-option"] == "job-bookmark-disable"
    text = script.read_text()
    assert "getResolvedOptions" in text and "job.init(" in text and "job.commit()" in text
    assert "PARTITION_KEYS = ['dt']" in text
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "glue_stub"), str(ROOT)]),
           "GLUE_STUB_COMMIT_FILE": str(tmp_path / "commit.json")}
    p = subprocess.run([sys.executable, str(script), "--JOB_NAME", "transactions-test", "--data_dir",
                        str(small_data.out_dir), "--out_dir", str(tmp_path / "glue-out")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((tmp_path / "commit.json").read_text()) == {"job": "transactions-test", "state": "committed"}
    assert_same_table(read_output(str(tmp_path / "glue-out" / "curated" / "transactions")),
                      read_output(du.summary["output"]["path"]))
    p = subprocess.run([sys.executable, "-m", "mlprep", "batch", "export-glue", str(JOB), "--out", str(tmp_path / "x"),
                        "--role", "admin"], capture_output=True, text=True)
    assert p.returncode == 2 and "--role: not an IAM role ARN" in p.stderr


SCENARIOS = {
    "choice_cast": ([{"id": 1, "amount": 12.5}, {"id": 2, "amount": "7.25"}, {"id": 3, "amount": "N/A"},
                     {"id": 4, "amount": None}, {"id": 5, "amount": 3}],
                    [{"resolve_choice": {"input": "r", "specs": {"amount": "cast:double"}}}], "r"),
    "choice_project": ([{"id": 1, "amount": 12.5}, {"id": 2, "amount": "7.25"}, {"id": 5, "amount": 3}],
                       [{"resolve_choice": {"input": "r", "specs": {"amount": "project:double"}}}], "r"),
    "choice_make_cols": ([{"id": 1, "amount": 12.5}, {"id": 2, "amount": "7.25"}, {"id": 3, "amount": "N/A"},
                          {"id": 4, "amount": None}, {"id": 5, "amount": 3}],
                         [{"resolve_choice": {"input": "r", "specs": {"amount": "make_cols"}}}], "r"),
    "steps": ([
        {"id": "a", "n": "1", "ts": "2026-01-01T10:00:00Z", "dev": {"os": "ios", "hw": {"ram": 4}}},
        {"id": "a", "n": "2", "ts": "2026-01-01T09:00:00Z", "dev": {"os": "and", "hw": {"ram": 8}}},
        {"id": "b", "n": "x", "ts": "2026-01-02T00:00:00Z", "dev": None},
        {"id": "c", "n": "-1", "ts": "2026-01-03T00:00:00Z", "dev": {"os": "ios", "hw": None}},
        {"id": None, "n": "3", "ts": "2026-01-04T00:00:00Z", "dev": {"os": "web", "hw": {"ram": 2}}},
        {"id": "d", "n": "5", "ts": "not a time", "dev": {"os": "web"}}], [
        {"relationalize": {"input": "r", "separator": "_"}},
        {"apply_mapping": {"input": "r", "mappings": [
            ["id", "string", "id", "string"], ["n", "string", "n", "long"], ["ts", "string", "ts", "timestamp"],
            ["dev_os", "string", "os", "string"], ["dev_hw_ram", "long", "ram", "int"]]}},
        {"require": {"input": "r", "columns": ["id"]}},
        {"filter": {"input": "r", "where": "n > 0", "reason": "non-positive n"}},
        {"dedupe": {"input": "r", "keys": ["id"], "order_by": ["ts"]}},
        {"derive": {"input": "r", "columns": {"h": "hour(ts)", "dow": "isodow(ts)", "day": "strftime(ts, '%Y-%m-%d')"}}}],
        "r"),
    "arrays": ([{"id": 1, "items": [{"sku": "a", "q": 2}, {"sku": "b", "q": 1}]}, {"id": 2, "items": [{"sku": "c", "q": 5}]},
                {"id": 3, "items": None}],
               [{"relationalize": {"input": "r", "output": "root"}}], "root_items"),
}


@pytest.mark.parametrize("json_check", ["variant", "python"])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_transforms_match_the_embedded_engine(name, json_check, spark, tmp_path):
    """Both ways of judging JSON lines: Spark 4's VARIANT parse and the pandas UDF that Spark
    3.5 (Glue 5.0) uses."""
    import json

    recs, steps, out_input = SCENARIOS[name]
    (tmp_path / "in").mkdir()
    text = "\n".join(json.dumps(r) for r in recs) + '\n{broken\n[1, 2]\n"text"\n'
    (tmp_path / "in" / "a.jsonl").write_text(text)

    def cfg(tag):
        return {"name": "t", "sources": {"r": {"format": "jsonl", "path": str(tmp_path / "in")}}, "steps": steps,
                "output": {"input": out_input, "path": str(tmp_path / tag / "t"), "quarantine": str(tmp_path / tag / "q")}}

    du = run_job(cfg("duck"), progress=False)
    sp = run_job(cfg("spark"), engine=SparkEngine(spark, json_check=json_check), progress=False)
    assert sp.rows == du.rows
    assert sp.summary["quarantine"]["by_reason"] == du.summary["quarantine"]["by_reason"]
    qa = pd.read_parquet(sp.summary["quarantine"]["file"])[["position", "stage", "reason"]]
    qb = pd.read_parquet(du.summary["quarantine"]["file"])[["position", "stage", "reason"]]
    assert sorted(map(tuple, qa.values.tolist())) == sorted(map(tuple, qb.values.tolist()))
    a = read_output(str(tmp_path / "spark" / "t"))
    b = read_output(str(tmp_path / "duck" / "t"))
    assert sorted(a.columns) == sorted(b.columns)
    cols = sorted(b.columns)
    norm = [lambda df: df[cols].astype(str).sort_values(cols).values.tolist()]
    assert norm[0](a) == norm[0](b)


def _on_both_engines(spark, tmp_path, source: dict, steps: list, **spark_args):
    """One job on the embedded engine and on Spark, each into its own folder: (duck, spark)."""
    def cfg(tag):
        return {"name": "t", "sources": {"r": source}, "steps": steps,
                "output": {"input": "r", "path": str(tmp_path / tag / "t"), "quarantine": str(tmp_path / tag / "q")}}

    # both through run_job's engine protocol: the embedded engine by default, Spark by composition
    return run_job(cfg("duck"), progress=False), run_job(cfg("spark"), engine=SparkEngine(spark, **spark_args),
                                                         progress=False)


def test_csv_malformed_rows_match_the_embedded_engine(spark, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,amount\n1,2.5\n2,3.0,EXTRA\n3,abc\n4,\n5,7\n")
    steps = [{"apply_mapping": {"input": "r", "mappings": [["id", "string", "id", "long"],
                                                           ["amount", "string", "amount", "double"]]}},
             {"require": {"input": "r", "columns": ["amount"]}}]
    du, sp = _on_both_engines(spark, tmp_path, {"format": "csv", "path": str(tmp_path / "in")}, steps)
    assert sp.rows == du.rows == {"read": 5, "written": 2, "quarantined": 3, "deduplicated": 0, "filtered": 0}
    qa = pd.read_parquet(sp.summary["quarantine"]["file"]).sort_values("position")
    qb = pd.read_parquet(du.summary["quarantine"]["file"]).sort_values("position")
    assert qa["position"].tolist() == qb["position"].tolist()
    assert [r.split(":")[0] for r in qa["reason"]] == [r.split(":")[0] for r in qb["reason"]]
    a = read_output(str(tmp_path / "spark" / "t")).sort_values("id")
    b = read_output(str(tmp_path / "duck" / "t")).sort_values("id")
    assert a.values.tolist() == b.values.tolist()


@pytest.mark.parametrize("json_check", ["variant", "python"])
def test_lines_that_are_not_strict_json_are_quarantined_as_the_embedded_engine_does(json_check, spark, tmp_path):
    """The hostile corpus's NaN / NAN / Infinity, 1e400, duplicate keys and impossible years."""
    from pathlib import Path

    corpus = Path(__file__).parent / "data" / "hostile" / "not_strict.jsonl"
    mapping = [["id", "long", "id", "long"], ["amount", "double", "amount", "double"], ["ts", "string", "ts", "timestamp"]]

    du, sp = _on_both_engines(spark, tmp_path, {"format": "jsonl", "path": str(corpus)},
                              [{"apply_mapping": {"input": "r", "mappings": mapping}}], json_check=json_check)
    assert sp.rows == du.rows == {"read": 15, "written": 4, "quarantined": 11, "deduplicated": 0, "filtered": 0}
    qa = pd.read_parquet(sp.summary["quarantine"]["file"])
    qb = pd.read_parquet(du.summary["quarantine"]["file"])
    assert dict(zip(qa["position"], qa["reason"], strict=True)) == dict(zip(qb["position"], qb["reason"], strict=True))
    assert sorted(read_output(str(tmp_path / "spark" / "t"))["id"]) == [1, 9, 10, 12]


def test_text_that_casts_to_nan_is_quarantined_as_the_embedded_engine_does(spark, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,amount\n1,2.5\n2,NaN\n3,inf\n4,1e999\n5,7\n")
    steps = [{"apply_mapping": {"input": "r", "mappings": [["id", "string", "id", "long"],
                                                           ["amount", "string", "amount", "double"]]}}]
    du, sp = _on_both_engines(spark, tmp_path, {"format": "csv", "path": str(tmp_path / "in")}, steps)
    assert sp.rows == du.rows == {"read": 5, "written": 2, "quarantined": 3, "deduplicated": 0, "filtered": 0}
    qa = pd.read_parquet(sp.summary["quarantine"]["file"]).sort_values("position")
    qb = pd.read_parquet(du.summary["quarantine"]["file"]).sort_values("position")
    assert qa[["position", "reason"]].values.tolist() == qb[["position", "reason"]].values.tolist()
    assert sorted(read_output(str(tmp_path / "spark" / "t"))["amount"]) == [2.5, 7.0]
