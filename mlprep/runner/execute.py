"""Notebooks executed by papermill in a child process, watched by the parent.

The child (``python -m mlprep.runner.execute``, a :class:`Worker`) imports papermill once and
then runs the jobs the parent writes to its stdin, one JSON object per line, one at a time: a run
pays papermill's import (~1.5-2 s of CPU where no bytecode is cached) once, not once per stage.
For each job it parameterizes and runs the notebook and reports on stdout, one JSON object per
line: ``start`` (cells), ``cell`` (n), ``out`` (text the notebook printed), ``end`` (ok, error,
cell). The parent (``run``) shows progress (stage, cell n of m, elapsed), streams the output to
the terminal and the stage's log, enforces the stage timeout by ending the child's whole process
tree (kernel included), and tells a dead kernel, a timeout, a failing cell and a crashed child
apart. A child that did not end its job well is ended; the next job gets a fresh one.

Secrets (parameters whose name looks like one) never reach the notebook file: the injected cell
reads them from the kernel's environment (set for that job only, sent through the pipe, never a
file), and any printed copy of their value is replaced by ``***`` in the log, the terminal and the
executed notebook.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn

from mlprep.interrupts import Interrupted, kill_tree
from mlprep.masking import MASK, Masker, StreamMasker

__all__ = ["MASK", "Outcome", "Worker", "run", "tail_text"]


@dataclass
class Outcome:
    ok: bool
    kind: str  # ok | error | dead_kernel | timeout | crashed | interrupted
    error: str = ""
    cell: int | None = None
    cells: int = 0
    seconds: float = 0.0


# --- child -------------------------------------------------------------------------------------
def _emit(**event: Any) -> None:
    sys.__stdout__.write(json.dumps(event) + "\n")
    sys.__stdout__.flush()


class _Cells(logging.Handler):
    """papermill's "Executing Cell N" log lines -> progress events (its other lines are dropped:
    cell output reaches ``_Stream`` as it is printed)."""

    def emit(self, record: logging.LogRecord) -> None:
        m = re.match(r"Executing Cell (\d+)-", record.getMessage())
        if m:
            _emit(e="cell", n=int(m.group(1)))


class _Stream:
    """What the notebook prints (stdout and stderr), secrets masked -> the stage log and events.
    The masker holds back a tail that may be the start of a secret printed in pieces."""

    def __init__(self, log, secrets: list[str]) -> None:
        self.log, self.masker = log, StreamMasker(secrets)

    def write(self, text: str) -> int:
        self._out(self.masker.feed(text))
        return len(text)

    def _out(self, text: str) -> None:
        if text:
            self.log.write(text)
            self.log.flush()
            _emit(e="out", text=text)

    def flush(self) -> None:
        self.log.flush()

    def close(self) -> None:
        self._out(self.masker.flush())


def _joined_streams(outputs: list) -> list:
    """Consecutive stream outputs of one name as one (as Jupyter shows them): a secret printed
    in pieces across writes is then whole for the masker."""
    out: list = []
    for o in outputs:
        if (o.get("output_type") == "stream" and out and out[-1].get("output_type") == "stream"
                and out[-1].get("name") == o.get("name")):
            text = o.get("text", "")
            out[-1]["text"] = "".join(out[-1].get("text", "")) + ("".join(text) if isinstance(text, list) else text)
        else:
            out.append(dict(o))
    return out


def _write_masked(source: Path, target: Path, masker: Masker) -> None:
    """The executed notebook with every secret form masked in its decoded strings."""
    nb = json.loads(source.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("outputs"):
            cell["outputs"] = _joined_streams(cell["outputs"])
    nb = masker.value(nb)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(target)


def _papermill() -> SimpleNamespace:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    return SimpleNamespace(execute=pm.execute_notebook, ExecutionError=PapermillExecutionError,
                           load=load_notebook_node, parameterize=parameterize_notebook)


@contextlib.contextmanager
def _environment(extra: dict[str, str]) -> Iterator[None]:
    """``extra`` in the environment for one job (the kernel inherits it), then as it was: one
    stage's secrets never reach the next stage's kernel."""
    before = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _parameterized(pm: SimpleNamespace, job: dict, secret_names: list[str]) -> Any:
    """The notebook with its parameters injected; a secret as an environment lookup, not its value."""
    params = dict(job["parameters"])
    for n in secret_names:  # a placeholder, swapped for an environment lookup below
        params[n] = f"@@MLPREP_SECRET_{n.upper()}@@"
    nb = pm.parameterize(pm.load(job["input"]), params, report_mode=False)
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            for n in secret_names:
                cell.source = re.sub(rf"(['\"])@@MLPREP_SECRET_{n.upper()}@@\1",
                                     f'__import__("os").environ["MLPREP_SECRET_{n.upper()}"]  # secret',
                                     cell.source)
    return nb


def _job(pm: SimpleNamespace, job: dict) -> int:
    """One notebook, reported as events; 0 if it ran through."""
    secret_names = job.get("secrets", [])
    secret_values = [os.environ.get(f"MLPREP_SECRET_{n.upper()}", "") for n in secret_names]
    nb = _parameterized(pm, job, secret_names)
    code_cells = sum(1 for c in nb.cells if c.cell_type == "code")
    _emit(e="start", cells=len(nb.cells), code_cells=code_cells)
    masker = Masker(secret_values)
    # with secrets, papermill writes to a private place; only the masked copy reaches the output
    written = Path(job["private_output"]) if masker else Path(job["output"])
    with open(job["log"], "a", encoding="utf-8") as log:
        relay = _Cells()
        stream = _Stream(log, secret_values)
        plog = logging.getLogger("papermill")
        plog.addHandler(relay)
        plog.setLevel(logging.INFO)
        plog.propagate = False
        error: dict[str, Any] = {}
        try:
            pm.execute(nb, str(written), parameters=None, cwd=job.get("cwd"), progress_bar=False,
                       log_output=True, stdout_file=stream, stderr_file=stream,
                       kernel_name=job.get("kernel", "python3"), start_timeout=job.get("start_timeout", 60),
                       execution_timeout=job.get("cell_timeout"), request_save_on_cell_execute=not masker)
        except pm.ExecutionError as e:
            error = {"kind": "error", "cell": e.exec_count, "error": f"{e.ename}: {e.evalue}",
                     "traceback": masker.text("\n".join(e.traceback))}
        except Exception as e:
            kind = "dead_kernel" if type(e).__name__ == "DeadKernelError" else (
                "timeout" if "Timeout" in type(e).__name__ else "error")
            error = {"kind": kind, "error": f"{type(e).__name__}: {e}"}
        finally:
            stream.close()
            plog.removeHandler(relay)
            if masker and written.exists():
                _write_masked(written, Path(job["output"]), masker)
                written.unlink()
    if error:
        error["error"] = masker.text(error["error"])
        _emit(e="end", ok=False, **error)
        return 1
    _emit(e="end", ok=True)
    return 0


def serve() -> NoReturn:
    """The child's loop: papermill imported once, then one job per line of stdin until it closes."""
    pm = _papermill()
    for line in sys.stdin:
        if line.strip():
            job = json.loads(line)
            with _environment(job.get("env") or {}):
                _job(pm, job)
    # every job is done and written; the interpreter's teardown (jupyter_client, zmq, thousands of
    # modules) would add 0.2-0.4 s that the run waits for, to no end
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# --- parent ------------------------------------------------------------------------------------
@dataclass
class _Seen:
    """What the child has reported so far."""

    cells: int = 0
    cell: int = 0
    end: dict | None = None


class Worker:
    """The child process, started on first use and kept for the next job while its jobs end well.
    ``close`` lets it exit (or ends it). Use one per run: ``with Worker() as w: run(..., worker=w)``."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.stderr: list[str] = []  # everything it wrote to stderr (a crash's tail comes from here)
        self.reader: threading.Thread | None = None

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, job: dict) -> subprocess.Popen:
        """Send ``job``; returns the process that runs it (a fresh one if the last has gone)."""
        line = json.dumps(job, default=str) + "\n"
        for _ in range(2):
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            try:
                self.proc.stdin.write(line)
                self.proc.stdin.flush()
                return self.proc
            except OSError:  # it died between jobs: once more with a fresh one
                self.end()
        raise RuntimeError("the notebook process could not be started")

    def _start(self) -> None:
        self.stderr = []
        self.proc = subprocess.Popen([sys.executable, "-m", "mlprep.runner.execute"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.reader = threading.Thread(target=self._read_stderr, args=(self.proc, self.stderr), daemon=True)
        self.reader.start()

    @staticmethod
    def _read_stderr(proc: subprocess.Popen, into: list[str]) -> None:
        into.extend(proc.stderr)

    def end(self) -> None:
        """End the process and everything it started (a kernel, the kernel's children)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                kill_tree(self.proc.pid)
            self.proc.wait()
            if self.reader is not None:
                self.reader.join(5)
            self.proc = None

    def close(self, grace: float = 10.0) -> None:
        """Let the process exit (stdin closed), ending it if it does not within ``grace`` s."""
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(grace)
        self.end()


def run(notebook: Path, output: Path, parameters: dict[str, Any], log: Path, *, cwd: Path | None = None,
        secrets: dict[str, str] | None = None, timeout: float | None = None, cell_timeout: float | None = None,
        label: str = "", extra_env: dict[str, str] | None = None, show_output: bool = True,
        worker: Worker | None = None) -> Outcome:
    """Execute ``notebook`` into ``output`` in ``worker`` (a private one if none); never raises
    for a notebook failure."""
    if worker is None:
        with Worker() as own:
            return run(notebook, output, parameters, log, cwd=cwd, secrets=secrets, timeout=timeout,
                       cell_timeout=cell_timeout, label=label, extra_env=extra_env, show_output=show_output,
                       worker=own)
    secrets = secrets or {}
    log.parent.mkdir(parents=True, exist_ok=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix="mlprep-nb-"))  # 0700: the unmasked notebook, briefly
    env = {**(extra_env or {}), **{f"MLPREP_SECRET_{k.upper()}": v for k, v in secrets.items()}}
    job = {"input": str(notebook), "output": str(output), "parameters": parameters, "log": str(log),
           "cwd": str(cwd) if cwd else None, "secrets": sorted(secrets), "cell_timeout": cell_timeout,
           "private_output": str(private / output.name), "env": env}
    started = time.monotonic()
    try:
        return _watch(worker, job, timeout, _Progress(label, show_output), log, started)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _watch(worker: Worker, job: dict, timeout: float | None, bar: _Progress, log: Path, started: float) -> Outcome:
    """Submit ``job`` and follow it to its end, a timeout or an interrupt."""
    proc = worker.submit(job)
    first_err = len(worker.stderr)
    timed_out = threading.Event()

    def on_timeout() -> None:
        timed_out.set()
        kill_tree(proc.pid)

    timer = threading.Timer(timeout, on_timeout) if timeout else None
    if timer:
        timer.daemon = True
        timer.start()
    seen, interrupted = _Seen(), None
    try:
        _follow(proc, bar, seen)
    except Interrupted as e:  # the kernel, its jobs and servers go too
        interrupted = e
    finally:
        if timer:
            timer.cancel()
        bar.close()
        if seen.end is None or not seen.end.get("ok"):
            worker.end()  # whatever state a failure left it in goes with it
    seconds = round(time.monotonic() - started, 2)
    if interrupted is not None:
        return Outcome(False, "interrupted", interrupted.name, seen.cell or None, seen.cells, seconds)
    if timed_out.is_set():
        return Outcome(False, "timeout", f"stage timeout ({timeout:g} s) exceeded at cell {seen.cell} of "
                       f"{seen.cells}", seen.cell, seen.cells, seconds)
    return _outcome(seen, proc.returncode, worker.stderr[first_err:], log, seconds)


def _follow(proc: subprocess.Popen, bar: _Progress, seen: _Seen) -> None:
    """Read the child's events (JSON lines on its stdout) until this job's end, or until the
    child closes its stdout (it died)."""
    for line in iter(proc.stdout.readline, ""):
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev["e"] == "start":
            seen.cells = ev["cells"]
            bar.start(seen.cells)
        elif ev["e"] == "cell":
            seen.cell = ev["n"]
            bar.cell(seen.cell)
        elif ev["e"] == "out":
            bar.write(ev["text"])
        elif ev["e"] == "end":
            seen.end = ev
            return


def _outcome(seen: _Seen, returncode: int | None, stderr_lines: list[str], log: Path, seconds: float) -> Outcome:
    """The outcome of a child that ended by itself: its end event, or how it died."""
    cell, cells, end = seen.cell, seen.cells, seen.end
    if end is None:
        tail = "".join(stderr_lines[-15:]).strip()
        return Outcome(False, "crashed", f"the stage process died (exit {returncode})"
                       + (f": {tail}" if tail else ""), cell or None, cells, seconds)
    if end["ok"]:
        return Outcome(True, "ok", "", None, cells, seconds)
    err = end.get("error", "")
    if end.get("traceback"):
        with open(log, "a", encoding="utf-8") as f:
            f.write(_strip_ansi(end["traceback"]) + "\n")
    if end.get("kind") == "dead_kernel":
        err = f"the kernel died while executing cell {cell} of {cells} ({err})"
    return Outcome(False, end.get("kind", "error"), err, end.get("cell") or cell or None, cells, seconds)


def tail_text(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(_strip_ansi(log.read_text(errors="replace")).splitlines()[-lines:])
    except OSError:
        return ""


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


class _Progress:
    """A tqdm bar per stage (cells), with the notebook's output streamed above it."""

    def __init__(self, label: str, show_output: bool) -> None:
        self.label, self.show, self.bar = label, show_output, None

    def start(self, cells: int) -> None:
        self.cells, self.t0 = cells, time.monotonic()
        if sys.stderr.isatty():  # a live bar; in a log (CI, make), one line per cell instead
            from tqdm import tqdm

            self.bar = tqdm(total=cells, desc=self.label, unit="cell", file=sys.stderr, leave=True,
                            bar_format="{desc}: cell {n_fmt}/{total_fmt} [{elapsed}]")

    def cell(self, n: int) -> None:
        if self.bar is not None:
            self.bar.n = n
            self.bar.refresh()
        else:
            el = int(time.monotonic() - self.t0)
            print(f"{self.label}: cell {n}/{self.cells} [{el // 60:02d}:{el % 60:02d}]", file=sys.stderr, flush=True)

    def write(self, text: str) -> None:
        if not self.show:
            return
        lines = text.rstrip("\n").splitlines()
        if self.bar is not None:
            from tqdm import tqdm

            for line in lines:
                tqdm.write(f"  {self.label} | {line}", file=sys.stderr)
        else:
            for line in lines:
                print(f"  {self.label} | {line}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


if __name__ == "__main__":
    sys.exit(serve())
