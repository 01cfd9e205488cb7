"""Hugging Face token classifiers (``*ForTokenClassification``) through transformers: classify_tokens
(NER, POS). Each text is tokenized with its character offsets and truncated at the model's length;
every token's label is the argmax of a softmax over the head's labels (``config.id2label``). With
aggregation "simple", a run of tokens labelled B-X, I-X, ... (or X, X, ...) is one entity of type X,
its span from the first token's start to the last one's end and its score the mean of the tokens'
probabilities; a B-X on a later piece of the same word (word_ids) continues the word's entity. With
"none", every token is one entry with its own label. Tokens labelled "O" and special tokens are
left out of both. One forward pass per ``BATCH`` texts; the runtime merges concurrent requests
into one call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from corral.engines.transformers.loading import TorchTaskHandler
from corral.errors import InvalidModelFileError
from corral.tasks import ClassifyTokensRequest, ClassifyTokensResult, Entity, Usage

BATCH = 32
OUTSIDE = "O"


@dataclass(frozen=True)
class Tagged:
    """One token of one text: its position in the model's input, the word it belongs to, its
    character span in the text, its label and that label's probability."""

    index: int
    word: int
    start: int
    end: int
    label: str
    score: float


def entity_type(label: str) -> tuple[str | None, str | None]:
    """(prefix, type): "B-PER" -> ("B", "PER"), "I-PER" -> ("I", "PER"), "NOUN" -> (None, "NOUN"),
    "O" -> (None, None)."""
    if label == OUTSIDE:
        return None, None
    prefix, sep, rest = label.partition("-")
    if sep and rest and prefix in ("B", "I"):
        return prefix, rest
    return None, label


def group_simple(text: str, tokens: Sequence[Tagged]) -> list[Entity]:
    """Runs of tokens of one entity type as entities (see the module docstring)."""
    groups: list[tuple[str, list[Tagged]]] = []
    last: Tagged | None = None
    for token in tokens:
        prefix, kind = entity_type(token.label)
        if kind is None:
            last = None
            continue
        joins = (last is not None and groups[-1][0] == kind and last.index + 1 == token.index
                 and (prefix != "B" or token.word == last.word))  # `last` is in the last group
        if joins:
            groups[-1][1].append(token)
        else:
            groups.append((kind, [token]))
        last = token
    out = []
    for kind, members in groups:
        start, end = members[0].start, members[-1].end
        out.append(Entity(text[start:end], kind, start, end, sum(t.score for t in members) / len(members)))
    return out


def every_token(text: str, tokens: Sequence[Tagged]) -> list[Entity]:
    return [Entity(text[t.start:t.end], t.label, t.start, t.end, t.score, index=t.index)
            for t in tokens if t.label != OUTSIDE]


def tagged(text: str, offsets: Sequence[Sequence[int]], words: Sequence[int | None],
           labels: Sequence[str], scores: Sequence[float]) -> list[Tagged]:
    """The text's real tokens (special and padding ones left out), spans trimmed of whitespace."""
    out = []
    for index, ((start, end), word) in enumerate(zip(offsets, words, strict=True)):
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if word is not None and start < end:
            out.append(Tagged(index, word, start, end, labels[index], scores[index]))
    return out


class TokenClassifierHandler(TorchTaskHandler):
    auto_class = "AutoModelForTokenClassification"

    def loaded(self) -> None:
        if not getattr(self.tokenizer, "is_fast", False):
            raise InvalidModelFileError(f"{self.path.name}'s tokenizer gives no character offsets",
                                        "token classification needs a fast tokenizer (tokenizer.json)")
        self.max_length = self.max_input_length()
        id2label = self.model.config.id2label
        self.labels = [str(id2label[i]) for i in range(len(id2label))]

    def classify_tokens(self, request: ClassifyTokensRequest) -> ClassifyTokensResult:
        entities: list[list[Entity]] = []
        lengths: list[int] = []
        aggregate = every_token if request.aggregation == "none" else group_simple
        texts = list(request.inputs)
        for start in range(0, len(texts), BATCH):
            chunk = texts[start:start + BATCH]
            for text, tokens, length in self._tag(chunk):
                entities.append(aggregate(text, tokens))
                lengths.append(length)
        return ClassifyTokensResult(entities, Usage(prompt_tokens=sum(lengths)), lengths)

    def _tag(self, texts: list[str]) -> list[tuple[str, list[Tagged], int]]:
        """One forward pass: each text with its tagged tokens and its token count."""
        import torch

        features = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                  return_offsets_mapping=True, return_tensors="pt")
        words = [features.word_ids(i) for i in range(len(texts))]
        offsets = features.pop("offset_mapping").tolist()
        lengths = [int(n) for n in features["attention_mask"].sum(dim=1)]
        with torch.inference_mode():
            probs = torch.softmax(self.model(**features.to(self.device)).logits.float(), dim=-1)
        best, ids = probs.max(dim=-1)
        out = []
        for i, text in enumerate(texts):
            labels = [self.labels[j] for j in ids[i].tolist()]
            out.append((text, tagged(text, offsets[i], words[i], labels, best[i].tolist()), lengths[i]))
        return out
