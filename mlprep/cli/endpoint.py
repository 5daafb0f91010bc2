"""``mlprep endpoint serve|list|stop|invoke``: local endpoints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlprep.cli.common import Subparsers, add_home, home
from mlprep.errors import ConfigError


def cmd_serve(a: argparse.Namespace) -> int:
    from mlprep.pipeline import serve

    if a.host not in ("127.0.0.1", "localhost", "::1") and not a.allow_remote:
        raise ConfigError("--host", f"{a.host} exposes the model beyond this machine: add --allow-remote")
    if a.max_connections < 1:
        raise ConfigError("--max-connections", f"must be at least 1, got {a.max_connections}")
    serve.serve(home(a), a.ref, a.host, a.port, Path(a.ready_file) if a.ready_file else None, a.max_bytes,
                allow_remote=a.allow_remote, max_connections=a.max_connections)
    return 0


def cmd_endpoints(a: argparse.Namespace) -> int:
    from mlprep.pipeline import serve
    from mlprep.pipeline.registry import Registry

    reg = Registry(home(a))
    if a.action == "list":
        for e in reg.endpoints():
            state = "InService" if serve.alive(int(e["Pid"])) else "Stopped"
            print(f"{e['EndpointName']:<28} {state:<10} {e['Url']}  model={e['ModelName']}")
        return 0
    if not a.name:
        raise ConfigError("NAME", f"endpoint {a.action} needs an endpoint name")
    e = reg.endpoint(a.name)
    if a.action == "stop":
        serve.stop(int(e["Pid"]))
        reg.delete_endpoint(a.name)
        print(f"{a.name}: stopped")
        return 0
    body = Path(a.file).read_bytes() if a.file else (a.body or "").encode()
    try:
        answer, _ = serve.Endpoint(reg, a.name).call(body, a.content_type, a.accept, timeout=60)
    except serve.EndpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    sys.stdout.write(answer.decode() + "\n")
    return 0


def add_commands(sub: Subparsers) -> None:
    ep = sub.add_parser("endpoint", help="local endpoints").add_subparsers(dest="cmd", required=True)
    sv = ep.add_parser("serve", help="serve a model package or model over HTTP (SageMaker contract)")
    sv.add_argument("ref", help="model package (ARN, GROUP/VERSION, or GROUP for its latest approved) or model name")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    sv.add_argument("--allow-remote", action="store_true",
                    help="allow a --host other than loopback, and requests for any Host name")
    sv.add_argument("--max-connections", type=int, default=64,
                    help="connections served at once; more are answered 503 (default %(default)s)")
    sv.add_argument("--max-bytes", type=int, default=6 * 1024 * 1024, help="request size limit")
    sv.add_argument("--ready-file", help=argparse.SUPPRESS)
    add_home(sv)
    sv.set_defaults(fn=cmd_serve)
    for action in ("list", "stop", "invoke"):
        c = ep.add_parser(action, help=f"{action} local endpoints")
        if action != "list":
            c.add_argument("name")
        else:
            c.set_defaults(name=None)
        if action == "invoke":
            c.add_argument("--body", help="request body")
            c.add_argument("--file", help="request body from a file")
            c.add_argument("--content-type", default="text/csv")
            c.add_argument("--accept", default="application/json")
        add_home(c)
        c.set_defaults(fn=cmd_endpoints, action=action)
