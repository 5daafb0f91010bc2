"""A Kinesis stream read shard by shard (boto3), resumable from a position of plain JSON.

    reader = KinesisReader("events", position)
    for shard, first, records in reader.batches():  # records: the Data bytes of each record
        ...
    reader.position()  # {"shards": {shard: {"seq": ..., "n": ...}}, "next": i}: resumes after

The endpoint comes from AWS_ENDPOINT_URL_KINESIS or AWS_ENDPOINT_URL (a local Kinesis, moto).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from mlprep.errors import SourceError


class KinesisReader:
    """Every shard of a Kinesis stream, polled in turn (round robin). Resumes after the
    sequence number each shard was read to, starting with the shard due next. A bounded read
    ends after ``idle_polls`` rounds with no records."""

    def __init__(self, stream: str, position: dict[str, Any] | None = None, limit: int = 1000,
                 idle_polls: int = 3, poll_interval: float = 0.2):
        import boto3

        self.stream = stream
        endpoint = os.environ.get("AWS_ENDPOINT_URL_KINESIS") or os.environ.get("AWS_ENDPOINT_URL")
        self.client = boto3.client("kinesis", endpoint_url=endpoint)
        self.pos: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (position or {}).get("shards", {}).items()}
        self.next_shard = int((position or {}).get("next", 0))
        self.limit, self.idle_polls, self.poll_interval = limit, idle_polls, poll_interval
        try:
            shards = self.client.list_shards(StreamName=self.stream)["Shards"]
        except Exception as e:
            raise SourceError(f"cannot read Kinesis stream {self.stream!r}: {e}") from e
        self.shards = [s["ShardId"] for s in shards]

    def position(self) -> dict[str, Any]:
        return {"shards": {k: dict(v) for k, v in self.pos.items()}, "next": self.next_shard}

    def batches(self) -> Iterator[tuple[str, int, list[bytes]]]:
        """(shard, number of its first record (1-based, counted over the whole read), the
        records' data) for every poll that returned records."""
        iters = self._iterators()
        idle = 0
        while iters:
            got = False
            # round robin from the shard a resumed run was due to poll next: the same interleaving
            order = [*self.shards[self.next_shard:], *self.shards[: self.next_shard]]
            for shard in [s for s in order if s in iters]:
                recs = self._poll(shard, iters)
                if not recs:
                    continue
                got = True
                p = self.pos.setdefault(shard, {"seq": None, "n": 0})
                first = p["n"] + 1
                p["n"] += len(recs)
                p["seq"] = recs[-1]["SequenceNumber"]
                yield shard, first, [rec["Data"] for rec in recs]
            if got:
                idle = 0
            else:
                idle += 1
                if idle >= self.idle_polls:
                    return
                time.sleep(self.poll_interval)

    def _iterators(self) -> dict[str, str]:
        """A shard iterator per shard: after its checkpointed sequence number, else its start."""
        iters = {}
        for shard in self.shards:
            seq = self.pos.get(shard, {}).get("seq")
            kw = ({"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": seq} if seq
                  else {"ShardIteratorType": "TRIM_HORIZON"})
            iters[shard] = self.client.get_shard_iterator(StreamName=self.stream, ShardId=shard, **kw)["ShardIterator"]
        return iters

    def _poll(self, shard: str, iters: dict[str, str]) -> list[dict[str, Any]]:
        """One GetRecords on ``shard``; moves its iterator on (a closed shard, read to its end,
        leaves ``iters``) and the shard due next."""
        self.next_shard = (self.shards.index(shard) + 1) % len(self.shards)
        r = self.client.get_records(ShardIterator=iters[shard], Limit=self.limit)
        nxt = r.get("NextShardIterator")
        if nxt:
            iters[shard] = nxt
        else:
            del iters[shard]
        return r.get("Records", [])
