"""SageMaker Pipelines without a cloud: offline definitions from the official SDK (``sdk``,
``staging``), a local executor of definition JSON (``definition``, ``expressions``, ``storage``,
``containers``, ``executor``), a model registry (``registry``), a local endpoint (``serve``) and
the SageMaker API calls for AWS (``aws``)."""
