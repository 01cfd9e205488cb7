"""The tasks bench_server_tasks.py measures, as data: for text classification (a BERT-base-size classifier) and
image classification (a ViT-base classifier), how the model is built, what one request sends (the same bytes to
both servers), how an answer is checked and read, and how the in-process pipeline answers the same input."""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from bench_server_embed import ACTIONS, OBJECTS, SUBJECTS, sentence

TEXT_LABELS = ("negative", "neutral", "positive")
IMAGE_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_TOP = 5  # what InferenceClient.image_classification and the pipeline answer by default

# ---------------------------------------------------------------- the models


def train_tokenizer(vocab_size: int) -> Any:
    """A BERT-style WordPiece tokenizer ([CLS] text [SEP], lower case) trained on Python's reference text and on
    the benchmark's sentence parts, so the sentences' words are whole tokens as in a real English vocabulary."""
    import pydoc_data.topics

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    corpus = [pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)]
    corpus += [" ".join(part) for part in (SUBJECTS, ACTIONS, OBJECTS)] * 20
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    fast: Any = PreTrainedTokenizerFast  # untyped in transformers' stubs
    return fast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                mask_token="[MASK]", model_max_length=512)


def build_text(dest: Path, vocab_size: int) -> None:
    """BERT-base-size BertForSequenceClassification, random weights (seed 0), 3 labels, and its tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = train_tokenizer(vocab_size)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, id2label=dict(enumerate(TEXT_LABELS)),
                        label2id={name: i for i, name in enumerate(TEXT_LABELS)})
    torch.manual_seed(0)
    dest.mkdir(parents=True, exist_ok=True)
    BertForSequenceClassification(config).save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)


def build_image(dest: Path, vocab_size: int) -> None:
    """ViT-base ViTForImageClassification (``ViTConfig()`` defaults), random weights (seed 0), 10 labels, with a
    default ViTImageProcessor (resize to 224x224, normalise)."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(id2label=dict(enumerate(IMAGE_LABELS)),  # num_labels follows id2label
                       label2id={name: i for i, name in enumerate(IMAGE_LABELS)})
    torch.manual_seed(0)
    dest.mkdir(parents=True, exist_ok=True)
    ViTForImageClassification(config).save_pretrained(dest, safe_serialization=True)
    ViTImageProcessor().save_pretrained(dest)


# ---------------------------------------------------------------- the inputs


@functools.lru_cache(maxsize=4096)
def image(i: int) -> bytes:
    """A different 224x224 JPEG for every i: a coloured background with an ellipse and a bar on it."""
    from PIL import Image, ImageDraw

    rgb = ((37 * i) % 256, (91 * i + 40) % 256, (53 * i + 120) % 256)
    picture = Image.new("RGB", (224, 224), rgb)
    draw = ImageDraw.Draw(picture)
    x, y = (17 * i) % 150, (29 * i) % 150
    draw.ellipse((x, y, x + 60 + i % 13, y + 50 + i % 17), fill=(255 - rgb[0], 255 - rgb[1], 255 - rgb[2]))
    draw.rectangle((0, (11 * i) % 200, 224, (11 * i) % 200 + 12), fill=(rgb[2], rgb[0], rgb[1]))
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=90)
    return out.getvalue()


def _pil(i: int) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(image(i)))


# ---------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    """One task as the benchmark drives it."""

    task: str  # --task value
    title: str
    about: str  # the model in a few words ({vocab}: its vocabulary size)
    model: str  # corral's name for it
    folder: str
    files: tuple[str, ...]  # what a folder holding the built model has
    hf_task: str  # the transformers pipeline task
    corral_task: str  # the task label of corral's batch metrics
    baseline_path: str
    unit: str
    labels: tuple[str, ...]
    build: Callable[[Path, int], None]
    content_type: str
    body: Callable[[int], bytes]  # request i's body, the same to both servers
    local: Callable[[Any, int], Any]  # the in-process pipeline's answer to input i
    features: Callable[[Any, list[int]], Any]  # the model's inputs for a batch of inputs
    nested: bool  # the answer to one input is wrapped in a list of one ([[...]])
    target: float | None  # the throughput ratio corral should reach; None: reported only
    pipeline_kwargs: dict[str, Any] = field(default_factory=dict)

    def scores(self, data: Any) -> dict[str, float]:
        """label -> score of a one-input answer, best first; ValueError unless it is a well-formed answer (every
        label for text, summing to 1; the top 5 of the 10 labels for images)."""
        rows = data[0] if self.nested and isinstance(data, list) and len(data) == 1 else data
        if (self.nested and rows is data) or not isinstance(rows, list):
            raise ValueError("not a one-input answer")
        pairs = [(d.get("label"), d.get("score")) for d in rows if isinstance(d, dict)]
        values = [s for _, s in pairs if isinstance(s, float)]
        found = {str(k): float(v) for k, v in pairs if isinstance(v, float)}
        want = len(self.labels) if self.nested else min(IMAGE_TOP, len(self.labels))
        total = sum(values)
        if len(values) != len(rows) or len(found) != want or values != sorted(values, reverse=True) \
                or not set(found) <= set(self.labels) or total > 1 + 1e-3 or (self.nested and total < 1 - 1e-3):
            raise ValueError("labels or scores of the wrong shape")
        return found


def _text_features(pipe: Any, indices: list[int]) -> Any:
    return pipe.tokenizer([sentence(i) for i in indices], padding=True, return_tensors="pt")


def _image_features(pipe: Any, indices: list[int]) -> Any:
    return pipe.image_processor([_pil(i).convert("RGB") for i in indices], return_tensors="pt")


CASES = (
    Case("text", "text classification (BERT-base)",
         "BERT-base random (768/12/12/3072, 3 labels, WordPiece vocab {vocab})", "bert-cls", "bert-base-cls-random",
         ("config.json", "model.safetensors", "tokenizer.json"), "text-classification",
         "classify_text", "/classify", "sentences", TEXT_LABELS, build_text, "application/json",
         lambda i: orjson.dumps({"inputs": sentence(i)}), lambda pipe, i: pipe(sentence(i)), _text_features,
         nested=True, target=3.0, pipeline_kwargs={"top_k": None}),
    Case("image", "image classification (ViT-base)", "ViT-base random (768/12/12/3072, patch 16, 224x224, 10 labels)",
         "vit-cls", "vit-base-cls-random", ("config.json", "model.safetensors", "preprocessor_config.json"),
         "image-classification",
         "classify_image", "/classify-image", "images", IMAGE_LABELS, build_image, "image/jpeg", image,
         lambda pipe, i: pipe(_pil(i)), _image_features, nested=False, target=None),
)


def build_case(case: Case, dest: Path, vocab_size: int) -> str:
    """Build ``case``'s model in ``dest`` unless it already holds one; a one-line description."""
    if not all((dest / f).is_file() for f in case.files):
        case.build(dest, vocab_size)
    config = orjson.loads((dest / "config.json").read_bytes())
    size = (dest / "model.safetensors").stat().st_size / 1e6
    return f"{case.about.format(vocab=config.get('vocab_size'))}, {size:.0f} MB, at {dest}"
