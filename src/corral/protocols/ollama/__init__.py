"""Ollama's API (``/api/chat``, ``/api/generate``, ``/api/embed``, ``/api/tags``, ...) in corral's
terms, transport-free: request bodies, model names as Ollama clients write them (``NAME:latest``),
the OpenAI chat run re-shaped as Ollama's NDJSON chunks with measured durations, and the model
listings (``tags``, ``show``, ``ps``)."""
