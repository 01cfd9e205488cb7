"""Trained spaCy pipelines (a folder with ``meta.json`` and ``config.cfg``): classify_tokens from
the pipeline's ``ner`` component.

The pipeline loads from its folder with ``spacy.load(path)``: spaCy reads the config and the
components' serialized data itself; no code shipped with a model package (its ``__init__.py``)
runs. With aggregation "simple" each entity of ``doc.ents`` is one entry (``ent.label_``, its
character span); with "none" every token inside an entity is one, labelled with its IOB tag
(``B-ORG``, ``I-ORG``). spaCy's greedy NER gives no probabilities: every score is 1.0. A batch runs
through ``nlp.pipe``; a text longer than the pipeline's ``max_length`` is cut to it (as the
transformers engine truncates at the model's length). CPU only."""

from __future__ import annotations

from typing import Any

from corral.engines.base import Handler
from corral.errors import InvalidModelFileError, UsageError
from corral.tasks import ClassifyTokensRequest, ClassifyTokensResult, Entity, Usage

BATCH = 64
NO_SCORE = 1.0


def doc_entities(doc: Any) -> list[Entity]:
    return [Entity(ent.text, ent.label_, ent.start_char, ent.end_char, NO_SCORE) for ent in doc.ents]


def doc_tokens(doc: Any) -> list[Entity]:
    return [Entity(t.text, f"{t.ent_iob_}-{t.ent_type_}", t.idx, t.idx + len(t.text), NO_SCORE, index=t.i)
            for t in doc if t.ent_type_ and t.ent_iob_ in ("B", "I")]


class SpacyHandler(Handler):
    engine = "spacy"

    nlp: Any = None

    def load(self) -> None:
        if self.options.device not in (None, "auto", "cpu"):
            raise UsageError(f"the spacy engine runs on the CPU only, not {self.options.device!r}",
                             "drop --device or use --device cpu")
        import spacy

        self.nlp = spacy.load(self.path)
        if "ner" not in self.nlp.pipe_names:
            raise InvalidModelFileError(f"the spaCy pipeline {self.path.name} has no ner component",
                                        f"its components: {', '.join(self.nlp.pipe_names) or 'none'}")

    def unload(self) -> None:
        self.nlp = None

    def classify_tokens(self, request: ClassifyTokensRequest) -> ClassifyTokensResult:
        limit = int(self.nlp.max_length)
        texts = [text[:limit] for text in request.inputs]
        read = doc_tokens if request.aggregation == "none" else doc_entities
        entities, lengths = [], []
        for doc in self.nlp.pipe(texts, batch_size=BATCH):
            entities.append(read(doc))
            lengths.append(len(doc))
        return ClassifyTokensResult(entities, Usage(prompt_tokens=sum(lengths)), lengths)
