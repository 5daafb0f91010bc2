"""A minimal stand-in for AWS Glue's ``awsglue`` library (not on PyPI), enough to run an
exported job script under plain PySpark: getResolvedOptions, GlueContext, Job."""
