"""Remote targets: model servers reached over HTTP (OpenAI-compatible, Anthropic, Ollama, LiteLLM's
long tail), each mapped to and from corral's tasks. The router (:mod:`corral.runtime.router`)
decides which target serves a call; a provider only speaks its wire format."""
