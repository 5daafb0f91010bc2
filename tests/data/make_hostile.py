"""The hostile-input corpus: ``python tests/data/make_hostile.py`` rewrites the small files in
``tests/data/hostile/``; the large ones (50 MB lines) are made by the tests in a temporary folder
with ``write_large``. Each file holds one class of trouble, with good records around it so that
positions after the trouble are checked too."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent / "hostile"


def ok(i: int, **extra) -> str:
    return json.dumps({"id": i, "amount": 1.5 * i, "ts": f"2026-11-0{1 + i % 9}T10:00:00", **extra})


def _lines(path: Path, lines: list[str | bytes]) -> None:
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")


def _deep_object(n: int) -> str:
    return '{"a": ' * n + "1" + "}" * n


def write_small(folder: Path = HERE) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ts = '"ts": "2026-11-01T10:00:00"'
    _lines(folder / "not_strict.jsonl", [
        ok(1),
        f'{{"id": 2, "amount": NaN, {ts}}}',
        f'{{"id": 3, "amount": Infinity, {ts}}}',
        f'{{"id": 4, "amount": -Infinity, {ts}}}',
        f'{{"id": 5, "amount": 1e400, {ts}}}',
        f'{{"id": 6, "amount": 2.5, "amount": 3.5, {ts}}}',
        '{"id": 7, "amount": 1, "ts": "0001-01-01T00:00:00"}',
        '{"id": 8, "amount": 1, "ts": "99999-01-01T00:00:00"}',
        f'{{"id": 9, "amount": 1, {ts}, "note": "NaN and Infinity in a string are fine"}}',
        f'{{"id": 10, "amount": 1e300, {ts}}}',
        f'{{"id": 11, "amount": 1, {ts}, "device": {{"os": "a", "os": "b"}}}}',
        ok(12),
        f'{{"id": 13, "amount": NAN, {ts}}}',  # DuckDB takes the constants in any case
        f'{{"id": 14, "amount": -iNf, {ts}}}',
        f'{{"id": 15, "amount": INFINITY , {ts}}}'])
    _lines(folder / "deep.jsonl", [
        ok(1),
        f'{{"id": 2, "amount": 1, {ts}, "x": ' + "[" * 600 + "]" * 600 + "}",
        f'{{"id": 3, "amount": 1, {ts}, "x": ' + _deep_object(1000) + "}",
        f'{{"id": 4, "amount": 1, {ts}, "x": ' + _deep_object(30) + "}",  # 31 levels: allowed
        "[" * 5000,  # malformed and deep
        ok(6)])
    (folder / "broken.csv").write_bytes(
        b'id,name,amount\n1,"Smith, Jo",1.5\n2,"unterminated,2.5\n3,plain,3.5\n4,short\n'
        b'5,too,many,fields\n6,\xff\xfebad,6.5\n7,"multi\nline",7.5\n8,"say ""hi""",8.5\n')


def write_large(folder: Path) -> dict[str, int]:
    """A 50 MB line after line 1 and a 40 MB line in the middle of 2,000 good ones, a malformed
    line after each (its line number shows whether positions stayed exact), and a record with
    10,000 keys. Returns the line numbers that matter."""
    folder.mkdir(parents=True, exist_ok=True)
    big = [ok(1), '{"id": 2, "blob": "' + "x" * (50 << 20) + '"}', "not json at line 3", ok(4)]
    _lines(folder / "huge_line.jsonl", big)
    lines = [ok(i) for i in range(1, 2001)]
    lines[999] = '{"id": 1000, "blob": "' + "y" * (40 << 20) + '"}'
    lines[1499] = "not json at line 1500"
    _lines(folder / "mid_line.jsonl", lines)
    wide = [ok(i) for i in range(1, 2001)]
    wide[10] = json.dumps({"id": 11, "amount": 1.0, "ts": "2026-11-01T10:00:00", **{f"k{i}": i for i in range(10_000)}})
    _lines(folder / "wide.jsonl", wide)
    return {"huge": 2, "huge_bad": 3, "mid": 1000, "mid_bad": 1500, "wide": 11}


if __name__ == "__main__":
    write_small(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
