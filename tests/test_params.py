"""mlprep.params, exactly: coercion per type (hostile text included), resolve (unknown, required,
defaults), ${} substitution (types kept, text, dotted, unknown), paths against a stated base,
and the command line's -f / --secret / --param."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlprep.errors import ConfigError
from mlprep.params import (
    Parameter,
    coerce,
    is_reference,
    parse_cli,
    references,
    resolve,
    resolve_path,
    secret_env,
    substitute,
)


def _p(type_: str, **kw) -> Parameter:
    return Parameter("x", type_, **kw)


@pytest.mark.parametrize("type_,given,expected", [
    ("int", "42", 42), ("int", " 7 ", 7), ("int", "-3", -3), ("int", "1_000", 1000), ("int", 5, 5),
    ("int", 3.0, 3), ("int", "+8", 8),
    ("float", "0.5", 0.5), ("float", "1e-3", 0.001), ("float", 2, 2.0), ("float", "1_000.5", 1000.5),
    ("float", " 3 ", 3.0),
    ("bool", "true", True), ("bool", "FALSE", False), ("bool", " yes ", True), ("bool", "no", False),
    ("bool", "1", True), ("bool", "0", False), ("bool", True, True), ("bool", 0, False), ("bool", 1, True),
    ("str", "abc", "abc"), ("str", 5, "5"), ("str", 0.5, "0.5"), ("str", "", ""), ("str", Path("/a/b"), "/a/b"),
    ("date", "2026-11-05", dt.date(2026, 11, 5)), ("date", dt.date(2026, 1, 2), dt.date(2026, 1, 2)),
    ("any", [1, {"a": 2}], [1, {"a": 2}]),
    ("Integer", "12", 12), ("Float", "0.25", 0.25), ("Boolean", "True", True), ("String", 3, "3"),
])
def test_coerce_accepts(type_, given, expected):
    out = coerce(_p(type_), given)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize("type_,given", [
    ("int", "abc"), ("int", "1.5"), ("int", 1.5), ("int", True), ("int", False), ("int", "1e3"), ("int", ""),
    ("int", "1__000"), ("int", "_1"), ("int", "0x10"), ("int", "١٢٣"), ("int", [1, 2]), ("int", {"a": 1}),
    ("int", "9" * 5000),
    ("float", "abc"), ("float", True), ("float", ""), ("float", "١.٥"), ("float", [0.5]),
    ("bool", "maybe"), ("bool", 2), ("bool", 1.0), ("bool", "on"), ("bool", ""), ("bool", [True]),
    ("str", True), ("str", [1]), ("str", {"a": 1}),
    ("date", "2026-13-01"), ("date", "yesterday"), ("date", 20260101), ("date", True),
])
def test_coerce_rejects_naming_the_field(type_, given):
    with pytest.raises(ConfigError) as e:
        coerce(_p(type_), given, "parameters.x")
    assert e.value.field == "parameters.x"
    assert str(e.value) == f"parameters.x: expected {type_}, got {given!r}"


def test_one_error_style_with_each_callers_field():
    with pytest.raises(ConfigError, match=r"^parameters\.rows: expected int, got 'abc'$"):
        coerce(Parameter("rows", "int"), "abc")  # the default field
    with pytest.raises(ConfigError, match=r"^--param MaxIter: expected Integer, got 'many'$"):
        coerce(Parameter("MaxIter", "Integer"), "many", "--param MaxIter")
    with pytest.raises(ConfigError, match=r"^stage b: parameter n: expected int, got \[1, 2\]$"):
        coerce(Parameter("n", "int"), [1, 2], "stage b: parameter n")


def test_none_is_no_value_and_choices_are_checked_after_coercion():
    for t in ("str", "int", "bool", "date", "path", "any"):
        assert coerce(_p(t), None) is None
    level = Parameter("level", "int", choices=(1, 2, 3))
    assert coerce(level, "2") == 2
    with pytest.raises(ConfigError, match=r"^parameters\.level: must be one of \[1, 2, 3\], got 4$"):
        coerce(level, "4")


def test_a_parameter_has_a_known_type():
    with pytest.raises(ValueError, match="unknown type 'itn'"):
        Parameter("x", "itn")
    assert Parameter("x", "Integer").kind == "int" and Parameter("x", "path").kind == "path"
    assert Parameter("x").is_required and not Parameter("x", default=1).is_required
    assert not Parameter("x", required=False).is_required and Parameter("x", default=1, required=True).is_required


# --- paths

def test_paths_resolve_against_the_stated_base_only(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    assert resolve_path("data/in", "p", tmp_path) == str(tmp_path / "data" / "in")
    assert resolve_path("../x/./y", "p", tmp_path / "a") == str(tmp_path / "x" / "y")
    assert resolve_path("/abs/olute", "p", None) == "/abs/olute"  # absolute: no base needed
    assert resolve_path(tmp_path / "p", "p", None) == str(tmp_path / "p")  # a Path object
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_path("~/d", "p", Path("/elsewhere")) == str(tmp_path / "home" / "d")
    with pytest.raises(ValueError, match="needs an absolute base"):
        resolve_path("rel", "p", None)  # never the working directory implicitly
    with pytest.raises(ValueError, match="needs an absolute base"):
        resolve_path("rel", "p", Path("relative/base"))


def test_urls_pass_through_and_hostile_paths_are_refused(tmp_path):
    assert resolve_path("s3://bucket/key/", "p", tmp_path) == "s3://bucket/key/"
    assert resolve_path("file:///tmp/x", "p", tmp_path, must_exist=True) == "file:///tmp/x"
    for bad in ("a\0b", "a\nb", "a\rb", ""):
        with pytest.raises(ConfigError, match=r"^parameters\.d: not a valid path: "):
            resolve_path(bad, "parameters.d", tmp_path)
    with pytest.raises(ConfigError, match=r"^p: unsupported URL scheme 'http'"):
        resolve_path("http://example.com/x", "p", tmp_path)
    for bad in (5, True, 1.5, ["a"], b"bytes"):
        with pytest.raises(ConfigError, match=r"^p: expected path, got "):
            resolve_path(bad, "p", tmp_path)


def test_must_exist_names_the_resolved_path_and_the_help(tmp_path):
    (tmp_path / "here").mkdir()
    p = Parameter("data_dir", "path", must_exist=True, help="input folder")
    assert coerce(p, "here", base=tmp_path) == str(tmp_path / "here")
    with pytest.raises(ConfigError) as e:
        coerce(p, "typo", "--param data_dir", base=tmp_path)
    assert str(e.value) == f"--param data_dir: {tmp_path / 'typo'} does not exist (input folder)"
    with pytest.raises(ConfigError, match=r"^parameters\.data_dir: not a valid path: 'bad\\x00path'$"):
        coerce(p, "bad\0path", base=tmp_path)


# --- resolve

def test_resolve_types_given_values_and_defaults(tmp_path):
    declared = {"rows": Parameter("rows", "int", default=10), "rate": Parameter("rate", "float", default="0.5"),
                "out": Parameter("out", "path"), "note": Parameter("note", required=False),
                "day": Parameter("day", "date", default="2026-11-05")}
    v = resolve(declared, {"rows": "1_000", "out": "o"}, base=tmp_path)
    assert v == {"rows": 1000, "rate": 0.5, "out": str(tmp_path / "o"), "note": None, "day": dt.date(2026, 11, 5)}
    assert resolve(declared, {"out": "/o", "rows": None}, base=tmp_path)["rows"] == 10  # None: not given


def test_resolve_names_unknown_and_missing_parameters(tmp_path):
    declared = {"a": Parameter("a", "int"), "b": Parameter("b", default="x", help="the b")}
    with pytest.raises(ConfigError, match=r"^parameters\.colour: not a parameter \(declared: a, b\)$"):
        resolve(declared, {"a": "1", "colour": "red"})
    with pytest.raises(ConfigError, match=r"^parameters\.a: required parameter not given \(--param a=VALUE\)$"):
        resolve(declared, {})
    with pytest.raises(ConfigError, match=r"^--param Nope: not a parameter of this pipeline \(declared: a, b\)"):
        resolve(declared, {"Nope": 1}, field="--param {name}", what="parameter of this pipeline")
    with pytest.raises(ConfigError, match=r"^x: required parameter not given \(--param x=VALUE; the x\)$"):
        resolve({"x": Parameter("x", help="the x")}, {}, field="{name}")
    with pytest.raises(ConfigError, match=r"^parameters\.a: expected int, got 'abc'$"):
        resolve(declared, {"a": "abc"})
    with pytest.raises(ConfigError, match=r"^parameters\.z: not a parameter \(declared: none\)$"):
        resolve({}, {"z": 1})


# --- substitution

SCOPE = {"n": 5, "rate": 0.5, "flag": True, "dir": "/data", "none": None, "day": dt.date(2026, 1, 2),
         "batch": {"curated": "/c", "meta": {"rows": 7}}}


def test_a_whole_reference_keeps_its_type_and_embedded_ones_become_text():
    assert substitute("${n}", SCOPE) == 5
    assert substitute("${flag}", SCOPE) is True
    assert substitute("${batch}", SCOPE) == {"curated": "/c", "meta": {"rows": 7}}
    assert substitute("${batch.meta.rows}", SCOPE) == 7
    assert substitute("${day}", SCOPE) == dt.date(2026, 1, 2)
    assert substitute("${dir}/events.jsonl", SCOPE) == "/data/events.jsonl"
    assert substitute("n=${n} r=${rate} f=${flag} d=${day}", SCOPE) == "n=5 r=0.5 f=True d=2026-01-02"
    assert substitute("x${none}y", SCOPE) == "xy" and substitute("${none}", SCOPE) is None
    assert substitute("${batch.curated}/${n}", SCOPE) == "/c/5"
    assert substitute("${n}", SCOPE, text=True) == "5"  # every reference as text
    assert substitute("no refs: $n, ${}, ${1x}, ${a-b}, ${n", SCOPE) == "no refs: $n, ${}, ${1x}, ${a-b}, ${n"
    assert substitute("$${n}", SCOPE) == "$5"  # no escape: a dollar before a reference stays
    assert substitute(5, SCOPE) == 5 and substitute(None, SCOPE) is None


def test_substitution_walks_lists_and_mappings_naming_where():
    doc = {"sources": {"t": {"path": "${dir}/t.jsonl", "n": "${n}"}}, "steps": [{"f": "x > ${rate}"}, "${flag}"]}
    assert substitute(doc, SCOPE) == {"sources": {"t": {"path": "/data/t.jsonl", "n": 5}},
                                      "steps": [{"f": "x > 0.5"}, True]}
    with pytest.raises(ConfigError) as e:
        substitute({"steps": [{"f": "${nope}"}]}, SCOPE)
    assert e.value.field == "steps[0].f"
    assert str(e.value).startswith("steps[0].f: unknown reference ${nope} (known: n, rate, flag, dir")


def test_an_unknown_or_missing_reference_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^where: unknown reference \$\{unknown\}"):
        substitute("${unknown}", SCOPE, "where")
    with pytest.raises(ConfigError, match=r"^where: \$\{batch\.missing\} has no value \(batch has no 'missing'\)$"):
        substitute("a/${batch.missing}", SCOPE, "where")
    with pytest.raises(ConfigError, match=r"^where: \$\{n\.x\} has no value \(n has no 'x'\)$"):
        substitute("${n.x}", SCOPE, "where")  # n is not a mapping
    with pytest.raises(ConfigError, match=r"^where: \$\{batch\.meta\.rows\.y\} has no value"):
        substitute("${batch.meta.rows.y}", SCOPE, "where")
    with pytest.raises(ConfigError, match=r"^\$\{a\.b\}: unknown reference"):
        substitute("${a.b}", {})  # no where: the reference names itself


def test_references_are_found_and_recognised():
    assert references({"a": "${x}/${y.z}", "b": ["${w}", 3], "c": 1}) == ["x", "y.z", "w"]
    assert references("plain") == [] and references(None) == []
    assert is_reference("${a.b}") and is_reference("${a}")
    assert not is_reference("${a}/x") and not is_reference("x${a}") and not is_reference(5)
    assert not is_reference("${a}${b}")


# --- the command line

def test_parse_cli_reads_files_then_secrets_then_pairs(tmp_path, monkeypatch):
    f = tmp_path / "p.yaml"
    f.write_text("rows: 5\non: yes\nstage: {n: 41, name: x}\ndir: a\n")
    monkeypatch.setenv(secret_env("stage.token"), "s3cr3t")
    out = parse_cli(["dir=b", " spaced =v=w", "empty="], [str(f)], ["stage.token"])
    assert out == {"rows": 5, "on": "yes", "stage.n": 41, "stage.name": "x", "dir": "b", "spaced": "v=w",
                   "empty": "", "stage.token": "s3cr3t"}
    assert parse_cli(None) == {}
    with pytest.raises(ConfigError, match=r"^--param: expected name=value, got 'oops'$"):
        parse_cli(["oops"])


def test_parse_cli_names_a_bad_file_or_a_missing_secret(tmp_path, monkeypatch):
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "broken.yaml").write_text("a: [1\n")
    (tmp_path / "empty.yaml").write_text("")
    assert parse_cli(None, [str(tmp_path / "empty.yaml")]) == {}
    with pytest.raises(ConfigError, match=r": expected a mapping of name: value$"):
        parse_cli(None, [str(tmp_path / "list.yaml")])
    with pytest.raises(ConfigError, match=r"broken\.yaml: not a YAML mapping \(line 2\)"):
        parse_cli(None, [str(tmp_path / "broken.yaml")])
    with pytest.raises(ConfigError, match=r"^-f .*missing\.yaml: No such file"):
        parse_cli(None, [str(tmp_path / "missing.yaml")])
    assert secret_env("job.api-token") == "MLPREP_SECRET_JOB_API_TOKEN"
    monkeypatch.delenv("MLPREP_SECRET_NOPE", raising=False)
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # not a terminal: no prompt
    with pytest.raises(ConfigError, match=r"^--secret nope: set MLPREP_SECRET_NOPE in the environment"):
        parse_cli(None, None, ["nope"])


def test_params_is_light():
    """Reading parameters imports neither the command line nor YAML, pydantic or pandas (import
    cycles are tests/test_architecture.py's)."""
    code = ("import sys, mlprep.params; "
            "print(sorted(m for m in ('mlprep.cli', 'yaml', 'pydantic', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
