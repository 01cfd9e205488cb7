"""Bark text-to-speech (``BarkModel``: semantic, coarse and fine stages, then the EnCodec codec), one
sentence per ``generate`` call. Text goes through the model's ``BarkProcessor``; the voices are the
presets its ``speaker_embeddings_path.json`` lists (e.g. ``v2/en_speaker_6``; their files are looked
up in the model's folder, whatever the file says, transformers refuses a path that leaves it, and
the arrays load without pickle; a preset that cannot be read is a 422 naming it), plus ``default``, no
preset (Bark then picks a speaker itself, differently each time when its generation config samples).
Only a name from that list ever reaches the processor: it would read any other string as a file
path. The sample rate is the generation config's ``sample_rate`` (24 kHz for the released models).
Bark has no speaking-rate input: a speed other than 1.0 is refused (422, ``speech.fixed_pace``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from corral.engines.base import Handler
from corral.errors import InvalidModelFileError

DEFAULT_VOICE = "default"
PRESETS_FILE = "speaker_embeddings_path.json"


@dataclass
class BarkParts:
    processor: Any
    voices: list[str]
    sample_rate: int

    def speak(self, model: Any, tokenizer: Any, sentence: str, voice: str, device: str) -> Any:
        """The waveform (1-D float numpy) of one sentence in ``voice``."""
        import torch

        try:
            inputs = self.processor(sentence, voice_preset=None if voice == DEFAULT_VOICE else voice)
        except (ValueError, TypeError, OSError, KeyError) as exc:  # a preset's files missing or malformed
            raise InvalidModelFileError(f"voice preset {voice!r} cannot be read: {exc}",
                                        f"check {PRESETS_FILE} and the arrays it names, or use another voice") from exc
        history = inputs.pop("history_prompt", None)
        arguments: dict[str, Any] = {k: v.to(device) for k, v in inputs.items()}
        if history is not None:
            arguments["history_prompt"] = {k: v.to(device) for k, v in history.items()}
        with torch.inference_mode():
            audio = model.generate(**arguments)
        return audio[0].float().cpu().numpy().reshape(-1)


def load_parts(handler: Handler, model: Any) -> BarkParts:
    """The processor and voices of the Bark model in ``handler``'s folder (read offline)."""
    import transformers

    path = handler.path
    has_presets = (path / PRESETS_FILE).is_file()
    processor: Any = transformers.BarkProcessor.from_pretrained(  # type: ignore[no-untyped-call]
        str(path), local_files_only=True, speaker_embeddings_dict_path=PRESETS_FILE if has_presets else None)
    if processor.speaker_embeddings is not None:  # presets resolve inside the folder (transformers' default: /)
        processor.speaker_embeddings["repo_or_path"] = str(path)
    presets = sorted(k for k in (processor.speaker_embeddings or {}) if k != "repo_or_path")
    rate = int(getattr(model.generation_config, "sample_rate", 0)
               or getattr(model.config.codec_config, "sampling_rate", 0) or 24000)
    return BarkParts(processor, [DEFAULT_VOICE, *presets], rate)
