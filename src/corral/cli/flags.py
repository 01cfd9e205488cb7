"""CLI flags generated from the settings schema (:mod:`corral.config`), so no setting is
declared twice. A flag's name, help, type and repeatability come from its field; a flag left out
leaves the setting to the environment, the config file or the default (the precedence
:func:`corral.config.load_settings` applies)."""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any

from pydantic.fields import FieldInfo

from corral.config import SECTIONS

_DEST = "setting:{section}:{name}"


def _is_list(info: FieldInfo) -> bool:
    return typing.get_origin(info.annotation) is list or (
        typing.get_origin(info.annotation) is typing.Annotated
        and typing.get_origin(typing.get_args(info.annotation)[0]) is list)


def _base(annotation: Any) -> Any:
    """int from ``int``, ``int | None`` or ``Annotated[int, ...]``."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _base(typing.get_args(annotation)[0])
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return _base(next(a for a in typing.get_args(annotation) if a is not type(None)))
    return annotation


def flag_of(section: str, name: str, info: FieldInfo) -> str:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    flag = extra.get("flag")
    return flag if isinstance(flag, str) else "--" + name.replace("_", "-")


def add_setting_flags(parser: argparse.ArgumentParser, *sections: str) -> None:
    """One flag per field of each named section. Values stay strings: the schema parses them."""
    for section in sections:
        for name, info in SECTIONS[section].model_fields.items():
            dest = _DEST.format(section=section, name=name)
            flag, help_text = flag_of(section, name, info), info.description or ""
            metavar = flag.lstrip("-").upper().replace("-", "_")
            if _base(info.annotation) is bool:
                parser.add_argument(flag, dest=dest, action="store_const", const=True, default=None,
                                    help=help_text)
            elif _is_list(info):
                parser.add_argument(flag, dest=dest, action="append", default=None, metavar=metavar,
                                    help=help_text)
            else:
                parser.add_argument(flag, dest=dest, default=None, metavar=metavar, help=help_text)


def setting_flags(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The settings given as flags: {section: {field: value}}, only those the user passed."""
    given: dict[str, dict[str, Any]] = {}
    for dest, value in vars(args).items():
        if dest.startswith("setting:") and value is not None:
            _, section, name = dest.split(":", 2)
            given.setdefault(section, {})[name] = value
    return given
