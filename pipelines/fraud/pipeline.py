"""The fraud model's SageMaker pipeline, built with the official ``sagemaker`` SDK v3.

    PreprocessFraudData (Processing: labels joined with the batch job's curated transactions and,
        point-in-time correct, with the stream's offline-store features; time-based split)
      -> TrainFraudModel (Training: scikit-learn script mode, model.tar.gz from SM_MODEL_DIR)
      -> EvaluateFraudModel (Processing: evaluation.json, a PropertyFile)
      -> CheckAucFraudModel (Condition: test ROC AUC >= AucThreshold)
           true:  RegisterFraudModel (model package, metrics attached, ModelApprovalStatus)
                  CreateFraudModel -> FraudEndpointConfig -> FraudEndpoint
           false: AucTooLowFail (Fail, with the AUC in the message)

``get_pipeline(...)`` needs no network and no credentials: code is staged to content-hashed
``s3://`` keys (``code_bundles``) and the SDK's offline needs are met by ``mlprep.pipeline.sdk``.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mlprep.pipeline import sdk, staging

BASE_DIR = Path(__file__).resolve().parent
SKLEARN_VERSION = "1.2-1"
PIPELINE_NAME = "mlprep-fraud"
MODEL_PACKAGE_GROUP = "mlprep-fraud-models"
EVAL_PROPERTY_FILE = "EvaluationReport"
DEFAULT_BUCKET = "mlprep-demo"
BASE_JOB_PREFIX = "mlprep-fraud"


def code_bundles(default_bucket: str = DEFAULT_BUCKET, base_job_prefix: str = BASE_JOB_PREFIX) -> dict[str, staging.CodeBundle]:
    """The step scripts as content-addressed bundles: the keys change only when the code does."""
    prefix = f"{base_job_prefix}/code"
    pit = resources.files("mlprep.features") / "pit.py"  # the installed mlprep's, as the step imports it
    return {
        "preprocess": staging.script(BASE_DIR / "preprocess.py", default_bucket, prefix),
        "lib": staging.bundle(pit.read_bytes(), default_bucket, prefix + "/lib", pit.name),
        "evaluate": staging.script(BASE_DIR / "evaluate.py", default_bucket, prefix),
        "train": staging.source_dir({"train.py": BASE_DIR / "train.py"}, default_bucket, prefix),
        "inference": staging.source_dir({"inference.py": BASE_DIR / "inference.py"}, default_bucket, prefix),
    }


def get_pipeline(
    region: str | None = None,
    role: str | None = None,
    default_bucket: str = DEFAULT_BUCKET,
    pipeline_name: str = PIPELINE_NAME,
    model_package_group_name: str = MODEL_PACKAGE_GROUP,
    base_job_prefix: str = BASE_JOB_PREFIX,
    endpoint_name: str = "mlprep-fraud-endpoint",
) -> Any:
    """Build the pipeline (a ``sagemaker.mlops.workflow.pipeline.Pipeline``) offline:
    preprocess -> train -> evaluate -> check AUC (register, model, endpoint config, endpoint | fail)."""
    region = sdk.prepare_environment(region)
    sm = _sdk()
    session = sdk.pipeline_session(default_bucket, region)
    sdk.quiet()  # after the imports: the SDK sets its loggers' levels as it loads
    b = _Build(sm, role or sdk.DEFAULT_ROLE, session, region, default_bucket, base_job_prefix)
    preprocess = _preprocess_step(b)
    train = _train_step(b, preprocess)
    evaluate, roc_auc = _evaluate_step(b, preprocess, train)
    deploy = _deploy_steps(b, train, evaluate, model_package_group_name, endpoint_name)
    check = _check_step(b, roc_auc, deploy)
    return sm.Pipeline(name=pipeline_name, parameters=list(b.params.values()),
                       steps=[preprocess, train, evaluate, check], sagemaker_session=session)


def _sdk() -> SimpleNamespace:
    """The SDK's classes the steps are built from, imported in one place (before ``sdk.quiet``)."""
    from sagemaker.core import image_uris
    from sagemaker.core.processing import ScriptProcessor
    from sagemaker.core.shapes import (
        MetricsSource,
        ModelMetrics,
        ModelQuality,
        ProcessingInput,
        ProcessingOutput,
        ProcessingS3Input,
        ProcessingS3Output,
    )
    from sagemaker.core.workflow.conditions import ConditionGreaterThanOrEqualTo
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join, JsonGet
    from sagemaker.core.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow.condition_step import ConditionStep
    from sagemaker.mlops.workflow.endpoint_step import EndpointConfigStep, EndpointStep
    from sagemaker.mlops.workflow.fail_step import FailStep
    from sagemaker.mlops.workflow.model_step import ModelStep
    from sagemaker.mlops.workflow.pipeline import Pipeline
    from sagemaker.mlops.workflow.retry import (
        SageMakerJobExceptionTypeEnum,
        SageMakerJobStepRetryPolicy,
        StepExceptionTypeEnum,
        StepRetryPolicy,
    )
    from sagemaker.mlops.workflow.steps import CacheConfig, ProcessingStep, TrainingStep
    from sagemaker.serve.model_builder import ModelBuilder
    from sagemaker.train.configs import Compute, InputData, OutputDataConfig, StoppingCondition
    from sagemaker.train.model_trainer import ModelTrainer

    return SimpleNamespace(
        image_uris=image_uris, ScriptProcessor=ScriptProcessor, MetricsSource=MetricsSource, ModelMetrics=ModelMetrics,
        ModelQuality=ModelQuality, ProcessingInput=ProcessingInput, ProcessingOutput=ProcessingOutput,
        ProcessingS3Input=ProcessingS3Input, ProcessingS3Output=ProcessingS3Output,
        ConditionGreaterThanOrEqualTo=ConditionGreaterThanOrEqualTo, ExecutionVariables=ExecutionVariables,
        Join=Join, JsonGet=JsonGet, ParameterFloat=ParameterFloat, ParameterInteger=ParameterInteger,
        ParameterString=ParameterString, PropertyFile=PropertyFile, ConditionStep=ConditionStep,
        EndpointConfigStep=EndpointConfigStep, EndpointStep=EndpointStep, FailStep=FailStep, ModelStep=ModelStep,
        Pipeline=Pipeline, SageMakerJobExceptionTypeEnum=SageMakerJobExceptionTypeEnum,
        SageMakerJobStepRetryPolicy=SageMakerJobStepRetryPolicy, StepExceptionTypeEnum=StepExceptionTypeEnum,
        StepRetryPolicy=StepRetryPolicy, CacheConfig=CacheConfig, ProcessingStep=ProcessingStep,
        TrainingStep=TrainingStep, ModelBuilder=ModelBuilder, Compute=Compute, InputData=InputData,
        OutputDataConfig=OutputDataConfig, StoppingCondition=StoppingCondition, ModelTrainer=ModelTrainer)


def _parameters(sm: SimpleNamespace, root: str) -> dict[str, Any]:
    """The pipeline's parameters by name, in the definition's order."""
    s, f, i = sm.ParameterString, sm.ParameterFloat, sm.ParameterInteger
    params = [
        s("FeaturesUri", default_value=f"{root}/input/features/"),
        s("LabelsUri", default_value=f"{root}/input/labels/"),
        s("TransactionsUri", default_value=f"{root}/input/transactions/"),
        s("FeatureGroups", default_value="all"),
        s("TrainEnd", default_value="2026-11-05"),
        s("ValidationEnd", default_value="2026-11-06"),
        f("FeatureTtlHours", default_value=2.0),
        i("MaxIter", default_value=100),
        f("LearningRate", default_value=0.05),
        i("MaxDepth", default_value=3),
        i("MinSamplesLeaf", default_value=80),
        f("AucThreshold", default_value=0.6),
        s("ModelApprovalStatus", default_value="PendingManualApproval",
          enum_values=["PendingManualApproval", "Approved", "Rejected"]),
        s("ProcessingInstanceType", default_value="ml.m5.xlarge"),
        s("TrainingInstanceType", default_value="ml.m5.xlarge"),
        s("InferenceInstanceType", default_value="ml.m5.large"),
    ]
    return {p.name: p for p in params}


class _Build:
    """What every step builder shares: the SDK, role, session, image, staged code, parameters,
    cache and retry policies, and the processing inputs and outputs under ``root``."""

    def __init__(self, sm: SimpleNamespace, role: str, session: Any, region: str, bucket: str, prefix: str) -> None:
        self.sm, self.role, self.session, self.prefix = sm, role, session, prefix
        self.code = code_bundles(bucket, prefix)
        self.root = f"s3://{bucket}/{prefix}"
        self.params = _parameters(sm, self.root)
        self.image = sm.image_uris.retrieve(framework="sklearn", region=region, version=SKLEARN_VERSION,
                                            py_version="py3", instance_type="ml.m5.xlarge")
        self.cache = sm.CacheConfig(enable_caching=True, expire_after="P30D")
        self.job_retry = sm.SageMakerJobStepRetryPolicy(
            exception_types=[sm.SageMakerJobExceptionTypeEnum.INTERNAL_ERROR,
                             sm.SageMakerJobExceptionTypeEnum.CAPACITY_ERROR],
            interval_seconds=1, backoff_rate=2.0, max_attempts=3)
        self.service_retry = sm.StepRetryPolicy(exception_types=[sm.StepExceptionTypeEnum.SERVICE_FAULT,
                                                                 sm.StepExceptionTypeEnum.THROTTLING],
                                                interval_seconds=1, backoff_rate=2.0, max_attempts=3)

    def s3_in(self, name: str, uri: Any, local: str) -> Any:
        return self.sm.ProcessingInput(input_name=name, s3_input=self.sm.ProcessingS3Input(
            s3_uri=uri, local_path=local, s3_data_type="S3Prefix", s3_input_mode="File"))

    def s3_out(self, name: str, local: str) -> Any:
        uri = self.sm.Join(on="/", values=[self.root, "executions", self.sm.ExecutionVariables.PIPELINE_EXECUTION_ID,
                                           name])
        return self.sm.ProcessingOutput(output_name=name, s3_output=self.sm.ProcessingS3Output(
            s3_uri=uri, local_path=local, s3_upload_mode="EndOfJob"))

    def processor(self, job: str) -> Any:
        return self.sm.ScriptProcessor(role=self.role, image_uri=self.image, command=["python3"], instance_count=1,
                                       instance_type=self.params["ProcessingInstanceType"],
                                       base_job_name=f"{self.prefix}-{job}", max_runtime_in_seconds=3600,
                                       sagemaker_session=self.session)


def _preprocess_step(b: _Build) -> Any:
    """PreprocessFraudData: labels, batch table and offline-store features -> train / validation / test."""
    p, lib = b.params, b.code["lib"].uri.rsplit("/", 1)[0] + "/"
    return b.sm.ProcessingStep(
        name="PreprocessFraudData",
        step_args=b.processor("preprocess").run(
            code=b.code["preprocess"].uri,
            inputs=[b.s3_in("labels", p["LabelsUri"], "/opt/ml/processing/input/labels"),
                    b.s3_in("transactions", p["TransactionsUri"], "/opt/ml/processing/input/transactions"),
                    b.s3_in("features", p["FeaturesUri"], "/opt/ml/processing/input/features"),
                    b.s3_in("lib", lib, "/opt/ml/processing/input/lib")],
            outputs=[b.s3_out(n, f"/opt/ml/processing/{n}") for n in ("train", "validation", "test")],
            arguments=["--train-end", p["TrainEnd"], "--validation-end", p["ValidationEnd"],
                       "--ttl-hours", p["FeatureTtlHours"].to_string(), "--feature-groups", p["FeatureGroups"]],
        ),
        cache_config=b.cache, retry_policies=[b.job_retry, b.service_retry],
    )


def _train_step(b: _Build, preprocess: Any) -> Any:
    """TrainFraudModel: scikit-learn script mode on the train and validation splits."""
    sm, p = b.sm, b.params
    outputs = preprocess.properties.ProcessingOutputConfig.Outputs
    trainer = sm.ModelTrainer(
        training_image=b.image, role=b.role, sagemaker_session=b.session, base_job_name=f"{b.prefix}-train",
        compute=sm.Compute(instance_type=p["TrainingInstanceType"], instance_count=1),
        stopping_condition=sm.StoppingCondition(max_runtime_in_seconds=3600),
        output_data_config=sm.OutputDataConfig(s3_output_path=f"{b.root}/models", compression_type="GZIP"),
        hyperparameters={
            "max_iter": p["MaxIter"], "learning_rate": p["LearningRate"], "max_depth": p["MaxDepth"],
            "min_samples_leaf": p["MinSamplesLeaf"],
            # script mode, as the SageMaker scikit-learn container runs it
            "sagemaker_program": "train.py", "sagemaker_submit_directory": b.code["train"].uri,
        },
        input_data_config=[
            sm.InputData(channel_name="train", data_source=outputs["train"].S3Output.S3Uri, content_type="text/csv"),
            sm.InputData(channel_name="validation", data_source=outputs["validation"].S3Output.S3Uri,
                         content_type="text/csv"),
        ],
    )
    return sm.TrainingStep(name="TrainFraudModel", step_args=trainer.train(), cache_config=b.cache,
                           retry_policies=[b.job_retry, b.service_retry])


def _evaluate_step(b: _Build, preprocess: Any, train: Any) -> tuple[Any, Any]:
    """EvaluateFraudModel (evaluation.json, a PropertyFile) and the test ROC AUC read from it."""
    sm = b.sm
    evaluation = sm.PropertyFile(name=EVAL_PROPERTY_FILE, output_name="evaluation", path="evaluation.json")
    test = preprocess.properties.ProcessingOutputConfig.Outputs["test"].S3Output.S3Uri
    step = sm.ProcessingStep(
        name="EvaluateFraudModel",
        step_args=b.processor("evaluate").run(
            code=b.code["evaluate"].uri,
            inputs=[b.s3_in("model", train.properties.ModelArtifacts.S3ModelArtifacts, "/opt/ml/processing/model"),
                    b.s3_in("test", test, "/opt/ml/processing/test")],
            outputs=[b.s3_out("evaluation", "/opt/ml/processing/evaluation")],
        ),
        property_files=[evaluation], cache_config=b.cache, retry_policies=[b.job_retry, b.service_retry],
    )
    roc_auc = sm.JsonGet(step_name=step.name, property_file=evaluation,
                         json_path="binary_classification_metrics.roc_auc.value")
    return step, roc_auc


def _deploy_steps(b: _Build, train: Any, evaluate: Any, model_package_group_name: str,
                  endpoint_name: str) -> list[Any]:
    """RegisterFraudModel (metrics attached), CreateFraudModel, FraudEndpointConfig, FraudEndpoint."""
    sm, p = b.sm, b.params
    eval_uri = sm.Join(on="/", values=[
        evaluate.properties.ProcessingOutputConfig.Outputs["evaluation"].S3Output.S3Uri, "evaluation.json"])
    serving_env = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": b.code["inference"].uri}
    builder = sm.ModelBuilder(s3_model_data_url=train.properties.ModelArtifacts.S3ModelArtifacts, image_uri=b.image,
                              role_arn=b.role, sagemaker_session=b.session, env_vars=serving_env,
                              log_level=logging.ERROR)
    register = sm.ModelStep(
        name="RegisterFraudModel",
        step_args=builder.register(
            model_package_group_name=model_package_group_name, approval_status=p["ModelApprovalStatus"],
            content_types=["text/csv", "application/json"], response_types=["application/json", "text/csv"],
            inference_instances=[p["InferenceInstanceType"]], transform_instances=[p["InferenceInstanceType"]],
            model_metrics=sm.ModelMetrics(model_quality=sm.ModelQuality(statistics=sm.MetricsSource(
                content_type="application/json", s3_uri=eval_uri))),
            description="Fraud classifier on point-in-time stream features (mlprep)",
        ),
    )
    model = sm.ModelStep(name="CreateFraudModel", step_args=builder.build(), retry_policies=[b.service_retry])
    config = sm.EndpointConfigStep(
        name="FraudEndpointConfig",
        step_args=b.session.create_endpoint_config(
            name=sm.Join(on="-", values=[endpoint_name, sm.ExecutionVariables.PIPELINE_EXECUTION_ID]),
            production_variants=[{"VariantName": "AllTraffic", "ModelName": model.properties.ModelName,
                                  "InitialInstanceCount": 1, "InstanceType": p["InferenceInstanceType"]}]),
        retry_policies=[b.service_retry],
    )
    endpoint = sm.EndpointStep(
        name="FraudEndpoint",
        step_args=b.session.create_endpoint(endpoint_name=endpoint_name,
                                            config_name=config.properties.EndpointConfigName),
    )
    return [register, model, config, endpoint]


def _check_step(b: _Build, roc_auc: Any, if_steps: list[Any]) -> Any:
    """CheckAucFraudModel: test ROC AUC >= AucThreshold, else AucTooLowFail with the AUC in its message."""
    sm, threshold = b.sm, b.params["AucThreshold"]
    fail = sm.FailStep(name="AucTooLowFail", error_message=sm.Join(
        on=" ", values=["Test ROC AUC", roc_auc, "is below the threshold", threshold]))
    return sm.ConditionStep(
        name="CheckAucFraudModel",
        conditions=[sm.ConditionGreaterThanOrEqualTo(left=roc_auc, right=threshold)],
        if_steps=if_steps, else_steps=[fail],
    )


def stage_inputs(storage, labels: Path, transactions: Path | None, features: Path,
                 default_bucket: str = DEFAULT_BUCKET, base_job_prefix: str = BASE_JOB_PREFIX) -> dict[str, str]:
    """Put the demo's inputs where the parameters' defaults point: labels (a file or folder), the
    batch job's curated table and the stream's offline store. Returns {parameter: uri}."""
    root = f"s3://{default_bucket}/{base_job_prefix}/input"
    uris = {"LabelsUri": f"{root}/labels/", "FeaturesUri": f"{root}/features/"}
    labels = Path(labels)
    if labels.is_file():
        storage.put_bytes(f"{root}/labels/{labels.name}", labels.read_bytes())
    else:
        storage.upload(labels, uris["LabelsUri"])
    storage.upload(Path(features), uris["FeaturesUri"])
    if transactions is not None:
        uris["TransactionsUri"] = f"{root}/transactions/"
        storage.upload(Path(transactions), uris["TransactionsUri"])
    return uris
