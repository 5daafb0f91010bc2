"""Split files into lines as Arrow binary arrays, with 1-based line numbers.

Lines are sliced out of large read blocks without copying (Arrow offsets over the block), so a
1 GB JSON-lines file costs a few numpy passes in Python; validation (UTF-8, JSON) happens later,
vectorised, in the engine. Lines longer than ``max_record_bytes`` are not kept whole: they come
back as :class:`Oversized` records (position, length and a prefix), so a 10 MB garbage line never
has to sit in memory next to millions of good ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mlprep.io.fs import filesystem

BLOCK_BYTES = 64 << 20
SCHEMA = pa.schema([("line_no", pa.int64()), ("raw", pa.binary())])


@dataclass(frozen=True)
class Oversized:
    """A line longer than the limit: where it is, how long it is, and its first bytes."""

    line_no: int
    length: int
    prefix: bytes


def _batch(block: bytes, starts: np.ndarray, ends: np.ndarray, first_line: int) -> pa.RecordBatch:
    # each value spans [start, next start): the line plus its newline, contiguous in the block
    offsets = np.empty(len(starts) + 1, np.int32)
    offsets[:-1] = starts
    offsets[-1] = ends[-1]
    raw = pa.Array.from_buffers(
        pa.binary(), len(starts), [None, pa.py_buffer(offsets), pa.py_buffer(block)]
    )
    line_no = pa.array(np.arange(first_line, first_line + len(starts), dtype=np.int64))
    return pa.RecordBatch.from_arrays([line_no, raw], schema=SCHEMA)


def read_lines(
    url: str, max_record_bytes: int, oversized: list[Oversized], block_bytes: int = BLOCK_BYTES
) -> Iterator[pa.RecordBatch]:
    """Yield record batches ``(line_no int64, raw binary)`` of the lines of ``url``.

    Empty and whitespace-only lines are not records and are skipped (their numbers are not
    reused, so ``line_no`` always matches an editor's line number). Lines longer than
    ``max_record_bytes`` are appended to ``oversized`` instead of being yielded.
    """
    fs, path = filesystem(url)
    line = 1
    carry = b""
    skipping: Oversized | None = None  # inside an oversized line: count it, keep its prefix
    with fs.open(path, "rb") as f:
        while True:
            chunk = f.read(block_bytes)
            eof = not chunk
            if skipping is not None:
                nl = chunk.find(b"\n")
                if nl < 0 and not eof:
                    skipping = Oversized(skipping.line_no, skipping.length + len(chunk), skipping.prefix)
                    continue
                end = len(chunk) if nl < 0 else nl
                oversized.append(Oversized(skipping.line_no, skipping.length + end, skipping.prefix))
                skipping = None
                line += 1
                chunk = chunk[end + 1 :]
                if eof:
                    break
            block = carry + chunk if carry else chunk
            if eof:
                if not block.strip():
                    break
                block += b"\n"
            arr = np.frombuffer(block, np.uint8)
            nls = np.flatnonzero(arr == 10)
            if len(nls) == 0:
                if len(block) > max_record_bytes:
                    skipping = Oversized(line, len(block), block[:1024])
                    carry = b""
                else:
                    carry = block
                continue
            ends = nls + 1
            starts = np.concatenate(([0], ends[:-1]))
            lengths = nls - starts  # without the newline
            carry = block[ends[-1] :]
            numbers = np.arange(line, line + len(starts))
            line += len(starts)
            keep = lengths > 0
            # whitespace-only lines (e.g. "\r" or "  ") are not records either
            short = np.flatnonzero(keep & (lengths <= 2))
            for i in short:
                if not block[starts[i] : nls[i]].strip():
                    keep[i] = False
            big = np.flatnonzero(lengths > max_record_bytes)
            for i in big:
                oversized.append(
                    Oversized(int(numbers[i]), int(lengths[i]), block[starts[i] : starts[i] + 1024])
                )
                keep[i] = False
            if keep.all():
                yield _batch(block, starts, ends, int(numbers[0]))
            elif keep.any():
                # rare path: rebuild without the dropped lines (copies this block's good lines)
                idx = np.flatnonzero(keep)
                batch = _batch(block, starts, ends, int(numbers[0]))
                batch = batch.take(pa.array(idx))
                yield pa.RecordBatch.from_arrays(
                    [pa.array(numbers[idx].astype(np.int64)), batch.column(1)], schema=SCHEMA
                )
            if len(carry) > max_record_bytes:
                skipping = Oversized(line, len(carry), carry[:1024])
                carry = b""
            if eof:
                break
