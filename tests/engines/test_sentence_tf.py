"""Embeddings through corral equal sentence-transformers' own output for the same text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import run_cli

TEXTS = ["A man is eating food.", "The weather is lovely today.", "corral serves models."]


@pytest.mark.slow
def test_cli_embeddings_match_sentence_transformers(minilm_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    r = run_cli("embed", "minilm", *TEXTS, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"] == "minilm" and out["usage"]["prompt_tokens"] > len(TEXTS)
    ours = np.array([d["embedding"] for d in out["data"]])
    reference = SentenceTransformer(str(minilm_path), device="cpu").encode(TEXTS, normalize_embeddings=True)
    assert ours.shape == (3, 384)
    cosines = (ours * reference).sum(axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1))
    assert cosines.min() > 0.9999
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_cli_plain_output_one_vector_per_line() -> None:
    r = run_cli("embed", "minilm", "one", "two")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2
    assert len(json.loads(lines[0])) == 384


@pytest.mark.slow
def test_chat_model_cannot_embed_through_minilm() -> None:
    r = run_cli("run", "minilm", "hello")
    assert r.returncode == 1
    assert "minilm cannot chat or complete; it serves: embed" in r.stderr
