"""translate and summarize on tiny random-weight encoder-decoders built from configs (T5, BART): the
streamed text equals what ``model.generate`` produces greedily from the input the family expects
(T5's task prefix), usage counts the tokens, a multilingual tokenizer needs both languages, and the
CLI, the sidecar and the Hugging Face task API (with the real InferenceClient) reach them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import run_cli
from tests.fixtures.tiny_models import build_bart, build_t5

from corral.sidecar.client import SidecarClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
TEXT = "the cat sat on the mat and the dog ran in the park"


@pytest.fixture(scope="module")
def t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_t5(tmp_path_factory.mktemp("t5")).path


@pytest.fixture(scope="module")
def bart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bart(tmp_path_factory.mktemp("bart"), pipeline_tag="summarization").path


def greedy(path: Path, text: str, max_new_tokens: int) -> tuple[str, int]:
    """transformers' own greedy output for ``text`` (decoded as corral streams it) and its length."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForSeq2SeqLM.from_pretrained(str(path)).eval()
    with torch.inference_mode():
        out = model.generate(**tokenizer(text, return_tensors="pt"), max_new_tokens=max_new_tokens, do_sample=False)
    tokens = [t for t in out[0].tolist()[1:] if t not in (tokenizer.eos_token_id, tokenizer.pad_token_id)]
    return tokenizer.decode(tokens, skip_special_tokens=True), len(tokens)


def test_cli_streams_what_generate_produces(t5: Path, bart: Path) -> None:
    assert run_cli("pull", str(t5), "--name", "t5").returncode == 0
    assert run_cli("pull", str(bart), "--name", "bart").returncode == 0
    r = run_cli("run", "t5", TEXT, "--target-lang", "French", "--max-tokens", "10", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    text, n = greedy(t5, "translate English to French: " + TEXT, 10)
    assert got["task"] == "translate" and got["text"] == text and got["usage"]["completion_tokens"] == n
    r = run_cli("run", "t5", TEXT, "--task", "summarize", "--max-tokens", "6", "--json")
    assert json.loads(r.stdout)["text"] == greedy(t5, "summarize: " + TEXT, 6)[0]
    r = run_cli("run", "bart", TEXT, "--max-tokens", "6", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["task"] == "summarize" and json.loads(r.stdout)["text"] == greedy(bart, TEXT, 6)[0]
    refused = run_cli("run", "t5", TEXT)  # no target language, and the config names no pair
    assert refused.returncode != 0 and "target language" in refused.stderr
    wrong = run_cli("run", "bart", TEXT, "--task", "chat")
    assert wrong.returncode != 0 and "summarize" in wrong.stderr


def test_sidecar_and_hf_door(t5: Path, bart: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.server.conftest import Server

    assert run_cli("pull", str(bart), "--name", "bart").returncode == 0
    with SidecarClient() as client:
        out = client.call("summarize", {"model": "bart", "inputs": TEXT,
                                        "parameters": {"generate_parameters": {"max_new_tokens": 6}}})
        assert out == [{"summary_text": greedy(bart, TEXT, 6)[0]}]
    import huggingface_hub.constants
    from huggingface_hub import InferenceClient

    srv = Server(tmp_path / "served", register={"t5": t5, "bart": bart})
    try:
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        summary = InferenceClient(model=f"{srv.url}/models/bart").summarization(
            TEXT, generate_parameters={"max_new_tokens": 6})
        assert summary.summary_text == greedy(bart, TEXT, 6)[0]
        translated = InferenceClient(model=f"{srv.url}/models/t5").translation(
            TEXT, src_lang="English", tgt_lang="French", generate_parameters={"max_new_tokens": 8})
        assert translated.translation_text == greedy(t5, "translate English to French: " + TEXT, 8)[0]
        picked = InferenceClient(model=f"{srv.url}/models/t5/pipeline/summarization").summarization(
            TEXT, generate_parameters={"max_new_tokens": 5})
        assert picked.summary_text == greedy(t5, "summarize: " + TEXT, 5)[0]
    finally:
        srv.stop()
