"""One notebook executed by papermill in a child process, watched by the parent.

The child (``python -m mlprep.runner.execute JOB.json``) parameterizes and runs the notebook
and reports on stdout, one JSON object per line: ``start`` (cells), ``cell`` (n), ``out``
(text the notebook printed), ``end`` (ok, error, cell). The parent (``run``) shows progress
(stage, cell n of m, elapsed), streams the output to the terminal and the stage's log, enforces
the stage timeout by ending the child's whole process tree (kernel included), and tells a dead
kernel, a timeout, a failing cell and a crashed child apart.

Secrets (parameters whose name looks like one) never reach the notebook file: the injected cell
reads them from the kernel's environment, and any printed copy of their value is replaced by
``***`` in the log, the terminal and the executed notebook.
"""

from __future__ import annotations

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlprep.interrupts import Interrupted, kill_tree
from mlprep.masking import MASK, Masker, StreamMasker

__all__ = ["MASK", "Outcome", "run", "tail_text"]


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


def child(job_path: str) -> int:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    job = json.loads(Path(job_path).read_text())
    secret_names = job.get("secrets", [])
    secret_values = [os.environ.get(f"MLPREP_SECRET_{n.upper()}", "") for n in secret_names]
    params = dict(job["parameters"])
    for n in secret_names:  # a placeholder, swapped for an environment lookup below
        params[n] = f"@@MLPREP_SECRET_{n.upper()}@@"
    nb = load_notebook_node(job["input"])
    nb = parameterize_notebook(nb, params, report_mode=False)
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            for n in secret_names:
                cell.source = re.sub(rf"(['\"])@@MLPREP_SECRET_{n.upper()}@@\1",
                                     f'__import__("os").environ["MLPREP_SECRET_{n.upper()}"]  # secret',
                                     cell.source)
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
            pm.execute_notebook(nb, str(written), parameters=None, cwd=job.get("cwd"), progress_bar=False,
                                log_output=True, stdout_file=stream, stderr_file=stream,
                                kernel_name=job.get("kernel", "python3"),
                                start_timeout=job.get("start_timeout", 60),
                                execution_timeout=job.get("cell_timeout"),
                                request_save_on_cell_execute=not masker)
        except PapermillExecutionError as e:
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


# --- parent ------------------------------------------------------------------------------------
@dataclass
class _Seen:
    """What the child has reported so far."""

    cells: int = 0
    cell: int = 0
    end: dict | None = None


def run(notebook: Path, output: Path, parameters: dict[str, Any], log: Path, *, cwd: Path | None = None,
        secrets: dict[str, str] | None = None, timeout: float | None = None, cell_timeout: float | None = None,
        label: str = "", extra_env: dict[str, str] | None = None, show_output: bool = True) -> Outcome:
    """Execute ``notebook`` into ``output``; never raises for a notebook failure."""
    secrets = secrets or {}
    log.parent.mkdir(parents=True, exist_ok=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix="mlprep-nb-"))  # 0700: the unmasked notebook, briefly
    job = {"input": str(notebook), "output": str(output), "parameters": parameters, "log": str(log),
           "cwd": str(cwd) if cwd else None, "secrets": sorted(secrets), "cell_timeout": cell_timeout,
           "private_output": str(private / output.name)}
    job_file = log.with_suffix(".job.json")
    job_file.write_text(json.dumps(job, default=str))  # no secret values: those go by environment
    env = {**os.environ, **(extra_env or {}), **{f"MLPREP_SECRET_{k.upper()}": v for k, v in secrets.items()}}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "mlprep.runner.execute", str(job_file)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    timed_out = threading.Event()

    def on_timeout() -> None:
        timed_out.set()
        kill_tree(proc.pid)

    timer = threading.Timer(timeout, on_timeout) if timeout else None
    if timer:
        timer.daemon = True
        timer.start()
    stderr_lines: list[str] = []
    err_reader = threading.Thread(target=lambda: stderr_lines.extend(proc.stderr), daemon=True)
    err_reader.start()
    seen, interrupted, bar = _Seen(), None, _Progress(label, show_output)
    try:
        _follow(proc, bar, seen)
        proc.wait()
    except Interrupted as e:  # the kernel, its jobs and servers go too
        interrupted = e
        kill_tree(proc.pid)
    except BaseException:
        kill_tree(proc.pid)
        raise
    finally:
        if timer:
            timer.cancel()
        bar.close()
        err_reader.join(5)
        job_file.unlink(missing_ok=True)
        shutil.rmtree(private, ignore_errors=True)
    seconds = round(time.monotonic() - started, 2)
    if interrupted is not None:
        return Outcome(False, "interrupted", interrupted.name, seen.cell or None, seen.cells, seconds)
    if timed_out.is_set():
        return Outcome(False, "timeout", f"stage timeout ({timeout:g} s) exceeded at cell {seen.cell} of "
                       f"{seen.cells}", seen.cell, seen.cells, seconds)
    return _outcome(seen, proc.returncode, stderr_lines, log, seconds)


def _follow(proc: subprocess.Popen, bar: _Progress, seen: _Seen) -> None:
    """Read the child's events (JSON lines on its stdout) until it closes them."""
    for line in proc.stdout:
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
    sys.exit(child(sys.argv[1]))
