"""A YAML file of params, read as DVC reads it and validated key by key with one-line errors that
name the file, the key's dotted path, the value and what is allowed. Torch-free: the download
stage reads its source through here without loading torch.
"""

from __future__ import annotations

import reprlib
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import yaml

from stages.core.errors import PipelineError
from stages.core.keywords import Keyword

# A value as an error line shows it: a YAML alias bomb is shared lists, a plain repr would expand them.
SHOWN = reprlib.Repr()
SHOWN.maxlevel, SHOWN.maxlist, SHOWN.maxdict, SHOWN.maxstring, SHOWN.maxother = 3, 4, 4, 80, 80


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML as DVC reads params.yaml: a key given twice in one mapping is an error, not its last value."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                line = key_node.start_mark.line + 1
                raise yaml.YAMLError(f"key {SHOWN.repr(key)} appears twice (line {line}); DVC refuses that too")
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(), Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except FileNotFoundError:
        raise PipelineError(f"{path} not found: run from the project root") from None
    except IsADirectoryError:
        raise PipelineError(f"{path} is a directory, not a YAML file") from None
    except yaml.YAMLError as error:
        raise PipelineError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None


MISSING = object()


class Section:
    """A mapping in a params file that knows its own dotted path, for error messages."""

    def __init__(self, raw: Any, source: str, prefix: str):
        if not isinstance(raw, Mapping):
            where = f"{source}: {prefix.rstrip('.')}" if prefix else source
            raise PipelineError(f"{where} must be a mapping of keys to values, got {SHOWN.repr(raw)}")
        self.raw, self.source, self.prefix = raw, source, prefix

    def where(self, key: str = "") -> str:
        return f"{self.source}: {(self.prefix + key).rstrip('.')}"

    def fail(self, key: str, value: Any, expected: str) -> None:
        raise PipelineError(f"{self.where(key)} = {SHOWN.repr(value)} is invalid; {expected}")

    def get(self, key: str, default: Any = MISSING) -> Any:
        if key not in self.raw:
            if default is MISSING:
                raise PipelineError(f"{self.where(key)} is missing")
            return default
        return self.raw[key]

    def section(self, key: str, default: Any = MISSING) -> Section:
        return Section(self.get(key, default), self.source, f"{self.prefix}{key}.")

    def mapping(self, key: str) -> dict[str, Section]:
        sections = self.section(key)
        if not sections.raw:
            raise PipelineError(f"{self.where(key)} is empty")
        return {str(name): sections.section(name) for name in sections.raw}

    def section_list(self, key: str) -> list[Section]:
        value = self.get(key)
        if not isinstance(value, list) or not value:
            self.fail(key, value, "expected a non-empty list of mappings")
        return [Section(item, self.source, f"{self.prefix}{key}[{index}].") for index, item in enumerate(value)]

    def reject_unknown(self, allowed: set[str]) -> None:
        for key in self.raw:
            if key not in allowed:
                self.fail(key, self.raw[key], f"unknown key; valid keys: {', '.join(sorted(allowed))}")

    def choice(self, key: str, choices: Mapping[str, Any] | tuple[str, ...]) -> str:
        value = self.get(key)
        if not isinstance(value, str) or value not in choices:
            self.fail(key, value, f"choose one of: {', '.join(sorted(choices))}")
        return value

    def string(self, key: str) -> str:
        value = self.get(key)
        if not isinstance(value, str) or not value:
            self.fail(key, value, "expected a non-empty string")
        return value

    def string_list(self, key: str) -> list[str]:
        value = self.get(key)
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            self.fail(key, value, "expected a list of strings")
        return value

    def integer(self, key: str, minimum: int, maximum: int, default: Any = MISSING) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            self.fail(key, value, f"expected an integer from {minimum} to {maximum:,}")
        return value

    def integer_list(self, key: str, minimum: int, maximum: int, default: Any = MISSING) -> list[int]:
        value = self.get(key, default)
        if not isinstance(value, list) or not all(
            isinstance(item, int) and not isinstance(item, bool) and minimum <= item <= maximum for item in value
        ):
            self.fail(key, value, f"expected a list of integers from {minimum} to {maximum:,}")
        return value

    def boolean(self, key: str, default: Any = MISSING) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, value, "expected true or false")
        return value

    def fraction(self, key: str, default: Any = MISSING) -> float:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            self.fail(key, value, "expected a number from 0 to below 1")
        return value

    def keywords(self, allowed: Mapping[str, Keyword]) -> dict[str, Any]:
        """The entry's keys but ``type``, each checked against the torch keyword it is passed as."""
        self.reject_unknown({"type", *allowed})
        for keyword in allowed.values():
            if keyword.required and keyword.name not in self.raw:
                raise PipelineError(f"{self.where(keyword.name)} is missing; {keyword.expected()}")
        values = {key: value for key, value in self.raw.items() if key != "type"}
        for key, value in values.items():
            if not allowed[key].accepts(value):
                self.fail(key, value, allowed[key].expected())
        return values
