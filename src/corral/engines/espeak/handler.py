"""eSpeak NG, the program (Debian's ``espeak-ng``), as the built-in model ``espeak-ng``.

Each request runs one process: an argument list (never a shell), the text on stdin (``--stdin``:
read whole, so no text is ever taken for an option), ``--stdout`` for a WAV written as it is
synthesised, read block by block (``corral.audio.wav_blocks``) and streamed. A deadline kills a
process that runs too long; closing the stream kills it at once. Voices are the languages
``espeak-ng --voices`` lists and the languages they also answer to (``en-us``, ``fr``, ...; the
default ``en-us``), optionally with a
variant from ``espeak-ng --voices=variant`` (``en-us+f3``); speed is ``-s``, words per minute:
175 (espeak-ng's own default) times the speed, which espeak-ng keeps within 80 to 450."""

from __future__ import annotations

import subprocess
import tempfile
import threading
from collections.abc import Iterator
from typing import IO

from corral.audio import wav_blocks
from corral.engines.base import Handler
from corral.errors import CorralError
from corral.media import BadMediaError
from corral.speech import SpeechInputError, choose_voice, last_chunk
from corral.tasks import AudioChunk, SpeakRequest

WORDS_PER_MINUTE = 175
LIST_TIMEOUT_S = 20.0
DEFAULT_VOICE = "en-us"
DEFAULT_RATE = 22050


class EspeakError(CorralError):
    """The program failed or ran past its deadline."""

    http_status = 500


def deadline_for(text: str) -> float:
    """Seconds one request may run: espeak-ng speaks far faster than real time."""
    return 30.0 + len(text) / 20


def listed(program: str, *args: str) -> list[tuple[str, str, str, list[str]]]:
    """(language, voice name, file, other languages) of each row ``espeak-ng --voices[=variant]``
    prints (other languages: the ``(en 2)`` cells, a language the voice also answers to)."""
    try:
        done = subprocess.run([program, *args], capture_output=True, text=True, timeout=LIST_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EspeakError(f"could not run {program} {' '.join(args)}: {exc}") from None
    rows = []
    for line in done.stdout.splitlines()[1:]:  # the first line is the header
        cells = line.split()
        if len(cells) >= 5:
            others = [c.strip("(") for c in " ".join(cells[5:]).split() if c.startswith("(")]
            rows.append((cells[1], cells[3], cells[4], others))
    return rows


class EspeakHandler(Handler):
    engine = "espeak"

    program = ""
    voices: list[str]
    variants: dict[str, str]  # lower-cased name -> the name espeak-ng takes after '+'
    default_voice = DEFAULT_VOICE

    def load(self) -> None:
        self.program = str(self.path)
        self.voices = sorted({code for language, _, _, others in listed(self.program, "--voices")
                              for code in (language, *others)})
        if not self.voices:
            raise EspeakError(f"{self.program} --voices listed no voice", "reinstall espeak-ng (and espeak-ng-data)")
        self.variants = {}
        for _, name, file, _ in listed(self.program, "--voices=variant"):
            variant = file.rsplit("/", 1)[-1]
            self.variants.setdefault(name.lower(), variant)
            self.variants.setdefault(variant.lower(), variant)
        if DEFAULT_VOICE not in self.voices:
            self.default_voice = self.voices[0]

    def voice_of(self, requested: str | None) -> str:
        """The -v argument for ``requested``: a language, optionally ``+variant``."""
        base, plus, variant = (requested or "").partition("+")
        language = choose_voice(base or None, self.voices, self.default_voice)
        if not plus:
            return language
        found = self.variants.get(variant.lower())
        if found is None:
            raise SpeechInputError(f"espeak-ng has no voice variant {variant!r}; its variants: "
                                   f"{', '.join(sorted(set(self.variants.values()), key=str.lower))}",
                                   "write LANGUAGE+VARIANT, e.g. en-us+f3")
        return f"{language}+{found}"

    def speak(self, request: SpeakRequest) -> Iterator[AudioChunk]:
        voice = self.voice_of(request.voice)
        wpm = round(WORDS_PER_MINUTE * request.speed)
        argv = [self.program, "--stdout", "--stdin", "-b", "1", "-v", voice, "-s", str(wpm)]
        with tempfile.TemporaryFile() as errors:
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors)
            except OSError as exc:
                raise EspeakError(f"could not start {self.program}: {exc}") from None
            expired = threading.Event()

            def stop() -> None:
                expired.set()
                proc.kill()

            timer = threading.Timer(deadline_for(request.text), stop)
            timer.daemon = True
            timer.start()
            try:
                yield from self._stream(proc, request.text, expired, errors)
            finally:  # a closed stream (client gone) kills the process at once
                timer.cancel()
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                for pipe in (proc.stdin, proc.stdout):
                    if pipe is not None:
                        pipe.close()

    def _stream(self, proc: subprocess.Popen[bytes], text: str, expired: threading.Event,
                errors: IO[bytes]) -> Iterator[AudioChunk]:
        assert proc.stdin is not None and proc.stdout is not None
        rate = DEFAULT_RATE
        try:
            proc.stdin.write(text.encode("utf-8"))
            proc.stdin.close()
            for block in wav_blocks(proc.stdout):
                rate = block.sample_rate
                yield AudioChunk(block.samples, rate)
        except (BrokenPipeError, BadMediaError):
            pass  # the process ended early: its exit status and stderr say why
        code = proc.wait()
        if expired.is_set():
            raise EspeakError(f"espeak-ng took longer than {deadline_for(text):.0f} s and was stopped")
        if code != 0:
            errors.seek(0)
            said = errors.read(2000).decode("utf-8", "replace").strip().splitlines()
            raise EspeakError(f"espeak-ng failed (exit status {code}): {said[0] if said else 'no message'}")
        yield last_chunk(rate, text)

