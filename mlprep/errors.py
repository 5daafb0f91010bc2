"""Exceptions raised by mlprep; each names what the user has to fix."""

from __future__ import annotations


class MlprepError(Exception):
    """Base class of all mlprep errors."""


class ConfigError(MlprepError):
    """A job config, feature spec or parameter is wrong; raised before any work starts.

    ``field`` is the dotted path of the offending field (e.g. ``steps[2].dedupe.keys``).
    """

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class SourceError(MlprepError):
    """A source cannot be read at all (missing path, unreachable database)."""


class ErrorThresholdExceeded(MlprepError):
    """More records were quarantined than the job allows (Glue's error thresholds)."""


class DataQualityError(MlprepError):
    """A data-quality rule of severity ``error`` failed, so nothing was published."""
