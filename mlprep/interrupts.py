"""Ctrl-C and SIGTERM: end cleanly, and take every process mlprep started along.

``install()`` turns SIGINT and SIGTERM into :class:`Interrupted` (a ``BaseException``, so no
``except Exception`` swallows it) in the main thread; after the first one both are ignored, so
the clean-up that follows (killing children, writing the summary) is not cut short by a second
Ctrl-C. ``kill_tree`` ends a process and all its descendants: the tree is read before anything
is killed, because a child whose parent dies is re-parented and could no longer be found.
"""

from __future__ import annotations

import contextlib
import os
import signal
from types import FrameType

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(BaseException):
    """The process got SIGINT or SIGTERM."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 128 + self.signum)


def _raise(signum: int, _frame: FrameType | None) -> None:
    for s in EXIT_CODES:
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signum)


def install() -> None:
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread (once)."""
    for s in EXIT_CODES:
        signal.signal(s, _raise)


def kill_tree(pid: int | None = None, *, include_self: bool = True, grace: float = 3.0) -> int:
    """SIGTERM ``pid`` (default: this process's children) and its descendants, then SIGKILL
    what is left after ``grace`` seconds. Returns how many processes were signalled."""
    import psutil

    try:
        root = psutil.Process(pid if pid is not None else os.getpid())
        procs = root.children(recursive=True)
    except psutil.Error:
        return 0
    if include_self and pid is not None:
        procs.append(root)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=grace)
    return len(procs)
