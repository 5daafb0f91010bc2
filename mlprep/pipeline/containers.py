"""Processing and training jobs run as local subprocesses with the SageMaker container
conventions, so the step scripts that run on SageMaker run here unchanged.

- ``/opt/ml/...`` paths in entrypoints, arguments and environment map into the job's folder;
  ``MLPREP_OPT_ML`` names it for scripts that build such paths themselves.
- Processing: inputs downloaded to their ``LocalPath`` before the job, outputs uploaded from
  theirs after it (``EndOfJob``).
- Training (script mode): channels in ``/opt/ml/input/data/<channel>``, ``input/config/
  {hyperparameters,inputdataconfig,resourceconfig}.json``, the ``SM_*`` variables of the
  sagemaker-training toolkit, the ``sagemaker_submit_directory`` archive unpacked to
  ``/opt/ml/code`` and ``sagemaker_program`` run with the other hyperparameters as ``--name
  value``; ``SM_MODEL_DIR`` packed into ``<S3OutputPath>/<job>/output/model.tar.gz``.
- ``MaxRuntimeInSeconds`` is enforced; ``/opt/ml/output/failure`` becomes the failure reason.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlprep.pipeline import staging
from mlprep.pipeline.storage import Storage, StorageError

INTERNAL = "SageMaker.JOB_INTERNAL_ERROR"
SERVICE = "Step.SERVICE_FAULT"


class JobFailed(Exception):
    """A job that did not complete. ``exception_type`` is the retry class (None: the
    algorithm's own error, which SageMaker does not retry)."""

    def __init__(self, reason: str, exception_type: str | None = None, log_tail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.exception_type, self.log_tail = reason, exception_type, log_tail


@dataclass
class Job:
    name: str
    arn: str
    folder: Path  # the job's /opt/ml
    log: Path
    storage: Storage

    def path(self, container_path: str) -> str:
        if container_path == "/opt/ml" or container_path.startswith("/opt/ml/"):
            return str(self.folder) + container_path[len("/opt/ml"):]
        return container_path

    def map(self, value: Any) -> Any:
        return self.path(value) if isinstance(value, str) else value


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _python(cmd: list[str]) -> list[str]:
    """Container interpreters (``python3``, ``python``) are this environment's Python."""
    if cmd and Path(cmd[0]).name in ("python", "python3", "python3.11"):
        return [sys.executable, *cmd[1:]]
    return cmd


def _base_env(job: Job, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "MLPREP_FAULT"))}
    env.update({k: job.map(str(v)) for k, v in extra.items()})
    env["MLPREP_OPT_ML"] = str(job.folder)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _masked(cmd: list[str]) -> list[str]:
    """The command as logged: values of secret-looking flags (``--db-password X``, ``token=X``) masked."""
    from mlprep.logs import SECRET

    out, hide = [], False
    for arg in cmd:
        if hide:
            out.append("***")
            hide = False
        elif arg.startswith("-") and SECRET.search(arg):
            name, eq, _ = arg.partition("=")
            out.append(f"{name}=***" if eq else arg)
            hide = not eq
        elif "=" in arg and SECRET.search(arg.split("=", 1)[0]):
            out.append(arg.split("=", 1)[0] + "=***")
        else:
            out.append(arg)
    return out


def run_command(cmd: list[str], env: dict[str, str], cwd: Path, log: Path, timeout: float | None,
                failure_file: Path | None = None) -> None:
    """Run to completion with stdout and stderr in ``log``; raise ``JobFailed`` otherwise."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(_masked(cmd))}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            raise JobFailed(f"cannot start {cmd[0]}: {e}", INTERNAL) from e
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise JobFailed(f"MaxRuntimeInSeconds ({timeout:g} s) exceeded: the job was stopped",
                            None, tail(log)) from None
        except BaseException:  # Ctrl-C: do not leave the job running
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if rc == 0:
        return
    reason = ""
    if failure_file is not None and failure_file.is_file():
        reason = failure_file.read_text(errors="replace").strip()[:1024]
    if rc < 0:  # killed by a signal: the platform's fault, as an instance loss is on SageMaker
        raise JobFailed(reason or f"job killed by signal {signal.Signals(-rc).name}", INTERNAL, tail(log))
    raise JobFailed(reason or f"AlgorithmError: exit code {rc}", None, tail(log))


def run_processing(args: dict, job: Job) -> dict:
    """Run a resolved CreateProcessingJob request; returns a DescribeProcessingJob-shaped dict."""
    started = _now()
    spec = args.get("AppSpecification") or {}
    entry = list(spec.get("ContainerEntrypoint") or [])
    if not entry:
        raise JobFailed("AppSpecification.ContainerEntrypoint is empty: the local executor runs "
                        "script processors (an image's default entrypoint cannot run without it)")
    cmd = _python([job.map(x) for x in entry + list(spec.get("ContainerArguments") or [])])
    job.folder.mkdir(parents=True, exist_ok=True)
    try:
        for inp in args.get("ProcessingInputs") or []:
            s3 = inp.get("S3Input")
            if not s3:
                raise JobFailed(f"input {inp.get('InputName')!r}: only S3Input is supported locally")
            job.storage.download(s3["S3Uri"], Path(job.path(s3["LocalPath"])))
        outputs = (args.get("ProcessingOutputConfig") or {}).get("Outputs") or []
        for o in outputs:
            if "S3Output" in o:
                Path(job.path(o["S3Output"]["LocalPath"])).mkdir(parents=True, exist_ok=True)
    except FileNotFoundError as e:
        raise JobFailed(f"ClientError: {e}") from e
    except StorageError as e:
        raise JobFailed(str(e), SERVICE) from e
    (job.folder / "config").mkdir(exist_ok=True)
    (job.folder / "config" / "processingjobconfig.json").write_text(json.dumps(args, indent=2, default=str))
    (job.folder / "config" / "resourceconfig.json").write_text(json.dumps(
        {"current_host": "algo-1", "hosts": ["algo-1"]}))
    timeout = (args.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
    run_command(cmd, _base_env(job, args.get("Environment") or {}), job.folder, job.log, timeout,
                job.folder / "output" / "failure")
    try:
        for o in outputs:
            if "S3Output" in o:
                job.storage.upload(Path(job.path(o["S3Output"]["LocalPath"])), o["S3Output"]["S3Uri"])
    except StorageError as e:
        raise JobFailed(str(e), SERVICE) from e
    return {**args, "ProcessingJobName": job.name, "ProcessingJobArn": job.arn,
            "ProcessingJobStatus": "Completed", "ProcessingStartTime": started, "ProcessingEndTime": _now()}


def _decode(v: Any) -> Any:
    """Hyperparameters are strings on the wire; the toolkit JSON-decodes them where it can."""
    if not isinstance(v, str):
        return v
    try:
        return json.loads(v)
    except ValueError:
        return v


def run_training(args: dict, job: Job) -> dict:
    """Run a resolved CreateTrainingJob request in script mode; returns DescribeTrainingJob."""
    started = _now()
    hps = {k: _decode(v) for k, v in (args.get("HyperParameters") or {}).items()}
    program, submit = hps.get("sagemaker_program"), hps.get("sagemaker_submit_directory")
    if not program:
        raise JobFailed("no sagemaker_program hyperparameter: the local executor runs script-mode "
                        "training (a built-in algorithm's image cannot run without Docker)")
    f = job.folder
    for d in ("model", "output/data", "input/config", "code", "checkpoints"):
        (f / d).mkdir(parents=True, exist_ok=True)
    channels = _training_inputs(args, job, submit)
    if not (f / "code" / str(program)).is_file():
        raise JobFailed(f"ClientError: sagemaker_program {program!r} is not in {submit or 'the code folder'}")
    env, user_args = _training_env(args, job, str(program), channels, hps)
    timeout = (args.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
    run_command([sys.executable, str(f / "code" / str(program)), *user_args], env, f / "code", job.log,
                timeout, f / "output" / "failure")
    model_uri = _training_outputs(args, job)
    return {**args, "TrainingJobName": job.name, "TrainingJobArn": job.arn, "TrainingJobStatus": "Completed",
            "SecondaryStatus": "Completed", "ModelArtifacts": {"S3ModelArtifacts": model_uri},
            "TrainingStartTime": started, "TrainingEndTime": _now(), "FinalMetricDataList": []}


def _training_inputs(args: dict, job: Job, submit: Any) -> dict[str, dict]:
    """Each channel downloaded to /opt/ml/input/data/<channel>, the code archive unpacked to
    /opt/ml/code; returns inputdataconfig.json's content."""
    f, channels = job.folder, {}
    try:
        for ch in args.get("InputDataConfig") or []:
            name = ch["ChannelName"]
            src = (ch.get("DataSource") or {}).get("S3DataSource") or {}
            if "S3Uri" not in src:
                raise JobFailed(f"channel {name!r}: only S3DataSource is supported locally")
            job.storage.download(src["S3Uri"], f / "input" / "data" / name)
            channels[name] = {"ContentType": ch.get("ContentType", ""), "TrainingInputMode": "File",
                              "S3DistributionType": src.get("S3DataDistributionType", "FullyReplicated"),
                              "RecordWrapperType": ch.get("RecordWrapperType", "None")}
        if submit:
            with tarfile.open(fileobj=io.BytesIO(job.storage.get_bytes(str(submit)))) as t:
                t.extractall(f / "code", filter="data")
    except FileNotFoundError as e:
        raise JobFailed(f"ClientError: {e}") from e
    except StorageError as e:
        raise JobFailed(str(e), SERVICE) from e
    except tarfile.TarError as e:
        raise JobFailed(f"ClientError: sagemaker_submit_directory {submit} is not a tar.gz: {e}") from e
    return channels


def _training_env(args: dict, job: Job, program: str, channels: dict[str, dict],
                  hps: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The container's config files under /opt/ml/input/config and the script-mode environment
    (SM_*); returns (environment, the script's arguments)."""
    f = job.folder
    raw_hps = {k: str(v) for k, v in (args.get("HyperParameters") or {}).items()}
    resource = {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}
    (f / "input" / "config" / "hyperparameters.json").write_text(json.dumps(raw_hps, indent=2))
    (f / "input" / "config" / "inputdataconfig.json").write_text(json.dumps(channels, indent=2))
    (f / "input" / "config" / "resourceconfig.json").write_text(json.dumps(resource))
    user = {k: v for k, v in hps.items() if not k.startswith("sagemaker_")}
    user_args = [a for k, v in user.items() for a in (f"--{k}", v if isinstance(v, str) else json.dumps(v))]
    env = {
        "SM_MODEL_DIR": "/opt/ml/model", "SM_OUTPUT_DATA_DIR": "/opt/ml/output/data",
        "SM_OUTPUT_DIR": "/opt/ml/output", "SM_INPUT_DIR": "/opt/ml/input",
        "SM_INPUT_CONFIG_DIR": "/opt/ml/input/config", "SM_CHANNELS": json.dumps(sorted(channels)),
        "SM_HPS": json.dumps(user), "SM_HOSTS": json.dumps(resource["hosts"]), "SM_CURRENT_HOST": "algo-1",
        "SM_NUM_CPUS": str(os.cpu_count() or 1), "SM_NUM_GPUS": "0", "SM_MODULE_DIR": "/opt/ml/code",
        "SM_MODULE_NAME": Path(program).stem, "SM_USER_ENTRY_POINT": program,
        "SM_USER_ARGS": json.dumps(user_args), "SM_INPUT_DATA_CONFIG": json.dumps(channels),
        "SM_RESOURCE_CONFIG": json.dumps(resource), "SM_LOG_LEVEL": "20",
        "SM_TRAINING_ENV": json.dumps({"hyperparameters": user, "channel_input_dirs": {
            c: f"/opt/ml/input/data/{c}" for c in channels}, "job_name": job.name}),
        **{f"SM_CHANNEL_{c.upper()}": f"/opt/ml/input/data/{c}" for c in channels},
        **{f"SM_HP_{k.upper()}": v if isinstance(v, str) else json.dumps(v) for k, v in user.items()},
        **(args.get("Environment") or {}),
    }
    env = _base_env(job, env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(f / "code"), env.get("PYTHONPATH")]))
    return env, user_args


def _training_outputs(args: dict, job: Job) -> str:
    """model.tar.gz (and output.tar.gz if the script wrote output data) uploaded; returns the model's URI."""
    out = (args.get("OutputDataConfig") or {}).get("S3OutputPath", "").rstrip("/")
    if not out:
        raise JobFailed("OutputDataConfig.S3OutputPath is missing")
    model_uri = f"{out}/{job.name}/output/model.tar.gz"
    try:
        job.storage.put_bytes(model_uri, staging.tar_gz(_files(job.folder / "model")))
        data = _files(job.folder / "output" / "data")
        if data:
            job.storage.put_bytes(f"{out}/{job.name}/output/output.tar.gz", staging.tar_gz(data))
    except StorageError as e:
        raise JobFailed(str(e), SERVICE) from e
    return model_uri


def _files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
