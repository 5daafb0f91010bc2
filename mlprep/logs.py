"""Structured logs: one JSON object per line on stderr (``--log-format json``) or plain text.

Fields passed with ``extra={...}`` become keys of the JSON object. Values of keys that look like
secrets (password, secret, token, key id) are masked.
"""

from __future__ import annotations

import json
import logging
import re
import sys

_STD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
SECRET = re.compile(r"(password|passwd|secret|token|access_key|session_key|api_key)", re.I)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
               "logger": record.name, "msg": record.getMessage()}
        for k, v in vars(record).items():
            if k not in _STD and not k.startswith("_"):
                out[k] = "***" if SECRET.search(k) else v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in vars(record).items() if k not in _STD and not k.startswith("_")}
        tail = " ".join(f"{k}={'***' if SECRET.search(k) else v}" for k, v in extra.items())
        line = f"{record.levelname.lower()} {record.name}: {record.getMessage()}" + (f" {tail}" if tail else "")
        return line + ("\n" + self.formatException(record.exc_info) if record.exc_info else "")


def setup(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("mlprep")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
