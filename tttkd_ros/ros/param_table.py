"""The node's parameters as a Markdown table (name, type, default, range, run-time settable,
description), generated from the same `Spec`s the node declares, so the README's table
cannot disagree with the node. `python -m tttkd_ros.ros.param_table` prints it; the test
`test/ros/test_param_table.py` checks that the README holds exactly this table.
"""
from __future__ import annotations

import json
import re

from ..core.config import TEACHER_DIMS
from .params import CHOICES, RECTIFIED, RELIABILITY, TRANSPORTS, Spec, all_specs

# The table documents one camera, named as the default configuration names it.
CAMERA = "camera"
# parameters whose value is one of a fixed set
_CHOICES = {**{f"adaptation.{k}": v for k, v in CHOICES.items()},
            "qos.input.reliability": RELIABILITY, "qos.output.reliability": RELIABILITY,
            f"{CAMERA}.transport": TRANSPORTS, f"{CAMERA}.rectified": RECTIFIED,
            "teacher.name": tuple(TEACHER_DIMS)}


def _type(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "double"
    if isinstance(value, list):
        return "string[]" if value and isinstance(value[0], str) else "double[]"
    return "string"


def _default(value: object) -> str:
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{json.dumps(value)}`"  # true/false and lists as YAML reads them


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _range(name: str, spec: Spec) -> str:
    if name in _CHOICES:
        return ", ".join(_CHOICES[name])
    if spec.lo is not None:
        return f"{_number(spec.lo)} .. {_number(spec.hi)}"
    return ""


def _description(spec: Spec) -> str:
    # the choices have a column of their own; the description need not repeat them
    text = re.sub(r" \(one of: [^)]*\)", "", spec.description)
    return text.replace("|", "\\|")


def markdown_table() -> str:
    """Every parameter of a node with one camera, in the node's declaration order."""
    rows = ["| parameter | type | default | range | run time | description |",
            "|---|---|---|---|---|---|"]
    for name, spec in all_specs([CAMERA]).items():
        rows.append(f"| `{name}` | {_type(spec.default)} | {_default(spec.default)} | "
                    f"{_range(name, spec)} | {'no' if spec.read_only else 'yes'} | "
                    f"{_description(spec)} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
