"""AWS names checked before anything is created: IAM role ARNs (one rule for every command)."""

from __future__ import annotations

import re

from mlprep.errors import ConfigError

ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):role/[\w+=,.@/-]{1,512}$")


def role_arn(value: str, field: str) -> str:
    """The account id of a role ARN; ConfigError naming ``field`` if it is not one."""
    m = ROLE_ARN.match(value or "")
    if not m:
        raise ConfigError(field, f"not an IAM role ARN: {value!r}")
    return m.group(1)


STREAM_ARN = re.compile(r"^arn:aws[a-z-]*:kinesis:([a-z]{2}(?:-[a-z]+)+-\d):(\d{12}):stream/[\w.-]{1,128}$")


def stream_region(value: str, field: str) -> str:
    """The region of a Kinesis stream ARN; ConfigError naming ``field`` if it is not one."""
    m = STREAM_ARN.match(value or "")
    if not m:
        raise ConfigError(field, f"not a Kinesis stream ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME): {value!r}")
    return m.group(1)
