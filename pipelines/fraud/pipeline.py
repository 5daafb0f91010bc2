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
from pathlib import Path

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
    pit = BASE_DIR.parent.parent / "mlprep" / "features" / "pit.py"
    return {
        "preprocess": staging.script(BASE_DIR / "preprocess.py", default_bucket, prefix),
        "lib": staging.script(pit, default_bucket, prefix + "/lib"),
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
):
    """Build the pipeline (a ``sagemaker.mlops.workflow.pipeline.Pipeline``) offline."""
    region = sdk.prepare_environment(region)
    role = role or sdk.DEFAULT_ROLE

    from sagemaker.core import image_uris
    from sagemaker.core.processing import ScriptProcessor
    from sagemaker.core.shapes import (
        ProcessingInput,
        ProcessingOutput,
        ProcessingS3Input,
        ProcessingS3Output,
    )
    from sagemaker.core.workflow.conditions import ConditionGreaterThanOrEqualTo
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join
    from sagemaker.core.workflow.functions import JsonGet as JsonGetFn
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

    session = sdk.pipeline_session(default_bucket, region)
    sdk.quiet()  # after the imports: the SDK sets its loggers' levels as it loads
    code = code_bundles(default_bucket, base_job_prefix)
    root = f"s3://{default_bucket}/{base_job_prefix}"

    features_uri = ParameterString("FeaturesUri", default_value=f"{root}/input/features/")
    labels_uri = ParameterString("LabelsUri", default_value=f"{root}/input/labels/")
    transactions_uri = ParameterString("TransactionsUri", default_value=f"{root}/input/transactions/")
    feature_groups = ParameterString("FeatureGroups", default_value="all")
    train_end = ParameterString("TrainEnd", default_value="2026-11-05")
    validation_end = ParameterString("ValidationEnd", default_value="2026-11-06")
    ttl_hours = ParameterFloat("FeatureTtlHours", default_value=2.0)
    max_iter = ParameterInteger("MaxIter", default_value=100)
    learning_rate = ParameterFloat("LearningRate", default_value=0.05)
    max_depth = ParameterInteger("MaxDepth", default_value=3)
    min_samples_leaf = ParameterInteger("MinSamplesLeaf", default_value=80)
    auc_threshold = ParameterFloat("AucThreshold", default_value=0.6)
    approval = ParameterString("ModelApprovalStatus", default_value="PendingManualApproval",
                               enum_values=["PendingManualApproval", "Approved", "Rejected"])
    processing_type = ParameterString("ProcessingInstanceType", default_value="ml.m5.xlarge")
    training_type = ParameterString("TrainingInstanceType", default_value="ml.m5.xlarge")
    inference_type = ParameterString("InferenceInstanceType", default_value="ml.m5.large")
    parameters = [features_uri, labels_uri, transactions_uri, feature_groups, train_end, validation_end, ttl_hours, max_iter, learning_rate,
                  max_depth, min_samples_leaf, auc_threshold, approval, processing_type, training_type,
                  inference_type]

    image = image_uris.retrieve(framework="sklearn", region=region, version=SKLEARN_VERSION,
                                py_version="py3", instance_type="ml.m5.xlarge")
    cache = CacheConfig(enable_caching=True, expire_after="P30D")
    job_retry = SageMakerJobStepRetryPolicy(
        exception_types=[SageMakerJobExceptionTypeEnum.INTERNAL_ERROR,
                         SageMakerJobExceptionTypeEnum.CAPACITY_ERROR],
        interval_seconds=1, backoff_rate=2.0, max_attempts=3)
    service_retry = StepRetryPolicy(exception_types=[StepExceptionTypeEnum.SERVICE_FAULT,
                                                     StepExceptionTypeEnum.THROTTLING],
                                    interval_seconds=1, backoff_rate=2.0, max_attempts=3)

    def s3_in(name: str, uri, local: str) -> ProcessingInput:
        return ProcessingInput(input_name=name, s3_input=ProcessingS3Input(
            s3_uri=uri, local_path=local, s3_data_type="S3Prefix", s3_input_mode="File"))

    def s3_out(name: str, local: str) -> ProcessingOutput:
        uri = Join(on="/", values=[root, "executions", ExecutionVariables.PIPELINE_EXECUTION_ID, name])
        return ProcessingOutput(output_name=name, s3_output=ProcessingS3Output(
            s3_uri=uri, local_path=local, s3_upload_mode="EndOfJob"))

    def processor(job: str) -> ScriptProcessor:
        return ScriptProcessor(role=role, image_uri=image, command=["python3"], instance_count=1,
                               instance_type=processing_type, base_job_name=f"{base_job_prefix}-{job}",
                               max_runtime_in_seconds=3600, sagemaker_session=session)

    step_preprocess = ProcessingStep(
        name="PreprocessFraudData",
        step_args=processor("preprocess").run(
            code=code["preprocess"].uri,
            inputs=[s3_in("labels", labels_uri, "/opt/ml/processing/input/labels"),
                    s3_in("transactions", transactions_uri, "/opt/ml/processing/input/transactions"),
                    s3_in("features", features_uri, "/opt/ml/processing/input/features"),
                    s3_in("lib", code["lib"].uri.rsplit("/", 1)[0] + "/", "/opt/ml/processing/input/lib")],
            outputs=[s3_out(n, f"/opt/ml/processing/{n}") for n in ("train", "validation", "test")],
            arguments=["--train-end", train_end, "--validation-end", validation_end,
                       "--ttl-hours", ttl_hours.to_string(), "--feature-groups", feature_groups],
        ),
        cache_config=cache, retry_policies=[job_retry, service_retry],
    )

    outputs = step_preprocess.properties.ProcessingOutputConfig.Outputs
    trainer = ModelTrainer(
        training_image=image, role=role, sagemaker_session=session, base_job_name=f"{base_job_prefix}-train",
        compute=Compute(instance_type=training_type, instance_count=1),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=3600),
        output_data_config=OutputDataConfig(s3_output_path=f"{root}/models", compression_type="GZIP"),
        hyperparameters={
            "max_iter": max_iter, "learning_rate": learning_rate, "max_depth": max_depth,
            "min_samples_leaf": min_samples_leaf,
            # script mode, as the SageMaker scikit-learn container runs it
            "sagemaker_program": "train.py", "sagemaker_submit_directory": code["train"].uri,
        },
        input_data_config=[
            InputData(channel_name="train", data_source=outputs["train"].S3Output.S3Uri, content_type="text/csv"),
            InputData(channel_name="validation", data_source=outputs["validation"].S3Output.S3Uri,
                      content_type="text/csv"),
        ],
    )
    step_train = TrainingStep(name="TrainFraudModel", step_args=trainer.train(), cache_config=cache,
                              retry_policies=[job_retry, service_retry])
    model_data = step_train.properties.ModelArtifacts.S3ModelArtifacts

    evaluation = PropertyFile(name=EVAL_PROPERTY_FILE, output_name="evaluation", path="evaluation.json")
    step_eval = ProcessingStep(
        name="EvaluateFraudModel",
        step_args=processor("evaluate").run(
            code=code["evaluate"].uri,
            inputs=[s3_in("model", model_data, "/opt/ml/processing/model"),
                    s3_in("test", outputs["test"].S3Output.S3Uri, "/opt/ml/processing/test")],
            outputs=[s3_out("evaluation", "/opt/ml/processing/evaluation")],
        ),
        property_files=[evaluation], cache_config=cache, retry_policies=[job_retry, service_retry],
    )
    roc_auc = JsonGetFn(step_name=step_eval.name, property_file=evaluation,
                        json_path="binary_classification_metrics.roc_auc.value")

    from sagemaker.core.shapes import MetricsSource, ModelMetrics, ModelQuality

    eval_uri = Join(on="/", values=[
        step_eval.properties.ProcessingOutputConfig.Outputs["evaluation"].S3Output.S3Uri, "evaluation.json"])
    serving_env = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": code["inference"].uri}
    builder = ModelBuilder(s3_model_data_url=model_data, image_uri=image, role_arn=role,
                           sagemaker_session=session, env_vars=serving_env, log_level=logging.ERROR)
    step_register = ModelStep(
        name="RegisterFraudModel",
        step_args=builder.register(
            model_package_group_name=model_package_group_name, approval_status=approval,
            content_types=["text/csv", "application/json"], response_types=["application/json", "text/csv"],
            inference_instances=[inference_type], transform_instances=[inference_type],
            model_metrics=ModelMetrics(model_quality=ModelQuality(statistics=MetricsSource(
                content_type="application/json", s3_uri=eval_uri))),
            description="Fraud classifier on point-in-time stream features (mlprep)",
        ),
    )
    step_model = ModelStep(name="CreateFraudModel", step_args=builder.build(), retry_policies=[service_retry])
    step_config = EndpointConfigStep(
        name="FraudEndpointConfig",
        step_args=session.create_endpoint_config(
            name=Join(on="-", values=[endpoint_name, ExecutionVariables.PIPELINE_EXECUTION_ID]),
            production_variants=[{"VariantName": "AllTraffic", "ModelName": step_model.properties.ModelName,
                                  "InitialInstanceCount": 1, "InstanceType": inference_type}]),
        retry_policies=[service_retry],
    )
    step_endpoint = EndpointStep(
        name="FraudEndpoint",
        step_args=session.create_endpoint(endpoint_name=endpoint_name,
                                          config_name=step_config.properties.EndpointConfigName),
    )
    step_fail = FailStep(name="AucTooLowFail", error_message=Join(
        on=" ", values=["Test ROC AUC", roc_auc, "is below the threshold", auc_threshold]))
    step_check = ConditionStep(
        name="CheckAucFraudModel",
        conditions=[ConditionGreaterThanOrEqualTo(left=roc_auc, right=auc_threshold)],
        if_steps=[step_register, step_model, step_config, step_endpoint], else_steps=[step_fail],
    )
    return Pipeline(name=pipeline_name, parameters=parameters,
                    steps=[step_preprocess, step_train, step_eval, step_check], sagemaker_session=session)



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
