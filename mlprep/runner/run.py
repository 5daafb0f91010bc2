"""``mlprep run``: the stage notebooks of a plan, in order, each one's outputs passed on as the
next one's parameters, into ``runs/<run-id>/``::

    run.json          what was asked (plan, parameters with secrets masked, selection)
    NN_<stage>.ipynb  executed notebooks;   logs/<stage>.log   what each printed
    summary.json      status (running | succeeded | failed | interrupted), stages (name, status,
                      seconds, notebook, cell) + what the stages reported
    report.html       one self-contained page: tables and the stages' figures

Each stage works in ``runs/_stages/<stage>-<key>/`` where ``key`` hashes the notebook, its
resolved parameters, the content of its input paths and mlprep's code. A stage is done when
``done.json`` there (written last, atomically, holding the stage's outputs) exists: such a
stage is skipped (``--force`` re-runs it, from an emptied folder), which is also how
``--resume`` continues a failed or interrupted run. A stage that runs starts by removing
``done.json`` and everything else in its folder, so a stage is never "done" without its
outputs, whatever stops it.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets as _secrets
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlprep.errors import ConfigError
from mlprep.interrupts import Interrupted
from mlprep.logs import SECRET
from mlprep.masking import MASK, MIN_LENGTH, Masker
from mlprep.params import coerce, is_reference, substitute
from mlprep.runner import execute, inspection, outputs
from mlprep.runner import plan as plans

RETRYABLE = ("dead_kernel", "timeout", "crashed")


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

@dataclass
class StageResult:
    name: str
    status: str  # succeeded | skipped | failed | interrupted | not_run | not_selected
    seconds: float = 0.0
    notebook: str | None = None
    log: str | None = None
    key: str | None = None
    attempts: int = 0
    error: str | None = None
    cell: int | None = None
    outputs: dict = field(default_factory=dict)


@dataclass
class RunResult:
    run_id: str
    folder: Path
    status: str  # succeeded | failed | interrupted
    stages: list[StageResult]
    summary: dict
    report: Path | None
    interrupted: Interrupted | None = None

    @property
    def stopped_at(self) -> StageResult | None:
        """The stage that failed or was interrupted."""
        return next((s for s in self.stages if s.status in ("failed", "interrupted")), None)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fingerprint(path: Path, skip: Path) -> str:
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and skip not in p.parents)
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(path) if f != path else f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _code_fingerprint(root: Path) -> str:
    import mlprep

    h = hashlib.sha256()
    for base in (Path(mlprep.__file__).parent, root / "pipelines"):
        for f in sorted(base.rglob("*.py")) if base.is_dir() else []:
            h.update(f.read_bytes())
    return h.hexdigest()


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str) + "\n")
    tmp.replace(path)


def _earlier_results(folder: Path) -> dict[str, dict]:
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return {st["name"]: st for st in summary.get("stages", []) if isinstance(st, dict) and "name" in st}


def _done_record(stage_dir: Path) -> dict | None:
    """The stage's completion record, only if whole (it holds the outputs)."""
    try:
        rec = json.loads((stage_dir / "done.json").read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("outputs"), dict) else None


@dataclass
class _Run:
    """One run's moving parts, shared by the stage loop."""

    run_id: str
    folder: Path
    selected: set[str]
    needed: set[str]
    scope: dict[str, Any]
    code: str
    force: bool
    deadline: float | None
    masker: Masker
    secret_names: set[str]
    earlier: dict[str, dict] = field(default_factory=dict)  # stage -> its entry in this run's summary
    results: list[StageResult] = field(default_factory=list)
    worker: execute.Worker = field(default_factory=execute.Worker)  # the stages' papermill process


class Runner:
    def __init__(self, plan_path: str | Path, runs_dir: str | Path = "runs", root: str | Path | None = None,
                 show_output: bool = True) -> None:
        self.plan = plans.load(plan_path, root)
        self.runs = Path(runs_dir).resolve()
        self.show_output = show_output
        self.declared = {s.name: inspection.declared(s.notebook) for s in self.plan.stages}

    # --- parameters, validated before any kernel starts
    def parameters(self, given: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """Split ``--param`` into run parameters and per-stage overrides (``stage.name``), typed;
        a path run parameter is made absolute against the plan's root."""
        run_values: dict[str, Any] = {}
        overrides: dict[str, dict[str, Any]] = {s.name: {} for s in self.plan.stages}
        for key, raw in given.items():
            if "." in key:
                stage, name = key.split(".", 1)
                if stage not in overrides:
                    raise ConfigError(f"--param {key}", f"no stage {stage!r} (stages: {', '.join(overrides)})")
                decl = self.declared[stage]
                if name not in decl:
                    raise ConfigError(f"--param {key}", f"stage {stage}: {self._nb(stage)} has no parameter "
                                      f"{name!r} (parameters: {', '.join(decl)})")
                overrides[stage][name] = coerce(decl[name], raw, _field(stage, name))
            elif key in self.plan.parameters:
                run_values[key] = raw
            else:
                raise ConfigError(f"--param {key}", "not a run parameter (" + ", ".join(self.plan.parameters)
                                  + "); a notebook's own parameter is given as STAGE.NAME")
        typed = self.plan.values(run_values)
        self._check_plan_values(typed)
        return typed, overrides

    def _check_plan_values(self, typed: dict[str, Any]) -> None:
        """The plan's own values must fit the notebooks' declarations too."""
        for s in self.plan.stages:
            decl = self.declared[s.name]
            for name, value in s.parameters.items():
                if name not in decl:
                    raise ConfigError(f"plan stage {s.name}", f"{self._nb(s.name)} has no parameter {name!r} "
                                      f"(parameters: {', '.join(decl)})")
                if "${" not in str(value) or is_reference(value):
                    try:
                        v = substitute(value, {**typed, "root": str(self.plan.root)}, _field(s.name, name))
                    except ConfigError:
                        continue  # an earlier stage's output: checked when known
                    if "${stage_dir}" not in str(value):
                        coerce(decl[name], v, _field(s.name, name))

    def _nb(self, stage: str) -> str:
        return str(self.plan.stage(stage).notebook.relative_to(self.plan.root))

    # --- the run
    def run(self, given: dict[str, Any] | None = None, *, run_id: str | None = None, only: list[str] | None = None,
            start_from: str | None = None, resume: str | None = None, force: bool = False,
            timeout: float | None = None, secrets: list[str] | None = None) -> RunResult:
        """Run the plan. ``secrets`` names parameters to treat as secret whatever their name.
        SIGINT / SIGTERM (:class:`Interrupted`) end the stage's whole process tree and the run
        (status ``interrupted``); the result says where, for ``--resume``."""
        given, secret_names = dict(given or {}), set(secrets or [])
        if resume:
            given, only, start_from, secret_names, was_forced = self._resumed(resume, given, secret_names)
            run_id, force = resume, force or was_forced
        elif run_id is not None:
            self._check_new_run_id(run_id)
        run_values, overrides = self.parameters(given)
        selected, needed = self._selection(only, start_from)
        run = self._open(run_id, given, only, start_from, selected, needed, run_values, force, timeout,
                         secret_names)
        self._say(f"run {run.run_id}: {len(selected)} of {len(self.plan.stages)} stages -> {run.folder}")
        status, stop = "running", None
        try:
            status = self._stages(run, overrides)
        except Interrupted as e:
            stop, status = e, "interrupted"
            self._mark_interrupted(run, e)
        except BaseException:  # e.g. stdout closed under us (`| head`): the record must not say running
            self._write_summary(run, "failed")
            raise
        finally:
            run.worker.close()
        summary = self._write_summary(run, status)
        from mlprep.runner import report

        rep = report.write(run.folder, summary, run.results, run.masker)
        self._say(f"run {run.run_id} {status}: {rep}")
        return RunResult(run.run_id, run.folder, status, run.results, summary, rep, stop)

    def _check_new_run_id(self, run_id: str) -> None:
        if not _RUN_ID.fullmatch(run_id):
            raise ConfigError("--run-id", f"{run_id!r}: letters, digits, '.', '_' and '-' only (a folder name"
                              " under the runs folder)")
        if (self.runs / run_id).exists():
            raise ConfigError("--run-id", f"run {run_id} exists in {self.runs}: --resume {run_id} continues it,"
                              " or choose another id")

    def _resumed(self, resume: str, given: dict, secret_names: set[str]) -> tuple:
        try:
            saved = json.loads((self.runs / resume / "run.json").read_text())
        except (OSError, ValueError):
            known = sorted(p.parent.name for p in self.runs.glob("*/run.json")) if self.runs.is_dir() else []
            raise ConfigError("--resume", f"no run {resume!r} in {self.runs}"
                              + (f" (latest: {known[-1]})" if known else "")) from None
        secret_names |= set(saved.get("secrets") or [])
        missing = [k for k, v in saved["parameters"].items() if v == MASK and k not in given]
        if missing:
            raise ConfigError(f"--param {missing[0]}", "a secret is not kept with the run: pass it again "
                              f"(--secret {missing[0]})")
        given = {**{k: v for k, v in saved["parameters"].items() if v != MASK}, **given}
        return given, saved.get("only"), saved.get("from"), secret_names, bool(saved.get("force"))

    def _selection(self, only: list[str] | None, start_from: str | None) -> tuple[set[str], set[str]]:
        """(selected stages, stages whose results they need: the selection and its upstreams)."""
        names = [s.name for s in self.plan.stages]
        for n in only or []:
            self.plan.stage(n)
        if start_from:
            self.plan.stage(start_from, "--from")
        selected = set(only or names)
        if start_from:
            selected &= set(names[names.index(start_from):])
            if not selected:
                raise ConfigError("--from", f"no stage of --only {','.join(only or [])} is at or after {start_from}"
                                            " (so nothing would run)")
        needed, todo = set(), list(selected)
        while todo:
            n = todo.pop()
            if n not in needed:
                needed.add(n)
                todo += self.plan.stage(n).upstream
        return selected, needed

    def _open(self, run_id: str | None, given: dict, only: list[str] | None, start_from: str | None,
              selected: set[str], needed: set[str], run_values: dict, force: bool, timeout: float | None,
              secret_names: set[str]) -> _Run:
        run_id = run_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + _secrets.token_hex(3)
        folder = self.runs / run_id
        (folder / "logs").mkdir(parents=True, exist_ok=True)
        secret_keys = {k for k in given if self._is_secret(k, secret_names)}
        masker = Masker([str(given[k]) for k in secret_keys])
        for k in sorted(k for k in secret_keys if 0 < len(str(given[k])) < MIN_LENGTH):
            self._say(f"warning: secret {k} is shorter than {MIN_LENGTH} characters: it is not masked in outputs")
        masked = {k: (MASK if k in secret_keys else v) for k, v in given.items()}
        earlier = _earlier_results(folder)  # a resumed run keeps what its stages did before
        _write_json(folder / "run.json", {"plan": str(self.plan.path), "parameters": masked, "only": only,
                                          "from": start_from, "force": force, "secrets": sorted(secret_names),
                                          "created": _now()})
        scope = {**run_values, "root": str(self.plan.root), "run_dir": str(folder)}
        deadline = time.monotonic() + timeout if timeout else None
        return _Run(run_id, folder, selected, needed, scope, _code_fingerprint(self.plan.root), force, deadline,
                    masker, secret_names, earlier)

    def _stages(self, run: _Run, overrides: dict[str, dict[str, Any]]) -> str:
        status = "running"
        for i, stage in enumerate(self.plan.stages, 1):
            if status != "running":
                run.results.append(StageResult(stage.name, "not_run" if stage.name in run.needed else "not_selected"))
                continue
            r = self._stage(i, stage, run, overrides[stage.name])
            run.results.append(r)
            if r.status in ("succeeded", "skipped"):
                run.scope[stage.name] = r.outputs
            elif r.status == "failed":
                status = "failed"
            elif r.status == "interrupted":
                raise Interrupted(_signum(r.error))
            self._write_summary(run, status)
        return "succeeded" if status == "running" else status

    def _mark_interrupted(self, run: _Run, e: Interrupted) -> None:
        done = {r.name for r in run.results}
        for stage in self.plan.stages:
            if stage.name not in done:
                run.results.append(StageResult(stage.name, "not_run" if stage.name in run.needed else "not_selected"))
        if not any(r.status == "interrupted" for r in run.results):
            nxt = next((r for r in run.results if r.status == "not_run"), None)
            if nxt is not None:  # between stages: the next one is where it stopped
                nxt.status, nxt.error = "interrupted", e.name

    def _stage(self, i: int, stage: plans.Stage, run: _Run, overrides: dict) -> StageResult:
        try:
            params, secret, key = self._resolve(stage, run, overrides)
        except ConfigError:
            if stage.name in run.needed:
                raise
            return StageResult(stage.name, "not_selected")  # its upstream did not run either
        stage_dir = self.runs / "_stages" / f"{stage.name}-{key[:16]}"
        params = {k: (v.replace("${stage_dir}", str(stage_dir)) if isinstance(v, str) else v) for k, v in params.items()}
        out_nb = run.folder / stage.notebook.name
        log = run.folder / "logs" / f"{stage.name}.log"
        label = f"[{i}/{len(self.plan.stages)}] {stage.name}"
        selected = stage.name in run.selected
        rec = _done_record(stage_dir)
        before = run.earlier.get(stage.name, {})
        if rec is not None and rec["run_id"] == run.run_id and before.get("status") == "succeeded":
            self._say(f"{label}: done earlier in this run")  # its log and figures stay as they were
            return StageResult(stage.name, "succeeded", before.get("seconds", 0.0), str(out_nb), str(log), key,
                               before.get("attempts", 1), outputs=rec["outputs"])
        if rec is not None and not (run.force and selected):
            if Path(rec["notebook"]).is_file() and Path(rec["notebook"]) != out_nb:
                shutil.copyfile(rec["notebook"], out_nb)
            log.write_text(f"skipped: unchanged since run {rec['run_id']} (key {key[:16]})\n")
            self._say(f"{label}: unchanged since run {rec['run_id']}, skipped")
            return StageResult(stage.name, "skipped", 0.0, str(out_nb), str(log), key, 0, outputs=rec["outputs"])
        if not selected:
            if stage.name not in run.needed:
                return StageResult(stage.name, "not_selected")
            msg = "is needed by a selected stage but has no result for its current inputs: run it too (drop --only / --from)"
            self._say(f"{label}: {msg}")
            return StageResult(stage.name, "failed", error=msg)
        _clean(stage_dir)
        outcome, attempts = self._execute(stage, label, params, secret, out_nb, log, stage_dir, run)
        if outcome.kind == "interrupted":
            return StageResult(stage.name, "interrupted", outcome.seconds, str(out_nb), str(log), key, attempts,
                               outcome.error, outcome.cell)
        if not outcome.ok:
            where = f" at cell {outcome.cell}" if outcome.cell else ""
            self._say(f"{label} FAILED{where}: {outcome.error}\n--- last lines of {log}\n{execute.tail_text(log)}\n---")
            return StageResult(stage.name, "failed", outcome.seconds, str(out_nb), str(log), key, attempts,
                               outcome.error, outcome.cell)
        outs = json.loads((stage_dir / "outputs.json").read_text()) if (stage_dir / "outputs.json").is_file() else {}
        _write_json(stage_dir / "done.json", {"run_id": run.run_id, "notebook": str(out_nb), "key": key,
                                              "time": _now(), "seconds": outcome.seconds, "outputs": outs})
        self._say(f"{label}: succeeded in {outcome.seconds:.1f} s")
        return StageResult(stage.name, "succeeded", outcome.seconds, str(out_nb), str(log), key, attempts, outputs=outs)

    def _resolve(self, stage: plans.Stage, run: _Run, overrides: dict) -> tuple[dict, dict, str]:
        """The stage's typed parameters, which of them are secret, and its key."""
        decl = self.declared[stage.name]
        scope = {**run.scope, "stage_dir": "${stage_dir}"}  # filled in once the key is known
        params = {k: substitute(v, scope, _field(stage.name, k)) for k, v in stage.parameters.items()}
        params.update(overrides)
        params = {k: (v if isinstance(v, str) and "${stage_dir}" in v else coerce(decl[k], v, _field(stage.name, k)))
                  for k, v in params.items()}
        # secret by name, by --secret, or because it carries a secret's value
        secret = {k: str(v) for k, v in params.items()
                  if decl[k].secret or f"{stage.name}.{k}" in run.secret_names
                  or (run.masker and run.masker.text(str(v)) != str(v))}
        return params, secret, self._key(stage, params, secret, run.code)

    def _execute(self, stage: plans.Stage, label: str, params: dict, secret: dict, out_nb: Path, log: Path,
                 stage_dir: Path, run: _Run) -> tuple[execute.Outcome, int]:
        attempts = 0
        while True:
            attempts += 1
            left = None if run.deadline is None else max(1.0, run.deadline - time.monotonic())
            to = min(x for x in (stage.timeout, left) if x is not None) if (stage.timeout or left) else None
            outcome = execute.run(stage.notebook, out_nb, {k: v for k, v in params.items() if k not in secret}, log,
                                  cwd=stage.notebook.parent, secrets=secret, timeout=to,
                                  cell_timeout=stage.cell_timeout, label=label, show_output=self.show_output,
                                  extra_env={outputs.ENV: str(stage_dir / "outputs.json")}, worker=run.worker)
            if outcome.ok or outcome.kind not in RETRYABLE or attempts > stage.retries:
                return outcome, attempts
            self._say(f"{label}: {outcome.error}; retrying ({attempts}/{stage.retries})")
            _clean(stage_dir)

    def _key(self, stage: plans.Stage, params: dict, secret: dict, code: str) -> str:
        h = hashlib.sha256()
        h.update(stage.notebook.read_bytes())
        h.update(code.encode())
        for k in sorted(params):
            v = params[k]
            if k in secret:
                v = "sha256:" + hashlib.sha256(str(v).encode()).hexdigest()
            h.update(f"{k}={json.dumps(v, sort_keys=True, default=str)}\n".encode())
            if isinstance(v, str) and v.startswith("/") and not v.startswith(str(self.runs / "_stages")):
                p = Path(v)
                if p.exists():
                    h.update(f"{k}:{_fingerprint(p, self.runs)}\n".encode())
        return h.hexdigest()

    @staticmethod
    def _is_secret(key: str, names: set[str]) -> bool:
        return key in names or bool(SECRET.search(key.split(".")[-1]))

    def _write_summary(self, run: _Run, status: str) -> dict:
        summary: dict[str, Any] = {"run_id": run.run_id, "status": status, "updated": _now(), "stages": [
            {"name": r.name, "status": r.status, "seconds": r.seconds, "notebook": r.notebook, "log": r.log,
             "attempts": r.attempts, **({"error": r.error, "cell": r.cell} if r.error else {})} for r in run.results]}
        for r in run.results:  # what each stage chose to report goes to the top level
            for k, v in (r.outputs.get("summary") or {}).items():
                if isinstance(v, dict) and isinstance(summary.get(k), dict):
                    summary[k] = {**summary[k], **v}
                else:
                    summary[k] = v
        summary["outputs"] = {r.name: {k: v for k, v in r.outputs.items() if k != "summary"} for r in run.results
                              if r.outputs}
        summary = run.masker.value(json.loads(json.dumps(summary, default=str)))
        _write_json(run.folder / "summary.json", summary)
        return summary

    def _say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)


def _field(stage: str, name: str) -> str:
    """How errors name a notebook's parameter."""
    return f"stage {stage}: parameter {name}"


def _clean(stage_dir: Path) -> None:
    """An empty stage folder, "not done" first: a stop at any point leaves it not done."""
    (stage_dir / "done.json").unlink(missing_ok=True)
    shutil.rmtree(stage_dir, ignore_errors=True)
    stage_dir.mkdir(parents=True, exist_ok=True)


def _signum(name: str | None) -> int:
    import signal

    try:
        return int(signal.Signals[name or "SIGINT"])
    except KeyError:
        return int(signal.SIGINT)
