"""Event sources. ``JsonlReplay`` replays a JSON-lines file in blocks of whole lines; its
position (a byte offset and a line number) is what a checkpoint stores to resume exactly.
``KinesisSource`` reads a Kinesis stream's shards, ``ParquetReplay`` the rows of Parquet files."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from mlprep.errors import SourceError
from mlprep.io.fs import filesystem
from mlprep.io.kinesis import KinesisReader


@dataclass
class Block:
    data: bytes  # whole lines
    first_line: int  # 1-based line (or record) number of the first line in data
    end_offset: int = 0  # byte offset just after data: where to resume
    end_line: int = 0  # line number of the next line
    source: str = ""  # where the lines come from (dead letters name it)
    part: str | None = None  # the source partition (Kinesis shard)
    frame: Any = None  # a polars DataFrame instead of lines (Parquet replay)


class Source(Protocol):
    """What the runner reads: blocks from a resumable position, over named partitions."""

    name: str
    partitions: list[str]  # Kinesis shards; none for a file

    def position(self) -> dict[str, Any]: ...

    def blocks(self) -> Iterator[Block]: ...


MAX_BLOCK = 2 << 30


def open_source(url: str, position: dict[str, Any] | None = None, block_bytes: int = 4 << 20) -> Source:
    """``kinesis://STREAM`` or a JSON-lines path, resumed at ``position`` (from a checkpoint)."""
    if url.startswith("kinesis://"):
        return KinesisSource(url, position)
    pos = position or {}
    fs, path = filesystem(url)
    if not fs.exists(path):
        raise SourceError(f"--source: no such file or folder: {url}")
    if url.rstrip("/").endswith((".parquet", ".pq")) or _is_parquet_dir(url):
        return ParquetReplay(url, pos.get("row", 0))
    if fs.isdir(path):
        raise SourceError(f"--source: {url} is a folder without Parquet files (give a JSON-lines file)")
    if not 1 <= block_bytes <= MAX_BLOCK:  # a block is read whole into memory (and parsed as a frame)
        raise SourceError(f"--block-size: must be 1 byte to {MAX_BLOCK >> 30} GiB, got {block_bytes}")
    return JsonlReplay(url, block_bytes, pos.get("offset", 0), pos.get("line", 1))


class JsonlReplay:
    """Blocks of about ``block_bytes`` of whole lines from a local or s3:// JSON-lines file."""

    def __init__(self, url: str, block_bytes: int = 4 << 20, offset: int = 0, line: int = 1):
        self.url, self.block_bytes, self.offset, self.line = url, block_bytes, offset, line
        self.name = url
        self.partitions: list[str] = []

    def position(self) -> dict[str, Any]:
        return {"offset": self.offset, "line": self.line}

    def blocks(self) -> Iterator[Block]:
        """Each block is read afresh from where the last one ended (the bytes after its last
        newline are read again, not carried): the blocks are a function of the file alone, so
        a run resumed at a checkpoint's offset sees the very micro-batches an uninterrupted run
        sees, and its floating-point merges happen in the same order."""
        fs, path = filesystem(self.url)
        with fs.open(path, "rb") as f:
            while True:
                f.seek(self.offset)
                data = f.read(self.block_bytes)
                cut = data.rfind(b"\n") + 1
                while cut == 0:  # one line longer than a block: read on to its end
                    more = f.read(self.block_bytes)
                    if not more:
                        break
                    data += more
                    cut = data.rfind(b"\n") + 1
                if cut == 0:  # the last line, without a newline
                    if data.strip():
                        yield self._emit(data)
                    return
                yield self._emit(data[:cut])

    def _emit(self, data: bytes) -> Block:
        b = Block(data, self.line, self.offset + len(data), self.line + data.count(b"\n"), self.url)
        self.offset, self.line = b.end_offset, b.end_line
        return b


class KinesisSource:
    """Every shard of a Kinesis stream (``kinesis://STREAM``, read by ``io.kinesis``), one
    block per poll that returned records; each shard is a partition of the watermark."""

    def __init__(self, url: str, position: dict[str, Any] | None = None, limit: int = 1000,
                 idle_polls: int = 3, poll_interval: float = 0.2):
        self.name = url
        self.reader = KinesisReader(url[len("kinesis://"):].strip("/"), position, limit, idle_polls, poll_interval)
        self.partitions = self.reader.shards

    def position(self) -> dict[str, Any]:
        return self.reader.position()

    def blocks(self) -> Iterator[Block]:
        for shard, first, records in self.reader.batches():
            # one record per line (a raw newline can only be white space in valid JSON)
            data = b"\n".join(r.replace(b"\n", b" ") for r in records) + b"\n"
            yield Block(data, first, source=f"{self.name}/{shard}", part=shard)


def _is_parquet_dir(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.isdir(path) and any(p.endswith((".parquet", ".pq")) for p in fs.find(path))


class ParquetReplay:
    """Rows of a Parquet file (or a folder of them, in name order) in batches, in row order;
    the position is the row number."""

    def __init__(self, url: str, row: int = 0, batch_rows: int = 65_536):
        self.url, self.row, self.batch_rows = url, row, batch_rows
        self.name = url
        self.partitions: list[str] = []

    def position(self) -> dict[str, Any]:
        return {"row": self.row}

    def blocks(self) -> Iterator[Block]:
        import polars as pl
        import pyarrow.dataset as ds

        fs, path = filesystem(self.url)
        dataset = ds.dataset(path, filesystem=fs, format="parquet")
        seen = 0
        for batch in dataset.to_batches(batch_size=self.batch_rows):
            n = batch.num_rows
            if seen + n <= self.row:  # before the checkpointed row
                seen += n
                continue
            skip = max(0, self.row - seen)
            frame = pl.from_arrow(batch.slice(skip))
            first = seen + skip + 1
            seen += n
            self.row = seen
            yield Block(b"", first, source=self.url, frame=frame)
