"""Presets: a name that stands for a model plus defaults for its chat requests (a system prompt,
sampling, a response format), as an Ollama Modelfile's ``SYSTEM`` and ``PARAMETER`` lines do.

Two kinds, both found by :func:`find_preset` and applied by :func:`apply_preset`:

- a config alias with preset fields (``[aliases.coder]`` with ``targets``, ``system``,
  ``temperature``, ...; written by ``corral create``): its name routes as any alias does;
- a built-in mode, ``MODEL@MODE`` for any chat model (``smollm2@code``): :data:`MODES`.

A request's own values win: the system prompt applies only to a conversation with no system
message, a sampling default only to a field the caller did not set (``Sampling.given``), the
response format only to a request without one. Chat takes all of it, completion the sampling; a
mode on any other task is a 400. Pure: no I/O, no runtime."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from corral.errors import ModelNotFoundError, UnsupportedTaskError
from corral.task_types import ChatRequest, CompletionRequest, Message

if TYPE_CHECKING:
    from corral.config import Settings
    from corral.targets import AliasSettings

SAMPLING_FIELDS = ("temperature", "top_p", "max_tokens", "stop", "seed", "top_k")
PRESET_FIELDS = ("system", *SAMPLING_FIELDS, "response_format")


@dataclass(frozen=True)
class Preset:
    """Defaults for a model's chat and completion requests."""

    name: str
    system: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)  # Sampling field -> value (stop as a tuple)
    json_schema: dict[str, Any] | None = None  # the response format, as the schema it constrains to
    summary: str = ""  # what a built-in mode is for (corral list, the README)

    @classmethod
    def of_alias(cls, name: str, alias: AliasSettings) -> Preset | None:
        """The preset an alias table defines, or None when it sets no preset field."""
        values = {f: getattr(alias, f) for f in SAMPLING_FIELDS if getattr(alias, f) is not None}
        if "stop" in values:
            values["stop"] = tuple(values["stop"])
        schema = schema_of(alias.response_format) if alias.response_format is not None else None
        if alias.system is None and not values and schema is None:
            return None
        return cls(name, alias.system, values, schema)


def schema_of(response_format: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI ``response_format`` (``{"type": "json_object"}`` or ``{"type": "json_schema",
    "json_schema": {"schema": ...}}``) as the JSON schema generation is constrained to."""
    kind = response_format.get("type")
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return schema if isinstance(schema, dict) and schema else {"type": "object"}
    raise ValueError('response_format is {"type": "json_object"} or {"type": "json_schema", "json_schema": '
                     '{"schema": {...}}}')


def _mode(name: str, summary: str, system: str, **sampling: Any) -> Preset:
    return Preset(name, system, sampling, None, summary)


MODES: dict[str, Preset] = {m.name: m for m in (
    _mode("chat", "a friendly, balanced assistant",
          "You are a helpful, friendly assistant. Answer clearly and concisely, and ask when a request is "
          "ambiguous.", temperature=0.7, top_p=0.95),
    _mode("instruct", "follows instructions exactly, no chatter",
          "Follow the user's instructions exactly. Do only what is asked, in the format asked, without "
          "preamble or commentary.", temperature=0.3, top_p=0.9),
    _mode("creative", "stories, ideas, varied wording",
          "You are a creative writer. Be imaginative and vivid, vary your wording, and surprise the reader "
          "while staying on the user's topic.", temperature=1.0, top_p=0.98),
    _mode("code", "programming: correct, runnable code",
          "You are an expert programmer. Answer with correct, idiomatic, runnable code in fenced code blocks, "
          "then explain briefly. Say so when something is uncertain.", temperature=0.2, top_p=0.9),
    _mode("analyze", "careful step-by-step reasoning",
          "You are a careful analyst. Reason step by step, state your assumptions, weigh the evidence, and end "
          "with a clear conclusion.", temperature=0.3, top_p=0.9),
    _mode("translate", "translation only",
          "You are a translator. Translate the user's text into the language they ask for (English when they "
          "name none), keeping its meaning, tone and formatting. Output only the translation.",
          temperature=0.0),
    _mode("summarize", "short faithful summaries",
          "Summarize the user's text faithfully and concisely: the key points only, no new facts, in the "
          "text's language.", temperature=0.2, top_p=0.9),
)}


def split_mode(name: str) -> tuple[str, str] | None:
    """(model, mode) for ``MODEL@MODE`` where MODE is a built-in mode's name or looks like one (letters
    only, no '/' after the '@': ``org/repo@v1.0`` stays a revision); ``hf:`` references never split."""
    if name.startswith("hf:"):
        return None
    model, at, mode = name.rpartition("@")
    if not at or not model or not mode.isalpha() or ("/" in model and mode not in MODES):
        return None
    return model, mode


def without_mode(name: str) -> str:
    """``name`` without a built-in mode's ``@MODE`` (what name checks look at)."""
    split = split_mode(name)
    return split[0] if split is not None and split[1].lower() in MODES else name


def find_preset(settings: Settings, name: str) -> tuple[str, Preset] | None:
    """(the name to route, the preset) when ``name`` is a preset, else None; an unknown mode is a 404
    listing the modes."""
    split = split_mode(name)
    if split is not None:
        model, mode = split
        preset = MODES.get(mode.lower())
        if preset is None:
            raise ModelNotFoundError(f"{name[:120]!r}: corral has no mode {mode[:40]!r}",
                                     "modes: " + ", ".join(f"{model[:80]}@{m}" for m in MODES))
        return model, preset
    alias = settings.aliases.get(name)
    preset = Preset.of_alias(name, alias) if alias is not None else None
    return None if preset is None else (name, preset)


def apply_preset(preset: Preset, request: Any, name: str, *, mode: bool) -> Any:
    """``request`` with the preset's defaults where the caller set nothing. A built-in ``mode`` on a
    request that is neither chat nor completion is a 400; a config preset leaves such requests alone."""
    if isinstance(request, ChatRequest):
        messages = request.messages
        if preset.system and not any(m.role == "system" for m in messages):
            messages = (Message("system", preset.system), *messages)
        schema = request.json_schema if request.json_schema is not None else preset.json_schema
        return replace(request, messages=messages, sampling=_sampling(preset, request.sampling), json_schema=schema)
    if isinstance(request, CompletionRequest):
        return replace(request, sampling=_sampling(preset, request.sampling))
    if mode:
        raise UnsupportedTaskError(f"{name[:120]!r}: a mode applies to chat and completion requests only",
                                   f"ask {name.rpartition('@')[0][:80]} without '@{name.rpartition('@')[2][:40]}'")
    return request


def _sampling(preset: Preset, sampling: Any) -> Any:
    """The preset's values for the fields the caller did not set; those count as set from now on, so a
    preset applied after this one (an alias behind a mode) does not override them."""
    filled = {f: v for f, v in preset.sampling.items() if f not in sampling.given}
    return replace(sampling, **filled, given=sampling.given | frozenset(filled)) if filled else sampling
