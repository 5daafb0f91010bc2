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
