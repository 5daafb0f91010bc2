"""Transforms with exact expected values, and malformed input: nothing crashes, nothing is lost."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest

from mlprep.batch.job import read_output, run_job
from mlprep.errors import MlprepError


def _job(tmp_path, steps, fmt="jsonl", path=None, quality=None, **src):
    return {
        "name": "t",
        "sources": {"r": {"format": fmt, "path": path or str(tmp_path / "in"), **src}},
        "steps": steps,
        "quality": quality or {},
        "output": {"input": "r", "path": str(tmp_path / "out" / "t"), "quarantine": str(tmp_path / "q")},
    }


def _write(tmp_path, name: str, data: bytes | str) -> None:
    d = tmp_path / "in"
    d.mkdir(exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def _run(cfg):
    r = run_job(cfg)
    rows = r.rows
    assert rows["read"] == rows["written"] + rows["quarantined"] + rows["deduplicated"] + rows["filtered"]
    out = read_output(cfg["output"]["path"]) if rows["written"] else pd.DataFrame()
    q = pd.read_parquet(r.summary["quarantine"]["file"]) if r.summary["quarantine"]["records"] else pd.DataFrame()
    return r, out, q


def test_malformed_json_lines_are_quarantined_with_reason_and_line(tmp_path):
    lines = [
        b'{"id": 1, "v": 1.5}',
        b'{"id": 2, "v": ',                      # truncated
        b"",                                      # blank: not a record
        b'{"id": 3, "v": "\xff\xfe"}',            # invalid UTF-8
        b"[1, 2]",                                # not an object
        b'{"id": 4, "v": 2}',
        b'{"id": 5, "v": "' + b"x" * (10 << 20) + b'"}',  # a 10 MB line
        b'{"id": 6, "v": 3}\r',                   # CRLF
    ]
    _write(tmp_path, "a.jsonl", b"\n".join(lines) + b"\n")
    _write(tmp_path, "empty.jsonl", b"")
    r, out, q = _run(_job(tmp_path, [], max_record_bytes=1 << 20))
    assert r.rows == {"read": 7, "written": 3, "quarantined": 4, "deduplicated": 0, "filtered": 0}
    assert sorted(out["id"].tolist()) == [1, 4, 6]
    got = {int(p.split()[1]): reason for p, reason in zip(q["position"], q["reason"], strict=True)}
    assert set(got) == {2, 4, 5, 7}
    assert got[2].startswith("malformed JSON")
    assert got[4] == "invalid UTF-8"
    assert got[5] == "not a JSON object (list)"
    assert got[7].startswith("record too large: 10485778 bytes")
    assert q["source"].str.endswith("a.jsonl").all()
    assert r.summary["sources"]["r"]["empty_files"][0].endswith("empty.jsonl")


def test_oversized_line_spanning_read_blocks(tmp_path):
    from mlprep.io.lines import Oversized, read_lines

    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a":1}\n' + b"y" * 5000 + b"\n" + b'{"a":2}\n' + b"z" * 3000)
    over: list[Oversized] = []
    batches = list(read_lines(str(p), 1000, over, block_bytes=512))
    got = [(n, bytes(r).strip()) for b in batches for n, r in zip(b.column(0).to_pylist(), b.column(1).to_pylist(), strict=True)]
    assert got == [(1, b'{"a":1}'), (3, b'{"a":2}')]
    assert [(o.line_no, o.length) for o in over] == [(2, 5000), (4, 3000)]


def test_mixed_types_resolve_choice_cast_project_make_cols(tmp_path):
    _write(tmp_path, "a.jsonl", "\n".join(json.dumps(r) for r in [
        {"id": 1, "amount": 12.5}, {"id": 2, "amount": "7.25"}, {"id": 3, "amount": "N/A"},
        {"id": 4, "amount": None}, {"id": 5, "amount": 3}]) + "\n")
    r, out, q = _run(_job(tmp_path, [{"resolve_choice": {"input": "r", "specs": {"amount": "cast:double"}}}]))
    s = out.set_index("id")["amount"]
    assert s[1] == 12.5 and s[2] == 7.25 and s[5] == 3.0 and pd.isna(s[4])
    assert q["reason"].tolist() == ["amount: cannot cast N/A to double"]
    assert r.summary["sources"]["r"]["choice_columns"] == {"amount": ["double", "string"]}

    (tmp_path / "out").rename(tmp_path / "out1")
    r, out, q = _run(_job(tmp_path, [{"resolve_choice": {"input": "r", "specs": {"amount": "project:double"}}}]))
    s = out.set_index("id")["amount"]
    assert s[1] == 12.5 and s[5] == 3.0 and s[[2, 3, 4]].isna().all() and len(q) == 0

    (tmp_path / "out").rename(tmp_path / "out2")
    r, out, q = _run(_job(tmp_path, [{"resolve_choice": {"input": "r", "specs": {"amount": "make_cols"}}}]))
    o = out.set_index("id")
    assert "amount" not in o.columns
    assert o.loc[1, "amount_double"] == 12.5 and o.loc[5, "amount_long"] == 3  # Glue: int and double differ
    assert o.loc[2, "amount_string"] == "7.25" and o.loc[3, "amount_string"] == "N/A"
    assert o.loc[[4], ["amount_double", "amount_long", "amount_string"]].isna().all(axis=None)


def test_relationalize_apply_mapping_require_filter_dedupe(tmp_path):
    recs = [
        {"id": "a", "n": "1", "ts": "2026-01-01T10:00:00Z", "dev": {"os": "ios", "hw": {"ram": 4}}, "tags": ["x", "y"]},
        {"id": "a", "n": "2", "ts": "2026-01-01T09:00:00Z", "dev": {"os": "and", "hw": {"ram": 8}}, "tags": []},
        {"id": "b", "n": "x", "ts": "2026-01-02T00:00:00Z", "dev": None, "tags": None},
        {"id": "c", "n": "-1", "ts": "2026-01-03T00:00:00Z", "dev": {"os": "ios", "hw": None}, "tags": ["z"]},
        {"id": None, "n": "3", "ts": "2026-01-04T00:00:00Z", "dev": {"os": "web", "hw": {"ram": 2}}},
        {"id": "d", "n": "5", "ts": "not a time", "dev": {"os": "web"}},
    ]
    _write(tmp_path, "a.jsonl", "\n".join(json.dumps(r) for r in recs) + "\n")
    steps = [
        {"relationalize": {"input": "r", "separator": "_"}},
        {"apply_mapping": {"input": "r", "mappings": [
            ["id", "string", "id", "string"], ["n", "string", "n", "long"], ["ts", "string", "ts", "timestamp"],
            ["dev_os", "string", "os", "string"], ["dev_hw_ram", "long", "ram", "int"],
            ["missing", "string", "missing", "string"]]}},
        {"require": {"input": "r", "columns": ["id"]}},
        {"filter": {"input": "r", "where": "n > 0", "reason": "non-positive n"}},
        {"dedupe": {"input": "r", "keys": ["id"], "order_by": ["ts"]}},
    ]
    r, out, q = _run(_job(tmp_path, steps))
    assert r.rows == {"read": 6, "written": 1, "quarantined": 3, "deduplicated": 1, "filtered": 1}
    row = out.iloc[0]
    assert (row["id"], row["n"], row["os"], row["ram"]) == ("a", 2, "and", 8)  # earliest ts kept
    assert pd.isna(row["missing"])
    reasons = dict(zip(q["position"], q["reason"], strict=True))
    assert reasons == {"line 3": "n: cannot cast x to long", "line 5": "missing required field id",
                       "line 6": "ts: cannot cast not a time to timestamp"}
    assert any("'missing' not found" in n for n in r.summary["notes"])


def test_dedupe_on_two_keys_keeps_first_or_last_and_never_merges_null_keys(tmp_path):
    """Against a reference: rank every live row by (order_by, file, line) within its keys; rows
    with a NULL key are never duplicates; keys seen three times lose two rows."""
    rng = random.Random(5)
    recs = [{"a": rng.choice(["x", "y", None]), "b": rng.randint(0, 150), "t": rng.randint(0, 2), "i": i}
            for i in range(400)]
    _write(tmp_path, "a.jsonl", "\n".join(json.dumps(r) for r in recs) + "\n")
    for keep in ("first", "last"):
        cfg = _job(tmp_path / keep, [{"dedupe": {"input": "r", "keys": ["a", "b"], "order_by": ["t"], "keep": keep}}],
                   path=str(tmp_path / "in"))
        r, out, _ = _run(cfg)
        df = pd.DataFrame(recs)
        keyed = df[df["a"].notna()].sort_values(["t", "i"], ascending=keep == "first")
        want = sorted(keyed.drop_duplicates(["a", "b"])["i"].tolist() + df[df["a"].isna()]["i"].tolist())
        assert sorted(out["i"].tolist()) == want and r.rows["deduplicated"] == len(recs) - len(want)


def test_relationalize_arrays_become_child_relations(tmp_path):
    recs = [{"id": 1, "items": [{"sku": "a", "q": 2}, {"sku": "b", "q": 1}]}, {"id": 2, "items": [{"sku": "c", "q": 5}]}]
    _write(tmp_path, "a.jsonl", "\n".join(json.dumps(r) for r in recs) + "\n")
    cfg = _job(tmp_path, [{"relationalize": {"input": "r", "output": "root"}}])
    cfg["output"]["input"] = "root_items"
    _r, out, _q = _run(cfg)
    out = out.sort_values(["id", "index"])
    assert out[["index", "val_sku", "val_q"]].values.tolist() == [[0, "a", 2], [1, "b", 1], [0, "c", 5]]
    assert out["id"].nunique() == 2


def test_join_inner_counts_misses_as_filtered_and_rejects_fanout(tmp_path):
    _write(tmp_path, "a.jsonl", '{"k": 1, "x": "a"}\n{"k": 2, "x": "b"}\n{"k": 3, "x": "c"}\n')
    (tmp_path / "dim").mkdir()
    (tmp_path / "dim" / "d.csv").write_text("k,label\n1,one\n3,three\n")
    cfg = _job(tmp_path, [{"join": {"left": "r", "right": "d", "on": ["k"], "how": "inner", "output": "j"}}])
    cfg["sources"]["d"] = {"format": "csv", "path": str(tmp_path / "dim"), "bookmark": False}
    cfg["steps"].insert(0, {"apply_mapping": {"input": "d", "mappings": [["k", "string", "k", "long"], ["label", "string", "label", "string"]]}})
    cfg["output"]["input"] = "j"
    r, out, _q = _run(cfg)
    assert r.rows == {"read": 3, "written": 2, "quarantined": 0, "deduplicated": 0, "filtered": 1}
    assert out.sort_values("k")[["k", "x", "label"]].values.tolist() == [[1, "a", "one"], [3, "c", "three"]]
    (tmp_path / "dim" / "d.csv").write_text("k,label\n1,one\n1,uno\n")
    (tmp_path / "out").rename(tmp_path / "out_old")
    with pytest.raises(MlprepError, match="duplicate key"):
        run_job(cfg)


def test_csv_malformed_rows_and_missing_columns(tmp_path):
    _write(tmp_path, "a.csv", "id,amount\n1,2.5\n2,3.0,EXTRA\n3,abc\n4,\n5,7\n")
    steps = [{"apply_mapping": {"input": "r", "mappings": [["id", "string", "id", "long"],
                                                           ["amount", "string", "amount", "double"],
                                                           ["currency", "string", "currency", "string"]]}},
             {"require": {"input": "r", "columns": ["amount"]}},
             {"drop_null_fields": {"input": "r"}}]
    r, out, q = _run(_job(tmp_path, steps, fmt="csv"))
    assert r.rows == {"read": 5, "written": 2, "quarantined": 3, "deduplicated": 0, "filtered": 0}
    assert out.sort_values("id")[["id", "amount"]].values.tolist() == [[1, 2.5], [5, 7.0]]
    assert "currency" not in out.columns  # all-null column dropped
    reasons = sorted(q["reason"])
    assert reasons[0] == "amount: cannot cast abc to double"
    assert reasons[1].startswith("malformed CSV (TOO MANY COLUMNS)")
    assert reasons[2] == "missing required field amount"


def test_parquet_source_and_corrupt_file(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    pd.DataFrame({"id": [1, 2, 3], "v": [1.0, None, 3.0]}).to_parquet(d / "a.parquet")
    (d / "b.parquet").write_bytes(b"PAR1 this is not parquet")
    r, _out, q = _run(_job(tmp_path, [{"require": {"input": "r", "columns": ["v"]}}], fmt="parquet"))
    assert r.rows == {"read": 4, "written": 2, "quarantined": 2, "deduplicated": 0, "filtered": 0}
    assert sorted(q["position"]) == ["file", "row 2"]
    assert q[q["position"] == "file"]["reason"].iloc[0].startswith("unreadable Parquet file")


def test_keys_beyond_the_structure_sample_are_not_lost(tmp_path):
    """The structure comes from a sample; a key that appears only later (at any depth, in any
    key order or spacing) must still reach the output."""
    rows = [json.dumps({"id": i, "d": {"a": i}}, separators=(",", ":")) for i in range(25_000)]
    rows[24_000] = '{"id":24000,"d":{"a":1,"late_nested":"x"}}'
    rows[24_001] = '{"d": {"a": 2}, "id": 24001, "late_top": 7}'  # other order, spaces
    rows[24_002] = '{"id":24002,"d":"not an object"}'
    _write(tmp_path, "a.jsonl", "\n".join(rows) + "\n")
    r, out, q = _run(_job(tmp_path, []))
    assert r.rows["written"] == 25_000 and len(q) == 0
    o = out.set_index("id")
    assert o.loc[24001, "late_top"] == 7 and o["late_top"].notna().sum() == 1
    d = o.loc[24000, "d"]
    assert json.loads(d)["late_nested"] == "x"  # d became a choice column (object or string)
    assert o.loc[24002, "d"] == '"not an object"'
    assert r.summary["sources"]["r"]["choice_columns"]["d"] == ["string", "struct"]


def test_windows_in_derive_see_only_rows_that_survived_earlier_steps(tmp_path):
    _write(tmp_path, "a.jsonl", "".join(json.dumps({"g": g, "v": v}) + "\n"
                                        for g, v in [("a", 1), ("a", -5), ("a", 3), ("b", 10), ("b", None)]))
    steps = [{"filter": {"input": "r", "where": "v > 0"}},
             {"derive": {"input": "r", "columns": {"n": "count(*) OVER ()", "mean_g": "avg(v) over (partition by g)",
                                                   "rank": "row_number() OVER (ORDER BY v DESC)"}}}]
    r, out, _q = _run(_job(tmp_path, steps))
    assert r.rows["filtered"] == 2
    got = out.sort_values("v")[["g", "v", "n", "mean_g", "rank"]].values.tolist()
    assert got == [["a", 1, 3, 2.0, 3], ["a", 3, 3, 2.0, 2], ["b", 10, 3, 10.0, 1]]


def test_fast_line_reader_keeps_exact_line_numbers(tmp_path):
    """Blank lines, white space and CRLF endings do not shift positions (no reader rejects here,
    so DuckDB's parallel reader handles the file)."""
    lines = ['{"id": 1, "v": "1"}', "", '{"id": 2, "v": "x"}\r', "   ", '{"id": 3, "v": "3"}\r', "",
             "\t", '{"id": 4, "v": "y"}', '{"id": 5 "v": 5}']
    body = "\n".join(lines * 3000)  # 27,000 lines: several reader buffers
    _write(tmp_path, "a.jsonl", body)  # CRLF inside: the exact splitter takes it
    _write(tmp_path, "b.jsonl", body.replace("\r", ""))  # DuckDB's parallel reader takes it
    r, _out, q = _run(_job(tmp_path, [{"resolve_choice": {"input": "r", "specs": {"v": "cast:long"}}}]))
    assert r.rows == {"read": 30_000, "written": 12_000, "quarantined": 18_000, "deduplicated": 0, "filtered": 0}
    for name in ("a.jsonl", "b.jsonl"):
        qf = q[q["source"].str.endswith(name)].sort_values("position_number")
        assert qf["position_number"].head(3).tolist() == [3, 8, 9]
        assert qf["position_number"].tail(3).tolist() == [9 * 2999 + 3, 9 * 2999 + 8, 9 * 3000]
        assert qf["reason"].head(2).tolist() == ["v: cannot cast x to long", "v: cannot cast y to long"]
        assert qf["reason"].iloc[2] == "malformed JSON: Expecting ',' delimiter: line 1 column 10 (char 9)"


def test_catalog_records_schema_versions_and_drift(tmp_path):
    _write(tmp_path, "a.jsonl", '{"id": 1, "v": 1.5}\n')
    cfg = _job(tmp_path, [])
    r1, _, _ = _run(cfg)
    assert r1.summary["catalog"]["drift"] == {}
    _write(tmp_path, "b.jsonl", '{"id": 2, "v": 2.5, "promo": "spring"}\n')  # a new column: appended
    r2, out, _ = _run(cfg)
    assert r2.summary["catalog"]["drift"]["source:r"] == {"added": {"promo": "VARCHAR"}, "removed": {}, "retyped": {}}
    assert out.sort_values("id")["promo"].isna().tolist() == [True, False] and (out["promo"] == "spring").sum() == 1
    _write(tmp_path, "c.jsonl", '{"id": "x3"}\n')  # id retyped and v gone: refused, table unchanged
    with pytest.raises(MlprepError, match=r"id BIGINT -> VARCHAR.*reset the bookmark") as ei:
        run_job(cfg)
    assert len(read_output(cfg["output"]["path"])) == 2
    from mlprep.batch.catalog import current

    s = json.load(open(ei.value.summary_path))
    entry = current(r2.summary["catalog"]["path"], "source.r")
    assert [v["schema"] for v in entry["versions"]] == [{"id": "BIGINT", "v": "DOUBLE"},
                                                        {"id": "BIGINT", "v": "DOUBLE", "promo": "VARCHAR"}]
    assert s["status"] == "failed"


def test_objects_without_keys_are_records_and_later_keys_are_found(tmp_path):
    _write(tmp_path, "a.jsonl", "{}\n[]\n{ }\n")
    with pytest.raises(MlprepError, match="has no columns to write") as ei:
        run_job(_job(tmp_path, []))
    s = json.load(open(ei.value.summary_path))
    assert s["rows"]["read"] == 3 and s["rows"]["quarantined"] == 1 and s["rows"]["unpublished"] == 2
    assert s["quarantine"]["by_reason"] == {"not a JSON object (list)": 1}
    d = tmp_path / "b"
    (d / "in").mkdir(parents=True)
    (d / "in" / "b.jsonl").write_text("{}\n" * 30_000 + '{"late": 1}\n')
    r, out, _q = _run(_job(d, []))
    assert r.rows["written"] == 30_001 and out["late"].sum() == 1


def test_nulls_and_missing_keys_are_not_a_type(tmp_path):
    """A JSON null or an absent key says nothing about a field's type: no false choice columns,
    and an array field with gaps still becomes a child relation."""
    recs = [{"id": 1, "cur": "USD", "items": [{"sku": "a"}]}, {"id": 2, "cur": None, "items": None}, {"id": 3}]
    _write(tmp_path, "a.jsonl", "\n".join(json.dumps(r) for r in recs) + "\n")
    cfg = _job(tmp_path, [{"relationalize": {"input": "r", "output": "root"}}])
    cfg["output"]["input"] = "root_items"
    r, out, _q = _run(cfg)
    assert r.summary["sources"]["r"]["choice_columns"] == {}
    assert out["val_sku"].tolist() == ["a"]
