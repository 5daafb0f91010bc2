"""The demo job end to end against the pandas oracle, plus publish, bookmarks and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pandas as pd
import pytest

from mlprep.batch.job import bookmark_show, read_output, run_job
from mlprep.errors import ConfigError, DataQualityError, ErrorThresholdExceeded
from tests.conftest import JOB
from tests.oracle import demo_job

COLS = ["txn_id", "user_id", "merchant_id", "amount", "currency", "ts", "device_os", "device_browser",
        "device_ip", "signup_date", "country", "segment", "updated_at", "hour", "day_of_week", "amount_z", "dt"]


def _norm(df: pd.DataFrame) -> pd.DataFrame:
    df = df[COLS].sort_values("txn_id").reset_index(drop=True).copy()
    df["dt"] = df["dt"].astype(str)
    df["ts"] = pd.to_datetime(df["ts"]).astype("datetime64[us]")
    for c in ("hour", "day_of_week"):
        df[c] = df[c].astype("int64")
    for c in COLS:
        if df[c].dtype == object or str(df[c].dtype).startswith(("string", "str")):
            df[c] = df[c].astype(object).where(df[c].notna(), None)
    return df


def test_demo_job_matches_pandas_oracle(small_data, tmp_path):
    r = run_job(JOB, {"data_dir": str(small_data.out_dir), "out_dir": str(tmp_path)})
    expected, counts = demo_job(small_data.out_dir)
    assert r.status == "succeeded"
    assert r.rows == counts
    assert counts["quarantined"] > 0 and counts["deduplicated"] > 0  # the data exercises both
    got = _norm(read_output(r.summary["output"]["path"]))
    exp = _norm(expected)
    pd.testing.assert_frame_equal(got.drop(columns="amount_z"), exp.drop(columns="amount_z"), check_dtype=False)
    assert (got["amount_z"] - exp["amount_z"]).abs().max() < 1e-9
    # the summary on disk is the one returned, and its last-line path is printed by the CLI
    assert json.load(open(r.summary_path))["rows"] == counts
    q = pd.read_parquet(r.summary["quarantine"]["file"])
    assert len(q) == counts["quarantined"]
    assert set(q["position"].str.split().str[0]) == {"line"}
    assert q["reason"].str.contains("amount: cannot cast|missing required field").all()
    # quarantined positions really are those lines of the source
    lines = open(small_data.transactions).read().splitlines()
    for _, row in q.head(20).iterrows():
        txn = json.loads(lines[row["position_number"] - 1])
        assert json.loads(row["record"]).get("txn_id") == txn.get("txn_id")


def test_rerun_is_noop_and_reset_rebuilds_identically(small_data, tmp_path):
    params = {"data_dir": str(small_data.out_dir), "out_dir": str(tmp_path)}
    first = run_job(JOB, params)
    before = read_output(first.summary["output"]["path"])
    again = run_job(JOB, params)
    assert again.status == "noop" and again.rows["read"] == 0
    from mlprep.batch.job import bookmark_write

    bookmark_write(JOB, params, None)
    assert bookmark_show(JOB, params) is None
    rebuilt = run_job(JOB, params)
    assert rebuilt.summary["output"]["mode"] == "overwrite"
    pd.testing.assert_frame_equal(_norm(read_output(rebuilt.summary["output"]["path"])), _norm(before))
    # the same from the command line: `bookmark reset`, then a run rebuilds the table whole
    cli = [sys.executable, "-m", "mlprep", "batch", "bookmark", "reset", str(JOB),
           "-p", f"data_dir={small_data.out_dir}", "-p", f"out_dir={tmp_path}"]
    p = subprocess.run(cli, capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("bookmark reset (version ") and bookmark_show(JOB, params) is None
    pd.testing.assert_frame_equal(_norm(read_output(rebuilt.summary["output"]["path"])), _norm(before))  # data kept
    again = run_job(JOB, params)
    assert again.status == "succeeded" and again.summary["output"]["mode"] == "overwrite"
    assert again.rows == rebuilt.rows and bookmark_show(JOB, params) is not None
    pd.testing.assert_frame_equal(_norm(read_output(again.summary["output"]["path"])), _norm(before))


def test_incremental_files_append_only_new(small_data, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    lines = open(small_data.transactions).read().splitlines(keepends=True)
    (src / "part-1.jsonl").write_text("".join(lines[:1500]))
    shutil.copy(small_data.users_db, src / "users.db")
    cfg = _job_dict(str(src), str(tmp_path / "out"), path=f"{src}/*.jsonl")
    r1 = run_job(cfg)
    (src / "part-2.jsonl").write_text("".join(lines[1500:]))
    r2 = run_job(cfg)
    assert r2.summary["sources"]["transactions"]["files"] == 1
    assert r2.summary["sources"]["transactions"]["skipped_by_bookmark"] == 1
    assert r2.summary["output"]["mode"] == "append"
    assert r2.rows["read"] == len(lines) - 1500
    out = read_output(r2.summary["output"]["path"])
    assert len(out) == r1.rows["written"] + r2.rows["written"]
    assert run_job(cfg).status == "noop"


def _job_dict(data_dir: str, out_dir: str, path: str | None = None, **over) -> dict:
    from mlprep.yamlconf import load_yaml

    cfg = load_yaml(JOB.read_text())
    cfg["parameters"]["data_dir"]["default"] = data_dir
    cfg["parameters"]["out_dir"]["default"] = out_dir
    if path:
        cfg["sources"]["transactions"]["path"] = path
    cfg.update(over)
    return cfg


def test_failing_quality_rule_blocks_publish(small_data, tmp_path):
    cfg = _job_dict(str(small_data.out_dir), str(tmp_path))
    run_job(cfg)
    before = read_output(f"{tmp_path}/curated/transactions")
    cfg2 = _job_dict(str(small_data.out_dir), str(tmp_path))
    cfg2["quality"] = {"rules": 'Rules = [ RowCount > 0, ColumnValues "amount" < 100 ]',
                       "warn": 'Rules = [ IsUnique "user_id" ]'}
    cfg2["sources"]["transactions"]["bookmark"] = False
    with pytest.raises(DataQualityError, match=r'ColumnValues "amount" < 100') as ei:
        run_job(cfg2)
    s = json.load(open(ei.value.summary_path))
    assert s["status"] == "failed"
    outcomes = {o["rule"]: o for o in s["quality"]["rules"]}
    assert outcomes["RowCount > 0"]["passed"]
    assert not outcomes['ColumnValues "amount" < 100']["passed"]
    assert not outcomes['IsUnique "user_id"']["passed"] and outcomes['IsUnique "user_id"']["severity"] == "warn"
    pd.testing.assert_frame_equal(read_output(f"{tmp_path}/curated/transactions"), before)
    r = s["rows"]
    assert r["read"] == r["written"] + r["quarantined"] + r["deduplicated"] + r["filtered"] + r["unpublished"]


def test_error_threshold_fails_the_job(small_data, tmp_path):
    cfg = _job_dict(str(small_data.out_dir), str(tmp_path))
    cfg["thresholds"] = {"max_errors": 3}
    with pytest.raises(ErrorThresholdExceeded, match=r"thresholds\.max_errors"):
        run_job(cfg)
    assert not (tmp_path / "curated" / "transactions").exists()
    with pytest.raises(ErrorThresholdExceeded, match="max_error_rate"):
        run_job(JOB, {"data_dir": str(small_data.out_dir), "out_dir": str(tmp_path), "max_error_rate": "0.001"})


@pytest.mark.parametrize(("params", "field"), [
    ({"out_dir": "/tmp/x"}, "parameters.data_dir"),
    ({"data_dir": "/nonexistent/dir", "out_dir": "/tmp/x"}, "parameters.data_dir"),
    ({"data_dir": ".", "out_dir": "/tmp/x", "max_error_rate": "lots"}, "parameters.max_error_rate"),
    ({"data_dir": ".", "out_dir": "/tmp/x", "colour": "red"}, "parameters.colour"),
    ({"data_dir": ".", "out_dir": "bad\0path"}, "parameters.out_dir"),
])
def test_wrong_parameters_fail_fast_naming_the_parameter(params, field):
    with pytest.raises(ConfigError) as ei:
        run_job(JOB, params)
    assert ei.value.field == field


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda c: c["steps"].append({"explode": {"input": "x"}}), "steps[8]"),
    (lambda c: c["steps"].append({"dedupe": {"input": "enriched"}}), "steps[8].dedupe.keys"),
    (lambda c: c["steps"].append({"dedupe": {"input": "nope", "keys": ["a"]}}), "steps[8].dedupe.input"),
    (lambda c: c["steps"][2]["apply_mapping"]["mappings"].append(["a", "string", "a", "blob"]), "steps[2].apply_mapping.mappings[9]"),
    (lambda c: c["output"].pop("path"), "output.path"),
    (lambda c: c["sources"]["users"].update(colour="red"), "sources.users.colour"),
    (lambda c: c["quality"].update(rules="Rules = [ IsShiny \"x\" ]"), "quality.rules"),
])
def test_wrong_config_fails_before_work_naming_the_field(mutate, field, tmp_path):
    cfg = _job_dict(str(tmp_path), str(tmp_path))
    mutate(cfg)
    with pytest.raises(ConfigError) as ei:
        run_job(cfg)
    assert ei.value.field == field
    assert not (tmp_path / "curated").exists()


def test_cli_prints_summary_path_last_and_fails_nonzero(small_data, tmp_path):
    cmd = [sys.executable, "-m", "mlprep", "batch", "run", str(JOB), "--no-progress",
           "-p", f"data_dir={small_data.out_dir}", "-p", f"out_dir={tmp_path}"]
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    last = p.stdout.strip().splitlines()[-1]
    assert last.endswith("summary.json") and json.load(open(last))["status"] == "succeeded"
    bad = subprocess.run([*cmd, "-p", "max_error_rate=x"], capture_output=True, text=True)
    assert bad.returncode == 2 and "parameters.max_error_rate" in bad.stderr
    show = subprocess.run([sys.executable, "-m", "mlprep", "batch", "bookmark", "show", str(JOB),
                           "-p", f"data_dir={small_data.out_dir}", "-p", f"out_dir={tmp_path}"],
                          capture_output=True, text=True, check=True)
    assert str(small_data.transactions) in json.loads(show.stdout)["sources"]["transactions"]["files"]


@pytest.mark.parametrize("point", ["publish:staged", "publish:built", "publish:renamed", "publish:swapped"])
def test_sigkill_mid_publish_leaves_published_data_unchanged(small_data, tmp_path, point):
    src = tmp_path / "in"
    src.mkdir()
    lines = open(small_data.transactions).read().splitlines(keepends=True)
    (src / "a.jsonl").write_text("".join(lines[:2000]))
    shutil.copy(small_data.users_db, src / "users.db")
    out = tmp_path / "out"
    cfg = tmp_path / "job.json"
    cfg.write_text(json.dumps(_job_dict(str(src), str(out), path=f"{src}/*.jsonl")))
    code = ("import json,sys; from mlprep.batch.job import run_job; run_job(json.load(open(sys.argv[1])))")
    subprocess.run([sys.executable, "-c", code, str(cfg)], check=True)
    published = read_output(f"{out}/curated/transactions")
    (src / "b.jsonl").write_text("".join(lines[2000:]))
    env = dict(os.environ, MLPREP_FAULT_POINT=point)
    p = subprocess.run([sys.executable, "-c", code, str(cfg)], env=env)
    assert p.returncode == -signal.SIGKILL
    after_kill = read_output(f"{out}/curated/transactions")
    if point == "publish:swapped":  # killed after the commit point: the new version is complete
        assert len(after_kill) > len(published)
    else:
        pd.testing.assert_frame_equal(after_kill, published)
    subprocess.run([sys.executable, "-c", code, str(cfg)], check=True)  # the rerun
    clean_out = tmp_path / "clean"
    (src / "b.jsonl").rename(src / "b.hold")
    clean = _job_dict(str(src), str(clean_out), path=f"{src}/*.jsonl")
    run_job(clean)
    (src / "b.hold").rename(src / "b.jsonl")
    run_job(clean)
    pd.testing.assert_frame_equal(_norm(read_output(f"{out}/curated/transactions")),
                                  _norm(read_output(f"{clean_out}/curated/transactions")))


def test_stage_thresholds_name_the_stage(small_data, tmp_path):
    cfg = _job_dict(str(small_data.out_dir), str(tmp_path))
    cfg["thresholds"] = {"max_errors": 1000, "stage": {"max_errors": 5}}
    with pytest.raises(ErrorThresholdExceeded, match=r"thresholds\.stage \(steps\[1\]\.resolve_choice\)\.max_errors: \d+"):
        run_job(cfg)


def test_garbage_input_fails_right_after_reading(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "x.jsonl").write_text('{"id": 1}\n' + "not json\n" * 50)
    cfg = {"name": "g", "sources": {"r": {"format": "jsonl", "path": str(d)}},
           "steps": [{"derive": {"input": "r", "columns": {"boom": "error('steps must not run')"}}}],
           "thresholds": {"stage": {"max_error_rate": 0.5}},
           "output": {"input": "r", "path": str(tmp_path / "o" / "t"), "quarantine": str(tmp_path / "q")}}
    with pytest.raises(ErrorThresholdExceeded, match=r"thresholds\.stage \(read\)\.max_error_rate: 50/51"):
        run_job(cfg)


class _ProtocolOnly:
    """An engine with exactly the BatchEngine methods, delegating to the embedded one: the job
    must need nothing else (a third engine is one class with these methods)."""

    name = "protocol-only"

    def __init__(self) -> None:
        from mlprep.batch.engines import BatchEngine
        from mlprep.batch.engines.duckdb import DuckDBEngine

        self.inner, self.calls = DuckDBEngine(), []
        methods = [m for m in vars(BatchEngine) if not m.startswith("_") and callable(getattr(BatchEngine, m))]
        for m in methods:
            setattr(self, m, self._recorded(m))

    def _recorded(self, method: str):
        def call(*args, **kwargs):
            self.calls.append(method)
            return getattr(self.inner, method)(*args, **kwargs)
        return call


def test_the_job_reaches_its_engine_only_through_the_protocol(small_data, tmp_path):
    params = {"data_dir": str(small_data.out_dir)}
    engine = _ProtocolOnly()
    via = run_job(JOB, {**params, "out_dir": str(tmp_path / "a")}, engine=engine, progress=False)
    plain = run_job(JOB, {**params, "out_dir": str(tmp_path / "b")}, progress=False)
    assert via.rows == plain.rows and via.summary["quality"] == plain.summary["quality"]
    pd.testing.assert_frame_equal(_norm(read_output(via.summary["output"]["path"])),
                                  _norm(read_output(plain.summary["output"]["path"])))
    assert {"open", "read_files", "read_table", "apply", "pending", "write", "share", "close"} <= set(engine.calls)


def test_engines_by_name_or_object_and_secrets_masked_by_name(small_data, tmp_path):
    from mlprep.batch.engines.duckdb import DuckDBEngine

    params = {"data_dir": str(small_data.out_dir), "out_dir": str(tmp_path / "o")}
    for bad, said in (("nonsense", "one of duckdb, embedded, spark or an engine object, got 'nonsense'"),
                      (42, r"not a batch engine: int \(no open, describe"),
                      (DuckDBEngine, r"the class DuckDBEngine \(pass an instance: DuckDBEngine\(\)\)")):
        with pytest.raises(ConfigError, match=said):
            run_job(JOB, params, engine=bad, progress=False)
    r = run_job(JOB, params, engine="duckdb", progress=False, secrets=["data_dir"])
    assert r.status == "succeeded" and r.summary["parameters"]["data_dir"] == "***"
    assert str(small_data.out_dir) not in open(r.summary_path).read()  # a --secret value is never written
    cli = [sys.executable, "-m", "mlprep", "batch", "run", str(JOB), "-p", f"data_dir={small_data.out_dir}",
           "-p", f"out_dir={tmp_path / 'c'}"]
    p = subprocess.run([*cli, "--engine", "duckdb"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([*cli, "--master", "local[1]"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip() == "error: --master: a Spark master is for --engine spark"


def test_memory_limit_is_a_size_and_the_job_runs_within_it(small_data, tmp_path, monkeypatch):
    from mlprep.batch.job import default_memory_limit

    params = {"data_dir": str(small_data.out_dir), "out_dir": str(tmp_path / "o")}
    for bad in ("lots", "0%", "150%"):
        with pytest.raises(ConfigError, match=r"^memory_limit: expected a size such as 1500MB or 2GB, or a share"
                                              rf" of RAM such as 10%, got '{bad}'$"):
            run_job(JOB, params, memory_limit=bad, progress=False)
    monkeypatch.setenv("MLPREP_MEMORY_LIMIT", "x")
    with pytest.raises(ConfigError, match=r"^MLPREP_MEMORY_LIMIT: expected a size"):
        run_job(JOB, params, progress=False)
    monkeypatch.setenv("MLPREP_MEMORY_LIMIT", "300MB")
    assert default_memory_limit() == "300MB"
    r = run_job(JOB, params, progress=False)  # a small limit spills; the result is the same
    assert r.summary["memory_limit"] == {"limit": "300MB", "set_by": "MLPREP_MEMORY_LIMIT", "bytes": 300_000_000,
                                         "duckdb": "286.1 MiB"}
    plain = run_job(JOB, {**params, "out_dir": str(tmp_path / "p")}, memory_limit="4GB", progress=False)
    assert r.rows == plain.rows and plain.summary["memory_limit"]["duckdb"] == "3.7 GiB"
    pd.testing.assert_frame_equal(_norm(read_output(r.summary["output"]["path"])),
                                  _norm(read_output(plain.summary["output"]["path"])))
    share = run_job(JOB, {**params, "out_dir": str(tmp_path / "s")}, memory_limit="10%", progress=False)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert share.summary["memory_limit"]["bytes"] == int(ram * 0.1)


def test_the_default_memory_limit_is_a_share_of_ram_applied_and_reported(small_data, tmp_path, monkeypatch):
    from mlprep.batch.job import default_memory_limit

    monkeypatch.delenv("MLPREP_MEMORY_LIMIT", raising=False)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    want = max(min(1 << 30, ram // 2), ram // 24) // 10**6
    assert default_memory_limit() == f"{want}MB"
    r = run_job(JOB, {"data_dir": str(small_data.out_dir), "out_dir": str(tmp_path)}, progress=False)
    got = r.summary["memory_limit"]
    assert got["set_by"] == "default" and got["bytes"] == want * 10**6
    # what DuckDB itself reports (one decimal, cut), so a limit not applied fails (its own is 80% of RAM)
    value, unit = got["duckdb"].split()
    scale = {"MiB": 2**20, "GiB": 2**30}[unit]
    assert 0 <= want * 10**6 - float(value) * scale < 0.1 * scale
    assert json.load(open(r.summary_path))["memory_limit"] == got
