"""What a stage notebook hands to the next: ``save({...})`` in its last cell.

Under ``mlprep run`` the values go to the file named by ``MLPREP_STAGE_OUTPUTS``; run by hand,
to ``default`` if given. Values must be JSON (paths as strings).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mlprep.masking import Masker

ENV = "MLPREP_STAGE_OUTPUTS"
SECRET_ENV = "MLPREP_SECRET_"


def save(values: dict[str, Any], default: str | Path | None = None) -> dict[str, Any]:
    target = os.environ.get(ENV) or default
    if _figures:
        values = {**values, "figures": list(_figures)}
    # the kernel's secrets (mlprep run passes them by environment) never reach the file
    values = json.loads(json.dumps(values, default=str))  # what the file will hold (paths as text)
    values = Masker([v for k, v in os.environ.items() if k.startswith(SECRET_ENV)]).value(values)
    if target:
        p = Path(target)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(values, indent=2, default=str))
        tmp.replace(p)
    return values


_figures: list[str] = []


def figure(fig: Any, name: str) -> str | None:
    """Keep a matplotlib figure for the run's report (a PNG beside the stage's outputs); a no-op
    outside ``mlprep run``. ``save`` lists the figures kept so far."""
    target = os.environ.get(ENV)
    if not target:
        return None
    p = Path(target).parent / "figures" / f"{len(_figures):02d}_{name}.png"
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=90, bbox_inches="tight")
    _figures.append(str(p))
    return str(p)
