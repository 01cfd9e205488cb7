"""The table of engines: the one place that says what each engine runs and needs.

An engine is a library family (llama.cpp, transformers, ...). Its row names the pip
distributions and import names it needs, the pip extra that installs them, the weight formats
and devices it takes, and, per task, the handler class (an import string) that implements that
task. Inspection reports the packages from here; the loader picks a handler from here by the
model's engine and tasks, so a model can only reach a handler that declares one of its tasks (a
ViT config never lands in the causal-LM handler). Tasks a model has but no row maps are detected,
not yet runnable. Importing this module imports no engine library.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from corral.tasks import Task

LLAMA = "corral.engines.llama.handler:LlamaCppHandler"
HF_LM = "corral.engines.transformers.lm:TransformersLMHandler"
HF_CLASSIFIER = "corral.engines.transformers.classify:SequenceClassifierHandler"
HF_QA = "corral.engines.transformers.qa:QuestionAnsweringHandler"
HF_SEQ2SEQ = "corral.engines.transformers.seq2seq:Seq2SeqHandler"
HF_VISION = "corral.engines.transformers.vision:VisionHandler"
HF_CAPTIONER = "corral.engines.transformers.captioner:CaptionerHandler"
HF_VISION_CHAT = "corral.engines.transformers.vlm:VisionChatHandler"
HF_TOKENS = "corral.engines.transformers.tokens:TokenClassifierHandler"
HF_AUDIO_CLASSIFIER = "corral.engines.transformers.media_classify:AudioClassifierHandler"
HF_VIDEO_CLASSIFIER = "corral.engines.transformers.media_classify:VideoClassifierHandler"
HF_IMAGE_TEXT_EMBED = "corral.engines.transformers.image_text_embed:ImageTextEmbedHandler"
SENTENCE = "corral.engines.sentence.handler:SentenceTransformersHandler"
SENTENCE_RERANK = "corral.engines.sentence.rerank:CrossEncoderHandler"
SPACY = "corral.engines.spacy.handler:SpacyHandler"
HF_ASR = "corral.engines.transformers.asr:SpeechRecognizerHandler"
FASTER_WHISPER = "corral.engines.ctranslate2.whisper:FasterWhisperHandler"
SPHINX = "corral.engines.sphinx.handler:SphinxHandler"
HF_TTS = "corral.engines.transformers.tts:TextToSpeechHandler"
PIPER = "corral.engines.piper.handler:PiperHandler"
ESPEAK = "corral.engines.espeak.handler:EspeakHandler"
DIFFUSERS = "corral.engines.diffusers.handler:DiffusersHandler"
ALL_DEVICES = ("cpu", "cuda", "mps")
TORCH_DTYPES = ("float32", "float16", "bfloat16")
# CTranslate2's compute types (which of them a device supports is checked at load)
CT2_DTYPES = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32")


@dataclass(frozen=True)
class EngineSpec:
    name: str
    packages: tuple[str, ...]  # pip distributions, as `corral inspect` reports them
    imports: tuple[str, ...]  # import names checked before a load
    extra: str  # the pip extra of corral that installs them
    formats: frozenset[str]  # weight formats it loads
    devices: tuple[str, ...] = ALL_DEVICES
    dtypes: tuple[str, ...] = ()  # what --dtype may ask for; () = the types stored in the file, no choice
    handlers: Mapping[Task, str] = field(default_factory=dict)  # task -> "module:Class"
    # a model whose tasks include all of a set is served by that set's handler, for every task of the set
    # (checked before `handlers`): e.g. an image-text chat model (chat + describe_image) is no causal LM
    together: tuple[tuple[frozenset[Task], str], ...] = ()

    def handler_for(self, tasks: list[str]) -> str | None:
        """The handler of a set in ``together`` the model's tasks include, else of the first of the
        model's tasks this engine implements."""
        have = {Task(t) for t in tasks}
        for needed, target in self.together:
            if needed <= have:
                return target
        for task in tasks:
            if (found := self.handlers.get(Task(task))) is not None:
                return found
        return None

    def served_by(self, target: str, tasks: list[str]) -> frozenset[Task]:
        """The model's tasks that ``target`` implements (for a model ``handler_for`` gave it)."""
        have = frozenset(Task(t) for t in tasks)
        for needed, joint in self.together:
            if needed <= have:
                return needed if joint == target else frozenset()
        return frozenset(t for t in have if self.handlers.get(t) == target)

    def implementations(self) -> dict[str, frozenset[Task]]:
        """Every handler of the row and the tasks it implements."""
        found: dict[str, set[Task]] = {}
        for task, target in self.handlers.items():
            found.setdefault(target, set()).add(task)
        for needed, target in self.together:
            found.setdefault(target, set()).update(needed)
        return {target: frozenset(tasks) for target, tasks in found.items()}


ENGINES: dict[str, EngineSpec] = {
    spec.name: spec for spec in (
        EngineSpec("llama_cpp", ("llama-cpp-python",), ("llama_cpp",), "llama", frozenset({"gguf"}),
                   handlers={Task.CHAT: LLAMA, Task.COMPLETE: LLAMA, Task.EMBED: LLAMA}),
        EngineSpec("transformers", ("transformers", "torch"), ("transformers", "torch"), "torch",
                   frozenset({"safetensors", "pickle"}), dtypes=TORCH_DTYPES,
                   handlers={Task.CHAT: HF_LM, Task.COMPLETE: HF_LM, Task.RERANK: HF_CLASSIFIER,
                             Task.CLASSIFY_TEXT: HF_CLASSIFIER, Task.ANSWER_QUESTION: HF_QA,
                             Task.TRANSLATE: HF_SEQ2SEQ, Task.SUMMARIZE: HF_SEQ2SEQ,
                             Task.CLASSIFY_IMAGE: HF_VISION, Task.DETECT_OBJECTS: HF_VISION,
                             Task.SEGMENT_IMAGE: HF_VISION, Task.DESCRIBE_IMAGE: HF_CAPTIONER,
                             Task.CLASSIFY_TOKENS: HF_TOKENS, Task.CLASSIFY_AUDIO: HF_AUDIO_CLASSIFIER,
                             Task.CLASSIFY_VIDEO: HF_VIDEO_CLASSIFIER, Task.TRANSCRIBE: HF_ASR, Task.SPEAK: HF_TTS},
                   together=((frozenset({Task.CHAT, Task.DESCRIBE_IMAGE}), HF_VISION_CHAT),
                             # CLIP / SigLIP: texts and images in one space (no ViT classifier head)
                             (frozenset({Task.EMBED, Task.CLASSIFY_IMAGE}), HF_IMAGE_TEXT_EMBED))),
        EngineSpec("sentence_transformers", ("sentence-transformers", "torch"), ("sentence_transformers", "torch"),
                   "torch", frozenset({"safetensors", "pickle"}), dtypes=TORCH_DTYPES,
                   handlers={Task.EMBED: SENTENCE, Task.RERANK: SENTENCE_RERANK}),
        EngineSpec("spacy", ("spacy",), ("spacy",), "nlp", frozenset({"spacy"}), devices=("cpu",),
                   handlers={Task.CLASSIFY_TOKENS: SPACY}),
        EngineSpec("faster_whisper", ("faster-whisper", "ctranslate2"), ("faster_whisper", "ctranslate2"), "whisper",
                   frozenset({"ctranslate2"}), devices=("cpu", "cuda"), dtypes=CT2_DTYPES,
                   handlers={Task.TRANSCRIBE: FASTER_WHISPER}),
        EngineSpec("pocketsphinx", ("pocketsphinx",), ("pocketsphinx",), "sphinx", frozenset({"sphinx"}),
                   devices=("cpu",), handlers={Task.TRANSCRIBE: SPHINX}),
        # Piper voices: ONNX through onnxruntime (CPU; CUDA where onnxruntime has its provider)
        EngineSpec("piper", ("piper-tts", "onnxruntime"), ("piper", "onnxruntime"), "piper", frozenset({"onnx"}),
                   devices=("cpu", "cuda"), handlers={Task.SPEAK: PIPER}),
        # the espeak-ng program (a system package), one process per request; no Python package
        EngineSpec("espeak", (), (), "audio", frozenset({"system"}), devices=("cpu",),
                   handlers={Task.SPEAK: ESPEAK}),
        EngineSpec("diffusers", ("diffusers", "transformers", "torch"), ("diffusers", "transformers", "torch"),
                   "diffusion", frozenset({"safetensors", "pickle"}), dtypes=TORCH_DTYPES,
                   handlers={Task.GENERATE_IMAGE: DIFFUSERS, Task.GENERATE_VIDEO: DIFFUSERS}),
    )
}


# handlers whose embed takes images as well as texts (EmbedImage inputs); every other embed refuses images
IMAGE_EMBEDDERS = frozenset({HF_IMAGE_TEXT_EMBED})


def embeds_images(engine: str | None, tasks: list[str], engines: Mapping[str, EngineSpec] = ENGINES) -> bool:
    """Whether a model with these inspected ``tasks`` embeds images (its handler is an image embedder)."""
    spec = engines.get(engine or "")
    return spec is not None and spec.handler_for(tasks) in IMAGE_EMBEDDERS


def all_dtypes(engines: Mapping[str, EngineSpec] | None = None) -> tuple[str, ...]:
    """Every type some engine's --dtype takes, in table order."""
    rows = (engines or ENGINES).values()
    return tuple(dict.fromkeys(d for spec in rows for d in spec.dtypes))


def check_dtype(engine: str | None, dtype: str | None, engines: Mapping[str, EngineSpec] = ENGINES) -> None:
    """A UsageError unless the engine can load weights as ``dtype`` (None and "auto" always can)."""
    if dtype in (None, "auto"):
        return
    from corral.errors import UsageError

    spec = engines.get(engine or "")
    if spec is None or not spec.dtypes:
        raise UsageError(f"the {engine} engine runs weights in the types stored in the file; --dtype does not apply",
                         "leave --dtype out for this model")
    if dtype not in spec.dtypes:
        raise UsageError(f"the {engine} engine cannot load weights as {dtype!r}",
                         f"use one of: {', '.join(spec.dtypes)}")


def engine_packages(engine: str | None) -> tuple[str, ...]:
    spec = ENGINES.get(engine or "")
    return spec.packages if spec else ()


def tasks_served(engine: str | None, tasks: list[str],
                 engines: Mapping[str, EngineSpec] = ENGINES) -> frozenset[Task]:
    """The tasks a model with these inspected ``tasks`` can run: those its handler implements
    (``engines``: the table to read; tests add rows to a copy)."""
    if engine == "remote":  # a name the router serves (models.remote): the tasks its first target serves
        return frozenset(Task(t) for t in tasks)
    spec = engines.get(engine or "")
    target = None if spec is None else spec.handler_for(tasks)
    return frozenset() if spec is None or target is None else spec.served_by(target, tasks)
