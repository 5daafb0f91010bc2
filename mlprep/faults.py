"""Crash-test hook: ``fault(point)`` SIGKILLs this process when MLPREP_FAULT_POINT names the
point, so tests can kill a job at an exact moment (mid-publish, mid-checkpoint) for real."""

from __future__ import annotations

import os
import signal


def fault(point: str) -> None:
    if os.environ.get("MLPREP_FAULT_POINT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
