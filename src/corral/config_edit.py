"""Edits to the config file that keep what the user wrote there (comments, order, formatting): add,
replace or remove one ``[aliases.NAME]`` table (``corral create`` / ``corral rm``). The new file is
checked against the settings schema before it replaces the old one, written atomically (a temp
file, fsync, rename), and keeps the old file's permissions."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any

from corral.errors import ConfigError, ConflictError


def _document(path: Path) -> Any:
    import tomlkit

    if not path.is_file():
        return tomlkit.document()
    try:
        return tomlkit.parse(path.read_text(encoding="utf-8"))
    except (tomlkit.exceptions.ParseError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}",
                          "fix it first (`corral config validate` lists the problems)") from None


def _write(path: Path, document: Any) -> None:
    """Check the edited config as corral will read it, then put it in place atomically."""
    from pydantic import ValidationError

    from corral.config import Settings
    from corral.files import write_atomically

    text = document.as_string()
    try:
        Settings.model_validate({"data_dir": ".", "config_path": str(path),
                                 **{k: v for k, v in tomllib.loads(text).items() if k in Settings.model_fields}})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ConfigError(f"the config would not be valid: {where}: {first.get('msg')}",
                          "check the values given") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o600
    write_atomically(path, [text.encode()], suffix=".tmp")
    os.chmod(path, mode)


def add_alias(path: Path, name: str, values: dict[str, Any], *, replace: bool = False) -> None:
    """Write ``[aliases.NAME]`` with ``values``; an alias of that name already there is a 409
    unless ``replace``."""
    import tomlkit

    document = _document(path)
    aliases = document.get("aliases")
    if aliases is None:
        aliases = tomlkit.table(is_super_table=True)
        document["aliases"] = aliases
    if name in aliases:
        if not replace:
            raise ConflictError(f"the config already has an alias {name!r} ({path})",
                                "pass --force to replace it, or choose another name")
        del aliases[name]
    table = tomlkit.table()
    for key, value in values.items():
        table[key] = value
    aliases[name] = table
    _write(path, document)


def remove_alias(path: Path, name: str) -> bool:
    """Remove the alias ``name`` from the config; False when the config has none of that name."""
    document = _document(path)
    aliases = document.get("aliases")
    if aliases is None or name not in aliases:
        return False
    del aliases[name]
    _write(path, document)
    return True
