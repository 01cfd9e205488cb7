"""The OpenAI-compatible door: one module per endpoint family, one router for the app."""

from __future__ import annotations

from fastapi import APIRouter

from corral.api.openai import chat, completions, embeddings, images, models, videos

router = APIRouter()
for _module in (models, chat, completions, embeddings, images, videos):
    router.include_router(_module.router)
