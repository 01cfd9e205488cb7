"""The OpenAI-compatible door: one module per endpoint family, one router for the app."""

from __future__ import annotations

from fastapi import APIRouter

from corral.api.openai import audio, chat, completions, embeddings, images, models, speech, videos

router = APIRouter()
for _module in (models, chat, completions, embeddings, audio, speech, images, videos):
    router.include_router(_module.router)
