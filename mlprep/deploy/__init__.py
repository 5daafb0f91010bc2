"""From laptop to AWS: ``plan`` writes every artifact and request (Glue job, Managed Flink
application, SageMaker pipeline, a Step Functions state machine that runs them, a cost summary);
``asl`` builds and checks the state machine; ``costs`` prices the plan from an editable table."""
