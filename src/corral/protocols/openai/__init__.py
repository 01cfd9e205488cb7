"""OpenAI's API shapes: bodies (schemas), chat, completions, embeddings; no transport."""
