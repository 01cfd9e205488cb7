"""`inspect_path` must recognise each model family from its files alone.

Every fixture is a tiny random-weight model built locally (tests/fixtures), once per session.
The ground truth (parameters, sizes, context length, ...) comes from the saved files themselves.
The last tests load the fixtures with their own libraries, to prove they are real models.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing here may touch the network
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.fixtures import tiny_media, tiny_models
from tests.fixtures.tiny_models import TinyModel

from corral.models.info import ModelInfo
from corral.tasks import Task

Builder = Callable[[Path], TinyModel]
HF = ("transformers", "torch")


@dataclass(frozen=True)
class Family:
    name: str
    build: Builder
    tasks: tuple[Task, ...]  # each must be among info.tasks
    engine: str = "transformers"
    format: str = "safetensors"
    requirements: tuple[str, ...] = HF
    first_task: Task | None = None  # set where a README pipeline_tag names the task


def _causal(family: str) -> Builder:
    return lambda dest: tiny_models.build_causal_lm(family, dest)


CHAT = (Task.CHAT, Task.COMPLETE)
SEQ2SEQ = (Task.TRANSLATE, Task.SUMMARIZE)


def _st(name: str, build: Builder) -> Family:
    return Family(name, build, (Task.EMBED,), engine="sentence_transformers", requirements=("sentence-transformers",))


FAMILIES: tuple[Family, ...] = (
    *(Family(f, _causal(f), CHAT) for f in tiny_models.CAUSAL_LM_FAMILIES),
    _st("st", tiny_media.build_sentence_transformer),
    _st("st-legacy", lambda d: tiny_media.build_sentence_transformer(d, layout="legacy")),
    Family("t5", tiny_models.build_t5, SEQ2SEQ),
    Family("bart", tiny_models.build_bart, SEQ2SEQ),
    Family(
        "bart-readme-summarization",
        lambda d: tiny_models.build_bart(d, pipeline_tag="summarization"),
        (Task.SUMMARIZE,),
        first_task=Task.SUMMARIZE,
    ),
    Family("bert-seq-cls", tiny_models.build_bert_classifier, (Task.CLASSIFY_TEXT,)),
    Family(
        "bert-readme-text-classification",
        lambda d: tiny_models.build_bert_classifier(d, pipeline_tag="text-classification"),
        (Task.CLASSIFY_TEXT,),
        first_task=Task.CLASSIFY_TEXT,
    ),
    Family("whisper", tiny_media.build_whisper, (Task.TRANSCRIBE,)),
    Family("vit", tiny_media.build_vit, (Task.CLASSIFY_IMAGE,)),
    Family("detr", tiny_media.build_detr, (Task.DETECT_OBJECTS,)),
    Family("clip", tiny_media.build_clip, (Task.CLASSIFY_IMAGE, Task.EMBED)),
    Family(
        "stable-diffusion",
        tiny_media.build_stable_diffusion,
        (Task.GENERATE_IMAGE,),
        engine="diffusers",
        requirements=("diffusers",),
    ),
    Family(
        "gguf-llama",
        tiny_media.build_gguf_llama,
        (Task.CHAT, Task.COMPLETE, Task.EMBED),
        engine="llama_cpp",
        format="gguf",
        requirements=("llama-cpp-python",),
    ),
)
BY_NAME = {family.name: family for family in FAMILIES}
NAMES = list(BY_NAME)


class Zoo:
    """Builds each fixture on first use, once per session; records how long each took."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.models: dict[str, TinyModel] = {}
        self.seconds: dict[str, float] = {}

    def get(self, name: str) -> TinyModel:
        if name not in self.models:
            start = time.perf_counter()
            self.models[name] = BY_NAME[name].build(self.root / name)
            self.seconds[name] = time.perf_counter() - start
        return self.models[name]


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    return Zoo(tmp_path_factory.mktemp("tiny-models"))


def _inspect(model: TinyModel) -> ModelInfo:
    from corral.models.inspect import inspect_path  # may land after these tests

    return inspect_path(model.path)


def _dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --- detection ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_format_and_architecture(zoo: Zoo, name: str) -> None:
    model, family = zoo.get(name), BY_NAME[name]
    info = _inspect(model)
    assert Path(info.path).resolve() == model.path.resolve()
    assert info.format == family.format
    assert info.architecture == model.architecture
    if model.model_type is not None:
        assert info.model_type == model.model_type
    assert not info.needs_pickle
    assert not info.needs_remote_code


@pytest.mark.parametrize("name", NAMES)
def test_tasks(zoo: Zoo, name: str) -> None:
    family = BY_NAME[name]
    info = _inspect(zoo.get(name))
    known = {task.value for task in Task}
    assert set(info.tasks) <= known, f"unknown task names: {set(info.tasks) - known}"
    assert len(info.tasks) == len(set(info.tasks)), f"duplicates in {info.tasks}"
    missing = [task.value for task in family.tasks if task.value not in info.tasks]
    assert not missing, f"{name}: {missing} missing from {info.tasks}"
    if family.first_task is not None:
        assert info.tasks[0] == family.first_task.value, info.tasks


@pytest.mark.parametrize("name", NAMES)
def test_engine_and_requirements(zoo: Zoo, name: str) -> None:
    family = BY_NAME[name]
    info = _inspect(zoo.get(name))
    assert info.engine == family.engine
    packages = {_dist(req.package) for req in info.requirements}
    for package in family.requirements:
        assert _dist(package) in packages, f"{package} not in {sorted(packages)}"


@pytest.mark.parametrize("name", NAMES)
def test_parameters(zoo: Zoo, name: str) -> None:
    model = zoo.get(name)
    assert _inspect(model).parameters == model.parameters


@pytest.mark.parametrize("name", NAMES)
def test_size_bytes_is_weight_files_on_disk(zoo: Zoo, name: str) -> None:
    """ModelInfo.size_bytes is "bytes of weight files": file sizes, headers included."""
    model = zoo.get(name)
    assert _inspect(model).size_bytes == model.file_bytes


@pytest.mark.parametrize("name", NAMES)
def test_dtype_and_context_length(zoo: Zoo, name: str) -> None:
    model = zoo.get(name)
    info = _inspect(model)
    assert info.dtype == model.dtype
    if model.context_length is not None:
        assert info.context_length == model.context_length


@pytest.mark.parametrize("name", NAMES)
def test_memory_covers_weights(zoo: Zoo, name: str) -> None:
    model = zoo.get(name)
    info = _inspect(model)
    assert info.memory is not None
    assert info.memory.cpu_bytes >= model.weight_bytes
    assert info.memory.gpu_bytes >= 0


@pytest.mark.parametrize("name", NAMES)
def test_chat_template(zoo: Zoo, name: str) -> None:
    model = zoo.get(name)
    assert _inspect(model).chat_template is model.chat_template


# --- the fixtures are real models ---------------------------------------------------------


@pytest.mark.parametrize("name", tiny_models.CAUSAL_LM_FAMILIES)
def test_causal_lm_generates(zoo: Zoo, name: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = zoo.get(name).path
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    messages = [{"role": "user", "content": "hello world"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    inputs = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4
    assert isinstance(tokenizer.decode(out[0], skip_special_tokens=True), str)


def _load_seq2seq(folder: Path) -> None:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder)
    inputs = tokenizer("summarize: the quick brown fox", return_tensors="pt")
    assert model.generate(**inputs, max_new_tokens=3, do_sample=False).shape[0] == 1


def _load_sentence_transformer(folder: Path) -> None:
    from sentence_transformers import SentenceTransformer

    vectors = SentenceTransformer(str(folder), device="cpu").encode(["hello", "world"])
    assert vectors.shape == (2, 32)


def _load_bert_classifier(folder: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder)
    inputs = AutoTokenizer.from_pretrained(folder)("hello world", return_tensors="pt")
    assert model(**inputs).logits.shape == (1, 3)


def _load_whisper(folder: Path) -> None:
    from transformers import AutoFeatureExtractor, WhisperForConditionalGeneration

    features = AutoFeatureExtractor.from_pretrained(folder)
    audio = torch.zeros(16_000).numpy()
    mel = features(audio, sampling_rate=16_000, return_tensors="pt").input_features
    model = WhisperForConditionalGeneration.from_pretrained(folder)
    logits = model(input_features=mel, decoder_input_ids=torch.tensor([[1]])).logits
    assert logits.shape == (1, 1, model.config.vocab_size)


def _random_image() -> Any:
    from PIL import Image

    return Image.fromarray((torch.rand(40, 48, 3) * 255).to(torch.uint8).numpy())


def _load_vit(folder: Path) -> None:
    from transformers import AutoModelForImageClassification, ViTImageProcessorPil

    pixels = ViTImageProcessorPil.from_pretrained(folder)(_random_image(), return_tensors="pt")
    logits = AutoModelForImageClassification.from_pretrained(folder)(**pixels).logits
    assert logits.shape == (1, 3)


def _load_detr(folder: Path) -> None:
    from transformers import AutoModelForObjectDetection

    model = AutoModelForObjectDetection.from_pretrained(folder)
    out = model(pixel_values=torch.rand(1, 3, 64, 64))
    assert out.logits.shape == (1, model.config.num_queries, model.config.num_labels + 1)
    assert out.pred_boxes.shape == (1, model.config.num_queries, 4)


def _load_clip(folder: Path) -> None:
    from transformers import AutoTokenizer, CLIPModel

    inputs = AutoTokenizer.from_pretrained(folder)(["a cat", "a dog"], padding=True, return_tensors="pt")
    out = CLIPModel.from_pretrained(folder)(**inputs, pixel_values=torch.rand(1, 3, 32, 32))
    assert out.logits_per_image.shape == (1, 2)


def _load_diffusers(folder: Path) -> None:
    from diffusers import DiffusionPipeline

    pipeline = DiffusionPipeline.from_pretrained(folder)
    images = pipeline("a cat", num_inference_steps=1, height=16, width=16, output_type="np").images
    assert images.shape == (1, 16, 16, 3)


def _load_gguf(path: Path) -> None:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["llama.context_length"].contents() == tiny_media.GGUF_CONTEXT_LENGTH
    assert sum(int(t.n_elements) for t in reader.tensors) > 0


LOADERS: dict[str, Callable[[Path], None]] = {
    "st": _load_sentence_transformer,
    "st-legacy": _load_sentence_transformer,
    "t5": _load_seq2seq,
    "bart": _load_seq2seq,
    "bart-readme-summarization": _load_seq2seq,
    "bert-seq-cls": _load_bert_classifier,
    "bert-readme-text-classification": _load_bert_classifier,
    "whisper": _load_whisper,
    "vit": _load_vit,
    "detr": _load_detr,
    "clip": _load_clip,
    "stable-diffusion": _load_diffusers,
    "gguf-llama": _load_gguf,
}


@pytest.mark.parametrize("name", list(LOADERS))
def test_fixture_loads_with_its_library(zoo: Zoo, name: str) -> None:
    LOADERS[name](zoo.get(name).path)


def test_every_family_has_a_loader() -> None:
    assert set(LOADERS) | set(tiny_models.CAUSAL_LM_FAMILIES) == set(NAMES)
