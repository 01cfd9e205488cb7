"""Hugging Face sequence classifiers through transformers: rerank and classify_text.

- rerank: the relevance of each (query, document) pair. A one-label head is a relevance scorer:
  its score is the sigmoid of the logit (as sentence-transformers' CrossEncoder scores such
  models); with two or more labels the score is the probability of the last one.
- classify_text: the model's own labels (softmax; sigmoid per label for a multi-label head or a
  one-label head), or zero-shot labels through an NLI model (a head with an ``entailment`` label):
  each candidate label is the hypothesis ``template.format(label)``; the labels' entailment logits
  compete through a softmax, or, multi-label, each label's entailment vs contradiction is its own
  softmax (what transformers' zero-shot pipeline computes).

Forward passes in batches of ``BATCH`` texts or pairs; the runtime merges concurrent requests into
one call."""

from __future__ import annotations

from typing import Any

from corral.engines.transformers.loading import TorchTaskHandler
from corral.errors import UsageError
from corral.tasks import ClassifyTextRequest, ClassifyTextResult, RerankRequest, RerankResult, Usage

BATCH = 32


class SequenceClassifierHandler(TorchTaskHandler):
    auto_class = "AutoModelForSequenceClassification"

    def loaded(self) -> None:
        self.max_length = self.max_input_length()

    def _logits(self, first: list[str], second: list[str] | None) -> tuple[Any, list[int]]:
        """Logits (float32, on the CPU) for texts or text pairs, and each input's token count."""
        import torch

        rows, lengths = [], []
        for start in range(0, len(first), BATCH):
            a = first[start:start + BATCH]
            b = None if second is None else second[start:start + BATCH]
            features = self.tokenizer(a, b, padding=True, truncation=True, max_length=self.max_length,
                                      return_tensors="pt")
            lengths += [int(n) for n in features["attention_mask"].sum(dim=1)]
            with torch.inference_mode():
                rows.append(self.model(**features.to(self.device)).logits.float().cpu())
        return torch.cat(rows), lengths

    def rerank(self, request: RerankRequest) -> RerankResult:
        import torch

        logits, lengths = self._logits([q for q, _ in request.pairs], [d for _, d in request.pairs])
        scores = torch.sigmoid(logits[:, 0]) if logits.shape[-1] == 1 else torch.softmax(logits, dim=-1)[:, -1]
        return RerankResult(scores.tolist(), Usage(prompt_tokens=sum(lengths)), lengths)

    def classify_text(self, request: ClassifyTextRequest) -> ClassifyTextResult:
        if request.labels:
            return self._zero_shot(request)
        import torch

        logits, lengths = self._logits(list(request.inputs), None)
        names = [self.model.config.id2label.get(i, f"LABEL_{i}") for i in range(logits.shape[-1])]
        multi = self.model.config.problem_type == "multi_label_classification" or logits.shape[-1] == 1
        probs = torch.sigmoid(logits) if multi else torch.softmax(logits, dim=-1)
        labels = [sorted(zip(names, row.tolist(), strict=True), key=lambda x: -x[1]) for row in probs]
        return ClassifyTextResult(labels, Usage(prompt_tokens=sum(lengths)), lengths)

    def _nli_ids(self) -> tuple[int, int]:
        """The (entailment, contradiction) label ids of an NLI head."""
        by_name = {str(k).lower(): int(v) for k, v in self.model.config.label2id.items()}
        entail = next((i for name, i in by_name.items() if name.startswith("entail")), None)
        if entail is None:
            raise UsageError(f"{self.info.name_hint or 'this model'} has no entailment label, so it cannot classify "
                             "against given labels", "zero-shot needs an NLI model (labels entailment / neutral / "
                             "contradiction); leave the labels out to use the model's own")
        contradiction = next((i for name, i in by_name.items() if name.startswith("contradict")), 0)
        return entail, contradiction

    def _zero_shot(self, request: ClassifyTextRequest) -> ClassifyTextResult:
        import torch

        entail, contradiction = self._nli_ids()
        k = len(request.labels)
        hypotheses = [request.hypothesis_template.format(label) for label in request.labels]
        logits, lengths = self._logits([t for t in request.inputs for _ in range(k)], hypotheses * len(request.inputs))
        logits = logits.view(len(request.inputs), k, -1)
        if request.multi_label:
            probs = torch.softmax(logits[..., [contradiction, entail]], dim=-1)[..., 1]
        else:
            probs = torch.softmax(logits[..., entail], dim=-1)
        labels = [sorted(zip(request.labels, row.tolist(), strict=True), key=lambda x: -x[1]) for row in probs]
        per_input = [sum(lengths[i * k:(i + 1) * k]) for i in range(len(request.inputs))]
        return ClassifyTextResult(labels, Usage(prompt_tokens=sum(per_input)), per_input)
