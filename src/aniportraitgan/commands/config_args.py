"""Command-line options read from config dataclasses: one option per field, named after it, with
the field's docstring as help (fields are written ``name: type = default`` and a docstring line);
and `--config`'s loader (a preset name or a TrainConfig JSON file)."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

from aniportraitgan.errors import InputError, UserError
from aniportraitgan.training.config import TrainConfig


def field_docs(cls: type) -> dict[str, str]:
    """{field name: the docstring under it} of a dataclass and its dataclass bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        except (OSError, TypeError):  # no source (e.g. a frozen build): options without help
            continue
        for node, doc in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
                    and isinstance(doc.value.value, str)):
                docs[node.target.id] = " ".join(doc.value.value.split())
    return docs


def _scalar(hint: Any) -> type:
    """The type an option parses to: `int`, `float`, `str`; `float | None` -> float."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(h for h in typing.get_args(hint) if h is not type(None))
    return hint


def add_field_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, names: list[str],
                      aliases: dict[str, str] | None = None, **extra: dict[str, Any]) -> None:
    """Add `--field-name` for each field in `names`: a switch for a bool field, else a value;
    an option left out keeps the config's own value. `aliases` adds an older option name per field;
    `extra[name]` passes further add_argument keywords (e.g. choices)."""
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    for name in names:
        flags = [f"--{name.replace('_', '-')}"] + ([aliases[name]] if aliases and name in aliases else [])
        hint = hints[name]
        doc = docs.get(name)
        kw: dict[str, Any] = {"dest": name, "help": doc.replace("%", "%%") if doc else None}  # argparse formats help
        if hint is bool:  # a switch turns the field on; left out, the config's own value stays
            kw.update(action="store_const", const=True, default=None)
        else:
            kw.update(type=_scalar(hint), default=None)
        kw.update(extra.get(name, {}))
        parser.add_argument(*flags, **kw)


def apply_field_options(args: argparse.Namespace, config: Any, names: list[str]) -> None:
    """Set the fields in `names` that the command line gave on `config`."""
    for name in names:
        value = getattr(args, name)
        if value is not None:
            setattr(config, name, value)


def load_train_config(name: str) -> TrainConfig:
    """`--config`: a preset name, or a JSON file written by TrainConfig.to_json (a run's config.json)."""
    if name.endswith(".json") or Path(name).is_file():
        path = Path(name)
        if not path.is_file():
            raise UserError(f"--config {path} does not exist")
        try:
            cfg = TrainConfig.from_json(path.read_bytes().decode())
            cfg.validate()
        except (InputError, UnicodeDecodeError) as exc:  # name the file: the message alone does not
            raise UserError(f"--config {path}: {exc}") from None
        return cfg
    return TrainConfig.preset(name)
