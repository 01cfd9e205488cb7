"""Extractive question answering through transformers (``*ForQuestionAnswering``): the answer is
the span of the context whose start and end logits sum highest (start before end, at most
``max_answer_len`` tokens, inside the context), scored as the product of the start and end
probabilities over the context's tokens (as transformers' pipeline scores it), and returned with
character offsets into the context. A context longer than the model's window is cut to it."""

from __future__ import annotations

from typing import Any

from corral.engines.transformers.loading import TorchTaskHandler
from corral.tasks import Answer, AnswerQuestionRequest, AnswerQuestionResult, Usage

BATCH = 16


class QuestionAnsweringHandler(TorchTaskHandler):
    auto_class = "AutoModelForQuestionAnswering"

    def loaded(self) -> None:
        self.max_length = self.max_input_length()

    def answer_question(self, request: AnswerQuestionRequest) -> AnswerQuestionResult:
        answers: list[list[Answer]] = []
        lengths: list[int] = []
        items = list(request.items)
        for start in range(0, len(items), BATCH):
            chunk = items[start:start + BATCH]
            got, counted = self._batch(chunk, request.top_k, request.max_answer_len)
            answers += got
            lengths += counted
        return AnswerQuestionResult(answers, Usage(prompt_tokens=sum(lengths)), lengths)

    def _batch(self, items: list[tuple[str, str]], top_k: int, max_len: int) -> tuple[list[list[Answer]], list[int]]:
        import torch

        features = self.tokenizer([q for q, _ in items], [c for _, c in items], padding=True,
                                  truncation="only_second", max_length=self.max_length,
                                  return_offsets_mapping=True, return_tensors="pt")
        offsets = features.pop("offset_mapping")
        with torch.inference_mode():
            out = self.model(**features.to(self.device))
        starts, ends = out.start_logits.float().cpu(), out.end_logits.float().cpu()
        results = []
        for row, (_, context) in enumerate(items):
            in_context = torch.tensor([s == 1 for s in features.sequence_ids(row)])
            results.append(_spans(starts[row], ends[row], in_context, offsets[row], context, top_k, max_len))
        return results, [int(n) for n in features["attention_mask"].sum(dim=1)]


def _spans(start: Any, end: Any, in_context: Any, offsets: Any, context: str, top_k: int,
           max_len: int) -> list[Answer]:
    """The ``top_k`` best context spans of one item."""
    import torch

    if not bool(in_context.any()):
        return []
    p_start = torch.softmax(start.masked_fill(~in_context, float("-inf")), dim=0)
    p_end = torch.softmax(end.masked_fill(~in_context, float("-inf")), dim=0)
    scores = torch.triu(torch.outer(p_start, p_end)) - torch.triu(torch.outer(p_start, p_end), diagonal=max_len)
    flat = scores.flatten()
    best = torch.topk(flat, min(top_k, int((flat > 0).sum()) or 1)).indices.tolist()
    n = scores.shape[1]
    answers = []
    for index in best:
        s, e = divmod(index, n)
        a, b = int(offsets[s][0]), int(offsets[e][1])
        answers.append(Answer(context[a:b], float(flat[index]), a, b))
    return answers
