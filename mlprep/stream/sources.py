"""Event sources. ``JsonlReplay`` replays a JSON-lines file in blocks of whole lines; its
position (a byte offset and a line number) is what a checkpoint stores to resume exactly."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from mlprep.io.fs import filesystem


@dataclass
class Block:
    data: bytes  # whole lines
    first_line: int  # 1-based line number of the first line in data
    end_offset: int  # byte offset just after data: where to resume
    end_line: int  # line number of the next line


class JsonlReplay:
    """Blocks of about ``block_bytes`` of whole lines from a local or s3:// JSON-lines file."""

    def __init__(self, url: str, block_bytes: int = 4 << 20, offset: int = 0, line: int = 1):
        self.url, self.block_bytes, self.offset, self.line = url, block_bytes, offset, line
        self.name = url

    def blocks(self) -> Iterator[Block]:
        fs, path = filesystem(self.url)
        with fs.open(path, "rb") as f:
            f.seek(self.offset)
            carry = b""
            while True:
                chunk = f.read(self.block_bytes)
                data = carry + chunk
                if not chunk:
                    if data.strip():
                        yield self._emit(data)
                    return
                cut = data.rfind(b"\n") + 1
                if cut == 0:
                    carry = data  # one line longer than a block: keep reading
                    continue
                block, carry = data[:cut], data[cut:]
                yield self._emit(block)

    def _emit(self, data: bytes) -> Block:
        b = Block(data, self.line, self.offset + len(data), self.line + data.count(b"\n"))
        self.offset, self.line = b.end_offset, b.end_line
        return b
