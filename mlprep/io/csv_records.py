"""CSV read record by record in Python, for files DuckDB's reader gives up on (an unterminated
quote fails its sniffer, and then the whole file): every bad record is quarantined at its first
line and reading goes on at the next line, so one broken quote costs one record, not the file.

RFC 4180 with ``"`` quoting (``""`` inside a quoted field): a quoted field may span lines; one
that is still open after ``max_record_bytes`` (or at the end of the file) is an unterminated
quote. Empty fields are NULL, as DuckDB reads them; blank lines are not records.
"""

from __future__ import annotations

import csv
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from mlprep.io.fs import filesystem


class _RecordError(Exception):
    """A record that cannot be read; ``kind`` is the DuckDB-style error type."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


@dataclass
class CsvRecords:
    names: list[str]
    good: list[tuple[int, list[str | None]]] = field(default_factory=list)  # (first line, fields)
    bad: list[tuple[int, str, str]] = field(default_factory=list)  # (first line, reason, text)


class _Lines:
    """The file's lines for ``csv.reader``, numbered, replayable from any line of a record that
    turned out bad (the lines after its first one are read again as new records)."""

    def __init__(self, raw: Iterator[bytes], limit: int) -> None:
        self.raw, self.limit = raw, limit
        self.count = 0
        self.replay: deque[tuple[int, str | None, bytes]] = deque()
        self.record: list[tuple[int, str | None, bytes]] = []
        self.size = 0

    def start(self) -> None:
        self.record, self.size = [], 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.replay:
            no, text, raw = self.replay.popleft()
        else:
            raw = next(self.raw)
            self.count += 1
            no = self.count
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        self.record.append((no, text, raw))
        self.size += len(raw)
        if text is None:
            raise _RecordError("INVALID ENCODING", "invalid UTF-8")
        if self.size > self.limit:
            raise _RecordError("UNTERMINATED QUOTE", f"a quoted field is still open after {self.limit} bytes")
        return text

    def skip_bad_record(self) -> None:
        """Read again every line of the failed record but its first."""
        self.replay.extendleft(reversed(self.record[1:]))


def _text(lines: list[tuple[int, str | None, bytes]]) -> str:
    return b"".join(raw for _, _, raw in lines).decode("utf-8", "replace").rstrip("\r\n")


def _record(reader: Iterator[list[str]]) -> list[str] | None:
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as e:
        msg = str(e)
        kind = "UNTERMINATED QUOTE" if "unexpected end of data" in msg else "INVALID QUOTING"
        raise _RecordError(kind, msg) from None


def read_csv_records(url: str, delimiter: str = ",", header: bool = True,
                     max_record_bytes: int = 1 << 20) -> CsvRecords:
    fs, path = filesystem(url)
    out = CsvRecords([])
    width = None
    with fs.open(path, "rb") as f:
        lines = _Lines(iter(f), max_record_bytes)
        while True:
            lines.start()
            try:
                fields = _record(csv.reader(lines, delimiter=delimiter, strict=True))
                if fields is None:
                    break
                if not fields:
                    continue  # a blank line
                if width is None:
                    width = len(fields)
                    if header:
                        out.names = fields
                        continue
                    out.names = [f"column{i}" for i in range(width)]
                if len(fields) != width:  # a whole record, only of the wrong width
                    kind = "TOO MANY COLUMNS" if len(fields) > width else "MISSING COLUMNS"
                    out.bad.append((lines.record[0][0], f"malformed CSV ({kind}): Expected Number of Columns:"
                                    f" {width} Found: {len(fields)}", _text(lines.record)))
                    continue
            except _RecordError as e:  # where the record ends is unknown: go on at its next line
                first, last = lines.record[0], lines.record[-1]
                if len(lines.record) > 1 and e.kind != "UNTERMINATED QUOTE":  # it ran on from here
                    e = _RecordError("UNTERMINATED QUOTE", f"the quoted field opened on line {first[0]} is not"
                                     f" closed before line {last[0]} ({e})")
                out.bad.append((first[0], f"malformed CSV ({e.kind}): {e}", _text(lines.record[:1])))
                lines.skip_bad_record()
                continue
            out.good.append((lines.record[0][0], [v if v != "" else None for v in fields]))
    return out
