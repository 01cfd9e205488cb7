"""translate beyond T5, on tiny random-weight models whose tokenizers are built here: NLLB
(M2M100 + NllbTokenizer, codes such as fra_Latn) and mBART-50 (codes such as fr_XX) take the source
language as the tokenizer's ``src_lang`` (its code leads the input) and the target language as the
decoder's forced first token, so the streamed text equals ``model.generate`` called by hand with that
``forced_bos_token_id``, greedy; a code the tokenizer does not know is a 422 that names codes it does
know, before anything is generated; a one-pair model (Marian) needs no language. Reached through the
runtime, the CLI (``--source-lang`` / ``--target-lang``) and the Hugging Face task API door."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import run_cli
from tests.fixtures.runtimes import runtime_with
from tests.fixtures.tiny_translators import build_marian, build_mbart50, build_nllb

from corral.errors import UsageError
from corral.runtime.dispatcher import CallInfo, Door
from corral.tasks import Sampling, Task, TranslateRequest
from corral.wire import acollect

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
TEXT = "the cat sat on the mat and the dog ran in the park"
GREEDY = Sampling(temperature=0, max_tokens=8)
# family -> (source, other sources to try, target, another target, a near miss and the code it suggests)
CODES = {"nllb": ("eng_Latn", ("deu_Latn", "spa_Latn", "jpn_Jpan", "zho_Hans"), "fra_Latn", "deu_Latn", "fr",
                  "fra_Latn"),
         "mbart50": ("en_XX", ("de_DE", "es_XX", "ja_XX", "zh_CN"), "fr_XX", "de_DE", "fr", "fr_XX")}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("translators")
    return {"nllb": build_nllb(root / "nllb").path, "mbart50": build_mbart50(root / "mbart50").path,
            "marian": build_marian(root / "marian").path}


def by_hand(path: Path, text: str, source: str | None, target: str | None, max_new_tokens: int = 8,
            forced: bool = True) -> tuple[list[int], str]:
    """transformers' own greedy generation: the new tokens up to eos, and their text."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForSeq2SeqLM.from_pretrained(str(path)).eval()
    if source is not None:
        tokenizer.src_lang = source
    extra = {"forced_bos_token_id": tokenizer.convert_tokens_to_ids(target)} if target and forced else {}
    with torch.inference_mode():
        out = model.generate(**tokenizer(text, return_tensors="pt"), max_new_tokens=max_new_tokens,
                             do_sample=False, **extra)
    tokens = []
    for token in out[0].tolist()[1:]:  # after the decoder's start token
        if token == tokenizer.eos_token_id:
            break
        tokens.append(token)
    return tokens, str(tokenizer.decode(tokens, skip_special_tokens=True))


def language_id(path: Path, code: str) -> int:
    from transformers import AutoTokenizer

    found = AutoTokenizer.from_pretrained(str(path)).convert_tokens_to_ids(code)
    assert isinstance(found, int)
    return found


def translate(models: dict[str, Path], requests: list[tuple[str, TranslateRequest]]) -> list[Any]:
    """Each (model, request) through one runtime: its Collected text and usage, or the error raised."""
    runtime = runtime_with(models)

    async def scenario() -> list[Any]:
        out: list[Any] = []
        async with runtime:
            for name, request in requests:
                try:
                    out.append(await acollect(runtime.run(Task.TRANSLATE, name, request, CallInfo(Door.CLI, "t"))))
                except UsageError as exc:
                    out.append(exc)
        return out

    return asyncio.run(scenario())


def differing_source(path: Path, source: str, others: tuple[str, ...], target: str) -> str:
    """The first other source whose greedy translation (by hand) differs from ``source``'s in its text:
    a random model can translate two inputs alike, so the test picks a source it can tell apart."""
    _, first = by_hand(path, TEXT, source, target)
    for other in others:
        if by_hand(path, TEXT, other, target)[1] != first:
            return other
    raise AssertionError(f"no source among {others} changes the random model's translation")


@pytest.mark.parametrize("family", ["nllb", "mbart50"])
def test_languages_select_the_source_code_and_the_forced_first_token(family: str, models: dict[str, Path]) -> None:
    path = models[family]
    source, others, target, other_target, _, _ = CODES[family]
    # another source, another translation (by hand): corral matching both shows the source reached the encoder
    other_source = differing_source(path, source, others, target)
    pairs = [(source, target), (source, other_target), (other_source, target)]
    got = translate(models, [(family, TranslateRequest(TEXT, s, t, sampling=GREEDY)) for s, t in pairs])
    expected = [by_hand(path, TEXT, s, t) for s, t in pairs]
    for (s, t), result, (tokens, text) in zip(pairs, got, expected, strict=True):
        assert tokens[0] == language_id(path, t)  # the decoder's first generated token: the target's code
        assert result.text == text and result.usage.completion_tokens == len(tokens), (s, t)
    unforced, _ = by_hand(path, TEXT, source, target, forced=False)
    assert unforced[0] != language_id(path, target)  # the model alone would not start with it


@pytest.mark.parametrize("family", ["nllb", "mbart50"])
def test_unknown_or_missing_languages_are_422s_naming_the_codes(family: str, models: dict[str, Path]) -> None:
    source, _, target, _, near, suggested = CODES[family]
    got = translate(models, [(family, TranslateRequest(TEXT, source, near, sampling=GREEDY)),
                             (family, TranslateRequest(TEXT, "klingon", target, sampling=GREEDY)),
                             (family, TranslateRequest(TEXT, None, target, sampling=GREEDY)),
                             (family, TranslateRequest(TEXT, source, target, sampling=GREEDY))])
    wrong_target, wrong_source, missing, fine = got
    for error in (wrong_target, wrong_source, missing):
        assert isinstance(error, UsageError) and error.http_status == 422
        assert target in str(error) and source in str(error)  # codes it knows, named
    assert f"target language {near!r}" in wrong_target.message and f"did you mean {suggested}" in wrong_target.hint
    assert "source language 'klingon'" in wrong_source.message
    assert "give the source and target" in missing.message
    assert fine.text == by_hand(models[family], TEXT, source, target)[1]  # a refused request left no trace


def test_a_one_pair_model_needs_no_language(models: dict[str, Path]) -> None:
    (result,) = translate(models, [("marian", TranslateRequest(TEXT, sampling=GREEDY))])
    tokens, text = by_hand(models["marian"], TEXT, None, None)
    assert result.text == text and result.usage.completion_tokens == len(tokens) > 0


def test_cli_and_hf_door(models: dict[str, Path], tmp_path: Path) -> None:
    from tests.server.conftest import Server

    for name in ("nllb", "mbart50"):
        assert run_cli("pull", str(models[name]), "--name", name).returncode == 0
        source, _, target, _, near, suggested = CODES[name]
        r = run_cli("run", name, TEXT, "--source-lang", source, "--target-lang", target, "--max-tokens", "8",
                    "--json")
        assert r.returncode == 0, r.stderr
        tokens, text = by_hand(models[name], TEXT, source, target)
        out = json.loads(r.stdout)
        assert (out["task"], out["text"], out["usage"]["completion_tokens"]) == ("translate", text, len(tokens))
        refused = run_cli("run", name, TEXT, "--source-lang", source, "--target-lang", near)
        assert refused.returncode == 2 and f"did you mean {suggested}" in refused.stderr
        assert "Traceback" not in refused.stderr
    srv = Server(tmp_path / "served", register={"nllb": models["nllb"]})
    try:
        with srv.client() as http:
            url = "/models/nllb/pipeline/translation"
            ok = http.post(url, json={"inputs": TEXT, "parameters": {
                "src_lang": "eng_Latn", "tgt_lang": "fra_Latn", "generate_parameters": {"max_new_tokens": 8}}})
            assert ok.status_code == 200, ok.text
            assert ok.json() == [{"translation_text": by_hand(models["nllb"], TEXT, "eng_Latn", "fra_Latn")[1]}]
            bad = http.post(url, json={"inputs": TEXT, "parameters": {"src_lang": "eng_Latn", "tgt_lang": "fr"}})
            assert bad.status_code == 422 and "fra_Latn" in bad.text
    finally:
        srv.stop()
