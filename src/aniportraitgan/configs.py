"""Typed configs: dataclasses that serialise to JSON and rebuild from it through their type hints.

A config is a dataclass deriving from ``Config``, one field per setting, each written
``name: type = default`` with a docstring line under it. ``Config.from_dict`` rebuilds nested
configs (and tuples, which JSON stores as lists) from the fields' type hints, so a new nested
config needs no registration; an unknown key is an ``UnknownFields`` error naming it.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Mapping

from aniportraitgan.errors import InputError


class UnknownFields(InputError):
    """Keys of a config dict that are no field of its dataclass."""

    def __init__(self, owner: str, names: list[str]):
        super().__init__(f"unknown {owner} fields: {names}")
        self.owner = owner
        self.names = names


def build(cls: type, data: Mapping[str, Any]) -> Any:
    """``cls(**data)`` with nested dataclasses and tuples rebuilt from ``cls``'s type hints.
    Missing keys take their defaults; unknown ones raise ``UnknownFields``."""
    if not isinstance(data, Mapping):
        raise InputError(f"{cls.__name__} must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UnknownFields(cls.__name__, unknown)
    hints = typing.get_type_hints(cls)
    return cls(**{key: _rebuild(hints[key], value) for key, value in data.items()})


def _rebuild(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):  # e.g. `float | None`: the member the value fits
        for member in typing.get_args(hint):
            if member is not type(None) and value is not None:
                return _rebuild(member, value)
        return value
    if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        return build(hint, value)
    if (hint is tuple or origin is tuple) and isinstance(value, (list, tuple)):
        return tuple(value)
    return value


class Config:
    """Base of the typed configs: ``to_dict``/``to_json`` and ``from_dict`` (see ``build``)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        return build(cls, data)
