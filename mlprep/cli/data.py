"""``mlprep data generate``."""

from __future__ import annotations

import argparse
import json

from mlprep.cli.common import Subparsers
from mlprep.errors import ConfigError


def cmd_generate(a: argparse.Namespace) -> int:
    from mlprep.datasets.payments import generate

    if a.rows < 1000:
        raise ConfigError("--rows", f"must be >= 1000, got {a.rows}")
    if a.days < 1:
        raise ConfigError("--days", f"must be >= 1, got {a.days}")
    g = generate(a.out, a.rows, a.seed, a.days)
    print(json.dumps({"out": str(g.out_dir), "rows": g.rows, "users": g.users,
                      "duplicates": g.duplicates, "fraud": g.fraud}))
    return 0


def add_commands(sub: Subparsers) -> None:
    """``mlprep data generate``."""
    data = sub.add_parser("data", help="sample data").add_subparsers(dest="cmd", required=True)
    g = data.add_parser("generate", help="write the seeded card-payments data set",
                        description="Write transactions.jsonl, events.jsonl, labels.jsonl and users.db.")
    g.add_argument("--out", required=True, help="output folder (created)")
    g.add_argument("--rows", type=int, default=10_000, help="transactions (>= 1000; default 10000)")
    g.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    g.add_argument("--days", type=int, default=7, help="event-time span in days (default 7)")
    g.set_defaults(fn=cmd_generate)
