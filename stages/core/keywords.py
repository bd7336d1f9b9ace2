"""What catalog.yaml may pass to a torch class as keyword arguments, and which values each takes.

Optimizers and schedules take their catalog.yaml keys as the torch class's keyword arguments; each
key's expected kind comes from the class's own signature (its default, else its annotation), so a
wrong value is one line saying what was expected instead of torch's error from deep inside.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Keyword:
    name: str
    kind: str
    """``bool``, ``int``, ``number``, ``pair`` (two numbers, as Adam's betas) or ``choice``."""
    choices: tuple[str, ...] = ()
    required: bool = False

    def expected(self) -> str:
        return {
            "bool": "expected true or false",
            "int": "expected an integer >= 1",
            "number": "expected a finite number",
            "pair": "expected a list of two finite numbers",
            "choice": f"choose one of: {', '.join(self.choices)}",
        }[self.kind]

    def accepts(self, value: Any) -> bool:
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "int":
            return _is_number(value) and isinstance(value, int) and value >= 1
        if self.kind == "number":
            return _is_number(value)
        if self.kind == "pair":
            return isinstance(value, list) and len(value) == 2 and all(map(_is_number, value))
        return value in self.choices


def keywords(cls: type, exclude: set[str]) -> dict[str, Keyword]:
    """The keyword arguments of ``cls`` that catalog.yaml may set: all but ``exclude``."""
    found = {}
    for name, parameter in inspect.signature(cls).parameters.items():
        if name in exclude or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        required = parameter.default is inspect.Parameter.empty
        found[name] = Keyword(name, *_kind(parameter), required=required)
    return found


def _kind(parameter: inspect.Parameter) -> tuple[str, tuple[str, ...]]:
    default, annotation = parameter.default, str(parameter.annotation)
    if literal := re.search(r"Literal\[(.*)\]", annotation):
        return "choice", tuple(re.findall(r"'([^']*)'", literal.group(1)))
    if isinstance(default, bool) or annotation.startswith("bool"):
        return "bool", ()
    if isinstance(default, tuple) or annotation.startswith("tuple"):
        return "pair", ()
    if annotation.startswith("int") and not isinstance(default, float):
        return "int", ()
    return "number", ()


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
