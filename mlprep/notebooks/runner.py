"""``mlprep run``: the stage notebooks of a plan, in order, each one's outputs passed on as the
next one's parameters, into ``runs/<run-id>/``::

    run.json          what was asked (plan, parameters with secrets masked, selection)
    NN_<stage>.ipynb  executed notebooks;   logs/<stage>.log   what each printed
    summary.json      stages (name, status, seconds, notebook) + what the stages reported
    report.html       one self-contained page: tables and the stages' figures

Each stage works in ``runs/_stages/<stage>-<key>/`` where ``key`` hashes the notebook, its
resolved parameters, the content of its input paths and mlprep's code: a stage whose key has
succeeded before is skipped (``--force`` re-runs it), which is also how ``--resume`` continues a
failed run from the stage that failed.
"""

from __future__ import annotations

import hashlib
import json
import secrets as _secrets
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlprep.errors import ConfigError
from mlprep.notebooks import execute, inspection, outputs
from mlprep.notebooks import plan as plans
from mlprep.notebooks.execute import MASK

RETRYABLE = ("dead_kernel", "timeout", "crashed")


@dataclass
class StageResult:
    name: str
    status: str  # succeeded | skipped | failed | not_run
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
    status: str
    stages: list[StageResult]
    summary: dict
    report: Path | None


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


class Runner:
    def __init__(self, plan_path: str | Path, runs_dir: str | Path = "runs", root: str | Path | None = None,
                 show_output: bool = True) -> None:
        self.plan = plans.load(plan_path, root)
        self.runs = Path(runs_dir).resolve()
        self.show_output = show_output
        self.declared = {s.name: inspection.declared(s.notebook) for s in self.plan.stages}

    # --- parameters, validated before any kernel starts
    def parameters(self, given: dict[str, str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """Split ``--param`` into run parameters and per-stage overrides (``stage.name``), typed."""
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
                overrides[stage][name] = inspection.coerce(decl[name], raw, f"stage {stage}")
            elif key in self.plan.parameters:
                run_values[key] = raw
            else:
                raise ConfigError(f"--param {key}", "not a run parameter (" + ", ".join(self.plan.parameters)
                                  + "); a notebook's own parameter is given as STAGE.NAME")
        typed = {}
        for name, p in self.plan.parameters.items():
            value = run_values.get(name, p.default)
            if value is None:
                raise ConfigError(f"--param {name}", f"required ({p.help or p.type})")
            kind = "str" if p.type == "path" else p.type
            value = inspection.coerce(inspection.Param(name, kind, None, ""), value, "run")
            if p.type == "path":
                value = str((self.plan.root / value).resolve())
            typed[name] = value
        # the plan's own values must fit the notebooks' declarations too
        for s in self.plan.stages:
            decl = self.declared[s.name]
            for name, value in s.parameters.items():
                if name not in decl:
                    raise ConfigError(f"plan stage {s.name}", f"{self._nb(s.name)} has no parameter {name!r} "
                                      f"(parameters: {', '.join(decl)})")
                if "${" not in str(value) or plans._REF.fullmatch(str(value)):
                    try:
                        v = plans.substitute(value, {**typed, "root": str(self.plan.root)})
                    except ConfigError:
                        continue  # an earlier stage's output: checked when known
                    if "${stage_dir}" not in str(value):
                        inspection.coerce(decl[name], v, f"stage {s.name}")
        return typed, overrides

    def _nb(self, stage: str) -> str:
        return str(self.plan.stage(stage).notebook.relative_to(self.plan.root))

    # --- the run
    def run(self, given: dict[str, str] | None = None, *, run_id: str | None = None, only: list[str] | None = None,
            start_from: str | None = None, resume: str | None = None, force: bool = False,
            timeout: float | None = None) -> RunResult:
        given = dict(given or {})
        if resume:
            saved = json.loads((self.runs / resume / "run.json").read_text())
            secret_keys = [k for k, v in saved["parameters"].items() if v == MASK]
            missing = [k for k in secret_keys if k not in given]
            if missing:
                raise ConfigError(f"--param {missing[0]}", "a secret is not kept with the run: pass it again")
            given = {**{k: v for k, v in saved["parameters"].items() if v != MASK}, **given}
            only, start_from, run_id = saved.get("only"), saved.get("from"), resume
        run_values, overrides = self.parameters(given)
        names = [s.name for s in self.plan.stages]
        for n in (only or []) + ([start_from] if start_from else []):
            self.plan.stage(n)
        selected = set(only or names)
        if start_from:
            selected &= set(names[names.index(start_from):])
        run_id = run_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + _secrets.token_hex(3)
        folder = self.runs / run_id
        (folder / "logs").mkdir(parents=True, exist_ok=True)
        secret_values = self._secret_values(given, overrides)
        masked = {k: (MASK if self._is_secret(k) else v) for k, v in given.items()}
        (folder / "run.json").write_text(json.dumps({"plan": str(self.plan.path), "parameters": masked,
                                                     "only": only, "from": start_from, "created": _now()}, indent=2))
        deadline = time.monotonic() + timeout if timeout else None
        code = _code_fingerprint(self.plan.root)
        scope: dict[str, Any] = {**run_values, "root": str(self.plan.root), "run_dir": str(folder)}
        results: list[StageResult] = []
        status = "succeeded"
        self._say(f"run {run_id}: {len(selected)} of {len(names)} stages -> {folder}")
        for i, stage in enumerate(self.plan.stages, 1):
            if status != "succeeded":
                results.append(StageResult(stage.name, "not_run"))
                continue
            r = self._stage(i, stage, scope, overrides[stage.name], folder, code, force, stage.name in selected,
                            deadline)
            results.append(r)
            if r.status in ("succeeded", "skipped"):
                scope[stage.name] = r.outputs
            elif r.status == "failed":
                status = "failed"
            self._write_summary(folder, run_id, results, status, secret_values)
        summary = self._write_summary(folder, run_id, results, status, secret_values)
        from mlprep.notebooks import report

        rep = report.write(folder, summary, results, secret_values)
        self._say(f"run {run_id} {status}: {rep}")
        return RunResult(run_id, folder, status, results, summary, rep)

    def _stage(self, i: int, stage: plans.Stage, scope: dict, overrides: dict, folder: Path, code: str,
               force: bool, selected: bool, deadline: float | None) -> StageResult:
        decl = self.declared[stage.name]
        params = {k: plans.substitute(v, {**scope, "stage_dir": "${stage_dir}"}) for k, v in stage.parameters.items()}
        params.update(overrides)
        params = {k: (v if isinstance(v, str) and "${stage_dir}" in v else inspection.coerce(decl[k], v, f"stage {stage.name}"))
                  for k, v in params.items()}
        secret = {k: str(v) for k, v in params.items() if decl[k].secret}
        key = self._key(stage, params, secret, code)
        stage_dir = self.runs / "_stages" / f"{stage.name}-{key[:16]}"
        params = {k: (v.replace("${stage_dir}", str(stage_dir)) if isinstance(v, str) else v) for k, v in params.items()}
        done = stage_dir / "done.json"
        out_nb = folder / stage.notebook.name
        log = folder / "logs" / f"{stage.name}.log"
        if done.is_file() and (not force or not selected):
            rec = json.loads(done.read_text())
            if Path(rec["notebook"]).is_file() and Path(rec["notebook"]) != out_nb:
                shutil.copyfile(rec["notebook"], out_nb)
            log.write_text(f"skipped: unchanged since run {rec['run_id']} (key {key[:16]})\n")
            self._say(f"[{i}/{len(self.plan.stages)}] {stage.name}: unchanged since run {rec['run_id']}, skipped")
            return StageResult(stage.name, "skipped", 0.0, str(out_nb), str(log), key, 0,
                               outputs=json.loads((stage_dir / "outputs.json").read_text()))
        if not selected:
            raise ConfigError(f"stage {stage.name}", "is needed by a selected stage but has no result for its "
                              "current inputs: run it too (drop --only / --from)")
        stage_dir.mkdir(parents=True, exist_ok=True)
        (stage_dir / "outputs.json").unlink(missing_ok=True)
        attempts, outcome = 0, None
        while True:
            attempts += 1
            left = None if deadline is None else max(1.0, deadline - time.monotonic())
            to = min(x for x in (stage.timeout, left) if x is not None) if (stage.timeout or left) else None
            label = f"[{i}/{len(self.plan.stages)}] {stage.name}"
            outcome = execute.run(stage.notebook, out_nb, {k: v for k, v in params.items() if k not in secret}, log,
                                  cwd=stage.notebook.parent, secrets=secret, timeout=to,
                                  cell_timeout=stage.cell_timeout, label=label, show_output=self.show_output,
                                  extra_env={outputs.ENV: str(stage_dir / "outputs.json")})
            if outcome.ok or outcome.kind not in RETRYABLE or attempts > stage.retries:
                break
            self._say(f"{label}: {outcome.error}; retrying ({attempts}/{stage.retries})")
        if not outcome.ok:
            where = f" at cell {outcome.cell}" if outcome.cell else ""
            self._say(f"{label} FAILED{where}: {outcome.error}\n--- last lines of {log}\n{execute.tail_text(log)}\n---")
            return StageResult(stage.name, "failed", outcome.seconds, str(out_nb), str(log), key, attempts,
                               outcome.error, outcome.cell)
        outs = json.loads((stage_dir / "outputs.json").read_text()) if (stage_dir / "outputs.json").is_file() else {}
        done.write_text(json.dumps({"run_id": folder.name, "notebook": str(out_nb), "key": key, "time": _now(),
                                    "seconds": outcome.seconds}, indent=2))
        self._say(f"{label}: succeeded in {outcome.seconds:.1f} s")
        return StageResult(stage.name, "succeeded", outcome.seconds, str(out_nb), str(log), key, attempts, outputs=outs)

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

    def _is_secret(self, key: str) -> bool:
        from mlprep.logs import SECRET

        return bool(SECRET.search(key.split(".")[-1]))

    def _secret_values(self, given: dict, overrides: dict) -> list[str]:
        vals = [str(v) for k, v in given.items() if self._is_secret(k)]
        vals += [str(v) for o in overrides.values() for k, v in o.items() if self._is_secret(k)]
        return [v for v in vals if len(v) >= 4]

    def _write_summary(self, folder: Path, run_id: str, results: list[StageResult], status: str,
                       secret_values: list[str]) -> dict:
        summary: dict[str, Any] = {"run_id": run_id, "status": status, "updated": _now(), "stages": [
            {"name": r.name, "status": r.status, "seconds": r.seconds, "notebook": r.notebook, "log": r.log,
             "attempts": r.attempts, **({"error": r.error, "cell": r.cell} if r.error else {})} for r in results]}
        for r in results:  # what each stage chose to report goes to the top level
            for k, v in (r.outputs.get("summary") or {}).items():
                if isinstance(v, dict) and isinstance(summary.get(k), dict):
                    summary[k] = {**summary[k], **v}
                else:
                    summary[k] = v
        summary["outputs"] = {r.name: {k: v for k, v in r.outputs.items() if k != "summary"} for r in results
                              if r.outputs}
        text = json.dumps(summary, indent=2, default=str)
        text = execute._scrub(text, secret_values)
        tmp = folder / ".summary.json.tmp"
        tmp.write_text(text + "\n")
        tmp.replace(folder / "summary.json")
        return json.loads(text)

    def _say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

