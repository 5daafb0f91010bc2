"""The ``mlprep`` command line: ``main`` and the parser; each command group is a module here that
adds its own sub-commands (``add_commands``): ``data``, ``batch``, ``stream``, ``pipeline``,
``registry``, ``endpoint``, ``run``, ``deploy``. A command imports what it runs when it runs, so
``mlprep --help`` stays fast."""

from __future__ import annotations

import argparse
import logging
import sys

from mlprep import __version__, interrupts, logs
from mlprep.cli import batch, data, deploy, endpoint, pipeline, registry, run, stream
from mlprep.errors import MlprepError
from mlprep.interrupts import Interrupted

GROUPS = (data, batch, stream, pipeline, registry, endpoint, deploy, run)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlprep", description="Notebook-driven ML data prep.")
    p.add_argument("--version", action="version", version=f"mlprep {__version__}")
    p.add_argument("--log-format", choices=["text", "json"], default="text", help="log lines on stderr")
    p.add_argument("--log-level", default="WARNING", type=str.upper, metavar="LEVEL",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], help="DEBUG, INFO, WARNING, ERROR")
    sub = p.add_subparsers(dest="group", required=True, metavar="{data,batch,stream,pipeline,registry,endpoint,run,deploy}")
    for group in GROUPS:
        group.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    logs.setup(a.log_format, a.log_level.upper())
    interrupts.install()
    try:
        return a.fn(a)
    except MlprepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug or an engine's own error: one line here, the traceback in the debug log
        logging.getLogger("mlprep").debug("unexpected error", exc_info=True)
        print(f"error: {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
              " (--log-level DEBUG shows the traceback)", file=sys.stderr)
        return 1
    except Interrupted as e:  # Ctrl-C / SIGTERM: whatever we started goes too, no traceback
        interrupts.kill_tree()
        print(f"interrupted ({e.name}): mlprep {a.group} {getattr(a, 'cmd', '') or ''} stopped".rstrip(),
              file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
