"""S3 sources and outputs against a real moto S3/Glue server; SQL sources on PostgreSQL and MariaDB."""

from __future__ import annotations

import json
import uuid

import boto3
import pandas as pd
import pytest

from mlprep.batch.job import read_output, run_job
from mlprep.batch.publish import table_location
from mlprep.errors import SourceError
from tests.conftest import MYSQL_URL, PG_URL
from tests.oracle import demo_job
from tests.test_batch_job import _job_dict, _norm


def test_demo_job_from_and_to_s3_with_glue_catalog(small_data, s3_bucket, moto_server, tmp_path):
    s3 = boto3.client("s3", endpoint_url=moto_server)
    s3.upload_file(str(small_data.transactions), s3_bucket, "raw/transactions.jsonl")
    cfg = _job_dict(str(small_data.out_dir), f"s3://{s3_bucket}/lake",
                    path=f"s3://{s3_bucket}/raw/transactions.jsonl")
    cfg["output"]["glue_database"] = "mlprep_test"
    r = run_job(cfg)
    _, counts = demo_job(small_data.out_dir)
    assert r.rows == counts
    out_url = f"s3://{s3_bucket}/lake/curated/transactions"
    expected, _ = demo_job(small_data.out_dir)
    pd.testing.assert_frame_equal(_norm(read_output(out_url)).drop(columns="amount_z"),
                                  _norm(expected).drop(columns="amount_z"), check_dtype=False)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="lake/")["Contents"]]
    assert "lake/curated/transactions/_LATEST" in keys
    assert any(k.startswith("lake/quarantine/transactions/run_id=") for k in keys)
    assert any(k.startswith("lake/curated/_runs/transactions/") and k.endswith("summary.json") for k in keys)
    glue = boto3.client("glue", endpoint_url=moto_server)
    t = glue.get_table(DatabaseName="mlprep_test", Name="transactions")["Table"]
    assert t["StorageDescriptor"]["Location"] == table_location(out_url)
    assert [k["Name"] for k in t["PartitionKeys"]] == ["dt"]
    cols = {c["Name"]: c["Type"] for c in t["StorageDescriptor"]["Columns"]}
    assert cols["amount"] == "double" and cols["ts"] == "timestamp" and "dt" not in cols
    parts = glue.get_partitions(DatabaseName="mlprep_test", TableName="transactions")["Partitions"]
    published = sorted(p["dt"] for p in r.summary["output"]["partitions"])
    assert len(published) >= 5 and sorted(p["Values"][0] for p in parts) == published
    base = table_location(out_url).rstrip("/")
    assert all(p["StorageDescriptor"]["Location"].rstrip("/") == f"{base}/dt={p['Values'][0]}" for p in parts)
    # bookmarks use the S3 ETag: a second run has nothing new
    assert run_job(cfg).status == "noop"


def test_csv_and_parquet_sources_on_s3(s3_bucket, tmp_path):
    import s3fs

    fs = s3fs.S3FileSystem()
    with fs.open(f"{s3_bucket}/in/a.csv", "w") as f:
        f.write("id,v\n1,2.5\n2,oops\n")
    with fs.open(f"{s3_bucket}/pq/a.parquet", "wb") as f:
        pd.DataFrame({"id": [10, 11], "v": [1.0, 2.0]}).to_parquet(f)
    for fmt, path, expect in (("csv", f"s3://{s3_bucket}/in", {1: 2.5}), ("parquet", f"s3://{s3_bucket}/pq", {10: 1.0, 11: 2.0})):
        cfg = {"name": "x", "sources": {"r": {"format": fmt, "path": path}},
               "steps": [{"apply_mapping": {"input": "r", "mappings": [["id", "string", "id", "long"], ["v", "string", "v", "double"]]}}],
               "output": {"input": "r", "path": str(tmp_path / fmt / "t"), "quarantine": str(tmp_path / fmt / "q")}}
        r = run_job(cfg)
        assert read_output(cfg["output"]["path"]).set_index("id")["v"].to_dict() == expect
        assert r.rows["quarantined"] == (1 if fmt == "csv" else 0)


@pytest.fixture(params=["postgresql", "mysql"])
def sql_table(request):
    url = PG_URL if request.param == "postgresql" else MYSQL_URL
    name = f"orders_{uuid.uuid4().hex[:8]}"
    from mlprep.io.sql import _connect

    con, _ = _connect(url)
    cur = con.cursor()
    cur.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, customer VARCHAR(20), total DECIMAL(10,2), created TIMESTAMP)")
    cur.executemany(f"INSERT INTO {name} VALUES (%s, %s, %s, %s)",
                    [(i, f"c{i % 3}", i * 1.5, f"2026-11-0{1 + i % 5} 12:00:00") for i in range(1, 11)])
    con.commit()
    yield url, name, con
    cur = con.cursor()
    cur.execute(f"DROP TABLE {name}")
    con.commit()
    con.close()


def test_sql_source_incremental_by_key(sql_table, tmp_path):
    url, name, con = sql_table
    cfg = {"name": "orders", "sources": {"o": {"format": "sql", "url": url, "table": name, "incremental_key": "id"}},
           "steps": [{"derive": {"input": "o", "columns": {"total": "total::DOUBLE"}}}],
           "output": {"input": "o", "path": str(tmp_path / "c" / "orders"), "quarantine": str(tmp_path / "q"),
                      "partition_by": {"day": "strftime(created, '%Y-%m-%d')"}}}
    r1 = run_job(cfg)
    assert r1.rows["read"] == 10 and r1.summary["sources"]["o"]["max_key"] == 10
    cur = con.cursor()
    cur.executemany(f"INSERT INTO {name} VALUES (%s, %s, %s, %s)", [(11, "c9", 99.5, "2026-11-09 08:00:00")])
    con.commit()
    r2 = run_job(cfg)
    assert r2.rows == {"read": 1, "written": 1, "quarantined": 0, "deduplicated": 0, "filtered": 0}
    assert r2.summary["sources"]["o"]["after_key"] == 10
    out = read_output(cfg["output"]["path"]).sort_values("id")
    assert out["id"].tolist() == list(range(1, 12))
    assert out["total"].tolist() == [i * 1.5 for i in range(1, 11)] + [99.5]
    assert run_job(cfg).status == "noop"
    assert "password" not in json.dumps(r2.summary)


def test_bookmark_set_moves_sql_key_and_marks_files(sql_table, tmp_path):
    import subprocess
    import sys

    url, name, _con = sql_table
    cfg = {"name": "orders", "sources": {"o": {"format": "sql", "url": url, "table": name, "incremental_key": "id"}},
           "output": {"input": "o", "path": str(tmp_path / "c" / "orders"), "quarantine": str(tmp_path / "q")}}
    run_job(cfg)
    from mlprep.batch.job import bookmark_set, bookmark_show

    path = tmp_path / "job.yaml"
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    p = subprocess.run([sys.executable, "-m", "mlprep", "batch", "bookmark", "set", str(path), "--source", "o",
                        "--key", "4"], capture_output=True, text=True, check=True)
    assert "bookmark set" in p.stdout
    assert bookmark_show(path)["sources"]["o"]["key"] == 4
    r = run_job(cfg)  # rows 5..10 again, appended
    assert r.rows["read"] == 6 and r.summary["sources"]["o"]["after_key"] == 4
    with pytest.raises(Exception, match="unknown source"):
        bookmark_set(path, None, "nope", key=1)


def test_passwords_are_redacted():
    from mlprep.io.sql import redact

    assert redact("postgresql://app:s3cr3t@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert redact("mysql://root@127.0.0.1/test") == "mysql://root@127.0.0.1/test"


def test_secret_parameters_never_reach_the_summary(sql_table, tmp_path):
    url, name, _con = sql_table
    cfg = {"name": "orders", "parameters": {"db_url": {"type": "str"}, "db_password": {"type": "str", "default": "x"}},
           "sources": {"o": {"format": "sql", "url": "${db_url}", "table": name}},
           "output": {"input": "o", "path": str(tmp_path / "c" / "orders"), "quarantine": str(tmp_path / "q")}}
    secret_url = url.replace("://", "://someone:hunter2@", 1) if "@" not in url else url.replace("@", ":hunter2@", 1)
    params = {"db_url": secret_url, "db_password": "hunter2"}
    if url.startswith("postgresql"):  # trust auth lets the password through: the job runs
        r = run_job(cfg, params)
        assert r.status == "succeeded" and r.rows["read"] == 10
    else:  # MariaDB's root has no password: refused, and the error names the URL without it
        with pytest.raises(SourceError, match=r"cannot connect to mysql://root:\*\*\*@127.0.0.1:3306/test: \(1045"):
            run_job(cfg, params)
    (summary,) = list((tmp_path / "c").rglob("summary.json"))  # written either way
    text = summary.read_text()
    assert "hunter2" not in text and json.loads(text)["parameters"]["db_password"] == "***"
    assert json.loads(text)["parameters"]["db_url"] == secret_url.replace("hunter2", "***")


@pytest.mark.parametrize("point", ["publish:staged", "publish:built", "publish:swapped"])
def test_sigkill_mid_publish_on_s3_leaves_the_table_whole(small_data, s3_bucket, tmp_path, point):
    """S3 has no rename: the version is written under _v/<n>/ and _LATEST is the commit point. A
    kill anywhere leaves the previous version readable and unchanged (or, after the commit, the
    new one whole); the rerun redoes exactly the unpublished work."""
    import os
    import shutil
    import signal
    import subprocess
    import sys

    src = tmp_path / "in"
    src.mkdir()
    lines = small_data.transactions.read_text().splitlines(keepends=True)
    (src / "a.jsonl").write_text("".join(lines[:2000]))
    shutil.copy(small_data.users_db, src / "users.db")
    cfg_path = tmp_path / "job.json"
    cfg_path.write_text(json.dumps(_job_dict(str(src), f"s3://{s3_bucket}/lake", path=f"{src}/*.jsonl")))
    code = "import json,sys; from mlprep.batch.job import run_job; run_job(json.load(open(sys.argv[1])))"
    subprocess.run([sys.executable, "-c", code, str(cfg_path)], check=True)
    table = f"s3://{s3_bucket}/lake/curated/transactions"
    published = _norm(read_output(table))
    (src / "b.jsonl").write_text("".join(lines[2000:]))
    p = subprocess.run([sys.executable, "-c", code, str(cfg_path)], env={**os.environ, "MLPREP_FAULT_POINT": point})
    assert p.returncode == -signal.SIGKILL
    after = _norm(read_output(table))
    if point == "publish:swapped":  # after the commit point: the new version, whole
        assert len(after) > len(published)
    else:
        pd.testing.assert_frame_equal(after, published)
    subprocess.run([sys.executable, "-c", code, str(cfg_path)], check=True)  # the rerun
    final = _norm(read_output(table))
    clean = _job_dict(str(src), str(tmp_path / "clean"), path=f"{src}/*.jsonl")
    run_job(clean)  # both files in one run: the same rows
    pd.testing.assert_frame_equal(final.drop(columns="amount_z").sort_values("txn_id").reset_index(drop=True),
                                  _norm(read_output(f"{tmp_path}/clean/curated/transactions")).drop(columns="amount_z")
                                  .sort_values("txn_id").reset_index(drop=True), check_dtype=False)
