"""``mlprep registry list|approve|reject``: the local model registry."""

from __future__ import annotations

import argparse
import json

from mlprep.cli.common import Subparsers, add_home, home
from mlprep.errors import ConfigError


def cmd_registry(a: argparse.Namespace) -> int:
    from mlprep.pipeline.registry import Registry

    reg = Registry(home(a))
    if a.action == "list":
        rows = reg.packages(a.ref)
        if a.json:
            print(json.dumps([reg.describe(r) for r in rows], indent=2, default=str))
        for r in rows if not a.json else []:
            m = (r.get("Metrics") or {}).get("binary_classification_metrics", {})
            auc = (m.get("roc_auc") or {}).get("value")
            print(f"{r['Name']:<32} {r['ModelApprovalStatus']:<22} {r['CreationTime']}  "
                  f"roc_auc={auc if auc is None else round(auc, 4)}")
        return 0
    if not a.ref:
        raise ConfigError("REF", f"registry {a.action} needs a model package (GROUP/VERSION or ARN)")
    status = {"approve": "Approved", "reject": "Rejected"}[a.action]
    r = reg.set_status(a.ref, status, a.description)
    print(f"{r['Name']}: {r['ModelApprovalStatus']}")
    return 0


def add_commands(sub: Subparsers) -> None:
    reg = sub.add_parser("registry", help="the local model registry")
    reg.add_argument("action", choices=["list", "approve", "reject"])
    reg.add_argument("ref", nargs="?", help="list: a group; approve/reject: GROUP/VERSION or ARN")
    reg.add_argument("--description", help="approval description")
    reg.add_argument("--json", action="store_true")
    add_home(reg)
    reg.set_defaults(fn=cmd_registry)
