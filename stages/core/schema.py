"""Params files read as DVC reads them (ruamel.yaml, YAML 1.2), validated by pydantic into frozen
dataclasses, torch-free: a bad value is one line naming the file, the key's path, the value and the choices.
"""

from __future__ import annotations

import dataclasses
import io
import reprlib
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types as at
from pydantic import ConfigDict, Strict, TypeAdapter, ValidationError, WrapValidator, model_validator
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError, core_schema
from ruamel.yaml import YAML, YAMLError
from ruamel.yaml.constructor import DuplicateKeyError, SafeConstructor

from stages.core import atomic
from stages.core.errors import PipelineError

# A value as an error line shows it: a YAML alias bomb is shared lists, a plain repr would expand them.
SHOWN = reprlib.Repr()
SHOWN.maxlevel, SHOWN.maxlist, SHOWN.maxdict, SHOWN.maxstring, SHOWN.maxother = 3, 4, 4, 80, 80


def _unknown(cls: Any, key: str) -> PydanticCustomError:
    """``key`` is no key a file may give ``cls``: valid are its fields but those filled in from elsewhere (a name)."""
    valid = ", ".join(sorted(name for name, field in cls.__pydantic_fields__.items() if not field.exclude))
    return PydanticCustomError("unknown_key", "unknown key; valid keys: {keys}", {"key": key, "keys": valid})


def _known_keys(cls: Any, raw: Any) -> Any:
    for key in raw if isinstance(raw, Mapping) else ():
        if key not in cls.__pydantic_fields__:  # a misspelt key ignored would make a run other than its params say
            raise _unknown(cls, key)
    return raw


def typed(cls: type) -> type:
    """``cls`` as a frozen dataclass that pydantic validates: an unknown key is an error, a number finite."""
    cls._known_keys = model_validator(mode="before")(classmethod(_known_keys))  # type: ignore[attr-defined]
    return dataclass(frozen=True, config=ConfigDict(allow_inf_nan=False))(cls)


def said(kind: Any, allowed: str) -> Any:
    """``kind`` whose every error is one: what it allows, in words."""

    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("invalid", allowed) from None

    return Annotated[kind, WrapValidator(check)]


# Strict: no value is taken from another kind (a string "10", a bool as 1); a float takes an int.
def integer(low: int, high: int | None = None) -> Any:
    if high is None:
        return said(Annotated[int, Strict(), at.Ge(low)], f"expected an integer >= {low}")
    return said(Annotated[int, Strict(), at.Ge(low), at.Le(high)], f"expected an integer from {low} to {high:,}")


def number(words: str, *bounds: at.BaseMetadata) -> Any:
    return said(Annotated[float, Strict(), *bounds], f"expected {words}")


def choice(*options: str) -> Any:
    return said(Literal[options], f"choose one of: {', '.join(sorted(options))}")


Flag = said(Annotated[bool, Strict()], "expected true or false")
Text = said(Annotated[str, Strict(), at.MinLen(1)], "expected a non-empty string")


@dataclasses.dataclass(frozen=True, eq=False)  # hashed as itself: its kinds may grow
class Registry:
    """A catalog section: named entries, each of the class its ``key`` names in ``kinds`` (looked up then,
    so an extension adds to ``kinds``), given its name if it has that field, then ``finish``ed."""

    key: str
    kinds: dict[str, type]
    finish: Callable[[str, Mapping[str, Any], Any], Any] = lambda name, raw, entry: entry

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self.validate)

    def validate(self, raw: Any) -> dict[str, Any]:
        entries = adapter(Annotated[dict[str, Any], at.MinLen(1)]).validate_python(raw)
        return {name: self._entry(name, entry) for name, entry in entries.items()}

    def _entry(self, name: str, raw: Any) -> Any:
        kind = raw.get(self.key) if isinstance(raw, Mapping) else None
        if not isinstance(kind, str) or kind not in self.kinds or "name" in raw:
            raise ValidationError.from_exception_data(self.key, [self._refusal(name, raw, kind)])
        named = {"name": name} if "name" in self.kinds[kind].__pydantic_fields__ else {}
        entry = adapter(dict[str, self.kinds[kind]]).validate_python({name: {**raw, **named}})  # errors under its name
        return self.finish(name, raw, entry[name])

    def _refusal(self, name: str, raw: Any, kind: Any) -> Any:
        if not isinstance(raw, Mapping):
            return {"type": "dict_type", "loc": (name,), "input": raw}
        if self.key not in raw:
            return {"type": "missing", "loc": (name, self.key), "input": raw}
        if isinstance(kind, str) and kind in self.kinds:  # and a name: the entry's key is its name
            return {"type": _unknown(self.kinds[kind], "name"), "loc": (name,), "input": raw}
        allowed = f"choose one of: {', '.join(sorted(self.kinds))}"
        return {"type": PydanticCustomError("invalid", allowed), "loc": (name, self.key), "input": kind}


@cache
def adapter(kind: Any) -> TypeAdapter:
    return TypeAdapter(kind)


def validate(kind: Any, raw: Any, source: str | Callable[[str], str], prefix: tuple = ()) -> Any:
    """``raw`` as ``kind``, or a one-line ``PipelineError`` for its first error; ``source`` names the file
    (or gives it for a top-level key), ``prefix`` where ``raw`` lies in it."""
    try:
        return adapter(kind).validate_python(raw)
    except ValidationError as errors:
        error = errors.errors(include_url=False)[0]
        loc, value = (*prefix, *error["loc"]), error["input"]
        if error["type"] == "unknown_key":
            loc, value = (*loc, error["ctx"]["key"]), value[error["ctx"]["key"]]
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
        file = source if isinstance(source, str) else source(str(loc[0]) if loc else "")
        raise PipelineError(_line(f"{file}: {where}" if where else file, value, error)) from None


def _line(where: str, value: Any, error: Any) -> str:
    if error["type"] == "missing":
        return f"{where} is missing"
    if error["type"] in ("dict_type", "dataclass_type"):
        return f"{where} must be a mapping of keys to values, got {SHOWN.repr(value)}"
    if error["type"] == "value_error":
        return f"{where}: {error['ctx']['error']}"
    return invalid(where, value, error["msg"])


def invalid(where: str, value: Any, allowed: str) -> str:
    return f"{where} = {SHOWN.repr(value)} is invalid; {allowed}"


class _Constructor(SafeConstructor):
    """ruamel.yaml's, but a key given twice is named without the values (an alias bomb's take hours to show)."""

    def check_mapping_key(self, node: Any, key_node: Any, mapping: Any, key: Any, value: Any) -> bool:
        if key in mapping:
            problem = f"key {SHOWN.repr(key)} appears twice"
            raise DuplicateKeyError("while constructing a mapping", node.start_mark, problem, key_node.start_mark)
        return True


def parse_yaml(text: str, where: str) -> Any:
    """As DVC's ``parse_yaml``: YAML 1.2, ruamel's safe loader, a key given twice an error, an empty file no keys."""
    yaml = YAML(typ="safe")
    yaml.Constructor = _Constructor
    try:
        return yaml.load(text) or {}
    except YAMLError as error:
        mark, problem = getattr(error, "problem_mark", None), getattr(error, "problem", None) or error
        line = f" (line {mark.line + 1})" if mark else ""
        also = "; DVC refuses that too" if isinstance(error, DuplicateKeyError) else ""
        raise PipelineError(f"{where} is not valid YAML: {str(problem).splitlines()[0]}{line}{also}") from None


def read_yaml(path: Path) -> Any:
    try:
        return parse_yaml(path.read_text(), str(path))
    except FileNotFoundError:
        raise PipelineError(f"{path} not found: run from the project root") from None
    except IsADirectoryError:
        raise PipelineError(f"{path} is a directory, not a YAML file") from None


def write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    """Block style, as DVC writes a params file on ``-S`` (``dvc.utils.serialize.dump_yaml``)."""
    yaml, text = YAML(), io.StringIO()
    yaml.default_flow_style = False
    yaml.dump(dict(data), text)
    atomic.write(path, text.getvalue())
