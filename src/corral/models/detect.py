"""Tables that map what a model's files say to the tasks it serves and the engine that runs it.

Pure data and lookups: no file access here (see inspect.py), so every rule is easy to read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from corral.tasks import Task

# README front-matter pipeline_tag -> tasks
PIPELINE_TAGS: dict[str, tuple[Task, ...]] = {
    "text-generation": (Task.COMPLETE,),
    "text2text-generation": (Task.TRANSLATE, Task.SUMMARIZE),
    "translation": (Task.TRANSLATE,),
    "summarization": (Task.SUMMARIZE,),
    "text-classification": (Task.CLASSIFY_TEXT,),
    "token-classification": (Task.CLASSIFY_TOKENS,),
    "feature-extraction": (Task.EMBED,),
    "sentence-similarity": (Task.EMBED,),
    "text-ranking": (Task.RERANK,),
    "question-answering": (Task.ANSWER_QUESTION,),
    "image-classification": (Task.CLASSIFY_IMAGE,),
    "zero-shot-image-classification": (Task.EMBED, Task.CLASSIFY_IMAGE),  # CLIP-like: images and texts in one space
    "object-detection": (Task.DETECT_OBJECTS,),
    "image-segmentation": (Task.SEGMENT_IMAGE,),
    "text-to-image": (Task.GENERATE_IMAGE,),
    "image-text-to-text": (Task.DESCRIBE_IMAGE, Task.CHAT),
    "visual-question-answering": (Task.DESCRIBE_IMAGE,),
    "automatic-speech-recognition": (Task.TRANSCRIBE,),
    "text-to-speech": (Task.SPEAK,),
    "text-to-audio": (Task.SPEAK,),
    "audio-classification": (Task.CLASSIFY_AUDIO,),
    "video-classification": (Task.CLASSIFY_VIDEO,),
    "text-to-video": (Task.GENERATE_VIDEO,),
}

# Architecture-name suffix -> tasks (checked in order; first match wins)
ARCH_SUFFIXES: tuple[tuple[str, tuple[Task, ...]], ...] = (
    ("ForCausalLM", (Task.COMPLETE,)),
    ("LMHeadModel", (Task.COMPLETE,)),
    ("ForSequenceClassification", (Task.CLASSIFY_TEXT,)),
    ("ForTokenClassification", (Task.CLASSIFY_TOKENS,)),
    ("ForQuestionAnswering", (Task.ANSWER_QUESTION,)),
    ("ForSpeechSeq2Seq", (Task.TRANSCRIBE,)),
    ("ForCTC", (Task.TRANSCRIBE,)),
    ("ForImageClassification", (Task.CLASSIFY_IMAGE,)),
    ("ForObjectDetection", (Task.DETECT_OBJECTS,)),
    ("ForSemanticSegmentation", (Task.SEGMENT_IMAGE,)),
    ("ForInstanceSegmentation", (Task.SEGMENT_IMAGE,)),
    ("ForUniversalSegmentation", (Task.SEGMENT_IMAGE,)),
    ("DetrForSegmentation", (Task.SEGMENT_IMAGE,)),  # DETR's panoptic head
    ("ForAudioClassification", (Task.CLASSIFY_AUDIO,)),
    ("ForVideoClassification", (Task.CLASSIFY_VIDEO,)),
    ("ForTextToSpeech", (Task.SPEAK,)),  # SpeechT5 (with its vocoder: engines/transformers/speecht5.py)
    ("ForTextToWaveform", (Task.SPEAK,)),
    ("ForMaskedLM", (Task.EMBED,)),
)

# model_type -> tasks, for architectures whose suffix says little (ForConditionalGeneration, Model)
MODEL_TYPES: dict[str, tuple[Task, ...]] = {
    "whisper": (Task.TRANSCRIBE,),
    "speech_to_text": (Task.TRANSCRIBE,),
    "t5": (Task.TRANSLATE, Task.SUMMARIZE),
    "mt5": (Task.TRANSLATE, Task.SUMMARIZE),
    "bart": (Task.SUMMARIZE, Task.TRANSLATE),
    "mbart": (Task.TRANSLATE, Task.SUMMARIZE),
    "marian": (Task.TRANSLATE,),
    "m2m_100": (Task.TRANSLATE,),
    "nllb-moe": (Task.TRANSLATE,),
    "pegasus": (Task.SUMMARIZE,),
    "clip": (Task.EMBED, Task.CLASSIFY_IMAGE),  # CLIPModel / SiglipModel: image-text embeddings first
    "siglip": (Task.EMBED, Task.CLASSIFY_IMAGE),
    "siglip2": (Task.EMBED, Task.CLASSIFY_IMAGE),
    "llava": (Task.DESCRIBE_IMAGE, Task.CHAT),
    "llava_next": (Task.DESCRIBE_IMAGE, Task.CHAT),
    "qwen2_vl": (Task.DESCRIBE_IMAGE, Task.CHAT),
    "qwen2_5_vl": (Task.DESCRIBE_IMAGE, Task.CHAT),
    "paligemma": (Task.DESCRIBE_IMAGE,),
    "idefics3": (Task.DESCRIBE_IMAGE, Task.CHAT),
    "smolvlm": (Task.DESCRIBE_IMAGE, Task.CHAT),
    "blip": (Task.DESCRIBE_IMAGE,),
    "vision-encoder-decoder": (Task.DESCRIBE_IMAGE,),
    "vits": (Task.SPEAK,),  # VITS, MMS-TTS
    "bark": (Task.SPEAK,),
    "bert": (Task.EMBED,),
    "xlm-roberta": (Task.EMBED,),
    "roberta": (Task.EMBED,),
    "mpnet": (Task.EMBED,),
}

# diffusers pipeline _class_name -> tasks: exact names first, then the first fragment the name contains.
# corral runs pipelines that make images or video from a text prompt alone; those that need an input
# image, video, mask or control image, make audio or embeddings, or take no prompt get no task.
_IMAGE, _VIDEO, _NONE = (Task.GENERATE_IMAGE,), (Task.GENERATE_VIDEO,), ()
DIFFUSERS_EXACT: dict[str, tuple[Task, ...]] = {
    name: _NONE for name in (  # unconditional or class-conditional; decoders fed by a prior's embeddings
        "DiffusionPipeline", "DDPMPipeline", "DDIMPipeline", "PNDMPipeline", "LDMPipeline", "DiTPipeline",
        "KarrasVePipeline", "ScoreSdeVePipeline", "ConsistencyModelPipeline", "DanceDiffusionPipeline",
        "KandinskyPipeline", "KandinskyV22Pipeline", "StableCascadeDecoderPipeline", "WuerstchenDecoderPipeline",
        "VersatileDiffusionPipeline", "UniDiffuserPipeline", "ConsisIDPipeline", "PIAPipeline",
        "CycleDiffusionPipeline")
}
DIFFUSERS_CLASSES: tuple[tuple[str, tuple[Task, ...]], ...] = (
    *((fragment, _NONE) for fragment in (
        "Img2Img", "ImageToImage", "Image2Image", "Inpaint", "Fill", "Upscale", "SuperResolution", "Depth2Img",
        "Pix2Pix", "ImageVariation", "DualGuided", "ImageToVideo", "Image2Video", "I2V", "VideoToVideo",
        "Video2Video", "VideoToWorld", "LatentUpsample", "Control", "Adapter", "Edit", "Refiner", "Prior", "Redux",
        "Kontext", "Condition", "InContext", "Decode", "WanAnimate", "Audio", "Music", "Marigold", "ShapE",
        "Emb2Emb", "BlipDiffusion", "PaintByExample", "RePaint", "Spectrogram", "Helios", "Protein",
        "StableVideoDiffusion", "Framepack", "VACE", "VisualCloze")),
    ("TextToImage", _IMAGE),
    *((fragment, _VIDEO) for fragment in (
        "Video", "AnimateDiff", "LTX", "Mochi", "Wan", "Allegro", "Latte", "EasyAnimate", "SkyReels", "Cosmos",
        "T2V")),
    ("Pipeline", _IMAGE),
)

# model_type of speech encoders, whose *ForSequenceClassification heads classify audio
SPEECH_ENCODERS = frozenset({"wav2vec2", "wav2vec2-conformer", "wav2vec2-bert", "hubert", "wavlm", "data2vec-audio",
                             "unispeech", "unispeech-sat", "sew", "sew-d", "whisper"})

# model_type -> packages the model needs beyond its engine's (pip names): these processors include a
# video processor, which transformers builds on torchvision
MODEL_NEEDS: dict[str, tuple[str, ...]] = {
    "qwen2_vl": ("torchvision",),
    "qwen2_5_vl": ("torchvision",),
    "smolvlm": ("torchvision",),
    "llava_onevision": ("torchvision",),
    "speecht5": ("sentencepiece",),  # SpeechT5Tokenizer reads spm_char.model
    "siglip": ("sentencepiece",),  # SiglipTokenizer reads spiece.model
}

# GGUF general.architecture values that are embedding-only encoders
GGUF_ENCODERS = frozenset({"bert", "nomic-bert", "jina-bert-v2", "t5encoder"})


def is_cross_encoder(config: Mapping[str, Any], st_config: Mapping[str, Any]) -> bool:
    """Whether sentence-transformers saved the folder as a CrossEncoder (with its activation): v6
    names the model type in config_sentence_transformers.json; v4 and v5 put a ``sentence_transformers``
    key (activation, version) in config.json; v2 / v3 ``sbert_ce_default_activation_function``."""
    if st_config.get("model_type") == "CrossEncoder":
        return True
    marker = config.get("sentence_transformers")
    if isinstance(marker, dict) and ("activation_fn" in marker or "version" in marker):
        return True
    return isinstance(config.get("sbert_ce_default_activation_function"), str)


def scores_pairs(architecture: str | None, num_labels: int | None) -> bool:
    """Whether a cross-encoder gives one score per pair: any head but a sequence classifier with
    several labels (an NLI cross-encoder, which the transformers classifier serves instead)."""
    return not ((architecture or "").endswith("ForSequenceClassification") and (num_labels or 1) > 1)


def dedupe(tasks: list[Task]) -> list[str]:
    seen: list[str] = []
    for t in tasks:
        if t.value not in seen:
            seen.append(t.value)
    return seen


def tasks_for_config(architecture: str | None, model_type: str | None,
                     pipeline_tag: str | None, has_chat_template: bool, num_labels: int | None = None) -> list[str]:
    """Tasks for a transformers-style model, most specific first. A sequence classifier with one
    label is a relevance scorer (a cross-encoder): rerank first."""
    found: list[Task] = list(PIPELINE_TAGS.get(pipeline_tag or "", ()))
    arch = architecture or ""
    speech = arch.endswith("ForSequenceClassification") and model_type in SPEECH_ENCODERS
    if speech:
        found.append(Task.CLASSIFY_AUDIO)  # a sequence of audio frames, not of tokens
    elif arch.endswith("ForSequenceClassification") and num_labels == 1:
        found.append(Task.RERANK)
    for suffix, tasks in ARCH_SUFFIXES:
        if arch.endswith(suffix):
            found.extend(() if speech else tasks)
            break
    else:
        found.extend(MODEL_TYPES.get(model_type or "", ()))
    if Task.COMPLETE in found and has_chat_template:
        found.insert(0, Task.CHAT)
    return dedupe(found)


def tasks_for_diffusers(class_name: str) -> list[str]:
    if class_name in DIFFUSERS_EXACT:
        return dedupe(list(DIFFUSERS_EXACT[class_name]))
    for fragment, tasks in DIFFUSERS_CLASSES:
        if fragment in class_name:
            return dedupe(list(tasks))
    return []


def tasks_for_gguf(architecture: str, has_chat_template: bool) -> list[str]:
    if architecture in GGUF_ENCODERS:
        return [Task.EMBED.value]
    tasks = [Task.CHAT, Task.COMPLETE, Task.EMBED] if has_chat_template else [Task.COMPLETE, Task.EMBED]
    return dedupe(tasks)
