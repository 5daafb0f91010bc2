"""mlprep: notebook-driven ML data prep.

Batch ETL in the style of AWS Glue (``mlprep.batch``), on an embedded DuckDB engine, with
sources and sinks chosen by URL scheme (``mlprep.io``) and seeded sample data
(``mlprep.datasets``).
"""

__version__ = "0.1.0"
