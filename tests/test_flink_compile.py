"""A feature spec compiled to Flink SQL and run on PyFlink's local mini-cluster (its own
environment, `make flink-venv`) gives the embedded engine's feature values — every window
type, on the same replay file."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pandas as pd

from mlprep.stream.flink import FLINK_PYTHON, Endpoint, compile_sql, run_local
from mlprep.stream.runner import run_stream
from mlprep.stream.spec import load_spec
from tests.conftest import ROOT

SPEC = ROOT / "conf" / "features" / "transactions.yaml"


def _embedded(out, name):
    e = pd.concat([pd.read_parquet(p) for p in glob.glob(f"{out}/offline/{name}/**/*.parquet", recursive=True)])
    e = e.sort_values("write_time", kind="stable").drop_duplicates(["user_id", "window_start"], keep="last")
    e["window_start"] = pd.to_datetime(e["window_start"], unit="ms")
    e["window_end"] = pd.to_datetime(e["window_end"], unit="ms")
    return e


def _flink(out, name):
    f = pd.concat([pd.read_json(p, lines=True, dtype={"user_id": str}) for p in glob.glob(f"{out}/{name}/part-*")])
    f["window_start"] = pd.to_datetime(f["window_start"], format="mixed")
    f["window_end"] = pd.to_datetime(f["window_end"], format="mixed")
    return f


def test_flink_sql_gives_the_embedded_engine_s_features(small_data, tmp_path):
    # a missing engine is a failure, never a skip: `make test` builds it
    assert FLINK_PYTHON.exists(), "PyFlink environment missing: run `make flink-venv` (make test builds it)"
    spec = load_spec(SPEC)
    run_stream(SPEC, str(small_data.events), tmp_path / "emb", progress=False)
    sql = compile_sql(spec, Endpoint("filesystem", path=str(small_data.events)),
                      Endpoint("filesystem", path=str(tmp_path / "flink")))
    (tmp_path / "job.sql").write_text(sql)
    run_local(tmp_path / "job.sql")
    for w in spec.windows:
        name = f"{spec.name}_{w.name}"
        e, f = _embedded(tmp_path / "emb", name), _flink(tmp_path / "flink", name)
        m = e.merge(f, on=["user_id", "window_start"], how="outer", suffixes=("_e", "_f"), indicator=True)
        assert (m["_merge"] == "both").all(), f"{name}: windows differ"
        assert len(m) > 100
        assert (m["window_end_e"] == m["window_end_f"]).all()
        for feat in spec.feature_names(w):
            a, b = m[f"{feat}_e"].astype(float), m[f"{feat}_f"].astype(float)
            assert (a.isna() == b.isna()).all(), feat
            assert ((a - b).abs()[a.notna()] <= 1e-9 * (1 + a.abs()[a.notna()])).all(), feat


def test_compiled_sql_shape_and_kinesis_connectors(tmp_path):
    out = tmp_path / "job.sql"
    p = subprocess.run([sys.executable, "-m", "mlprep", "stream", "compile", str(SPEC), "--target", "flink-sql",
                        "--out", str(out), "--source-stream-arn", "arn:aws:kinesis:eu-west-1:123456789012:stream/events",
                        "--sink-stream-arn", "arn:aws:kinesis:eu-west-1:123456789012:stream/features",
                        "--region", "eu-west-1"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    sql = out.read_text()
    assert "WATERMARK FOR event_time AS event_time - INTERVAL '30' SECOND" in sql
    assert "TUMBLE(TABLE user_txn_features_events, DESCRIPTOR(event_time), INTERVAL '5' MINUTE)" in sql
    assert "HOP(TABLE user_txn_features_events, DESCRIPTOR(event_time), INTERVAL '1' MINUTE, INTERVAL '10' MINUTE)" in sql
    assert "SESSION(TABLE user_txn_features_events PARTITION BY `user_id`, DESCRIPTOR(event_time), INTERVAL '10' MINUTE)" in sql
    assert "'connector' = 'kinesis'" in sql and "'aws.region' = 'eu-west-1'" in sql
    assert "'source.init.position' = 'TRIM_HORIZON'" in sql
    assert "STDDEV_SAMP(`amount`)" in sql and "COUNT(DISTINCT `merchant_id`)" in sql
    assert "WHERE amount IS NOT NULL AND amount > 0" in sql
    assert sql.count("INSERT INTO") == 3 and "EXECUTE STATEMENT SET" in sql
    p = subprocess.run([sys.executable, "-m", "mlprep", "stream", "compile", str(SPEC), "--target", "spark",
                        "--out", str(out)], capture_output=True, text=True)
    assert p.returncode == 2 and "--target: unknown target 'spark'" in p.stderr


def test_flink_environment_found_without_the_checkout(tmp_path):
    """MLPREP_FLINK_PYTHON names PyFlink's python; else `.venv-flink` beside the running
    environment (as `make flink-venv` lays it out), wherever the process runs from."""
    code = "from mlprep.stream.flink import FLINK_PYTHON; print(FLINK_PYTHON)"
    env = {k: v for k, v in os.environ.items() if k != "MLPREP_FLINK_PYTHON"}
    default = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert default.stdout.strip() == str(Path(sys.prefix).parent / ".venv-flink" / "bin" / "python")
    named = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                           env={**env, "MLPREP_FLINK_PYTHON": "/opt/flink/bin/python"})
    assert named.stdout.strip() == "/opt/flink/bin/python"
    # the job script the local run starts is package data, not a path into a source tree
    assert (resources.files("mlprep.stream") / "flink_job.py").is_file()


def test_compile_refuses_what_flink_would_not_run(tmp_path):
    """Parallelism 0, a malformed ARN and streams in two regions are one-line errors; the ARNs'
    region is the default."""
    base = [sys.executable, "-m", "mlprep", "stream", "compile", str(SPEC), "--out", str(tmp_path / "f.sql")]
    arn = "arn:aws:kinesis:eu-west-1:123456789012:stream/"
    for extra, said in ((["--parallelism", "0"], "--parallelism: must be at least 1, got 0"),
                        (["--source-stream-arn", "notanarn"], "--source-stream-arn: not a Kinesis stream ARN"),
                        (["--source-stream-arn", arn + "ev", "--region", "us-east-1"],
                         "the streams' regions differ: --source-stream-arn eu-west-1, --region us-east-1")):
        p = subprocess.run([*base, *extra], capture_output=True, text=True)
        assert p.returncode == 2 and said in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    p = subprocess.run([*base, "--source-stream-arn", arn + "ev", "--sink-stream-arn", arn + "f"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    sql = (tmp_path / "f.sql").read_text()
    assert "'aws.region' = 'eu-west-1'" in sql and "us-east-1" not in sql
