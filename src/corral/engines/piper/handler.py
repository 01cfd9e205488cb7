"""Piper voices (``NAME.onnx`` + ``NAME.onnx.json``) through piper-tts's public API: the voice's
config read with ``PiperConfig.from_dict``, the ONNX session built here (so corral picks the
onnxruntime providers: CUDA first for ``--device cuda`` or auto when onnxruntime has it, the CPU
with a warning for an explicit cuda without it; the CPU always as the fallback) and handed to
``PiperVoice``; ``PiperVoice.synthesize`` yields one chunk per sentence, streamed as it comes.
Speed is Piper's ``length_scale`` (the voice's own divided by the speed); a multi-speaker voice
speaks as the speaker its ``speaker_id_map`` names."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from corral.devices import check_device
from corral.engines.base import Handler
from corral.errors import UsageError
from corral.models.piper_voice import config_of, speakers, voice_file
from corral.speech import choose_voice, last_chunk
from corral.tasks import AudioChunk, SpeakRequest

log = logging.getLogger("corral.engines.piper")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def providers_for(device: str | None, available: list[str]) -> list[Any]:
    """onnxruntime providers for ``device``: CUDA first for cuda, cuda:N or auto (None) when
    onnxruntime has its provider (cuda without it: the CPU, with a warning); the CPU always."""
    device = check_device(device)
    base, _, index = (device or "auto").partition(":")
    if base == "cpu":
        return [CPU]
    if base not in ("cuda", "auto"):
        raise UsageError(f"the piper engine runs on the CPU or CUDA, not {device!r}", "use --device cpu or cuda")
    if CUDA not in available:
        if base == "cuda":
            log.warning("--device %s: this onnxruntime has no CUDA provider (it has: %s); the Piper voice runs "
                        "on the CPU (install onnxruntime-gpu in place of onnxruntime for CUDA)", device,
                        ", ".join(available))
        return [CPU]
    return [(CUDA, {"device_id": int(index or 0), "cudnn_conv_algo_search": "HEURISTIC"}), CPU]


class PiperHandler(Handler):
    engine = "piper"

    voice: Any = None
    voices: list[str]
    default_voice = "default"
    speaker_ids: dict[str, int]

    def load(self) -> None:
        import onnxruntime

        from piper import PiperConfig, PiperVoice

        onnx = voice_file(self.path)
        config = json.loads(config_of(onnx).read_text(encoding="utf-8"))
        options = onnxruntime.SessionOptions()
        if self.options.threads:
            options.intra_op_num_threads = self.options.threads
        providers = providers_for(self.options.device, onnxruntime.get_available_providers())
        session = onnxruntime.InferenceSession(str(onnx), sess_options=options, providers=providers)
        self.voice = PiperVoice(session=session, config=PiperConfig.from_dict(config))
        self.voices, self.default_voice = speakers(config)
        ids = config.get("speaker_id_map") or {}
        self.speaker_ids = {str(k): int(v) for k, v in ids.items()} if isinstance(ids, dict) else {}

    def unload(self) -> None:
        self.voice = None

    def speak(self, request: SpeakRequest) -> Iterator[AudioChunk]:
        from piper import SynthesisConfig

        voice = choose_voice(request.voice, self.voices, self.default_voice)
        config = self.voice.config
        settings = SynthesisConfig(speaker_id=self.speaker_ids.get(voice),
                                   length_scale=config.length_scale / request.speed)
        for chunk in self.voice.synthesize(request.text, syn_config=settings):
            yield AudioChunk(chunk.audio_float_array, int(chunk.sample_rate))
        yield last_chunk(int(config.sample_rate), request.text)
