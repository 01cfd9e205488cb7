"""Text-to-waveform models through transformers (``AutoModelForTextToWaveform``): VITS and MMS-TTS
(``VitsModel`` with its ``VitsTokenizer``). The text is spoken sentence by sentence, each sentence
one forward pass and one streamed chunk, at the config's ``sampling_rate``. Speed is the forward's
``speaking_rate`` (the config's own times the speed) where the model takes one; a model with
several speakers (``num_speakers``) has the voices ``0`` .. ``N-1``, a single-speaker one the one
voice ``default``. VITS samples noise (``noise_scale``, ``noise_scale_duration``): the same text
gives slightly different audio each time unless the config sets them to 0.

SpeechT5 (``SpeechT5ForTextToSpeech``, loaded through ``AutoModelForTextToSpectrogram``) speaks
through its vocoder and speaker embeddings, found in its folder (:mod:`.speecht5`); Bark
(``BarkModel``) through its processor and voice presets (:mod:`.bark`)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any, Protocol

from corral.engines.transformers import bark, speecht5
from corral.engines.transformers.loading import TorchTaskHandler
from corral.errors import UnsupportedTaskError
from corral.speech import choose_voice, fixed_pace, last_chunk, sentences
from corral.tasks import AudioChunk, SpeakRequest

RUNS = ("vits", "speecht5", "bark")  # vits: the forward returns the waveform; the others: see their modules
FAMILIES = {"speecht5": "SpeechT5", "bark": "Bark"}


class Voicebox(Protocol):
    """What SpeechT5 and Bark have in common: voices, a rate, and one sentence spoken at a time."""

    @property
    def voices(self) -> list[str]: ...

    @property
    def sample_rate(self) -> int: ...

    def speak(self, model: Any, tokenizer: Any, sentence: str, voice: str, device: str) -> Any: ...


class TextToSpeechHandler(TorchTaskHandler):
    auto_class = "AutoModelForTextToWaveform"

    sample_rate = 16000
    voices: list[str]
    takes_rate = False
    takes_speaker = False
    voicebox: Voicebox | None = None

    def model_class(self) -> str:
        return "AutoModelForTextToSpectrogram" if self.info.model_type == "speecht5" else self.auto_class

    def loaded(self) -> None:
        config = self.model.config
        if config.model_type not in RUNS:
            raise UnsupportedTaskError(f"corral speaks with {', '.join(RUNS)} models through transformers, "
                                       f"not {config.model_type} yet", "use a VITS / MMS-TTS model or a Piper voice")
        if config.model_type == "speecht5":
            self.voicebox = speecht5.load_parts(self, self.model, self.device)
        elif config.model_type == "bark":
            self.voicebox = bark.load_parts(self, self.model)
        if self.voicebox is not None:
            self.sample_rate, self.voices = self.voicebox.sample_rate, self.voicebox.voices
            return
        self.sample_rate = int(getattr(config, "sampling_rate", 0) or 16000)
        count = int(getattr(config, "num_speakers", 1) or 1)
        self.voices = [str(i) for i in range(count)] if count > 1 else ["default"]
        accepted = inspect.signature(self.model.forward).parameters
        self.takes_rate, self.takes_speaker = "speaking_rate" in accepted, "speaker_id" in accepted and count > 1

    def options_for(self, request: SpeakRequest) -> dict[str, Any]:
        """The forward's keyword arguments for the request's voice and speed."""
        voice = choose_voice(request.voice, self.voices, self.voices[0])
        kwargs: dict[str, Any] = {}
        if self.takes_speaker:
            kwargs["speaker_id"] = int(voice)
        if self.takes_rate:
            kwargs["speaking_rate"] = float(getattr(self.model.config, "speaking_rate", 1.0) or 1.0) * request.speed
        return kwargs

    def speak(self, request: SpeakRequest) -> Iterator[AudioChunk]:
        if self.voicebox is not None:
            yield from self._speak_with(self.voicebox, request)
            return
        import torch

        kwargs = self.options_for(request)
        for sentence in sentences(request.text):
            inputs = self.tokenizer(sentence, return_tensors="pt").to(self.device)
            if inputs["input_ids"].shape[-1] == 0:
                continue  # nothing the tokenizer knows (e.g. a script the model does not read)
            with torch.inference_mode():
                waveform = self.model(**inputs, **kwargs).waveform
            yield AudioChunk(waveform[0].float().cpu().numpy(), self.sample_rate)
        yield last_chunk(self.sample_rate, request.text)

    def _speak_with(self, voicebox: Voicebox, request: SpeakRequest) -> Iterator[AudioChunk]:
        fixed_pace(request.speed, FAMILIES[self.model.config.model_type])
        voice = choose_voice(request.voice, self.voices, self.voices[0])
        for sentence in sentences(request.text):
            samples = voicebox.speak(self.model, self.tokenizer, sentence, voice, self.device)
            if samples is not None:
                yield AudioChunk(samples, self.sample_rate)
        yield last_chunk(self.sample_rate, request.text)

    def unload(self) -> None:
        super().unload()
        self.voicebox = None
