"""argparse options generated from a config dataclass, so a setting is declared once (its field).

``add_field_options(parser, Config, exclude=...)`` adds ``--<field>`` for every field with a
default: its type from the annotation (bools parsed strictly, ``X | None`` accepting ``none``,
``tuple[X, ...]`` parsing its items as X), its default from the field, its help from
``field.metadata["help"]`` when present. ``field.metadata["cli"]`` may respell the option
(``flags``, e.g. the authors' ``--no-pretrained``), say what its default means (``shown``, e.g.
"the recipe's" for None) or pass argparse keywords (``choices``, ``nargs``, ``metavar``, ``action``).
``field_values(args, names)`` collects the parsed values back as keyword arguments.
"""
from __future__ import annotations

import argparse
import typing
from dataclasses import MISSING, fields
from typing import Any

from patchrefinenet.cli.common import str2bool


def _parser_for(annotation: Any) -> tuple[Any, bool]:
    """(callable that parses one command-line string, whether None is allowed) for a field type."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    optional = "None" in text
    base = text.replace("| None", "").replace("None |", "").strip()
    if base.startswith("tuple["):  # the items of an nargs option
        base = base[len("tuple["):].split(",")[0].strip(" ]")
    kind = {"bool": str2bool, "int": int, "float": float, "str": str}.get(base, str)

    def parse(value: str) -> Any:
        if optional and value.strip().lower() == "none":
            return None
        return kind(value)

    parse.__name__ = base  # argparse names the type in its error messages
    return parse, optional


def add_field_options(parser: argparse.ArgumentParser | Any, config_cls: type, exclude: set[str] = frozenset(),
                      title: str | None = None, defaults: dict[str, tuple[Any, str]] | None = None) -> list[str]:
    """Add one ``--name`` option per defaulted field of ``config_cls`` not in ``exclude``; return the names
    (including fields whose option the parser already has: they share that option's value).

    ``defaults`` overrides a field's command-line default: ``{"batch_size": (None, "the dataset
    config's")}`` (the caller then fills the value in). Boolean options also work bare (``--resume``).
    """
    group = parser.add_argument_group(title) if title else parser
    hints = typing.get_type_hints(config_cls) if not any(isinstance(f.type, str) for f in fields(config_cls)) else {}
    names = []
    for f in fields(config_cls):
        if f.name in exclude or (f.default is MISSING and f.default_factory is MISSING):
            continue
        names.append(f.name)
        if f"--{f.name}" in getattr(parser, "_option_string_actions", {}):  # the command already has it
            continue
        parse, _ = _parser_for(hints.get(f.name, f.type))
        default = f.default if f.default is not MISSING else f.default_factory()
        shown = default
        if defaults and f.name in defaults:
            default, shown = defaults[f.name]
        help_text = f.metadata.get("help", f.name.replace("_", " "))
        cli = dict(f.metadata.get("cli") or {})
        flags = cli.pop("flags", (f"--{f.name}",))
        shown = cli.pop("shown", shown)
        if "action" in cli:  # e.g. store_false: a bare flag, no value to parse
            group.add_argument(*flags, dest=f.name, default=default, help=help_text, **cli)
            continue
        kwargs = {"nargs": "?", "const": True} if parse.__name__ == "bool" else {}
        if "choices" in cli:  # the choices are the values ("none" may be one of them); argparse names them
            parse, kwargs["metavar"] = str, None
        else:
            kwargs["metavar"] = f.name.upper()
        kwargs.update(cli)
        group.add_argument(*flags, dest=f.name, type=parse, default=default, help=f"{help_text} (default: {shown})",
                           **kwargs)
    return names


def field_values(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The parsed values of the options ``names`` as keyword arguments."""
    return {n: getattr(args, n) for n in names}
