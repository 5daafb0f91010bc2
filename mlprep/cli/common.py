"""What the command groups share: the sub-parser protocol, the progress switch, parameter sources."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Protocol


class Subparsers(Protocol):
    """What ``ArgumentParser.add_subparsers()`` returns, as the command groups use it."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def progress(a: argparse.Namespace) -> bool:
    """Live bars on a terminal only: in a log or a pipe they are lines of carriage returns."""
    return not a.no_progress and sys.stderr.isatty()


def param_sources(p: argparse.ArgumentParser) -> None:
    """``-f FILE`` and ``--secret NAME`` (read with ``mlprep.params.parse_cli``)."""
    p.add_argument("-f", "--parameters-file", dest="params_file", action="append", metavar="FILE",
                   help="YAML file of parameters (name: value; STAGE: {name: value}); --param wins")
    p.add_argument("--secret", action="append", metavar="NAME",
                   help="a secret parameter, read from the environment variable MLPREP_SECRET_<NAME> "
                        "(or asked for on a terminal): never on the command line, never written")


def add_home(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", help="mlprep's local folder (default $MLPREP_HOME or ./.mlprep)")


def home(a: argparse.Namespace) -> Path:
    """The local folder of pipelines, registry and endpoints."""
    from mlprep.pipeline.executor import default_home

    return Path(a.home).resolve() if a.home else default_home()
