"""The Step Functions state machine (Amazon States Language) that coordinates a deployment —
the Glue job, then the SageMaker pipeline, waited for — and a structural check of any ASL
document before anything is created."""

from __future__ import annotations

from typing import Any

from mlprep.errors import ConfigError

GLUE_RETRY = ["Glue.ConcurrentRunsExceededException", "Glue.ThrottlingException",
              "Glue.InternalServiceException", "Glue.OperationTimeoutException"]
SM_RETRY = ["SageMaker.ThrottlingException", "SageMaker.SageMakerException", "ThrottlingException"]


def _retry(errors: list[str], interval: int = 30, attempts: int = 3) -> list[dict]:
    return [{"ErrorEquals": errors, "IntervalSeconds": interval, "MaxAttempts": attempts, "BackoffRate": 2.0}]


def _catch() -> list[dict]:
    return [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "DeploymentFailed"}]


def state_machine(glue_job: str, pipeline: str, job_arguments: list[str], pipeline_parameters: list[str], *,
                  glue_timeout_s: int = 3600, poll_s: int = 60, pipeline_timeout_s: int = 6 * 3600) -> dict:
    """Run the Glue job (``startJobRun.sync``), start the SageMaker pipeline, poll until it ends.

    The execution input supplies ``job_arguments`` (e.g. ``{"data_dir": "s3://..."}``) and
    ``pipeline_parameters`` by name."""
    args = {f"--{a}.$": f"$.{a}" for a in job_arguments}
    params = [{"Name": p, "Value.$": f"$.{p}"} for p in pipeline_parameters]
    return {
        "Comment": f"mlprep: Glue job {glue_job} -> SageMaker pipeline {pipeline}",
        "StartAt": "RunGlueJob",
        "TimeoutSeconds": glue_timeout_s + pipeline_timeout_s + 600,
        "States": {
            "RunGlueJob": {
                "Type": "Task", "Resource": "arn:aws:states:::glue:startJobRun.sync",
                "Parameters": {"JobName": glue_job, "Arguments": args},
                "ResultPath": "$.glue", "TimeoutSeconds": glue_timeout_s,
                "Retry": _retry(GLUE_RETRY), "Catch": _catch(), "Next": "StartPipeline"},
            "StartPipeline": {
                "Type": "Task", "Resource": "arn:aws:states:::aws-sdk:sagemaker:startPipelineExecution",
                "Parameters": {"PipelineName": pipeline, "PipelineParameters": params,
                               "ClientRequestToken.$": "States.UUID()"},
                "ResultPath": "$.pipeline", "TimeoutSeconds": 120,
                "Retry": _retry(SM_RETRY, 10), "Catch": _catch(), "Next": "WaitForPipeline"},
            "WaitForPipeline": {"Type": "Wait", "Seconds": poll_s, "Next": "DescribePipelineExecution"},
            "DescribePipelineExecution": {
                "Type": "Task", "Resource": "arn:aws:states:::aws-sdk:sagemaker:describePipelineExecution",
                "Parameters": {"PipelineExecutionArn.$": "$.pipeline.PipelineExecutionArn"},
                "ResultSelector": {"Status.$": "$.PipelineExecutionStatus"},
                "ResultPath": "$.execution", "TimeoutSeconds": 60,
                "Retry": _retry(SM_RETRY, 10, 5), "Catch": _catch(), "Next": "PipelineFinished"},
            "PipelineFinished": {
                "Type": "Choice",
                "Choices": [
                    {"Variable": "$.execution.Status", "StringEquals": "Succeeded", "Next": "DeploymentSucceeded"},
                    {"Or": [{"Variable": "$.execution.Status", "StringEquals": "Failed"},
                            {"Variable": "$.execution.Status", "StringEquals": "Stopped"}],
                     "Next": "PipelineFailed"}],
                "Default": "WaitForPipeline"},
            "PipelineFailed": {"Type": "Fail", "Error": "PipelineFailed",
                               "Cause": "the SageMaker pipeline execution failed or was stopped"},
            "DeploymentFailed": {"Type": "Fail", "Error": "DeploymentFailed", "CausePath": "$.error.Cause"},
            "DeploymentSucceeded": {"Type": "Succeed"},
        },
    }


_TERMINAL = {"Succeed", "Fail"}
_TYPES = {"Task", "Pass", "Choice", "Wait", "Succeed", "Fail", "Parallel", "Map"}


def validate(doc: dict[str, Any], where: str = "state machine") -> list[str]:
    """Structural ASL problems (empty when fine): StartAt and every Next / Default / Catch
    target exist, every state is reachable, non-terminal states continue or end, Retry and Catch
    are well formed, every Task has a timeout."""
    states = doc.get("States")
    if not isinstance(states, dict) or not states:
        return [f"{where}: States is missing or empty"]
    problems: list[str] = []
    start = doc.get("StartAt")
    if start not in states:
        problems.append(f"{where}: StartAt {start!r} is not a state")
    edges: dict[str, list[str]] = {}
    for name, st in states.items():
        at = f"{where}.States.{name}"
        if st.get("Type") not in _TYPES:
            problems.append(f"{at}: unknown Type {st.get('Type')!r}")
            continue
        targets = _state_problems(at, st, problems)
        problems += [f"{at}: goes to {tg!r}, which is not a state" for tg in targets if tg not in states]
        edges[name] = [tg for tg in targets if tg in states]
    seen = _reachable(start, edges) if start in states else set()
    problems += [f"{where}.States.{name}: unreachable from StartAt" for name in states if name not in seen]
    if not any(states[n].get("Type") in _TERMINAL or states[n].get("End") is True for n in seen):
        problems.append(f"{where}: no reachable terminal state")
    return problems


def _state_problems(at: str, st: dict[str, Any], problems: list[str]) -> list[Any]:
    """One state's own problems (appended to ``problems``); returns the states it goes to."""
    t, targets = st.get("Type"), []
    if t == "Choice":
        choices = st.get("Choices") or []
        if not choices:
            problems.append(f"{at}: a Choice state needs Choices")
        targets += [c.get("Next") for c in choices]
        if "Default" in st:
            targets.append(st["Default"])
    elif t not in _TERMINAL:
        if "Next" in st:
            targets.append(st["Next"])
        elif st.get("End") is not True:
            problems.append(f"{at}: needs Next or End: true")
    problems += _retry_problems(at, st.get("Retry") or [])
    for i, c in enumerate(st.get("Catch") or []):
        if not isinstance(c.get("ErrorEquals"), list) or not c["ErrorEquals"]:
            problems.append(f"{at}.Catch[{i}]: ErrorEquals must be a non-empty list")
        if "Next" not in c:
            problems.append(f"{at}.Catch[{i}]: needs Next")
        targets.append(c.get("Next"))
    if t == "Task":
        if not st.get("Resource"):
            problems.append(f"{at}: a Task needs Resource")
        if "TimeoutSeconds" not in st and "TimeoutSecondsPath" not in st:
            problems.append(f"{at}: a Task needs TimeoutSeconds (a stuck call must not hang the run)")
    return targets


def _retry_problems(at: str, retries: list[dict[str, Any]]) -> list[str]:
    problems = []
    for i, r in enumerate(retries):
        if not isinstance(r.get("ErrorEquals"), list) or not r["ErrorEquals"]:
            problems.append(f"{at}.Retry[{i}]: ErrorEquals must be a non-empty list")
        if not isinstance(r.get("MaxAttempts", 3), int) or r.get("MaxAttempts", 3) < 0:
            problems.append(f"{at}.Retry[{i}]: MaxAttempts must be an integer >= 0")
        if r.get("BackoffRate", 2.0) < 1.0:
            problems.append(f"{at}.Retry[{i}]: BackoffRate must be >= 1.0")
        if r.get("IntervalSeconds", 1) < 1:
            problems.append(f"{at}.Retry[{i}]: IntervalSeconds must be >= 1")
    return problems


def _reachable(start: str, edges: dict[str, list[str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo += edges.get(n, [])
    return seen


def check(doc: dict[str, Any], where: str = "state machine") -> None:
    problems = validate(doc, where)
    if problems:
        raise ConfigError(where, "; ".join(problems))
