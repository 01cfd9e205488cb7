"""SpeechT5 text-to-speech: the two pieces a ``SpeechT5ForTextToSpeech`` needs besides its own weights,
found in the model's folder, and one sentence spoken with them.

- The **vocoder** that turns its mel spectrogram into a waveform: a ``SpeechT5HifiGan`` model (such as
  ``microsoft/speecht5_hifigan``) in the ``vocoder/`` subfolder. Loaded with the same gates as the
  model (safetensors unless pickle is allowed, no remote code unless trusted), on the same device.
- The **voices**: speaker embeddings (x-vectors of ``speaker_embedding_dim`` floats), one ``.npy``
  file per voice in ``speakers/``, the file's stem the voice's name (read with ``allow_pickle=False``).
  A folder without any has the one voice ``default``, an all-zero embedding (a neutral speaker).

The sample rate is the vocoder's ``sampling_rate``. SpeechT5 has no speaking-rate input: a speed other
than 1.0 is refused (422) rather than ignored (``speech.fixed_pace``). Its decoder's pre-net applies
dropout at inference (as the paper does), so the same text gives slightly different audio each time
unless the config's ``speech_decoder_prenet_dropout`` is 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.devices import torch_dtype
from corral.engines.base import Handler
from corral.errors import InvalidModelFileError
from corral.models.safety import safetensors_rule

VOCODER_DIR = "vocoder"
SPEAKERS_DIR = "speakers"
DEFAULT_VOICE = "default"


@dataclass
class SpeechT5Parts:
    vocoder: Any
    speakers: dict[str, Any]  # voice name -> a (1, dim) float tensor on the model's device
    sample_rate: int

    @property
    def voices(self) -> list[str]:
        return list(self.speakers)

    def speak(self, model: Any, tokenizer: Any, sentence: str, voice: str, device: str) -> Any:
        """The waveform (1-D float numpy) of one sentence in ``voice``; None when the tokenizer
        knows none of its characters."""
        import torch

        input_ids = tokenizer(sentence, return_tensors="pt")["input_ids"].to(device)
        if input_ids.shape[-1] == 0:
            return None
        with torch.inference_mode():
            waveform = model.generate_speech(input_ids, self.speakers[voice], vocoder=self.vocoder)
        return waveform.float().cpu().numpy().reshape(-1)


def load_parts(handler: Handler, model: Any, device: str) -> SpeechT5Parts:
    """The vocoder and voices of the SpeechT5 model in ``handler``'s folder, on ``device``."""
    path = Path(handler.path)
    vocoder = load_vocoder(handler, path / VOCODER_DIR, device)
    dim = int(model.config.speaker_embedding_dim)
    dtype = next(model.parameters()).dtype
    speakers = {name: vector.to(device=device, dtype=dtype) for name, vector in read_speakers(path / SPEAKERS_DIR, dim)}
    if not speakers:
        import torch

        speakers = {DEFAULT_VOICE: torch.zeros(1, dim, device=device, dtype=dtype)}
    rate = int(getattr(vocoder.config, "sampling_rate", 0) or 16000)
    return SpeechT5Parts(vocoder, speakers, rate)


def load_vocoder(handler: Handler, folder: Path, device: str) -> Any:
    import transformers

    if not (folder / "config.json").is_file():
        raise InvalidModelFileError(
            f"this SpeechT5 model has no vocoder: {folder} is missing",
            f"put a SpeechT5HifiGan model (config.json and model.safetensors, e.g. from microsoft/speecht5_hifigan) "
            f"in {folder}")
    trust = handler.options.trust
    vocoder: Any = transformers.SpeechT5HifiGan.from_pretrained(
        str(folder), use_safetensors=safetensors_rule(trust),
        dtype=torch_dtype(handler.options.dtype, device, handler.info.dtype))
    vocoder.to(device)
    vocoder.eval()
    return vocoder


def read_speakers(folder: Path, dim: int) -> list[tuple[str, Any]]:
    """(name, (1, dim) float32 tensor) for each ``*.npy`` in ``folder``, sorted by name; a file that is
    not a ``dim``-float array is a 422 naming it."""
    import numpy as np
    import torch

    found = []
    for file in sorted(folder.glob("*.npy")) if folder.is_dir() else []:
        try:
            array = np.load(file, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InvalidModelFileError(f"speaker embedding {file.name} cannot be read: {exc}",
                                        "save each voice with numpy.save(name, vector) (no pickled objects)") from exc
        if array.size != dim or not np.issubdtype(array.dtype, np.floating):
            raise InvalidModelFileError(
                f"speaker embedding {file.name} holds {array.size} {array.dtype} values; the model takes {dim} floats",
                "each file in speakers/ is one x-vector of the model's speaker_embedding_dim floats")
        found.append((file.stem, torch.from_numpy(array.astype(np.float32).reshape(1, dim))))
    return found
